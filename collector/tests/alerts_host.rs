//! `host_cpu` and `host_memory` end to end: real load on this host, with the
//! window, `for` and (for memory) the threshold set by configuration around
//! what the host uses now.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::*;

fn meminfo_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn busy_cores_raise_host_cpu_and_idle_resolves_it() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let config = write_file(
        dir.path(),
        "collector.toml",
        "[detect]\ninterval = \"200ms\"\n[rules.host_cpu]\nfor = \"1s\"\nwindow = \"2s\"\n",
    );
    let _coll = collector(addr, dir.path(), &["--config", &config]);
    let ag = agent(addr, dir.path(), &[]);
    wait_for(Duration::from_secs(20), || {
        hosts_json(addr).first().cloned()
    })
    .unwrap_or_else(|| panic!("no host:\n{}", ag.log_text()));
    // Every core busy, bounded in time.
    let stop = Arc::new(AtomicBool::new(false));
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let spinners: Vec<_> = (0..cores)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(30);
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
        })
        .collect();
    let started = Instant::now();
    let firing = wait_for(Duration::from_secs(20), || {
        find_alert(addr, "host_cpu", false, |a| a["state"] == "firing")
    });
    stop.store(true, Ordering::Relaxed);
    for s in spinners {
        s.join().unwrap();
    }
    let firing =
        firing.unwrap_or_else(|| panic!("no host_cpu: {:?}", alerts_json(addr, &["--all"])));
    println!(
        "host_cpu fired after {:?}: {}",
        started.elapsed(),
        firing["summary"]
    );
    assert_eq!(firing["severity"], "medium");
    let id = firing["id"].clone();
    wait_for(Duration::from_secs(20), || {
        find_alert(addr, "host_cpu", true, |a| {
            a["id"] == id && a["state"] == "resolved"
        })
    })
    .unwrap_or_else(|| panic!("not resolved: {:?}", alerts_json(addr, &["--all"])));
}

#[test]
fn memory_taken_past_the_threshold_raises_host_memory() {
    let total = meminfo_kib("MemTotal:") * 1024;
    let used = total - meminfo_kib("MemAvailable:") * 1024;
    // The threshold 2 % of RAM above what is used now; the test then takes 5 %.
    let high = used as f64 / total as f64 + 0.02;
    let take = total / 20;
    if high >= 0.95 || meminfo_kib("MemAvailable:") * 1024 < take * 2 {
        println!("skipping: not enough free memory for a bounded test");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let config = write_file(
        dir.path(),
        "collector.toml",
        &format!(
            "[detect]\ninterval = \"200ms\"\n[rules.host_memory]\nfor = \"1s\"\nhigh = {high:.4}\n"
        ),
    );
    let _coll = collector(addr, dir.path(), &["--config", &config]);
    let ag = agent(addr, dir.path(), &[]);
    wait_for(Duration::from_secs(20), || {
        hosts_json(addr).first().cloned()
    })
    .unwrap_or_else(|| panic!("no host:\n{}", ag.log_text()));
    assert!(find_alert(addr, "host_memory", true, |_| true).is_none());
    // Anonymous memory in a child (zero-filled, so resident; not page cache),
    // freed for sure when the child is killed.
    let mut hog = match std::process::Command::new("python3")
        .args([
            "-c",
            &format!("import time; b = bytearray({take}); print('ok', flush=True); time.sleep(60)"),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => Proc {
            child: c,
            name: "memory hog",
            log: dir.path().join("hog.log"),
        },
        Err(e) => {
            println!("skipping: python3 is needed to hold memory in a child ({e})");
            return;
        }
    };
    {
        use std::io::BufRead as _;
        let mut line = String::new();
        let out = hog.child.stdout.take().unwrap();
        std::io::BufReader::new(out).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ok");
    }
    let started = Instant::now();
    let firing = wait_for(Duration::from_secs(20), || {
        find_alert(addr, "host_memory", false, |a| a["state"] == "firing")
    })
    .unwrap_or_else(|| panic!("no host_memory: {:?}", alerts_json(addr, &["--all"])));
    println!(
        "host_memory fired after {:?}: {}",
        started.elapsed(),
        firing["summary"]
    );
    assert_eq!(firing["severity"], "high");
    hog.kill9();
    let id = firing["id"].clone();
    wait_for(Duration::from_secs(20), || {
        find_alert(addr, "host_memory", true, |a| {
            a["id"] == id && a["state"] == "resolved"
        })
    })
    .unwrap_or_else(|| panic!("not resolved: {:?}", alerts_json(addr, &["--all"])));
}
