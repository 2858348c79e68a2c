//! HTTPS listeners with a certificate made at test time.

use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use shoal_lb::{
    Balancer, BalancerConfig, HttpSettings, LbError, Listener, ListenerKind, TlsCertificate,
    TlsFiles,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_listener_serves_h1_and_h2_with_a_fresh_certificate() {
    init_tracing();
    let a = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let files = TlsFiles {
        cert_file: dir.path().join("cert.pem"),
        key_file: dir.path().join("key.pem"),
    };
    std::fs::write(&files.cert_file, certified.cert.pem()).unwrap();
    std::fs::write(&files.key_file, certified.signing_key.serialize_pem()).unwrap();

    let shutdown = CancellationToken::new();
    let lb = Balancer::with_workers(shutdown.clone(), 1).expect("a worker");
    let https = |name: &str, tls: TlsCertificate| Listener {
        name: name.into(),
        bind: "127.0.0.1:0".parse().unwrap(),
        kind: ListenerKind::Https {
            http: HttpSettings::new("p"),
            tls,
        },
    };
    // The same certificate as files, and as PEM text carried in the configuration.
    let inline = TlsCertificate::Pem {
        chain: certified.cert.pem(),
        key: certified.signing_key.serialize_pem(),
    };
    lb.apply(BalancerConfig {
        listeners: vec![
            https("secure", files.clone().into()),
            https("inline", inline.clone()),
        ],
        pools: vec![pool("p", &[&a], None)],
    })
    .await
    .unwrap();
    let addr = lb.local_addr("secure").unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(certified.cert.der().to_vec()))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let connect_to = |addr: std::net::SocketAddr, alpn: &'static [u8]| {
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            TlsConnector::from(Arc::new(config))
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap()
        }
    };

    let connect = |alpn: &'static [u8]| connect_to(addr, alpn);

    // HTTP/1.1, on both listeners.
    let inline_tls = connect_to(lb.local_addr("inline").unwrap(), b"http/1.1").await;
    let (mut inline_h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(inline_tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let reply = read_reply(inline_h1.send_request(get_request("/echo")).await.unwrap())
        .await
        .unwrap();
    assert_eq!((reply.status.as_u16(), reply.backend()), (200, "a"));
    let tls = connect(b"http/1.1").await;
    let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let reply = read_reply(h1.send_request(get_request("/echo")).await.unwrap())
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.backend(), "a");
    assert!(
        reply.body.contains("x-forwarded-proto: https\n"),
        "{}",
        reply.body
    );

    // h2: the member still gets HTTP/1.1, with a Host header made from :authority.
    let tls = connect(b"h2").await;
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = http::Request::get(format!("https://localhost:{}/echo", addr.port()))
        .body(Full::<bytes::Bytes>::default())
        .unwrap();
    let response = h2.send_request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.starts_with("a\nGET /echo HTTP/1.1\n") || body.starts_with("a\nGET /echo\n"),
        "{body}"
    );
    assert!(
        body.contains(&format!("host: localhost:{}\n", addr.port())),
        "{body}"
    );

    // An unreadable certificate is an error naming the listener and the file; the rest
    // of the config still applies.
    let missing = TlsFiles {
        cert_file: dir.path().join("nope.pem"),
        key_file: files.key_file.clone(),
    };
    let err = lb
        .apply(BalancerConfig {
            listeners: vec![
                https("secure", files.clone().into()),
                https("broken", missing.clone().into()),
            ],
            pools: vec![pool("p", &[&a], None)],
        })
        .await
        .unwrap_err();
    match &err {
        LbError::Certificate { listener, file, .. } => {
            assert_eq!(listener, "broken");
            assert_eq!(file, &missing.cert_file);
        }
        other => panic!("expected a certificate error, got {other:?}"),
    }
    assert!(err.to_string().contains("nope.pem"), "{err}");
    assert_eq!(lb.local_addr("broken"), None);
    assert_eq!(lb.local_addr("secure"), Some(addr));
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_probe_checks_a_tls_member_without_verifying_it() {
    init_tracing();
    let certified = rcgen::generate_simple_self_signed(vec!["member.internal".to_owned()]).unwrap();
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .unwrap();
    let member = Backend::start_with(
        "secure",
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
    )
    .await;
    let shutdown = CancellationToken::new();
    let lb = Balancer::with_workers(shutdown.clone(), 1).expect("a worker");
    let probe = shoal_lb::Probe {
        protocol: shoal_lb::ProbeProtocol::Https,
        ..probe()
    };
    lb.apply(BalancerConfig {
        listeners: vec![],
        pools: vec![pool("p", &[&member], Some(probe))],
    })
    .await
    .unwrap();
    wait_healthy(&lb, 1).await;
    member
        .healthy
        .store(false, std::sync::atomic::Ordering::SeqCst);
    wait_for("the member to be unhealthy", || {
        state_of(&lb, "secure") == shoal_lb::HealthState::Unhealthy
    })
    .await;
    shutdown.cancel();
}
