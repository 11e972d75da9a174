//! The processes under test: the collector (durable or in-memory) and
//! Prometheus with its remote-write receiver, each on a loopback port.

#[allow(unused_imports)]
use super::*;

pub(super) struct Target {
    pub(super) name: &'static str,
    pub(super) child: Child,
    pub(super) addr: SocketAddr,
    pub(super) dir: PathBuf,
}

impl Target {
    /// Resident memory of the process, KiB.
    pub(super) fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    pub(super) fn cpu_ticks(&self) -> anyhow::Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        let rest = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        // Fields 14 and 15 (utime, stime); `rest` starts at field 3.
        Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
    }

    pub(super) fn stop(&mut self) {
        // SAFETY: plain signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(super) fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

pub(super) fn wait_listening(t: &mut Target) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&t.addr, Duration::from_millis(100)).is_err() {
        if let Some(s) = t.child.try_wait()? {
            bail!("{} exited with {s}", t.name);
        }
        if Instant::now() > deadline {
            bail!("{} did not listen on {}", t.name, t.addr);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

pub(super) fn start_collector(
    name: &'static str,
    dir: PathBuf,
    fsync: bool,
    detect: bool,
) -> anyhow::Result<Target> {
    std::fs::create_dir_all(&dir)?;
    let addr = free_addr()?;
    let cfg = dir.join("collector.toml");
    // No cut during the run (the head spans the whole run, like one default
    // 20-minute chunk per round); the bench cuts at the end.
    std::fs::write(
        &cfg,
        format!(
            "[detect]\nenabled = {detect}\n[store]\nchunk_duration = \"24h\"\nhead_max_bytes = {}\nwal_max_bytes = {}\nfsync = {fsync}\n",
            8u64 << 30,
            64u64 << 30
        ),
    )?;
    let bin = workspace_root().join("target/release/nodewatch-collector");
    let log = std::fs::File::create(dir.join("collector.log"))?;
    let child = Command::new(bin)
        .args(["--config"])
        .arg(&cfg)
        .args(["--listen", &addr.to_string(), "--data-dir"])
        .arg(dir.join("data"))
        .env("NODEWATCH_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start the release collector")?;
    let mut t = Target {
        name,
        child,
        addr,
        dir,
    };
    wait_listening(&mut t)?;
    Ok(t)
}

pub(super) fn ensure_prometheus() -> anyhow::Result<PathBuf> {
    if let Ok(p) = which_prometheus() {
        return Ok(p);
    }
    crate::bootstrap::apt_install(&["prometheus"])?;
    which_prometheus()
}

pub(super) fn which_prometheus() -> anyhow::Result<PathBuf> {
    for p in ["/usr/bin/prometheus", "/usr/local/bin/prometheus"] {
        if Path::new(p).exists() {
            return Ok(PathBuf::from(p));
        }
    }
    bail!("prometheus not found")
}

pub(super) fn start_prometheus(bin: &Path, dir: PathBuf) -> anyhow::Result<Target> {
    std::fs::create_dir_all(&dir)?;
    let addr = free_addr()?;
    let cfg = dir.join("prometheus.yml");
    std::fs::write(&cfg, "global:\n  scrape_interval: 1h\nscrape_configs: []\n")?;
    let log = std::fs::File::create(dir.join("prometheus.log"))?;
    let child = Command::new(bin)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--web.enable-remote-write-receiver")
        .arg("--storage.tsdb.retention.time=15d")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start prometheus")?;
    let mut t = Target {
        name: "prometheus",
        child,
        addr,
        dir,
    };
    wait_listening(&mut t)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((200, _)) = http(addr, "GET", "/-/ready", &[], &[]) {
            break;
        }
        if Instant::now() > deadline {
            bail!("prometheus not ready");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(t)
}
