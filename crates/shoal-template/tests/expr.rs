//! The expression language against the values ARM documents for its functions, the errors
//! it gives for what Shoal does not support, and property tests: arbitrary input never
//! panics and nesting is bounded.

use proptest::prelude::*;
use serde_json::{json, Value};
use shoal_template::{check_tree, eval_string, eval_tree, parse, Context, ExprError};

struct Ctx;

impl Context for Ctx {
    fn parameter(&self, name: &str) -> Result<Value, ExprError> {
        match name {
            "prefix" => Ok(json!("web")),
            "versions" => Ok(json!(["1.0.0", "1.1.0"])),
            "count" => Ok(json!(3)),
            "big" => Ok(json!("b".repeat(600_000))),
            _ => Err(ExprError::Invalid(format!(
                "the parameter '{name}' is not defined"
            ))),
        }
    }
    fn variable(&self, name: &str) -> Result<Value, ExprError> {
        match name {
            "lb" => Ok(json!({"name": "lb1", "ports": [80, 443]})),
            _ => Err(ExprError::Invalid(format!(
                "the variable '{name}' is not defined"
            ))),
        }
    }
    fn subscription_id(&self) -> String {
        "sub1".into()
    }
    fn resource_group_name(&self) -> String {
        "rg1".into()
    }
    fn resource_group(&self) -> Value {
        json!({"id": "/subscriptions/sub1/resourceGroups/rg1", "name": "rg1", "location": "local"})
    }
    fn subscription(&self) -> Value {
        json!({"id": "/subscriptions/sub1", "subscriptionId": "sub1"})
    }
    fn reference(&self, id: &str, full: bool) -> Result<Value, ExprError> {
        let props = json!({"ipAddress": "127.0.1.4", "id": id});
        Ok(if full {
            json!({"properties": props})
        } else {
            props
        })
    }
    fn api_versions(&self, _ns: &str, _ty: &str) -> Result<Vec<String>, ExprError> {
        Ok(vec!["2024-07-01".into(), "2023-09-01".into()])
    }
    fn copy_index(&self, loop_name: Option<&str>) -> Result<i64, ExprError> {
        match loop_name {
            None | Some("sets") => Ok(1),
            Some(other) => Err(ExprError::Invalid(format!("no copy loop '{other}'"))),
        }
    }
}

fn ev(s: &str) -> Result<Value, ExprError> {
    eval_string(s, &Ctx)
}

#[test]
fn documented_values() {
    let cases: &[(&str, Value)] = &[
        ("[concat(parameters('prefix'), '-', string(copyIndex(1)))]", json!("web-2")),
        ("[concat(createArray(1, 2), createArray(3))]", json!([1, 2, 3])),
        ("[format('{0}-{1}-{{x}}', parameters('prefix'), 7)]", json!("web-7-{x}")),
        (
            "[resourceId('Microsoft.Network/virtualNetworks/subnets', 'v', 's')]",
            json!("/subscriptions/sub1/resourceGroups/rg1/providers/Microsoft.Network/virtualNetworks/v/subnets/s"),
        ),
        (
            "[resourceId('other', 'Microsoft.Compute/galleries', 'g')]",
            json!("/subscriptions/sub1/resourceGroups/other/providers/Microsoft.Compute/galleries/g"),
        ),
        ("[resourceGroup().location]", json!("local")),
        ("[subscription().subscriptionId]", json!("sub1")),
        ("[parameters('versions')[copyIndex()]]", json!("1.1.0")),
        ("[variables('lb').ports[1]]", json!(443)),
        ("[variables('lb')['name']]", json!("lb1")),
        ("[reference('x').ipAddress]", json!("127.0.1.4")),
        ("[reference('x', '2024-01-01', 'Full').properties.ipAddress]", json!("127.0.1.4")),
        ("[providers('Microsoft.Compute', 'virtualMachineScaleSets').apiVersions[0]]", json!("2024-07-01")),
        ("[if(equals(parameters('prefix'), 'web'), 'yes', parameters('missing'))]", json!("yes")),
        ("[not(empty(''))]", json!(false)),
        ("[length(parameters('versions'))]", json!(2)),
        ("[toLower('ABC')]", json!("abc")),
        ("[and(true, not(false), equals(1, 1))]", json!(true)),
        ("[[literal]", json!("[literal]")),
        ("plain", json!("plain")),
        ("[CONCAT('a', 'B')]", json!("aB")),
        ("[concat('it''s')]", json!("it's")),
    ];
    for (src, want) in cases {
        assert_eq!(
            &ev(src).unwrap_or_else(|e| panic!("{src}: {e}")),
            want,
            "{src}"
        );
    }
}

