//! Compute reads scoped to a location, as Azure serves them under
//! `/subscriptions/{sub}/providers/Microsoft.Compute/locations/{location}/…`:
//! the scale sets in a location (`virtualMachineScaleSets`, Azure's `ListByLocation`) and
//! the sizes offered there (`vmSizes`).
//!
//! Requests come from [`crate::server`]'s dispatch; answers are read from the store
//! (scale-set records, shaped by [`crate::views`]) or the size catalogue
//! ([`shoal_model::sku`]), paged with `nextLink` as every Shoal list is.

use http::Method;
use shoal_model::keys;
use shoal_model::records::VmssRecord;

use crate::groups::method_not_allowed;
use crate::response::{self, json, ApiResult, Ctx};
use crate::state::ApiState;
use crate::views;

/// Azure compares locations by their short name: `West US`, `westus` and `WestUS` match.
fn same_location(a: &str, b: &str) -> bool {
    let short = |s: &str| -> String {
        s.chars()
            .filter(|c| !c.is_whitespace())
            .flat_map(char::to_lowercase)
            .collect()
    };
    short(a) == short(b)
}

/// `GET …/locations/{location}/virtualMachineScaleSets`: every set of the subscription
/// whose location is `location`.
pub async fn scale_sets(
    st: &ApiState,
    ctx: &Ctx,
    method: &Method,
    sub: &str,
    location: &str,
) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    let tenant = st.tenant_id().await?;
    let items = st
        .list::<VmssRecord>(&keys::in_subscription(keys::VMSS, sub))
        .await?
        .iter()
        .filter(|s| {
            s.value
                .model
                .location
                .as_deref()
                .is_some_and(|l| same_location(l, location))
        })
        .map(|s| views::vmss_json(&s.value, s.revision, &tenant))
        .collect();
    let path = format!(
        "/subscriptions/{sub}/providers/Microsoft.Compute/locations/{location}/virtualMachineScaleSets"
    );
    Ok(response::page(ctx, &path, items, st.page_size))
}

/// `GET …/locations/{location}/vmSizes`: the size catalogue in Azure's shape.
pub fn vm_sizes(method: &Method) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    Ok(json(200, &shoal_model::sku::vm_sizes_json()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_match_as_azure_compares_them() {
        assert!(same_location("West US", "westus"));
        assert!(same_location("eastus", "EastUS"));
        assert!(!same_location("eastus", "eastus2"));
    }
}
