//! Shared test support: builders for the messages an agent sends, and helpers
//! for tests that run the real binaries (kill-on-drop children, the CLI).
#![allow(dead_code)]

use nodewatch_proto::pb;
use nodewatch_proto::pb::agent_message::Kind as AgentKind;
use nodewatch_proto::pb::collector_message::Kind as CollectorKind;
use nodewatch_proto::time::now_nanos;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Path of a workspace binary next to this test's target directory.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let path = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("target profile directory")
        .join(name);
    assert!(
        path.exists(),
        "{} not built; run `cargo build --workspace --bins` first (cargo xtask test does)",
        path.display()
    );
    path
}

/// A free loopback port.
pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub name: &'static str,
    pub log: PathBuf,
}

impl Proc {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits up to 10 s.
    pub fn terminate(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "{} did not stop on SIGTERM:\n{}",
            self.name,
            self.log_text()
        );
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(name: &'static str, args: &[&str], dir: &std::path::Path) -> Proc {
    let log = dir.join(format!("{name}-{}.log", std::process::id()));
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let child = Command::new(bin(name))
        .args(args)
        .env("NODEWATCH_LOG", "info,nodewatch_collector=debug")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    Proc { child, name, log }
}

/// Starts a collector on `addr` with its data in `dir`, waiting until it listens.
pub fn collector(addr: SocketAddr, dir: &std::path::Path, extra: &[&str]) -> Proc {
    let data = dir.join("data");
    let addr_s = addr.to_string();
    let data_s = data.display().to_string();
    let mut args = vec!["--listen", &addr_s, "--data-dir", &data_s];
    args.extend_from_slice(extra);
    let mut p = spawn("nodewatch-collector", &args, dir);
    let start = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        if let Some(status) = p.child.try_wait().unwrap() {
            panic!("collector exited with {status}:\n{}", p.log_text());
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "collector did not listen:\n{}",
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    p
}

/// Starts an agent sending to `addr`.
pub fn agent(addr: SocketAddr, dir: &std::path::Path, extra: &[&str]) -> Proc {
    let url = format!("http://{addr}");
    // The spool goes under the test's directory, never the system's.
    let spool = dir.join("spool").display().to_string();
    let mut args = vec!["--collector", url.as_str(), "--no-ebpf"];
    if !extra.contains(&"--interval") {
        args.extend_from_slice(&["--interval", "200ms"]);
    }
    if !extra.contains(&"--spool-dir") && !extra.contains(&"--no-spool") {
        args.extend_from_slice(&["--spool-dir", &spool]);
    }
    args.extend_from_slice(extra);
    spawn("nodewatch-agent", &args, dir)
}

/// Runs the CLI against `addr`.
pub fn cli(addr: SocketAddr, args: &[&str]) -> Output {
    Command::new(bin("nodewatch"))
        .arg("--collector")
        .arg(addr.to_string())
        .args(args)
        .output()
        .unwrap()
}

/// `nodewatch hosts --output json` parsed; empty on error.
pub fn hosts_json(addr: SocketAddr) -> Vec<serde_json::Value> {
    let out = cli(addr, &["hosts", "--output", "json"]);
    if !out.status.success() {
        return Vec::new();
    }
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap_or_default()
}

/// Polls `f` every 50 ms until it returns Some, up to `timeout`.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The host with `host_id` in a hosts listing.
pub fn find_host(hosts: &[serde_json::Value], host_id: &str) -> Option<serde_json::Value> {
    hosts.iter().find(|h| h["host_id"] == host_id).cloned()
}

/// A Hello of host `host_id` (hostname `<host_id>.example`) for agent run `run_id`.
pub fn hello(host_id: &str, run_id: u64) -> pb::Hello {
    pb::Hello {
        host: Some(pb::HostIdentity {
            host_id: host_id.into(),
            hostname: format!("{host_id}.example"),
            ..Default::default()
        }),
        agent_version: "test".into(),
        run_id,
        ..Default::default()
    }
}

/// A batch sampled at `t` (Unix ns): load1 = seq, 1,000 context switches per
/// seq, 1,000 bytes of memory of which 500 available; add parts as needed.
pub fn batch(seq: u64, t: i64) -> pb::Batch {
    pb::Batch {
        seq,
        time_unix_nano: t,
        cpu: Some(pb::CpuStats {
            load1: seq as f64,
            context_switches: seq * 1000,
            ..Default::default()
        }),
        memory: Some(pb::MemoryStats {
            total_bytes: 1000,
            available_bytes: 500,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `n` processes (pids 1000..) with 4 KiB of RSS each.
pub fn processes(n: u32) -> Vec<pb::ProcessStats> {
    (0..n)
        .map(|p| pb::ProcessStats {
            pid: 1000 + p,
            start_time_ticks: 1,
            name: format!("p{p}"),
            rss_bytes: 4096,
            ..Default::default()
        })
        .collect()
}

/// An agent's stream held by the test.
pub struct Stream {
    pub tx: mpsc::Sender<pb::AgentMessage>,
    pub rx: tonic::Streaming<pb::CollectorMessage>,
    pub durable_seq: u64,
}

/// Opens an Ingest stream with `hello` and waits for the Welcome.
pub async fn open_stream(addr: SocketAddr, hello: pb::Hello) -> Stream {
    try_open_stream(addr, hello).await.unwrap()
}

/// Opens an Ingest stream with `hello` and waits for the Welcome; an error
/// when the collector is unreachable or refuses.
pub async fn try_open_stream(addr: SocketAddr, hello: pb::Hello) -> Result<Stream, String> {
    let mut client = pb::ingest_client::IngestClient::connect(format!("http://{addr}"))
        .await
        .map_err(|e| e.to_string())?
        .max_encoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel(16);
    tx.send(pb::AgentMessage {
        kind: Some(AgentKind::Hello(hello)),
    })
    .await
    .map_err(|e| e.to_string())?;
    let mut rx = client
        .stream(ReceiverStream::new(rx))
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    match rx.message().await {
        Ok(Some(pb::CollectorMessage {
            kind: Some(CollectorKind::Welcome(w)),
        })) => Ok(Stream {
            tx,
            rx,
            durable_seq: w.durable_seq,
        }),
        other => Err(format!("no Welcome: {other:?}")),
    }
}

impl Stream {
    /// Sends a batch and waits for its Ack (or the stream's error).
    pub async fn send(&mut self, b: pb::Batch) -> Result<u64, tonic::Status> {
        if self
            .tx
            .send(pb::AgentMessage {
                kind: Some(AgentKind::Batch(b)),
            })
            .await
            .is_err()
        {
            return Err(tonic::Status::cancelled("stream closed"));
        }
        match self.rx.message().await? {
            Some(pb::CollectorMessage {
                kind: Some(CollectorKind::Ack(a)),
            }) => Ok(a.seq),
            None => Err(tonic::Status::cancelled("the collector ended the stream")),
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// A Query client of the collector at `addr`.
pub async fn query(addr: SocketAddr) -> pb::query_client::QueryClient<tonic::transport::Channel> {
    pb::query_client::QueryClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

/// Every `load1` sample of `host` over the last two hours.
pub async fn load1(addr: SocketAddr, host: &str) -> Vec<(i64, f64)> {
    let r = query(addr)
        .await
        .query_series(pb::QuerySeriesRequest {
            host: host.into(),
            metric: "load1".into(),
            start_unix_nano: now_nanos() - 2 * 3600 * 1_000_000_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.series.len(), 1, "{r:?}");
    r.series[0]
        .points
        .iter()
        .map(|p| (p.time_unix_nano, p.value))
        .collect()
}

// ---- alerting scenarios -------------------------------------------------

/// True when the tests run as root (mounts, cgroups).
pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Writes `text` to `dir/name` and returns the path as a string.
pub fn write_file(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// `nodewatch alerts --output json` (with `extra` flags) parsed; empty on error.
pub fn alerts_json(addr: SocketAddr, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["alerts", "--output", "json"];
    args.extend_from_slice(extra);
    let out = cli(addr, &args);
    if !out.status.success() {
        return Vec::new();
    }
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap_or_default()
}

/// The first alert of `rule` (any state with `--all`) matching `f`.
pub fn find_alert(
    addr: SocketAddr,
    rule: &str,
    all: bool,
    f: impl Fn(&serde_json::Value) -> bool,
) -> Option<serde_json::Value> {
    let extra: &[&str] = if all { &["--all"] } else { &[] };
    alerts_json(addr, extra)
        .into_iter()
        .find(|a| a["rule"] == rule && f(a))
}

/// A webhook receiver: a small HTTP/1.1 server on a loopback port that keeps
/// every POSTed JSON body; it can be stopped and started again on the same port.
pub struct WebhookReceiver {
    pub addr: SocketAddr,
    pub bodies: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WebhookReceiver {
    /// A receiver for `addr`, not listening yet.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            bodies: Default::default(),
            stop: None,
            thread: None,
        }
    }

    /// Starts listening.
    pub fn start(&mut self) {
        use std::io::{BufRead as _, BufReader, Read as _, Write as _};
        let listener = TcpListener::bind(self.addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (stop2, bodies) = (stop.clone(), self.bodies.clone());
        self.thread = Some(std::thread::spawn(move || {
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; len];
                if reader.read_exact(&mut body).is_ok()
                    && let Ok(v) = serde_json::from_slice(&body)
                {
                    bodies.lock().unwrap().push(v);
                }
                let mut s = stream;
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        }));
        self.stop = Some(stop);
    }

    /// Stops listening (the port refuses connections until `start`).
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            s.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// (status, alertname, fingerprint, severity) of every payload received so far.
    pub fn received(&self) -> Vec<(String, String, String, String)> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|b| {
                let a = &b["alerts"][0];
                let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
                (
                    s(&b["status"]),
                    s(&a["labels"]["alertname"]),
                    s(&a["fingerprint"]),
                    s(&a["labels"]["severity"]),
                )
            })
            .collect()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A plain HTTP GET on loopback, the body as JSON (None on any failure).
pub fn http_get_json(addr: SocketAddr, path: &str) -> Option<serde_json::Value> {
    use std::io::{Read as _, Write as _};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    serde_json::from_str(&body).ok()
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Starts an agent sending to `addr` with its eBPF syscall tracing on.
pub fn agent_ebpf(addr: SocketAddr, dir: &std::path::Path, extra: &[&str]) -> Proc {
    let url = format!("http://{addr}");
    let mut args = vec!["--collector", url.as_str(), "--interval", "200ms"];
    args.extend_from_slice(extra);
    spawn("nodewatch-agent", &args, dir)
}

/// Mount point of the cgroup2 hierarchy, if one is mounted.
pub fn cgroup2_root() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        if !right.starts_with("cgroup2 ") {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// A tmpfs mounted for the test, unmounted when dropped.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "8m") on `path`, creating it.
    pub fn mount(path: &std::path::Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs(path.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
