//! Scenarios: a process that leaves N connections in CLOSE_WAIT has N
//! attributed to it; N outgoing loopback connections to one destination count
//! N against that destination's ephemeral-port range.

use std::io::Read as _;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use nodewatch_agent::samplers::config::SamplersConfig;
use nodewatch_agent::samplers::registry::SamplerRegistry;
use nodewatch_proto::pb;

mod support;

#[test]
fn close_wait_attributed_to_the_process() {
    const N: usize = 7;
    // The registry runs one pass before the child exists, so the second pass
    // goes through the incremental owner cache, as in the running agent.
    let mut registry = SamplerRegistry::new(&SamplersConfig {
        socket_interval: Duration::ZERO,
        process_interval: Duration::ZERO,
        ..support::sockets_and_processes()
    });
    support::sample(&mut registry);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // bash opens fds 3..=9 as TCP connections, then becomes `sleep` and never closes them.
    let script = format!(
        "for i in $(seq 3 {}); do eval \"exec $i<>/dev/tcp/127.0.0.1/{port}\" || exit 1; done; exec sleep 60",
        2 + N
    );
    let Ok(child) = support::spawn_bash(&script) else {
        println!("skipping: bash not available");
        return;
    };
    let pid = child.pid();
    listener.set_nonblocking(true).unwrap();
    let mut accepted = 0;
    let start = Instant::now();
    while accepted < N && start.elapsed() < Duration::from_secs(10) {
        match listener.accept() {
            // Close our end at once: the child's end goes to CLOSE_WAIT.
            Ok((s, _)) => {
                drop(s);
                accepted += 1;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    assert_eq!(accepted, N);
    support::wait_for_comm(pid, "sleep");
    std::thread::sleep(Duration::from_millis(100));

    let batch = support::sample(&mut registry);
    let c = batch.connections.unwrap();
    let ours: u64 = c
        .sockets_by_owner
        .iter()
        .filter(|o| o.state == "CLOSE_WAIT" && o.pid == pid)
        .map(|o| {
            assert_eq!(o.dst_address, "127.0.0.1");
            assert_eq!(o.dst_port, u32::from(port));
            assert_eq!(o.process, "sleep");
            o.count
        })
        .sum();
    assert_eq!(ours, N as u64);
    let p = batch.processes.iter().find(|p| p.pid == pid).unwrap();
    let cw = p
        .sockets
        .iter()
        .find(|s| s.state == "CLOSE_WAIT")
        .map(|s| s.count);
    assert_eq!(cw, Some(N as u32));
}

fn read_capacity() -> u64 {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let mut it = range.split_whitespace().map(|v| v.parse::<u64>().unwrap());
    let (lo, hi) = (it.next().unwrap(), it.next().unwrap());
    let reserved =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_reserved_ports").unwrap_or_default();
    let mut excluded = 0;
    for part in reserved.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap()),
            None => (part.parse().unwrap(), part.parse().unwrap()),
        };
        excluded += (a.max(lo)..=b.min(hi)).count() as u64;
    }
    hi - lo + 1 - excluded
}

#[test]
fn outgoing_connections_count_against_the_destination_range() {
    const N: usize = 40;
    // A destination of our own on another loopback address, so the tuple is unique.
    let listener = TcpListener::bind("127.0.0.3:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut clients = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..N {
        clients.push(TcpStream::connect(("127.0.0.3", port)).unwrap());
        servers.push(listener.accept().unwrap().0);
    }
    let batch = support::sample_once(&SamplersConfig {
        processes: false,
        ..support::sockets_and_processes()
    });
    let c = batch.connections.unwrap();
    let ours: Vec<&pb::EphemeralPortUse> = c
        .ephemeral_ports
        .iter()
        .filter(|e| e.dst_address == "127.0.0.3" && e.dst_port == u32::from(port))
        .collect();
    assert_eq!(ours.len(), 1, "{:?}", c.ephemeral_ports);
    assert_eq!(ours[0].sockets, N as u64);
    assert_eq!(ours[0].capacity, read_capacity());
    // The accepted side (local port = the listening port) is not ephemeral use.
    let client_ports: Vec<u32> = clients
        .iter()
        .map(|c| u32::from(c.local_addr().unwrap().port()))
        .collect();
    assert!(
        !c.ephemeral_ports
            .iter()
            .any(|e| e.src_address == "127.0.0.3" && client_ports.contains(&e.dst_port)),
        "{:?}",
        c.ephemeral_ports
    );
    // Nothing was sent: the connections are idle and open until dropped here.
    let mut b = [0u8; 1];
    clients[0].set_nonblocking(true).unwrap();
    assert!(clients[0].read(&mut b).is_err());
}

#[test]
fn ipv6_listener_and_connections_are_seen() {
    const N: usize = 5;
    let Ok(listener) = TcpListener::bind("[::1]:0") else {
        println!("skipping: no IPv6 loopback");
        return;
    };
    let port = listener.local_addr().unwrap().port();
    let mut held = Vec::new();
    for _ in 0..N {
        held.push(TcpStream::connect(("::1", port)).unwrap());
        held.push(listener.accept().unwrap().0);
    }
    let batch = support::sample_once(&SamplersConfig {
        processes: false,
        ..support::sockets_and_processes()
    });
    let c = batch.connections.unwrap();
    let l = c
        .listeners
        .iter()
        .find(|l| l.port == u32::from(port))
        .expect("IPv6 listener reported");
    assert_eq!(l.address, "::1");
    assert_eq!(l.pid, std::process::id());
    let e = c
        .ephemeral_ports
        .iter()
        .find(|e| e.dst_address == "::1" && e.dst_port == u32::from(port))
        .expect("IPv6 destination counted");
    assert_eq!(e.sockets, N as u64);
    assert_eq!(e.src_address, "::1");
    let established: u64 = c
        .tcp_states
        .iter()
        .filter(|s| s.state == "ESTABLISHED")
        .map(|s| s.count)
        .sum();
    assert!(established >= 2 * N as u64);
}

#[test]
fn bound_but_idle_socket_is_counted_as_close() {
    // The socket pass leaves out the kernel's walk of the bind table when
    // /proc/net/sockstat shows no TCP socket outside the hashed tables; a
    // bound-only socket must turn it back on.
    if support::kernel_version() < (6, 8) {
        println!("skipping: bound-only sockets are dumped from kernel 6.8");
        return;
    }
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0);
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: zeroed sockaddr_in is valid; bind to 127.0.0.1, any port.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
    // SAFETY: valid address of the right length.
    let rc = unsafe {
        libc::bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            (&raw const sa).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
    };
    assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
    let batch = support::sample_once(&SamplersConfig {
        socket_interval: Duration::ZERO,
        process_interval: Duration::ZERO,
        ..support::sockets_and_processes()
    });
    let c = batch.connections.unwrap();
    let close: u64 = c
        .tcp_states
        .iter()
        .filter(|s| s.state == "CLOSE")
        .map(|s| s.count)
        .sum();
    assert!(close >= 1, "{:?}", c.tcp_states);
    let me = batch
        .processes
        .iter()
        .find(|p| p.pid == std::process::id())
        .expect("this process reported");
    assert!(
        me.sockets
            .iter()
            .any(|s| s.state == "CLOSE" && s.count >= 1),
        "{:?}",
        me.sockets
    );
    drop(fd);
}
