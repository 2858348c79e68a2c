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

/// Whether `lb` forwards in the kernel here; if not, says `SKIPPED:` (the copying path
/// is still tested), or fails under `SHOAL_REQUIRE_ALL=1`.
fn kernel_forwarding_here(lb: &Balancer) -> bool {
    if lb.kernel_forwarding() {
        return true;
    }
    let why = "SKIPPED: kernel forwarding: this process cannot load the eBPF sockmap \
               (it needs root and a kernel with CONFIG_BPF_STREAM_PARSER)";
    assert!(
        !std::env::var("SHOAL_REQUIRE_ALL").is_ok_and(|v| v == "1"),
        "{why}"
    );
    eprintln!("{why}");
    false
}

/// A balancer with one L4 listener "tcp" in front of the single member at `member`,
/// forwarding in the kernel or not; `None` (having said `SKIPPED:`) when kernel
/// forwarding is asked for and this process cannot have it.
async fn front_of(
    member: std::net::SocketAddr,
    kernel: bool,
) -> Option<(Balancer, CancellationToken, std::net::SocketAddr)> {
    let shutdown = CancellationToken::new();
    let lb = Balancer::new(shutdown.clone());
    lb.set_kernel_forwarding(kernel);
    if kernel && !kernel_forwarding_here(&lb) {
        shutdown.cancel();
        return None;
    }
    let mut p = pool("p", &[], None);
    p.members.push(shoal_lb::Member::new("member", member));
    lb.apply(BalancerConfig {
        listeners: vec![tcp_listener("tcp", TcpSettings::new("p"))],
        pools: vec![p],
    })
    .await
    .unwrap();
    let front = lb.local_addr("tcp").unwrap();
    Some((lb, shutdown, front))
}

/// Fills `chunk` with the test stream's bytes from position `at` on.
fn fill(chunk: &mut [u8], at: u64) {
    for (i, b) in chunk.iter_mut().enumerate() {
        *b = pattern(at + i as u64);
    }
}

/// The byte at `at` of every test stream: depends on the position, so a lost, doubled or
/// reordered segment shows.
fn pattern(at: u64) -> u8 {
    (at.wrapping_mul(31) ^ (at >> 9)) as u8
}

/// Where bytes received in place of the stream's byte `at` came from: the offset
/// whose pattern they match (a gap or a repeat), if any within 64 MiB.
fn whence(got: &[u8], at: u64) -> String {
    let probe = &got[..got.len().min(256)];
    let matches = |from: u64| {
        probe
            .iter()
            .enumerate()
            .all(|(j, b)| *b == pattern(from + j as u64))
    };
    let found = (1..64u64 << 20).find_map(|d| {
        [Some(at + d), at.checked_sub(d)]
            .into_iter()
            .flatten()
            .find(|&from| matches(from))
    });
    match found {
        Some(from) if from > at => format!("{} bytes are missing", from - at),
        Some(from) => format!("bytes from {from} come again ({} back)", at - from),
        None => format!("{} bytes that match no offset near it", probe.len()),
    }
}

const GREETING: &[u8] = b"hello from the member\n";

/// A member that speaks first (a greeting as soon as it accepts), streams `down` pattern
/// bytes while it reads whatever the client sends until the client's end of stream, then
/// says what it received ("ok N" or where the pattern broke) and closes.
async fn streaming_member(down: u64) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut rd, mut wr) = stream.into_split();
                wr.write_all(GREETING).await.unwrap();
                let writer = tokio::spawn(async move {
                    let mut at = 0u64;
                    let mut chunk = vec![0u8; 64 * 1024];
                    while at < down {
                        let n = (down - at).min(chunk.len() as u64) as usize;
                        fill(&mut chunk[..n], at);
                        wr.write_all(&chunk[..n]).await.unwrap();
                        at += n as u64;
                    }
                    wr
                });
                let mut got = 0u64;
                let mut broken = None;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = rd.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    for (i, b) in buf[..n].iter().enumerate() {
                        if broken.is_none() && *b != pattern(got + i as u64) {
                            broken = Some(got + i as u64);
                        }
                    }
                    got += n as u64;
                }
                let mut wr = writer.await.unwrap();
                let verdict = match broken {
                    None => format!("ok {got}\n"),
                    Some(at) => format!("broken at {at} of {got}\n"),
                };
                wr.write_all(verdict.as_bytes()).await.unwrap();
                wr.shutdown().await.unwrap();
            });
        }
    });
    addr
}

