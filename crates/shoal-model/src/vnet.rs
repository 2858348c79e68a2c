//! The network resources `az vmss create` and common templates make around a scale set,
//! in Azure's JSON shape, and their validation: virtual networks with their subnets,
//! network security groups with their rules, and public IP addresses.
//!
//! Shoal stores them, checks them as Azure's network provider does (address ranges,
//! subnet ranges inside the network and apart from each other, rule priorities and
//! directions, names) and lets scale sets reference them; it does not build networks from
//! them: an instance's address comes from its host's instance subnet, and security rules
//! are shown but not enforced (the README's compatibility table says so). Everything a
//! client sends that is not checked here is kept as sent (`rest`) and answered back.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::arm::{
    check_child_names, name_children, require_location, IdRef, Resource, SubResource,
};
use crate::cidr::Cidr;
use crate::error::ArmError;

pub const VNET_TYPE: &str = "Microsoft.Network/virtualNetworks";
pub const NSG_TYPE: &str = "Microsoft.Network/networkSecurityGroups";
pub const PIP_TYPE: &str = "Microsoft.Network/publicIPAddresses";

/// `Microsoft.Network/virtualNetworks`.
pub type VirtualNetwork = Resource<VnetProperties>;
/// One of its subnets (also addressed on its own: `…/virtualNetworks/{v}/subnets/{s}`).
pub type Subnet = SubResource<SubnetProps>;
/// `Microsoft.Network/networkSecurityGroups`.
pub type NetworkSecurityGroup = Resource<NsgProperties>;
/// `Microsoft.Network/publicIPAddresses` (with its `sku` kept in `properties`' sibling).
pub type PublicIpAddress = Resource<PipProperties, crate::network::LbExtras>;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VnetProperties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_space: Option<AddressSpace>,
    #[serde(default)]
    pub subnets: Vec<Subnet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_guid: Option<String>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddressSpace {
    #[serde(default)]
    pub address_prefixes: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubnetProps {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_prefixes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_security_group: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NsgProperties {
    #[serde(default)]
    pub security_rules: Vec<SubResource<RuleProps>>,
    /// Read-only: the six rules Azure puts in every group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_security_rules: Vec<SubResource<RuleProps>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_guid: Option<String>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// A security rule. Ports and prefixes stay as sent (`"22"`, `"*"`, `"8000-8010"`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleProps {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipProperties {
    #[serde(
        rename = "publicIPAllocationMethod",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub public_ip_allocation_method: Option<String>,
    #[serde(
        rename = "publicIPAddressVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub public_ip_address_version: Option<String>,
    /// Read-only: the address Shoal gave it from its public range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_guid: Option<String>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

fn prefix(s: &str, owner: &str, target: String) -> Result<Cidr, ArmError> {
    s.parse::<Cidr>().map_err(|_| {
        ArmError::new(
            400,
            "InvalidAddressPrefixFormat",
            format!("Address prefix {s} of resource {owner} is not formatted correctly. It should follow CIDR notation, for example 10.0.0.0/24."),
        )
        .with_target(target)
    })
}

/// A subnet's ranges (`addressPrefix`, or `addressPrefixes`); `at` is where it is written.
fn subnet_ranges(s: &Subnet, id: &str, at: &str) -> Result<Vec<Cidr>, ArmError> {
    let p = &s.properties;
    let written: Vec<&String> = match (&p.address_prefix, &p.address_prefixes) {
        (Some(one), _) => vec![one],
        (None, Some(many)) if !many.is_empty() => many.iter().collect(),
        _ => {
            return Err(ArmError::new(
                400,
                "NetcfgInvalidSubnet",
                format!(
                    "Subnet '{}' is not valid in virtual network '{}': it needs an addressPrefix (e.g. 10.0.0.0/24).",
                    s.name,
                    last_segment(id)
                ),
            )
            .with_target(format!("{at}.properties.addressPrefix")))
        }
    };
    written
        .into_iter()
        .map(|w| prefix(w, id, format!("{at}.properties.addressPrefix")))
        .collect()
}

fn last_segment(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

/// Fills what the server owns in a virtual network: subnet ids and types, states.
pub fn normalize_vnet(v: &mut VirtualNetwork, id: &str) {
    name_children(&mut v.properties.subnets, id, VNET_TYPE, "subnets");
    v.properties.provisioning_state = Some("Succeeded".into());
    for s in &mut v.properties.subnets {
        s.properties.provisioning_state = Some("Succeeded".into());
    }
}

/// Checks a virtual network as Azure does: at least one valid address range; each subnet
/// named once, with valid ranges inside the network's and apart from the others'.
pub fn validate_vnet(v: &VirtualNetwork, id: &str) -> Result<(), ArmError> {
    require_location(v)?;
    let space = v
        .properties
        .address_space
        .as_ref()
        .map(|a| a.address_prefixes.as_slice())
        .unwrap_or_default();
    if space.is_empty() {
        return Err(ArmError::invalid_parameter(
            "properties.addressSpace.addressPrefixes",
            "A virtual network needs at least one address range (e.g. 10.0.0.0/16).",
        ));
    }
    let space: Vec<Cidr> = space
        .iter()
        .enumerate()
        .map(|(i, s)| {
            prefix(
                s,
                id,
                format!("properties.addressSpace.addressPrefixes[{i}]"),
            )
        })
        .collect::<Result<_, _>>()?;
    check_child_names(&v.properties.subnets, "properties.subnets", true)?;
    let mut taken: Vec<(Cidr, &str)> = Vec::new();
    for (i, s) in v.properties.subnets.iter().enumerate() {
        let at = format!("properties.subnets[{i}]");
        for r in subnet_ranges(s, id, &at)? {
            let inside = space
                .iter()
                .any(|sp| sp.prefix_len <= r.prefix_len && sp.contains(r.network));
            if !inside {
                return Err(ArmError::new(
                    400,
                    "NetcfgSubnetRangeOutsideVnet",
                    format!(
                        "Subnet '{}' is not valid because its IP address range {r} is outside the IP address range of virtual network '{}'.",
                        s.name,
                        last_segment(id)
                    ),
                )
                .with_target(format!("{at}.properties.addressPrefix")));
            }
            if let Some((_, other)) = taken.iter().find(|(t, _)| t.overlaps(&r)) {
                return Err(ArmError::new(
                    400,
                    "NetcfgSubnetRangesOverlap",
                    format!(
                        "Subnet '{}' is not valid because its IP address range overlaps with that of an existing subnet '{other}' in virtual network '{}'.",
                        s.name,
                        last_segment(id)
                    ),
                )
                .with_target(format!("{at}.properties.addressPrefix")));
            }
            taken.push((r, &s.name));
        }
    }
    Ok(())
}

/// The rules every security group has after the ones it is given (Azure's defaults).
fn default_rules(id: &str) -> Vec<SubResource<RuleProps>> {
    let rule = |name: &str, priority: i64, direction: &str, access: &str, from: &str, to: &str| {
        let mut rest = Map::new();
        rest.insert("description".into(), Value::from(name.to_string()));
        rest.insert("sourcePortRange".into(), Value::from("*"));
        rest.insert("destinationPortRange".into(), Value::from("*"));
        rest.insert("sourceAddressPrefix".into(), Value::from(from));
        rest.insert("destinationAddressPrefix".into(), Value::from(to));
        SubResource {
            id: Some(format!("{id}/defaultSecurityRules/{name}")),
            name: name.to_string(),
            kind: Some(format!("{NSG_TYPE}/defaultSecurityRules")),
            etag: None,
            properties: RuleProps {
                priority: Some(Value::from(priority)),
                direction: Some(direction.into()),
                access: Some(access.into()),
                protocol: Some("*".into()),
                provisioning_state: Some("Succeeded".into()),
                rest,
            },
        }
    };
    vec![
        rule(
            "AllowVnetInBound",
            65000,
            "Inbound",
            "Allow",
            "VirtualNetwork",
            "VirtualNetwork",
        ),
        rule(
            "AllowAzureLoadBalancerInBound",
            65001,
            "Inbound",
            "Allow",
            "AzureLoadBalancer",
            "*",
        ),
        rule("DenyAllInBound", 65500, "Inbound", "Deny", "*", "*"),
        rule(
            "AllowVnetOutBound",
            65000,
            "Outbound",
            "Allow",
            "VirtualNetwork",
            "VirtualNetwork",
        ),
        rule(
            "AllowInternetOutBound",
            65001,
            "Outbound",
            "Allow",
            "*",
            "Internet",
        ),
        rule("DenyAllOutBound", 65500, "Outbound", "Deny", "*", "*"),
    ]
}

/// Fills what the server owns in a security group: rule ids, states, the default rules.
pub fn normalize_nsg(g: &mut NetworkSecurityGroup, id: &str) {
    name_children(
        &mut g.properties.security_rules,
        id,
        NSG_TYPE,
        "securityRules",
    );
    for r in &mut g.properties.security_rules {
        r.properties.provisioning_state = Some("Succeeded".into());
    }
    g.properties.default_security_rules = default_rules(id);
    g.properties.provisioning_state = Some("Succeeded".into());
}

/// A rule's priority as a number: ARM templates may send it as a string.
fn priority_of(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Checks a security group's rules as Azure does: names once, a priority 100–4096 not
/// shared with another rule of the same direction, and Azure's direction, access and
/// protocol words (any case).
pub fn validate_nsg(g: &NetworkSecurityGroup) -> Result<(), ArmError> {
    require_location(g)?;
    let rules = &g.properties.security_rules;
    check_child_names(rules, "properties.securityRules", true)?;
    let mut seen: Vec<(i64, String, &String)> = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let at = |f: &str| format!("properties.securityRules[{i}].properties.{f}");
        let p = &r.properties;
        let one_of = |v: &Option<String>, field: &str, allowed: &[&str]| match v {
            Some(s) if allowed.iter().any(|a| a.eq_ignore_ascii_case(s)) => Ok(()),
            Some(s) => Err(ArmError::invalid_parameter(
                at(field),
                format!("'{s}' is not one of: {}.", allowed.join(", ")),
            )),
            None => Err(ArmError::invalid_parameter(
                at(field),
                format!(
                    "Security rule '{}' needs {field} (one of: {}).",
                    r.name,
                    allowed.join(", ")
                ),
            )),
        };
        one_of(&p.direction, "direction", &["Inbound", "Outbound"])?;
        one_of(&p.access, "access", &["Allow", "Deny"])?;
        one_of(
            &p.protocol,
            "protocol",
            &["Tcp", "Udp", "Icmp", "Esp", "Ah", "*"],
        )?;
        let priority = priority_of(p.priority.as_ref())
            .filter(|n| (100..=4096).contains(n))
            .ok_or_else(|| {
                ArmError::new(
                    400,
                    "SecurityRuleInvalidPriority",
                    format!(
                        "Security rule {} has invalid Priority. Value provided: {}. Allowed range 100-4096.",
                        r.name,
                        p.priority.as_ref().map_or("none".into(), Value::to_string)
                    ),
                )
                .with_target(at("priority"))
            })?;
        let direction = p.direction.clone().unwrap_or_default().to_ascii_lowercase();
        if let Some((_, _, other)) = seen
            .iter()
            .find(|(n, d, _)| *n == priority && *d == direction)
        {
            return Err(ArmError::new(
                400,
                "SecurityRuleConflict",
                format!(
                    "Security rule {} conflicts with rule {other}. Rules cannot have the same Priority and Direction.",
                    r.name
                ),
            )
            .with_target(at("priority")));
        }
        seen.push((priority, direction, &r.name));
    }
    Ok(())
}

/// Checks a public IP address: its allocation method and version, as Azure spells them.
pub fn validate_pip(p: &PublicIpAddress) -> Result<(), ArmError> {
    require_location(p)?;
    let one_of = |v: &Option<String>, field: &str, allowed: &[&str]| match v {
        Some(s) if !allowed.iter().any(|a| a.eq_ignore_ascii_case(s)) => {
            Err(ArmError::invalid_parameter(
                format!("properties.{field}"),
                format!("'{s}' is not one of: {}.", allowed.join(", ")),
            ))
        }
        _ => Ok(()),
    };
    one_of(
        &p.properties.public_ip_allocation_method,
        "publicIPAllocationMethod",
        &["Static", "Dynamic"],
    )?;
    one_of(
        &p.properties.public_ip_address_version,
        "publicIPAddressVersion",
        &["IPv4"],
    )
}

/// What a scale set's network profile names in these resources: the one place that reads
/// them (reference checks, in-use checks).
impl crate::vmss::VirtualMachineScaleSet {
    fn nic_configurations(&self) -> &[Value] {
        self.profile()
            .and_then(|p| p.network_profile.as_ref())
            .and_then(|n| n.network_interface_configurations.as_deref())
            .unwrap_or_default()
    }

    /// Ids of the subnets the set's IP configurations are in, as written.
    pub fn subnet_ids(&self) -> Vec<String> {
        self.nic_configurations()
            .iter()
            .filter_map(|nic| nic.pointer("/properties/ipConfigurations")?.as_array())
            .flatten()
            .filter_map(|ipc| Some(ipc.pointer("/properties/subnet/id")?.as_str()?.to_string()))
            .collect()
    }

    /// Ids of the security groups the set's network interfaces are in, as written.
    pub fn security_group_ids(&self) -> Vec<String> {
        self.nic_configurations()
            .iter()
            .filter_map(|nic| {
                Some(
                    nic.pointer("/properties/networkSecurityGroup/id")?
                        .as_str()?
                        .to_string(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vnet(v: Value) -> Result<VirtualNetwork, ArmError> {
        let mut n: VirtualNetwork = crate::vmss::parse_typed(&v)?;
        let id = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/virtualNetworks/v";
        normalize_vnet(&mut n, id);
        validate_vnet(&n, id).map(|()| n)
    }

    #[test]
    fn a_network_with_subnets_inside_and_apart_is_accepted_and_named() {
        let n = vnet(json!({"location": "local", "properties": {
            "addressSpace": {"addressPrefixes": ["10.0.0.0/16"]},
            "subnets": [
                {"name": "a", "properties": {"addressPrefix": "10.0.0.0/24"}},
                {"name": "b", "properties": {"addressPrefixes": ["10.0.1.0/24"]}, "extra": 1}
            ],
            "enableDdosProtection": false
        }}))
        .expect("valid");
        assert!(n.properties.subnets[0]
            .id
            .as_deref()
            .is_some_and(|i| i.ends_with("/virtualNetworks/v/subnets/a")));
        assert_eq!(n.properties.rest["enableDdosProtection"], json!(false));
    }

    #[test]
    fn bad_networks_get_azures_codes() {
        let with = |space: Value, subnets: Value| {
            vnet(json!({"location": "local", "properties": {"addressSpace": {"addressPrefixes": space}, "subnets": subnets}}))
                .expect_err("refused")
                .code
        };
        assert_eq!(with(json!([]), json!([])), "InvalidParameter");
        assert_eq!(
            with(json!(["10.0.0.0/33"]), json!([])),
            "InvalidAddressPrefixFormat"
        );
        assert_eq!(
            with(
                json!(["10.0.0.0/16"]),
                json!([{"name": "a", "properties": {"addressPrefix": "10.1.0.0/24"}}])
            ),
            "NetcfgSubnetRangeOutsideVnet"
        );
        assert_eq!(
            with(
                json!(["10.0.0.0/16"]),
                json!([{"name": "a", "properties": {"addressPrefix": "10.0.0.0/24"}}, {"name": "b", "properties": {"addressPrefix": "10.0.0.128/25"}}])
            ),
            "NetcfgSubnetRangesOverlap"
        );
        assert_eq!(
            with(
                json!(["10.0.0.0/16"]),
                json!([{"name": "a", "properties": {}}])
            ),
            "NetcfgInvalidSubnet"
        );
        assert_eq!(
            with(
                json!(["10.0.0.0/16"]),
                json!([{"name": "a", "properties": {"addressPrefix": "10.0.0.0/24"}}, {"name": "A", "properties": {"addressPrefix": "10.0.1.0/24"}}])
            ),
            "InvalidParameter"
        );
    }

    fn nsg(rules: Value) -> Result<NetworkSecurityGroup, ArmError> {
        let mut g: NetworkSecurityGroup = crate::vmss::parse_typed(
            &json!({"location": "local", "properties": {"securityRules": rules}}),
        )?;
        normalize_nsg(&mut g, "/nsg");
        validate_nsg(&g).map(|()| g)
    }

    #[test]
    fn security_rules_are_checked_and_defaults_added() {
        let rule = |name: &str, priority: Value, direction: &str| json!({"name": name, "properties": {"priority": priority, "direction": direction, "access": "allow", "protocol": "Tcp", "destinationPortRange": "22"}});
        let g = nsg(json!([
            rule("ssh", json!(1000), "Inbound"),
            rule("out", json!("1000"), "outbound")
        ]))
        .expect("valid");
        assert_eq!(g.properties.default_security_rules.len(), 6);
        assert_eq!(
            g.properties.security_rules[0].properties.rest["destinationPortRange"],
            json!("22")
        );
        let code = |rules: Value| nsg(rules).expect_err("refused").code;
        assert_eq!(
            code(json!([rule("a", json!(50), "Inbound")])),
            "SecurityRuleInvalidPriority"
        );
        assert_eq!(
            code(json!([rule("a", json!("x"), "Inbound")])),
            "SecurityRuleInvalidPriority"
        );
        assert_eq!(
            code(json!([
                rule("a", json!(100), "Inbound"),
                rule("b", json!(100), "inbound")
            ])),
            "SecurityRuleConflict"
        );
        assert_eq!(
            code(json!([rule("a", json!(100), "Sideways")])),
            "InvalidParameter"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_network_body_is_answered_without_panic(prefix in "\\PC{0,24}", sub in "\\PC{0,24}", name in "\\PC{0,12}") {
            let _ = vnet(json!({"location": "local", "properties": {"addressSpace": {"addressPrefixes": [prefix]}, "subnets": [{"name": name, "properties": {"addressPrefix": sub}}]}}));
            let _ = nsg(json!([{"name": name, "properties": {"priority": prefix, "direction": sub}}]));
        }
    }
}
