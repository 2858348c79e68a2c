//! `Microsoft.Network/applicationGateways`: create/replace, read, list, delete. A balancer
//! process (inside `shoal serve` or `shoal balancer`) follows these resources through the
//! store watch (`appgw/` keys) and serves their listeners.
//!
//! A PUT is parsed, normalized and validated by `shoal_model::appgw`; this module adds the
//! checks that need I/O or other resources — the certificate files can be read, and no
//! frontend port is taken by a load balancer, another gateway or another program — before
//! anything is stored, so a refused PUT changes nothing.

use http::Method;
use serde_json::{json, Value};
use shoal_control::kv;
use shoal_model::appgw::{self, ApplicationGateway, APPGW_TYPE};
use shoal_model::network::{self, LoadBalancer};
use shoal_model::records::{InstanceRecord, VmssRecord};
use shoal_model::{names, vmss, ArmError};
use shoal_store::Expect;

use crate::groups::method_not_allowed;
use crate::response::{self, empty, json, ApiResult, Ctx};
use crate::state::{body_object, txn_error, ApiState};

pub fn appgw_key(sub: &str, rg: &str, name: &str) -> String {
    format!(
        "appgw/{}/{}/{}",
        sub.to_ascii_lowercase(),
        rg.to_ascii_lowercase(),
        name.to_ascii_lowercase()
    )
}

pub fn appgw_id(sub: &str, rg: &str, name: &str) -> String {
    format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/applicationGateways/{name}"
    )
}

pub async fn list(
    st: &ApiState,
    ctx: &Ctx,
    method: &Method,
    sub: &str,
    rg: Option<&str>,
) -> ApiResult {
    if method != Method::GET {
        return Err(method_not_allowed(method));
    }
    let (prefix, path) = match rg {
        Some(rg) => {
            st.require_group(sub, rg).await?;
            (
                format!("appgw/{}/{}/", sub.to_ascii_lowercase(), rg.to_ascii_lowercase()),
                format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/applicationGateways"),
            )
        }
        None => (
            format!("appgw/{}/", sub.to_ascii_lowercase()),
            format!("/subscriptions/{sub}/providers/Microsoft.Network/applicationGateways"),
        ),
    };
    let mut items = Vec::new();
    for gw in st.list::<ApplicationGateway>(&prefix).await? {
        items.push(view(st, &gw.value, gw.revision).await?);
    }
    Ok(response::page(ctx, &path, items, st.page_size))
}

/// Gateway backend pool ids a scale set's model puts its instances in.
pub fn members_of(set: &VmssRecord) -> Vec<String> {
    set.model.backend_pools(shoal_model::network::PoolOwner::ApplicationGateway)
}

/// The gateway as GET shows it, with each pool's instances filled in.
async fn view(st: &ApiState, gw: &ApplicationGateway, revision: u64) -> Result<Value, ArmError> {
    let mut v = serde_json::to_value(gw).unwrap_or(Value::Null);
    v["etag"] = json!(format!("W/\"{revision}\""));
    let sets = st.list::<VmssRecord>("vmss/").await?;
    if let Some(pools) = v
        .pointer_mut("/properties/backendAddressPools")
        .and_then(Value::as_array_mut)
    {
        for pool in pools {
            let pool_id = pool["id"].as_str().unwrap_or_default().to_string();
            let mut members = Vec::new();
            for set in &sets {
                if !members_of(&set.value)
                    .iter()
                    .any(|p| p.eq_ignore_ascii_case(&pool_id))
                {
                    continue;
                }
                for inst in st
                    .list::<InstanceRecord>(&set.value.vmss.instance_prefix())
                    .await?
                {
                    members.push(json!({"id": format!(
                        "{}/virtualMachines/{}/networkInterfaces/nic/ipConfigurations/ipconfig",
                        set.value.vmss.id(),
                        inst.value.instance_id
                    )}));
                }
            }
            pool["properties"]["backendIPConfigurations"] = json!(members);
        }
    }
    Ok(v)
}