#[test]
fn unique_string_is_stable_and_13_chars() {
    let a = ev("[uniqueString(resourceGroup().id)]").unwrap();
    let b = ev("[uniqueString('/subscriptions/sub1/resourceGroups/rg1')]").unwrap();
    let c = ev("[uniqueString('other')]").unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    let s = a.as_str().unwrap();
    assert_eq!(s.len(), 13);
    assert!(s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
}

#[test]
fn unsupported_function_is_named_with_its_path() {
    let t =
        json!({"resources": [{"name": "ok"}, {"properties": {"x": "[concat('a', base64('b'))]"}}]});
    let err = check_tree(&t, "").unwrap_err();
    assert_eq!(err.path, "resources[1].properties.x");
    assert_eq!(err.error, ExprError::Unsupported("base64".into()));
    let err = eval_tree(&t, "", &Ctx).unwrap_err();
    assert_eq!(err.path, "resources[1].properties.x");
    assert!(
        err.to_string().contains("'base64' is not supported"),
        "{err}"
    );
}

#[test]
fn wrong_calls_are_errors_not_wrong_values() {
    for bad in [
        "[concat('a']",
        "[concat('a',)]",
        "[parameters('missing')]",
        "[variables('lb').nope]",
        "[parameters('versions')[5]]",
        "[resourceId('Microsoft.Compute/virtualMachineScaleSets')]",
        "[format('{0:N2}', 1)]",
        "[not('maybe')]",
        "[copyIndex('other')]",
        "[length(1)]",
        "[equals(1)]",
        "[concat('a') extra]",
    ] {
        assert!(ev(bad).is_err(), "{bad} should fail, got {:?}", ev(bad));
    }
}

#[test]
fn deep_nesting_is_refused() {
    let deep = format!("[{}'x'{}]", "toLower(".repeat(500), ")".repeat(500));
    assert!(matches!(ev(&deep), Err(ExprError::Syntax { .. })));
    let mut v = json!("x");
    for _ in 0..1000 {
        v = json!([v]);
    }
    assert!(check_tree(&v, "").is_err());
    assert!(eval_tree(&v, "", &Ctx).is_err());
}

#[test]
fn huge_results_are_refused() {
    // Doubling a string by nesting concat 25 times: the text itself is over the size limit.
    let mut e = "'xx'".to_string();
    for _ in 0..25 {
        e = format!("concat({e}, {e})");
    }
    assert!(matches!(
        ev(&format!("[{e}]")),
        Err(ExprError::Syntax { .. })
    ));
    // A short text whose value passes 1 MiB is refused when it does.
    let ok = ev("[length(concat(parameters('big'), parameters('big')))]");
    assert!(ok.is_err(), "{ok:?}");
    assert_eq!(ev("[length(parameters('big'))]").unwrap(), json!(600_000));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,200}") {
        let _ = parse(&s);
        let _ = ev(&format!("[{s}]"));
    }

    #[test]
    fn expression_like_text_never_panics(
        s in "[a-zA-Z(),'\\[\\]. 0-9{}-]{0,120}"
    ) {
        let _ = ev(&format!("[{s}]"));
        let _ = check_tree(&json!({ "k": format!("[{s}]") }), "");
    }

    #[test]
    fn concat_of_literals_is_their_join(parts in proptest::collection::vec("[a-z0-9 ]{0,8}", 1..6)) {
        let args: Vec<String> = parts.iter().map(|p| format!("'{p}'")).collect();
        let got = ev(&format!("[concat({})]", args.join(", "))).unwrap();
        prop_assert_eq!(got, json!(parts.concat()));
    }

    #[test]
    fn quoted_strings_round_trip(s in "[^\\x00]{0,40}") {
        let quoted = s.replace('\'', "''");
        prop_assert_eq!(ev(&format!("[string('{quoted}')]")).unwrap(), json!(s));
    }
}
