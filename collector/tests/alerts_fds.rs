//! `fd_exhaustion` end to end: a child under `ulimit -n 100` opens
//! descriptors to 85 % (high), then 96 % (critical), then closes them
//! (resolved), seen through the real agent, collector and CLI with the
//! agent's process pass and the rule's `for` shrunk by configuration.

mod support;

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// Holds as many descriptors as it is told on stdin, answering "ok".
const HOARDER: &str = r#"
import os, sys
fds = []
for line in sys.stdin:
    n = int(line)
    while len(fds) < n:
        fds.append(os.open("/dev/null", os.O_RDONLY))
    while len(fds) > n:
        os.close(fds.pop())
    print("ok", flush=True)
"#;

struct Hoarder {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Hoarder {
    fn start(limit: u32) -> Hoarder {
        let mut child = Command::new("bash")
            .args([
                "-c",
                &format!("ulimit -n {limit} && exec python3 -c '{HOARDER}'"),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut h = Hoarder {
            child,
            stdin,
            stdout,
        };
        h.hold(0);
        h
    }

    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).map_or(0, |d| d.count())
    }

    /// Holds `n` extra descriptors.
    fn hold(&mut self, n: usize) {
        writeln!(self.stdin, "{n}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ok");
    }

    /// Opens or closes until the process holds `total` descriptors.
    fn hold_total(&mut self, total: usize) {
        self.hold(0);
        let base = self.open_fds();
        self.hold(total - base);
        assert_eq!(self.open_fds(), total);
    }
}

impl Drop for Hoarder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn fd_hoarder_goes_high_then_critical_then_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let config = write_file(
        dir.path(),
        "collector.toml",
        "[detect]\ninterval = \"200ms\"\n[rules.fd_exhaustion]\nfor = \"1s\"\n",
    );
    let _coll = collector(addr, dir.path(), &["--config", &config]);
    let agent_config = write_file(
        dir.path(),
        "agent.toml",
        "[samplers]\nprocess_interval = \"500ms\"\nsocket_interval = \"5s\"\ndisk_interval = \"5s\"\n",
    );
    let ag = agent(addr, dir.path(), &["--config", &agent_config]);
    // A watcher of every transition, from the start.
    let mut watcher = Command::new(bin("nodewatch"))
        .args([
            "--collector",
            &addr.to_string(),
            "alerts",
            "--watch",
            "-o",
            "json",
            "--rule",
            "fd_exhaustion",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let watched = std::sync::Arc::new(std::sync::Mutex::new(Vec::<serde_json::Value>::new()));
    {
        let (out, watched) = (watcher.stdout.take().unwrap(), watched.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    watched.lock().unwrap().push(v);
                }
            }
        });
    }
    let mut h = Hoarder::start(100);
    let pid = u64::from(h.child.id());
    wait_for(Duration::from_secs(20), || {
        hosts_json(addr).first().cloned()
    })
    .unwrap_or_else(|| panic!("no host:\n{}", ag.log_text()));
    // Nothing before the fds pile up.
    std::thread::sleep(Duration::from_secs(2));
    assert!(find_alert(addr, "fd_exhaustion", true, |a| a["subject"]["pid"] == pid).is_none());

    let of = |state: &'static str, severity: &'static str| {
        move |a: &serde_json::Value| {
            a["subject"]["pid"] == pid && a["state"] == state && a["severity"] == severity
        }
    };
    h.hold_total(85);
    let t0 = Instant::now();
    let high = wait_for(Duration::from_secs(20), || {
        find_alert(addr, "fd_exhaustion", false, of("firing", "high"))
    })
    .unwrap_or_else(|| {
        panic!(
            "no high fd_exhaustion:\n{:?}",
            alerts_json(addr, &["--all"])
        )
    });
    println!("fd_exhaustion high fired {:?} after 85 %", t0.elapsed());
    assert_eq!(high["subject"]["process"], "python3");
    assert!(
        high["summary"]
            .as_str()
            .unwrap()
            .contains(&format!("(pid {pid}) holds 85 of its 100")),
        "{high}"
    );
    assert_eq!(high["evidence"]["values"]["fd_limit_soft"]["value"], 100.0);

    h.hold_total(96);
    let t1 = Instant::now();
    let critical = wait_for(Duration::from_secs(20), || {
        find_alert(addr, "fd_exhaustion", false, of("firing", "critical"))
    })
    .unwrap_or_else(|| panic!("no critical:\n{:?}", alerts_json(addr, &["--all"])));
    println!("fd_exhaustion critical {:?} after 96 %", t1.elapsed());
    assert_eq!(
        critical["id"], high["id"],
        "one alert per (rule, host, subject)"
    );

    h.hold_total(10);
    let t2 = Instant::now();
    let resolved = wait_for(Duration::from_secs(20), || {
        find_alert(addr, "fd_exhaustion", true, |a| {
            a["id"] == high["id"] && a["state"] == "resolved"
        })
    })
    .unwrap_or_else(|| panic!("not resolved:\n{:?}", alerts_json(addr, &["--all"])));
    println!("fd_exhaustion resolved {:?} after closing", t2.elapsed());
    assert!(resolved["resolved_at_unix_nano"].as_i64().unwrap() > 0);
    // Gone from the default listing (pending + firing).
    assert!(find_alert(addr, "fd_exhaustion", false, |a| a["id"] == high["id"]).is_none());

    // The review view: the timeline holds every step.
    let id = high["id"].as_str().unwrap();
    let out = cli(addr, &["alerts", "show", &id[..8]]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for step in [
        "new -> pending",
        "pending -> firing",
        "firing -> firing",
        "firing -> resolved",
    ] {
        assert!(text.contains(step), "{step} missing:\n{text}");
    }
    let out = cli(addr, &["alerts", "show", id, "-o", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["timeline"].as_array().unwrap().len(), 4, "{doc}");

    // The watcher saw every transition of this alert, in order.
    let steps = || -> Vec<(String, String, String)> {
        watched
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["id"] == high["id"] && v["initial"] == false)
            .map(|v| {
                let t = &v["transition"];
                let s = |x: &serde_json::Value| x.as_str().unwrap_or("").to_string();
                (s(&t["from"]), s(&t["to"]), s(&t["severity"]))
            })
            .collect()
    };
    let want: Vec<(String, String, String)> = [
        ("new", "pending", "high"),
        ("pending", "firing", "high"),
        ("firing", "firing", "critical"),
        ("firing", "resolved", "critical"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    wait_for(Duration::from_secs(5), || (steps() == want).then_some(()))
        .unwrap_or_else(|| panic!("watch saw {:?}", steps()));
    let _ = watcher.kill();
    let _ = watcher.wait();
}
