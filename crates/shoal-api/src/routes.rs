//! Parses a request path into a [`Route`]: the one typed command enum of the HTTP layer.
//!
//! ARM matches fixed segments (`resourceGroups`, `providers`, `Microsoft.Compute`,
//! action names…) case-insensitively, so routing is done here by hand rather than by a
//! case-sensitive router. Names keep the spelling the client sent.

use http::Method;
use shoal_model::ids::VmssRef;
use shoal_model::ArmError;

/// 405: the path names a resource, but not one that answers `method`.
pub fn method_not_allowed(method: &Method) -> ArmError {
    ArmError::new(
        405,
        "MethodNotAllowed",
        format!("The method {method} is not supported on this resource."),
    )
}

/// A POST action on a scale set or one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    PowerOff,
    Restart,
    Deallocate,
    Reimage,
    ReimageAll,
    ManualUpgrade,
    /// `POST .../delete` on a set: delete the listed instances.
    DeleteInstances,
    Redeploy,
    PerformMaintenance,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s.to_ascii_lowercase().as_str() {
            "start" => Action::Start,
            "poweroff" => Action::PowerOff,
            "restart" => Action::Restart,
            "deallocate" => Action::Deallocate,
            "reimage" => Action::Reimage,
            "reimageall" => Action::ReimageAll,
            "manualupgrade" => Action::ManualUpgrade,
            "delete" => Action::DeleteInstances,
            "redeploy" => Action::Redeploy,
            "performmaintenance" => Action::PerformMaintenance,
            _ => return None,
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::PowerOff => "powerOff",
            Action::Restart => "restart",
            Action::Deallocate => "deallocate",
            Action::Reimage => "reimage",
            Action::ReimageAll => "reimageAll",
            Action::ManualUpgrade => "manualUpgrade",
            Action::DeleteInstances => "delete",
            Action::Redeploy => "redeploy",
            Action::PerformMaintenance => "performMaintenance",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `Microsoft.Resources/deployments` in a group: list, one, or one's action.
    Deployments {
        sub: String,
        rg: String,
        name: Option<String>,
        action: Option<String>,
    },
    Groups {
        sub: String,
    },
    Group {
        sub: String,
        rg: String,
    },
    Galleries {
        sub: String,
        rg: Option<String>,
    },
    Gallery {
        sub: String,
        rg: String,
        gallery: String,
    },
    Images {
        sub: String,
        rg: String,
        gallery: String,
    },
    Image {
        sub: String,
        rg: String,
        gallery: String,
        image: String,
    },
    Versions {
        sub: String,
        rg: String,
        gallery: String,
        image: String,
    },
    Version {
        sub: String,
        rg: String,
        gallery: String,
        image: String,
        version: String,
    },
    ScaleSets {
        sub: String,
        rg: Option<String>,
    },
    /// `GET /subscriptions/{sub}/providers/Microsoft.Compute/locations/{l}/virtualMachineScaleSets`.
    ScaleSetsByLocation {
        sub: String,
        location: String,
    },
    /// `GET /subscriptions/{sub}/providers/Microsoft.Compute/locations/{l}/vmSizes`.
    VmSizes {
        sub: String,
    },
    ScaleSet(VmssRef),
    ScaleSetAction(VmssRef, Action),
    ScaleSetInstanceView(VmssRef),
    ScaleSetSkus(VmssRef),
    /// `POST .../osRollingUpgrade`.
    OsRollingUpgrade(VmssRef),
    /// `GET .../rollingUpgrades/latest`.
    RollingUpgradeLatest(VmssRef),
    /// `POST .../rollingUpgrades/cancel`.
    RollingUpgradeCancel(VmssRef),
    /// `GET .../osUpgradeHistory`.
    OsUpgradeHistory(VmssRef),
    /// `POST .../extensionRollingUpgrade`.
    ExtensionRollingUpgrade(VmssRef),
    /// `POST {set}/{op}` for the operations of [`crate::set_operations`].
    SetOperation(VmssRef, crate::set_operations::SetOp),
    /// `POST {set}/virtualMachines/{id}/{op}`, likewise.
    InstanceOperation(VmssRef, String, crate::set_operations::SetOp),
    /// `.../virtualMachineScaleSets/{vmss}/extensions[/{name}]`.
    SetExtensions(VmssRef, Option<String>),
    /// `.../virtualMachines/{id}/extensions[/{name}]`.
    InstanceExtensions(VmssRef, String, Option<String>),
    Instances(VmssRef),
    Instance(VmssRef, String),
    InstanceAction(VmssRef, String, Action),
    InstanceView(VmssRef, String),
    InstanceLogs(VmssRef, String),
    Operation {
        sub: String,
        id: String,
    },
    ResourceSkus {
        sub: String,
    },
    Locations {
        sub: String,
    },
    Subscription {
        sub: String,
    },
    /// Shoal's own endpoints for agents and the CLI.
    BlobUpload,
    Blob {
        id: String,
    },
    /// `PUT /shoal/v1/blobs/{id}/replica`: another server copies a new upload here.
    BlobReplica {
        id: String,
    },
    Host {
        name: String,
    },
    HostInstances {
        name: String,
    },
    HostHeartbeat {
        name: String,
    },
    /// `POST /shoal/v1/identity/{sub}/{rg}/{vmss}/{id}?resource=…`: a token of the set's
    /// managed identity for that instance, asked by the agent of its host.
    InstanceIdentity {
        path: String,
    },
    /// `POST /shoal/v1/join`: a join token for a host or balancer credential.
    Join,
    /// `/providers/Shoal.Infrastructure/joinTokens[/{name}]`.
    JoinTokens,
    JoinToken {
        name: String,
    },
    /// `/providers/Shoal.Infrastructure/hosts[/{name}[/{action}]]`.
    Hosts,
    HostResource {
        name: String,
    },
    HostAction {
        name: String,
        action: String,
    },
    Status {
        path: String,
    },
    /// `PUT /shoal/v1/statuses`: many status reports in one request.
    Statuses,
    Healthz,
    /// The managed-identity token endpoint (`/msi/token`, App Service's shape).
    IdentityToken,
    /// `GET /openapi.json`: this API's OpenAPI document.
    OpenApi,
    LoadBalancers {
        sub: String,
        rg: Option<String>,
    },
    LoadBalancer {
        sub: String,
        rg: String,
        name: String,
    },
    /// `.../loadBalancers/{name}/{kind}` (backendAddressPools, probes, …) and one child.
    LoadBalancerChild {
        sub: String,
        rg: String,
        name: String,
        kind: String,
        child: Option<String>,
    },
    ApplicationGateways {
        sub: String,
        rg: Option<String>,
    },
    ApplicationGateway {
        sub: String,
        rg: String,
        name: String,
    },
    UserAssignedIdentities {
        sub: String,
        rg: Option<String>,
    },
    /// A list (`name` none) or one resource of a kind with nothing but ARM CRUD
    /// ([`StoredKind`]).
    Stored {
        kind: StoredKind,
        sub: String,
        rg: Option<String>,
        name: Option<String>,
    },
    /// `Microsoft.Compute/virtualMachines` of a subscription (`rg` none) or a group: the
    /// instances of Flexible scale sets.
    VirtualMachines {
        sub: String,
        rg: Option<String>,
    },
    /// `Microsoft.Network/networkInterfaces` (list, or one): Flexible VMs' interfaces.
    NetworkInterfaces {
        sub: String,
        rg: Option<String>,
        name: Option<String>,
    },
    /// One of them, or a POST action on it (`start`, `powerOff`, …).
    VirtualMachine {
        sub: String,
        rg: String,
        name: String,
        action: Option<String>,
    },
    /// `/providers/Shoal.Infrastructure/platformImages[/{urn}]`.
    PlatformImages {
        urn: Option<String>,
    },
    /// `…/providers/Microsoft.Compute/locations/{l}/publishers/…`: the VM image catalogue.
    VmImages {
        sub: String,
        location: String,
        rest: Vec<String>,
    },
    /// `…/virtualNetworks/{name}/subnets[/{child}]`.
    Subnets {
        sub: String,
        rg: String,
        name: String,
        child: Option<String>,
    },
    UserAssignedIdentity {
        sub: String,
        rg: String,
        name: String,
    },
    /// Read-only list and watch of a store prefix, for balancers (`?prefix=`).
    StoreList,
    StoreWatch,
    /// A balancer reports an instance's health: `/shoal/v1/health/{sub}/{rg}/{vmss}/{id}`.
    InstanceHealth {
        path: String,
    },
    /// An agent asks whether an instance is drained; `.../{balancer}` acknowledges.
    Drain {
        path: String,
        balancer: Option<String>,
    },
    /// A balancer registers itself.
    Balancer {
        name: String,
    },
    /// `Microsoft.Insights/autoscalesettings` of a subscription or a group.
    AutoscaleSettings {
        sub: String,
        rg: Option<String>,
    },
    AutoscaleSetting {
        sub: String,
        rg: String,
        name: String,
    },
    /// `.../autoscalesettings/{name}/history`: what autoscale did and why (Shoal's).
    AutoscaleHistory {
        sub: String,
        rg: String,
        name: String,
    },
    /// `GET {scaleSetId}/providers/Microsoft.Insights/metrics` (Azure Monitor's query).
    MetricsQuery(VmssRef),
    /// `GET {scaleSetId}/providers/Microsoft.Insights/metricDefinitions`.
    MetricDefinitions(VmssRef),
    /// `POST {scaleSetId}/metrics`: a custom metric in Azure's shape.
    CustomMetrics(VmssRef),
    /// `POST /shoal/v1/metrics`: samples from agents.
    MetricsIngest,
    /// `GET /metrics`: Prometheus text.
    Prometheus,
    /// `GET /metadata/endpoints`: the cloud's endpoints (`az cloud register`).
    MetadataEndpoints,
    /// `GET /metadata/vm-image-aliases`: the (empty) image alias document it names.
    ImageAliases,
    /// `GET /subscriptions`.
    Subscriptions,
    /// `GET /tenants`.
    Tenants,
    /// `GET /{tenant}[/v2.0]/.well-known/openid-configuration`.
    OidcConfig {
        tenant: String,
    },
    /// `GET /{tenant}/discovery[/v2.0]/keys`.
    Jwks {
        tenant: String,
    },
    /// `POST /{tenant}/oauth2[/v2.0]/token`.
    Token {
        tenant: String,
    },
    /// `{scope}/providers/Microsoft.Authorization/roleAssignments[/{name}]`.
    RoleAssignments {
        scope: String,
        name: Option<String>,
    },
    /// `{scope}/providers/Microsoft.Authorization/roleDefinitions[/{id}]`.
    RoleDefinitions {
        scope: String,
        id: Option<String>,
    },
    /// `GET {scope}/providers/Microsoft.Authorization/permissions`: what the caller may do
    /// at `scope` (the portal greys out what a role does not allow).
    Permissions {
        scope: String,
    },
    /// `/providers/Shoal.Directory/servicePrincipals[/{appId}[/resetCredentials]]`.
    ServicePrincipals {
        app_id: Option<String>,
        action: Option<String>,
    },
    /// `GET /subscriptions/{sub}/providers/Microsoft.Insights/eventtypes/management/values`:
    /// the activity log (autoscale's events).
    ActivityLog {
        sub: String,
    },
}

