//! What a template's expressions see: its parameters and variables, the group and
//! subscription, the resources deployed so far (for `reference()`), the copy loop being
//! expanded. `reference()` of a resource not read yet records its id and fails; the engine
//! reads it and evaluates again.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use serde_json::{json, Map, Value};
use shoal_template::{eval_tree, Context, ExprError};

/// Deepest chain of variables referring to variables.
const MAX_VARIABLE_DEPTH: usize = 32;

pub struct Scope {
    pub sub: String,
    pub rg: String,
    pub location: String,
    pub tenant: String,
    pub parameters: Map<String, Value>,
    /// The template's `variables`, unevaluated.
    pub variables: Map<String, Value>,
    /// Resource id (lower case) → its GET body.
    pub resources: HashMap<String, Value>,
    /// Ids `reference()` asked for that are not in `resources` yet.
    pub missing: RefCell<Vec<String>>,
    /// Copy loops being expanded, innermost last: (loop name, index).
    pub copy: Vec<(String, i64)>,
    depth: Cell<usize>,
    cache: RefCell<HashMap<String, Value>>,
}

impl Scope {
    pub fn new(sub: &str, rg: &str, location: &str, tenant: &str) -> Scope {
        Scope {
            sub: sub.into(),
            rg: rg.into(),
            location: location.into(),
            tenant: tenant.into(),
            parameters: Map::new(),
            variables: Map::new(),
            resources: HashMap::new(),
            missing: RefCell::new(Vec::new()),
            copy: Vec::new(),
            depth: Cell::new(0),
            cache: RefCell::new(HashMap::new()),
        }
    }

    pub fn rg_id(&self) -> String {
        format!("/subscriptions/{}/resourceGroups/{}", self.sub, self.rg)
    }
}

impl Context for Scope {
    fn parameter(&self, name: &str) -> Result<Value, ExprError> {
        self.parameters
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .ok_or_else(|| {
                ExprError::Invalid(format!("The template parameter '{name}' is not found."))
            })
    }

    fn variable(&self, name: &str) -> Result<Value, ExprError> {
        let key = name.to_ascii_lowercase();
        if let Some(v) = self.cache.borrow().get(&key) {
            return Ok(v.clone());
        }
        let raw = self
            .variables
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .ok_or_else(|| {
                ExprError::Invalid(format!("The template variable '{name}' is not found."))
            })?;
        let d = self.depth.get();
        if d >= MAX_VARIABLE_DEPTH {
            return Err(ExprError::Invalid(format!(
                "The template variable '{name}' refers to variables more than {MAX_VARIABLE_DEPTH} deep (a cycle?)."
            )));
        }
        self.depth.set(d + 1);
        let v = eval_tree(&raw, &format!("variables.{name}"), self);
        self.depth.set(d);
        let v = v.map_err(|e| ExprError::Invalid(e.to_string()))?;
        if self.copy.is_empty() {
            self.cache.borrow_mut().insert(key, v.clone());
        }
        Ok(v)
    }

    fn subscription_id(&self) -> String {
        self.sub.clone()
    }

    fn resource_group_name(&self) -> String {
        self.rg.clone()
    }

    fn resource_group(&self) -> Value {
        json!({
            "id": self.rg_id(),
            "name": self.rg,
            "type": "Microsoft.Resources/resourceGroups",
            "location": self.location,
            "properties": {"provisioningState": "Succeeded"},
        })
    }

    fn subscription(&self) -> Value {
        json!({
            "id": format!("/subscriptions/{}", self.sub),
            "subscriptionId": self.sub,
            "tenantId": self.tenant,
            "displayName": "Shoal",
        })
    }

    fn reference(&self, id: &str, full: bool) -> Result<Value, ExprError> {
        match self.resources.get(&id.to_ascii_lowercase()) {
            Some(body) if full => Ok(body.clone()),
            Some(body) => Ok(body.get("properties").cloned().unwrap_or(json!({}))),
            None => {
                self.missing.borrow_mut().push(id.to_string());
                Err(ExprError::Invalid(format!(
                    "reference('{id}'): the resource could not be read"
                )))
            }
        }
    }

    fn api_versions(&self, namespace: &str, type_: &str) -> Result<Vec<String>, ExprError> {
        let known = [
            "Microsoft.Compute",
            "Microsoft.Network",
            "Microsoft.Insights",
            "Microsoft.Resources",
        ];
        if !known.iter().any(|k| k.eq_ignore_ascii_case(namespace)) {
            return Err(ExprError::Invalid(format!(
                "providers('{namespace}', '{type_}'): Shoal does not serve the namespace '{namespace}'"
            )));
        }
        Ok(vec![
            "2024-07-01".into(),
            "2024-03-01".into(),
            "2023-09-01".into(),
        ])
    }

    fn copy_index(&self, loop_name: Option<&str>) -> Result<i64, ExprError> {
        let hit = match loop_name {
            None => self.copy.last(),
            Some(n) => self
                .copy
                .iter()
                .rev()
                .find(|(l, _)| l.eq_ignore_ascii_case(n)),
        };
        hit.map(|(_, i)| *i).ok_or_else(|| {
            ExprError::Invalid(match loop_name {
                None => "copyIndex() is used outside a copy loop".into(),
                Some(n) => format!("copyIndex('{n}'): there is no copy loop named '{n}'"),
            })
        })
    }
}