pub async fn gateway(
    st: &ApiState,
    method: &Method,
    sub: &str,
    rg: &str,
    name: &str,
    body: &[u8],
) -> ApiResult {
    st.require_group(sub, rg).await?;
    names::check_resource_name("application gateway", name, 80)?;
    let key = appgw_key(sub, rg, name);
    let existing = st.get::<ApplicationGateway>(&key).await?;
    match *method {
        Method::GET => match existing {
            Some(gw) => Ok(json(200, &view(st, &gw.value, gw.revision).await?)),
            None => Err(ArmError::not_found(APPGW_TYPE, name)),
        },
        Method::PUT => {
            let incoming = body_object(body, true)?;
            let mut gw: ApplicationGateway = vmss::parse_typed(&incoming)?;
            // The stored id keeps the spelling of the first PUT.
            let id = existing
                .as_ref()
                .and_then(|e| e.value.id.clone())
                .unwrap_or_else(|| appgw_id(sub, rg, name));
            appgw::normalize_appgw(&mut gw, &id);
            appgw::validate_appgw(&gw, &id)?;
            check_certificates(&mut gw).await?;
            check_ports_free(st, &gw, &id).await?;
            gw.id = Some(id);
            gw.name = Some(
                existing
                    .as_ref()
                    .and_then(|e| e.value.name.clone())
                    .unwrap_or_else(|| name.to_string()),
            );
            gw.kind = Some(APPGW_TYPE.to_string());
            gw.etag = None;
            gw.properties.sku.get_or_insert_with(|| appgw::AppGwSku {
                name: Some("Standard_v2".into()),
                tier: Some("Standard_v2".into()),
                capacity: Some(1),
                family: None,
            });
            gw.properties.resource_guid = existing
                .as_ref()
                .and_then(|e| e.value.properties.resource_guid.clone())
                .or_else(|| Some(uuid::Uuid::new_v4().to_string()));
            let expect = existing
                .as_ref()
                .map_or(Expect::Absent, |e| Expect::ModRevision(e.revision));
            let rev = st
                .store
                .txn(vec![kv::put_op(key, &gw, expect)])
                .await
                .map_err(txn_error)?;
            Ok(json(
                if existing.is_some() { 200 } else { 201 },
                &view(st, &gw, rev).await?,
            ))
        }
        Method::DELETE => {
            let Some(e) = existing else {
                return Ok(empty(204));
            };
            let id = e.value.id.clone().unwrap_or_default().to_ascii_lowercase();
            // As for load balancers: not while a scale set still puts instances in it.
            for set in st.list::<VmssRecord>("vmss/").await? {
                if members_of(&set.value)
                    .iter()
                    .any(|p| p.to_ascii_lowercase().starts_with(&format!("{id}/")))
                {
                    return Err(ArmError::new(
                        400,
                        "InUseApplicationGatewayCannotBeDeleted",
                        format!("Application gateway '{name}' is used by scale set '{}': remove it from the set's network profile first.", set.value.vmss.name),
                    )
                    .with_target(name.to_string()));
                }
            }
            st.store
                .txn(vec![kv::delete_op(key, Expect::ModRevision(e.revision))])
                .await
                .map_err(txn_error)?;
            Ok(empty(200))
        }
        _ => Err(method_not_allowed(method)),
    }
}