/// One client: writes `up` pattern bytes at once (before the member is even connected),
/// ends its stream, and reads everything back. Returns what the member said.
async fn stream_through(front: std::net::SocketAddr, up: u64, down: u64, kernel: bool) -> String {
    let stream = TcpStream::connect(front).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let mut at = 0u64;
        let mut chunk = vec![0u8; 48 * 1024];
        while at < up {
            let n = (up - at).min(chunk.len() as u64) as usize;
            fill(&mut chunk[..n], at);
            wr.write_all(&chunk[..n]).await.unwrap();
            at += n as u64;
        }
        wr.shutdown().await.unwrap();
    });
    let mut all = Vec::new();
    rd.read_to_end(&mut all).await.unwrap();
    writer.await.unwrap();
    assert!(
        all.starts_with(GREETING),
        "the greeting came first (kernel forwarding: {kernel})"
    );
    let body = &all[GREETING.len()..];
    assert!(
        body.len() as u64 >= down,
        "{} of {down} bytes came back (kernel forwarding: {kernel})",
        body.len()
    );
    for (i, b) in body[..down as usize].iter().enumerate() {
        assert_eq!(*b, pattern(i as u64), "byte {i} of the member's stream");
    }
    String::from_utf8_lossy(&body[down as usize..]).into_owned()
}

/// Streams bigger than every buffer on the way, both ways at once, through a member that
/// speaks first and clients that write before it is connected, then half-close: every
/// byte arrives once and in order, the ends of stream are passed on after the last
/// byte, and the byte counters add up. Once with the kernel forwarding (where this
/// machine can), once copying in user space.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_cross_whole_and_in_order_with_half_closes() {
    init_tracing();
    const UP: u64 = 3 << 20;
    const DOWN: u64 = 5 << 20;
    const CLIENTS: u64 = 12;
    for kernel in [true, false] {
        let member = streaming_member(DOWN).await;
        let Some((lb, shutdown, front)) = front_of(member, kernel).await else {
            continue;
        };
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| tokio::spawn(stream_through(front, UP, DOWN, kernel)))
            .collect();
        for client in clients {
            let said = bounded("a stream through the balancer", client)
                .await
                .unwrap();
            assert_eq!(said, format!("ok {UP}\n"), "kernel forwarding: {kernel}");
        }
        wait_for("connections to be counted as closed", || {
            lb.stats()[0].active == 0
        })
        .await;
        let stats = &lb.stats()[0];
        // Linking is an optimisation a busy connection may miss (its queues never drain
        // between reads, so it is copied): the kernel path must have carried some of
        // them, and the streams above arrived whole either way.
        if kernel {
            assert!((1..=CLIENTS).contains(&stats.kernel_forwarded), "{stats:?}");
        } else {
            assert_eq!(stats.kernel_forwarded, 0, "{stats:?}");
        }
        assert_eq!(stats.bytes_in, CLIENTS * UP, "{stats:?}");
        let down = GREETING.len() as u64 + DOWN + format!("ok {UP}\n").len() as u64;
        assert_eq!(stats.bytes_out, CLIENTS * down, "{stats:?}");
        shutdown.cancel();
    }
}

