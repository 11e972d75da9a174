//! Connection exhaustion, one rule per limit: `conntrack`, `ephemeral_ports`,
//! `listen_backlog`, `close_wait` (a socket leak) and `tcp_retransmits`.

use std::collections::HashMap;

use nodewatch_proto::pb;

use super::{host_series, process_label, process_subject, within};
use crate::config::{
    CloseWaitConfig, ConntrackConfig, EphemeralPortsConfig, ListenBacklogConfig,
    TcpRetransmitsConfig,
};
use crate::detect::fit::{seconds, theil_sen};
use crate::detect::rule::{
    Evaluation, HostView, Observation, Rule, Severity, Worse, grade, percent, value,
};

rule_struct!(
    /// `conntrack`: entries >= 75 % (high) / 90 % (critical) of nf_conntrack_max.
    Conntrack,
    ConntrackConfig
);

impl Rule for Conntrack {
    rule_basics!("conntrack");

    fn evaluate(&self, host: &HostView<'_>) -> Evaluation {
        let Some(c) = &host.latest.connections else {
            return Evaluation::default();
        };
        let mut out = Evaluation::complete();
        let (Some(n), Some(max)) = (c.conntrack_entries, c.conntrack_max) else {
            return out;
        };
        if max == 0 {
            return out;
        }
        let ratio = n as f64 / max as f64;
        let t = [
            (Severity::High, self.cfg.high),
            (Severity::Critical, self.cfg.critical),
        ];
        let (level, hold, threshold) = grade(ratio, &t, Worse::Above, self.hysteresis);
        if hold.is_some() {
            out.observations.push(Observation {
                level,
                hold,
                summary: format!(
                    "{}: conntrack table {} full ({n} of {max}); new connections are dropped when it is full",
                    host.hostname,
                    percent(ratio)
                ),
                evidence: pb::AlertEvidence {
                    value: ratio,
                    threshold,
                    values: vec![
                        value("entries", n as f64, "count"),
                        value("max", max as f64, "count"),
                    ],
                    series_name: "conntrack_entries".into(),
                    series: host_series(host.recent, |b| {
                        b.connections.as_ref().and_then(|c| c.conntrack_entries).map(|v| v as f64)
                    }),
                    ..Default::default()
                },
                ..Default::default()
            });
        }
        out
    }
}

rule_struct!(
    /// `ephemeral_ports`: sockets per (source, destination, port) >= 70 / 90 % of the usable range.
    EphemeralPorts,
    EphemeralPortsConfig
);

impl Rule for EphemeralPorts {
    rule_basics!("ephemeral_ports");

    fn evaluate(&self, host: &HostView<'_>) -> Evaluation {
        let Some(c) = &host.latest.connections else {
            return Evaluation::default();
        };
        let mut out = Evaluation::complete();
        let t = [
            (Severity::High, self.cfg.high),
            (Severity::Critical, self.cfg.critical),
        ];
        for e in &c.ephemeral_ports {
            if e.capacity == 0 {
                continue;
            }
            let ratio = e.sockets as f64 / e.capacity as f64;
            let (level, hold, threshold) = grade(ratio, &t, Worse::Above, self.hysteresis);
            if hold.is_none() {
                continue;
            }
            out.observations.push(Observation {
                subject: pb::AlertSubject {
                    address: e.src_address.clone(),
                    destination: e.dst_address.clone(),
                    port: e.dst_port,
                    ..Default::default()
                },
                level,
                hold,
                summary: format!(
                    "{} -> {}:{} uses {} of {} ephemeral ports ({}); connect() fails with EADDRNOTAVAIL when they run out",
                    e.src_address,
                    e.dst_address,
                    e.dst_port,
                    e.sockets,
                    e.capacity,
                    percent(ratio)
                ),
                evidence: pb::AlertEvidence {
                    value: ratio,
                    threshold,
                    values: vec![
                        value("sockets", e.sockets as f64, "count"),
                        value("capacity", e.capacity as f64, "count"),
                    ],
                    ..Default::default()
                },
                ..Default::default()
            });
        }
        out
    }
}

rule_struct!(
    /// `listen_backlog`: a listener's accept queue >= 80 % of its backlog or
    /// >= 1,000 waiting; ListenOverflows / ListenDrops rising (host-wide).
    ListenBacklog,
    ListenBacklogConfig
);

impl Rule for ListenBacklog {
    rule_basics!("listen_backlog");

