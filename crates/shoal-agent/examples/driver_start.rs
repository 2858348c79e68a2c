//! The process driver alone: provision and start N instances of an image directory,
//! then destroy them, and print the time and the agent-side CPU of each phase. It is the
//! agent's share of a scale-out without the server, the store or a prober, for profiling
//! (`perf record -g -- target/release/examples/driver_start ...`).
//!
//! ```text
//! cargo build --release -p shoal-agent --example driver_start
//! sudo target/release/examples/driver_start --image examples/web --command ./shoal-web \
//!     --count 1000 --network host-ports
//! ```
//!
//! `--network namespaces --warm N` fills a warm pool of N namespaces before the clock
//! starts (the agent's `--warm-namespaces`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use shoal_agent::driver::process::{NetworkMode, ProcessDriver, ProcessDriverConfig};
use shoal_agent::driver::{Driver, InstanceKey, InstanceSpec};

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we pass; RUSAGE_SELF has no preconditions.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn copy_resolved(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("image copy");
    for entry in std::fs::read_dir(from).expect("image directory") {
        let path = entry.expect("entry").path();
        let dest = to.join(path.file_name().expect("name"));
        if path.is_dir() {
            copy_resolved(&path, &dest);
        } else {
            std::fs::copy(&path, &dest).expect("image file");
        }
    }
}

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_owned())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let count: usize = arg(&args, "--count", "200").parse().expect("--count N");
    let concurrency: usize = arg(&args, "--concurrency", "32")
        .parse()
        .expect("--concurrency N");
    let image = PathBuf::from(arg(&args, "--image", "examples/web"))
        .canonicalize()
        .expect("--image DIR exists");
    let command = arg(&args, "--command", "./shoal-web");
    let network = match arg(&args, "--network", "host-ports").as_str() {
        "namespaces" => NetworkMode::Namespaces,
        _ => NetworkMode::HostPorts,
    };
    let root = tempfile::tempdir().expect("temporary directory");
    // The image as `shoal image create` bundles it: symbolic links resolved.
    let bundle = root.path().join("image");
    copy_resolved(&image, &bundle);
    let mut config = ProcessDriverConfig::new(root.path().join("instances"));
    config.network = network;
    config.cgroup_parent = format!("shoal-bench-{}", std::process::id());
    config.netns_dir = root.path().join("netns");
    config.outbound_nat = false;
    config.destroy_grace = Duration::from_secs(2);
    let warm: usize = arg(&args, "--warm", "0").parse().expect("--warm N");
    config.warm_namespaces = warm;
    let driver = Arc::new(ProcessDriver::new(config).expect("driver"));
    if warm > 0 {
        // The pool starts after recovery, as in the agent.
        let t = Instant::now();
        driver.recover().await.expect("recover");
        while driver.warm_namespaces_ready() < warm {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "{warm} warm namespaces ready after {:.2} s",
            t.elapsed().as_secs_f64()
        );
    }
    let specs: Vec<InstanceSpec> = (0..count)
        .map(|i| InstanceSpec {
            key: InstanceKey(format!("bench-{i}")),
            vmss: "bench".into(),
            instance_id: i.to_string(),
            image_dir: bundle.clone(),
            command: command.clone(),
            port: 8080,
            vcpus: 1,
            memory_mb: 128,
            custom_data: None,
            metadata_endpoint: "http://127.0.0.1:9/".into(),
            env: Vec::new(),
        })
        .collect();
    let slots = Arc::new(tokio::sync::Semaphore::new(concurrency));

    let (t, c) = (Instant::now(), cpu_seconds());
    let mut tasks = Vec::new();
    for spec in specs.clone() {
        let (driver, slots) = (driver.clone(), slots.clone());
        tasks.push(tokio::spawn(async move {
            let _slot = slots.acquire().await.expect("semaphore");
            driver.provision(&spec).await.expect("provision");
            driver.start(&spec).await.expect("start").endpoint
        }));
    }
    let mut endpoints = Vec::new();
    for task in tasks {
        endpoints.push(task.await.expect("task"));
    }
    println!(
        "start {count}: {:.2} s, agent CPU {:.2} s",
        t.elapsed().as_secs_f64(),
        cpu_seconds() - c
    );
    let t = Instant::now();
    for endpoint in &endpoints {
        while tokio::net::TcpStream::connect(endpoint).await.is_err() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    println!("all listening {:.2} s later", t.elapsed().as_secs_f64());

    let (t, c) = (Instant::now(), cpu_seconds());
    let mut tasks = Vec::new();
    for spec in specs {
        let driver = driver.clone();
        tasks.push(tokio::spawn(async move {
            driver.destroy(&spec.key).await.expect("destroy")
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    println!(
        "destroy {count}: {:.2} s, agent CPU {:.2} s",
        t.elapsed().as_secs_f64(),
        cpu_seconds() - c
    );
}
