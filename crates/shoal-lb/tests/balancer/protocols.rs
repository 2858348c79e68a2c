//! Layer 7 beyond plain request/response: `Upgrade` (WebSocket) pass-through, HTTP/2
//! from clients as configured, slow uploads, and members that close keep-alive
//! connections under the balancer.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use shoal_lb::{Balancer, BalancerConfig, HttpSettings, Member, Pool};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// Reads a response head (up to the blank line) from `tcp`.
async fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tcp.read(&mut byte).await.unwrap();
        assert_eq!(n, 1, "connection closed in the head: {head:?}");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_is_passed_through_both_ways() {
    init_tracing();
    let a = Backend::start("a").await;
    let (lb, shutdown, web, _tcp) = front(&[&a]).await;

    let mut tcp = TcpStream::connect(web).await.unwrap();
    tcp.write_all(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let head = bounded("the 101", read_head(&mut tcp)).await;
    let lower = head.to_ascii_lowercase();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(lower.contains("upgrade: websocket"), "{head}");
    assert!(lower.contains("connection: upgrade"), "{head}");
    assert!(
        lower.contains("x-seen-key: dghlihnhbxbszsbub25jzq=="),
        "the member got the client's key: {head}"
    );
    // Bytes both ways, small and large, on the switched connection.
    for size in [5usize, 1 << 20] {
        let sent: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let (mut r, mut w) = tcp.split();
        let (_, got) = bounded("the echo", async {
            tokio::join!(async { w.write_all(&sent).await.unwrap() }, async {
                let mut got = vec![0u8; size];
                r.read_exact(&mut got).await.unwrap();
                got
            })
        })
        .await;
        assert!(got == sent, "{size} bytes echoed unchanged");
    }
    // While the upgraded connection lives, the member counts as in flight (draining
    // waits for it); closing it ends that.
    assert_eq!(lb.stats()[0].active, 1);
    drop(tcp);
    wait_for("the upgraded connection to end", || {
        lb.stats()[0].active == 0
    })
    .await;

    // The same path without Upgrade is a normal request.
    let r = get(web, "/ws").await.unwrap();
    assert_eq!((r.status.as_u16(), r.backend()), (200, "a"));
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_from_clients_is_served_only_when_enabled() {
    init_tracing();
    let a = Backend::start("a").await;
    for enabled in [true, false] {
        let shutdown = CancellationToken::new();
        let lb = Balancer::with_workers(shutdown.clone(), 1).expect("a worker");
        lb.apply(BalancerConfig {
            listeners: vec![http_listener(
                "web",
                HttpSettings {
                    http2: enabled,
                    ..HttpSettings::new("p")
                },
            )],
            pools: vec![pool("p", &[&a], None)],
        })
        .await
        .unwrap();
        let web = lb.local_addr("web").unwrap();
        // Prior knowledge (h2c): the member still gets HTTP/1.1, with a Host header.
        let h2 = async {
            let tcp = TcpStream::connect(web).await?;
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                    .await?;
            tokio::spawn(conn);
            let request = http::Request::get("http://h2.example/echo")
                .body(Full::<Bytes>::default())
                .unwrap();
            let response = sender.send_request(request).await?;
            read_reply(response).await
        };
        let outcome = bounded("the h2 request", h2).await;
        if enabled {
            let r = outcome.unwrap();
            assert_eq!(r.status, 200);
            assert!(r.body.contains("GET /echo\n"), "{}", r.body);
            assert!(r.body.contains("host: h2.example\n"), "{}", r.body);
        } else {
            assert!(outcome.is_err(), "HTTP/2 refused when off: {outcome:?}");
            // HTTP/1.1 still works.
            assert_eq!(get(web, "/").await.unwrap().status, 200);
        }
        shutdown.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_arrives_whole() {
    init_tracing();
    let a = Backend::start("a").await;
    let (_lb, shutdown, web, tcp) = front(&[&a]).await;
    const CHUNK: usize = 16 * 1024;
    const CHUNKS: usize = 12;
    for addr in [web, tcp] {
        // A client trickling its body: one chunk every 100 ms, no Content-Length.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
        tokio::spawn(async move {
            for _ in 0..CHUNKS {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if tx
                    .send(Ok(Frame::data(Bytes::from(vec![1u8; CHUNK]))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        let body = StreamBody::new(tokio_stream_from(rx));
        let request = http::Request::post("/count")
            .header("host", "t")
            .body(body)
            .unwrap();
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let response = bounded("the slow upload", sender.send_request(request))
            .await
            .unwrap();
        let r = read_reply(response).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, format!("a\n{}", CHUNK * CHUNKS), "via {addr}");
    }
    shutdown.cancel();
}

/// A stream of the receiver's items (no extra dependency for one adapter).
fn tokio_stream_from<T>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + Unpin
where
    T: Send + 'static,
{
    Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

/// A balancer with one HTTP listener whose pool is the one member at `member` (no probe).
async fn one_member_front(
    name: &str,
    member: SocketAddr,
) -> (Balancer, CancellationToken, SocketAddr) {
    let shutdown = CancellationToken::new();
    let lb = Balancer::with_workers(shutdown.clone(), 1).expect("a worker");
    lb.apply(BalancerConfig {
        listeners: vec![http_listener("web", HttpSettings::new("p"))],
        pools: vec![Pool {
            name: "p".into(),
            members: vec![Member::new(name, member)],
            probe: None,
        }],
    })
    .await
    .unwrap();
    let web = lb.local_addr("web").unwrap();
    (lb, shutdown, web)
}

/// A member that answers each request on a keep-alive connection (no `Connection:
/// close`) and then, `linger` later, closes that connection without a word, as servers
/// with a short keep-alive timeout do; or that says `Connection: close` (`linger` None).
async fn closing_member(linger: Option<Duration>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // The head, then a body of Content-Length bytes.
                let (head_len, length) = loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (end + 4, length);
                    }
                };
                while buf.len() < head_len + length {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let close = if linger.is_none() {
                    "Connection: close\r\n"
                } else {
                    ""
                };
                let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n{close}\r\ncloser\n");
                let _ = s.write_all(answer.as_bytes()).await;
                if let Some(linger) = linger {
                    tokio::time::sleep(linger).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_closing_keep_alive_connections_fail_no_request() {
    init_tracing();
    for linger in [None, Some(Duration::from_millis(10)), Some(Duration::ZERO)] {
        let member = closing_member(linger).await;
        let (_lb, shutdown, web) = one_member_front("closer", member).await;
        let mut client = KeepAlive::new(web);
        let mut failed = Vec::new();
        for i in 0..40 {
            // GETs on one keep-alive client connection and POSTs (not retried once
            // sent), with pauses that let the member's close arrive first, or not.
            let outcome = if i % 2 == 0 {
                client.get("/").await.map(|r| (r.status.as_u16(), r.body))
            } else {
                let post = http::Request::post("/")
                    .header("host", "t")
                    .body(Full::from("payload"))
                    .unwrap();
                send(web, post).await.map(|r| (r.status.as_u16(), r.body))
            };
            match outcome {
                Ok((200, body)) if body == "closer\n" => {}
                other => failed.push((i, format!("{other:?}"))),
            }
            if i % 3 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        assert!(failed.is_empty(), "linger {linger:?}: failed {failed:?}");
        shutdown.cancel();
    }
}

/// A member that answers at once and echoes each piece of the body as it reads it (a
/// chunk per read), ending when Content-Length bytes have come.
async fn echoing_member() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 64 * 1024];
                let (head_len, length) = loop {
                    let n = match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (end + 4, length);
                    }
                };
                let answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
                if s.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                let mut echoed = 0;
                let mut pending = buf.split_off(head_len);
                loop {
                    if !pending.is_empty() {
                        let mut piece = format!("{:x}\r\n", pending.len()).into_bytes();
                        piece.extend_from_slice(&pending);
                        piece.extend_from_slice(b"\r\n");
                        echoed += pending.len();
                        pending.clear();
                        if s.write_all(&piece).await.is_err() {
                            return;
                        }
                    }
                    if echoed >= length {
                        let _ = s.write_all(b"0\r\n\r\n").await;
                        return;
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => pending.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

/// A member that answers while the upload is still coming (and whose answer ends only
/// when the upload does) gets the whole body, and the client gets the whole echo: the
/// balancer moves both directions at once. The client speaks HTTP/1.0, so it gets the
/// chunked answer as plain data up to the close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_answering_during_the_upload_echoes_all_of_it() {
    init_tracing();
    let member = echoing_member().await;
    let (_lb, shutdown, web) = one_member_front("echo", member).await;
    let data: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
    let tcp = TcpStream::connect(web).await.unwrap();
    let (mut read, mut write) = tcp.into_split();
    let head = format!(
        "POST /echo HTTP/1.0\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        data.len()
    );
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        write.write_all(head.as_bytes()).await.unwrap();
        for piece in sent.chunks(64 * 1024) {
            write.write_all(piece).await.unwrap();
        }
        write
    });
    let mut answer = Vec::new();
    bounded("the echo", read.read_to_end(&mut answer))
        .await
        .unwrap();
    let _write = writer.await.unwrap();
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    let head = String::from_utf8_lossy(&answer[..end]).to_string();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    assert!(
        answer[end..] == data[..],
        "the 8 MiB came back unchanged ({} bytes)",
        answer.len() - end
    );
    shutdown.cancel();
}

/// Requests sent back to back on one connection (pipelined) are answered in order, the
/// last one's `Connection: close` is honoured, and a client that asks for `100
/// Continue` gets it before it sends its body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_and_expect_continue_are_answered() {
    init_tracing();
    let a = Backend::start("a").await;
    let (_lb, shutdown, web, _tcp) = front(&[&a]).await;

    let mut tcp = TcpStream::connect(web).await.unwrap();
    tcp.write_all(
        b"GET /echo?n=1 HTTP/1.1\r\nHost: t\r\n\r\nPOST /echo?n=2 HTTP/1.1\r\nHost: t\r\n\
          Content-Length: 5\r\n\r\nhelloGET /echo?n=3 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = String::new();
    bounded("three answers and a close", tcp.read_to_string(&mut answer))
        .await
        .unwrap();
    assert_eq!(answer.matches("HTTP/1.1 200 OK\r\n").count(), 3, "{answer}");
    let at = |s: &str| answer.find(s).unwrap_or_else(|| panic!("{s} in {answer}"));
    assert!(
        at("GET /echo?n=1") < at("POST /echo?n=2") && at("POST /echo?n=2") < at("GET /echo?n=3")
    );
    assert!(answer.contains("body: hello\n"), "{answer}");

    let mut tcp = TcpStream::connect(web).await.unwrap();
    tcp.write_all(b"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let head = bounded("100 Continue", read_head(&mut tcp)).await;
    assert!(head.starts_with("HTTP/1.1 100 Continue\r\n"), "{head}");
    tcp.write_all(&[7u8; 100_000]).await.unwrap();
    let head = bounded("the answer", read_head(&mut tcp)).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let mut body = vec![0u8; "a\n100000".len()];
    tcp.read_exact(&mut body).await.unwrap();
    assert_eq!(body, b"a\n100000");
    shutdown.cancel();
}

/// Requests the balancer cannot pass on safely get a 4xx or 501 and a closed connection,
/// never reach a member, and do not disturb the next client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_ambiguous_requests_are_refused_before_any_member() {
    init_tracing();
    let a = Backend::start("a").await;
    let (_lb, shutdown, web, _tcp) = front(&[&a]).await;
    let hits_before = a.hits.load(std::sync::atomic::Ordering::SeqCst);
    let many: String = (0..150).map(|i| format!("X-{i}: 1\r\n")).collect();
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "x".repeat(70_000)
    );
    let cases: Vec<(String, &str)> = vec![
        (
            "GET / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n".into(),
            "400",
        ),
        (
            "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                .into(),
            "400",
        ),
        (
            "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
                .into(),
            "400",
        ),
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".into(), "400"),
        ("GET nopath HTTP/1.1\r\nHost: t\r\n\r\n".into(), "400"),
        ("\u{1}\u{2}garbage\r\n\r\n".into(), "400"),
        (format!("GET / HTTP/1.1\r\nHost: t\r\n{many}\r\n"), "431"),
        (huge, "431"),
        ("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n".into(), "501"),
        (
            "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n".into(),
            "501",
        ),
    ];
    let refused = |request: String, status: &'static str| async move {
        let mut tcp = TcpStream::connect(web).await.unwrap();
        let _ = tcp.write_all(request.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = bounded("the refusal and close", tcp.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let first: String = request.chars().take(40).collect();
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{first:?} -> {answer}"
        );
    };
    for (request, status) in cases {
        refused(request, status).await;
    }
    assert_eq!(
        a.hits.load(std::sync::atomic::Ordering::SeqCst),
        hits_before,
        "no refused request reached the member"
    );
    // A chunked body streams: a bad chunk is found once the member may have the head,
    // and the client gets a 400 all the same.
    let bad_chunk = "POST /count HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
    refused(bad_chunk.into(), "400").await;
    assert_eq!(get(web, "/").await.unwrap().backend(), "a");
    shutdown.cancel();
}
