//! `shoal-web`: a tiny HTTP/1.1 workload for Shoal's tests, demos and benchmarks.
//!
//! Standard library only, one thread per connection, keep-alive. It reads its identity
//! from the environment a Shoal driver gives every instance (`PORT`, `SHOAL_INSTANCE_ID`,
//! `SHOAL_CUSTOM_DATA`, …) and answers:
//!
//! | request | answer |
//! |---|---|
//! | `GET /` | `instance N` |
//! | `GET /health` | `ok` (200), or 503 after `POST /fail` until `POST /recover` |
//! | `GET /work?ms=N` | burns CPU for N ms (at most 60 s), then answers |
//! | `GET /custom-data` | the file at `$SHOAL_CUSTOM_DATA` (404 when there is none) |
//! | `GET /env` | a few diagnostics, and the CPU and memory limits of its own cgroup |
//!
//! SIGTERM ends it at once (the default signal behaviour).
//!
//! When its custom data holds a line `terminate-log=PATH`, it also watches Azure-style
//! scheduled events at `$SHOAL_METADATA_ENDPOINT/metadata/scheduledevents`: on a
//! `Terminate` event it appends `instance N saw Terminate` to PATH and approves the event
//! (what a well-behaved application does before it is deleted).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
// A std-only workload has no tokio clock; it measures real CPU time on purpose.
use std::time::Duration;
#[allow(clippy::disallowed_types)]
use std::time::Instant;

/// Longest request head (request line + headers) we accept.
const MAX_HEAD: usize = 16 * 1024;
/// Largest request body we read (and discard).
const MAX_BODY: u64 = 1024 * 1024;
/// Upper bound for `/work?ms=`.
const MAX_WORK_MS: u64 = 60_000;

struct App {
    instance: String,
    healthy: AtomicBool,
}

