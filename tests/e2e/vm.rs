//! Issue 6: real virtual machines (the QEMU driver) with the real binary and the tiny
//! test VM that `images/build-tiny-vm.sh` builds from Debian's packages. VMs boot in
//! seconds under TCG, so there are two tests, each doing several things in one set.
//!
//! When QEMU, busybox-static or a kernel is missing they print `SKIPPED: <reason>` and
//! return, or fail under `SHOAL_REQUIRE_ALL=1` (CI): run `scripts/install-vm-deps.sh`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(120);

/// Builds the tiny VM once per test run; `Err` with the reason when this host cannot run
/// VMs.
pub(crate) fn tiny_vm() -> Result<&'static Path, &'static str> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let qemu = Command::new("qemu-system-x86_64").arg("--version").output();
            if !qemu.is_ok_and(|o| o.status.success()) {
                return Err("qemu-system-x86_64 is not installed (scripts/install-vm-deps.sh installs it, as root)".into());
            }
            let out = repo_root().join("target/e2e-tiny-vm");
            let built = Command::new("bash")
                .arg(repo_root().join("images/build-tiny-vm.sh"))
                .arg(&out)
                .output()
                .expect("run build-tiny-vm.sh");
            if !built.status.success() {
                return Err(format!(
                    "images/build-tiny-vm.sh failed (scripts/install-vm-deps.sh installs what it needs):\n{}",
                    String::from_utf8_lossy(&built.stderr)
                ));
            }
            Ok(out)
        })
        .as_ref()
        .map(PathBuf::as_path)
        .map_err(String::as_str)
}

pub(crate) fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `shoal image create --kind vm` of the tiny VM as `vms/tiny:VERSION`, plus `extra`.
pub(crate) fn create_image(s: &Server, rg: &str, img: &Path, version: &str, extra: &[&str]) {
    let (kernel, initrd) = (img.join("kernel"), img.join("initrd"));
    let mut args = vec![
        "image",
        "create",
        "-g",
        rg,
        "--gallery",
        "vms",
        "--name",
        "tiny",
        "--version",
        version,
        "--kind",
        "vm",
        "--kernel",
        path(&kernel),
        "--initrd",
        path(&initrd),
    ];
    args.extend_from_slice(extra);
    s.cli_ok(&args);
}

fn instance_view(s: &Server, rg: &str, id: u64) -> Value {
    s.cli_ok(&[
        "vmss",
        "get-instance-view",
        "-g",
        rg,
        "-n",
        "vm",
        "--instance-id",
        &id.to_string(),
    ])
}

/// `GET http://ADDR/PATH` as (status, trimmed body).
fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    http_get(&format!("http://{addr}{path}")).map(|(st, b)| (st, b.trim().to_string()))
}

fn address_of(s: &Server, rg: &str, id: u64) -> String {
    let inst = s
        .instances(rg, "vm")
        .into_iter()
        .find(|i| i.id == id)
        .expect("instance listed");
    inst.address
        .clone()
        .unwrap_or_else(|| panic!("instance {id} has no address: {inst:?}"))
}

/// Waits until instance `id` runs and answers `instance ID`; returns its address.
pub(crate) fn wait_answering(s: &Server, rg: &str, id: u64) -> String {
    let mut addr = String::new();
    wait_until(WAIT, &format!("VM {id} runs and answers"), || {
        let Some(i) = s.instances(rg, "vm").into_iter().find(|i| i.id == id) else {
            return false;
        };
        let Some(a) = i.address.filter(|_| i.power == "running") else {
            return false;
        };
        addr = a;
        get(&addr, "/") == Some((200, format!("instance {id}")))
    });
    addr
}

