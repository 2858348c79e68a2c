//! A minimal QMP (QEMU Machine Protocol) client: one short session per command over the
//! VM's unix socket — greeting, `qmp_capabilities`, the command, its answer.
//!
//! QMP speaks one JSON object per line; asynchronous events (`{"event": …}`) may arrive
//! between a command and its answer and are skipped.

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("Cannot reach QEMU's control socket {path}")]
    Connect {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("QEMU's control socket broke off")]
    Io(#[source] io::Error),
    #[error("QEMU did not answer within {0:?}")]
    Timeout(Duration),
    #[error("QEMU refused {command}: {message}")]
    Refused { command: String, message: String },
    #[error("QEMU answered something that is not QMP: {0}")]
    Protocol(String),
}

/// Runs `command` (with `arguments`) and returns its `return` value.
pub async fn execute(
    socket: &Path,
    command: &str,
    arguments: Option<Value>,
    timeout: Duration,
) -> Result<Value, QmpError> {
    tokio::time::timeout(timeout, session(socket, command, arguments))
        .await
        .map_err(|_| QmpError::Timeout(timeout))?
}

/// `human-monitor-command`: an HMP command line, answered as text.
pub async fn hmp(socket: &Path, line: &str, timeout: Duration) -> Result<String, QmpError> {
    let v = execute(
        socket,
        "human-monitor-command",
        Some(json!({ "command-line": line })),
        timeout,
    )
    .await?;
    Ok(v.as_str().unwrap_or_default().to_string())
}

async fn session(
    socket: &Path,
    command: &str,
    arguments: Option<Value>,
) -> Result<Value, QmpError> {
    let stream = connect(socket).await.map_err(|source| QmpError::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let greeting = next_object(&mut lines).await?;
    if greeting.get("QMP").is_none() {
        return Err(QmpError::Protocol(greeting.to_string()));
    }
    send(&mut write, &json!({"execute": "qmp_capabilities"})).await?;
    answer(&mut lines, "qmp_capabilities").await?;
    let mut request = json!({ "execute": command });
    if let Some(args) = arguments {
        request["arguments"] = args;
    }
    send(&mut write, &request).await?;
    answer(&mut lines, command).await
}

/// Connects to a unix socket. A path longer than `sun_path` (108 bytes; instance
/// directories under a deep data directory get there) is reached through its directory
/// opened as `/proc/self/fd/N`.
async fn connect(socket: &Path) -> io::Result<UnixStream> {
    if socket.as_os_str().len() < 100 {
        return UnixStream::connect(socket).await;
    }
    let (Some(dir), Some(name)) = (socket.parent(), socket.file_name()) else {
        return UnixStream::connect(socket).await;
    };
    let dir = std::fs::File::open(dir)?;
    let short = Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(name);
    let stream = UnixStream::connect(&short).await;
    drop(dir);
    stream
}

async fn send(write: &mut tokio::net::unix::OwnedWriteHalf, v: &Value) -> Result<(), QmpError> {
    let mut line = v.to_string();
    line.push('\n');
    write.write_all(line.as_bytes()).await.map_err(QmpError::Io)
}

type Lines = tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>;

async fn next_object(lines: &mut Lines) -> Result<Value, QmpError> {
    loop {
        let Some(line) = lines.next_line().await.map_err(QmpError::Io)? else {
            return Err(QmpError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "QEMU closed the socket",
            )));
        };
        if line.trim().is_empty() {
            continue;
        }
        return serde_json::from_str(&line).map_err(|_| QmpError::Protocol(line));
    }
}

/// Reads until the answer to `command`, skipping events.
async fn answer(lines: &mut Lines, command: &str) -> Result<Value, QmpError> {
    loop {
        let v = next_object(lines).await?;
        if let Some(r) = v.get("return") {
            return Ok(r.clone());
        }
        if let Some(e) = v.get("error") {
            return Err(QmpError::Refused {
                command: command.to_string(),
                message: e["desc"].as_str().unwrap_or("unknown error").to_string(),
            });
        }
    }
}

/// True when QEMU's user network (`info usernet`) holds an established TCP connection
/// to `guest_port` in the guest: the guest accepted a connection forwarded to it.
pub fn usernet_has_established(info: &str, guest_port: u16) -> bool {
    let port = guest_port.to_string();
    info.lines().any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // Protocol[State] FD SrcAddr SrcPort DstAddr DstPort RecvQ SendQ
        f.len() >= 6 && f[0] == "TCP[ESTABLISHED]" && f[5] == port
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "Hub -1 (net0):\r\n  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n  TCP[SYN_SENT]      28       127.0.0.1 31000       10.0.2.15  8080     0     0\r\n  TCP[HOST_FORWARD]   9       127.0.0.1 31000       10.0.2.15  8080     0     0\r\n";

    #[test]
    fn only_an_established_connection_to_the_guest_port_counts() {
        assert!(!usernet_has_established(INFO, 8080));
        let up = INFO.replace("TCP[SYN_SENT]", "TCP[ESTABLISHED]");
        assert!(usernet_has_established(&up, 8080));
        assert!(!usernet_has_established(&up, 80));
        assert!(!usernet_has_established("", 8080));
    }

    #[tokio::test]
    async fn a_session_skips_events_and_returns_the_answer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("qmp.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.expect("accept");
            let (r, mut w) = s.into_split();
            let mut lines = BufReader::new(r).lines();
            w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
                .await
                .expect("greet");
            let caps = lines.next_line().await.expect("read").expect("line");
            assert!(caps.contains("qmp_capabilities"));
            w.write_all(b"{\"return\": {}}\n").await.expect("write");
            let cmd = lines.next_line().await.expect("read").expect("line");
            assert!(cmd.contains("system_powerdown"));
            w.write_all(b"{\"event\": \"POWERDOWN\"}\n{\"return\": {}}\n")
                .await
                .expect("write");
        });
        let v = execute(&path, "system_powerdown", None, Duration::from_secs(5))
            .await
            .expect("answer");
        assert_eq!(v, json!({}));
        server.await.expect("server");
        let err = execute(&path, "quit", None, Duration::from_secs(5))
            .await
            .expect_err("nobody listens");
        assert!(matches!(err, QmpError::Connect { .. }), "{err}");
    }
}