fn main() {
    let port = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(8080);
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("shoal-web: cannot listen on 0.0.0.0:{port}: {e}");
            std::process::exit(1);
        }
    };
    let app = Arc::new(App {
        instance: std::env::var("SHOAL_INSTANCE_ID").unwrap_or_else(|_| "0".to_owned()),
        healthy: AtomicBool::new(true),
    });
    println!(
        "shoal-web: instance {} listening on 0.0.0.0:{port}",
        app.instance
    );
    if let Some(log) = terminate_log() {
        let instance = app.instance.clone();
        let _ = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || watch_events(&instance, &log));
    }
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let app = Arc::clone(&app);
                let spawned = std::thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        let _ = serve(&app, stream);
                    });
                if let Err(e) = spawned {
                    eprintln!("shoal-web: cannot spawn a connection thread: {e}");
                }
            }
            Err(e) => {
                eprintln!("shoal-web: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// One parsed request head.
struct Request {
    method: String,
    path: String,
    query: String,
    keep_alive: bool,
    content_length: u64,
}

/// Serves requests on one connection until the peer closes or asks to.
fn serve(app: &App, stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let req = match read_head(&mut reader)? {
            Some(Ok(req)) => req,
            Some(Err(msg)) => {
                respond(&mut out, 400, msg, false)?;
                return Ok(());
            }
            None => return Ok(()),
        };
        if req.content_length > MAX_BODY {
            respond(&mut out, 413, "body too large\n", false)?;
            return Ok(());
        }
        io::copy(&mut (&mut reader).take(req.content_length), &mut io::sink())?;
        let (status, body) = route(app, &req);
        respond(&mut out, status, &body, req.keep_alive)?;
        if !req.keep_alive {
            return Ok(());
        }
    }
}

/// Reads a request head; `None` when the peer closed the connection cleanly.
fn read_head(reader: &mut impl BufRead) -> io::Result<Option<Result<Request, &'static str>>> {
    let mut line = String::new();
    let mut total = 0;
    // Skip empty lines before a request line (RFC 9112 §2.2).
    loop {
        line.clear();
        let n = reader.take(MAX_HEAD as u64).read_line(&mut line)?;
        if n == 0 {
            return Ok(None);
        }
        total += n;
        if !line.trim().is_empty() {
            break;
        }
        if total > MAX_HEAD {
            return Ok(Some(Err("request head too large\n")));
        }
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Ok(Some(Err("malformed request line\n")));
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut req = Request {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        keep_alive: version == "HTTP/1.1",
        content_length: 0,
    };
    loop {
        let mut header = String::new();
        let n = reader.take(MAX_HEAD as u64).read_line(&mut header)?;
        total += n;
        if n == 0 || total > MAX_HEAD {
            return Ok(Some(Err("request head too large or truncated\n")));
        }
        let header = header.trim_end();
        if header.is_empty() {
            return Ok(Some(Ok(req)));
        }
        let Some((name, value)) = header.split_once(':') else {
            return Ok(Some(Err("malformed header\n")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            match value.parse() {
                Ok(len) => req.content_length = len,
                Err(_) => return Ok(Some(Err("bad content-length\n"))),
            }
        } else if name.eq_ignore_ascii_case("connection") {
            if value.eq_ignore_ascii_case("close") {
                req.keep_alive = false;
            } else if value.eq_ignore_ascii_case("keep-alive") {
                req.keep_alive = true;
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Ok(Some(Err("chunked bodies are not supported\n")));
        }
    }
}

/// Chooses the answer for one request.
fn route(app: &App, req: &Request) -> (u16, Vec<u8>) {
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/") => (200, format!("instance {}\n", app.instance).into_bytes()),
        ("GET", "/health") => {
            if app.healthy.load(Ordering::Relaxed) {
                (200, b"ok\n".to_vec())
            } else {
                (503, b"failing\n".to_vec())
            }
        }
        ("POST", "/fail") => {
            app.healthy.store(false, Ordering::Relaxed);
            (200, b"failing\n".to_vec())
        }
        ("POST", "/recover") => {
            app.healthy.store(true, Ordering::Relaxed);
            (200, b"ok\n".to_vec())
        }
        ("GET", "/work") => {
            let ms = query_param(&req.query, "ms")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(100);
            let ms = ms.min(MAX_WORK_MS);
            let spins = burn(Duration::from_millis(ms));
            (
                200,
                format!(
                    "worked {ms} ms ({spins} rounds) on instance {}\n",
                    app.instance
                )
                .into_bytes(),
            )
        }
        ("GET", "/custom-data") => match std::env::var_os("SHOAL_CUSTOM_DATA") {
            Some(path) if !path.is_empty() => match std::fs::read(&path) {
                Ok(data) => (200, data),
                Err(_) => (404, b"no custom data\n".to_vec()),
            },
            _ => (404, b"no custom data\n".to_vec()),
        },
        ("GET", "/env") => (200, diagnostics(app).into_bytes()),
        (_, "/" | "/health" | "/fail" | "/recover" | "/work" | "/custom-data" | "/env") => {
            (405, b"method not allowed\n".to_vec())
        }
        _ => (404, b"not found\n".to_vec()),
    }
}

/// Spins on the CPU until `how_long` has passed; returns the number of rounds.
#[allow(clippy::disallowed_types)]
fn burn(how_long: Duration) -> u64 {
    let start = Instant::now();
    let mut rounds = 0u64;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while start.elapsed() < how_long {
        for _ in 0..1000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        rounds = rounds.wrapping_add(1);
    }
    std::hint::black_box(x);
    rounds
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn diagnostics(app: &App) -> String {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let (cpu, memory) = cgroup_limits();
    format!(
        "instance={}\nvmss={}\nprivate_ip={}\nport={}\nmetadata_endpoint={}\ncustom_data={}\npid={}\ncwd={}\nhealthy={}\ncpu_limit={cpu}\nmemory_limit_bytes={memory}\n",
        app.instance,
        var("SHOAL_VMSS"),
        var("SHOAL_PRIVATE_IP"),
        var("PORT"),
        var("SHOAL_METADATA_ENDPOINT"),
        var("SHOAL_CUSTOM_DATA"),
        std::process::id(),
        cwd,
        app.healthy.load(Ordering::Relaxed),
    )
}

/// The CPU limit (in CPUs, e.g. `2`, or `max`) and memory limit (bytes, or `max`) of this
/// process's cgroup, cgroup v2 (`cpu.max`, `memory.max`) or v1 (`cpu.cfs_quota_us` /
/// `cpu.cfs_period_us`, `memory.limit_in_bytes`); `unknown` where there is none to read.
fn cgroup_limits() -> (String, String) {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let read = |path: String| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .ok()
    };
    let mut cpu = None;
    let mut memory = None;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let has = |c: &str| controllers.split(',').any(|x| x == c);
        if controllers.is_empty() {
            // cgroup v2: one unified hierarchy.
            let dir = format!("/sys/fs/cgroup{path}");
            cpu = cpu.or_else(|| {
                read(format!("{dir}/cpu.max")).map(|v| {
                    let mut f = v.split_whitespace();
                    match (f.next(), f.next().and_then(|p| p.parse::<f64>().ok())) {
                        (Some(q), Some(period)) if q != "max" => q
                            .parse::<f64>()
                            .map_or("max".into(), |q| format!("{}", q / period)),
                        _ => "max".into(),
                    }
                })
            });
            memory = memory.or_else(|| read(format!("{dir}/memory.max")));
        } else if has("cpu") {
            let dir = format!("/sys/fs/cgroup/{controllers}{path}");
            let dir = if std::path::Path::new(&dir).exists() {
                dir
            } else {
                format!("/sys/fs/cgroup/cpu{path}")
            };
            let quota = read(format!("{dir}/cpu.cfs_quota_us")).and_then(|q| q.parse::<f64>().ok());
            let period =
                read(format!("{dir}/cpu.cfs_period_us")).and_then(|p| p.parse::<f64>().ok());
            cpu = match (quota, period) {
                (Some(q), Some(p)) if q > 0.0 && p > 0.0 => Some(format!("{}", q / p)),
                (Some(_), Some(_)) => Some("max".into()),
                _ => cpu,
            };
        } else if has("memory") {
            memory = read(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"));
        }
    }
    (
        cpu.unwrap_or_else(|| "unknown".into()),
        memory.unwrap_or_else(|| "unknown".into()),
    )
}

fn respond(
    out: &mut TcpStream,
    status: u16,
    body: impl AsRef<[u8]>,
    keep_alive: bool,
) -> io::Result<()> {
    let body = body.as_ref();
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
        body.len()
    );
    let mut buf = Vec::with_capacity(head.len() + body.len());
    buf.extend_from_slice(head.as_bytes());
    buf.extend_from_slice(body);
    out.write_all(&buf)?;
    out.flush()
}

/// `terminate-log=PATH` from the custom data, if any.
fn terminate_log() -> Option<String> {
    let text = std::fs::read_to_string(std::env::var_os("SHOAL_CUSTOM_DATA")?).ok()?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("terminate-log="))
        .map(|p| p.trim().to_owned())
}

/// A one-shot HTTP/1.0 exchange with the metadata endpoint: (status, body).
fn metadata_call(method: &str, url: &str, body: &str) -> Option<(u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}")))?;
    let mut s = TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\nMetadata: true\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// Polls scheduled events; logs and approves every `Terminate` once.
fn watch_events(instance: &str, log: &str) {
    let Ok(base) = std::env::var("SHOAL_METADATA_ENDPOINT") else {
        return;
    };
    let url = format!("{base}/metadata/scheduledevents");
    let mut seen: Vec<String> = Vec::new();
    loop {
        if let Some((200, body)) = metadata_call("GET", &url, "") {
            // Pick the ids of Terminate events without a JSON parser: one chunk per
            // event object, fields in any order.
            for event in body.split("},{") {
                let Some(id) = event
                    .split("\"EventId\":\"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                else {
                    continue;
                };
                if !event.contains("\"EventType\":\"Terminate\"") || seen.iter().any(|s| s == id) {
                    continue;
                }
                seen.push(id.to_owned());
                if let Ok(mut f) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                {
                    let _ = writeln!(f, "instance {instance} saw Terminate {id}");
                }
                let approve = format!("{{\"StartRequests\":[{{\"EventId\":\"{id}\"}}]}}");
                let _ = metadata_call("POST", &url, &approve);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
