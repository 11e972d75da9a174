//! Kernel tests of the syscall-latency programs (need root and a BTF kernel;
//! they print `skipping: <reason>` and return otherwise).

use std::ffi::CString;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nodewatch_agent::ebpf::{EbpfConfig, EbpfError, HookChoice, SyscallTracer, cgroups};
use nodewatch_proto::hist::{Dense, RELATIVE_ERROR};
use nodewatch_proto::pb;

mod support;

/// The tests attach programs host-wide; one at a time keeps counts exact.
static SERIAL: Mutex<()> = Mutex::new(());

fn start(hook: HookChoice) -> Option<SyscallTracer> {
    start_with(&EbpfConfig {
        hook,
        ..Default::default()
    })
}

/// Starts a tracer, or prints why the test must skip.
fn start_with(config: &EbpfConfig) -> Option<SyscallTracer> {
    match SyscallTracer::start(config) {
        Ok(t) => Some(t),
        Err(e @ (EbpfError::MissingCapability(_) | EbpfError::NoBtf)) => {
            println!("skipping: {e}");
            None
        }
        Err(e) => panic!("eBPF start failed: {e}"),
    }
}

/// A configuration whose budget any measurable cost exceeds: every cost
/// measurement (each collect) detaches the programs for 300 ms.
fn over_budget(window: Duration) -> EbpfConfig {
    EbpfConfig {
        cpu_budget: 1e-12,
        cost_every: 1,
        cost_window: window,
        backoff_min: Duration::from_millis(300),
        backoff_max: Duration::from_secs(1),
        ..Default::default()
    }
}

/// A thread making getppid calls (at most 10 s) until dropped, so that a
/// cost measurement window sees programs run.
struct Busy {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Busy {
    fn start() -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let t0 = Instant::now();
            while !flag.load(std::sync::atomic::Ordering::Relaxed)
                && t0.elapsed() < Duration::from_secs(10)
            {
                // SAFETY: getppid cannot fail.
                unsafe { libc::syscall(libc::SYS_getppid) };
            }
        });
        Busy {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A cgroup created under the cgroup2 root for one test, removed on drop.
struct TestCgroup {
    path: PathBuf,
    name: String,
}

impl TestCgroup {
    fn create(tag: &str) -> Option<Self> {
        let Some(root) = cgroups::cgroup2_root() else {
            println!("skipping: no cgroup2 hierarchy mounted");
            return None;
        };
        let name = format!("nodewatch-test-{}-{tag}", std::process::id());
        let path = root.join(&name);
        if let Err(e) = std::fs::create_dir(&path) {
            println!("skipping: cannot create cgroup {}: {e}", path.display());
            return None;
        }
        Some(Self { path, name })
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Forks a child that joins `cg`, makes syscalls until a byte arrives on a
/// pipe (at most 20 s), runs `work`, and exits. Returns (pid, write end of the pipe).
fn fork_child(cg: &TestCgroup, work: fn()) -> (libc::pid_t, libc::c_int) {
    let procs = CString::new(cg.path.join("cgroup.procs").to_string_lossy().as_bytes()).unwrap();
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds has room for two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: the child only makes async-signal-safe calls before _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: raw syscalls on valid buffers; the child never returns.
        unsafe {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0\n".as_ptr().cast(), 2) != 2 {
                libc::_exit(3);
            }
            libc::close(fd);
            // Keep making syscalls until told to go: attribution of a thread
            // that changed cgroups follows within one interval.
            let mut go = false;
            for _ in 0..1000 {
                libc::syscall(libc::SYS_getppid);
                let mut pfd = libc::pollfd {
                    fd: fds[0],
                    events: libc::POLLIN,
                    revents: 0,
                };
                if libc::poll(&mut pfd, 1, 20) == 1 {
                    go = true;
                    break;
                }
            }
            let mut b = [0u8; 1];
            if !go || libc::read(fds[0], b.as_mut_ptr().cast(), 1) != 1 {
                libc::_exit(4);
            }
            work();
            libc::_exit(0);
        }
    }
    // SAFETY: closing our copy of the read end.
    unsafe { libc::close(fds[0]) };
    (pid, fds[1])
}

/// Runs `work` in a child in its own cgroup once the tracer gives that cgroup
/// a slot; returns everything reported for the cgroup afterwards.
fn run_in_cgroup(
    tracer: &mut SyscallTracer,
    cg: &TestCgroup,
    work: fn(),
) -> Vec<pb::SyscallLatency> {
    let (pid, go) = fork_child(cg, work);
    // Looks, then collects after each 50 ms wait until the cgroup is slotted.
    let mut first = true;
    let slotted = support::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        if !std::mem::take(&mut first) {
            let _ = tracer.collect();
        }
        tracer.tracked_cgroups().contains(&cg.name)
    });
    assert!(slotted, "cgroup {} never got a slot", cg.name);
    // SAFETY: writing one byte to our pipe end, then closing it.
    unsafe {
        assert_eq!(libc::write(go, b"g".as_ptr().cast(), 1), 1);
        libc::close(go);
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed: {status:#x}"
    );
    let (lat, _) = tracer.collect();
    lat.into_iter().filter(|l| l.cgroup == cg.name).collect()
}