/// Resource kinds served by [`crate::arm_crud`] alone, routed from one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredKind {
    VirtualNetworks,
    NetworkSecurityGroups,
    PublicIpAddresses,
    ProximityPlacementGroups,
    HostGroups,
}

impl StoredKind {
    pub const ALL: [StoredKind; 5] = [
        StoredKind::VirtualNetworks,
        StoredKind::NetworkSecurityGroups,
        StoredKind::PublicIpAddresses,
        StoredKind::ProximityPlacementGroups,
        StoredKind::HostGroups,
    ];

    /// The provider namespace and type in the kind's URLs.
    pub fn path(self) -> (&'static str, &'static str) {
        match self {
            StoredKind::VirtualNetworks => ("Microsoft.Network", "virtualNetworks"),
            StoredKind::NetworkSecurityGroups => ("Microsoft.Network", "networkSecurityGroups"),
            StoredKind::PublicIpAddresses => ("Microsoft.Network", "publicIPAddresses"),
            StoredKind::ProximityPlacementGroups => {
                ("Microsoft.Compute", "proximityPlacementGroups")
            }
            StoredKind::HostGroups => ("Microsoft.Compute", "hostGroups"),
        }
    }

    /// The OpenAPI key of one resource of the kind (its list's is `path().1`).
    pub fn doc_key(self) -> &'static str {
        match self {
            StoredKind::VirtualNetworks => "virtualNetwork",
            StoredKind::NetworkSecurityGroups => "networkSecurityGroup",
            StoredKind::PublicIpAddresses => "publicIPAddress",
            StoredKind::ProximityPlacementGroups => "proximityPlacementGroup",
            StoredKind::HostGroups => "hostGroup",
        }
    }

    /// The route of `segs` (a path under `/subscriptions/{sub}`) if it addresses one of
    /// these kinds: `Some(None)` when it does but names nothing servable (a 404).
    fn route(segs: &[&str], sub: &str) -> Option<Option<Route>> {
        let s = |i: usize| segs.get(i).copied().unwrap_or("");
        let owned = |i: usize| s(i).to_string();
        let of = |ns: usize| {
            StoredKind::ALL
                .into_iter()
                .find(|k| eq(s(ns), k.path().0) && eq(s(ns + 1), k.path().1))
        };
        let sub = sub.to_string();
        if segs.len() == 5 && eq(s(2), "providers") {
            let kind = of(3)?;
            return Some(Some(Route::Stored {
                kind,
                sub,
                rg: None,
                name: None,
            }));
        }
        if segs.len() < 7 || !eq(s(2), "resourcegroups") || !eq(s(4), "providers") {
            return None;
        }
        let kind = of(5)?;
        let rg = owned(3);
        Some(match segs.len() {
            7 => Some(Route::Stored {
                kind,
                sub,
                rg: Some(rg),
                name: None,
            }),
            8 => Some(Route::Stored {
                kind,
                sub,
                rg: Some(rg),
                name: Some(owned(7)),
            }),
            9 | 10 if kind == StoredKind::VirtualNetworks && eq(s(8), "subnets") => {
                Some(Route::Subnets {
                    sub,
                    rg,
                    name: owned(7),
                    child: (segs.len() == 10).then(|| owned(9)),
                })
            }
            _ => None,
        })
    }
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn not_found(path: &str) -> ArmError {
    ArmError::new(
        404,
        "NotFound",
        format!("No API at '{path}'. Paths follow Azure Resource Manager, e.g. /subscriptions/{{id}}/resourceGroups/{{name}}."),
    )
}

