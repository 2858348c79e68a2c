//! The axum app: one handler parses the path into a [`Route`], authenticates and
//! authorizes the caller (see [`crate::auth`] and [`crate::rbac`]) and dispatches; every
//! error becomes an ARM error body; a panic in a handler becomes a 500, never a dropped
//! connection.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use axum::Router;
use http::Method;
use shoal_model::ArmError;

use crate::autoscale::AutoscaleSettings;
use crate::managed_identities::UserAssignedIdentities;
use crate::response::{error_response, json, ApiResult, Ctx};
use crate::routes::{self, Route, StoredKind};
use crate::state::ApiState;
use crate::{agent_api, groups, identity, instances, rolling_upgrades, scalesets};
use crate::{appgw::ApplicationGateways, arm_crud, network::LoadBalancers};
use crate::{auth, discovery, principals, rbac};
use crate::{blobs, galleries, hosts};

/// Largest JSON body accepted (bundle uploads stream separately).
const MAX_JSON_BODY: usize = 4 << 20;

pub fn router(state: ApiState) -> Router {
    Router::new().fallback(handle).with_state(state)
}

fn context(req: &Request) -> Ctx {
    let scheme = req
        .extensions()
        .get::<Scheme>()
        .map(|s| s.0)
        .unwrap_or("http");
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(String::from)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_else(|| "127.0.0.1:7070".into());
    let query = req
        .uri()
        .query()
        .map(|q| {
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k), decode(v))
                })
                .collect()
        })
        .unwrap_or_default();
    let header = |name: http::header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|h| h.to_str().ok())
            .map(String::from)
    };
    Ctx {
        base_url: format!("{scheme}://{host}"),
        query,
        if_match: header(http::header::IF_MATCH),
        if_none_match: header(http::header::IF_NONE_MATCH),
    }
}

/// The address of the connection a request came on, set by the listeners.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// The scheme a listener serves, set as a request extension by TLS listeners.
#[derive(Debug, Clone, Copy)]
pub struct Scheme(pub &'static str);

/// Percent-decodes a query or form component (`+` is a space).
pub fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) async fn handle(State(st): State<ApiState>, req: Request) -> Response {
    if crate::ui::is_ui_path(req.uri().path()) {
        return crate::ui::handle(st, req).await;
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or_else(|| path.clone(), |p| p.as_str().to_string());
    let ctx = context(&req);
    let headers = req.headers().clone();
    let route = match routes::parse(&path) {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    let caller = match authorize(&st, &ctx, &method, &path, &route, &headers).await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(%method, %path, code = %e.code, "request not authorized");
            // A signed-in caller refused a write is in the activity log, as in Azure
            // (status Failed, 403): who tried to change what.
            if let (Some(a), Some(sub), 403) = (
                &st.auth,
                crate::activity_writes::recorded(&method, &route, &path),
                e.status,
            ) {
                let now = st.clock.now().as_second();
                if let Ok(who) = auth::authenticate(a, &headers, now).await {
                    crate::activity_writes::record(&st, &sub, Some(&who), &method, &path, 403)
                        .await;
                }
            }
            return match &st.auth {
                Some(a) => auth::challenge(a, &ctx.base_url, &e).await,
                None => error_response(&e),
            };
        }
    };
    let recorded = crate::activity_writes::recorded(&method, &route, &path);
    let writer = caller.clone();
    let result = match route {
        Route::BlobUpload if method == Method::POST => {
            blobs::upload_blob(&st, &ctx, &headers, req.into_body()).await
        }
        Route::BlobReplica { id } if method == Method::PUT => {
            blobs::receive_replica(&st, &id, req.into_body()).await
        }
        Route::IdentityToken => {
            return match identity::token(&st, &ctx, &method, &headers).await {
                Ok(resp) => resp,
                Err(e) => json(e.status, &identity::error_body(&e)),
            };
        }
        route => {
            let body = match axum::body::to_bytes(req.into_body(), MAX_JSON_BODY).await {
                Ok(b) => b,
                Err(_) => {
                    return error_response(&ArmError::new(
                        413,
                        "RequestEntityTooLarge",
                        "The request body is larger than 4 MiB.",
                    ));
                }
            };
            // Metrics live on the leader, which runs autoscale.
            if matches!(
                route,
                Route::MetricsIngest
                    | Route::CustomMetrics(_)
                    | Route::MetricsQuery(_)
                    | Route::MetricDefinitions(_)
            ) {
                if let Some(resp) = crate::cluster::forward_to_leader(
                    &st,
                    &method,
                    &path_and_query,
                    &headers,
                    &body,
                )
                .await
                {
                    return resp;
                }
            }
            // A handler bug must answer 500, not tear down the connection.
            let fut = dispatch(&st, &ctx, caller, &method, &headers, route, body);
            match futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(fut)).await {
                Ok(r) => r,
                Err(_) => Err(ArmError::internal(
                    "The server hit a bug handling this request; it has been logged.",
                )),
            }
        }
    };
    if let Some(sub) = recorded {
        let status = match &result {
            Ok(resp) => resp.status().as_u16(),
            Err(e) => e.status,
        };
        crate::activity_writes::record(&st, &sub, writer.as_ref(), &method, &path, status).await;
    }
    match result {
        Ok(resp) => resp,
        Err(e) => {
            if e.status >= 500 {
                tracing::error!(%method, %path, code = %e.code, message = %e.message, "request failed");
            } else {
                tracing::debug!(%method, %path, code = %e.code, "request refused");
            }
            error_response(&e)
        }
    }
}

