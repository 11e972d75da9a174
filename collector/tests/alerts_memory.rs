//! `memory_leak` end to end: a process growing its RSS steadily fires the
//! rule naming its pid with a time to OOM (against the host's MemAvailable:
//! it runs in no memory-limited cgroup); a process with a large flat RSS
//! beside it raises nothing. Windows shrunk by configuration.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const MIB: f64 = 1024.0 * 1024.0;

/// Grows by 2 MiB (touched) every 100 ms, up to 1.5 GiB, then holds.
const LEAKER: &str = r#"
import time
chunks = []
while len(chunks) < 768:
    chunks.append(b"x" * (2 << 20))
    time.sleep(0.1)
time.sleep(600)
"#;

/// 300 MiB at once, then nothing.
const FLAT: &str = r#"
import time
x = b"y" * (300 << 20)
time.sleep(600)
"#;

struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python(code: &str) -> Kid {
    Kid(Command::new("python3")
        .args(["-c", code])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap())
}

fn status_kib(pid: u32, key: &str) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn mem_available() -> f64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: f64 = text
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024.0
}

#[test]
fn a_leak_fires_with_time_to_oom_and_a_flat_rss_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let config = write_file(
        dir.path(),
        "collector.toml",
        "[detect]\ninterval = \"200ms\"\n\
         [rules.memory_leak]\nwindow = \"10s\"\nfor = \"1s\"\n",
    );
    let _coll = collector(addr, dir.path(), &["--config", &config]);
    let agent_config = write_file(
        dir.path(),
        "agent.toml",
        "[samplers]\nprocess_interval = \"250ms\"\nsocket_interval = \"10s\"\ndisk_interval = \"10s\"\n",
    );
    let ag = agent(addr, dir.path(), &["--config", &agent_config]);
    wait_for(Duration::from_secs(20), || {
        hosts_json(addr).first().cloned()
    })
    .unwrap_or_else(|| panic!("no host:\n{}", ag.log_text()));

    let flat = python(FLAT);
    let leaker = python(LEAKER);
    let (leak_pid, flat_pid) = (leaker.0.id(), flat.0.id());
    let t0 = Instant::now();
    let alert = wait_for(Duration::from_secs(40), || {
        find_alert(addr, "memory_leak", false, |a| {
            a["subject"]["pid"] == leak_pid && a["state"] == "firing"
        })
    })
    .unwrap_or_else(|| panic!("no memory_leak:\n{:?}", alerts_json(addr, &["--all"])));
    let latency = t0.elapsed();

    // The truth now: MemAvailable over the measured growth rate.
    let r0 = status_kib(leak_pid, "VmRSS:") * 1024.0;
    std::thread::sleep(Duration::from_secs(2));
    let r1 = status_kib(leak_pid, "VmRSS:") * 1024.0;
    let rate = (r1 - r0) / 2.0;
    let alert = find_alert(addr, "memory_leak", false, |a| a["id"] == alert["id"]).unwrap();
    let tti = alert["time_to_impact_seconds"]
        .as_f64()
        .expect("time to OOM");
    let truth = mem_available() / rate;
    println!(
        "memory_leak fired {latency:?} after the leak started; growth {:.0} MiB/s; time to OOM {tti:.0}s (truth {truth:.0}s)",
        rate / MIB
    );
    assert!(
        tti > truth * 0.5 && tti < truth * 2.0,
        "tti {tti} vs {truth}: {alert}"
    );
    assert_eq!(alert["subject"]["process"], "python3");
    let summary = alert["summary"].as_str().unwrap();
    assert!(
        summary.contains(&format!("(pid {leak_pid}) leaks"))
            && summary.contains("out of memory in ~"),
        "{summary}"
    );
    let slope = alert["evidence"]["values"]["slope"]["value"]
        .as_f64()
        .unwrap();
    assert!(
        slope / 3600.0 > rate * 0.5 && slope / 3600.0 < rate * 2.0,
        "{slope}"
    );

    // The flat process (300 MiB, older than the window by now) raised nothing.
    std::thread::sleep(Duration::from_secs(3));
    assert!(status_kib(flat_pid, "VmRSS:") * 1024.0 > 250.0 * MIB);
    assert!(
        find_alert(addr, "memory_leak", true, |a| a["subject"]["pid"]
            == flat_pid)
        .is_none(),
        "{:?}",
        alerts_json(addr, &["--all"])
    );
}