/// Parses a URL path (without the query).
pub fn parse(path: &str) -> Result<Route, ArmError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    if segs.iter().any(|s| s.is_empty()) && !path.trim_matches('/').is_empty() {
        return Err(not_found(path));
    }
    let s = |i: usize| segs.get(i).copied().unwrap_or("");
    let owned = |i: usize| s(i).to_string();
    let n = segs.len();

    if eq(s(0), "shoal") && eq(s(1), "v1") {
        return match (n, s(2).to_ascii_lowercase().as_str()) {
            (3, "blobs") => Ok(Route::BlobUpload),
            (4, "blobs") => Ok(Route::Blob { id: owned(3) }),
            (5, "blobs") if eq(s(4), "replica") => Ok(Route::BlobReplica { id: owned(3) }),
            (4, "hosts") => Ok(Route::Host { name: owned(3) }),
            (5, "hosts") if eq(s(4), "instances") => Ok(Route::HostInstances { name: owned(3) }),
            (5, "hosts") if eq(s(4), "heartbeat") => Ok(Route::HostHeartbeat { name: owned(3) }),
            (3, "statuses") => Ok(Route::Statuses),
            (7, "status") => Ok(Route::Status {
                path: segs[3..].join("/"),
            }),
            (7, "identity") => Ok(Route::InstanceIdentity {
                path: segs[3..].join("/"),
            }),
            (3, "list") => Ok(Route::StoreList),
            (3, "watch") => Ok(Route::StoreWatch),
            (7, "health") => Ok(Route::InstanceHealth {
                path: segs[3..].join("/"),
            }),
            (7, "drain") => Ok(Route::Drain {
                path: segs[3..].join("/"),
                balancer: None,
            }),
            (8, "drain") => Ok(Route::Drain {
                path: segs[3..7].join("/"),
                balancer: Some(owned(7)),
            }),
            (4, "balancers") => Ok(Route::Balancer { name: owned(3) }),
            (3, "metrics") => Ok(Route::MetricsIngest),
            (3, "join") => Ok(Route::Join),
            _ => Err(not_found(path)),
        };
    }
    if eq(s(0), "providers") && eq(s(1), "Shoal.Infrastructure") && eq(s(2), "joinTokens") {
        return match n {
            3 => Ok(Route::JoinTokens),
            4 => Ok(Route::JoinToken { name: owned(3) }),
            _ => Err(not_found(path)),
        };
    }
    if eq(s(0), "providers") && eq(s(1), "Shoal.Infrastructure") && eq(s(2), "platformImages") {
        return match n {
            3 => Ok(Route::PlatformImages { urn: None }),
            4 => Ok(Route::PlatformImages {
                urn: Some(owned(3)),
            }),
            _ => Err(not_found(path)),
        };
    }
    if eq(s(0), "providers") && eq(s(1), "Shoal.Infrastructure") && eq(s(2), "hosts") {
        return match n {
            3 => Ok(Route::Hosts),
            4 => Ok(Route::HostResource { name: owned(3) }),
            5 => Ok(Route::HostAction {
                name: owned(3),
                action: owned(4),
            }),
            _ => Err(not_found(path)),
        };
    }
    if let Some(i) = (0..n.saturating_sub(2))
        .find(|&i| eq(s(i), "providers") && eq(s(i + 1), "Microsoft.Authorization"))
    {
        let scope = format!("/{}", segs[..i].join("/"));
        let name = (n == i + 4).then(|| owned(i + 3));
        return match s(i + 2) {
            k if eq(k, "roleAssignments") && n <= i + 4 => {
                Ok(Route::RoleAssignments { scope, name })
            }
            k if eq(k, "roleDefinitions") && n <= i + 4 => {
                Ok(Route::RoleDefinitions { scope, id: name })
            }
            k if eq(k, "permissions") && n == i + 3 => Ok(Route::Permissions { scope }),
            _ => Err(not_found(path)),
        };
    }
    if eq(s(0), "providers") && eq(s(1), "Shoal.Directory") && eq(s(2), "servicePrincipals") {
        return match n {
            3..=5 => Ok(Route::ServicePrincipals {
                app_id: (n >= 4).then(|| owned(3)),
                action: (n == 5).then(|| owned(4)),
            }),
            _ => Err(not_found(path)),
        };
    }
    if n == 2 && eq(s(0), "metadata") && eq(s(1), "endpoints") {
        return Ok(Route::MetadataEndpoints);
    }
    if n == 2 && eq(s(0), "metadata") && eq(s(1), "vm-image-aliases") {
        return Ok(Route::ImageAliases);
    }
    if n == 1 && eq(s(0), "subscriptions") {
        return Ok(Route::Subscriptions);
    }
    if n == 1 && eq(s(0), "tenants") {
        return Ok(Route::Tenants);
    }
    // The token authority: `/{tenant}/…` (v2.0 and v1 paths).
    if !eq(s(0), "subscriptions") && n >= 3 {
        let tenant = owned(0);
        let rest: Vec<String> = segs[1..].iter().map(|x| x.to_ascii_lowercase()).collect();
        let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
        match rest.as_slice() {
            ["v2.0", ".well-known", "openid-configuration"]
            | [".well-known", "openid-configuration"] => return Ok(Route::OidcConfig { tenant }),
            ["discovery", "v2.0", "keys"] | ["discovery", "keys"] => {
                return Ok(Route::Jwks { tenant })
            }
            ["oauth2", "v2.0", "token"] | ["oauth2", "token"] => {
                return Ok(Route::Token { tenant })
            }
            _ => {}
        }
    }
    if n == 1 && eq(s(0), "healthz") {
        return Ok(Route::Healthz);
    }
    if n == 1 && eq(s(0), "metrics") {
        return Ok(Route::Prometheus);
    }
    if n == 1 && eq(s(0), "openapi.json") {
        return Ok(Route::OpenApi);
    }
    if n == 2 && eq(s(0), "msi") && eq(s(1), "token") {
        return Ok(Route::IdentityToken);
    }
    if !eq(s(0), "subscriptions") || n < 2 {
        return Err(not_found(path));
    }
    let sub = owned(1);
    if n == 2 {
        return Ok(Route::Subscription { sub });
    }
    if n == 3 && eq(s(2), "resourcegroups") {
        return Ok(Route::Groups { sub });
    }
    if n == 3 && eq(s(2), "locations") {
        return Ok(Route::Locations { sub });
    }
    if n == 5 && eq(s(2), "providers") && eq(s(3), "Microsoft.Network") && eq(s(4), "loadBalancers")
    {
        return Ok(Route::LoadBalancers { sub, rg: None });
    }
    if n >= 7
        && eq(s(2), "resourcegroups")
        && eq(s(4), "providers")
        && eq(s(5), "Microsoft.Network")
        && eq(s(6), "loadBalancers")
    {
        let rg = owned(3);
        return match n {
            7 => Ok(Route::LoadBalancers { sub, rg: Some(rg) }),
            8 => Ok(Route::LoadBalancer {
                sub,
                rg,
                name: owned(7),
            }),
            9 | 10 => {
                let kinds = [
                    "backendAddressPools",
                    "probes",
                    "loadBalancingRules",
                    "frontendIPConfigurations",
                    "inboundNatRules",
                ];
                match kinds.iter().find(|k| eq(s(8), k)) {
                    Some(kind) => Ok(Route::LoadBalancerChild {
                        sub,
                        rg,
                        name: owned(7),
                        kind: kind.to_string(),
                        child: (n == 10).then(|| owned(9)),
                    }),
                    None => Err(not_found(path)),
                }
            }
            _ => Err(not_found(path)),
        };
    }
    if n == 5
        && eq(s(2), "providers")
        && eq(s(3), "Microsoft.Network")
        && eq(s(4), "applicationGateways")
    {
        return Ok(Route::ApplicationGateways { sub, rg: None });
    }
    if (n == 7 || n == 8)
        && eq(s(2), "resourcegroups")
        && eq(s(4), "providers")
        && eq(s(5), "Microsoft.Network")
        && eq(s(6), "applicationGateways")
    {
        let rg = owned(3);
        return Ok(match n {
            7 => Route::ApplicationGateways { sub, rg: Some(rg) },
            _ => Route::ApplicationGateway {
                sub,
                rg,
                name: owned(7),
            },
        });
    }
    if n == 5
        && eq(s(2), "providers")
        && eq(s(3), "Microsoft.ManagedIdentity")
        && eq(s(4), "userAssignedIdentities")
    {
        return Ok(Route::UserAssignedIdentities { sub, rg: None });
    }
    if (n == 7 || n == 8)
        && eq(s(2), "resourcegroups")
        && eq(s(4), "providers")
        && eq(s(5), "Microsoft.ManagedIdentity")
        && eq(s(6), "userAssignedIdentities")
    {
        let rg = owned(3);
        return Ok(match n {
            7 => Route::UserAssignedIdentities { sub, rg: Some(rg) },
            _ => Route::UserAssignedIdentity {
                sub,
                rg,
                name: owned(7),
            },
        });
    }
    if eq(s(2), "providers")
        && eq(s(3), "Microsoft.Network")
        && eq(s(4), "networkInterfaces")
        && n == 5
    {
        return Ok(Route::NetworkInterfaces {
            sub,
            rg: None,
            name: None,
        });
    }
    if (n == 7 || n == 8)
        && eq(s(2), "resourcegroups")
        && eq(s(4), "providers")
        && eq(s(5), "Microsoft.Network")
        && eq(s(6), "networkInterfaces")
    {
        return Ok(Route::NetworkInterfaces {
            sub,
            rg: Some(owned(3)),
            name: (n == 8).then(|| owned(7)),
        });
    }
    if let Some(r) = StoredKind::route(&segs, &sub) {
        return r.ok_or_else(|| not_found(path));
    }
    if n == 5
        && eq(s(2), "providers")
        && eq(s(3), "Microsoft.Insights")
        && eq(s(4), "autoscalesettings")
    {
        return Ok(Route::AutoscaleSettings { sub, rg: None });
    }
    if n == 7
        && eq(s(2), "providers")
        && eq(s(3), "Microsoft.Insights")
        && eq(s(4), "eventtypes")
        && eq(s(5), "management")
        && eq(s(6), "values")
    {
        return Ok(Route::ActivityLog { sub });
    }
    if (7..=9).contains(&n)
        && eq(s(2), "resourcegroups")
        && eq(s(4), "providers")
        && eq(s(5), "Microsoft.Insights")
        && eq(s(6), "autoscalesettings")
    {
        let rg = owned(3);
        return match n {
            7 => Ok(Route::AutoscaleSettings { sub, rg: Some(rg) }),
            8 => Ok(Route::AutoscaleSetting {
                sub,
                rg,
                name: owned(7),
            }),
            _ if eq(s(8), "history") => Ok(Route::AutoscaleHistory {
                sub,
                rg,
                name: owned(7),
            }),
            _ => Err(not_found(path)),
        };
    }
    if let Some(r) = crate::deployments::route(&segs) {
        return Ok(r);
    }
    // Subscription-level providers.
    if eq(s(2), "providers") && eq(s(3), "Microsoft.Compute") {
        return match n {
            5 if eq(s(4), "virtualMachineScaleSets") => Ok(Route::ScaleSets { sub, rg: None }),
            5 if eq(s(4), "virtualMachines") => Ok(Route::VirtualMachines { sub, rg: None }),
            5 if eq(s(4), "galleries") => Ok(Route::Galleries { sub, rg: None }),
            5 if eq(s(4), "skus") => Ok(Route::ResourceSkus { sub }),
            7 if eq(s(4), "locations") && eq(s(6), "virtualMachineScaleSets") => {
                Ok(Route::ScaleSetsByLocation {
                    sub,
                    location: owned(5),
                })
            }
            7 if eq(s(4), "locations") && eq(s(6), "vmSizes") => Ok(Route::VmSizes { sub }),
            7.. if eq(s(4), "locations") && eq(s(6), "publishers") => Ok(Route::VmImages {
                sub,
                location: owned(5),
                rest: segs[7..].iter().map(|x| x.to_string()).collect(),
            }),
            8 if eq(s(4), "locations")
                && (eq(s(6), "operations") || eq(s(6), "operationResults")) =>
            {
                Ok(Route::Operation { sub, id: owned(7) })
            }
            _ => Err(not_found(path)),
        };
    }
    if !eq(s(2), "resourcegroups") {
        return Err(not_found(path));
    }
    let rg = owned(3);
    if n == 4 {
        return Ok(Route::Group { sub, rg });
    }
    if !(eq(s(4), "providers") && eq(s(5), "Microsoft.Compute")) || n < 7 {
        return Err(not_found(path));
    }
    if eq(s(6), "galleries") {
        let gallery = owned(7);
        return match n {
            7 => Ok(Route::Galleries { sub, rg: Some(rg) }),
            8 => Ok(Route::Gallery { sub, rg, gallery }),
            9 if eq(s(8), "images") => Ok(Route::Images { sub, rg, gallery }),
            10 if eq(s(8), "images") => Ok(Route::Image {
                sub,
                rg,
                gallery,
                image: owned(9),
            }),
            11 if eq(s(8), "images") && eq(s(10), "versions") => Ok(Route::Versions {
                sub,
                rg,
                gallery,
                image: owned(9),
            }),
            12 if eq(s(8), "images") && eq(s(10), "versions") => Ok(Route::Version {
                sub,
                rg,
                gallery,
                image: owned(9),
                version: owned(11),
            }),
            _ => Err(not_found(path)),
        };
    }
    if eq(s(6), "virtualMachines") {
        return match n {
            7 => Ok(Route::VirtualMachines { sub, rg: Some(rg) }),
            8 | 9 => Ok(Route::VirtualMachine {
                sub,
                rg,
                name: owned(7),
                action: (n == 9).then(|| owned(8)),
            }),
            _ => Err(not_found(path)),
        };
    }
    if !eq(s(6), "virtualMachineScaleSets") {
        return Err(not_found(path));
    }
    if n == 7 {
        return Ok(Route::ScaleSets { sub, rg: Some(rg) });
    }
    let vmss = VmssRef::new(&sub, &rg, s(7));
    match n {
        8 => Ok(Route::ScaleSet(vmss)),
        9 if eq(s(8), "instanceView") => Ok(Route::ScaleSetInstanceView(vmss)),
        9 if eq(s(8), "skus") => Ok(Route::ScaleSetSkus(vmss)),
        9 if eq(s(8), "virtualMachines") => Ok(Route::Instances(vmss)),
        9 if eq(s(8), "osRollingUpgrade") => Ok(Route::OsRollingUpgrade(vmss)),
        9 if eq(s(8), "osUpgradeHistory") => Ok(Route::OsUpgradeHistory(vmss)),
        9 if eq(s(8), "extensionRollingUpgrade") => Ok(Route::ExtensionRollingUpgrade(vmss)),
        9 if eq(s(8), "extensions") => Ok(Route::SetExtensions(vmss, None)),
        10 if eq(s(8), "extensions") => Ok(Route::SetExtensions(vmss, Some(owned(9)))),
        11 if eq(s(8), "virtualMachines") && eq(s(10), "extensions") => {
            Ok(Route::InstanceExtensions(vmss, owned(9), None))
        }
        12 if eq(s(8), "virtualMachines") && eq(s(10), "extensions") => {
            Ok(Route::InstanceExtensions(vmss, owned(9), Some(owned(11))))
        }
        10 if eq(s(8), "rollingUpgrades") && eq(s(9), "latest") => {
            Ok(Route::RollingUpgradeLatest(vmss))
        }
        10 if eq(s(8), "rollingUpgrades") && eq(s(9), "cancel") => {
            Ok(Route::RollingUpgradeCancel(vmss))
        }
        9 if eq(s(8), "metrics") => Ok(Route::CustomMetrics(vmss)),
        11 if eq(s(8), "providers") && eq(s(9), "Microsoft.Insights") && eq(s(10), "metrics") => {
            Ok(Route::MetricsQuery(vmss))
        }
        11 if eq(s(8), "providers")
            && eq(s(9), "Microsoft.Insights")
            && eq(s(10), "metricDefinitions") =>
        {
            Ok(Route::MetricDefinitions(vmss))
        }
        9 if crate::set_operations::SetOp::parse(s(8), false).is_some() => Ok(Route::SetOperation(
            vmss,
            crate::set_operations::SetOp::parse(s(8), false).expect("checked"),
        )),
        11 if eq(s(8), "virtualMachines")
            && crate::set_operations::SetOp::parse(s(10), true).is_some() =>
        {
            Ok(Route::InstanceOperation(
                vmss,
                owned(9),
                crate::set_operations::SetOp::parse(s(10), true).expect("checked"),
            ))
        }
        9 => Action::parse(s(8))
            .map(|a| Route::ScaleSetAction(vmss, a))
            .ok_or_else(|| not_found(path)),
        10 if eq(s(8), "virtualMachines") => Ok(Route::Instance(vmss, owned(9))),
        11 if eq(s(8), "virtualMachines") && eq(s(10), "instanceView") => {
            Ok(Route::InstanceView(vmss, owned(9)))
        }
        11 if eq(s(8), "virtualMachines") => Action::parse(s(10))
            .map(|a| Route::InstanceAction(vmss, owned(9), a))
            .ok_or_else(|| not_found(path)),
        12 if eq(s(8), "virtualMachines") && eq(s(10), "shoal") && eq(s(11), "logs") => {
            Ok(Route::InstanceLogs(vmss, owned(9)))
        }
        _ => Err(not_found(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolling_upgrade_and_identity_paths() {
        let set = "/subscriptions/s/resourceGroups/demo/providers/Microsoft.Compute/virtualMachineScaleSets/web";
        let v = || VmssRef::new("s", "demo", "web");
        assert_eq!(
            parse(&format!("{set}/osrollingupgrade")).unwrap(),
            Route::OsRollingUpgrade(v())
        );
        assert_eq!(
            parse(&format!("{set}/rollingUpgrades/latest")).unwrap(),
            Route::RollingUpgradeLatest(v())
        );
        assert_eq!(
            parse(&format!("{set}/rollingupgrades/Cancel")).unwrap(),
            Route::RollingUpgradeCancel(v())
        );
        assert!(parse(&format!("{set}/rollingUpgrades/nope")).is_err());
        assert_eq!(parse("/msi/token").unwrap(), Route::IdentityToken);
    }

    #[test]
    fn arm_paths_case_insensitively() {
        let p = "/subscriptions/s/resourcegroups/Demo/providers/microsoft.compute/virtualmachinescalesets/Web/poweroff";
        assert_eq!(
            parse(p).unwrap(),
            Route::ScaleSetAction(VmssRef::new("s", "Demo", "Web"), Action::PowerOff)
        );
        let p = "/subscriptions/s/resourceGroups/demo/providers/Microsoft.Compute/virtualMachineScaleSets/web/reimageall";
        assert_eq!(
            parse(p).unwrap(),
            Route::ScaleSetAction(VmssRef::new("s", "demo", "web"), Action::ReimageAll)
        );
        let p = "/subscriptions/s/resourceGroups/demo/providers/Microsoft.Compute/virtualMachineScaleSets/web/virtualMachines/3/instanceView";
        assert_eq!(
            parse(p).unwrap(),
            Route::InstanceView(VmssRef::new("s", "demo", "web"), "3".into())
        );
        assert_eq!(
            parse("/subscriptions/s/resourcegroups").unwrap(),
            Route::Groups { sub: "s".into() }
        );
        assert_eq!(
            parse("/subscriptions/s/providers/Microsoft.Compute/locations/local/operations/abc")
                .unwrap(),
            Route::Operation {
                sub: "s".into(),
                id: "abc".into()
            }
        );
        assert!(parse("/nope").is_err());
        assert!(parse("/subscriptions/s/resourceGroups/demo/providers/Microsoft.Compute/virtualMachineScaleSets/web/explode").is_err());
        assert!(parse("/subscriptions//resourceGroups").is_err());
    }

    #[test]
    fn application_gateway_paths() {
        assert_eq!(
            parse("/subscriptions/s/resourcegroups/Demo/providers/microsoft.network/applicationgateways/GW").unwrap(),
            Route::ApplicationGateway {
                sub: "s".into(),
                rg: "Demo".into(),
                name: "GW".into()
            }
        );
        assert_eq!(
            parse("/subscriptions/s/resourceGroups/demo/providers/Microsoft.Network/applicationGateways").unwrap(),
            Route::ApplicationGateways {
                sub: "s".into(),
                rg: Some("demo".into())
            }
        );
        assert_eq!(
            parse("/subscriptions/s/providers/Microsoft.Network/applicationGateways").unwrap(),
            Route::ApplicationGateways {
                sub: "s".into(),
                rg: None
            }
        );
        assert!(parse("/subscriptions/s/resourceGroups/demo/providers/Microsoft.Network/applicationGateways/gw/probes").is_err());
    }

    #[test]
    fn user_assigned_identity_paths() {
        assert_eq!(
            parse("/subscriptions/s/resourcegroups/Demo/providers/microsoft.managedidentity/userassignedidentities/Web").unwrap(),
            Route::UserAssignedIdentity {
                sub: "s".into(),
                rg: "Demo".into(),
                name: "Web".into()
            }
        );
        assert_eq!(
            parse("/subscriptions/s/providers/Microsoft.ManagedIdentity/userAssignedIdentities")
                .unwrap(),
            Route::UserAssignedIdentities {
                sub: "s".into(),
                rg: None
            }
        );
        assert!(parse("/subscriptions/s/resourceGroups/demo/providers/Microsoft.ManagedIdentity/userAssignedIdentities/x/y").is_err());
    }

    #[test]
    fn autoscale_and_metrics_paths() {
        let v = || VmssRef::new("s", "demo", "web");
        let set = "/subscriptions/s/resourceGroups/demo/providers/Microsoft.Compute/virtualMachineScaleSets/web";
        assert_eq!(
            parse("/subscriptions/s/resourcegroups/demo/providers/microsoft.insights/autoscaleSettings/auto").unwrap(),
            Route::AutoscaleSetting { sub: "s".into(), rg: "demo".into(), name: "auto".into() }
        );
        assert_eq!(
            parse("/subscriptions/s/resourceGroups/demo/providers/Microsoft.Insights/autoscalesettings/auto/history").unwrap(),
            Route::AutoscaleHistory { sub: "s".into(), rg: "demo".into(), name: "auto".into() }
        );
        assert_eq!(
            parse("/subscriptions/s/providers/Microsoft.Insights/autoscalesettings").unwrap(),
            Route::AutoscaleSettings {
                sub: "s".into(),
                rg: None
            }
        );
        assert_eq!(
            parse(&format!("{set}/providers/microsoft.insights/metrics")).unwrap(),
            Route::MetricsQuery(v())
        );
        assert_eq!(
            parse(&format!("{set}/metrics")).unwrap(),
            Route::CustomMetrics(v())
        );
        assert_eq!(parse("/shoal/v1/metrics").unwrap(), Route::MetricsIngest);
        assert_eq!(parse("/metrics").unwrap(), Route::Prometheus);
        assert_eq!(
            parse("/subscriptions/s/providers/microsoft.insights/eventtypes/management/values")
                .unwrap(),
            Route::ActivityLog { sub: "s".into() }
        );
        assert!(parse("/subscriptions/s/resourceGroups/demo/providers/Microsoft.Insights/autoscalesettings/auto/nope").is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_path_parses_or_errors_without_panic(p in "(/[a-zA-Z0-9._-]{0,12}){0,14}") {
            let _ = parse(&p);
        }
    }
}