/// Files and QEMU processes the VMs of this server left behind.
fn vm_leftovers(s: &Server) -> (Vec<u32>, Vec<PathBuf>) {
    let qemus: Vec<u32> = processes_under(&s.data_dir())
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.starts_with("qemu"))
        })
        .collect();
    let files = std::fs::read_dir(s.data_dir().join("agent/vms"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    (qemus, files)
}

#[test]
fn a_vm_scale_set_answers_keeps_its_disk_and_is_repaired() {
    let img = match tiny_vm() {
        Ok(img) => img,
        Err(why) => {
            return skip_or_fail("a_vm_scale_set_answers_keeps_its_disk_and_is_repaired", why)
        }
    };
    let _g = serial();
    let mut s = Server::start();
    let rg = "vms";
    s.cli_ok(&["group", "create", "--name", rg, "--location", "local"]);
    let disk = img.join("disk.img");
    create_image(
        &s,
        rg,
        img,
        "1.0.0",
        &["--disk", path(&disk), "--port", "8080"],
    );
    let frontend = free_port().to_string();
    s.cli_ok(&[
        "vmss",
        "create",
        "-g",
        rg,
        "-n",
        "vm",
        "--image",
        "vms/tiny:1.0.0",
        "--instance-count",
        "2",
        "--vm-sku",
        "Shoal_1vCPU_512MB",
        "--custom-data",
        "hello from custom data",
        "--assign-identity",
        "--lb",
        "lb",
        "--lb-frontend-port",
        &frontend,
    ]);

    // Both VMs answer at their own address, each naming its own instance id, and serve
    // the custom data they read through fw_cfg.
    for id in [0, 1] {
        let addr = wait_answering(&s, rg, id);
        assert_eq!(
            get(&addr, "/custom-data"),
            Some((200, "hello from custom data".to_string()))
        );
    }
    // The agent's metadata endpoint answers inside the guest (the host is 10.0.2.2 there).
    // (A guest under TCG on a loaded host may take a few tries to fetch it.)
    let addr0 = address_of(&s, rg, 0);
    wait_until(
        Duration::from_secs(60),
        "the guest reads its metadata",
        || {
            get(&addr0, "/cgi-bin/metadata").is_some_and(|(status, metadata)| {
                status == 200 && metadata.contains("\"vmScaleSetName\":\"vm\"")
            })
        },
    );
    // …and so does its managed identity: a token, with the secret fw_cfg gave it.
    let last = std::cell::RefCell::new(None);
    wait_until_or(
        Duration::from_secs(60),
        "the guest gets a token of its set's identity",
        || {
            let answer = get(&addr0, "/cgi-bin/identity");
            let ok = answer
                .as_ref()
                .is_some_and(|(status, body)| *status == 200 && body.contains("\"access_token\""));
            *last.borrow_mut() = answer;
            ok
        },
        || format!("last answer: {:?}", last.borrow()),
    );
    let view = instance_view(&s, rg, 0);
    let limits = view["shoal"]["limits"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        limits.contains("QEMU") && (limits.contains("TCG") || limits.contains("KVM")),
        "the view names the accelerator: {view}"
    );
    // …and both answer through the load balancer.
    wait_until(WAIT, "both VMs answer through the load balancer", || {
        let seen: BTreeSet<String> = (0..20)
            .filter_map(|_| get(&format!("127.0.0.1:{frontend}"), "/"))
            .map(|(_, b)| b)
            .collect();
        seen == BTreeSet::from(["instance 0".to_string(), "instance 1".to_string()])
    });

    // The disk: a file written inside the guest survives a restart and is gone after a
    // reimage (a fresh overlay of the image's disk).
    let addr = address_of(&s, rg, 0);
    let written = http_request(
        "POST",
        &format!("http://{addr}/cgi-bin/disk?name=marker"),
        Some("kept across restart"),
    );
    assert_eq!(
        written.map(|(st, b)| (st, b.trim().to_string())),
        Some((200, "written".to_string()))
    );
    s.cli_ok(&[
        "vmss",
        "restart",
        "-g",
        rg,
        "-n",
        "vm",
        "--instance-ids",
        "0",
    ]);
    let addr = wait_answering(&s, rg, 0);
    assert_eq!(
        get(&addr, "/cgi-bin/disk?name=marker"),
        Some((200, "kept across restart".to_string()))
    );
    s.cli_ok(&[
        "vmss",
        "reimage",
        "-g",
        rg,
        "-n",
        "vm",
        "--instance-ids",
        "0",
    ]);
    let addr = wait_answering(&s, rg, 0);
    assert_eq!(
        get(&addr, "/cgi-bin/disk?name=marker").map(|(st, _)| st),
        Some(404),
        "a reimaged VM has a fresh disk"
    );

    // kill -9 of one QEMU: detected, and the VM runs again.
    let before = s
        .instances(rg, "vm")
        .into_iter()
        .find(|i| i.id == 1)
        .expect("instance 1");
    let pid = before.pid.expect("QEMU pid");
    // SAFETY: killing the QEMU process of our own test server's VM, by pid.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    wait_until(WAIT, "VM 1 runs again in a new QEMU", || {
        s.instances(rg, "vm")
            .into_iter()
            .any(|i| i.id == 1 && i.power == "running" && i.pid.is_some_and(|p| p != pid))
    });
    wait_answering(&s, rg, 1);
    let view = instance_view(&s, rg, 1);
    assert!(
        view["shoal"]["restarts"].as_u64().unwrap_or(0) >= 1,
        "the crash is counted: {view}"
    );

    // Shoal itself is killed and comes back: it adopts the running VMs (the same QEMU
    // processes, found by pid and start time) and boots no duplicates.
    let pids = |s: &Server| -> Vec<(u64, Option<u32>)> {
        s.instances(rg, "vm")
            .iter()
            .map(|i| (i.id, i.pid))
            .collect()
    };
    let before = pids(&s);
    s.kill9();
    s.restart();
    wait_until(WAIT, "the restarted agent adopts both VMs", || {
        s.log().matches("Adopting a running VM").count() == 2
    });
    wait_until(WAIT, "both VMs are reported running again", || {
        s.instances(rg, "vm")
            .iter()
            .filter(|i| i.power == "running")
            .count()
            == 2
    });
    assert_eq!(pids(&s), before, "running VMs are adopted, not rebooted");
    assert_eq!(vm_leftovers(&s).0.len(), 2, "one QEMU per VM");
    wait_answering(&s, rg, 0);

    // Deleting the set leaves no QEMU process, overlay or control socket.
    s.cli_ok(&["vmss", "delete", "-g", rg, "-n", "vm"]);
    wait_until(
        Duration::from_secs(30),
        "no QEMU process or VM directory is left",
        || vm_leftovers(&s) == (vec![], vec![]),
    );
    let stray: Vec<PathBuf> = walk(&s.data_dir())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "sock" || e == "qcow2"))
        .collect();
    assert!(stray.is_empty(), "files left: {stray:?}");
}

