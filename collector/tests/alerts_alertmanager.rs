//! Notifications to a real Alertmanager (Debian's `prometheus-alertmanager`,
//! started on a loopback port with a temporary config and storage): the
//! firing alert is read back through `GET /api/v2/alerts` with its labels and
//! annotations, it is re-posted every `resend_interval`, and its resolution
//! (posted with `endsAt`) removes it at once.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const HOST: &str = "alertmanager-host";

struct Kid(std::process::Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn am_alerts(am: std::net::SocketAddr) -> Vec<serde_json::Value> {
    http_get_json(am, "/api/v2/alerts")
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a["labels"]["alertname"] == "agent_silent" && a["labels"]["host"] == HOST)
        .collect()
}

#[test]
fn alertmanager_receives_firing_and_resolution() {
    let present = Command::new("prometheus-alertmanager")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        println!(
            "skipping: prometheus-alertmanager is not installed (cargo xtask test installs it)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let am = free_addr();
    let am_config = write_file(
        dir.path(),
        "alertmanager.yml",
        "route:\n  receiver: 'null'\nreceivers:\n  - name: 'null'\n",
    );
    let storage = dir.path().join("am-data");
    std::fs::create_dir_all(&storage).unwrap();
    let log = std::fs::File::create(dir.path().join("alertmanager.log")).unwrap();
    let _am = Kid(Command::new("prometheus-alertmanager")
        .arg(format!("--config.file={am_config}"))
        .arg(format!("--storage.path={}", storage.display()))
        .arg(format!("--web.listen-address={am}"))
        .arg("--cluster.listen-address=")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap());
    if wait_for(Duration::from_secs(20), || {
        http_get_json(am, "/api/v2/status")
    })
    .is_none()
    {
        let text = std::fs::read_to_string(dir.path().join("alertmanager.log")).unwrap_or_default();
        println!("skipping: prometheus-alertmanager did not start:\n{text}");
        return;
    }

    let addr = free_addr();
    let config = write_file(
        dir.path(),
        "collector.toml",
        &format!(
            "[detect]\ninterval = \"200ms\"\n\
             [[notify.alertmanager]]\nurl = \"http://{am}\"\nresend_interval = \"2s\"\nretry_min = \"200ms\"\n"
        ),
    );
    let coll = collector(addr, dir.path(), &["--config", &config]);
    let mut ag = agent(addr, dir.path(), &["--host-id", HOST]);
    wait_for(Duration::from_secs(20), || {
        find_host(&hosts_json(addr), HOST).filter(|h| h["batches_received"].as_u64() > Some(1))
    })
    .unwrap_or_else(|| panic!("no host:\n{}", ag.log_text()));

    ag.kill9();
    let t0 = Instant::now();
    let got = wait_for(Duration::from_secs(15), || am_alerts(am).into_iter().next())
        .unwrap_or_else(|| panic!("alertmanager has no alert:\n{}", coll.log_text()));
    println!(
        "alertmanager holds the alert {:?} after the agent was killed",
        t0.elapsed()
    );
    assert_eq!(got["labels"]["severity"], "critical");
    assert_eq!(got["status"]["state"], "active");
    assert!(
        got["labels"]["hostname"]
            .as_str()
            .is_some_and(|h| !h.is_empty())
    );
    assert!(
        got["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("no data for"),
        "{got}"
    );
    assert!(
        got["annotations"]["evidence"]
            .as_str()
            .unwrap()
            .contains("silent_for="),
        "{got}"
    );

    // Re-posted every resend_interval: its expiry moves forward.
    let ends0 = got["endsAt"].as_str().unwrap().to_string();
    let later = wait_for(Duration::from_secs(10), || {
        am_alerts(am)
            .into_iter()
            .next()
            .filter(|a| a["endsAt"].as_str() > Some(ends0.as_str()))
    });
    let later = later.unwrap_or_else(|| panic!("not re-posted: {ends0}"));
    println!("re-posted: endsAt {ends0} -> {}", later["endsAt"]);

    // Back: resolved, posted with endsAt; Alertmanager drops it at once
    // (long before the 8 s expiry of the last re-post).
    let _ag = agent(addr, dir.path(), &["--host-id", HOST]);
    wait_for(Duration::from_secs(20), || {
        find_alert(addr, "agent_silent", true, |a| {
            a["host_id"] == HOST && a["state"] == "resolved"
        })
    })
    .unwrap_or_else(|| panic!("not resolved:\n{}", coll.log_text()));
    let t1 = Instant::now();
    wait_for(Duration::from_secs(3), || {
        am_alerts(am).is_empty().then_some(())
    })
    .unwrap_or_else(|| panic!("alertmanager still holds it: {:?}", am_alerts(am)));
    println!(
        "alertmanager dropped the resolved alert {:?} after resolution",
        t1.elapsed()
    );
}
