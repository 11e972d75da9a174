//! `agent_silent`, notifications and restarts end to end: an agent killed
//! -> critical within a few intervals; the webhook receiver, down at that
//! moment, gets the notification once it is back; a collector restart keeps
//! the firing alert firing without notifying it again and pages nobody for
//! the agent that reconnects within the grace; the agent back -> resolved.

mod support;

use std::time::{Duration, Instant};

use support::*;

const A: &str = "restart-host-a";
const B: &str = "restart-host-b";

fn silent_of(
    addr: std::net::SocketAddr,
    host: &'static str,
    all: bool,
) -> Option<serde_json::Value> {
    find_alert(addr, "agent_silent", all, move |a| a["host_id"] == host)
}

#[test]
fn agent_silent_survives_a_collector_restart_without_renotifying() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let hook_addr = free_addr();
    let mut hook = WebhookReceiver::new(hook_addr);
    let config = write_file(
        dir.path(),
        "collector.toml",
        &format!(
            "[detect]\ninterval = \"200ms\"\n\
             [rules.agent_silent]\ngrace = \"10s\"\n\
             [[notify.webhook]]\nurl = \"http://{hook_addr}/hook\"\nretry_min = \"200ms\"\nretry_max = \"1s\"\n"
        ),
    );
    let mut coll = collector(addr, dir.path(), &["--config", &config]);
    let _a = agent(addr, dir.path(), &["--host-id", A]);
    let mut b = agent(addr, dir.path(), &["--host-id", B]);
    wait_for(Duration::from_secs(20), || {
        let hosts = hosts_json(addr);
        let sending =
            |id| find_host(&hosts, id).is_some_and(|h| h["batches_received"].as_u64() > Some(1));
        (sending(A) && sending(B)).then_some(())
    })
    .unwrap_or_else(|| panic!("hosts missing:\n{}", b.log_text()));

    // B dies.
    b.kill9();
    let t0 = Instant::now();
    let alert = wait_for(Duration::from_secs(10), || {
        silent_of(addr, B, false).filter(|a| a["state"] == "firing")
    })
    .unwrap_or_else(|| panic!("no agent_silent:\n{:?}", alerts_json(addr, &["--all"])));
    println!(
        "agent_silent fired {:?} after the agent was killed",
        t0.elapsed()
    );
    assert_eq!(alert["severity"], "critical");
    let id = alert["id"].as_str().unwrap().to_string();
    let fired_at = alert["fired_at_unix_nano"].clone();

    // The receiver was down; it gets the notification once it listens.
    std::thread::sleep(Duration::from_secs(3));
    assert!(hook.received().is_empty());
    hook.start();
    let t1 = Instant::now();
    wait_for(Duration::from_secs(10), || {
        hook.received()
            .iter()
            .any(|r| r.0 == "firing" && r.2 == id)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("webhook got nothing: {:?}", hook.received()));
    println!(
        "webhook delivered {:?} after the receiver came back",
        t1.elapsed()
    );

    // Collector restart: the alert stays firing, nothing is notified again,
    // and A (reconnecting within the grace) pages nobody.
    coll.terminate();
    let coll = collector(addr, dir.path(), &["--config", &config]);
    let restored = wait_for(Duration::from_secs(5), || silent_of(addr, B, false))
        .unwrap_or_else(|| panic!("alert forgotten:\n{}", coll.log_text()));
    assert_eq!(restored["state"], "firing");
    assert_eq!(restored["fired_at_unix_nano"], fired_at);
    std::thread::sleep(Duration::from_secs(12));
    let still = silent_of(addr, B, false).unwrap();
    assert_eq!(
        (still["state"].clone(), still["fired_at_unix_nano"].clone()),
        ("firing".into(), fired_at)
    );
    assert!(
        silent_of(addr, A, true).is_none(),
        "{:?}",
        alerts_json(addr, &["--all"])
    );
    let firing: Vec<_> = hook
        .received()
        .into_iter()
        .filter(|r| r.1 == "agent_silent")
        .collect();
    assert_eq!(firing.len(), 1, "notified again: {firing:?}");

    // B back: resolved, and notified.
    let _b = agent(addr, dir.path(), &["--host-id", B]);
    let t2 = Instant::now();
    wait_for(Duration::from_secs(20), || {
        silent_of(addr, B, true).filter(|a| a["state"] == "resolved")
    })
    .unwrap_or_else(|| {
        panic!(
            "not resolved:\n{:?}\n{}",
            alerts_json(addr, &["--all"]),
            coll.log_text()
        )
    });
    println!(
        "agent_silent resolved {:?} after the agent restarted",
        t2.elapsed()
    );
    wait_for(Duration::from_secs(10), || {
        hook.received()
            .iter()
            .any(|r| r.0 == "resolved" && r.2 == id)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no resolved notification: {:?}", hook.received()));
    assert!(
        coll.log_text().contains("alert resolved"),
        "one log line per transition"
    );
}
