//! Issue 11 through the real `shoal` CLI: `shoal ad sp create-for-rbac` makes a service
//! principal with a role at a scope, `shoal login` keeps its credential for later commands,
//! the role decides what they may do, and a reset or deleted secret no longer signs in.

use std::process::{Command, Output, Stdio};

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