fn merged(lat: &[pb::SyscallLatency], syscall: &str) -> (Dense, u64, u64) {
    let mut d = Dense::default();
    let (mut count, mut errors) = (0, 0);
    for l in lat.iter().filter(|l| l.syscall == syscall) {
        count += l.count;
        errors += l.errors;
        if let Some(h) = &l.latency_ns {
            d.add_sparse(&h.indices, &h.counts);
        }
    }
    (d, count, errors)
}

const SLEEPS: u64 = 40;

fn sleep_5ms() {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 5_000_000,
    };
    for _ in 0..SLEEPS {
        // SAFETY: valid timespec, null remainder.
        unsafe {
            libc::syscall(
                libc::SYS_nanosleep,
                &ts,
                std::ptr::null_mut::<libc::timespec>(),
            )
        };
    }
}

#[test]
fn ebpf_nanosleep_in_cgroup_has_n_events_and_p50_near_5ms() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut tracer) = start(HookChoice::Auto) else {
        return;
    };
    let Some(cg) = TestCgroup::create("sleep") else {
        return;
    };
    let lat = run_in_cgroup(&mut tracer, &cg, sleep_5ms);
    let (d, count, errors) = merged(&lat, "family:sleep");
    assert_eq!(count, SLEEPS, "sleep events in the cgroup: {lat:?}");
    assert_eq!(d.total(), SLEEPS);
    assert_eq!(errors, 0);
    let p50 = d.percentile(0.5).unwrap() as f64;
    let rel = (p50 - 5e6).abs() / 5e6;
    assert!(
        rel <= RELATIVE_ERROR,
        "p50 {p50} ns is not within {RELATIVE_ERROR} of 5 ms"
    );
}

const MISC_CALLS: u64 = 300;

fn getppids() {
    for _ in 0..MISC_CALLS {
        // SAFETY: getppid has no arguments and cannot fail.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
}

#[test]
fn ebpf_syscalls_of_no_family_are_attributed_to_misc() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut tracer) = start(HookChoice::Auto) else {
        return;
    };
    let Some(cg) = TestCgroup::create("misc") else {
        return;
    };
    let lat = run_in_cgroup(&mut tracer, &cg, getppids);
    // Until the go signal the child loops on getppid + poll; the iterations
    // after the last collect add one of each (the first poll may come
    // without its getppid, which fell before the collect).
    let (_, misc, _) = merged(&lat, "family:misc");
    let (_, polls, _) = merged(&lat, "family:poll");
    assert!(
        misc >= MISC_CALLS && (polls.saturating_sub(1)..=polls).contains(&(misc - MISC_CALLS)),
        "misc {misc}, polls {polls}: {lat:?}"
    );
    // After the go signal the child reads one byte from its pipe: that is
    // all the "io" family may hold.
    let (_, io, _) = merged(&lat, "family:io");
    assert_eq!(io, 1, "{lat:?}");
}

const FAILS: u64 = 500;

fn failing_closes() {
    for _ in 0..FAILS {
        // SAFETY: closing an invalid descriptor only returns EBADF.
        unsafe { libc::syscall(libc::SYS_close, -1) };
    }
}

#[test]
fn ebpf_failing_syscalls_are_counted_as_errors() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut tracer) = start(HookChoice::Auto) else {
        return;
    };
    let Some(cg) = TestCgroup::create("fail") else {
        return;
    };
    let lat = run_in_cgroup(&mut tracer, &cg, failing_closes);
    let (_, count, errors) = merged(&lat, "family:file");
    assert_eq!(count, FAILS, "{lat:?}");
    assert_eq!(errors, FAILS, "{lat:?}");
}

fn getppid_count(hook: HookChoice) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut tracer) = start(hook) else {
        return;
    };
    let _ = tracer.collect();
    const N: u64 = 100_000;
    for _ in 0..N {
        // SAFETY: getppid has no arguments and cannot fail.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
    let (lat, stats) = tracer.collect();
    let (d, count, errors) = merged(
        &lat.into_iter()
            .filter(|l| l.cgroup.is_empty())
            .collect::<Vec<_>>(),
        "getppid",
    );
    assert!(
        (N..=N + 50).contains(&count),
        "getppid count {count}, expected {N}"
    );
    assert_eq!(d.total(), count);
    assert_eq!(errors, 0);
    assert!(stats.syscalls >= N);
    let expected = match hook {
        HookChoice::RawTracepoint => "raw_tracepoint",
        _ => "tp_btf",
    };
    assert_eq!(stats.hook, expected);
}

#[test]
fn ebpf_getppid_loop_counts_n_tp_btf() {
    getppid_count(HookChoice::TpBtf);
}

#[test]
fn ebpf_getppid_loop_counts_n_raw_tracepoint() {
    getppid_count(HookChoice::RawTracepoint);
}

