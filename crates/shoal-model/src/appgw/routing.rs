//! How a gateway picks a backend: request routing rules (Basic, or PathBasedRouting through
//! a URL path map) from a listener to a (backend pool, HTTP settings) target, rule
//! priorities, and the path patterns of path rules.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::{check_range, invalid, must_find_child, AppGwProperties, APPGW_TYPE, SUCCEEDED};
use crate::arm::{check_child_names, name_children, IdRef, SubResource};
use crate::arm_enum;
use crate::error::ArmError;

arm_enum!(RuleType { Basic = "Basic", PathBasedRouting = "PathBasedRouting" });

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UrlPathMapProps {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_backend_address_pool: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_backend_http_settings: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_redirect_configuration: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_rewrite_rule_set: Option<IdRef>,
    #[serde(default)]
    pub path_rules: Vec<SubResource<PathRuleProps>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathRuleProps {
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_address_pool: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_http_settings: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_configuration: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite_rule_set: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutingRuleProps {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_type: Option<RuleType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_listener: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_address_pool: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_http_settings: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_path_map: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_configuration: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite_rule_set: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
}

/// A path of a path rule: starts with '/', and '*' only as the last character right
/// after a '/' (`/api/*`).
pub fn check_path_pattern(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("'{path}' must start with '/'."));
    }
    if path.contains(['?', '#']) || path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(format!(
            "'{path}' must not hold a query, a fragment, spaces or control characters."
        ));
    }
    match path.find('*') {
        None => Ok(()),
        Some(i) if i == path.len() - 1 && path[..i].ends_with('/') => Ok(()),
        Some(_) => Err(format!(
            "'{path}': '*' is only allowed at the end, after a '/' (e.g. '/api/*')."
        )),
    }
}

/// The data plane's prefix for a valid path pattern: `None` for `/*` (everything),
/// `/api` for `/api/*` and for `/api` (whole segments: `/api`, `/api/…`, not `/apis`).
pub fn path_prefix(pattern: &str) -> Option<String> {
    let p = pattern.strip_suffix('*').unwrap_or(pattern);
    let p = p.trim_end_matches('/');
    (!p.is_empty()).then(|| p.to_string())
}

pub(super) fn normalize(p: &mut AppGwProperties) {
    for map in &mut p.url_path_maps {
        let map_id = map.id.clone().unwrap_or_default();
        name_children(
            &mut map.properties.path_rules,
            &map_id,
            &format!("{APPGW_TYPE}/urlPathMaps"),
            "pathRules",
        );
        for rule in &mut map.properties.path_rules {
            rule.properties.provisioning_state = Some(SUCCEEDED.into());
        }
        map.properties.provisioning_state = Some(SUCCEEDED.into());
    }
    for r in &mut p.request_routing_rules {
        r.properties.rule_type.get_or_insert(RuleType::Basic);
        r.properties.provisioning_state = Some(SUCCEEDED.into());
    }
}

