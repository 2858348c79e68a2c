//! Members that misbehave must not crash or wedge the balancer: each bad answer becomes
//! an error for that request only, and the balancer keeps serving.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use shoal_lb::{Balancer, BalancerConfig, HttpRoute, HttpSettings, Member, Pool};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::support::*;

#[derive(Clone, Copy)]
enum Misbehaviour {
    /// Answers bytes that are not HTTP, then closes.
    Garbage,
    /// Sends a head promising 100 bytes, 10 of them, then closes.
    CloseMidResponse,
    /// Reads the request and never answers.
    NeverAnswers,
    /// Sends a head and 10 bytes, then nothing, forever.
    StallsMidResponse,
    /// Accepts and closes at once (reset or FIN before any byte).
    Hangup,
}

async fn bad_backend(how: Misbehaviour) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                if !matches!(how, Misbehaviour::Hangup) {
                    let _ = s.read(&mut buf).await;
                }
                match how {
                    Misbehaviour::Garbage => {
                        let _ = s.write_all(b"\x00\x01garbage \xff\r\n\r\n").await;
                    }
                    Misbehaviour::CloseMidResponse => {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
                            .await;
                    }
                    Misbehaviour::NeverAnswers => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    Misbehaviour::StallsMidResponse => {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
                            .await;
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    Misbehaviour::Hangup => {
                        let _ = s.set_zero_linger();
                    }
                }
            });
        }
    });
    addr
}

fn route(path: &str, pool: &str) -> HttpRoute {
    HttpRoute {
        host: None,
        path_prefix: Some(path.into()),
        pool: pool.into(),
    }
}

fn bad_pool(name: &str, addr: SocketAddr) -> Pool {
    Pool {
        name: name.into(),
        members: vec![Member::new(name, addr)],
        probe: None,
    }
}

/// The status, and whether the whole body arrived; `Err` when not even a response
/// head arrived.
async fn try_fetch(addr: SocketAddr, path: &str) -> Result<(u16, Result<String, String>), String> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let response = bounded("a response head", sender.send_request(get_request(path)))
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = bounded("a response body", response.into_body().collect()).await;
    Ok((
        status,
        body.map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .map_err(|e| e.to_string()),
    ))
}

async fn fetch(addr: SocketAddr, path: &str) -> (u16, Result<String, String>) {
    try_fetch(addr, path).await.unwrap()
}

/// A response cut by the member must reach the client as cut: an error before the
/// head, or a head and then an error, never a body that looks complete.
fn assert_cut(outcome: Result<(u16, Result<String, String>), String>) {
    match outcome {
        Err(_) => {}
        Ok((200, Err(_))) => {}
        other => panic!("a cut response looked like {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_members_do_not_wedge_the_balancer() {
    init_tracing();
    let good = Backend::start("good").await;
    let shutdown = CancellationToken::new();
    let lb = Balancer::with_workers(shutdown.clone(), 1).expect("a worker");
    let settings = HttpSettings {
        routes: vec![
            route("/garbage", "garbage"),
            route("/close", "close"),
            route("/silent", "silent"),
            route("/stall", "stall"),
            route("/hangup", "hangup"),
        ],
        request_timeout: Duration::from_millis(500),
        ..HttpSettings::new("good")
    };
    lb.apply(BalancerConfig {
        listeners: vec![http_listener("web", settings)],
        pools: vec![
            pool("good", &[&good], None),
            bad_pool("garbage", bad_backend(Misbehaviour::Garbage).await),
            bad_pool("close", bad_backend(Misbehaviour::CloseMidResponse).await),
            bad_pool("silent", bad_backend(Misbehaviour::NeverAnswers).await),
            bad_pool("stall", bad_backend(Misbehaviour::StallsMidResponse).await),
            bad_pool("hangup", bad_backend(Misbehaviour::Hangup).await),
        ],
    })
    .await
    .unwrap();
    let web = lb.local_addr("web").unwrap();

    for round in 0..3 {
        let (status, _) = fetch(web, "/garbage").await;
        assert_eq!(status, 502, "garbage, round {round}");
        assert_cut(try_fetch(web, "/close").await);
        let (status, _) = fetch(web, "/silent").await;
        assert_eq!(status, 504);
        assert_cut(try_fetch(web, "/stall").await);
        let (status, _) = fetch(web, "/hangup").await;
        assert!(status == 502 || status == 503, "hangup: {status}");
        assert_eq!(fetch(web, "/").await, (200, Ok("good".to_owned())));
    }

    // Many at once, mixed: every good request still succeeds.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let path = ["/garbage", "/close", "/silent", "/stall", "/", "/"][i % 6];
        tasks.push(tokio::spawn(
            async move { (path, try_fetch(web, path).await) },
        ));
    }
    for t in tasks {
        let (path, outcome) = t.await.unwrap();
        if path == "/" {
            assert_eq!(outcome, Ok((200, Ok("good".to_owned()))));
        }
    }
    let stats = lb.stats();
    let good_stats = stats.iter().find(|s| s.pool == "good").unwrap();
    assert_eq!(good_stats.responses_5xx, 0);
    wait_for("every request to be done", || {
        lb.stats().iter().all(|s| s.active == 0)
    })
    .await;
    shutdown.cancel();
    bounded("shutdown", lb.closed()).await;
}

/// A member that reads each request and closes without answering.
async fn closer() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                if let Ok(n) = s.read(&mut buf).await {
                    if n > 0 {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_idempotent_requests_are_retried_after_being_sent() {
    init_tracing();
    let good = Backend::start("good").await;
    let shutdown = CancellationToken::new();
    let lb = Balancer::with_workers(shutdown.clone(), 1).expect("a worker");
    let (closer_addr, closer_seen) = closer().await;
    let cfg = |pool: &str| BalancerConfig {
        listeners: vec![http_listener("web", HttpSettings::new(pool))],
        pools: vec![Pool {
            name: pool.into(),
            members: vec![Member::new("closer", closer_addr), good.member()],
            probe: None,
        }],
    };
    lb.apply(cfg("posts")).await.unwrap();
    let web = lb.local_addr("web").unwrap();

    // Two POSTs: round robin sends one to the closer, which must not be replayed.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let post = http::Request::post("/echo")
            .body(http_body_util::Full::from("once"))
            .unwrap();
        statuses.push(send(web, post).await.unwrap().status.as_u16());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 502]);
    assert_eq!(closer_seen.load(Ordering::SeqCst), 1);
    assert_eq!(good.hits(), 1, "the failed POST was replayed");

    // A fresh pool (the closer is no longer ejected): GETs that reach the closer are
    // retried on the good member.
    lb.apply(cfg("gets")).await.unwrap();
    for _ in 0..2 {
        assert_eq!(get(web, "/").await.unwrap().backend(), "good");
    }
    assert_eq!(closer_seen.load(Ordering::SeqCst), 2);
    shutdown.cancel();
}
