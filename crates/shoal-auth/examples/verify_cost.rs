//! What checking a bearer token costs per request: `Authority::verify` (kid lookup in the
//! cached key ring, RS256 signature check, claims) on one core.
//! `cargo run -p shoal-auth --release --example verify_cost [-- N]`.

use std::sync::Arc;

use tokio::time::Instant;

use shoal_auth::{Authority, Principal, PrincipalKind, ARM_AUDIENCES};
use shoal_store::MemoryStore;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let authority = Authority::new(Arc::new(MemoryStore::default()));
    let principal = Principal {
        oid: "00000000-0000-0000-0000-0000000000aa".into(),
        tid: "00000000-0000-0000-0000-0000000000bb".into(),
        appid: "00000000-0000-0000-0000-0000000000cc".into(),
        kind: PrincipalKind::ServicePrincipal,
    };
    let now = jiff::Timestamp::now().as_second();
    let issued = authority
        .issue(
            &principal,
            ARM_AUDIENCES[0],
            "https://127.0.0.1:7443/tenant/v2.0",
            now,
            3600,
        )
        .await
        .expect("issue");
    // Warm the key ring cache as a running server has it.
    authority
        .verify(&issued.token, &ARM_AUDIENCES, now)
        .await
        .expect("verify");
    let mut samples = Vec::with_capacity(n as usize);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let p = authority
            .verify(&issued.token, &ARM_AUDIENCES, now)
            .await
            .expect("verify");
        samples.push(t.elapsed().as_nanos() as u64);
        assert_eq!(p.oid, principal.oid);
    }
    let total = start.elapsed();
    samples.sort_unstable();
    let pct = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    println!(
        "verify: {n} tokens in {:.2} s: mean {:.1} µs, p50 {:.1} µs, p99 {:.1} µs ({:.0} verifications/s on one core)",
        total.as_secs_f64(),
        total.as_secs_f64() * 1e6 / f64::from(n),
        pct(0.5),
        pct(0.99),
        f64::from(n) / total.as_secs_f64()
    );
}