    fn evaluate(&self, host: &HostView<'_>) -> Evaluation {
        let Some(c) = &host.latest.connections else {
            return Evaluation::default();
        };
        let mut out = Evaluation::complete();
        let h = self.hysteresis;
        for l in &c.listeners {
            let q = f64::from(l.accept_queue);
            let ratio = if l.backlog > 0 {
                q / f64::from(l.backlog)
            } else {
                0.0
            };
            let abs = self.cfg.high_queue as f64;
            let level = (l.accept_queue > 0 && (ratio >= self.cfg.high || q >= abs))
                .then_some(Severity::High);
            let hold = (l.accept_queue > 0
                && (ratio >= self.cfg.high * (1.0 - h) || q >= abs * (1.0 - h)))
                .then_some(Severity::High);
            if hold.is_none() {
                continue;
            }
            let owner = if l.pid > 0 {
                format!(" owned by {} (pid {})", l.process, l.pid)
            } else {
                String::new()
            };
            out.observations.push(Observation {
                subject: pb::AlertSubject {
                    address: l.address.clone(),
                    port: l.port,
                    pid: l.pid,
                    process: l.process.clone(),
                    ..Default::default()
                },
                level,
                hold,
                summary: format!(
                    "listener {}:{}{owner} has {} connections waiting to be accepted (backlog {}); new connections are dropped when it is full",
                    l.address, l.port, l.accept_queue, l.backlog
                ),
                evidence: pb::AlertEvidence {
                    value: ratio,
                    threshold: self.cfg.high,
                    values: vec![
                        value("accept_queue", q, "count"),
                        value("backlog", f64::from(l.backlog), "count"),
                        value("high_queue", abs, "count"),
                    ],
                    ..Default::default()
                },
                ..Default::default()
            });
        }
        // Overflows rising over the window: connections were dropped.
        let win = within(host.recent, self.cfg.window);
        let drops = |b: &pb::Batch| {
            b.connections
                .as_ref()
                .map(|c| c.listen_overflows + c.listen_drops)
        };
        let first = win.iter().find_map(|b| drops(b));
        let last = win.iter().rev().find_map(|b| drops(b));
        if let (Some(a), Some(b)) = (first, last)
            && b > a
        {
            let n = b - a;
            out.observations.push(Observation {
                subject: pb::AlertSubject {
                    resource: "overflows".into(),
                    ..Default::default()
                },
                level: Some(Severity::High),
                hold: Some(Severity::High),
                summary: format!(
                    "{}: {n} connections dropped at full accept queues in the last {} (ListenOverflows/ListenDrops)",
                    host.hostname,
                    crate::detect::rule::duration(self.cfg.window.as_secs_f64())
                ),
                evidence: pb::AlertEvidence {
                    value: n as f64,
                    threshold: 0.0,
                    window_seconds: self.cfg.window.as_secs_f64(),
                    series_name: "listen_overflows_and_drops".into(),
                    series: host_series(win, |b| drops(b).map(|v| v as f64)),
                    ..Default::default()
                },
                ..Default::default()
            });
        }
        out
    }
}

rule_struct!(
    /// `close_wait`: a process's CLOSE_WAIT sockets rising over the window (a socket leak).
    CloseWait,
    CloseWaitConfig
);

fn close_wait_of(p: &pb::ProcessStats) -> u64 {
    p.sockets
        .iter()
        .filter(|s| s.state == "CLOSE_WAIT")
        .map(|s| u64::from(s.count))
        .sum()
}

impl Rule for CloseWait {
    rule_basics!("close_wait");

