//! Evaluating a parsed expression: the template functions Shoal supports.

use serde_json::{json, Value};

use crate::{parse::Expr, ExprError, MAX_VALUE_LEN};

/// What an expression can ask of the deployment it is evaluated in.
pub trait Context {
    fn parameter(&self, name: &str) -> Result<Value, ExprError>;
    fn variable(&self, name: &str) -> Result<Value, ExprError>;
    fn subscription_id(&self) -> String;
    fn resource_group_name(&self) -> String;
    /// `resourceGroup()`: `{id, name, location, properties}`.
    fn resource_group(&self) -> Value;
    /// `subscription()`: `{id, subscriptionId, tenantId, displayName}`.
    fn subscription(&self) -> Value;
    /// `reference(id, apiVersion?, 'Full'?)`: the resource's properties (or whole body).
    fn reference(&self, id: &str, full: bool) -> Result<Value, ExprError>;
    /// `providers(namespace, type)`: the API versions Shoal serves for the type.
    fn api_versions(&self, namespace: &str, type_: &str) -> Result<Vec<String>, ExprError>;
    /// `copyIndex(loop?)`: the current iteration of the (named or innermost) copy loop.
    fn copy_index(&self, loop_name: Option<&str>) -> Result<i64, ExprError>;
}

/// The functions Shoal implements (compared case-insensitively, as ARM does).
pub const FUNCTIONS: &[&str] = &[
    "concat",
    "format",
    "resourceid",
    "resourcegroup",
    "subscription",
    "parameters",
    "variables",
    "reference",
    "providers",
    "uniquestring",
    "copyindex",
    "if",
    "equals",
    "not",
    "empty",
    "length",
    "tolower",
    "toupper",
    "and",
    "or",
    "true",
    "false",
    "string",
    "int",
    "bool",
    "contains",
    "createarray",
];

pub fn evaluate(e: &Expr, ctx: &dyn Context) -> Result<Value, ExprError> {
    match e {
        Expr::Str(s) => Ok(Value::String(s.clone())),
        Expr::Int(i) => Ok(json!(i)),
        Expr::Bool(b) => Ok(Value::Bool(*b)),
        Expr::Prop(inner, p) => {
            let v = evaluate(inner, ctx)?;
            v.as_object()
                .and_then(|o| {
                    o.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(p))
                        .map(|(_, v)| v.clone())
                })
                .ok_or_else(|| {
                    ExprError::invalid(format!("the property '{p}' does not exist on {}", kind(&v)))
                })
        }
        Expr::Index(inner, idx) => {
            let v = evaluate(inner, ctx)?;
            let i = evaluate(idx, ctx)?;
            match (&v, &i) {
                (Value::Array(a), Value::Number(n)) => n
                    .as_i64()
                    .and_then(|n| usize::try_from(n).ok())
                    .and_then(|n| a.get(n).cloned())
                    .ok_or_else(|| {
                        ExprError::invalid(format!(
                            "index {n} is out of range (length {})",
                            a.len()
                        ))
                    }),
                (Value::Object(o), Value::String(k)) => o
                    .iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(k))
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| {
                        ExprError::invalid(format!("the property '{k}' does not exist"))
                    }),
                _ => Err(ExprError::invalid(format!(
                    "cannot index {} with {}",
                    kind(&v),
                    kind(&i)
                ))),
            }
        }
        Expr::Call { name, args } => call(name, args, ctx),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn want_str(f: &str, v: Value) -> Result<String, ExprError> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(ExprError::invalid(format!(
            "{f}() expects a string, got {}",
            kind(&other)
        ))),
    }
}

