//! Scenario: a loopback listener with backlog 16 that never accepts, flooded
//! with connections: its accept queue reaches the maximum and ListenOverflows
//! rises; the listener is reported with its port and owning pid.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::time::Duration;

use nodewatch_agent::samplers::config::SamplersConfig;
use nodewatch_agent::samplers::registry::SamplerRegistry;
use nodewatch_proto::pb;

mod support;

fn sockaddr(port: u16) -> libc::sockaddr_in {
    // SAFETY: zeroed sockaddr_in is valid.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as u16;
    sa.sin_port = port.to_be();
    sa.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
    sa
}

fn tcp_socket(flags: libc::c_int) -> OwnedFd {
    // SAFETY: plain socket call.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | flags,
            0,
        )
    };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: fresh descriptor.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn listener(backlog: i32) -> (OwnedFd, u16) {
    let fd = tcp_socket(0);
    let sa = sockaddr(0);
    let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
    // SAFETY: valid address and length.
    assert_eq!(
        unsafe { libc::bind(fd.as_raw_fd(), (&raw const sa).cast(), len) },
        0
    );
    // SAFETY: valid socket.
    assert_eq!(unsafe { libc::listen(fd.as_raw_fd(), backlog) }, 0);
    // SAFETY: zeroed out-parameter.
    let mut bound: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut blen = len;
    // SAFETY: valid out-parameters.
    assert_eq!(
        unsafe { libc::getsockname(fd.as_raw_fd(), (&raw mut bound).cast(), &mut blen) },
        0
    );
    (fd, u16::from_be(bound.sin_port))
}

fn connect_nonblocking(port: u16) -> OwnedFd {
    let fd = tcp_socket(libc::SOCK_NONBLOCK);
    let sa = sockaddr(port);
    // SAFETY: valid address and length.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&raw const sa).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
    };
    let err = std::io::Error::last_os_error();
    assert!(
        rc == 0 || err.raw_os_error() == Some(libc::EINPROGRESS),
        "connect: {err}"
    );
    fd
}

fn sample(registry: &mut SamplerRegistry) -> pb::ConnectionStats {
    support::sample(registry)
        .connections
        .expect("connections sampled")
}

#[test]
fn flooded_listener_is_full_and_overflowing_attributed_to_port_and_pid() {
    let config = SamplersConfig {
        cpu: false,
        memory: false,
        disks: false,
        processes: false,
        // Every call runs the socket pass.
        socket_interval: Duration::ZERO,
        ..SamplersConfig::default()
    };
    let mut registry = SamplerRegistry::new(&config);
    let (_listener, port) = listener(16);
    let baseline = sample(&mut registry);

    let mut clients = Vec::new();
    for _ in 0..40 {
        clients.push(connect_nonblocking(port));
    }
    std::thread::sleep(Duration::from_millis(300));
    let first = sample(&mut registry);
    let l = first
        .listeners
        .iter()
        .find(|l| l.port == u32::from(port))
        .expect("listener reported");
    assert_eq!(l.backlog, 16);
    // Linux admits one more than the backlog before it drops (full is `> backlog`).
    assert!(
        l.accept_queue >= l.backlog,
        "accept queue {} of {}",
        l.accept_queue,
        l.backlog
    );
    assert_eq!(l.pid, std::process::id());
    assert!(!l.process.is_empty());
    assert_eq!(l.address, "127.0.0.1");
    assert!(
        first.listen_overflows > baseline.listen_overflows,
        "overflows {} -> {}",
        baseline.listen_overflows,
        first.listen_overflows
    );

    for _ in 0..20 {
        clients.push(connect_nonblocking(port));
    }
    std::thread::sleep(Duration::from_millis(300));
    let second = sample(&mut registry);
    assert!(
        second.listen_overflows > first.listen_overflows,
        "still rising"
    );
    let l2 = second
        .listeners
        .iter()
        .find(|l| l.port == u32::from(port))
        .unwrap();
    assert_eq!(
        l2.accept_queue, l.accept_queue,
        "queue stays at its maximum"
    );
}
