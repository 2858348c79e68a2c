//! Evaluating every expression in a JSON tree (a template's resource, output or variable),
//! naming the JSON path of the one that fails.

use serde_json::{Map, Value};

use crate::{eval::evaluate, parse::parse, Context, ExprError, FUNCTIONS, MAX_DEPTH};

/// An expression error and where in the template it is (`resources[1].properties.sku.name`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error} (at '{path}')")]
pub struct TreeError {
    pub path: String,
    pub error: ExprError,
}

/// `"[…]"` is an expression; `"[[…"` is a literal starting with `[`.
pub fn is_expression(s: &str) -> bool {
    let t = s.trim();
    t.len() >= 2 && t.starts_with('[') && t.ends_with(']') && !t.starts_with("[[")
}

fn inner(s: &str) -> &str {
    let t = s.trim();
    &t[1..t.len() - 1]
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn too_deep(path: &str) -> TreeError {
    TreeError {
        path: path.to_string(),
        error: ExprError::invalid(format!("the JSON is nested deeper than {}", MAX_DEPTH * 2)),
    }
}

/// Parses every expression in `v` and checks that each function it calls is one Shoal
/// implements, without evaluating anything (`validate`, and before a deployment starts).
pub fn check_tree(v: &Value, path: &str) -> Result<(), TreeError> {
    check(v, path, 0)
}

fn check(v: &Value, path: &str, depth: usize) -> Result<(), TreeError> {
    if depth > MAX_DEPTH * 2 {
        return Err(too_deep(path));
    }
    match v {
        Value::String(s) if is_expression(s) => {
            let e = parse(inner(s)).map_err(|error| TreeError {
                path: path.to_string(),
                error,
            })?;
            let mut names = Vec::new();
            e.functions(&mut names);
            match names
                .into_iter()
                .find(|n| !FUNCTIONS.contains(&n.to_ascii_lowercase().as_str()))
            {
                Some(n) => Err(TreeError {
                    path: path.to_string(),
                    error: ExprError::Unsupported(n),
                }),
                None => Ok(()),
            }
        }
        Value::Array(a) => a
            .iter()
            .enumerate()
            .try_for_each(|(i, x)| check(x, &format!("{path}[{i}]"), depth + 1)),
        Value::Object(o) => o
            .iter()
            .try_for_each(|(k, x)| check(x, &child(path, k), depth + 1)),
        _ => Ok(()),
    }
}

/// Evaluates one string: an expression's value, a `[[` literal unescaped, or the string.
/// A failure while evaluating names the expression (its first 200 characters).
pub fn eval_string(s: &str, ctx: &dyn Context) -> Result<Value, ExprError> {
    if is_expression(s) {
        evaluate(&parse(inner(s))?, ctx).map_err(|e| match e {
            ExprError::Invalid(why) => {
                let shown: String = s.trim().chars().take(200).collect();
                ExprError::Invalid(format!("{why}, in the expression {shown}"))
            }
            other => other,
        })
    } else if s.trim_start().starts_with("[[") {
        Ok(Value::String(s.replacen("[[", "[", 1)))
    } else {
        Ok(Value::String(s.to_string()))
    }
}

/// Evaluates every expression in `v`; object keys are evaluated too (`"[variables('k')]": …`).
pub fn eval_tree(v: &Value, path: &str, ctx: &dyn Context) -> Result<Value, TreeError> {
    walk(v, path, ctx, 0)
}

fn walk(v: &Value, path: &str, ctx: &dyn Context, depth: usize) -> Result<Value, TreeError> {
    if depth > MAX_DEPTH * 2 {
        return Err(too_deep(path));
    }
    let at = |error| TreeError {
        path: path.to_string(),
        error,
    };
    Ok(match v {
        Value::String(s) => eval_string(s, ctx).map_err(at)?,
        Value::Array(a) => Value::Array(
            a.iter()
                .enumerate()
                .map(|(i, x)| walk(x, &format!("{path}[{i}]"), ctx, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(o) => {
            let mut out = Map::new();
            for (k, x) in o {
                let key = match eval_string(k, ctx).map_err(at)? {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                out.insert(key, walk(x, &child(path, k), ctx, depth + 1)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}