#[test]
fn ebpf_cost_is_measured_and_budget_backs_off() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut tracer) = start_with(&over_budget(Duration::from_millis(200))) else {
        return;
    };
    // Keep syscalls flowing during the measurement windows.
    let _busy = Busy::start();
    let (_, stats) = tracer.collect();
    assert!(stats.stats_window_ns > 0, "{stats:?}");
    assert!(stats.run_count > 0 && stats.run_time_ns > 0, "{stats:?}");
    assert!(stats.cpu_fraction > 0.0);
    assert!(stats.backed_off, "over budget must detach: {stats:?}");
    assert!(!tracer.attached());
    std::thread::sleep(Duration::from_millis(350));
    let (_, stats) = tracer.collect();
    // Back-off over: attached again.
    assert!(tracer.attached() && !stats.backed_off, "{stats:?}");
    // Measured again, over budget again: detached again.
    let (_, stats) = tracer.collect();
    assert!(stats.backed_off && stats.stats_window_ns > 0, "{stats:?}");
}

/// A POSIX message queue (a syscall family nothing else on a host is likely
/// to use), unlinked on drop.
struct Queue {
    fd: libc::c_int,
    name: CString,
}

impl Queue {
    /// Opens queue `i`, or `None` when the kernel has no POSIX message queues.
    fn open(i: u32) -> Option<Self> {
        let name = CString::new(format!("/nodewatch-test-{}-{i}", std::process::id())).unwrap();
        // SAFETY: a zeroed mq_attr is valid; the fields set are the documented ones.
        let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
        attr.mq_maxmsg = 1;
        attr.mq_msgsize = 8;
        // SAFETY: valid name and attributes.
        let fd = unsafe {
            libc::mq_open(
                name.as_ptr(),
                libc::O_CREAT | libc::O_RDWR | libc::O_CLOEXEC,
                0o600 as libc::mode_t,
                &mut attr as *mut libc::mq_attr,
            )
        };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            assert_eq!(e.raw_os_error(), Some(libc::ENOSYS), "mq_open: {e}");
            return None;
        }
        Some(Queue { fd, name })
    }

    /// Blocks in `mq_timedreceive` (no timeout) until a message arrives.
    fn receive(fd: libc::c_int) {
        let mut buf = [0u8; 8];
        // SAFETY: valid queue descriptor and buffer; null timeout blocks.
        let n = unsafe {
            libc::syscall(
                libc::SYS_mq_timedreceive,
                fd,
                buf.as_mut_ptr(),
                buf.len(),
                std::ptr::null_mut::<libc::c_uint>(),
                std::ptr::null::<libc::timespec>(),
            )
        };
        assert_eq!(n, 1, "mq_timedreceive: {}", std::io::Error::last_os_error());
    }

    fn send(&self) {
        // SAFETY: valid queue descriptor and message.
        let rc = unsafe { libc::mq_send(self.fd, b"x".as_ptr().cast(), 1, 0) };
        assert_eq!(rc, 0, "mq_send: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // SAFETY: our descriptor and name.
        unsafe {
            libc::mq_close(self.fd);
            libc::mq_unlink(self.name.as_ptr());
        }
    }
}

#[test]
fn ebpf_no_latency_spans_a_back_off() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut tracer) = start_with(&over_budget(Duration::from_millis(100))) else {
        return;
    };
    let Some(queues) = (0..3).map(Queue::open).collect::<Option<Vec<Queue>>>() else {
        println!("skipping: no POSIX message queues in this kernel");
        return;
    };
    let fds: Vec<libc::c_int> = queues.iter().map(|q| q.fd).collect();
    // A thread that receives from the three queues in turn.
    let receiver = std::thread::spawn(move || {
        for fd in fds {
            Queue::receive(fd);
        }
    });
    // It is now in its first receive, started while attached.
    std::thread::sleep(Duration::from_millis(100));
    // The collect measures the programs' cost (syscalls kept flowing for it)
    // and, over budget, detaches them.
    let stats = {
        let _busy = Busy::start();
        tracer.collect().1
    };
    assert!(stats.backed_off, "over budget must detach: {stats:?}");
    // While detached: the first receive returns, the second starts.
    queues[0].send();
    std::thread::sleep(Duration::from_millis(350));
    let (_, stats) = tracer.collect();
    assert!(tracer.attached() && !stats.backed_off, "{stats:?}");
    // Attached again: the second receive (started while detached) returns,
    // then the third runs whole, for about 50 ms.
    queues[1].send();
    std::thread::sleep(Duration::from_millis(50));
    queues[2].send();
    receiver.join().unwrap();
    let (lat, _) = tracer.collect();
    let (d, count, _) = merged(&lat, "mq_timedreceive");
    assert_eq!(count, 1, "only the receive timed whole counts: {lat:?}");
    let max = d.max().unwrap();
    assert!(
        (40_000_000..300_000_000).contains(&max),
        "latency {max} ns is not the ~50 ms of the third receive"
    );
}