/// A client that stops reading holds its member back: what the member can write while
/// nobody reads stays bounded (socket buffers plus the balancer's few megabytes in
/// flight), not the whole stream, and everything arrives in order once the client reads
/// again. The kernel's forwarding has no such limit of its own; the balancer pauses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_holds_its_member_back() {
    init_tracing();
    // A short stream that ends while the member is held back (its end of stream then
    // waits behind what the balancer holds), and a long one.
    for (kernel, stream_len) in [(true, 8 << 20), (true, 256 << 20), (false, 256 << 20)] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let member = listener.local_addr().unwrap();
        let written = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = written.clone();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            write_stream(&mut stream, stream_len, &counter).await;
        });
        let Some((_lb, shutdown, front)) = front_of(member, kernel).await else {
            continue;
        };
        let mut client = TcpStream::connect(front).await.unwrap();
        // Nobody reads for a second: the member gets stuck once the buffers are full.
        held_back(&written, "the member", "a client", kernel).await;
        // The member's end of stream comes after its last byte (it may have come while
        // the balancer held the member back).
        read_whole_stream(&mut client, stream_len, kernel).await;
        shutdown.cancel();
    }
}

/// The same the other way: a member that reads nothing for a second holds back a
/// client uploading a long stream, and then gets all of it in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_stops_reading_holds_its_client_back() {
    init_tracing();
    const STREAM: u64 = 256 << 20;
    for kernel in [true, false] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let member = listener.local_addr().unwrap();
        let Some((_lb, shutdown, front)) = front_of(member, kernel).await else {
            continue;
        };
        let written = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = written.clone();
        tokio::spawn(async move {
            let mut client = TcpStream::connect(front).await.unwrap();
            if write_stream(&mut client, STREAM, &counter).await {
                let _ = client.shutdown().await;
                // Held open until the member has read the end of the stream.
                let _ = client.read(&mut [0u8; 1]).await;
            }
        });
        let (mut stream, _) = bounded("the client's connection", listener.accept())
            .await
            .unwrap();
        held_back(&written, "the client", "a member", kernel).await;
        read_whole_stream(&mut stream, STREAM, kernel).await;
        shutdown.cancel();
    }
}

/// A client that sends its request, ends its stream and then reads a long answer
/// slowly (held back meanwhile) gets all of it and then the end. With the kernel
/// forwarding, the client's end of stream reaches the member before the answer starts,
/// which leaves the member's socket unable to take segments passed to itself: a way of
/// holding the member back that passes its segments there (tried) loses the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_client_that_reads_slowly_gets_the_whole_answer() {
    init_tracing();
    const ANSWER: u64 = 16 << 20;
    for kernel in [true, false] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let member = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            // A greeting, so that both sides have spoken and the pair is linked before
            // the client ends its stream.
            stream.write_all(b"ready\n").await.unwrap();
            let mut request = Vec::new();
            stream.read_to_end(&mut request).await.unwrap();
            let written = std::sync::atomic::AtomicU64::new(0);
            write_stream(&mut stream, ANSWER, &written).await;
        });
        let Some((lb, shutdown, front)) = front_of(member, kernel).await else {
            continue;
        };
        let mut client = TcpStream::connect(front).await.unwrap();
        let mut greeting = [0u8; 6];
        client.read_exact(&mut greeting).await.unwrap();
        client.write_all(b"send me a lot").await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        client.shutdown().await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        read_whole_stream(&mut client, ANSWER, kernel).await;
        if kernel {
            assert_eq!(lb.stats()[0].kernel_forwarded, 1, "{:?}", lb.stats()[0]);
        }
        shutdown.cancel();
    }
}

/// Waits a second while nobody reads what `writer` sends to `reader`, then checks it
/// got stuck: what it wrote (`written`) is bounded by the buffers on the way and the
/// balancer's few megabytes in flight, not the whole stream.
async fn held_back(
    written: &std::sync::atomic::AtomicU64,
    writer: &str,
    reader: &str,
    kernel: bool,
) {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stuck_at = written.load(Ordering::Relaxed);
    assert!(
        stuck_at < 48 << 20,
        "{writer} wrote {} MiB to {reader} that reads nothing (kernel forwarding: {kernel})",
        stuck_at >> 20
    );
}