/// The caller of a request, once its token and its role allow the route: `None` for
/// public and host-protocol routes, and when the server does not check tokens.
async fn authorize(
    st: &ApiState,
    ctx: &Ctx,
    method: &Method,
    path: &str,
    route: &Route,
    headers: &http::HeaderMap,
) -> Result<Option<shoal_auth::Principal>, ArmError> {
    let Some(a) = &st.auth else {
        return Ok(None);
    };
    match auth::Access::of(route) {
        auth::Access::Public => return Ok(None),
        auth::Access::HostProtocol => {
            let caller = crate::host_auth::authenticate(st, a, headers).await?;
            crate::host_auth::allowed(&caller, route)?;
            return Ok(Some(caller));
        }
        auth::Access::User => {}
    }
    let now = st.clock.now().as_second();
    let caller = auth::authenticate(a, headers, now).await?;
    if matches!(
        caller.kind,
        shoal_auth::PrincipalKind::Host | shoal_auth::PrincipalKind::Balancer
    ) {
        return Err(ArmError::new(
            403,
            "AuthorizationFailed",
            format!(
                "The client '{}' is a host or balancer credential; it cannot call user routes.",
                caller.appid
            ),
        ));
    }
    if let Some(sub) = rbac::subscription_of(path) {
        discovery::require_subscription(st, sub).await?;
    }
    let default_scope = || async {
        a.directory
            .tenant()
            .await
            .map(|t| format!("/subscriptions/{}", t.default_subscription))
            .map_err(crate::state::internal)
    };
    let trimmed = path.trim_end_matches('/');
    let (action, scope) = match route {
        Route::Subscriptions | Route::Tenants => return Ok(Some(caller)),
        Route::BlobUpload | Route::BlobReplica { .. } => {
            // An upload belongs to no resource yet: who may make image versions somewhere
            // in the subscription it counts against may upload.
            let action = "Microsoft.Compute/galleries/images/versions/write";
            let sub = blobs::upload_subscription(st, ctx).await?;
            discovery::require_subscription(st, &sub).await?;
            if rbac::allowed_within(st, &caller, action, &sub).await? {
                return Ok(Some(caller));
            }
            (action.to_string(), format!("/subscriptions/{sub}"))
        }
        Route::ServicePrincipals { .. } => {
            let verb = rbac::action_of(method, path);
            let verb = verb.rsplit('/').next().unwrap_or("read");
            (
                format!("Microsoft.Authorization/servicePrincipals/{verb}"),
                default_scope().await?,
            )
        }
        Route::Prometheus => (
            "Microsoft.Insights/metrics/read".to_string(),
            default_scope().await?,
        ),
        Route::Hosts
        | Route::HostResource { .. }
        | Route::HostAction { .. }
        | Route::JoinTokens
        | Route::JoinToken { .. }
        | Route::PlatformImages { .. } => (rbac::action_of(method, path), default_scope().await?),
        _ => (rbac::action_of(method, path), trimmed.to_string()),
    };
    if rbac::allowed(st, &caller, &action, &scope).await? {
        Ok(Some(caller))
    } else {
        Err(rbac::forbidden(&caller, &action, &scope))
    }
}

