//! Layer 7: distribution, health, kill under load, routing, headers, affinity.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use shoal_lb::{
    Balancer, BalancerConfig, HealthState, HttpRoute, HttpSettings, Pool, AFFINITY_COOKIE,
};
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
    let (lb, shutdown, web, _) = front(&[&b[0], &b[1], &b[2]]).await;
    let mut seen = HashSet::new();
    let mut client = KeepAlive::new(web);
    for _ in 0..30 {
        let reply = client.get("/").await.unwrap();
        assert_eq!(reply.status, 200);
        seen.insert(reply.backend().to_owned());
    }
    assert_eq!(seen, HashSet::from(["a".into(), "b".into(), "c".into()]));
    let stats = &lb.stats()[0];
    assert_eq!(stats.requests, 30);
    assert_eq!(stats.responses_5xx, 0);
    assert_eq!(stats.bytes_out, 30);
    assert_eq!(stats.routable_members, 3);
    shutdown.cancel();
    bounded("shutdown", lb.closed()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_member_gets_nothing_and_comes_back_when_healthy() {
    init_tracing();
    let b = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let (lb, shutdown, web, tcp) = front(&[&b[0], &b[1], &b[2]]).await;
    let mut changes = lb.health_changes();
    changes.mark_unchanged();

    b[1].healthy.store(false, Ordering::SeqCst);
    wait_for("b to be marked unhealthy", || {
        state_of(&lb, "b") == HealthState::Unhealthy
    })
    .await;
    assert!(changes.has_changed().unwrap());
    let health = lb.health().into_iter().find(|h| h.member == "b").unwrap();
    assert!(!health.routable);
    assert!(health.last_error.unwrap().contains("503"));

    let before = b[1].hits();
    for _ in 0..30 {
        assert_ne!(get(web, "/").await.unwrap().backend(), "b");
        assert_ne!(raw_get(tcp, "/").await.unwrap(), "b");
    }
    assert_eq!(b[1].hits(), before, "an unhealthy member received traffic");

    b[1].healthy.store(true, Ordering::SeqCst);
    wait_for("b to be healthy again", || {
        state_of(&lb, "b") == HealthState::Healthy
    })
    .await;
    let mut seen = HashSet::new();
    for _ in 0..30 {
        seen.insert(get(web, "/").await.unwrap().backend().to_owned());
    }
    assert!(seen.contains("b"));
    shutdown.cancel();
}

/// `kill -9` of one member under steady keep-alive load: every GET still succeeds,
/// thanks to the retry of requests that failed before any response byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_member_under_load_fails_no_get() {
    init_tracing();
    let b = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let (lb, shutdown, web, _) = front(&[&b[0], &b[1], &b[2]]).await;
    let done = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let mut workers = Vec::new();
    for _ in 0..6 {
        let (done, stop) = (done.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut client = KeepAlive::new(web);
            let mut failures = Vec::new();
            for _ in 0..5_000 {
                if stop.is_cancelled() {
                    break;
                }
                match client.get("/slow").await {
                    Ok(r) if r.status == 200 => {}
                    Ok(r) => failures.push(format!("{} {}", r.status, r.body)),
                    Err(e) => failures.push(e.to_string()),
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
            failures
        }));
    }
    wait_for("load to run", || done.load(Ordering::SeqCst) >= 300).await;
    b[1].kill().await;
    let at_kill = done.load(Ordering::SeqCst);
    wait_for("load to go on after the kill", || {
        done.load(Ordering::SeqCst) >= at_kill + 600
    })
    .await;
    stop.cancel();
    let mut failures = Vec::new();
    for w in workers {
        failures.extend(bounded("workers", w).await.unwrap());
    }
    assert!(failures.is_empty(), "failed GETs: {failures:?}");
    wait_for("b to be marked unhealthy", || {
        state_of(&lb, "b") == HealthState::Unhealthy
    })
    .await;
    assert_eq!(lb.stats()[0].responses_5xx, 0);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_and_path_and_adds_forwarded_headers() {
    init_tracing();
    let (api, stat, web) = (
        Backend::start("api").await,
        Backend::start("static").await,
        Backend::start("web").await,
    );
    let shutdown = CancellationToken::new();
    let lb = Balancer::with_workers(shutdown.clone(), 1).expect("a worker");
    let settings = HttpSettings {
        routes: vec![
            HttpRoute {
                host: Some("*.api.example".into()),
                path_prefix: None,
                pool: "api".into(),
            },
            HttpRoute {
                host: None,
                path_prefix: Some("/static".into()),
                pool: "static".into(),
            },
        ],
        ..HttpSettings::new("web")
    };
    lb.apply(BalancerConfig {
        listeners: vec![http_listener("l7", settings)],
        pools: vec![
            pool("api", &[&api], None),
            pool("static", &[&stat], None),
            pool("web", &[&web], None),
        ],
    })
    .await
    .unwrap();
    let addr = lb.local_addr("l7").unwrap();
    let send_to = |host: &'static str, path: &'static str| {
        let req = http::Request::get(path)
            .header("host", host)
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-forwarded-proto", "https")
            .header("connection", "x-drop-me")
            .header("x-drop-me", "1")
            .body(Default::default())
            .unwrap();
        send(addr, req)
    };
    let r = send_to("v1.api.example:8080", "/echo").await.unwrap();
    assert_eq!(r.backend(), "api");
    assert!(
        r.body.contains("x-forwarded-for: 203.0.113.9, 127.0.0.1\n"),
        "{}",
        r.body
    );
    assert!(r.body.contains("x-forwarded-proto: http\n"), "{}", r.body);
    assert!(
        r.body.contains("x-forwarded-host: v1.api.example:8080\n"),
        "{}",
        r.body
    );
    assert!(
        r.body
            .contains(&format!("x-forwarded-port: {}\n", addr.port())),
        "{}",
        r.body
    );
    assert!(r.body.contains("host: v1.api.example:8080\n"), "{}", r.body);
    assert!(!r.body.contains("x-drop-me"), "{}", r.body);
    assert_eq!(
        send_to("api.example", "/static/x").await.unwrap().backend(),
        "static"
    );
    assert_eq!(
        send_to("api.example", "/statics").await.unwrap().backend(),
        "web"
    );
    assert_eq!(send_to("other", "/").await.unwrap().backend(), "web");
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_affinity_cookie_pins_a_client_until_its_member_drains() {
    init_tracing();
    let b = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let shutdown = CancellationToken::new();
    let lb = Balancer::with_workers(shutdown.clone(), 1).expect("a worker");
    let mut cfg = BalancerConfig {
        listeners: vec![http_listener(
            "web",
            HttpSettings {
                cookie_affinity: true,
                ..HttpSettings::new("p")
            },
        )],
        pools: vec![pool("p", &[&b[0], &b[1], &b[2]], None)],
    };
    lb.apply(cfg.clone()).await.unwrap();
    let addr = lb.local_addr("web").unwrap();

    let first = get(addr, "/").await.unwrap();
    let pinned = first.backend().to_owned();
    let cookie = first.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with(&format!("{AFFINITY_COOKIE}={pinned};")),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    let with_cookie = || {
        http::Request::get("/")
            .header("cookie", format!("theme=dark; {pair}"))
            .body(Default::default())
            .unwrap()
    };
    for _ in 0..10 {
        let r = send(addr, with_cookie()).await.unwrap();
        assert_eq!(r.backend(), pinned);
        assert!(!r.headers.contains_key("set-cookie"));
    }

    let index = b.iter().position(|x| x.name == pinned).unwrap();
    cfg.pools[0].members[index].draining = true;
    lb.apply(cfg).await.unwrap();
    let r = send(addr, with_cookie()).await.unwrap();
    assert_ne!(r.backend(), pinned);
    assert!(r.headers["set-cookie"]
        .to_str()
        .unwrap()
        .contains(r.backend()));
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_routable_member_the_answer_is_a_quick_503() {
    init_tracing();
    let a = Backend::start("a").await;
    let shutdown = CancellationToken::new();
    let lb = Balancer::with_workers(shutdown.clone(), 1).expect("a worker");
    lb.apply(BalancerConfig {
        listeners: vec![
            http_listener("web", HttpSettings::new("p")),
            http_listener("empty", HttpSettings::new("none")),
        ],
        pools: vec![
            pool("p", &[&a], Some(probe())),
            Pool {
                name: "none".into(),
                members: vec![],
                probe: None,
            },
        ],
    })
    .await
    .unwrap();
    let r = get(lb.local_addr("empty").unwrap(), "/").await.unwrap();
    assert_eq!(r.status, 503);

    wait_healthy(&lb, 1).await;
    a.healthy.store(false, std::sync::atomic::Ordering::SeqCst);
    wait_for("a to be unhealthy", || {
        state_of(&lb, "a") == HealthState::Unhealthy
    })
    .await;
    let r = get(lb.local_addr("web").unwrap(), "/").await.unwrap();
    assert_eq!(r.status, 503);
    let stats = lb.stats();
    assert_eq!(stats.iter().map(|s| s.responses_5xx).sum::<u64>(), 2);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways() {
    init_tracing();
    let a = Backend::start("a").await;
    let (lb, shutdown, web, tcp) = front(&[&a]).await;
    for addr in [web, tcp] {
        let r = get(addr, "/big").await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), 2 + BIG);
        for method in [http::Method::POST, http::Method::PUT] {
            let request = http::Request::builder()
                .method(method)
                .uri("/count")
                .body(http_body_util::Full::from(vec![7u8; 8 << 20]))
                .unwrap();
            let r = send(addr, request).await.unwrap();
            assert_eq!(r.body, format!("a\n{}", 8 << 20));
        }
    }
    // The kernel forwarding the L4 connection counts its bytes every few milliseconds.
    wait_for("the byte counters", || {
        let stats = &lb.stats()[0];
        stats.bytes_out >= 2 * BIG as u64 && stats.bytes_in >= 4 * (8 << 20)
    })
    .await;
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_probe_marks_a_closed_port_unhealthy() {
    init_tracing();
    let a = Backend::start("a").await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let shutdown = CancellationToken::new();
    let lb = Balancer::with_workers(shutdown.clone(), 1).expect("a worker");
    let probe = shoal_lb::Probe {
        interval: std::time::Duration::from_millis(200),
        threshold: 1,
        ..shoal_lb::Probe::tcp()
    };
    lb.apply(BalancerConfig {
        listeners: vec![http_listener("web", HttpSettings::new("p"))],
        pools: vec![Pool {
            name: "p".into(),
            members: vec![a.member(), shoal_lb::Member::new("closed", closed)],
            probe: Some(probe),
        }],
    })
    .await
    .unwrap();
    wait_for("probe verdicts", || {
        state_of(&lb, "a") == HealthState::Healthy
            && state_of(&lb, "closed") == HealthState::Unhealthy
    })
    .await;
    let web = lb.local_addr("web").unwrap();
    for _ in 0..10 {
        assert_eq!(get(web, "/").await.unwrap().backend(), "a");
    }
    a.kill().await;
    wait_for("a to be unhealthy", || {
        state_of(&lb, "a") == HealthState::Unhealthy
    })
    .await;
    assert_eq!(get(web, "/").await.unwrap().status, 503);
    shutdown.cancel();
}

/// Keep-alive to members: one client doing requests one after another (bodiless HEAD
/// answers and a large body included) costs the member one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_connections_are_reused() {
    init_tracing();
    let a = Backend::start("a").await;
    let shutdown = CancellationToken::new();
    let lb = Balancer::with_workers(shutdown.clone(), 1).expect("a worker");
    lb.apply(BalancerConfig {
        listeners: vec![http_listener("web", HttpSettings::new("p"))],
        pools: vec![pool("p", &[&a], None)],
    })
    .await
    .unwrap();
    let web = lb.local_addr("web").unwrap();
    let mut client = KeepAlive::new(web);
    for i in 0..60 {
        let path = if i == 30 { "/big" } else { "/" };
        assert_eq!(client.get(path).await.unwrap().status, 200);
        if i % 10 == 0 {
            let head = http::Request::head("/").body(Default::default()).unwrap();
            let r = send(web, head).await.unwrap();
            assert_eq!((r.status.as_u16(), r.body.as_str()), (200, ""));
        }
    }
    assert_eq!(a.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    shutdown.cancel();
}

/// A client that goes away in the middle of its upload is not the member's fault: the
/// member stays in rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_abandoning_its_upload_does_not_eject_the_member() {
    use tokio::io::AsyncWriteExt;
    init_tracing();
    let a = Backend::start("a").await;
    let shutdown = CancellationToken::new();
    let lb = Balancer::with_workers(shutdown.clone(), 1).expect("a worker");
    lb.apply(BalancerConfig {
        listeners: vec![http_listener("web", HttpSettings::new("p"))],
        pools: vec![pool("p", &[&a], None)],
    })
    .await
    .unwrap();
    let web = lb.local_addr("web").unwrap();
    for _ in 0..3 {
        let mut tcp = tokio::net::TcpStream::connect(web).await.unwrap();
        tcp.write_all(b"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n")
            .await
            .unwrap();
        tcp.write_all(&[1u8; 70_000]).await.unwrap();
        drop(tcp);
    }
    wait_for("the abandoned uploads to end", || {
        let s = &lb.stats()[0];
        s.requests == 3 && s.active == 0
    })
    .await;
    let health = lb.health();
    assert!(health[0].routable, "{health:?}");
    assert_ne!(health[0].state, HealthState::Unhealthy);
    assert_eq!(get(web, "/").await.unwrap().backend(), "a");
    shutdown.cancel();
}
