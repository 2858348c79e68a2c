//! The client against a scripted fake of the Shoal API on 127.0.0.1: long-running
//! operations, paging, ARM errors, an unreachable server, the bundle upload and log
//! streaming, checked by what the user sees (stdout, the error text) and what the server
//! received.

// A failed unwrap is how these tests report a failure.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use clap::Parser;
use serde_json::{json, Value};
use shoal_cli::output::Printer;
use shoal_cli::progress::StatusLine;
use shoal_cli::{error_text, run_with, Cli, ClientOptions, OutputFormat};

const SUB: &str = "00000000-0000-0000-0000-000000000000";

/// One canned answer. `{base}` in headers and body becomes the server's base URL.
#[derive(Clone)]
struct Canned {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Option<Value>,
    raw: Option<&'static str>,
}

fn ok(body: Value) -> Canned {
    Canned {
        status: 200,
        headers: vec![],
        body: Some(body),
        raw: None,
    }
}

fn status(status: u16, body: Option<Value>) -> Canned {
    Canned {
        status,
        headers: vec![],
        body,
        raw: None,
    }
}

impl Canned {
    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }
}

/// What the fake received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Default)]
struct Script {
    /// "METHOD /path" → answers in order; the last one repeats.
    answers: HashMap<String, VecDeque<Canned>>,
    seen: Vec<Seen>,
}

#[derive(Clone)]
struct Fake {
    script: Arc<Mutex<Script>>,
    base: String,
}

impl Fake {
    async fn start() -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let fake = Fake {
            script: Arc::default(),
            base,
        };
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    fn on(&self, method: &str, path: &str, answers: Vec<Canned>) {
        self.script
            .lock()
            .unwrap()
            .answers
            .insert(format!("{method} {path}"), answers.into());
    }

    fn seen(&self) -> Vec<Seen> {
        self.script.lock().unwrap().seen.clone()
    }

    fn options(&self, output: OutputFormat) -> ClientOptions {
        let mut options = ClientOptions::new(self.base.parse().unwrap());
        options.output = output;
        // A token as it is: the fake server checks that every request carries it.
        options.access_token = Some("shoal".into());
        options
    }

    /// Runs one command line against the fake; returns stdout and the error text.
    async fn run(&self, line: &str, output: OutputFormat) -> (String, Option<String>) {
        let args = std::iter::once("shoal").chain(line.split_whitespace());
        let cli = Cli::try_parse_from(args).unwrap();
        let (printer, buffer) = Printer::buffer(output);
        let result = run_with(&self.options(output), cli.command, &printer).await;
        let stdout = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        (stdout, result.err().map(|e| error_text(&e)))
    }
}

async fn answer(State(fake): State<Fake>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let key = format!("{} {}", parts.method, parts.uri.path());
    let mut script = fake.script.lock().unwrap();
    script.seen.push(Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: parts.headers.clone(),
        body,
    });
    let Some(queue) = script.answers.get_mut(&key) else {
        let body = json!({"error": {"code": "NoRoute", "message": format!("the fake has no answer for {key}")}});
        return (StatusCode::NOT_FOUND, axum::Json(body)).into_response();
    };
    let canned = if queue.len() > 1 {
        queue.pop_front().unwrap()
    } else {
        queue[0].clone()
    };
    let mut response = match (&canned.body, canned.raw) {
        (Some(body), _) => {
            let text = body.to_string().replace("{base}", &fake.base);
            ([("content-type", "application/json")], text).into_response()
        }
        (None, Some(raw)) => raw.into_response(),
        (None, None) => ().into_response(),
    };
    *response.status_mut() = StatusCode::from_u16(canned.status).unwrap();
    for (name, value) in canned.headers {
        let value = value.replace("{base}", &fake.base);
        response
            .headers_mut()
            .insert(name, HeaderValue::from_str(&value).unwrap());
    }
    response
}

fn vmss_path(name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/demo/providers/Microsoft.Compute/virtualMachineScaleSets/{name}")
}

fn group_answer() -> Canned {
    ok(
        json!({"id": format!("/subscriptions/{SUB}/resourceGroups/demo"), "name": "demo", "location": "local",
              "properties": {"provisioningState": "Succeeded"}}),
    )
}

