//! The agent without privileges: it keeps running and says once why eBPF is
//! unavailable.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod support;

#[test]
fn ebpf_agent_without_capabilities_reports_unavailable_and_runs() {
    let agent = env!("CARGO_BIN_EXE_nodewatch-agent");
    let mut cmd = if support::is_root() {
        if support::which("setpriv").is_none() {
            println!("skipping: setpriv not installed (util-linux)");
            return;
        }
        // Root without any capability: effective, inheritable, bounding, ambient all cleared.
        let mut c = Command::new("setpriv");
        c.args([
            "--inh-caps=-all",
            "--ambient-caps=-all",
            "--bounding-set=-all",
            "--",
            agent,
        ]);
        c
    } else {
        Command::new(agent)
    };
    let mut child = cmd
        .args([
            "--collector",
            "http://127.0.0.1:9",
            "--interval",
            "200ms",
            "--host-id",
            "ebpf-unprivileged-test",
        ])
        .env_remove("NODEWATCH_NO_EBPF")
        .env("NODEWATCH_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the agent");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut lines = Vec::new();
    let mut unavailable = Vec::new();
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) => {
                if l.contains("ebpf: unavailable (") {
                    unavailable.push(l.clone());
                }
                lines.push(l);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        // Seen the reason and the agent kept running a while after it.
        if !unavailable.is_empty() && lines.len() >= 2 && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(600));
            break;
        }
    }
    let still_running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    while let Ok(l) = rx.try_recv() {
        if l.contains("ebpf: unavailable (") {
            unavailable.push(l.clone());
        }
        lines.push(l);
    }
    assert!(still_running, "agent exited: {lines:#?}");
    assert_eq!(
        unavailable.len(),
        1,
        "exactly one reason line expected: {lines:#?}"
    );
    assert!(
        unavailable[0].contains("ebpf: unavailable (missing CAP_BPF)")
            || unavailable[0].contains("ebpf: unavailable (missing CAP_PERFMON)"),
        "{}",
        unavailable[0]
    );
}