    fn evaluate(&self, host: &HostView<'_>) -> Evaluation {
        let procs = &host.latest.processes;
        let mut out = Evaluation {
            observations: Vec::new(),
            complete: host.latest.processes_complete && !procs.is_empty(),
        };
        let win = within(host.recent, self.cfg.window);
        let origin = win.first().map_or(0, |b| b.time_unix_nano);
        let mut series: HashMap<(u32, u64), Vec<(i64, f64)>> = HashMap::new();
        for b in win {
            for p in &b.processes {
                series
                    .entry((p.pid, p.start_time_ticks))
                    .or_default()
                    .push((b.time_unix_nano, close_wait_of(p) as f64));
            }
        }
        let h = self.hysteresis;
        for p in procs {
            let now = close_wait_of(p);
            if (now as f64) < self.cfg.min_sockets as f64 * (1.0 - h) {
                continue;
            }
            let Some(points) = series.get(&(p.pid, p.start_time_ticks)) else {
                continue;
            };
            let Some(fit) = theil_sen(&seconds(points, origin)) else {
                out.observations
                    .push(Observation::unknown(process_subject(p)));
                continue;
            };
            let increase = fit.slope * fit.span;
            let level = (now >= self.cfg.min_sockets
                && increase >= self.cfg.min_increase
                && fit.slope_low > 0.0)
                .then_some(Severity::Medium);
            let hold = (increase >= self.cfg.min_increase * (1.0 - h) && fit.slope > 0.0)
                .then_some(Severity::Medium);
            if hold.is_none() {
                continue;
            }
            out.observations.push(Observation {
                subject: process_subject(p),
                level,
                hold,
                summary: format!(
                    "{} piles up CLOSE_WAIT sockets: {now} now, +{increase:.0} in {} (it does not close connections its peers closed)",
                    process_label(p),
                    crate::detect::rule::duration(fit.span)
                ),
                evidence: pb::AlertEvidence {
                    value: increase,
                    threshold: self.cfg.min_increase,
                    window_seconds: fit.span,
                    values: vec![
                        value("close_wait", now as f64, "count"),
                        value("slope", fit.slope * 3600.0, "sockets/h"),
                        value("open_fds", f64::from(p.open_fds), "count"),
                    ],
                    series_name: "close_wait".into(),
                    series: points
                        .iter()
                        .map(|&(t, v)| pb::EvidencePoint {
                            time_unix_nano: t,
                            value: v,
                        })
                        .collect(),
                    ..Default::default()
                },
                ..Default::default()
            });
        }
        out
    }
}

rule_struct!(
    /// `tcp_retransmits`: retransmitted segments per packet sent > 1 % over the window.
    TcpRetransmits,
    TcpRetransmitsConfig
);

impl Rule for TcpRetransmits {
    rule_basics!("tcp_retransmits");

