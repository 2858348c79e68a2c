//! `Microsoft.Network/loadBalancers` in Azure's JSON shape, and its validation.
//!
//! Sub-resources (frontend IP configurations, backend pools, probes, rules) reference each
//! other by ARM id; [`normalize_lb`] fills in their ids and [`validate_lb`] checks that
//! every reference resolves inside the same load balancer; [`resolved_rules`] gives the
//! balancer each rule with its references resolved.
//!
//! Which backend pools a scale set joins (a load balancer's or an application gateway's)
//! is read from the set's network profile here, once: [`PoolOwner`] and
//! `VirtualMachineScaleSet::{backend_pools, joins_pool, joins_pool_of}`.

use serde::de::MapAccess;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::arm::{
    check_child_names, find_child, name_children, Extras, IdRef, Resource, SubResource,
};
use crate::arm_enum;
use crate::error::ArmError;
use crate::vmss::VirtualMachineScaleSet;

pub const LB_TYPE: &str = "Microsoft.Network/loadBalancers";

arm_enum!(ProbeProtocol { Tcp = "Tcp", Http = "Http", Https = "Https" });
arm_enum!(TransportProtocol { Tcp = "Tcp", Udp = "Udp", All = "All" });
arm_enum!(LoadDistribution { Default = "Default", SourceIp = "SourceIP", SourceIpProtocol = "SourceIPProtocol" });

/// A load balancer: the ARM envelope around [`LbProperties`], with its `sku`.
pub type LoadBalancer = Resource<LbProperties, LbExtras>;

/// A load balancer's own top-level fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LbExtras {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sku: Option<Value>,
}