/// The base-64 body of the first PEM block labelled `label`, if any.
fn pem_block(text: &str, label: &str) -> Option<String> {
    let begin = format!("-----BEGIN {label}-----");
    let start = text.find(&begin)? + begin.len();
    let end = text[start..].find("-----END ")? + start;
    let body: String = text[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    (!body.is_empty()).then_some(body)
}

/// Every certificate and key file must be readable PEM of the right kind: an unreadable
/// one is a 400 naming its field, now rather than a listener that never comes up.
/// Fills in `publicCertData` (the leaf certificate, base-64 DER) as Azure shows it.
async fn check_certificates(gw: &mut ApplicationGateway) -> Result<(), ArmError> {
    let mut leaves = Vec::new();
    for (target, path) in appgw::certificate_files(gw) {
        let text = tokio::fs::read_to_string(&path).await.map_err(|e| {
            ArmError::invalid_parameter(
                target.clone(),
                format!("Cannot read '{path}' ({e}): give a PEM file the server can read."),
            )
        })?;
        if target.ends_with(".certificateFile") {
            let Some(leaf) = pem_block(&text, "CERTIFICATE") else {
                return Err(ArmError::invalid_parameter(
                    target,
                    format!("'{path}' holds no PEM certificate (-----BEGIN CERTIFICATE-----)."),
                ));
            };
            leaves.push(leaf);
        } else if !["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"]
            .iter()
            .any(|label| pem_block(&text, label).is_some())
        {
            return Err(ArmError::invalid_parameter(
                target,
                format!("'{path}' holds no PEM private key (PKCS#8, PKCS#1 or SEC1)."),
            ));
        }
    }
    for (cert, leaf) in gw
        .properties
        .ssl_certificates
        .iter_mut()
        .filter(|c| c.properties.shoal.is_some())
        .zip(leaves)
    {
        cert.properties.public_cert_data = Some(leaf);
    }
    Ok(())
}

/// A frontend port held by a load-balancing rule, another gateway or another program is
/// a 409 naming the port, rather than a listener that fails later in the data plane.
/// Ports this gateway already serves are its own (our balancer holds them).
async fn check_ports_free(
    st: &ApiState,
    gw: &ApplicationGateway,
    id: &str,
) -> Result<(), ArmError> {
    let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let mut taken: Vec<(std::net::IpAddr, u16, String)> = Vec::new();
    for lb in st.list::<LoadBalancer>("lb/").await? {
        let lb_id = lb.value.id.clone().unwrap_or_default();
        for rule in network::resolved_rules(&lb.value, &lb_id) {
            if let Ok(ip) = rule.frontend_ip.parse() {
                taken.push((
                    ip,
                    rule.frontend_port,
                    format!(
                        "load balancer '{}'",
                        lb.value.name.clone().unwrap_or_default()
                    ),
                ));
            }
        }
    }
    let mut ours = Vec::new();
    for other in st.list::<ApplicationGateway>("appgw/").await? {
        let other_id = other.value.id.clone().unwrap_or_default();
        for front in appgw::resolved_frontends(&other.value, &other_id) {
            if same(&other_id, id) {
                ours.push((front.ip, front.port));
            } else {
                taken.push((
                    front.ip,
                    front.port,
                    format!(
                        "application gateway '{}'",
                        other.value.name.clone().unwrap_or_default()
                    ),
                ));
            }
        }
    }
    let target_of = |port: u16| {
        let i = gw
            .properties
            .frontend_ports
            .iter()
            .position(|p| p.properties.port == Some(i64::from(port)))
            .unwrap_or(0);
        format!("properties.frontendPorts[{i}].properties.port")
    };
    let overlaps = |a: std::net::IpAddr, b: std::net::IpAddr| {
        a == b || a.is_unspecified() || b.is_unspecified()
    };
    for front in appgw::resolved_frontends(gw, id) {
        if let Some((ip, port, user)) = taken
            .iter()
            .find(|(ip, port, _)| *port == front.port && overlaps(*ip, front.ip))
        {
            return Err(ArmError::conflict(format!(
                "Frontend {ip}:{port} is already used by {user}: choose another frontend port."
            ))
            .with_target(target_of(front.port)));
        }
        if ours.contains(&(front.ip, front.port)) {
            continue;
        }
        let addr = std::net::SocketAddr::new(front.ip, front.port);
        if let Err(e) = std::net::TcpListener::bind(addr) {
            return Err(ArmError::conflict(format!(
                "Frontend {addr} cannot be used ({e}): choose another frontend port."
            ))
            .with_target(target_of(front.port)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_are_found_by_label() {
        let text = "junk\n-----BEGIN CERTIFICATE-----\nAAAA\nBBBB\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_block(text, "CERTIFICATE").as_deref(), Some("AAAABBBB"));
        assert_eq!(pem_block(text, "PRIVATE KEY"), None);
        assert_eq!(
            pem_block("-----BEGIN CERTIFICATE-----", "CERTIFICATE"),
            None
        );
    }

    proptest::proptest! {
        #[test]
        fn pem_scanning_never_panics(text in "\\PC{0,200}") {
            let _ = pem_block(&text, "CERTIFICATE");
        }
    }
}