/// A request made inside the server (a template deployment's resources): routed and
/// authorized for `caller` like an outside request (the same handlers and validation), and
/// answered as `(status, JSON body)`.
pub fn dispatch_as<'a>(
    st: &'a ApiState,
    ctx: &'a Ctx,
    caller: Option<shoal_auth::Principal>,
    method: &'a Method,
    path: &'a str,
    body: Bytes,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = (u16, serde_json::Value)> + Send + 'a>> {
    Box::pin(async move {
        let result = async {
            let route = routes::parse(path)?;
            if auth::Access::of(&route) != auth::Access::User {
                return Err(ArmError::new(
                    400,
                    "InvalidTemplate",
                    format!("'{path}' is not a resource a template can deploy."),
                ));
            }
            if let Some(c) = &caller {
                let action = rbac::action_of(method, path);
                let scope = path.trim_end_matches('/');
                if !rbac::allowed(st, c, &action, scope).await? {
                    return Err(rbac::forbidden(c, &action, scope));
                }
            }
            dispatch(
                st,
                ctx,
                caller.clone(),
                method,
                &http::HeaderMap::new(),
                route,
                body,
            )
            .await
        }
        .await;
        let resp = match result {
            Ok(r) => r,
            Err(e) => error_response(&e),
        };
        let status = resp.status().as_u16();
        let bytes = body_bytes(resp).await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    })
}

