//! Whatever bytes a client sends, the lean HTTP/1 proxy answers or closes promptly: no
//! hang, no panic on a balancer thread, no 500 or 504, and the next client is served.
//! Inputs are arbitrary bytes and valid request beginnings followed by arbitrary bytes
//! (so the body, chunk and upgrade paths see hostile input too).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use shoal_lb::{Balancer, BalancerConfig, HttpSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// Panics on the balancer's worker threads (named `shoal-lb-N`).
static BALANCER_PANICS: AtomicUsize = AtomicUsize::new(0);

const STARTS: &[&str] = &[
    "GET / HTTP/1.1\r\nHost: t\r\n",
    "GET /echo HTTP/1.0\r\n",
    "POST /count HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
    "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n",
    "PUT /count HTTP/1.1\r\nHost: t\r\nContent-Length: 70000\r\nExpect: 100-continue\r\n\r\n",
    "GET /ws HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    "GET http://t HTTP/1.1\r\n",
    "\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\n",
];

fn inputs() -> impl Strategy<Value = Vec<u8>> {
    // Most inputs end a head (an empty line), so they are parsed, not just cut off.
    fn ended(mut v: Vec<u8>) -> Vec<u8> {
        v.extend_from_slice(b"\r\n\r\n");
        v
    }
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..1024),
        proptest::collection::vec(any::<u8>(), 0..1024).prop_map(ended),
        "[A-Z]{1,7} [ -~]{0,40} HTTP/1\\.[01]\r\n([!-~]{1,12}: [ -~]{0,30}\r\n){0,6}"
            .prop_map(|head| ended(head.into_bytes())),
        (
            proptest::sample::select(STARTS),
            proptest::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(start, tail)| [start.as_bytes(), &tail].concat()),
    ]
}

#[test]
fn hostile_bytes_never_hang_panic_or_fail_the_balancer() {
    init_tracing();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with("shoal-lb"))
        {
            BALANCER_PANICS.fetch_add(1, Ordering::SeqCst);
        }
        previous(info)
    }));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (web, shutdown, _lb, _backend) = rt.block_on(async {
        let a = Backend::start("a").await;
        let shutdown = CancellationToken::new();
        let lb = Balancer::with_workers(shutdown.clone(), 1).unwrap();
        lb.apply(BalancerConfig {
            listeners: vec![http_listener("web", HttpSettings::new("p"))],
            pools: vec![pool("p", &[&a], None)],
        })
        .await
        .unwrap();
        (lb.local_addr("web").unwrap(), shutdown, lb, a)
    });

    let mut runner = TestRunner::new(Config {
        cases: 96,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&inputs(), |input| {
            let answer = rt.block_on(async {
                let mut tcp = TcpStream::connect(web).await.unwrap();
                let _ = tcp.write_all(&input).await;
                // The client is done sending: the balancer must finish on its own.
                let _ = tcp.shutdown().await;
                let mut answer = Vec::new();
                let read =
                    tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut answer))
                        .await;
                (read.is_ok(), answer)
            });
            let (finished, answer) = answer;
            prop_assert!(
                finished,
                "no answer or close within 15 s for {:?}",
                String::from_utf8_lossy(&input)
            );
            let text = String::from_utf8_lossy(&answer);
            if !answer.is_empty() {
                prop_assert!(text.starts_with("HTTP/1.1 "), "{text}");
                for status in [" 500 ", " 504 "] {
                    prop_assert!(!text.contains(&format!("HTTP/1.1{status}")), "{text}");
                }
            }
            prop_assert_eq!(BALANCER_PANICS.load(Ordering::SeqCst), 0);
            Ok(())
        })
        .unwrap();

    // And the balancer still serves.
    let reply = rt.block_on(get(web, "/")).unwrap();
    assert_eq!(reply.backend(), "a");
    shutdown.cancel();
}
