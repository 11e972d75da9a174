//! `nodewatch conns <HOST>`: sockets, listeners, ephemeral ports and leaks
//! from the latest snapshot.

use nodewatch_proto::pb;
use serde_json::Value;
use tonic::transport::Channel;

use crate::client::CliError;
use crate::render::units::percent;
use crate::render::{OutputFormat, Table, print_json};

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Renders the connection tables.
pub fn render(c: &pb::ConnectionStats) -> String {
    let mut out = String::new();
    let states = |v: &[pb::SocketStateCount]| {
        v.iter()
            .map(|s| format!("{} {}", s.state, s.count))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut head = Table::new(["FIELD", "VALUE"]);
    head.row(["tcp".to_string(), states(&c.tcp_states)]);
    head.row(["udp".to_string(), states(&c.udp_states)]);
    head.row([
        "listen overflows / drops".to_string(),
        format!("{} / {}", c.listen_overflows, c.listen_drops),
    ]);
    head.row([
        "retransmitted segments".to_string(),
        c.retransmits.to_string(),
    ]);
    head.row([
        "file handles".to_string(),
        format!(
            "{} of {} ({})",
            c.file_handles,
            c.file_handles_max,
            percent(ratio(c.file_handles, c.file_handles_max))
        ),
    ]);
    head.row([
        "conntrack".to_string(),
        match (c.conntrack_entries, c.conntrack_max) {
            (Some(n), Some(max)) => format!("{n} of {max} ({})", percent(ratio(n, max))),
            _ => "not loaded".to_string(),
        },
    ]);
    out.push_str(&head.render());

    if !c.listeners.is_empty() {
        let mut t = Table::new([
            "LISTEN", "PORT", "QUEUE", "BACKLOG", "FILL", "PID", "PROCESS",
        ]);
        let mut listeners = c.listeners.clone();
        listeners.sort_by(|a, b| {
            ratio(u64::from(b.accept_queue), u64::from(b.backlog))
                .total_cmp(&ratio(u64::from(a.accept_queue), u64::from(a.backlog)))
                .then(a.port.cmp(&b.port))
        });
        for l in &listeners {
            t.row([
                l.address.clone(),
                l.port.to_string(),
                l.accept_queue.to_string(),
                l.backlog.to_string(),
                percent(ratio(u64::from(l.accept_queue), u64::from(l.backlog))),
                if l.pid == 0 {
                    "-".to_string()
                } else {
                    l.pid.to_string()
                },
                l.process.clone(),
            ]);
        }
        out.push('\n');
        out.push_str(&t.render());
    }
    if !c.ephemeral_ports.is_empty() {
        let mut t = Table::new([
            "SOURCE",
            "DESTINATION",
            "PORT",
            "SOCKETS",
            "CAPACITY",
            "USE",
        ]);
        for e in &c.ephemeral_ports {
            t.row([
                e.src_address.clone(),
                e.dst_address.clone(),
                e.dst_port.to_string(),
                e.sockets.to_string(),
                e.capacity.to_string(),
                percent(ratio(e.sockets, e.capacity)),
            ]);
        }
        out.push('\n');
        out.push_str(&t.render());
    }
    if !c.sockets_by_owner.is_empty() {
        let mut t = Table::new(["STATE", "PID", "PROCESS", "REMOTE", "PORT", "COUNT"]);
        for o in &c.sockets_by_owner {
            t.row([
                o.state.clone(),
                if o.pid == 0 {
                    "-".to_string()
                } else {
                    o.pid.to_string()
                },
                o.process.clone(),
                o.dst_address.clone(),
                if o.dst_port == 0 {
                    "*".to_string()
                } else {
                    o.dst_port.to_string()
                },
                o.count.to_string(),
            ]);
        }
        out.push('\n');
        out.push_str(&t.render());
    }
    out
}

/// `nodewatch conns`.
pub async fn run(channel: Channel, host: &str, output: OutputFormat) -> Result<(), CliError> {
    let (_, latest) = crate::client::get_host(channel, host).await?;
    match output {
        OutputFormat::Json => {
            let mut doc = match &latest.connections {
                Some(c) => serde_json::to_value(c).map_err(|e| CliError::Output(e.to_string()))?,
                None => Value::Null,
            };
            if let Value::Object(map) = &mut doc {
                map.insert("time_unix_nano".into(), latest.time_unix_nano.into());
            }
            print_json(&doc)
        }
        OutputFormat::Table => {
            let Some(c) = &latest.connections else {
                eprintln!(
                    "no connection data from this host yet (is the connections sampler enabled?)"
                );
                return Ok(());
            };
            print!("{}", render(c));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_listeners_fullest_first() {
        let c = pb::ConnectionStats {
            listeners: vec![
                pb::ListenerStats {
                    address: "0.0.0.0".into(),
                    port: 22,
                    accept_queue: 0,
                    backlog: 128,
                    pid: 1,
                    process: "sshd".into(),
                },
                pb::ListenerStats {
                    address: "127.0.0.1".into(),
                    port: 8080,
                    accept_queue: 17,
                    backlog: 16,
                    pid: 99,
                    process: "app".into(),
                },
            ],
            file_handles: 10,
            file_handles_max: 100,
            ..Default::default()
        };
        let text = render(&c);
        let app = text.find("8080").unwrap();
        let ssh = text.find("sshd").unwrap();
        assert!(app < ssh, "{text}");
        assert!(text.contains("106.2%"), "{text}");
        assert!(text.contains("10 of 100 (10.0%)"), "{text}");
        assert!(text.contains("not loaded"), "{text}");
    }
}