async fn dispatch(
    st: &ApiState,
    ctx: &Ctx,
    caller: Option<shoal_auth::Principal>,
    method: &Method,
    headers: &http::HeaderMap,
    route: Route,
    body: Bytes,
) -> ApiResult {
    match route {
        Route::Healthz => Ok(json(200, &serde_json::json!({"status": "ok"}))),
        Route::Deployments {
            sub,
            rg,
            name,
            action,
        } => {
            crate::deployments::deployments(
                st,
                ctx,
                caller,
                method,
                &sub,
                &rg,
                name.as_deref(),
                action.as_deref(),
                &body,
            )
            .await
        }
        // Answered in `handle` (it needs the request headers).
        Route::IdentityToken => Err(groups::method_not_allowed(method)),
        Route::OpenApi => {
            if method != Method::GET {
                return Err(groups::method_not_allowed(method));
            }
            Ok(json(200, crate::openapi::document()))
        }
        Route::Subscription { sub } => {
            if method != Method::GET {
                return Err(groups::method_not_allowed(method));
            }
            Ok(json(200, &discovery::require_subscription(st, &sub).await?))
        }
        Route::Subscriptions => discovery::subscriptions(st, method).await,
        Route::Tenants => discovery::tenants(st, method).await,
        Route::MetadataEndpoints => discovery::metadata_endpoints(st, ctx, method).await,
        Route::ImageAliases => Ok(json(200, &crate::platform_images::aliases())),
        Route::OidcConfig { tenant } => {
            discovery::openid_configuration(st, ctx, method, &tenant).await
        }
        Route::Jwks { .. } => discovery::jwks(st, method).await,
        Route::Token { tenant } => discovery::token(st, ctx, method, &tenant, headers, &body).await,
        Route::RoleAssignments { scope, name } => {
            rbac::role_assignments(st, ctx, method, &scope, name.as_deref(), &body).await
        }
        Route::RoleDefinitions { scope, id } => {
            rbac::role_definitions(st, ctx, method, &scope, id.as_deref()).await
        }
        Route::Permissions { scope } => {
            rbac::permissions(st, caller.as_ref(), method, &scope).await
        }
        Route::ServicePrincipals { app_id, action } => {
            principals::service_principals(st, method, app_id.as_deref(), action.as_deref(), &body)
                .await
        }
        Route::Locations { sub } => Ok(json(
            200,
            &serde_json::json!({"value": [{"id": format!("/subscriptions/{sub}/locations/local"), "name": "local", "displayName": "Local"}]}),
        )),
        Route::Groups { sub } => groups::groups(st, ctx, method, &sub).await,
        Route::Group { sub, rg } => groups::group(st, ctx, method, &sub, &rg, &body).await,
        Route::Galleries { sub, rg } => {
            galleries::galleries(st, ctx, method, &sub, rg.as_deref()).await
        }
        Route::Gallery { sub, rg, gallery } => {
            galleries::gallery_or_image(st, method, &sub, &rg, &gallery, None, &body).await
        }
        Route::Images { sub, rg, gallery } => {
            if method != Method::GET {
                return Err(groups::method_not_allowed(method));
            }
            galleries::images(st, ctx, &sub, &rg, &gallery).await
        }
        Route::Image {
            sub,
            rg,
            gallery,
            image,
        } => {
            galleries::gallery_or_image(st, method, &sub, &rg, &gallery, Some(&image), &body).await
        }
        Route::Versions {
            sub,
            rg,
            gallery,
            image,
        } => {
            if method != Method::GET {
                return Err(groups::method_not_allowed(method));
            }
            galleries::versions(st, ctx, &sub, &rg, &gallery, &image).await
        }
        Route::Version {
            sub,
            rg,
            gallery,
            image,
            version,
        } => galleries::version(st, method, &sub, &rg, &gallery, &image, &version, &body).await,
        Route::ScaleSets { sub, rg } => scalesets::list(st, ctx, method, &sub, rg.as_deref()).await,
        Route::ScaleSetsByLocation { sub, location } => {
            crate::compute_locations::scale_sets(st, ctx, method, &sub, &location).await
        }
        Route::VmSizes { .. } => crate::compute_locations::vm_sizes(method),
        Route::ScaleSet(v) => {
            if let (Some(c), true) = (&caller, *method == Method::PUT || *method == Method::PATCH) {
                crate::managed_identities::check_assign(st, c, &v.id(), &body).await?;
            }
            scalesets::scale_set(st, ctx, method, &v, &body).await
        }
        Route::ScaleSetAction(v, a) => instances::action(st, ctx, method, &v, a, None, &body).await,
        Route::ScaleSetInstanceView(v) => scalesets::instance_view(st, method, &v).await,
        Route::ScaleSetSkus(v) => scalesets::skus(st, method, &v).await,
        Route::OsRollingUpgrade(v) => rolling_upgrades::start_os_upgrade(st, ctx, method, &v).await,
        Route::RollingUpgradeLatest(v) => rolling_upgrades::get_latest(st, method, &v).await,
        Route::RollingUpgradeCancel(v) => rolling_upgrades::cancel(st, ctx, method, &v).await,
        Route::OsUpgradeHistory(v) => {
            rolling_upgrades::os_upgrade_history(st, ctx, method, &v).await
        }
        Route::ExtensionRollingUpgrade(v) => {
            rolling_upgrades::start_extension_upgrade(st, ctx, method, &v).await
        }
        Route::SetOperation(v, op) => {
            crate::set_operations::handle(st, ctx, method, &v, op, None, &body).await
        }
        Route::InstanceOperation(v, id, op) => {
            crate::set_operations::handle(st, ctx, method, &v, op, Some(&id), &body).await
        }
        Route::SetExtensions(v, name) => {
            crate::extensions::set_extensions(st, ctx, method, &v, name.as_deref(), &body).await
        }
        Route::InstanceExtensions(v, id, name) => {
            crate::extensions::vm_extensions(st, method, &v, &id, name.as_deref(), &body).await
        }
        Route::Instances(v) => instances::list_instances(st, ctx, method, &v).await,
        Route::Instance(v, id) => instances::instance(st, ctx, method, &v, &id, &body).await,
        Route::InstanceAction(v, id, a) => {
            instances::action(st, ctx, method, &v, a, Some(&id), &body).await
        }
        Route::InstanceView(v, id) => instances::vm_instance_view(st, method, &v, &id).await,
        Route::InstanceLogs(v, id) => crate::logs::proxy(st, ctx, method, &v, &id).await,
        Route::Operation { id, .. } => scalesets::operation(st, method, &id).await,
        Route::ResourceSkus { .. } => {
            if method != Method::GET {
                return Err(groups::method_not_allowed(method));
            }
            Ok(json(200, &shoal_model::sku::resource_skus_json("local")))
        }
        Route::BlobUpload | Route::BlobReplica { .. } => Err(groups::method_not_allowed(method)),
        Route::Blob { id } => {
            if method != Method::GET {
                return Err(groups::method_not_allowed(method));
            }
            if let Some(host) = caller.as_ref() {
                crate::host_auth::blob_allowed(st, host, &id).await?;
            }
            blobs::download_blob(st, &id, headers).await
        }
        Route::Host { name } => agent_api::host(st, method, &name, &body).await,
        Route::HostInstances { name } => agent_api::host_instances(st, ctx, method, &name).await,
        Route::Status { path } => {
            agent_api::status(st, caller.as_ref(), method, &path, &body).await
        }
        Route::Statuses => agent_api::statuses(st, caller.as_ref(), method, &body).await,
        Route::InstanceIdentity { path } => {
            crate::identity::instance_token(st, ctx, caller.as_ref(), method, &path).await
        }
        Route::Join => crate::host_auth::join(st, method, &body).await,
        Route::JoinTokens => {
            crate::host_auth::join_tokens(st, caller.as_ref(), method, &body).await
        }
        Route::JoinToken { name } => crate::host_auth::join_token(st, method, &name).await,
        Route::LoadBalancers { sub, rg } => {
            arm_crud::list::<LoadBalancers>(st, ctx, method, &sub, rg.as_deref()).await
        }
        Route::LoadBalancer { sub, rg, name } => {
            arm_crud::resource::<LoadBalancers>(st, ctx, method, &sub, &rg, &name, &body).await
        }
        Route::LoadBalancerChild {
            sub,
            rg,
            name,
            kind,
            child,
        } => {
            let child = child.as_deref();
            crate::network::child(st, ctx, method, &sub, &rg, &name, &kind, child, &body).await
        }
        Route::ApplicationGateways { sub, rg } => {
            arm_crud::list::<ApplicationGateways>(st, ctx, method, &sub, rg.as_deref()).await
        }
        Route::ApplicationGateway { sub, rg, name } => {
            arm_crud::resource::<ApplicationGateways>(st, ctx, method, &sub, &rg, &name, &body)
                .await
        }
        Route::UserAssignedIdentities { sub, rg } => {
            arm_crud::list::<UserAssignedIdentities>(st, ctx, method, &sub, rg.as_deref()).await
        }
        Route::UserAssignedIdentity { sub, rg, name } => {
            arm_crud::resource::<UserAssignedIdentities>(st, ctx, method, &sub, &rg, &name, &body)
                .await
        }
        Route::Stored {
            kind,
            sub,
            rg,
            name,
        } => {
            stored(
                st,
                ctx,
                method,
                kind,
                &sub,
                rg.as_deref(),
                name.as_deref(),
                &body,
            )
            .await
        }
        Route::NetworkInterfaces { sub, rg, name } => {
            let (rg, name) = (rg.as_deref(), name.as_deref());
            crate::virtual_machines::network_interfaces(st, ctx, method, &sub, rg, name).await
        }
        Route::VirtualMachines { sub, rg } => {
            crate::virtual_machines::list(st, ctx, method, &sub, rg.as_deref()).await
        }
        Route::VirtualMachine {
            sub,
            rg,
            name,
            action,
        } => {
            let action = action.as_deref();
            crate::virtual_machines::one(st, ctx, method, &sub, &rg, &name, action, &body).await
        }
        Route::PlatformImages { urn } => {
            crate::platform_images::publish(st, method, urn.as_deref(), &body).await
        }
        Route::VmImages {
            sub,
            location,
            rest,
        } => crate::platform_images::catalogue(st, ctx, method, &sub, &location, &rest).await,
        Route::Subnets {
            sub,
            rg,
            name,
            child,
        } => crate::vnets::subnet(st, ctx, method, &sub, &rg, &name, child.as_deref(), &body).await,
        Route::StoreList => agent_api::store_list(st, ctx, method).await,
        Route::StoreWatch => agent_api::store_watch(st, ctx, method).await,
        Route::InstanceHealth { path } => agent_api::health(st, method, &path, &body).await,
        Route::Drain { path, balancer } => {
            agent_api::drain(st, ctx, method, &path, balancer.as_deref(), &body).await
        }
        Route::Balancer { name } => agent_api::balancer(st, method, &name, &body).await,
        Route::HostHeartbeat { name } => hosts::heartbeat(st, method, &name).await,
        Route::Hosts => hosts::list(st, method).await,
        Route::HostResource { name } => hosts::one(st, method, &name).await,
        Route::HostAction { name, action } => hosts::action(st, method, &name, &action).await,
        Route::AutoscaleSettings { sub, rg } => {
            arm_crud::list::<AutoscaleSettings>(st, ctx, method, &sub, rg.as_deref()).await
        }
        Route::AutoscaleSetting { sub, rg, name } => {
            arm_crud::resource::<AutoscaleSettings>(st, ctx, method, &sub, &rg, &name, &body).await
        }
        Route::AutoscaleHistory { sub, rg, name } => {
            crate::autoscale::history(st, method, &sub, &rg, &name).await
        }
        Route::MetricsQuery(v) => crate::metrics::query(st, ctx, method, &v).await,
        Route::MetricDefinitions(v) => crate::metrics::definitions(st, method, &v).await,
        Route::CustomMetrics(v) => crate::metrics::custom(st, method, &v, &body).await,
        Route::MetricsIngest => crate::metrics::ingest(st, caller.as_ref(), method, &body).await,
        Route::Prometheus => crate::metrics::prometheus(st, method),
        Route::ActivityLog { sub } => crate::activity_log::list(st, ctx, method, &sub).await,
    }
}

