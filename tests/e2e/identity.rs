//! Issue 11 through the real `shoal` CLI: `shoal ad sp create-for-rbac` makes a service
//! principal with a role at a scope, `shoal login` keeps its credential for later commands,
//! the role decides what they may do, and a reset or deleted secret no longer signs in.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

/// `shoal ARGS` as a user elsewhere: no owner credential, a configuration directory of
/// its own (where `shoal login` keeps what it signs in with).
fn remote_cli(s: &Server, config: &std::path::Path, args: &[&str]) -> Output {
    Command::new(shoal_bin())
        .args(args)
        .env("SHOAL_ENDPOINT", s.endpoint())
        .env("SHOAL_DATA_DIR", config.join("no-data-dir"))
        .env("SHOAL_CONFIG_DIR", config)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .output()
        .expect("run shoal")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_of(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

#[test]
fn a_service_principal_signs_in_with_its_role_and_loses_access_when_reset_or_deleted() {
    let _g = serial();
    let s = Server::start();
    let rg = "idrg";
    s.create_group_and_image(rg);
    s.cli_ok(&vmss_args(rg, "1"));
    let scope = format!("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/{rg}");

    // A wrong role name makes nothing.
    let bad = s.cli(&[
        "ad",
        "sp",
        "create-for-rbac",
        "--name",
        "x",
        "--role",
        "Superuser",
        "--scopes",
        &scope,
    ]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("no role 'Superuser'"),
        "{}",
        stderr(&bad)
    );

    let sp = s.cli_ok(&[
        "ad",
        "sp",
        "create-for-rbac",
        "--name",
        "reader",
        "--role",
        "Reader",
        "--scopes",
        &scope,
    ]);
    let (app, secret, tenant) = (
        sp["appId"].as_str().expect("appId").to_string(),
        sp["password"].as_str().expect("password").to_string(),
        sp["tenant"].as_str().expect("tenant").to_string(),
    );
    let listed = s.cli_ok(&["ad", "sp", "list"]);
    assert!(
        listed
            .as_array()
            .expect("array")
            .iter()
            .any(|p| p["appId"] == app.as_str()),
        "{listed}"
    );

    let config = tempfile::tempdir().expect("config dir");
    let cfg = config.path();
    // Without a credential: refused, and told how to sign in.
    let anon = remote_cli(&s, cfg, &["vmss", "list", "-g", rg]);
    assert!(!anon.status.success());
    assert!(
        stderr(&anon).contains("AuthenticationFailed"),
        "{}",
        stderr(&anon)
    );

    let login = remote_cli(
        &s,
        cfg,
        &[
            "login",
            "--service-principal",
            "-u",
            &app,
            "-p",
            &secret,
            "--tenant",
            &tenant,
        ],
    );
    assert!(login.status.success(), "{}", stderr(&login));
    let file = cfg.join("login.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file)
            .expect("login.json")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // A Reader reads, and a write is refused and changes nothing.
    let sets = remote_cli(&s, cfg, &["vmss", "list", "-g", rg]);
    assert!(sets.status.success(), "{}", stderr(&sets));
    assert_eq!(json_of(&sets)[0]["name"], "web");
    let scale = remote_cli(
        &s,
        cfg,
        &[
            "vmss",
            "scale",
            "-g",
            rg,
            "-n",
            "web",
            "--new-capacity",
            "2",
        ],
    );
    assert!(!scale.status.success());
    assert!(
        stderr(&scale).contains("AuthorizationFailed"),
        "{}",
        stderr(&scale)
    );
    let shown = s.cli_ok(&["vmss", "show", "-g", rg, "-n", "web"]);
    assert_eq!(
        shown["sku"]["capacity"], 1,
        "the refused scale changed nothing"
    );
    // The refusal is in the activity log, with who tried.
    let log = s.cli_ok(&[
        "monitor",
        "activity-log",
        "list",
        "-g",
        rg,
        "--offset",
        "1h",
    ]);
    assert!(
        log.as_array()
            .expect("events")
            .iter()
            .any(|e| e["caller"] == app.as_str()
                && e["status"]["value"] == "Failed"
                && e["operationName"]["value"]
                    .as_str()
                    .is_some_and(|o| o
                        .eq_ignore_ascii_case("Microsoft.Compute/virtualMachineScaleSets/write"))),
        "no failed write by {app} in {log}"
    );

    // A reset secret: the old one no longer signs in, the new one does.
    let reset = s.cli_ok(&["ad", "sp", "credential", "reset", "--id", &app]);
    let new_secret = reset["password"]
        .as_str()
        .expect("new password")
        .to_string();
    assert_ne!(new_secret, secret);
    let stale = remote_cli(&s, cfg, &["vmss", "list", "-g", rg]);
    assert!(!stale.status.success(), "the old secret still signs in");
    let relogin = remote_cli(
        &s,
        cfg,
        &[
            "login",
            "--service-principal",
            "-u",
            &app,
            "-p",
            &new_secret,
            "--tenant",
            &tenant,
        ],
    );
    assert!(relogin.status.success(), "{}", stderr(&relogin));
    assert!(remote_cli(&s, cfg, &["vmss", "list", "-g", rg])
        .status
        .success());

    // Deleted: nothing signs in any more; logout forgets the file.
    s.cli_ok(&["ad", "sp", "delete", "--id", &app]);
    assert!(!remote_cli(&s, cfg, &["vmss", "list", "-g", rg])
        .status
        .success());
    assert!(remote_cli(&s, cfg, &["logout"]).status.success());
    assert!(!file.exists());
}

/// What the identity probe image does, answering `GET /` with a JSON report: it gets a
/// token from `IDENTITY_ENDPOINT` (as App Service's managed identity, which an unchanged
/// `ManagedIdentityCredential` uses), then reads and tries to delete its own scale set with
/// it, and asks once more with a wrong secret. The API and the set come as custom data.
const IDENTITY_PROBE: &str = r#"import http.server, json, os, urllib.error, urllib.request
api, set_path, client_id = open(os.environ["SHOAL_CUSTOM_DATA"]).read().split()
group_path = set_path.split("/providers/")[0]
def call(method, url, headers):
    req = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
def report():
    token_url = os.environ["IDENTITY_ENDPOINT"] + "?api-version=2019-08-01&resource=https://management.azure.com/"
    out = {"uid": os.getuid()}
    status, body = call("GET", token_url, {"X-IDENTITY-HEADER": os.environ["IDENTITY_HEADER"]})
    out["token_status"] = status
    if status != 200:
        out["token_error"] = body
        return out
    auth = {"Authorization": "Bearer " + json.loads(body)["access_token"]}
    out["get_set"] = call("GET", api + set_path + "?api-version=2024-07-01", auth)[0]
    out["delete_set"] = call("DELETE", api + set_path + "?api-version=2024-07-01", auth)[0]
    out["wrong_secret"] = call("GET", token_url, {"X-IDENTITY-HEADER": "0" * 64})[0]
    out["system_get_group"] = call("GET", api + group_path + "?api-version=2022-09-01", auth)[0]
    # The user-assigned identity, by its client id: Reader on the whole group.
    status, body = call("GET", token_url + "&client_id=" + client_id, {"X-IDENTITY-HEADER": os.environ["IDENTITY_HEADER"]})
    out["user_token_status"] = status
    if status == 200:
        auth = {"Authorization": "Bearer " + json.loads(body)["access_token"]}
        out["user_get_group"] = call("GET", api + group_path + "?api-version=2022-09-01", auth)[0]
        out["user_delete_set"] = call("DELETE", api + set_path + "?api-version=2024-07-01", auth)[0]
    out["unknown_client"] = call("GET", token_url + "&client_id=00000000-0000-0000-0000-00000000000f", {"X-IDENTITY-HEADER": os.environ["IDENTITY_HEADER"]})[0]
    return out
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(report()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer(("", int(os.environ["PORT"])), H).serve_forever()
"#;

#[test]
fn an_instance_uses_its_sets_identity_with_the_role_it_was_given_and_no_more() {
    let _g = serial();
    // Host ports: the instance reaches the API on 127.0.0.1 like any local process.
    let s = Server::start_with(&["--network", "host-ports"]);
    let rg = "miderg";
    s.cli_ok(&["group", "create", "--name", rg, "--location", "local"]);
    let image = s.dir.path().join("probe");
    std::fs::create_dir_all(&image).expect("mkdir");
    std::fs::write(image.join("probe.py"), IDENTITY_PROBE).expect("write probe");
    s.cli_ok(&[
        "image",
        "create",
        "-g",
        rg,
        "--gallery",
        "apps",
        "--name",
        "probe",
        "--version",
        "1.0.0",
        "--dir",
        image.to_str().expect("utf-8"),
        "--command",
        "python3 probe.py",
        "--port",
        "8080",
    ]);
    let sub = "00000000-0000-0000-0000-000000000000";
    let set_path = format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/probe"
    );
    // A user-assigned identity too, with Reader on the whole group.
    let uai = s.cli_ok(&["identity", "create", "-g", rg, "-n", "probe-id"]);
    let (uai_principal, uai_client) = (
        uai["properties"]["principalId"]
            .as_str()
            .expect("principalId"),
        uai["properties"]["clientId"].as_str().expect("clientId"),
    );
    let group_path = format!("/subscriptions/{sub}/resourceGroups/{rg}");
    let body = format!(
        r#"{{"properties": {{"roleDefinitionId": "/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7", "principalId": "{uai_principal}"}}}}"#
    );
    let (status, answer) = http_request(
        "PUT",
        &format!(
            "{}{group_path}/providers/Microsoft.Authorization/roleAssignments/0a7c2b1e-1d8e-4c55-9f3e-6b0f1e2d3c4b?api-version=2022-04-01",
            s.endpoint()
        ),
        Some(&body),
    )
    .expect("assign");
    assert!(status == 200 || status == 201, "{status}: {answer}");

    let custom = format!("{} {set_path} {uai_client}", s.endpoint());
    let created = s.cli_ok(&[
        "vmss",
        "create",
        "-g",
        rg,
        "-n",
        "probe",
        "--image",
        "apps/probe:1.0.0",
        "--instance-count",
        "1",
        "--assign-identity",
        "[system]",
        "probe-id",
        "--custom-data",
        &custom,
    ]);
    let shown = s.cli_ok(&["vmss", "show", "-g", rg, "-n", "probe"]);
    let principal = shown["identity"]["principalId"]
        .as_str()
        .unwrap_or_else(|| {
            panic!("a system-assigned identity has a principalId: {shown} {created}")
        })
        .to_string();
    assert_eq!(shown["identity"]["type"], "SystemAssigned, UserAssigned");
    let named = shown["identity"]["userAssignedIdentities"]
        .as_object()
        .and_then(|m| m.values().next().cloned())
        .unwrap_or_default();
    assert_eq!(named["clientId"], uai_client, "{shown}");

    // Reader on its own set, nothing else.
    let assignment = format!(
        "{}{set_path}/providers/Microsoft.Authorization/roleAssignments/6f1f0a8e-8a3a-4a4e-9b5c-2f4f1f9e7a11?api-version=2022-04-01",
        s.endpoint()
    );
    let body = format!(
        r#"{{"properties": {{"roleDefinitionId": "/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7", "principalId": "{principal}", "principalType": "ServicePrincipal"}}}}"#
    );
    let (status, answer) = http_request("PUT", &assignment, Some(&body)).expect("assign");
    assert!(status == 200 || status == 201, "{status}: {answer}");

    let inst = {
        let mut found = None;
        wait_until(Duration::from_secs(60), "the probe instance runs", || {
            found = s
                .instances(rg, "probe")
                .into_iter()
                .find(|i| i.power == "running" && i.address.is_some());
            found.is_some()
        });
        found.expect("instance")
    };
    let url = format!("http://{}/", inst.address.expect("address"));
    let mut report = Value::Null;
    // Role assignments are read anew within a few seconds; until then a read may be 403.
    wait_until(
        Duration::from_secs(60),
        "the instance reads its set with its identity",
        || {
            report = http_get(&url)
                .and_then(|(_, b)| serde_json::from_str(&b).ok())
                .unwrap_or(Value::Null);
            report["get_set"] == 200
        },
    );
    assert_eq!(report["token_status"], 200, "{report}");
    assert_eq!(
        report["delete_set"], 403,
        "a Reader cannot delete: {report}"
    );
    assert_eq!(report["wrong_secret"], 401, "{report}");
    assert_eq!(
        report["system_get_group"], 403,
        "Reader on its set only: {report}"
    );
    assert_eq!(report["user_token_status"], 200, "{report}");
    assert_eq!(
        report["user_get_group"], 200,
        "the user-assigned identity reads its group: {report}"
    );
    assert_eq!(report["user_delete_set"], 403, "{report}");
    assert_eq!(
        report["unknown_client"], 400,
        "an identity the set was not given: {report}"
    );
    assert_ne!(report["uid"], 0, "{report}");
    assert!(
        s.cli(&["vmss", "show", "-g", rg, "-n", "probe"])
            .status
            .success(),
        "the set is still there"
    );

    // Its host's agent asks for its token; another host's credential may not.
    let other = host_credential(&s, "other");
    let (status, _) = raw_request(
        "POST",
        &format!(
            "{}/shoal/v1/identity/{sub}/{rg}/probe/{}?resource=https://management.azure.com/",
            s.endpoint(),
            inst.id
        ),
        None,
        "application/json",
        Some(&other),
    )
    .expect("identity call");
    assert_eq!(
        status, 403,
        "another host's credential got the instance's token"
    );
}
