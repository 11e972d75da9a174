//! Scenario: a child with `ulimit -n 256` holding 200 open descriptors is
//! reported with exactly that count and those limits.

mod support;

#[test]
fn child_with_200_fds_under_ulimit_256() {
    // fds 0-2 plus 3..=199 opened by the shell, kept across exec: 200 in all.
    // Descriptors inherited from the test runner (e.g. a jobserver pipe) are closed first.
    let script = "for f in /proc/$$/fd/*; do n=${f##*/}; [ \"$n\" -gt 2 ] && eval \"exec $n>&-\"; done; \
                  ulimit -n 256 || exit 1; for i in $(seq 3 199); do eval \"exec $i</dev/null\"; done; exec sleep 60";
    let Ok(child) = support::spawn_bash(script) else {
        println!("skipping: bash not available");
        return;
    };
    let pid = child.pid();
    assert!(
        support::wait_for_comm(pid, "sleep"),
        "child never reached sleep"
    );

    let batch = support::sample_once(&support::sockets_and_processes());
    assert!(batch.processes_complete);
    let p = batch
        .processes
        .iter()
        .find(|p| p.pid == pid)
        .expect("child in the process list");
    assert_eq!(p.name, "sleep");
    assert_eq!(p.open_fds, 200);
    assert_eq!(p.fd_limit_soft, 256);
    assert_eq!(p.fd_limit_hard, 256);
    assert!(p.cmdline.starts_with("sleep 60"), "{}", p.cmdline);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let start: u64 = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(p.start_time_ticks, start);
}