/// The list (`name` none) or one resource of a kind served by [`arm_crud`] alone.
#[allow(clippy::too_many_arguments)]
async fn stored(
    st: &ApiState,
    ctx: &Ctx,
    method: &Method,
    kind: StoredKind,
    sub: &str,
    rg: Option<&str>,
    name: Option<&str>,
    body: &[u8],
) -> ApiResult {
    use crate::placement_groups::{HostGroups, ProximityPlacementGroups};
    use crate::vnets::{NetworkSecurityGroups, PublicIpAddresses, VirtualNetworks};
    async fn one<K: arm_crud::ArmKind>(
        st: &ApiState,
        ctx: &Ctx,
        method: &Method,
        sub: &str,
        rg: Option<&str>,
        name: Option<&str>,
        body: &[u8],
    ) -> ApiResult {
        match (rg, name) {
            (Some(rg), Some(name)) => {
                arm_crud::resource::<K>(st, ctx, method, sub, rg, name, body).await
            }
            _ => arm_crud::list::<K>(st, ctx, method, sub, rg).await,
        }
    }
    match kind {
        StoredKind::VirtualNetworks => {
            one::<VirtualNetworks>(st, ctx, method, sub, rg, name, body).await
        }
        StoredKind::NetworkSecurityGroups => {
            one::<NetworkSecurityGroups>(st, ctx, method, sub, rg, name, body).await
        }
        StoredKind::PublicIpAddresses => {
            one::<PublicIpAddresses>(st, ctx, method, sub, rg, name, body).await
        }
        StoredKind::ProximityPlacementGroups => {
            one::<ProximityPlacementGroups>(st, ctx, method, sub, rg, name, body).await
        }
        StoredKind::HostGroups => one::<HostGroups>(st, ctx, method, sub, rg, name, body).await,
    }
}

/// Used by tests: a response body as bytes.
pub async fn body_bytes(resp: Response) -> Bytes {
    axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap_or_default()
}

/// Used by tests: a request.
pub fn request(method: Method, uri: &str, body: impl Into<Body>) -> Request {
    let mut req = Request::new(body.into());
    *req.method_mut() = method;
    *req.uri_mut() = uri.parse().unwrap_or_default();
    req
}
