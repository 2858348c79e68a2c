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
//! | `POST /echo` | the request body back (up to 64 MiB; `Content-Length` or chunked) |
//! | `GET /big?mb=N` | N MiB of `x` (at most 256) |
//! | `GET /ws` with `Upgrade: websocket` | a WebSocket (RFC 6455) echoing every message |
//!
//! SIGTERM ends it at once (the default signal behaviour).
//!
//! A custom-data line `idle-close-ms=N` makes it close a kept-alive connection idle for N
//! ms (default 120 s), as servers with a short keep-alive timeout do.
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
/// Largest body `POST /echo` sends back, and largest WebSocket message.
const MAX_ECHO: u64 = 64 * 1024 * 1024;
/// Upper bound for `/big?mb=`.
const MAX_BIG_MB: u64 = 256;
/// Upper bound for `/work?ms=`.
const MAX_WORK_MS: u64 = 60_000;

struct App {
    instance: String,
    healthy: AtomicBool,
    /// How long a kept-alive connection may sit idle before it is closed (custom data
    /// `idle-close-ms=N`, as servers with a short keep-alive timeout do); default 120 s.
    idle: Duration,
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
        idle: custom_setting("idle-close-ms")
            .and_then(|v| v.parse().ok())
            .map_or(Duration::from_secs(120), Duration::from_millis),
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
    chunked: bool,
    /// `Upgrade: websocket` with its `Sec-WebSocket-Key`.
    websocket_key: Option<String>,
}

/// Serves requests on one connection until the peer closes or asks to.
fn serve(app: &App, stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(app.idle))?;
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
        let limit = if req.path == "/echo" {
            MAX_ECHO
        } else {
            MAX_BODY
        };
        if req.content_length > limit {
            respond(&mut out, 413, "body too large\n", false)?;
            return Ok(());
        }
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/ws") if req.websocket_key.is_some() => {
                let key = req.websocket_key.as_deref().unwrap_or_default();
                return websocket(&mut reader, &mut out, key);
            }
            ("POST", "/echo") if !req.chunked => {
                // Streamed back as it arrives: any size up to the limit, little memory.
                write_head(&mut out, 200, req.content_length, req.keep_alive)?;
                io::copy(&mut (&mut reader).take(req.content_length), &mut out)?;
                out.flush()?;
                if !req.keep_alive {
                    return Ok(());
                }
                continue;
            }
            _ => {}
        }
        let body = if req.chunked {
            match read_chunked(&mut reader, limit)? {
                Some(body) => body,
                None => {
                    respond(&mut out, 400, "bad chunked body or too large\n", false)?;
                    return Ok(());
                }
            }
        } else {
            io::copy(&mut (&mut reader).take(req.content_length), &mut io::sink())?;
            Vec::new()
        };
        if req.method == "POST" && req.path == "/echo" {
            respond(&mut out, 200, &body, req.keep_alive)?;
            if !req.keep_alive {
                return Ok(());
            }
            continue;
        }
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
        chunked: false,
        websocket_key: None,
    };
    let mut upgrade_websocket = false;
    let mut key = None;
    loop {
        let mut header = String::new();
        let n = reader.take(MAX_HEAD as u64).read_line(&mut header)?;
        total += n;
        if n == 0 || total > MAX_HEAD {
            return Ok(Some(Err("request head too large or truncated\n")));
        }
        let header = header.trim_end();
        if header.is_empty() {
            if upgrade_websocket {
                req.websocket_key = key;
            }
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
            if !value.eq_ignore_ascii_case("chunked") {
                return Ok(Some(Err("only chunked transfer-encoding is supported\n")));
            }
            req.chunked = true;
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade_websocket = value.eq_ignore_ascii_case("websocket");
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            key = Some(value.to_owned());
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
        ("GET", "/big") => {
            let mb = query_param(&req.query, "mb")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1)
                .min(MAX_BIG_MB);
            (200, vec![b'x'; (mb << 20) as usize])
        }
        (
            _,
            "/" | "/health" | "/fail" | "/recover" | "/work" | "/custom-data" | "/env" | "/big"
            | "/echo" | "/ws",
        ) => (405, b"method not allowed\n".to_vec()),
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

/// A response head for a body of `length` bytes that follows.
fn write_head(out: &mut TcpStream, status: u16, length: u64, keep_alive: bool) -> io::Result<()> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    write!(
        out,
        "HTTP/1.1 {status} OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {length}\r\nConnection: {connection}\r\n\r\n"
    )
}