fn operation(status: &str, message: Option<&str>) -> Canned {
    let mut body = json!({"status": status});
    if let Some(message) = message {
        body["shoal"] = json!({"message": message});
    }
    ok(body).header("retry-after", "0")
}

#[tokio::test]
async fn vmss_create_waits_for_its_operation_then_prints_the_final_resource() {
    let fake = Fake::start().await;
    let path = vmss_path("web");
    fake.on(
        "GET",
        &format!("/subscriptions/{SUB}/resourcegroups/demo"),
        vec![group_answer()],
    );
    fake.on(
        "PUT",
        &path,
        vec![status(
            201,
            Some(json!({"name": "web", "properties": {"provisioningState": "Creating"}})),
        )
        .header(
            "azure-asyncoperation",
            "{base}/ops/1?api-version=2024-07-01",
        )
        .header("retry-after", "0")],
    );
    fake.on(
        "GET",
        "/ops/1",
        vec![
            operation("InProgress", Some("1/3 instances ready")),
            operation("InProgress", Some("3/3 instances ready")),
            operation("Succeeded", None),
        ],
    );
    fake.on(
        "GET",
        &path,
        vec![ok(json!({"name": "web", "location": "local", "sku": {"name": "Shoal_1vCPU_512MB", "capacity": 3},
                       "properties": {"provisioningState": "Succeeded"}}))],
    );

    let (stdout, error) = fake
        .run(
            "vmss create -g demo -n web --image apps/web:1.0.0 --instance-count 3 --vm-sku Shoal_1vCPU_512MB",
            OutputFormat::Json,
        )
        .await;
    assert_eq!(error, None);
    let printed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        printed["properties"]["provisioningState"], "Succeeded",
        "the resource read after the operation"
    );

    let seen = fake.seen();
    let order: Vec<String> = seen
        .iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect();
    assert_eq!(
        order,
        [
            format!("GET /subscriptions/{SUB}/resourcegroups/demo"),
            format!("PUT {path}"),
            "GET /ops/1".into(),
            "GET /ops/1".into(),
            "GET /ops/1".into(),
            format!("GET {path}"),
        ]
    );
    for request in &seen {
        assert_eq!(
            request.headers["authorization"], "Bearer shoal",
            "{request:?}"
        );
        assert!(
            request.query.contains("api-version=2024-07-01"),
            "{request:?}"
        );
        assert_eq!(
            request.query.matches("api-version").count(),
            1,
            "{request:?}"
        );
    }
    let put: Value = serde_json::from_slice(&seen[1].body).unwrap();
    assert_eq!(
        put["location"], "local",
        "defaults to the resource group's location"
    );
    assert_eq!(put["sku"]["capacity"], 3);
}

#[tokio::test]
async fn the_progress_line_changes_only_when_the_operation_says_something_new() {
    let fake = Fake::start().await;
    fake.on(
        "GET",
        "/ops/2",
        vec![
            operation("InProgress", Some("1/10 instances ready")),
            operation("InProgress", Some("1/10 instances ready")),
            operation("InProgress", Some("4/10 instances ready")),
            ok(json!({"status": "Succeeded", "shoal": {"message": "10/10 instances ready"}})),
        ],
    );
    let client = shoal_cli::Client::new(&fake.options(OutputFormat::Json)).unwrap();
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let mut line = StatusLine::new(Box::new(SharedWriter(buffer.clone())), false);
    let url = format!("{}/ops/2", fake.base).parse().unwrap();
    let done = shoal_cli::lro::wait(&client, url, Some(Duration::ZERO), &mut line)
        .await
        .unwrap();
    assert_eq!(done["status"], "Succeeded");
    let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0], "Running ... (0s)");
    assert!(
        lines[1].starts_with("Running ... 1/10 instances ready ("),
        "{text}"
    );
    assert!(
        lines[2].starts_with("Running ... 4/10 instances ready ("),
        "{text}"
    );
}

struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for SharedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_failed_operation_prints_its_error_and_fails() {
    let fake = Fake::start().await;
    let path = vmss_path("web");
    fake.on(
        "PATCH",
        &path,
        vec![ok(json!({"name": "web"})).header("azure-asyncoperation", "{base}/ops/3")],
    );
    fake.on(
        "GET",
        "/ops/3",
        vec![ok(json!({"status": "Failed", "error": {"code": "InstanceFailed", "message": "Instance 2 exited 3 times in a row"}}))],
    );
    let (stdout, error) = fake
        .run(
            "vmss scale -g demo -n web --new-capacity 3",
            OutputFormat::Json,
        )
        .await;
    assert_eq!(stdout, "");
    assert_eq!(
        error.as_deref(),
        Some("ERROR: (InstanceFailed) Instance 2 exited 3 times in a row\n")
    );
}

#[tokio::test]
async fn arm_errors_print_code_message_and_target() {
    let fake = Fake::start().await;
    fake.on(
        "GET",
        &vmss_path("nope"),
        vec![status(
            404,
            Some(json!({"error": {"code": "ResourceNotFound", "message": "Scale set 'nope' was not found.", "target": "name"}})),
        )],
    );
    let (_, error) = fake
        .run("vmss show -g demo -n nope", OutputFormat::Json)
        .await;
    assert_eq!(
        error.as_deref(),
        Some("ERROR: (ResourceNotFound) Scale set 'nope' was not found.\nTarget: name\n")
    );
}

#[tokio::test]
async fn a_server_that_is_not_there_is_named_with_what_to_do() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let options = ClientOptions::new(format!("http://127.0.0.1:{port}").parse().unwrap());
    let cli = Cli::try_parse_from(["shoal", "group", "list"]).unwrap();
    let (printer, _) = Printer::buffer(OutputFormat::Json);
    let err = run_with(&options, cli.command, &printer).await.unwrap_err();
    assert_eq!(
        error_text(&err),
        format!(
            "ERROR: cannot reach Shoal at http://127.0.0.1:{port}: is `shoal serve` running? \
             (set --endpoint or SHOAL_ENDPOINT)\n"
        )
    );
}

#[tokio::test]
async fn list_instances_follows_next_link_and_prints_the_instances() {
    let fake = Fake::start().await;
    let path = format!("{}/virtualMachines", vmss_path("web"));
    let instance = |id: &str, port: u16| {
        json!({"instanceId": id, "name": format!("web_{id}"), "zones": ["1"], "properties": {
            "provisioningState": "Succeeded", "latestModelApplied": true,
            "shoal": {"powerState": "running", "address": format!("127.0.0.1:{port}")}}})
    };
    fake.on(
        "GET",
        &path,
        vec![
            ok(
                json!({"value": [instance("0", 41000), instance("1", 41001)],
                      "nextLink": format!("{{base}}{path}?api-version=2024-07-01&$skiptoken=2")}),
            ),
            ok(json!({"value": [instance("2", 41002)]})),
        ],
    );
    let (stdout, error) = fake
        .run("vmss list-instances -g demo -n web", OutputFormat::Json)
        .await;
    assert_eq!(error, None);
    let printed: Value = serde_json::from_str(&stdout).unwrap();
    let ids: Vec<&str> = printed
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instanceId"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["0", "1", "2"],
        "a bare array of every page's instances"
    );
    let seen = fake.seen();
    assert_eq!(seen[0].query, "$expand=instanceView&api-version=2024-07-01");
    assert_eq!(
        seen[1].query, "api-version=2024-07-01&$skiptoken=2",
        "the nextLink as given"
    );

    fake.on(
        "GET",
        &path,
        vec![ok(
            json!({"value": [instance("0", 41000), instance("1", 41001)]}),
        )],
    );
    let (table, _) = fake
        .run(
            "vmss list-instances -g demo -n web -o table",
            OutputFormat::Table,
        )
        .await;
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert!(
        rows[2].starts_with("0 ")
            && rows[2].contains("running")
            && rows[2].contains("127.0.0.1:41000"),
        "{table}"
    );
}