#[test]
fn bad_vm_images_fail_with_what_to_fix_and_leave_no_qemu() {
    let img = match tiny_vm() {
        Ok(img) => img,
        Err(why) => {
            return skip_or_fail("bad_vm_images_fail_with_what_to_fix_and_leave_no_qemu", why)
        }
    };
    let _g = serial();
    let s = Server::start_with(&["--boot-timeout-seconds", "20"]);
    let rg = "badvms";
    s.cli_ok(&["group", "create", "--name", rg, "--location", "local"]);

    // A file that is no kernel is refused before anything is uploaded.
    let bogus = s.dir.path().join("not-a-kernel");
    std::fs::write(&bogus, "#!/bin/sh\necho I am not a kernel\n").expect("write");
    let out = s.cli(&[
        "image",
        "create",
        "-g",
        rg,
        "--gallery",
        "vms",
        "--name",
        "bad",
        "--version",
        "1.0.0",
        "--kind",
        "vm",
        "--kernel",
        path(&bogus),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("is not a Linux kernel"),
        "{err}"
    );
    let out = s.cli(&[
        "image",
        "create",
        "-g",
        rg,
        "--gallery",
        "vms",
        "--name",
        "bad",
        "--version",
        "1.0.0",
        "--kind",
        "vm",
        "--kernel",
        path(&s.dir.path().join("missing")),
    ]);
    assert!(!out.status.success(), "a missing kernel is refused");

    // A guest that never opens the image's port: the tiny guest listens where its
    // command line says, and this image says another port than it declares.
    create_image(
        &s,
        rg,
        img,
        "1.0.0",
        &["--port", "9999", "--cmdline", "shoal.port=7777"],
    );
    s.cli_ok(&[
        "vmss",
        "create",
        "-g",
        rg,
        "-n",
        "vm",
        "--image",
        "vms/tiny:1.0.0",
        "--instance-count",
        "1",
        "--vm-sku",
        "Shoal_1vCPU_512MB",
        "--no-wait",
    ]);
    let mut message = String::new();
    wait_until(WAIT, "the VM is ProvisioningState/failed", || {
        // `--no-wait` returns before the controller writes the instance record, so
        // the first looks may find no instance 0 yet.
        let out = s.cli(&[
            "vmss",
            "get-instance-view",
            "-g",
            rg,
            "-n",
            "vm",
            "--instance-id",
            "0",
        ]);
        if !out.status.success() {
            return false;
        }
        let view: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let failed = view["statuses"]
            .as_array()
            .is_some_and(|st| st.iter().any(|x| x["code"] == "ProvisioningState/failed"));
        message = view.to_string();
        failed
    });
    assert!(
        message.contains("never answered on its port 9999"),
        "the failure says what is wrong: {message}"
    );
    assert!(
        message.contains("shoal vmss logs"),
        "and where to look: {message}"
    );
    wait_until(Duration::from_secs(30), "no QEMU process is left", || {
        vm_leftovers(&s).0.is_empty()
    });

    // A size larger than any host is refused at once (Azure's 409 SkuNotAvailable),
    // with the numbers and what to do, and nothing is created.
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 64 {
        let out = s.cli(&[
            "vmss",
            "create",
            "-g",
            rg,
            "-n",
            "huge",
            "--image",
            "vms/tiny:1.0.0",
            "--instance-count",
            "1",
            "--vm-sku",
            "Shoal_64vCPU_262144MB",
            "--no-wait",
        ]);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.status.success(),
            "an oversized set was accepted: {said}"
        );
        assert!(
            said.contains("SkuNotAvailable")
                && said.contains("asks for 64 vCPUs")
                && said.contains("choose a smaller size"),
            "{said}"
        );
        let shown = s.cli(&["vmss", "show", "-g", rg, "-n", "huge"]);
        assert!(!shown.status.success(), "the refused set exists");
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
