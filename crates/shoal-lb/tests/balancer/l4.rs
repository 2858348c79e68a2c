//! Layer 4: distribution, kill under load, idle timeout and reset.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use shoal_lb::{Balancer, BalancerConfig, Distribution, HealthState, TcpSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_reaches_every_member() {
    init_tracing();
    let b = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let (lb, shutdown, _, tcp) = front(&[&b[0], &b[1], &b[2]]).await;
    let mut seen = HashSet::new();
    for _ in 0..30 {
        seen.insert(raw_get(tcp, "/").await.unwrap());
    }
    assert_eq!(seen, HashSet::from(["a".into(), "b".into(), "c".into()]));
    wait_for("connections to be counted as closed", || {
        lb.stats()[0].active == 0
    })
    .await;
    let stats = &lb.stats()[0];
    assert_eq!(stats.requests, 30);
    assert!(
        stats.bytes_in > 30 * 40 && stats.bytes_out > 30 * 40,
        "{stats:?}"
    );
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_ip_keeps_a_client_on_one_member() {
    init_tracing();
    let b = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let shutdown = CancellationToken::new();
    let lb = Balancer::new(shutdown.clone());
    lb.apply(BalancerConfig {
        listeners: vec![tcp_listener(
            "tcp",
            TcpSettings {
                distribution: Distribution::SourceIp,
                ..TcpSettings::new("p")
            },
        )],
        pools: vec![pool("p", &[&b[0], &b[1], &b[2]], None)],
    })
    .await
    .unwrap();
    let addr = lb.local_addr("tcp").unwrap();
    let seen: HashSet<String> = {
        let mut seen = HashSet::new();
        for _ in 0..15 {
            seen.insert(raw_get(addr, "/").await.unwrap());
        }
        seen
    };
    assert_eq!(seen.len(), 1, "one client IP went to {seen:?}");
    shutdown.cancel();
}

/// `kill -9` of a member: the connections open to it at that moment fail, and no new
/// connection after it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_member_fails_only_its_open_connections() {
    init_tracing();
    let b = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let (lb, shutdown, _, tcp) = front(&[&b[0], &b[1], &b[2]]).await;
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(tokio::spawn(raw_get(tcp, "/hold")));
    }
    wait_for("every held connection to arrive", || {
        b.iter()
            .map(|x| x.holding.load(Ordering::SeqCst))
            .sum::<usize>()
            == 6
    })
    .await;
    let on_killed = b[1].holding.load(Ordering::SeqCst);
    assert!(
        on_killed > 0,
        "round robin should have put a connection on b"
    );
    assert_eq!(lb.active("p", "b"), on_killed);

    b[1].kill().await;
    // New connections right after the kill, before any probe noticed: none fails.
    for _ in 0..30 {
        let body = bounded("a new connection", raw_get(tcp, "/"))
            .await
            .unwrap();
        assert_ne!(body, "b");
    }
    assert_eq!(
        state_of(&lb, "b"),
        HealthState::Unhealthy,
        "a refused connection ejects at once"
    );

    b[0].release();
    b[2].release();
    let mut failed = 0;
    for h in held {
        match bounded("held connections", h).await.unwrap() {
            Ok(body) => assert!(body == "a" || body == "c"),
            Err(_) => failed += 1,
        }
    }
    assert_eq!(failed, on_killed);
    wait_for("b's connections to be counted as closed", || {
        lb.active("p", "b") == 0
    })
    .await;
    shutdown.cancel();
}

/// A member that takes connections and drops them unanswered (it died with its port
/// still open, or is dying): after the first such connection it gets no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_resetting_before_it_answers_is_ejected() {
    init_tracing();
    let a = Backend::start("a").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dying = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s.set_zero_linger();
        }
    });
    let shutdown = CancellationToken::new();
    let lb = Balancer::new(shutdown.clone());
    let mut p = pool("p", &[&a], None);
    p.members.push(shoal_lb::Member::new("dying", dying));
    lb.apply(BalancerConfig {
        listeners: vec![tcp_listener("tcp", TcpSettings::new("p"))],
        pools: vec![p],
    })
    .await
    .unwrap();
    let tcp = lb.local_addr("tcp").unwrap();
    let mut failed = 0;
    for _ in 0..10 {
        match bounded("a request", raw_get(tcp, "/")).await {
            Ok(body) => assert_eq!(body, "a"),
            Err(_) => failed += 1,
        }
    }
    assert_eq!(
        failed, 1,
        "only the first connection to the dying member fails"
    );
    assert_eq!(state_of(&lb, "dying"), HealthState::Unhealthy);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_close_with_a_reset_when_asked() {
    init_tracing();
    let a = Backend::start("a").await;
    let shutdown = CancellationToken::new();
    let lb = Balancer::new(shutdown.clone());
    // Long enough that a loaded CI machine still sends the keep-busy traffic in time.
    let idle = Duration::from_millis(1200);
    lb.apply(BalancerConfig {
        listeners: vec![
            tcp_listener(
                "reset",
                TcpSettings {
                    idle_timeout: idle,
                    tcp_reset: true,
                    ..TcpSettings::new("p")
                },
            ),
            tcp_listener(
                "fin",
                TcpSettings {
                    idle_timeout: idle,
                    tcp_reset: false,
                    ..TcpSettings::new("p")
                },
            ),
        ],
        pools: vec![pool("p", &[&a], None)],
    })
    .await
    .unwrap();

    // Traffic keeps a connection open past the idle timeout.
    let mut busy = TcpStream::connect(lb.local_addr("fin").unwrap())
        .await
        .unwrap();
    for _ in 0..4 {
        busy.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = busy.read(&mut buf).await.unwrap();
        assert!(n > 0);
        tokio::time::sleep(idle / 4).await;
    }

    let mut quiet = TcpStream::connect(lb.local_addr("reset").unwrap())
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let read = bounded("the idle timeout", quiet.read(&mut buf)).await;
    let err = read.expect_err("an idle connection with tcp_reset should be reset");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);

    let mut quiet = TcpStream::connect(lb.local_addr("fin").unwrap())
        .await
        .unwrap();
    assert_eq!(
        bounded("the idle timeout", quiet.read(&mut buf))
            .await
            .unwrap(),
        0
    );
    shutdown.cancel();
}