    fn evaluate(&self, host: &HostView<'_>) -> Evaluation {
        let win = within(host.recent, self.cfg.window);
        let counters = |b: &pb::Batch| {
            b.connections.as_ref().map(|c| {
                let sent: u64 = c.interfaces.iter().map(|i| i.tx_packets).sum();
                (c.retransmits, sent)
            })
        };
        let (Some((r0, s0)), Some((r1, s1))) = (
            win.iter().find_map(|b| counters(b)),
            win.iter().rev().find_map(|b| counters(b)),
        ) else {
            return Evaluation::default();
        };
        if r1 < r0 || s1 < s0 {
            // Counters reset (reboot): nothing to say until the window refills.
            return Evaluation::default();
        }
        let mut out = Evaluation::complete();
        let (retrans, sent) = (r1 - r0, s1 - s0);
        if sent < self.cfg.min_packets.max(1) {
            return out;
        }
        let ratio = retrans as f64 / sent as f64;
        let t = [(Severity::Medium, self.cfg.medium)];
        let (level, hold, threshold) = grade(ratio, &t, Worse::Above, self.hysteresis);
        if hold.is_some() {
            out.observations.push(Observation {
                level,
                hold,
                summary: format!(
                    "{}: {} of TCP segments retransmitted over the last {} ({retrans} of {sent} packets sent): loss or congestion on the path",
                    host.hostname,
                    format_args!("{:.1} %", ratio * 100.0),
                    crate::detect::rule::duration(self.cfg.window.as_secs_f64())
                ),
                evidence: pb::AlertEvidence {
                    value: ratio,
                    threshold,
                    window_seconds: self.cfg.window.as_secs_f64(),
                    values: vec![
                        value("retransmitted", retrans as f64, "count"),
                        value("packets_sent", sent as f64, "count"),
                    ],
                    ..Default::default()
                },
                ..Default::default()
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::rules::testing::{FakeHistory, evaluate, t};

    fn conns(c: pb::ConnectionStats, secs: f64) -> pb::Batch {
        pb::Batch {
            time_unix_nano: t(secs),
            connections: Some(c),
            ..Default::default()
        }
    }

    #[test]
    fn conntrack_and_ephemeral_ports() {
        let h = FakeHistory::default();
        let rule = Conntrack::new(ConntrackConfig::default(), 0.05);
        let c = |n| pb::ConnectionStats {
            conntrack_entries: Some(n),
            conntrack_max: Some(1000),
            ..Default::default()
        };
        assert!(
            evaluate(&rule, vec![conns(c(100), 0.0)], &h)
                .observations
                .is_empty()
        );
        assert_eq!(
            evaluate(&rule, vec![conns(c(800), 0.0)], &h).observations[0].level,
            Some(Severity::High)
        );
        assert_eq!(
            evaluate(&rule, vec![conns(c(950), 0.0)], &h).observations[0].level,
            Some(Severity::Critical)
        );

        let rule = EphemeralPorts::new(EphemeralPortsConfig::default(), 0.05);
        let e = pb::ConnectionStats {
            ephemeral_ports: vec![pb::EphemeralPortUse {
                src_address: "10.0.0.1".into(),
                dst_address: "10.0.0.2".into(),
                dst_port: 5432,
                sockets: 920,
                capacity: 1000,
            }],
            ..Default::default()
        };
        let e = evaluate(&rule, vec![conns(e, 0.0)], &h);
        let o = &e.observations[0];
        assert_eq!(o.level, Some(Severity::Critical));
        assert_eq!(
            (o.subject.destination.as_str(), o.subject.port),
            ("10.0.0.2", 5432)
        );
    }

    #[test]
    fn listen_backlog_names_listener_and_overflows() {
        let h = FakeHistory::default();
        let rule = ListenBacklog::new(ListenBacklogConfig::default(), 0.05);
        let l = |q, overflows| pb::ConnectionStats {
            listeners: vec![pb::ListenerStats {
                address: "0.0.0.0".into(),
                port: 8080,
                accept_queue: q,
                backlog: 128,
                pid: 77,
                process: "api".into(),
            }],
            listen_overflows: overflows,
            ..Default::default()
        };
        let e = evaluate(&rule, vec![conns(l(3, 0), 0.0)], &h);
        assert!(e.observations.is_empty());
        let e = evaluate(
            &rule,
            vec![conns(l(129, 5), 0.0), conns(l(129, 9), 1.0)],
            &h,
        );
        assert_eq!(e.observations.len(), 2);
        let o = &e.observations[0];
        assert_eq!(
            (o.subject.port, o.subject.pid, o.level),
            (8080, 77, Some(Severity::High))
        );
        assert_eq!(e.observations[1].evidence.value, 4.0);
    }

    #[test]
    fn close_wait_rising_not_flat() {
        let h = FakeHistory::default();
        let rule = CloseWait::new(CloseWaitConfig::default(), 0.05);
        let b = |secs: f64, n: u32| pb::Batch {
            time_unix_nano: t(secs),
            processes: vec![pb::ProcessStats {
                pid: 5,
                name: "leaky".into(),
                sockets: vec![pb::ProcessSocketCount {
                    state: "CLOSE_WAIT".into(),
                    count: n,
                }],
                ..Default::default()
            }],
            processes_complete: true,
            ..Default::default()
        };
        let rising: Vec<_> = (0..30)
            .map(|i| b(f64::from(i) * 10.0, 2 * i as u32))
            .collect();
        let e = evaluate(&rule, rising, &h);
        assert_eq!(e.observations[0].level, Some(Severity::Medium));
        assert_eq!(e.observations[0].subject.pid, 5);
        let flat: Vec<_> = (0..30).map(|i| b(f64::from(i) * 10.0, 100)).collect();
        assert!(evaluate(&rule, flat, &h).observations.is_empty());
    }

    #[test]
    fn retransmits_ratio_over_the_window() {
        let h = FakeHistory::default();
        let rule = TcpRetransmits::new(TcpRetransmitsConfig::default(), 0.05);
        let c = |r, s| pb::ConnectionStats {
            retransmits: r,
            interfaces: vec![pb::NetInterfaceStats {
                name: "eth0".into(),
                tx_packets: s,
                ..Default::default()
            }],
            ..Default::default()
        };
        let e = evaluate(
            &rule,
            vec![conns(c(0, 0), 0.0), conns(c(300, 10_000), 60.0)],
            &h,
        );
        assert_eq!(e.observations[0].level, Some(Severity::Medium));
        let e = evaluate(
            &rule,
            vec![conns(c(0, 0), 0.0), conns(c(10, 10_000), 60.0)],
            &h,
        );
        assert!(e.complete && e.observations.is_empty());
        // Too little traffic to judge.
        let e = evaluate(&rule, vec![conns(c(0, 0), 0.0), conns(c(5, 100), 60.0)], &h);
        assert!(e.observations.is_empty());
    }
}