#[tokio::test]
async fn actions_wait_silently_and_no_wait_returns_at_once() {
    let fake = Fake::start().await;
    let restart = format!("{}/restart", vmss_path("web"));
    fake.on(
        "POST",
        &restart,
        vec![status(202, None)
            .header("azure-asyncoperation", "{base}/ops/4")
            .header("retry-after", "0")],
    );
    fake.on(
        "GET",
        "/ops/4",
        vec![operation("InProgress", None), operation("Succeeded", None)],
    );
    let (stdout, error) = fake
        .run(
            "vmss restart -g demo -n web --instance-ids 3 4",
            OutputFormat::Json,
        )
        .await;
    assert_eq!((stdout.as_str(), error), ("", None));
    let seen = fake.seen();
    assert_eq!(seen.len(), 3, "the action and two polls");
    let body: Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(body, json!({"instanceIds": ["3", "4"]}));
    assert_eq!(seen[0].headers["content-type"], "application/json");

    let (stdout, error) = fake
        .run("vmss restart -g demo -n web --no-wait", OutputFormat::Json)
        .await;
    assert_eq!((stdout.as_str(), error), ("", None));
    let seen = fake.seen();
    assert_eq!(seen.len(), 4, "no polling with --no-wait");
    assert!(
        seen[3].body.is_empty(),
        "no ids: no body, meaning all instances"
    );
}

#[tokio::test]
async fn image_create_uploads_the_directory_then_puts_gallery_image_and_version() {
    let fake = Fake::start().await;
    let sub_rg = format!("/subscriptions/{SUB}/resourceGroups/demo/providers/Microsoft.Compute");
    fake.on(
        "GET",
        &format!("/subscriptions/{SUB}/resourcegroups/demo"),
        vec![group_answer()],
    );
    fake.on(
        "POST",
        "/shoal/v1/blobs",
        vec![status(201, Some(json!({"blobId": "b-42", "size": 3072})))],
    );
    fake.on(
        "PUT",
        &format!("{sub_rg}/galleries/apps"),
        vec![status(201, Some(json!({"name": "apps"})))],
    );
    fake.on(
        "PUT",
        &format!("{sub_rg}/galleries/apps/images/web"),
        vec![ok(json!({"name": "web"}))],
    );
    let version = format!("{sub_rg}/galleries/apps/images/web/versions/1.0.0");
    fake.on(
        "PUT",
        &version,
        vec![status(
            201,
            Some(json!({"name": "1.0.0", "properties": {"provisioningState": "Creating"}})),
        )
        .header("azure-asyncoperation", "{base}/ops/5")
        .header("retry-after", "0")],
    );
    fake.on("GET", "/ops/5", vec![operation("Succeeded", None)]);
    let not_found = status(
        404,
        Some(json!({"error": {"code": "ResourceNotFound", "message": "No such version"}})),
    );
    let created = ok(json!({"name": "1.0.0", "properties": {"provisioningState": "Succeeded"}}));
    fake.on("GET", &version, vec![not_found, created]);

    let outside = tempfile::tempdir().unwrap();
    std::fs::write(
        outside.path().join("server.sh"),
        "#!/bin/sh\nexec sleep 1000\n",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "hello").unwrap();
    std::os::unix::fs::symlink(outside.path().join("server.sh"), dir.path().join("run.sh"))
        .unwrap();

    let (stdout, error) = fake
        .run(
            &format!(
                "image create -g demo --gallery apps --name web --version 1.0.0 --dir {} --command ./run.sh --port 8081",
                dir.path().display()
            ),
            OutputFormat::Json,
        )
        .await;
    assert_eq!(error, None);
    let printed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(printed["properties"]["provisioningState"], "Succeeded");

    let seen = fake.seen();
    let upload = seen.iter().find(|s| s.path == "/shoal/v1/blobs").unwrap();
    assert_eq!(upload.headers["content-type"], "application/x-tar");
    assert_eq!(upload.headers["authorization"], "Bearer shoal");
    let mut archive = tar::Archive::new(&upload.body[..]);
    let mut files = HashMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut content = String::new();
        entry.read_to_string(&mut content).unwrap();
        files.insert(
            entry.path().unwrap().to_string_lossy().into_owned(),
            content,
        );
    }
    assert_eq!(files["index.html"], "hello");
    assert_eq!(
        files["run.sh"], "#!/bin/sh\nexec sleep 1000\n",
        "the symlink's target was uploaded"
    );

    let put_version = seen
        .iter()
        .find(|s| s.method == "PUT" && s.path == version)
        .unwrap();
    let body: Value = serde_json::from_slice(&put_version.body).unwrap();
    assert_eq!(
        body,
        json!({"location": "local", "properties": {"shoal": {
            "kind": "process", "command": "./run.sh", "port": 8081, "blobId": "b-42"}}})
    );
    let order: Vec<&str> = seen.iter().map(|s| s.method.as_str()).collect();
    assert_eq!(
        order,
        ["GET", "GET", "POST", "PUT", "PUT", "PUT", "GET", "GET"]
    );

    // The same version again: refused before anything is uploaded.
    let (_, error) = fake
        .run(
            &format!(
                "image create -g demo --gallery apps --name web --version 1.0.0 --dir {} --command ./run.sh",
                dir.path().display()
            ),
            OutputFormat::Json,
        )
        .await;
    assert!(error.unwrap().contains("apps/web:1.0.0 already exists"));
    let uploads = fake.seen().iter().filter(|s| s.method == "POST").count();
    assert_eq!(uploads, 1);
}

