//! A balancer with worker threads of its own (as `shoal serve` runs it): every listener
//! accepts on one socket per worker, and member choice is the same whichever worker a
//! connection lands on.

use std::collections::HashSet;

use shoal_lb::{
    Balancer, BalancerConfig, Distribution, HttpSettings, LbError, Listener, ListenerKind,
    TcpSettings, AFFINITY_COOKIE,
};
use tokio_util::sync::CancellationToken;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_keep_round_robin_source_ip_and_cookie_affinity() {
    init_tracing();
    let b = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let shutdown = CancellationToken::new();
    let lb = Balancer::with_workers(shutdown.clone(), 3).unwrap();
    lb.apply(BalancerConfig {
        listeners: vec![
            http_listener("web", HttpSettings::new("p")),
            http_listener(
                "sticky",
                HttpSettings {
                    cookie_affinity: true,
                    ..HttpSettings::new("p")
                },
            ),
            tcp_listener(
                "tcp",
                TcpSettings {
                    distribution: Distribution::SourceIp,
                    ..TcpSettings::new("p")
                },
            ),
        ],
        pools: vec![pool("p", &[&b[0], &b[1], &b[2]], None)],
    })
    .await
    .unwrap();

    // New connections (spread over the workers' sockets by the kernel) still take
    // turns over every member.
    let web = lb.local_addr("web").unwrap();
    let mut seen = HashSet::new();
    for _ in 0..30 {
        seen.insert(get(web, "/").await.unwrap().backend().to_owned());
    }
    assert_eq!(
        seen.len(),
        3,
        "round robin over new connections reached {seen:?}"
    );

    // One client IP, one member, over many connections.
    let tcp = lb.local_addr("tcp").unwrap();
    let mut seen = HashSet::new();
    for _ in 0..20 {
        seen.insert(raw_get(tcp, "/").await.unwrap());
    }
    assert_eq!(seen.len(), 1, "one client IP went to {seen:?}");

    // The cookie pins whichever worker serves the connection.
    let sticky = lb.local_addr("sticky").unwrap();
    let first = get(sticky, "/").await.unwrap();
    let pinned = first.backend().to_owned();
    let cookie = first.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with(&format!("{AFFINITY_COOKIE}={pinned};")),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    for _ in 0..20 {
        let request = http::Request::get("/")
            .header("host", "t")
            .header("cookie", &pair)
            .body(Default::default())
            .unwrap();
        assert_eq!(send(sticky, request).await.unwrap().backend(), pinned);
    }

    // Shutdown ends every task on every worker.
    shutdown.cancel();
    bounded("the workers to finish", lb.closed()).await;
}

/// Workers share a port among their own sockets, never with another program's socket,
/// even one that would share it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_another_socket_shares_is_still_taken() {
    init_tracing();
    let a = Backend::start("a").await;
    let other = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    other.set_reuse_port(true).unwrap();
    other
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    other.listen(16).unwrap();
    let port = other.local_addr().unwrap().as_socket().unwrap();

    let shutdown = CancellationToken::new();
    let lb = Balancer::with_workers(shutdown.clone(), 2).unwrap();
    let mut cfg = BalancerConfig {
        listeners: vec![Listener {
            name: "clash".into(),
            bind: port,
            kind: ListenerKind::Http(HttpSettings::new("p")),
        }],
        pools: vec![pool("p", &[&a], None)],
    };
    match lb.apply(cfg.clone()).await {
        Err(LbError::Bind { listener, .. }) => assert_eq!(listener, "clash"),
        other => panic!("expected a bind error, got {other:?}"),
    }
    drop(other);
    lb.apply(cfg.clone()).await.unwrap();
    assert_eq!(get(port, "/").await.unwrap().backend(), "a");
    cfg.listeners.clear();
    lb.apply(cfg).await.unwrap();
    assert!(
        std::net::TcpListener::bind(port).is_ok(),
        "a removed listener frees its port on every worker"
    );
    shutdown.cancel();
    bounded("the workers to finish", lb.closed()).await;
}