fn want_bool(f: &str, v: Value) -> Result<bool, ExprError> {
    match v {
        Value::Bool(b) => Ok(b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        other => Err(ExprError::invalid(format!(
            "{f}() expects a boolean, got {}",
            kind(&other)
        ))),
    }
}

fn arity(f: &str, args: &[Expr], min: usize, max: usize) -> Result<(), ExprError> {
    if args.len() < min || args.len() > max {
        let want = if min == max {
            format!("{min}")
        } else {
            format!("{min} to {max}")
        };
        return Err(ExprError::invalid(format!(
            "{f}() takes {want} arguments, got {}",
            args.len()
        )));
    }
    Ok(())
}

fn bounded(v: Value) -> Result<Value, ExprError> {
    let len = match &v {
        Value::String(s) => s.len(),
        Value::Array(a) => a.len(),
        _ => 0,
    };
    if len > MAX_VALUE_LEN {
        return Err(ExprError::invalid(format!(
            "the result is longer than {MAX_VALUE_LEN}"
        )));
    }
    Ok(v)
}

fn call(name: &str, args: &[Expr], ctx: &dyn Context) -> Result<Value, ExprError> {
    let f = name.to_ascii_lowercase();
    // `if` evaluates only the branch it takes.
    if f == "if" {
        arity(name, args, 3, 3)?;
        let c = want_bool(name, evaluate(&args[0], ctx)?)?;
        return evaluate(&args[if c { 1 } else { 2 }], ctx);
    }
    if !FUNCTIONS.contains(&f.as_str()) {
        return Err(ExprError::Unsupported(name.to_string()));
    }
    let mut vals = Vec::with_capacity(args.len());
    for a in args {
        vals.push(evaluate(a, ctx)?);
    }
    let n = vals.len();
    let mut it = vals.into_iter();
    let mut next = || it.next().unwrap_or(Value::Null);
    let v = match f.as_str() {
        "concat" => {
            if n == 0 {
                return Err(ExprError::invalid("concat() takes at least 1 argument"));
            }
            let vals: Vec<Value> = (0..n).map(|_| next()).collect();
            if vals.iter().all(Value::is_array) {
                let mut out = Vec::new();
                for v in vals {
                    if let Value::Array(a) = v {
                        out.extend(a);
                        if out.len() > MAX_VALUE_LEN {
                            return Err(ExprError::invalid("concat(): result too long"));
                        }
                    }
                }
                Value::Array(out)
            } else {
                let mut s = String::new();
                for v in vals {
                    s.push_str(&to_text(&v)?);
                    if s.len() > MAX_VALUE_LEN {
                        return Err(ExprError::invalid("concat(): result too long"));
                    }
                }
                Value::String(s)
            }
        }
        "format" => {
            if n == 0 {
                return Err(ExprError::invalid("format() takes at least 1 argument"));
            }
            let fmt = want_str(name, next())?;
            let rest: Vec<Value> = (1..n).map(|_| next()).collect();
            Value::String(format_str(&fmt, &rest)?)
        }
        "resourceid" => {
            let parts = (0..n)
                .map(|_| want_str(name, next()))
                .collect::<Result<Vec<_>, _>>()?;
            Value::String(resource_id(&parts, ctx)?)
        }
        "resourcegroup" => {
            arity(name, args, 0, 0)?;
            ctx.resource_group()
        }
        "subscription" => {
            arity(name, args, 0, 0)?;
            ctx.subscription()
        }
        "parameters" => {
            arity(name, args, 1, 1)?;
            ctx.parameter(&want_str(name, next())?)?
        }
        "variables" => {
            arity(name, args, 1, 1)?;
            ctx.variable(&want_str(name, next())?)?
        }
        "reference" => {
            arity(name, args, 1, 3)?;
            let id = want_str(name, next())?;
            let _api = next();
            let full = matches!(next(), Value::String(s) if s.eq_ignore_ascii_case("full"));
            ctx.reference(&id, full)?
        }
        "providers" => {
            arity(name, args, 2, 2)?;
            let ns = want_str(name, next())?;
            let ty = want_str(name, next())?;
            let versions = ctx.api_versions(&ns, &ty)?;
            json!({ "namespace": ns, "resourceType": ty, "apiVersions": versions, "locations": [] })
        }
        "uniquestring" => {
            if n == 0 {
                return Err(ExprError::invalid(
                    "uniqueString() takes at least 1 argument",
                ));
            }
            let parts = (0..n)
                .map(|_| want_str(name, next()))
                .collect::<Result<Vec<_>, _>>()?;
            Value::String(unique_string(&parts))
        }
        "copyindex" => {
            arity(name, args, 0, 2)?;
            let (loop_name, offset) = match (next(), next()) {
                (Value::Null, _) => (None, 0),
                (Value::Number(o), Value::Null) => (None, o.as_i64().unwrap_or(0)),
                (Value::String(l), Value::Null) => (Some(l), 0),
                (Value::String(l), Value::Number(o)) => (Some(l), o.as_i64().unwrap_or(0)),
                _ => return Err(ExprError::invalid("copyIndex() takes (loopName?, offset?)")),
            };
            let i = ctx.copy_index(loop_name.as_deref())?;
            json!(i.saturating_add(offset))
        }
        "equals" => {
            arity(name, args, 2, 2)?;
            Value::Bool(next() == next())
        }
        "not" => {
            arity(name, args, 1, 1)?;
            Value::Bool(!want_bool(name, next())?)
        }
        "and" | "or" => {
            if n < 2 {
                return Err(ExprError::invalid(format!(
                    "{name}() takes at least 2 arguments"
                )));
            }
            let bs = (0..n)
                .map(|_| want_bool(name, next()))
                .collect::<Result<Vec<_>, _>>()?;
            Value::Bool(if f == "and" {
                bs.iter().all(|b| *b)
            } else {
                bs.iter().any(|b| *b)
            })
        }
        "true" | "false" => {
            arity(name, args, 0, 0)?;
            Value::Bool(f == "true")
        }
        "empty" => {
            arity(name, args, 1, 1)?;
            Value::Bool(match next() {
                Value::Null => true,
                Value::String(s) => s.is_empty(),
                Value::Array(a) => a.is_empty(),
                Value::Object(o) => o.is_empty(),
                other => {
                    return Err(ExprError::invalid(format!(
                        "empty() does not take {}",
                        kind(&other)
                    )))
                }
            })
        }
        "length" => {
            arity(name, args, 1, 1)?;
            json!(match next() {
                Value::String(s) => s.chars().count(),
                Value::Array(a) => a.len(),
                Value::Object(o) => o.len(),
                other =>
                    return Err(ExprError::invalid(format!(
                        "length() does not take {}",
                        kind(&other)
                    ))),
            })
        }
        "tolower" => {
            arity(name, args, 1, 1)?;
            Value::String(want_str(name, next())?.to_lowercase())
        }
        "toupper" => {
            arity(name, args, 1, 1)?;
            Value::String(want_str(name, next())?.to_uppercase())
        }
        "string" => {
            arity(name, args, 1, 1)?;
            Value::String(to_text(&next())?)
        }
        "int" => {
            arity(name, args, 1, 1)?;
            match next() {
                Value::Number(x) if x.is_i64() => Value::Number(x),
                Value::String(s) => json!(s
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| ExprError::invalid(format!("int(): '{s}' is not an integer")))?),
                other => {
                    return Err(ExprError::invalid(format!(
                        "int() does not take {}",
                        kind(&other)
                    )))
                }
            }
        }
        "bool" => {
            arity(name, args, 1, 1)?;
            Value::Bool(match next() {
                Value::Number(x) => x.as_i64() != Some(0),
                other => want_bool(name, other)?,
            })
        }
        "contains" => {
            arity(name, args, 2, 2)?;
            let (c, x) = (next(), next());
            Value::Bool(match (&c, &x) {
                (Value::String(s), _) => s.to_lowercase().contains(&to_text(&x)?.to_lowercase()),
                (Value::Array(a), _) => a.contains(&x),
                (Value::Object(o), Value::String(k)) => {
                    o.keys().any(|key| key.eq_ignore_ascii_case(k))
                }
                _ => {
                    return Err(ExprError::invalid(format!(
                        "contains() does not take {}",
                        kind(&c)
                    )))
                }
            })
        }
        "createarray" => Value::Array((0..n).map(|_| next()).collect()),
        _ => return Err(ExprError::Unsupported(name.to_string())),
    };
    bounded(v)
}