impl Extras for LbExtras {
    fn read_field<'de, A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
    ) -> Result<bool, A::Error> {
        match key {
            "sku" => self.sku = map.next_value()?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LbProperties {
    #[serde(rename = "frontendIPConfigurations", default)]
    pub frontend_ip_configurations: Vec<SubResource<FrontendProps>>,
    #[serde(default)]
    pub backend_address_pools: Vec<SubResource<PoolProps>>,
    #[serde(default)]
    pub probes: Vec<SubResource<ProbeProps>>,
    #[serde(default)]
    pub load_balancing_rules: Vec<SubResource<RuleProps>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_nat_rules: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_rules: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_guid: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FrontendProps {
    /// The address the balancer listens on (default 127.0.0.1).
    #[serde(
        rename = "privateIPAddress",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub private_ip_address: Option<String>,
    #[serde(
        rename = "privateIPAllocationMethod",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub private_ip_allocation_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<Value>,
    #[serde(
        rename = "publicIPAddress",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub public_ip_address: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancing_rules: Option<Vec<IdRef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolProps {
    /// Read-only: the instances' IP configurations in this pool.
    #[serde(
        rename = "backendIPConfigurations",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub backend_ip_configurations: Option<Vec<IdRef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancing_rules: Option<Vec<IdRef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeProps {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<ProbeProtocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_in_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_of_probes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_threshold: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancing_rules: Option<Vec<IdRef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleProps {
    #[serde(
        rename = "frontendIPConfiguration",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub frontend_ip_configuration: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_address_pool: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<TransportProtocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frontend_port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_distribution: Option<LoadDistribution>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_in_minutes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_tcp_reset: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_floating_ip: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_outbound_snat: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
}

/// Fills in sub-resource ids, types and defaults, and the back-references Azure shows
/// (which rules use a frontend, pool or probe).
pub fn normalize_lb(lb: &mut LoadBalancer, id: &str) {
    let p = &mut lb.properties;
    name_children(
        &mut p.frontend_ip_configurations,
        id,
        LB_TYPE,
        "frontendIPConfigurations",
    );
    name_children(
        &mut p.backend_address_pools,
        id,
        LB_TYPE,
        "backendAddressPools",
    );
    name_children(&mut p.probes, id, LB_TYPE, "probes");
    name_children(
        &mut p.load_balancing_rules,
        id,
        LB_TYPE,
        "loadBalancingRules",
    );
    for fe in &mut p.frontend_ip_configurations {
        fe.properties
            .private_ip_address
            .get_or_insert_with(|| "127.0.0.1".into());
        fe.properties
            .private_ip_allocation_method
            .get_or_insert_with(|| "Static".into());
        fe.properties.provisioning_state = Some("Succeeded".into());
    }
    for pr in &mut p.probes {
        pr.properties.interval_in_seconds.get_or_insert(15);
        pr.properties.number_of_probes.get_or_insert(2);
        pr.properties.provisioning_state = Some("Succeeded".into());
        if pr.properties.protocol == Some(ProbeProtocol::Tcp) {
            pr.properties.request_path = None;
        }
    }
    for pool in &mut p.backend_address_pools {
        pool.properties.provisioning_state = Some("Succeeded".into());
    }
    for r in &mut p.load_balancing_rules {
        let rp = &mut r.properties;
        rp.protocol.get_or_insert(TransportProtocol::Tcp);
        rp.load_distribution
            .get_or_insert(LoadDistribution::Default);
        rp.idle_timeout_in_minutes.get_or_insert(4);
        rp.enable_tcp_reset.get_or_insert(false);
        rp.enable_floating_ip.get_or_insert(false);
        rp.provisioning_state = Some("Succeeded".into());
    }
    // Back-references.
    let rules: Vec<(String, RuleProps)> = p
        .load_balancing_rules
        .iter()
        .map(|r| (r.id.clone().unwrap_or_default(), r.properties.clone()))
        .collect();
    let users = |target: &Option<String>,
                 pick: &dyn Fn(&RuleProps) -> Option<String>|
     -> Option<Vec<IdRef>> {
        let target = target.as_deref()?;
        let ids: Vec<IdRef> = rules
            .iter()
            .filter(|(_, rp)| pick(rp).is_some_and(|x| x.eq_ignore_ascii_case(target)))
            .map(|(id, _)| IdRef { id: id.clone() })
            .collect();
        (!ids.is_empty()).then_some(ids)
    };
    for fe in &mut p.frontend_ip_configurations {
        fe.properties.load_balancing_rules = users(&fe.id, &|r| {
            r.frontend_ip_configuration.as_ref().map(|x| x.id.clone())
        });
    }
    for pool in &mut p.backend_address_pools {
        pool.properties.load_balancing_rules = users(&pool.id, &|r| {
            r.backend_address_pool.as_ref().map(|x| x.id.clone())
        });
    }
    for pr in &mut p.probes {
        pr.properties.load_balancing_rules =
            users(&pr.id, &|r| r.probe.as_ref().map(|x| x.id.clone()));
    }
}

fn check_port(v: Option<i64>, target: &str, required: bool) -> Result<(), ArmError> {
    match v {
        None if !required => Ok(()),
        Some(p) if (1..=65535).contains(&p) => Ok(()),
        None => Err(ArmError::invalid_parameter(
            target,
            "A port is required (1-65535).",
        )),
        Some(p) => Err(ArmError::invalid_parameter(
            target,
            format!("Port {p} is out of range: use 1-65535."),
        )),
    }
}

/// Checks a normalized load balancer. `lb_id` is its own id.
pub fn validate_lb(lb: &LoadBalancer, lb_id: &str) -> Result<(), ArmError> {
    crate::arm::require_location(lb)?;
    let p = &lb.properties;
    check_child_names(
        &p.frontend_ip_configurations,
        "properties.frontendIPConfigurations",
        false,
    )?;
    check_child_names(
        &p.backend_address_pools,
        "properties.backendAddressPools",
        false,
    )?;
    check_child_names(&p.probes, "properties.probes", false)?;
    check_child_names(
        &p.load_balancing_rules,
        "properties.loadBalancingRules",
        false,
    )?;
    for (i, fe) in p.frontend_ip_configurations.iter().enumerate() {
        if let Some(ip) = &fe.properties.private_ip_address {
            if ip.parse::<std::net::IpAddr>().is_err() {
                return Err(ArmError::invalid_parameter(
                    format!("properties.frontendIPConfigurations[{i}].properties.privateIPAddress"),
                    format!("'{ip}' is not an IP address."),
                ));
            }
        }
    }
    for (i, pr) in p.probes.iter().enumerate() {
        let t = format!("properties.probes[{i}].properties");
        if pr.properties.protocol.is_none() {
            return Err(ArmError::invalid_parameter(
                format!("{t}.protocol"),
                "A probe needs a protocol: Tcp, Http or Https.",
            ));
        }
        check_port(pr.properties.port, &format!("{t}.port"), true)?;
        if pr.properties.protocol != Some(ProbeProtocol::Tcp) {
            match &pr.properties.request_path {
                Some(path) if path.starts_with('/') => {}
                _ => {
                    return Err(ArmError::invalid_parameter(
                        format!("{t}.requestPath"),
                        "An Http(s) probe needs a requestPath starting with '/'.",
                    ))
                }
            }
        }
        match pr.properties.interval_in_seconds {
            Some(s) if (1..=3600).contains(&s) => {}
            other => {
                return Err(ArmError::invalid_parameter(
                    format!("{t}.intervalInSeconds"),
                    format!("intervalInSeconds {other:?} is out of range: use 1-3600."),
                ))
            }
        }
        for (field, v) in [
            ("numberOfProbes", pr.properties.number_of_probes),
            ("probeThreshold", pr.properties.probe_threshold),
        ] {
            if let Some(n) = v {
                if !(1..=100).contains(&n) {
                    return Err(ArmError::invalid_parameter(
                        format!("{t}.{field}"),
                        format!("{field} {n} is out of range: use 1-100."),
                    ));
                }
            }
        }
    }
    let mut frontends_used = std::collections::HashSet::new();
    for (i, r) in p.load_balancing_rules.iter().enumerate() {
        let t = format!("properties.loadBalancingRules[{i}].properties");
        let rp = &r.properties;
        if rp.protocol != Some(TransportProtocol::Tcp) {
            return Err(ArmError::invalid_parameter(
                format!("{t}.protocol"),
                "Only Tcp rules are supported.",
            ));
        }
        check_port(rp.frontend_port, &format!("{t}.frontendPort"), true)?;
        check_port(rp.backend_port, &format!("{t}.backendPort"), true)?;
        let Some(fe_ref) = &rp.frontend_ip_configuration else {
            return Err(ArmError::invalid_parameter(
                format!("{t}.frontendIPConfiguration"),
                "A rule needs a frontendIPConfiguration.",
            ));
        };
        let Some(fe) = find_child(
            &p.frontend_ip_configurations,
            fe_ref,
            lb_id,
            "frontendIPConfigurations",
        ) else {
            return Err(ArmError::new(
                400,
                "InvalidResourceReference",
                format!(
                    "Frontend IP configuration '{}' is not part of this load balancer.",
                    fe_ref.id
                ),
            )
            .with_target(format!("{t}.frontendIPConfiguration.id")));
        };
        let Some(pool_ref) = &rp.backend_address_pool else {
            return Err(ArmError::invalid_parameter(
                format!("{t}.backendAddressPool"),
                "A rule needs a backendAddressPool.",
            ));
        };
        if find_child(
            &p.backend_address_pools,
            pool_ref,
            lb_id,
            "backendAddressPools",
        )
        .is_none()
        {
            return Err(ArmError::new(
                400,
                "InvalidResourceReference",
                format!(
                    "Backend pool '{}' is not part of this load balancer.",
                    pool_ref.id
                ),
            )
            .with_target(format!("{t}.backendAddressPool.id")));
        }
        if let Some(probe_ref) = &rp.probe {
            if find_child(&p.probes, probe_ref, lb_id, "probes").is_none() {
                return Err(ArmError::new(
                    400,
                    "InvalidResourceReference",
                    format!(
                        "Probe '{}' is not part of this load balancer.",
                        probe_ref.id
                    ),
                )
                .with_target(format!("{t}.probe.id")));
            }
        }
        if let Some(m) = rp.idle_timeout_in_minutes {
            if !(1..=100).contains(&m) {
                return Err(ArmError::invalid_parameter(
                    format!("{t}.idleTimeoutInMinutes"),
                    "idleTimeoutInMinutes must be 1-100.",
                ));
            }
        }
        let key = (
            fe.properties.private_ip_address.clone().unwrap_or_default(),
            rp.frontend_port,
        );
        if !frontends_used.insert(key) {
            return Err(ArmError::conflict(format!(
                "Two rules use frontend port {} on the same frontend.",
                rp.frontend_port.unwrap_or(0)
            ))
            .with_target(format!("{t}.frontendPort")));
        }
    }
    Ok(())
}

/// A port sent as a number or (from ARM templates) a string of one.
fn port_value(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Checks an inbound NAT rule `name` of `lb` (`props` as sent: a frontend of the balancer,
/// a backend port, and a frontend port or a port range over a backend pool) and answers it
/// as stored: ports as numbers, the protocol spelled as Azure spells it, its id and type.
pub fn check_nat_rule(
    lb: &LoadBalancer,
    lb_id: &str,
    name: &str,
    props: &Value,
) -> Result<Value, ArmError> {
    let mut props = match props {
        Value::Object(m) => m.clone(),
        _ => {
            return Err(ArmError::invalid_parameter(
                "properties",
                "An inbound NAT rule's properties are an object.",
            ))
        }
    };
    let p = &lb.properties;
    let reference = |field: &str| -> Option<IdRef> {
        Some(IdRef {
            id: props.get(field)?.get("id")?.as_str()?.to_string(),
        })
    };
    let missing = |field: &str, what: &str| {
        ArmError::new(
            400,
            "InvalidResourceReference",
            format!("The {what} that inbound NAT rule '{name}' names is not part of load balancer '{}'.", lb.name.as_deref().unwrap_or_default()),
        )
        .with_target(format!("properties.{field}.id"))
    };
    let fe = reference("frontendIPConfiguration")
        .ok_or_else(|| missing("frontendIPConfiguration", "frontend IP configuration"))?;
    find_child(
        &p.frontend_ip_configurations,
        &fe,
        lb_id,
        "frontendIPConfigurations",
    )
    .ok_or_else(|| missing("frontendIPConfiguration", "frontend IP configuration"))?;
    if let Some(pool) = reference("backendAddressPool") {
        find_child(
            &p.backend_address_pools,
            &pool,
            lb_id,
            "backendAddressPools",
        )
        .ok_or_else(|| missing("backendAddressPool", "backend pool"))?;
    }
    let mut port = |field: &str, required: bool| -> Result<Option<i64>, ArmError> {
        let v = match props.get(field) {
            None | Some(Value::Null) => None,
            Some(v) => Some(port_value(v).unwrap_or(0)),
        };
        check_port(v, &format!("properties.{field}"), required)?;
        if let Some(n) = v {
            props.insert(field.to_string(), Value::from(n));
        }
        Ok(v)
    };
    port("backendPort", true)?;
    let single = port("frontendPort", false)?;
    let start = port("frontendPortRangeStart", false)?;
    let end = port("frontendPortRangeEnd", false)?;
    match (single, start, end) {
        (Some(_), None, None) => {}
        (None, Some(a), Some(b)) if a <= b => {}
        _ => {
            return Err(ArmError::invalid_parameter(
                "properties.frontendPort",
                "An inbound NAT rule needs a frontendPort, or frontendPortRangeStart ≤ frontendPortRangeEnd (with a backendAddressPool).",
            ))
        }
    }
    let protocol = props
        .get("protocol")
        .and_then(Value::as_str)
        .unwrap_or("Tcp")
        .to_string();
    let canonical = TransportProtocol::parse(&protocol).ok_or_else(|| {
        ArmError::invalid_parameter(
            "properties.protocol",
            format!(
                "'{protocol}' is not one of: {}.",
                TransportProtocol::ALL.join(", ")
            ),
        )
    })?;
    props.insert("protocol".into(), Value::from(canonical.as_str()));
    props.insert("provisioningState".into(), Value::from("Succeeded"));
    Ok(serde_json::json!({
        "id": format!("{lb_id}/inboundNatRules/{name}"),
        "name": name,
        "type": format!("{LB_TYPE}/inboundNatRules"),
        "properties": props,
    }))
}

/// A rule with its references resolved, for the balancer.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedRule {
    pub name: String,
    pub frontend_ip: String,
    pub frontend_port: u16,
    pub backend_port: u16,
    /// Full id of the backend pool.
    pub pool_id: String,
    pub probe: Option<ProbeProps>,
    pub distribution: LoadDistribution,
    pub idle_timeout_minutes: u32,
    pub tcp_reset: bool,
}

/// The rules of a valid, normalized load balancer with references resolved.
pub fn resolved_rules(lb: &LoadBalancer, lb_id: &str) -> Vec<ResolvedRule> {
    let p = &lb.properties;
    p.load_balancing_rules
        .iter()
        .filter_map(|r| {
            let rp = &r.properties;
            let fe = find_child(
                &p.frontend_ip_configurations,
                rp.frontend_ip_configuration.as_ref()?,
                lb_id,
                "frontendIPConfigurations",
            )?;
            let pool = find_child(
                &p.backend_address_pools,
                rp.backend_address_pool.as_ref()?,
                lb_id,
                "backendAddressPools",
            )?;
            let probe = rp
                .probe
                .as_ref()
                .and_then(|pr| find_child(&p.probes, pr, lb_id, "probes"))
                .map(|pr| pr.properties.clone());
            Some(ResolvedRule {
                name: r.name.clone(),
                frontend_ip: fe
                    .properties
                    .private_ip_address
                    .clone()
                    .unwrap_or_else(|| "127.0.0.1".into()),
                frontend_port: u16::try_from(rp.frontend_port?).ok()?,
                backend_port: u16::try_from(rp.backend_port?).ok()?,
                pool_id: pool.id.clone()?,
                probe,
                distribution: rp.load_distribution.unwrap_or(LoadDistribution::Default),
                idle_timeout_minutes: u32::try_from(rp.idle_timeout_in_minutes.unwrap_or(4))
                    .unwrap_or(4),
                tcp_reset: rp.enable_tcp_reset.unwrap_or(false),
            })
        })
        .collect()
}

/// Whose backend pools a NIC IP configuration of a scale set names: each kind has its own
/// list in `ipConfigurations[].properties`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolOwner {
    /// `loadBalancerBackendAddressPools`.
    LoadBalancer,
    /// `applicationGatewayBackendAddressPools`.
    ApplicationGateway,
}

impl PoolOwner {
    fn profile_field(self) -> &'static str {
        match self {
            PoolOwner::LoadBalancer => "loadBalancerBackendAddressPools",
            PoolOwner::ApplicationGateway => "applicationGatewayBackendAddressPools",
        }
    }
}

/// Which pools a scale set joins: the one place that reads a set's network profile for
/// pool membership (the API's views and in-use checks, the balancer's plans).
impl VirtualMachineScaleSet {
    /// Ids of the `owner` backend pools the set's network profile puts its instances in,
    /// as written there.
    pub fn backend_pools(&self, owner: PoolOwner) -> Vec<String> {
        let field = owner.profile_field();
        let nics = self
            .profile()
            .and_then(|p| p.network_profile.as_ref())
            .and_then(|n| n.network_interface_configurations.as_deref())
            .unwrap_or_default();
        nics.iter()
            .filter_map(|nic| nic.pointer("/properties/ipConfigurations")?.as_array())
            .flatten()
            .filter_map(|ipc| ipc.get("properties")?.get(field)?.as_array())
            .flatten()
            .filter_map(|pool| Some(pool.get("id")?.as_str()?.to_string()))
            .collect()
    }

    /// Whether the set's instances join the pool `pool_id` (ids compare without regard to
    /// case, as ARM's do).
    pub fn joins_pool(&self, owner: PoolOwner, pool_id: &str) -> bool {
        self.backend_pools(owner)
            .iter()
            .any(|p| p.eq_ignore_ascii_case(pool_id))
    }

    /// Whether the set's instances join any pool of the resource `resource_id` (a load
    /// balancer or gateway the set still uses).
    pub fn joins_pool_of(&self, owner: PoolOwner, resource_id: &str) -> bool {
        let prefix = format!("{}/", resource_id.to_ascii_lowercase());
        self.backend_pools(owner)
            .iter()
            .any(|p| p.to_ascii_lowercase().starts_with(&prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmss::parse_typed;
    use serde_json::json;

    const ID: &str =
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/loadBalancers/lb";

    fn lb() -> Value {
        json!({
            "location": "local",
            "properties": {
                "frontendIPConfigurations": [{"name": "fe"}],
                "backendAddressPools": [{"name": "pool"}],
                "probes": [{"name": "http", "properties": {"protocol": "Http", "port": 8080, "requestPath": "/health", "intervalInSeconds": 1, "numberOfProbes": 2}}],
                "loadBalancingRules": [{"name": "r", "properties": {
                    "frontendIPConfiguration": {"id": format!("{ID}/frontendIPConfigurations/fe")},
                    "backendAddressPool": {"id": format!("{ID}/backendAddressPools/pool")},
                    "probe": {"id": format!("{ID}/probes/http")},
                    "protocol": "Tcp", "frontendPort": 8000, "backendPort": 8080}}]
            }
        })
    }

    fn parsed(v: &Value) -> Result<LoadBalancer, ArmError> {
        let mut lb: LoadBalancer = parse_typed(v)?;
        normalize_lb(&mut lb, ID);
        validate_lb(&lb, ID)?;
        Ok(lb)
    }

    #[test]
    fn a_valid_balancer_resolves_its_rule() {
        let lb = parsed(&lb()).unwrap();
        let rules = resolved_rules(&lb, ID);
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].frontend_ip, "127.0.0.1");
        assert_eq!(
            (rules[0].frontend_port, rules[0].backend_port),
            (8000, 8080)
        );
        assert_eq!(rules[0].pool_id, format!("{ID}/backendAddressPools/pool"));
        assert_eq!(
            lb.properties.probes[0]
                .properties
                .load_balancing_rules
                .as_ref()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn bad_references_and_ports_name_the_field() {
        for (pointer, value, target) in [
            (
                "/properties/loadBalancingRules/0/properties/probe/id",
                json!(format!("{ID}/probes/nope")),
                "properties.loadBalancingRules[0].properties.probe.id",
            ),
            (
                "/properties/loadBalancingRules/0/properties/backendAddressPool/id",
                json!("/elsewhere/backendAddressPools/pool"),
                "properties.loadBalancingRules[0].properties.backendAddressPool.id",
            ),
            (
                "/properties/loadBalancingRules/0/properties/frontendPort",
                json!(70000),
                "properties.loadBalancingRules[0].properties.frontendPort",
            ),
            (
                "/properties/probes/0/properties/port",
                json!(0),
                "properties.probes[0].properties.port",
            ),
            (
                "/properties/probes/0/properties/intervalInSeconds",
                json!(0),
                "properties.probes[0].properties.intervalInSeconds",
            ),
            (
                "/properties/frontendIPConfigurations/0/properties",
                json!({"privateIPAddress": "nope"}),
                "properties.frontendIPConfigurations[0].properties.privateIPAddress",
            ),
        ] {
            let mut v = lb();
            match v.pointer_mut(pointer) {
                Some(slot) => *slot = value,
                None => {
                    let (parent, key) = pointer.rsplit_once('/').unwrap();
                    v.pointer_mut(parent).unwrap()[key] = value;
                }
            }
            let err = parsed(&v).unwrap_err();
            assert_eq!(err.target.as_deref(), Some(target), "{pointer}: {err:?}");
            assert!(err.status >= 400 && err.status < 500);
        }
    }

    #[test]
    fn pools_a_scale_set_joins() {
        let set: VirtualMachineScaleSet = parse_typed(&json!({"properties": {"virtualMachineProfile": {"networkProfile": {
            "networkInterfaceConfigurations": [
                {"name": "nic", "properties": {"ipConfigurations": [
                    {"name": "ip", "properties": {
                        "loadBalancerBackendAddressPools": [{"id": "/a/backendAddressPools/p"}],
                        "applicationGatewayBackendAddressPools": [{"id": "/gw/backendAddressPools/web"}]
                    }},
                    {"name": "bare"}
                ]}},
                {"name": "other", "properties": {}}
            ]}}}})).unwrap();
        assert_eq!(
            set.backend_pools(PoolOwner::LoadBalancer),
            vec!["/a/backendAddressPools/p".to_string()]
        );
        assert_eq!(
            set.backend_pools(PoolOwner::ApplicationGateway),
            vec!["/gw/backendAddressPools/web".to_string()]
        );
        assert!(set.joins_pool(PoolOwner::LoadBalancer, "/A/BACKENDADDRESSPOOLS/P"));
        assert!(!set.joins_pool(PoolOwner::ApplicationGateway, "/a/backendAddressPools/p"));
        assert!(set.joins_pool_of(PoolOwner::ApplicationGateway, "/GW"));
        assert!(!set.joins_pool_of(PoolOwner::LoadBalancer, "/gw"));
        assert!(!set.joins_pool_of(PoolOwner::LoadBalancer, "/a/backend"));
        assert!(VirtualMachineScaleSet::default()
            .backend_pools(PoolOwner::LoadBalancer)
            .is_empty());
    }

    proptest::proptest! {
        #[test]
        fn find_child_never_panics(id in "\\PC{0,80}") {
            let lb = parsed(&lb()).unwrap();
            let _ = find_child(&lb.properties.probes, &IdRef { id }, ID, "probes");
        }
    }
}
