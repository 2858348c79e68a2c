//! By-hand throughput check of the redb store's group commit (not a test: it asserts
//! nothing). Run with
//! `cargo run -p shoal-store --release --example txn_rate [writers] [seconds]`.
//!
//! N concurrent writers each do single-key puts (like instance status reports during a
//! scale-out) for a few seconds against a fresh database in a temp dir; it prints the
//! committed transactions per second, and the same for one writer (one fsync per
//! transaction) for comparison.

use std::sync::Arc;
use std::time::Duration;

use shoal_store::{RedbStore, Store, StoreExt};
use tokio::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn rate(writers: usize, for_how_long: Duration) -> Result<f64, BoxError> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path().join("state.redb"))?);
    let start = Instant::now();
    let deadline = start + for_how_long;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                let status = format!(r#"{{"instance":{done},"powerState":"running"}}"#);
                store
                    .put(format!("status/{w}/{}", done % 64), status)
                    .await?;
                done += 1;
            }
            Ok::<_, BoxError>(done)
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let revision = store.revision().await?;
    if revision != total {
        return Err(format!("lost writes: {total} acknowledged, store at {revision}").into());
    }
    Ok(total as f64 / elapsed)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let writers: usize = args.next().map_or(Ok(16), |a| a.parse())?;
    let seconds: u64 = args.next().map_or(Ok(3), |a| a.parse())?;
    let seconds = Duration::from_secs(seconds);
    let one = rate(1, seconds).await?;
    println!("1 writer:   {one:>8.0} txn/s (one fsync per txn)");
    let many = rate(writers, seconds).await?;
    println!("{writers} writers: {many:>8.0} txn/s (group commit)");
    Ok(())
}
