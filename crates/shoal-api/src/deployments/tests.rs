//! Deployments through the API router, on the in-memory store: a copy loop of load
//! balancers with outputs, a failure that keeps what was created before it, and the 400s.

use http::Method;
use serde_json::{json, Value};

use crate::arm_crud::testing::{call, empty_state};
use crate::state::ApiState;

const RG: &str = "/subscriptions/s/resourceGroups/demo";
const DEP: &str = "/subscriptions/s/resourceGroups/demo/providers/Microsoft.Resources/deployments";

async fn state() -> ApiState {
    let st = empty_state("2026-11-22T10:00:00Z".parse().expect("time"));
    assert_eq!(
        call(&st, Method::PUT, RG, json!({"location": "local"}))
            .await
            .0,
        201
    );
    st
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A template: `count` load balancers from a copy loop, then one that depends on them.
fn template(ports: &[u16], last_rule_port: Value) -> Value {
    let lb = |port: Value| {
        json!({
        "frontendIPConfigurations": [{"name": "fe"}],
        "backendAddressPools": [{"name": "pool"}],
        "loadBalancingRules": [{"name": "r", "properties": {
            "frontendIPConfiguration": {"id": "fe"}, "backendAddressPool": {"id": "pool"},
            "protocol": "Tcp", "frontendPort": port, "backendPort": 8080}}]})
    };
    json!({
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "parameters": {
            "prefix": {"type": "string", "defaultValue": "lb"},
            "ports": {"type": "array"},
        },
        "variables": {"lastName": "[concat(parameters('prefix'), '-last')]"},
        "resources": [
            {
                "type": "Microsoft.Network/loadBalancers", "apiVersion": "2024-05-01",
                "name": "[format('{0}-{1}', parameters('prefix'), copyIndex())]",
                "location": "[resourceGroup().location]",
                "copy": {"name": "lbs", "count": "[length(parameters('ports'))]"},
                "properties": lb(json!("[parameters('ports')[copyIndex()]]")),
            },
            {
                "type": "Microsoft.Network/loadBalancers", "apiVersion": "2024-05-01",
                "name": "[variables('lastName')]",
                "location": "[resourceGroup().location]",
                "dependsOn": ["lbs"],
                "properties": lb(last_rule_port),
            },
        ],
        "outputs": {
            "first": {"type": "string", "value": "[resourceId('Microsoft.Network/loadBalancers', 'lb-0')]"},
            "ruleCount": {"type": "int", "value": "[length(reference(resourceId('Microsoft.Network/loadBalancers', 'lb-1')).loadBalancingRules)]"},
        },
        "_ports": ports,
    })
}

async fn deploy(st: &ApiState, name: &str, t: Value, ports: &[u16]) -> (u16, Value) {
    let mut t = t;
    t.as_object_mut().map(|o| o.remove("_ports"));
    let body = json!({"properties": {"mode": "Incremental", "template": t, "parameters": {"ports": {"value": ports}}}});
    call(st, Method::PUT, &format!("{DEP}/{name}"), body).await
}

async fn wait(st: &ApiState, name: &str) -> Value {
    for _ in 0..200 {
        let (s, b) = call(st, Method::GET, &format!("{DEP}/{name}"), Value::Null).await;
        assert_eq!(s, 200, "{b}");
        if !matches!(
            b["properties"]["provisioningState"].as_str(),
            Some("Accepted" | "Running")
        ) {
            return b;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("deployment {name} did not end");
}

#[tokio::test]
async fn copy_loop_depends_on_and_outputs() {
    let st = state().await;
    let ports = [free_port(), free_port()];
    let (s, b) = deploy(&st, "d1", template(&ports, json!(free_port())), &ports).await;
    assert_eq!(s, 201, "{b}");
    let done = wait(&st, "d1").await;
    assert_eq!(
        done["properties"]["provisioningState"], "Succeeded",
        "{done}"
    );
    let outputs = &done["properties"]["outputs"];
    assert_eq!(
        outputs["first"]["value"],
        format!("{RG}/providers/Microsoft.Network/loadBalancers/lb-0")
    );
    assert_eq!(outputs["ruleCount"]["value"], 1);
    for (n, port) in [("lb-0", json!(ports[0])), ("lb-1", json!(ports[1]))] {
        let (s, lb) = call(
            &st,
            Method::GET,
            &format!("{RG}/providers/Microsoft.Network/loadBalancers/{n}"),
            Value::Null,
        )
        .await;
        assert_eq!(s, 200, "{lb}");
        assert_eq!(
            lb["properties"]["loadBalancingRules"][0]["properties"]["frontendPort"],
            port
        );
    }
    // The last one was created after the loop it depends on.
    let (_, ops) = call(
        &st,
        Method::GET,
        &format!("{DEP}/d1/operations"),
        Value::Null,
    )
    .await;
    let order: Vec<&str> = ops["value"]
        .as_array()
        .expect("ops")
        .iter()
        .map(|o| {
            o["properties"]["targetResource"]["resourceName"]
                .as_str()
                .unwrap_or("")
        })
        .collect();
    assert_eq!(order, ["lb-0", "lb-1", "lb-last"]);
    let (_, list) = call(&st, Method::GET, DEP, Value::Null).await;
    assert_eq!(list["value"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn a_failing_resource_fails_the_deployment_and_keeps_earlier_ones() {
    let st = state().await;
    let ports = [free_port(), free_port()];
    // The last balancer's rule has an invalid port: the handler's own validation refuses it.
    let (s, b) = deploy(&st, "d2", template(&ports, json!(70000)), &ports).await;
    assert_eq!(s, 201, "{b}");
    let done = wait(&st, "d2").await;
    let props = &done["properties"];
    assert_eq!(props["provisioningState"], "Failed", "{done}");
    assert_eq!(props["error"]["code"], "DeploymentFailed");
    let inner = &props["error"]["details"][0];
    assert_eq!(
        inner["code"].as_str().map(|c| !c.is_empty()),
        Some(true),
        "{inner}"
    );
    assert!(
        inner["message"].as_str().unwrap_or("").contains("70000")
            || inner["target"]
                .as_str()
                .unwrap_or("")
                .contains("rontendPort"),
        "{inner}"
    );
    let (s, _) = call(
        &st,
        Method::GET,
        &format!("{RG}/providers/Microsoft.Network/loadBalancers/lb-1"),
        Value::Null,
    )
    .await;
    assert_eq!(s, 200, "created before the failure, kept");
    let (s, _) = call(
        &st,
        Method::GET,
        &format!("{RG}/providers/Microsoft.Network/loadBalancers/lb-last"),
        Value::Null,
    )
    .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn unsupported_expression_is_a_400_naming_it_and_its_path() {
    let st = state().await;
    let ports = [free_port()];
    let mut t = template(&ports, json!(free_port()));
    t["resources"][1]["location"] = json!("[base64(resourceGroup().location)]");
    for uri in [format!("{DEP}/d3"), format!("{DEP}/d3/validate")] {
        let mut t = t.clone();
        t.as_object_mut().map(|o| o.remove("_ports"));
        let body = json!({"properties": {"mode": "Incremental", "template": t, "parameters": {"ports": {"value": ports}}}});
        let method = if uri.ends_with("validate") {
            Method::POST
        } else {
            Method::PUT
        };
        let (s, b) = call(&st, method, &uri, body).await;
        assert_eq!(s, 400, "{b}");
        assert_eq!(b["error"]["code"], "InvalidTemplate");
        assert_eq!(b["error"]["target"], "resources[1].location");
        assert!(
            b["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("'base64'"),
            "{b}"
        );
    }
    let (s, _) = call(&st, Method::GET, &format!("{DEP}/d3"), Value::Null).await;
    assert_eq!(s, 404, "nothing was recorded");
}

#[tokio::test]
async fn complete_mode_cycles_and_missing_parameters_are_400s() {
    let st = state().await;
    let ports = [free_port()];
    let t = {
        let mut t = template(&ports, json!(free_port()));
        t.as_object_mut().map(|o| o.remove("_ports"));
        t
    };
    let (s, b) = call(&st, Method::PUT, &format!("{DEP}/c"), json!({"properties": {"mode": "Complete", "template": t, "parameters": {"ports": {"value": ports}}}})).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("InvalidDeploymentMode")),
        "{b}"
    );
    let (s, b) = call(
        &st,
        Method::PUT,
        &format!("{DEP}/c"),
        json!({"properties": {"mode": "Incremental", "template": t}}),
    )
    .await;
    assert_eq!(
        (s, b["error"]["target"].as_str()),
        (400, Some("parameters.ports")),
        "{b}"
    );
    let mut cyc = t.clone();
    cyc["resources"][0]["dependsOn"] = json!(["lb-last"]);
    let (s, b) = call(&st, Method::PUT, &format!("{DEP}/c"), json!({"properties": {"mode": "Incremental", "template": cyc, "parameters": {"ports": {"value": ports}}}})).await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("circular"),
        "{b}"
    );
}
