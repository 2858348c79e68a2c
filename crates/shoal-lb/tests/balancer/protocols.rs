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
        let lb = Balancer::new(shutdown.clone());
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
        let shutdown = CancellationToken::new();
        let lb = Balancer::new(shutdown.clone());
        lb.apply(BalancerConfig {
            listeners: vec![http_listener("web", HttpSettings::new("p"))],
            pools: vec![Pool {
                name: "p".into(),
                members: vec![Member::new("closer", member)],
                probe: None,
            }],
        })
        .await
        .unwrap();
        let web = lb.local_addr("web").unwrap();
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