fn to_text(v: &Value) -> Result<String, ExprError> {
    Ok(match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => {
            if *b {
                "True".into()
            } else {
                "False".into()
            }
        }
        Value::Number(n) => n.to_string(),
        Value::Null => String::new(),
        other => serde_json::to_string(other).map_err(|e| ExprError::invalid(e.to_string()))?,
    })
}

/// .NET composite formatting, as ARM's `format()`: `{0}`, `{{`, `}}`; format specifiers
/// (`{0:N2}`) are refused rather than ignored.
fn format_str(fmt: &str, args: &[Value]) -> Result<String, ExprError> {
    let mut out = String::new();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let mut spec = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(ch) if spec.len() < 16 => spec.push(ch),
                        _ => {
                            return Err(ExprError::invalid(format!(
                                "format(): bad placeholder in '{fmt}'"
                            )))
                        }
                    }
                }
                let i: usize = spec.trim().parse().map_err(|_| {
                    ExprError::invalid(format!(
                        "format(): placeholder '{{{spec}}}' is not supported"
                    ))
                })?;
                let v = args.get(i).ok_or_else(|| {
                    ExprError::invalid(format!("format(): no argument {i} for '{fmt}'"))
                })?;
                out.push_str(&to_text(v)?);
            }
            '}' => {
                return Err(ExprError::invalid(format!(
                    "format(): unmatched '}}' in '{fmt}'"
                )))
            }
            c => out.push(c),
        }
        if out.len() > MAX_VALUE_LEN {
            return Err(ExprError::invalid("format(): result too long"));
        }
    }
    Ok(out)
}

/// `resourceId([subscriptionId], [resourceGroupName], type, name1, name2, …)`.
fn resource_id(parts: &[String], ctx: &dyn Context) -> Result<String, ExprError> {
    let t = parts
        .iter()
        .position(|p| p.contains('/'))
        .ok_or_else(|| ExprError::invalid("resourceId() needs a resource type such as 'Microsoft.Compute/virtualMachineScaleSets'"))?;
    let (sub, rg) = match t {
        0 => (ctx.subscription_id(), ctx.resource_group_name()),
        1 => (ctx.subscription_id(), parts[0].clone()),
        2 => (parts[0].clone(), parts[1].clone()),
        _ => {
            return Err(ExprError::invalid(
                "resourceId(): too many arguments before the resource type",
            ))
        }
    };
    let mut segs = parts[t].split('/');
    let ns = segs.next().unwrap_or_default();
    let types: Vec<&str> = segs.collect();
    let names = &parts[t + 1..];
    if types.is_empty() || types.len() != names.len() {
        return Err(ExprError::invalid(format!(
            "resourceId(): the type '{}' needs {} name(s), got {}",
            parts[t],
            types.len(),
            names.len()
        )));
    }
    let mut id = format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/{ns}");
    for (ty, n) in types.iter().zip(names) {
        id.push_str(&format!("/{ty}/{n}"));
    }
    Ok(id)
}

/// 13 lowercase base-32 characters, a deterministic hash of the arguments (stable across
/// Shoal versions; not the same string Azure computes for the same input).
fn unique_string(parts: &[String]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    (0..13)
        .map(|i| A[((h >> ((i * 5) % 64)) & 31) as usize] as char)
        .collect()
}