/// Writes `len` bytes of the test stream to `to` in 64 KiB chunks, noting in `written`
/// how far it got. Returns false if the connection broke.
async fn write_stream(
    to: &mut TcpStream,
    len: u64,
    written: &std::sync::atomic::AtomicU64,
) -> bool {
    let mut chunk = vec![0u8; 64 * 1024];
    let mut at = 0u64;
    while at < len {
        fill(&mut chunk, at);
        if to.write_all(&chunk).await.is_err() {
            return false;
        }
        at += chunk.len() as u64;
        written.store(at, Ordering::Relaxed);
    }
    true
}

/// Reads `len` bytes of the test stream and then its end from `from`, failing at the
/// first wrong byte with where it came from.
async fn read_whole_stream(from: &mut TcpStream, len: u64, kernel: bool) {
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let n = bounded("the rest of the stream", from.read(&mut buf))
            .await
            .unwrap();
        assert!(
            n > 0,
            "the stream ended at {at} (kernel forwarding: {kernel})"
        );
        if let Some(i) = (0..n).find(|&i| buf[i] != pattern(at + i as u64)) {
            panic!(
                "byte {} is wrong: {} (kernel forwarding: {kernel})",
                at + i as u64,
                whence(&buf[i..n], at + i as u64)
            );
        }
        at += n as u64;
    }
    let n = bounded("the end of the stream", from.read(&mut buf))
        .await
        .unwrap();
    assert_eq!(
        n, 0,
        "nothing after the stream (kernel forwarding: {kernel})"
    );
}

/// A member that answers and then resets the connection once its answer has left it
/// (all of it acknowledged): the client, which was not reading meanwhile, still gets
/// the whole answer and then the end of the stream. With the kernel forwarding, the
/// answer is still on its way inside the balancer when the reset comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_arrives_whole_when_the_member_resets_after_it() {
    init_tracing();
    // More than the client side's buffers hold (~4 MiB here), less than the 2 MiB in
    // flight that would hold the member back.
    const ANSWER: u64 = 5632 << 10;
    for kernel in [true, false] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let member = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = [0u8; 5];
                    stream.read_exact(&mut request).await.unwrap();
                    let mut chunk = vec![0u8; 64 * 1024];
                    let mut at = 0u64;
                    while at < ANSWER {
                        fill(&mut chunk, at);
                        stream.write_all(&chunk).await.unwrap();
                        at += chunk.len() as u64;
                    }
                    // Wait until the balancer has acknowledged every byte, then reset.
                    loop {
                        let mut queued: libc::c_int = 0;
                        // SAFETY: SIOCOUTQ writes one int.
                        unsafe {
                            libc::ioctl(
                                std::os::fd::AsRawFd::as_raw_fd(&stream),
                                libc::TIOCOUTQ,
                                &mut queued,
                            )
                        };
                        if queued == 0 {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    stream.set_zero_linger().unwrap();
                });
            }
        });
        let Some((_lb, shutdown, front)) = front_of(member, kernel).await else {
            continue;
        };
        let mut client = TcpStream::connect(front).await.unwrap();
        client.write_all(b"hello").await.unwrap();
        // Not reading yet: the answer piles up on the way and the member resets.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut all = Vec::new();
        let _ = bounded("the answer", client.read_to_end(&mut all)).await;
        assert_eq!(all.len() as u64, ANSWER, "kernel forwarding: {kernel}");
        for (i, b) in all.iter().enumerate() {
            assert_eq!(
                *b,
                pattern(i as u64),
                "byte {i} (kernel forwarding: {kernel})"
            );
        }
        shutdown.cancel();
    }
}