/// A chunked body (RFC 9112 §7.1), trailers skipped; `None` when malformed or larger
/// than `limit`.
fn read_chunked(reader: &mut impl BufRead, limit: u64) -> io::Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        reader.take(1024).read_line(&mut line)?;
        let size = line.trim_end().split(';').next().unwrap_or("");
        let Ok(size) = u64::from_str_radix(size.trim(), 16) else {
            return Ok(None);
        };
        if body.len() as u64 + size > limit {
            return Ok(None);
        }
        if size == 0 {
            // Trailers, up to the blank line.
            loop {
                line.clear();
                if reader.take(MAX_HEAD as u64).read_line(&mut line)? == 0
                    || line.trim_end().is_empty()
                {
                    return Ok(Some(body));
                }
            }
        }
        let start = body.len();
        body.resize(start + size as usize, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Ok(None);
        }
    }
}

/// Answers a WebSocket handshake and echoes every data message (text or binary, in one
/// or more frames) until the client closes; answers pings.
fn websocket(reader: &mut impl BufRead, out: &mut TcpStream, key: &str) -> io::Result<()> {
    const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let accept = base64(&sha1(format!("{key}{GUID}").as_bytes()));
    write!(
        out,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )?;
    out.flush()?;
    let mut message = Vec::new();
    let mut message_opcode = 0u8;
    loop {
        let mut head = [0u8; 2];
        if reader.read_exact(&mut head).is_err() {
            return Ok(());
        }
        let fin = head[0] & 0x80 != 0;
        let opcode = head[0] & 0x0f;
        let masked = head[1] & 0x80 != 0;
        let len = match head[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                reader.read_exact(&mut b)?;
                u64::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                reader.read_exact(&mut b)?;
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        if !masked || message.len() as u64 + len > MAX_ECHO {
            // Clients must mask (RFC 6455 §5.1); 1002 protocol error / 1009 too big.
            let code: u16 = if masked { 1009 } else { 1002 };
            return ws_frame(out, 0x8, &code.to_be_bytes());
        }
        let mut mask = [0u8; 4];
        reader.read_exact(&mut mask)?;
        let mut payload = vec![0u8; len as usize];
        reader.read_exact(&mut payload)?;
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        match opcode {
            0x8 => return ws_frame(out, 0x8, &payload),
            0x9 => ws_frame(out, 0xA, &payload)?,
            0xA => {}
            0x0..=0x2 => {
                if opcode != 0 {
                    message_opcode = opcode;
                }
                message.extend_from_slice(&payload);
                if fin {
                    ws_frame(out, message_opcode, &message)?;
                    message.clear();
                }
            }
            _ => return ws_frame(out, 0x8, &1002u16.to_be_bytes()),
        }
    }
}

/// One unmasked, final frame from the server.
fn ws_frame(out: &mut TcpStream, opcode: u8, payload: &[u8]) -> io::Result<()> {
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(n as u8),
        n if n <= 0xffff => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    out.write_all(&frame)?;
    out.flush()
}

/// SHA-1 (FIPS 180-4), for the WebSocket handshake only.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, x) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
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
    custom_setting("terminate-log")
}

/// The value of a `NAME=value` line of the custom data, if any.
fn custom_setting(name: &str) -> Option<String> {
    let text = std::fs::read_to_string(std::env::var_os("SHOAL_CUSTOM_DATA")?).ok()?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix('='))
        .map(|v| v.trim().to_owned())
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
                    // One write per line: several instances append to the same file,
                    // and `writeln!` would write the pieces of the line one by one.
                    let line = format!("instance {instance} saw Terminate {id}\n");
                    let _ = f.write_all(line.as_bytes());
                }
                let approve = format!("{{\"StartRequests\":[{{\"EventId\":\"{id}\"}}]}}");
                let _ = metadata_call("POST", &url, &approve);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_websocket_accept_key_of_rfc_6455() {
        // RFC 6455 §1.3's example.
        let key = "dGhlIHNhbXBsZSBub25jZQ==258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
        assert_eq!(
            base64(&sha1(key.as_bytes())),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
        // FIPS 180 test vector.
        assert_eq!(
            sha1(b"abc"),
            [
                0xa9, 0x99, 0x3e, 0x36, 0x47, 0x06, 0x81, 0x6a, 0xba, 0x3e, 0x25, 0x71, 0x78, 0x50,
                0xc2, 0x6c, 0x9c, 0xd0, 0xd8, 0x9d
            ]
        );
    }

    #[test]
    fn chunked_bodies_are_read_and_bad_ones_refused() {
        let mut ok =
            io::Cursor::new(b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\n".to_vec());
        assert_eq!(read_chunked(&mut ok, 100).unwrap().unwrap(), b"hello world");
        let mut big = io::Cursor::new(b"ff\r\n".to_vec());
        assert!(read_chunked(&mut big, 10).unwrap().is_none());
        let mut bad = io::Cursor::new(b"zz\r\n".to_vec());
        assert!(read_chunked(&mut bad, 10).unwrap().is_none());
    }
}
