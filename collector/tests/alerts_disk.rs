//! `disk_filling` end to end on real filesystems: a small tmpfs filled at a
//! steady rate fires with a time to full within ±20 % of the truth; a static
//! tmpfs 90 % full beside it raises nothing. Needs root (mounts).

mod support;

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::*;

const MIB: u64 = 1024 * 1024;
/// Bytes written per tick of the steady writer, and the tick.
const CHUNK: usize = 64 * 1024;
const TICK: Duration = Duration::from_millis(250);

fn write_bytes(path: &Path, n: u64) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(&vec![0x5a; n as usize]).unwrap();
}

fn available(path: &Path) -> f64 {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
    (s.f_bavail * s.f_frsize) as f64
}

#[test]
fn a_steadily_filling_tmpfs_fires_with_its_time_to_full_and_a_static_one_does_not() {
    if !is_root() {
        println!("skipping: mounting tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fill_dir = dir.path().join("filling");
    let static_dir = dir.path().join("static");
    let filling = match Tmpfs::mount(&fill_dir, "32m") {
        Ok(m) => m,
        Err(e) => {
            println!("skipping: cannot mount tmpfs: {e}");
            return;
        }
    };
    let fixed = Tmpfs::mount(&static_dir, "32m").unwrap();
    // 22 of 32 MiB used (31 % free, under the 40 % bar); the static one 90 % full.
    write_bytes(&filling.0.join("base"), 22 * MIB);
    write_bytes(&fixed.0.join("base"), 32 * MIB * 9 / 10);

    let addr = free_addr();
    let config = write_file(
        dir.path(),
        "collector.toml",
        "[detect]\ninterval = \"200ms\"\n\
         [rules.disk_filling]\nwindow = \"8s\"\nfor = \"1s\"\n",
    );
    let _coll = collector(addr, dir.path(), &["--config", &config]);
    let agent_config = write_file(
        dir.path(),
        "agent.toml",
        "[samplers]\ndisk_interval = \"500ms\"\nprocess_interval = \"10s\"\nsocket_interval = \"10s\"\n",
    );
    let ag = agent(addr, dir.path(), &["--config", &agent_config]);
    wait_for(Duration::from_secs(20), || {
        hosts_json(addr).first().cloned()
    })
    .unwrap_or_else(|| panic!("no host:\n{}", ag.log_text()));

    // The steady writer: 64 KiB every 250 ms (256 KiB/s), ~40 s to full.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let writer = {
        let (stop, written, path) = (stop.clone(), written.clone(), filling.0.join("log"));
        std::thread::spawn(move || {
            let mut f = std::fs::File::create(path).unwrap();
            let chunk = vec![0x33u8; CHUNK];
            while !stop.load(Ordering::Relaxed) {
                if f.write_all(&chunk).is_err() {
                    break;
                }
                written.fetch_add(CHUNK as u64, Ordering::Relaxed);
                std::thread::sleep(TICK);
            }
        })
    };
    let mount = fill_dir.display().to_string();
    let first = wait_for(Duration::from_secs(30), || {
        find_alert(addr, "disk_filling", false, |a| {
            a["subject"]["mount"] == mount.as_str() && a["state"] == "firing"
        })
    })
    .unwrap_or_else(|| panic!("no disk_filling:\n{:?}", alerts_json(addr, &["--all"])));
    let latency = started.elapsed();
    assert_eq!(first["subject"]["resource"], "bytes");
    let rate = |w: &AtomicU64| w.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    let first_tti = first["time_to_impact_seconds"].as_f64().unwrap();
    let first_truth = available(&filling.0) / rate(&written);
    println!(
        "disk_filling fired {latency:?} after the writes started; time to full {first_tti:.1}s (truth {first_truth:.1}s)"
    );

    // Once the window holds only the steady fill, the projection is within ±20 %.
    while started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let alert = find_alert(addr, "disk_filling", false, |a| a["id"] == first["id"]).unwrap();
    let tti = alert["time_to_impact_seconds"].as_f64().unwrap();
    let truth = available(&filling.0) / rate(&written);
    println!(
        "disk_filling at 10 s: time to full {tti:.1}s, truth {truth:.1}s, {}",
        alert["summary"]
    );
    assert!(
        (tti - truth).abs() <= 0.2 * truth,
        "tti {tti} vs truth {truth}: {alert}"
    );
    let low = alert["evidence"]["time_to_impact_low_seconds"]
        .as_f64()
        .unwrap();
    let high = alert["evidence"]["time_to_impact_high_seconds"]
        .as_f64()
        .unwrap();
    assert!(
        low <= tti && (high == 0.0 || tti <= high),
        "band {low}..{high} around {tti}"
    );

    // Nothing for the static mount (90 % full, no trend).
    let fixed_mount = static_dir.display().to_string();
    assert!(
        find_alert(addr, "disk_filling", true, |a| a["subject"]["mount"]
            == fixed_mount.as_str())
        .is_none(),
        "{:?}",
        alerts_json(addr, &["--all"])
    );
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
}

#[test]
fn a_fill_then_clean_cycle_does_not_flap() {
    if !is_root() {
        println!("skipping: mounting tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rotated");
    let disk = match Tmpfs::mount(&path, "32m") {
        Ok(m) => m,
        Err(e) => {
            println!("skipping: cannot mount tmpfs: {e}");
            return;
        }
    };
    write_bytes(&disk.0.join("base"), 22 * MIB);
    let addr = free_addr();
    let config = write_file(
        dir.path(),
        "collector.toml",
        "[detect]\ninterval = \"200ms\"\n\
         [rules.disk_filling]\nwindow = \"8s\"\nfor = \"5s\"\n",
    );
    let _coll = collector(addr, dir.path(), &["--config", &config]);
    let agent_config = write_file(
        dir.path(),
        "agent.toml",
        "[samplers]\ndisk_interval = \"500ms\"\nprocess_interval = \"10s\"\nsocket_interval = \"10s\"\n",
    );
    let ag = agent(addr, dir.path(), &["--config", &agent_config]);
    wait_for(Duration::from_secs(20), || {
        hosts_json(addr).first().cloned()
    })
    .unwrap_or_else(|| panic!("no host:\n{}", ag.log_text()));
    // A log written at 256 KiB/s and rotated (truncated) every 3 s, for 20 s.
    let mount = path.display().to_string();
    let log = disk.0.join("app.log");
    let mut f = std::fs::File::create(&log).unwrap();
    let chunk = vec![0x44u8; CHUNK];
    let start = Instant::now();
    let mut rotated = Instant::now();
    let mut states = Vec::new();
    while start.elapsed() < Duration::from_secs(20) {
        f.write_all(&chunk).unwrap();
        if rotated.elapsed() >= Duration::from_secs(3) {
            f = std::fs::File::create(&log).unwrap();
            rotated = Instant::now();
        }
        if let Some(a) = find_alert(addr, "disk_filling", true, |a| {
            a["subject"]["mount"] == mount.as_str()
        }) {
            states.push(a["state"].as_str().unwrap_or("").to_string());
        }
        std::thread::sleep(TICK);
    }
    println!("rotation: disk_filling states seen {states:?}");
    assert!(
        !states.iter().any(|s| s == "firing" || s == "resolved"),
        "flapped: {states:?}"
    );
}

/// `disk_full` on a real tmpfs: filled past 95 % -> high, past 97 % ->
/// critical, files removed -> resolved; the subject names the mount.
#[test]
fn a_nearly_full_tmpfs_is_high_then_critical_then_resolved() {
    if !is_root() {
        println!("skipping: mounting tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let full_dir = dir.path().join("full");
    let full = match Tmpfs::mount(&full_dir, "16m") {
        Ok(m) => m,
        Err(e) => {
            println!("skipping: cannot mount tmpfs: {e}");
            return;
        }
    };
    let addr = free_addr();
    let config = write_file(
        dir.path(),
        "collector.toml",
        "[detect]\ninterval = \"200ms\"\n[rules.disk_full]\nfor = \"1s\"\n",
    );
    let _coll = collector(addr, dir.path(), &["--config", &config]);
    let agent_config = write_file(
        dir.path(),
        "agent.toml",
        "[samplers]\ndisk_interval = \"300ms\"\nprocess_interval = \"10s\"\nsocket_interval = \"10s\"\n",
    );
    let ag = agent(addr, dir.path(), &["--config", &agent_config]);
    wait_for(Duration::from_secs(20), || {
        hosts_json(addr).first().cloned()
    })
    .unwrap_or_else(|| panic!("no host:\n{}", ag.log_text()));
    let mount = full_dir.display().to_string();
    let state_of = |severity: &str| {
        let mount = mount.clone();
        let severity = severity.to_string();
        wait_for(Duration::from_secs(20), move || {
            find_alert(addr, "disk_full", false, |a| {
                a["subject"]["mount"] == mount.as_str()
                    && a["state"] == "firing"
                    && a["severity"] == severity.as_str()
            })
        })
    };

    // 96 % used: under 5 % free -> high.
    write_bytes(&full.0.join("a"), 16 * MIB * 96 / 100);
    let started = Instant::now();
    let high = state_of("high").unwrap_or_else(|| panic!("{:?}", alerts_json(addr, &["--all"])));
    println!(
        "disk_full high after {:?}: {}",
        started.elapsed(),
        high["summary"]
    );
    // 98 % used: under 3 % free -> critical, the same alert escalated.
    write_bytes(&full.0.join("b"), 16 * MIB * 2 / 100);
    let started = Instant::now();
    let critical =
        state_of("critical").unwrap_or_else(|| panic!("{:?}", alerts_json(addr, &["--all"])));
    println!("disk_full critical after {:?}", started.elapsed());
    assert_eq!(critical["id"], high["id"]);
    // Space freed -> resolved.
    std::fs::remove_file(full.0.join("a")).unwrap();
    std::fs::remove_file(full.0.join("b")).unwrap();
    let id = high["id"].clone();
    wait_for(Duration::from_secs(20), || {
        find_alert(addr, "disk_full", true, |a| {
            a["id"] == id && a["state"] == "resolved"
        })
    })
    .unwrap_or_else(|| panic!("not resolved: {:?}", alerts_json(addr, &["--all"])));
}
