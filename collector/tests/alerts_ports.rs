//! `ephemeral_ports` end to end in a network namespace the test creates
//! (root): its local port range narrowed to 200 ports, 185 connections to one
//! destination (92 %) -> critical, naming the destination. The test thread
//! enters the namespace, so the collector, the agent, the CLI and the
//! connections it opens all live there.

mod support;

use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const NETNS: &str = "nodewatch-alerts-ports";

struct Netns;

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", NETNS]).status();
    }
}

/// Accepts and holds every connection; prints its port.
const SERVER: &str = r#"
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(512)
print(s.getsockname()[1], flush=True)
held = []
while True:
    c, _ = s.accept()
    held.append(c)
"#;

#[test]
fn connections_to_one_destination_exhaust_its_ephemeral_ports() {
    if !is_root() {
        println!("skipping: network namespaces need root");
        return;
    }
    let _ = Command::new("ip").args(["netns", "del", NETNS]).status();
    let ok = Command::new("ip")
        .args(["netns", "add", NETNS])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!("skipping: cannot create a network namespace (ip netns add)");
        return;
    }
    let _ns = Netns;
    let f = std::fs::File::open(format!("/run/netns/{NETNS}")).unwrap();
    assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
    assert!(
        Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap()
            .success()
    );
    std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "40000 40199").unwrap();

    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let config = write_file(
        dir.path(),
        "collector.toml",
        "[detect]\ninterval = \"200ms\"\n[rules.ephemeral_ports]\nfor = \"1s\"\n",
    );
    let _coll = collector(addr, dir.path(), &["--config", &config]);
    let agent_config = write_file(
        dir.path(),
        "agent.toml",
        "[samplers]\nsocket_interval = \"500ms\"\nprocess_interval = \"10s\"\ndisk_interval = \"10s\"\n",
    );
    let ag = agent(addr, dir.path(), &["--config", &agent_config]);
    wait_for(Duration::from_secs(20), || {
        hosts_json(addr).first().cloned()
    })
    .unwrap_or_else(|| panic!("no host:\n{}", ag.log_text()));

    let mut server = Command::new("python3")
        .args(["-c", SERVER])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let dst = SocketAddr::from(([127, 0, 0, 1], line.trim().parse::<u16>().unwrap()));
    let t0 = Instant::now();
    let conns: Vec<TcpStream> = (0..185).map(|_| TcpStream::connect(dst).unwrap()).collect();
    let alert = wait_for(Duration::from_secs(20), || {
        find_alert(addr, "ephemeral_ports", false, |a| {
            a["subject"]["port"] == dst.port() && a["state"] == "firing"
        })
    });
    let _ = server.kill();
    let _ = server.wait();
    let alert =
        alert.unwrap_or_else(|| panic!("no ephemeral_ports:\n{:?}", alerts_json(addr, &["--all"])));
    println!(
        "ephemeral_ports fired {:?} after the connections",
        t0.elapsed()
    );
    assert_eq!(alert["severity"], "critical");
    assert_eq!(alert["subject"]["destination"], "127.0.0.1");
    assert_eq!(alert["subject"]["address"], "127.0.0.1");
    assert_eq!(
        alert["evidence"]["values"]["capacity"]["value"], 200.0,
        "{alert}"
    );
    drop(conns);
}
