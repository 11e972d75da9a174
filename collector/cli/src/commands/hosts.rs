//! `nodewatch hosts` and `nodewatch host <HOST>`.

use nodewatch_proto::pb;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::client::CliError;
use crate::render::units::{ago, bytes, feature_state, percent};
use crate::render::{OutputFormat, Table, print_json};

/// JSON view of a host summary (stable field names for scripts).
pub fn summary_json(s: &pb::HostSummary) -> Value {
    let id = s.identity.clone().unwrap_or_default();
    let caps = s.capabilities.clone().unwrap_or_default();
    let ebpf = caps.ebpf.unwrap_or_default();
    json!({
        "host_id": id.host_id,
        "hostname": id.hostname,
        "kernel": id.kernel,
        "arch": id.arch,
        "os": id.os,
        "boot_id": id.boot_id,
        "cpu_count": id.cpu_count,
        "agent_version": s.agent_version,
        "labels": s.labels,
        "connected": s.connected,
        "last_seen_unix_nano": s.last_seen_unix_nano,
        "sample_time_unix_nano": s.sample_time_unix_nano,
        "ebpf": {
            "state": crate::render::units::state_name(ebpf.state),
            "reason": ebpf.reason,
        },
        "cpu_busy_ratio": s.cpu_busy_ratio,
        "load1": s.load1,
        "memory_total_bytes": s.memory_total_bytes,
        "memory_available_bytes": s.memory_available_bytes,
        "memory_used_ratio": s.memory_used_ratio,
        "batches_received": s.batches_received,
    })
}

/// The hosts table.
fn hosts_table(hosts: &[pb::HostSummary]) -> String {
    let mut table = Table::new([
        "HOSTNAME",
        "HOST ID",
        "STATE",
        "CPU",
        "LOAD1",
        "MEM USED",
        "MEM TOTAL",
        "EBPF",
        "AGENT",
        "LAST SEEN",
    ]);
    for h in hosts {
        let id = h.identity.clone().unwrap_or_default();
        let ebpf = h.capabilities.as_ref().and_then(|c| c.ebpf.as_ref());
        table.row([
            id.hostname,
            id.host_id.chars().take(12).collect(),
            if h.connected { "up" } else { "down" }.to_string(),
            percent(h.cpu_busy_ratio),
            format!("{:.2}", h.load1),
            percent(h.memory_used_ratio),
            bytes(h.memory_total_bytes),
            feature_state(ebpf),
            h.agent_version.clone(),
            ago(h.last_seen_unix_nano),
        ]);
    }
    table.render()
}

/// `nodewatch hosts`.
pub async fn list(channel: Channel, output: OutputFormat) -> Result<(), CliError> {
    let hosts = crate::client::query_client(channel)
        .list_hosts(pb::ListHostsRequest {})
        .await?
        .into_inner()
        .hosts;
    match output {
        OutputFormat::Json => print_json(&Value::Array(hosts.iter().map(summary_json).collect())),
        OutputFormat::Table => {
            if hosts.is_empty() {
                eprintln!("no hosts yet: start nodewatch-agent pointed at this collector");
                return Ok(());
            }
            print!("{}", hosts_table(&hosts));
            Ok(())
        }
    }
}

/// `nodewatch hosts --watch`: redraws the table (or prints one JSON array per
/// line) at every update from `Query.WatchHosts`, `count` updates or forever.
pub async fn watch(
    channel: Channel,
    output: OutputFormat,
    interval: std::time::Duration,
    count: Option<u64>,
) -> Result<(), CliError> {
    let mut client = crate::client::query_client(channel);
    let mut updates = client
        .watch_hosts(pb::WatchHostsRequest {
            interval_ms: u32::try_from(interval.as_millis()).unwrap_or(u32::MAX),
        })
        .await?
        .into_inner();
    let mut seen = 0u64;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    while count.is_none_or(|c| seen < c) {
        let Some(update) = updates.message().await? else {
            return Err(CliError::Output(
                "the collector ended the watch".to_string(),
            ));
        };
        seen += 1;
        match output {
            OutputFormat::Json => {
                let line = Value::Array(update.hosts.iter().map(summary_json).collect());
                println!("{line}");
            }
            OutputFormat::Table => {
                if tty {
                    // Clear the screen and move home before each redraw.
                    print!("\x1b[2J\x1b[H");
                }
                print!("{}", hosts_table(&update.hosts));
                println!(
                    "({} hosts, every {:?}; Ctrl-C to stop)",
                    update.hosts.len(),
                    interval
                );
            }
        }
    }
    Ok(())
}

