//! Changing the configuration under traffic: draining, member swaps, listener removal,
//! taken ports, shutdown.

use std::sync::atomic::Ordering;
use std::time::Duration;

use shoal_lb::{
    Balancer, BalancerConfig, HttpSettings, LbError, Listener, ListenerKind, TcpSettings,
};
use tokio_util::sync::CancellationToken;

use crate::support::*;

fn config(pools: Vec<shoal_lb::Pool>) -> BalancerConfig {
    BalancerConfig {
        listeners: vec![
            http_listener("web", HttpSettings::new("p")),
            tcp_listener("tcp", TcpSettings::new("p")),
        ],
        pools,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_member_finishes_its_request_and_gets_no_new_one() {
    init_tracing();
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let shutdown = CancellationToken::new();
    let lb = Balancer::new(shutdown.clone());
    let mut cfg = config(vec![pool("p", &[&a, &b], None)]);
    lb.apply(cfg.clone()).await.unwrap();
    let (web, tcp) = (lb.local_addr("web").unwrap(), lb.local_addr("tcp").unwrap());

    // One request through L7 and one connection through L4 held on each member.
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(tokio::spawn(async move {
            get(web, "/hold").await.map(|r| r.body)
        }));
        held.push(tokio::spawn(raw_get(tcp, "/hold")));
    }
    wait_for("requests to be held", || {
        a.holding.load(Ordering::SeqCst) == 2 && b.holding.load(Ordering::SeqCst) == 2
    })
    .await;
    assert_eq!(lb.active("p", "a"), 2);

    cfg.pools[0].members[0].draining = true;
    lb.apply(cfg).await.unwrap();
    let health = lb.health();
    assert!(health[0].draining && !health[0].routable);
    let hits = a.hits();
    for _ in 0..20 {
        assert_eq!(get(web, "/").await.unwrap().backend(), "b");
        assert_eq!(raw_get(tcp, "/").await.unwrap(), "b");
    }
    assert_eq!(a.hits(), hits, "a draining member got new work");
    assert_eq!(
        lb.active("p", "a"),
        2,
        "draining must not cut in-flight work"
    );

    a.release();
    b.release();
    let mut bodies: Vec<String> = Vec::new();
    for h in held {
        bodies.push(bounded("held requests", h).await.unwrap().unwrap());
    }
    bodies.sort();
    assert_eq!(bodies, ["a", "a", "b", "b"]);
    wait_for("a's in-flight count to reach 0", || {
        lb.active("p", "a") == 0
    })
    .await;
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_member_set_does_not_break_requests_in_flight() {
    init_tracing();
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let shutdown = CancellationToken::new();
    let lb = Balancer::new(shutdown.clone());
    lb.apply(config(vec![pool("p", &[&a], None)]))
        .await
        .unwrap();
    let (web, tcp) = (lb.local_addr("web").unwrap(), lb.local_addr("tcp").unwrap());
    let l7 = tokio::spawn(async move { get(web, "/hold").await.map(|r| r.body) });
    let l4 = tokio::spawn(raw_get(tcp, "/hold"));
    wait_for("requests to be held on a", || {
        a.holding.load(Ordering::SeqCst) == 2
    })
    .await;

    // a leaves, b and c join; the L7 listener's settings change too.
    let mut next = config(vec![pool("p", &[&b, &c], None)]);
    next.listeners[0] = http_listener(
        "web",
        HttpSettings {
            request_timeout: Duration::from_secs(30),
            ..HttpSettings::new("p")
        },
    );
    lb.apply(next).await.unwrap();
    assert_eq!(
        lb.local_addr("web"),
        Some(web),
        "a changed listener keeps its socket"
    );
    assert_eq!(
        lb.active("p", "a"),
        2,
        "a removed member's work is still counted"
    );
    for _ in 0..10 {
        let r = get(web, "/").await.unwrap();
        assert!(r.backend() == "b" || r.backend() == "c");
        let body = raw_get(tcp, "/").await.unwrap();
        assert!(body == "b" || body == "c");
    }
    a.release();
    assert_eq!(bounded("the L7 request", l7).await.unwrap().unwrap(), "a");
    assert_eq!(bounded("the L4 request", l4).await.unwrap().unwrap(), "a");
    wait_for("a's work to be done", || lb.active("p", "a") == 0).await;
    assert_eq!(lb.health().len(), 2);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_listener_frees_its_port_and_finishes_in_flight_requests() {
    init_tracing();
    let a = Backend::start("a").await;
    let shutdown = CancellationToken::new();
    let lb = Balancer::new(shutdown.clone());
    lb.apply(config(vec![pool("p", &[&a], None)]))
        .await
        .unwrap();
    let web = lb.local_addr("web").unwrap();
    let held = tokio::spawn(async move { get(web, "/hold").await.map(|r| r.body) });
    wait_for("the request to be held", || {
        a.holding.load(Ordering::SeqCst) == 1
    })
    .await;

    let mut cfg = config(vec![pool("p", &[&a], None)]);
    cfg.listeners.remove(0);
    lb.apply(cfg).await.unwrap();
    assert_eq!(lb.local_addr("web"), None);
    assert!(
        std::net::TcpStream::connect(web).is_err(),
        "the port must be free when apply returns"
    );
    a.release();
    assert_eq!(
        bounded("the held request", held).await.unwrap().unwrap(),
        "a"
    );
    shutdown.cancel();
    bounded("shutdown", lb.closed()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_is_an_error_naming_the_listener_and_the_rest_applies() {
    init_tracing();
    let a = Backend::start("a").await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let lb = Balancer::new(shutdown.clone());
    let mut cfg = config(vec![pool("p", &[&a], None)]);
    cfg.listeners.push(Listener {
        name: "clash".into(),
        bind: port,
        kind: ListenerKind::Http(HttpSettings::new("p")),
    });
    let err = lb.apply(cfg.clone()).await.unwrap_err();
    match &err {
        LbError::Bind { listener, addr, .. } => {
            assert_eq!(listener, "clash");
            assert_eq!(*addr, port);
        }
        other => panic!("expected a bind error, got {other:?}"),
    }
    assert_eq!(err.listener(), Some("clash"));
    assert!(err.to_string().contains("clash"), "{err}");
    assert_eq!(lb.local_addr("clash"), None);
    let web = lb.local_addr("web").unwrap();
    assert_eq!(get(web, "/").await.unwrap().backend(), "a");

    // Once the port is free, the same config applies fully.
    drop(taken);
    lb.apply(cfg).await.unwrap();
    assert_eq!(get(port, "/").await.unwrap().backend(), "a");

    // An invalid config changes nothing.
    let mut bad = config(vec![pool("p", &[&a], None)]);
    bad.listeners[0] = http_listener("web", HttpSettings::new("missing"));
    let err = lb.apply(bad).await.unwrap_err();
    assert!(matches!(err, LbError::InvalidConfig { .. }), "{err:?}");
    assert_eq!(err.listener(), Some("web"));
    assert_eq!(get(port, "/").await.unwrap().backend(), "a");
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_every_task() {
    init_tracing();
    let a = Backend::start("a").await;
    let (lb, shutdown, web, tcp) = front(&[&a]).await;
    let mut client = KeepAlive::new(web);
    client.get("/").await.unwrap();
    let _open = tokio::net::TcpStream::connect(tcp).await.unwrap();
    shutdown.cancel();
    bounded("every task to end", lb.closed()).await;
    assert!(matches!(
        lb.apply(BalancerConfig::default()).await,
        Err(LbError::ShuttingDown)
    ));
}