/// Checks URL path maps and request routing rules (their references, priorities, and
/// that a listener belongs to one rule).
pub(super) fn validate(p: &AppGwProperties, gw_id: &str) -> Result<(), ArmError> {
    let check_target = |pool: Option<&IdRef>,
                        settings: Option<&IdRef>,
                        t: &str,
                        pool_field: &str,
                        settings_field: &str|
     -> Result<(), ArmError> {
        must_find_child(
            &p.backend_address_pools,
            pool,
            gw_id,
            "backendAddressPools",
            format!("{t}.{pool_field}"),
            "Backend address pool",
        )?;
        must_find_child(
            &p.backend_http_settings_collection,
            settings,
            gw_id,
            "backendHttpSettingsCollection",
            format!("{t}.{settings_field}"),
            "Backend HTTP settings",
        )?;
        Ok(())
    };
    for (i, m) in p.url_path_maps.iter().enumerate() {
        let t = format!("properties.urlPathMaps[{i}].properties");
        let mp = &m.properties;
        for (field, v) in [
            (
                "defaultRedirectConfiguration",
                &mp.default_redirect_configuration,
            ),
            ("defaultRewriteRuleSet", &mp.default_rewrite_rule_set),
        ] {
            if v.is_some() {
                return Err(invalid(
                    format!("{t}.{field}"),
                    "Redirects and rewrites are not supported.",
                ));
            }
        }
        check_target(
            mp.default_backend_address_pool.as_ref(),
            mp.default_backend_http_settings.as_ref(),
            &t,
            "defaultBackendAddressPool",
            "defaultBackendHttpSettings",
        )?;
        check_child_names(&mp.path_rules, &format!("{t}.pathRules"), true)?;
        for (j, r) in mp.path_rules.iter().enumerate() {
            let t = format!("{t}.pathRules[{j}].properties");
            let rp = &r.properties;
            for (field, v) in [
                ("redirectConfiguration", &rp.redirect_configuration),
                ("rewriteRuleSet", &rp.rewrite_rule_set),
            ] {
                if v.is_some() {
                    return Err(invalid(
                        format!("{t}.{field}"),
                        "Redirects and rewrites are not supported.",
                    ));
                }
            }
            if rp.paths.is_empty() {
                return Err(invalid(
                    format!("{t}.paths"),
                    "A path rule needs at least one path (e.g. \"/api/*\").",
                ));
            }
            for (k, path) in rp.paths.iter().enumerate() {
                check_path_pattern(path).map_err(|m| invalid(format!("{t}.paths[{k}]"), m))?;
            }
            check_target(
                rp.backend_address_pool.as_ref(),
                rp.backend_http_settings.as_ref(),
                &t,
                "backendAddressPool",
                "backendHttpSettings",
            )?;
        }
    }

    let mut listeners_used = HashSet::new();
    let mut priorities = HashSet::new();
    let any_priority = p
        .request_routing_rules
        .iter()
        .any(|r| r.properties.priority.is_some());
    for (i, r) in p.request_routing_rules.iter().enumerate() {
        let t = format!("properties.requestRoutingRules[{i}].properties");
        let rp = &r.properties;
        for (field, v) in [
            ("redirectConfiguration", &rp.redirect_configuration),
            ("rewriteRuleSet", &rp.rewrite_rule_set),
        ] {
            if v.is_some() {
                return Err(invalid(
                    format!("{t}.{field}"),
                    "Redirects and rewrites are not supported.",
                ));
            }
        }
        if any_priority && rp.priority.is_none() {
            return Err(invalid(
                format!("{t}.priority"),
                "Give every rule a priority (1-20000) once one rule has one.",
            ));
        }
        check_range(rp.priority, &format!("{t}.priority"), 1..=20000, false)?;
        if let Some(prio) = rp.priority {
            if !priorities.insert(prio) {
                return Err(invalid(
                    format!("{t}.priority"),
                    format!("Priority {prio} is used by two rules: priorities are unique."),
                ));
            }
        }
        let listener = must_find_child(
            &p.http_listeners,
            rp.http_listener.as_ref(),
            gw_id,
            "httpListeners",
            format!("{t}.httpListener"),
            "HTTP listener",
        )?;
        if !listeners_used.insert(listener.name.to_ascii_lowercase()) {
            return Err(invalid(
                format!("{t}.httpListener.id"),
                format!(
                    "Listener '{}' is used by two rules: a listener belongs to one rule.",
                    listener.name
                ),
            ));
        }
        match rp.rule_type.unwrap_or(RuleType::Basic) {
            RuleType::Basic => {
                if rp.url_path_map.is_some() {
                    return Err(invalid(
                        format!("{t}.urlPathMap"),
                        "A Basic rule takes no urlPathMap: use ruleType PathBasedRouting.",
                    ));
                }
                check_target(
                    rp.backend_address_pool.as_ref(),
                    rp.backend_http_settings.as_ref(),
                    &t,
                    "backendAddressPool",
                    "backendHttpSettings",
                )?;
            }
            RuleType::PathBasedRouting => {
                must_find_child(
                    &p.url_path_maps,
                    rp.url_path_map.as_ref(),
                    gw_id,
                    "urlPathMaps",
                    format!("{t}.urlPathMap"),
                    "URL path map",
                )?;
            }
        }
    }
    Ok(())
}