/// `nodewatch host <HOST>`.
pub async fn show(channel: Channel, host: &str, output: OutputFormat) -> Result<(), CliError> {
    let (summary, latest) = crate::client::get_host(channel, host).await?;
    match output {
        OutputFormat::Json => {
            let mut doc = summary_json(&summary);
            let samplers: Vec<Value> = summary
                .capabilities
                .iter()
                .flat_map(|c| c.samplers.iter())
                .map(|s| {
                    json!({
                        "name": s.name,
                        "state": crate::render::units::state_name(s.state),
                        "reason": s.reason,
                    })
                })
                .collect();
            doc["samplers"] = Value::Array(samplers);
            doc["spool"] = spool_json(latest.agent.as_ref());
            doc["latest"] =
                serde_json::to_value(&latest).map_err(|e| CliError::Output(e.to_string()))?;
            print_json(&doc)
        }
        OutputFormat::Table => {
            print!("{}", render_host(&summary, &latest));
            Ok(())
        }
    }
}

/// JSON view of the agent's spool figures; null when the collector did not
/// report them (an older agent, or a collector that does not keep them).
fn spool_json(agent: Option<&pb::AgentStats>) -> Value {
    match agent {
        Some(a) => json!({
            "bytes": a.spool_bytes,
            "batches": a.spool_batches,
            "dropped_batches": a.dropped_batches,
        }),
        None => Value::Null,
    }
}

/// "1.2 MiB, 340 batches, 0 dropped"; "unknown" without figures.
fn spool_line(agent: Option<&pb::AgentStats>) -> String {
    match agent {
        Some(a) => format!(
            "{}, {} batches, {} dropped",
            bytes(a.spool_bytes),
            a.spool_batches,
            a.dropped_batches
        ),
        None => "unknown (not reported)".to_string(),
    }
}

fn render_host(s: &pb::HostSummary, latest: &pb::Batch) -> String {
    let id = s.identity.clone().unwrap_or_default();
    let caps = s.capabilities.clone().unwrap_or_default();
    let mut t = Table::new(["FIELD", "VALUE"]);
    t.row(["hostname".to_string(), id.hostname.clone()]);
    t.row(["host id".to_string(), id.host_id.clone()]);
    t.row([
        "state".to_string(),
        if s.connected { "up" } else { "down" }.to_string(),
    ]);
    t.row(["last seen".to_string(), ago(s.last_seen_unix_nano)]);
    t.row(["kernel".to_string(), format!("{} ({})", id.kernel, id.arch)]);
    t.row(["os".to_string(), id.os.clone()]);
    t.row(["agent".to_string(), s.agent_version.clone()]);
    t.row(["spool".to_string(), spool_line(latest.agent.as_ref())]);
    t.row(["ebpf".to_string(), feature_state(caps.ebpf.as_ref())]);
    for sampler in &caps.samplers {
        t.row([
            format!("sampler {}", sampler.name),
            feature_state(Some(sampler)),
        ]);
    }
    if !s.labels.is_empty() {
        let mut labels: Vec<_> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        t.row(["labels".to_string(), labels.join(",")]);
    }
    if let Some(cpu) = &latest.cpu {
        let total = cpu.total.unwrap_or_default();
        t.row([
            "cpu".to_string(),
            format!(
                "{} busy over {} CPUs, load {:.2} {:.2} {:.2}",
                percent(total.busy_ratio),
                cpu.per_cpu.len().max(id.cpu_count as usize),
                cpu.load1,
                cpu.load5,
                cpu.load15
            ),
        ]);
        t.row([
            "cpu time".to_string(),
            format!(
                "user {:.0}s system {:.0}s idle {:.0}s iowait {:.0}s steal {:.0}s",
                total.user_seconds,
                total.system_seconds,
                total.idle_seconds,
                total.iowait_seconds,
                total.steal_seconds
            ),
        ]);
    }
    if let Some(mem) = &latest.memory {
        t.row([
            "memory".to_string(),
            format!(
                "{} used of {} ({}), available {}",
                bytes(mem.used_bytes),
                bytes(mem.total_bytes),
                percent(s.memory_used_ratio),
                bytes(mem.available_bytes)
            ),
        ]);
        t.row([
            "memory detail".to_string(),
            format!(
                "cached {} buffers {} dirty {} swap {} of {}",
                bytes(mem.cached_bytes),
                bytes(mem.buffers_bytes),
                bytes(mem.dirty_bytes),
                bytes(mem.swap_total_bytes.saturating_sub(mem.swap_free_bytes)),
                bytes(mem.swap_total_bytes)
            ),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_shows_the_agent_spool() {
        let summary = pb::HostSummary::default();
        let mut latest = pb::Batch {
            agent: Some(pb::AgentStats {
                spool_bytes: 1_258_291,
                spool_batches: 340,
                dropped_batches: 0,
            }),
            ..Default::default()
        };
        let text = render_host(&summary, &latest);
        assert!(text.contains("spool"), "{text}");
        assert!(text.contains("1.2 MiB, 340 batches, 0 dropped"), "{text}");
        let doc = spool_json(latest.agent.as_ref());
        assert_eq!(doc["batches"], 340);
        assert_eq!(doc["dropped_batches"], 0);
        latest.agent = None;
        assert!(render_host(&summary, &latest).contains("unknown"));
        assert!(spool_json(None).is_null());
    }
}
