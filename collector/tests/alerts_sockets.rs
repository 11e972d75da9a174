//! Connection exhaustion end to end: a listener that never accepts, flooded
//! -> `listen_backlog` naming its port and pid; a server that never closes
//! what its peers closed, piling up CLOSE_WAIT -> `close_wait` naming it.

mod support;

use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// A TCP server on loopback: `SERVER <backlog> accept|never`; prints its port.
const SERVER: &str = r#"
import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(int(sys.argv[1]))
print(s.getsockname()[1], flush=True)
held = []
while True:
    if sys.argv[2] == "accept":
        c, _ = s.accept()
        held.append(c)
    else:
        time.sleep(1)
"#;

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(backlog: u32, mode: &str) -> Server {
        let mut child = Command::new("python3")
            .args(["-c", SERVER, &backlog.to_string(), mode])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        Server {
            port: line.trim().parse().unwrap(),
            child,
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &std::path::Path, rules: &str) -> (SocketAddr, Proc, Proc) {
    let addr = free_addr();
    let config = write_file(
        dir,
        "collector.toml",
        &format!("[detect]\ninterval = \"200ms\"\n{rules}"),
    );
    let coll = collector(addr, dir, &["--config", &config]);
    let agent_config = write_file(
        dir,
        "agent.toml",
        "[samplers]\nprocess_interval = \"500ms\"\nsocket_interval = \"500ms\"\ndisk_interval = \"10s\"\n",
    );
    let ag = agent(addr, dir, &["--config", &agent_config]);
    wait_for(Duration::from_secs(20), || {
        hosts_json(addr).first().cloned()
    })
    .unwrap_or_else(|| panic!("no host:\n{}", ag.log_text()));
    (addr, coll, ag)
}

#[test]
fn a_flooded_listener_that_never_accepts_is_named_with_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _coll, _ag) = start(dir.path(), "[rules.listen_backlog]\nfor = \"1s\"\n");
    let server = Server::start(8, "never");
    let pid = server.child.id();
    let t0 = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..12 {
        if let Ok(c) = TcpStream::connect_timeout(&server.addr(), Duration::from_millis(200)) {
            clients.push(c);
        }
    }
    let alert = wait_for(Duration::from_secs(20), || {
        find_alert(addr, "listen_backlog", false, |a| {
            a["subject"]["port"] == server.port && a["state"] == "firing"
        })
    })
    .unwrap_or_else(|| panic!("no listen_backlog:\n{:?}", alerts_json(addr, &["--all"])));
    println!("listen_backlog fired {:?} after the flood", t0.elapsed());
    assert_eq!(alert["subject"]["pid"], pid, "{alert}");
    assert_eq!(alert["subject"]["address"], "127.0.0.1");
    assert_eq!(alert["severity"], "high");
    assert!(
        alert["summary"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{}", server.port)),
        "{alert}"
    );
}

#[test]
fn a_process_piling_up_close_wait_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _coll, _ag) = start(
        dir.path(),
        "[rules.close_wait]\nfor = \"1s\"\nwindow = \"10s\"\nmin_sockets = 20\nmin_increase = 10.0\n",
    );
    let server = Server::start(128, "accept");
    let pid = server.child.id();
    let t0 = Instant::now();
    // Connections closed by the client side, 4 every 500 ms: the server keeps its ends.
    let alert = wait_for(Duration::from_secs(30), || {
        for _ in 0..4 {
            drop(TcpStream::connect(server.addr()).unwrap());
        }
        std::thread::sleep(Duration::from_millis(400));
        find_alert(addr, "close_wait", false, |a| {
            a["subject"]["pid"] == pid && a["state"] == "firing"
        })
    })
    .unwrap_or_else(|| panic!("no close_wait:\n{:?}", alerts_json(addr, &["--all"])));
    println!("close_wait fired {:?} after the leak started", t0.elapsed());
    assert_eq!(alert["subject"]["process"], "python3");
    assert_eq!(alert["severity"], "medium");
    assert!(
        alert["summary"].as_str().unwrap().contains("CLOSE_WAIT"),
        "{alert}"
    );
}