#[tokio::test]
async fn image_create_with_a_dangling_symlink_uploads_nothing() {
    let fake = Fake::start().await;
    fake.on(
        "GET",
        &format!("/subscriptions/{SUB}/resourcegroups/demo"),
        vec![group_answer()],
    );
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        "../../target/release/shoal-web",
        dir.path().join("shoal-web"),
    )
    .unwrap();
    let (_, error) = fake
        .run(
            &format!(
                "image create -g demo --gallery apps --name web --version 1.0.0 --dir {} --command ./shoal-web",
                dir.path().display()
            ),
            OutputFormat::Json,
        )
        .await;
    assert_eq!(
        error.unwrap(),
        format!(
            "ERROR: {}/shoal-web points to ../../target/release/shoal-web, which does not exist: \
             build it with `cargo build --release`\n",
            dir.path().display()
        )
    );
    assert!(
        fake.seen().iter().all(|s| s.method == "GET"),
        "nothing was uploaded or created"
    );
}

#[tokio::test]
async fn logs_stream_to_stdout() {
    let fake = Fake::start().await;
    let logs = format!("{}/virtualMachines/0/shoal/logs", vmss_path("web"));
    fake.on(
        "GET",
        &logs,
        vec![Canned {
            status: 200,
            headers: vec![],
            body: None,
            raw: Some("listening on 8080\nGET / 200\n"),
        }],
    );
    let (stdout, error) = fake
        .run(
            "vmss logs -g demo -n web --instance-id 0 --tail 5",
            OutputFormat::Json,
        )
        .await;
    assert_eq!(error, None);
    assert_eq!(stdout, "listening on 8080\nGET / 200\n");
    assert_eq!(fake.seen()[0].query, "tail=5&api-version=2024-07-01");
}

#[tokio::test]
async fn group_delete_without_a_terminal_needs_yes() {
    let fake = Fake::start().await;
    let path = format!("/subscriptions/{SUB}/resourcegroups/demo");
    fake.on(
        "DELETE",
        &path,
        vec![status(202, None)
            .header("azure-asyncoperation", "{base}/ops/6")
            .header("retry-after", "0")],
    );
    fake.on("GET", "/ops/6", vec![operation("Succeeded", None)]);
    // The test harness's stdin is not a terminal (CI has none; `cargo test` pipes it).
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        let (_, error) = fake.run("group delete -n demo", OutputFormat::Json).await;
        assert!(error.unwrap().contains("pass --yes"));
        assert!(fake.seen().is_empty());
    }
    let (stdout, error) = fake
        .run("group delete -n demo --yes", OutputFormat::Json)
        .await;
    assert_eq!((stdout.as_str(), error), ("", None));
    assert_eq!(fake.seen().len(), 2);
}
