//! A client that has never seen the .proto files, driven only by server
//! reflection: Python's grpcio-reflection (v1alpha) lists the services,
//! describes messages and calls Query.ListHosts against the real collector.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

#[test]
fn reflection_only_client_lists_describes_and_calls() {
    let probe = Command::new("python3")
        .args(["-c", "import grpc, grpc_reflection, google.protobuf"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        println!(
            "skipping: python3 with grpcio and grpcio-reflection is not installed (cargo xtask test installs them)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let _collector = collector(addr, dir.path(), &[]);
    let agent = agent(addr, dir.path(), &["--host-id", "reflected-host"]);
    wait_for(Duration::from_secs(10), || {
        find_host(&hosts_json(addr), "reflected-host")
    })
    .unwrap_or_else(|| panic!("agent did not report:\n{}", agent.log_text()));

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reflection_client.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(addr.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "reflection client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let services: Vec<&str> = doc["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    for expected in [
        "grpc.health.v1.Health",
        "nodewatch.v1.Ingest",
        "nodewatch.v1.Query",
    ] {
        assert!(
            services.contains(&expected),
            "{expected} not in {services:?}"
        );
    }
    assert!(
        doc["query_methods"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("ListHosts"))
    );
    assert!(
        doc["host_summary_fields"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("memory_used_ratio"))
    );
    let hosts = doc["list_hosts"]["hosts"].as_array().unwrap();
    assert!(
        hosts
            .iter()
            .any(|h| h["identity"]["host_id"] == "reflected-host"),
        "{hosts:?}"
    );
    // Comments travel with the descriptors, so `grpcurl describe` shows them.
    let comments = doc["query_comments"].as_array().unwrap();
    assert!(
        comments
            .iter()
            .any(|c| c.as_str().unwrap().contains("Lists every host")),
        "{comments:?}"
    );
}
