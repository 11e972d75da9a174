//! `nodewatch alerts [--all] [--watch] [--severity S] [--host H] [--rule R]`
//! and `nodewatch alerts show <ID>`: the timeline, the evidence and a chart
//! of the evidence series (the post-incident review view).

use nodewatch_proto::pb;
use serde_json::{Map, Value, json};
use tonic::transport::Channel;

use crate::client::{CliError, query_client};
use crate::render::chart::chart;
use crate::render::units::{ago, utc_text};
use crate::render::{OutputFormat, Table, print_json};

/// Severity filter of `nodewatch alerts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SeverityArg {
    /// Service down, data-loss risk.
    Critical,
    /// Degradation, capacity warnings.
    High,
    /// Trends, capacity advisories.
    Medium,
    /// Optimisation hints.
    Low,
}

impl From<SeverityArg> for pb::AlertSeverity {
    fn from(s: SeverityArg) -> Self {
        match s {
            SeverityArg::Critical => Self::Critical,
            SeverityArg::High => Self::High,
            SeverityArg::Medium => Self::Medium,
            SeverityArg::Low => Self::Low,
        }
    }
}

/// Arguments of `nodewatch alerts`.
#[derive(Debug, Clone, clap::Args)]
pub struct AlertsArgs {
    /// `show <ID>`: one alert's timeline and evidence.
    #[command(subcommand)]
    pub command: Option<AlertsCommand>,
    /// Also resolved alerts (default: pending and firing).
    #[arg(long)]
    pub all: bool,
    /// Keep watching: print every transition as it happens (JSON: one object per line).
    #[arg(long, short = 'w')]
    pub watch: bool,
    /// Only these severities (repeatable).
    #[arg(long, value_enum)]
    pub severity: Vec<SeverityArg>,
    /// Only this host (id, hostname or a unique prefix).
    #[arg(long)]
    pub host: Option<String>,
    /// Only this rule, e.g. memory_leak.
    #[arg(long)]
    pub rule: Option<String>,
}

/// Subcommands of `nodewatch alerts`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AlertsCommand {
    /// One alert: its timeline (pending, firing, resolved), evidence and a chart.
    Show {
        /// Alert id, or a unique prefix of it.
        id: String,
    },
}

fn severity_name(s: i32) -> &'static str {
    match pb::AlertSeverity::try_from(s).unwrap_or_default() {
        pb::AlertSeverity::Critical => "critical",
        pb::AlertSeverity::High => "high",
        pb::AlertSeverity::Medium => "medium",
        pb::AlertSeverity::Low => "low",
        pb::AlertSeverity::Unspecified => "",
    }
}

fn state_name(s: i32) -> &'static str {
    match pb::AlertState::try_from(s).unwrap_or_default() {
        pb::AlertState::Pending => "pending",
        pb::AlertState::Firing => "firing",
        pb::AlertState::Resolved => "resolved",
        pb::AlertState::Inactive => "inactive",
        pb::AlertState::Unspecified => "new",
    }
}

/// The subject's fields that apply, as a JSON object.
fn subject_json(s: &pb::AlertSubject) -> Value {
    let mut m = Map::new();
    if s.pid > 0 {
        m.insert("pid".into(), json!(s.pid));
        m.insert("start_time_ticks".into(), json!(s.start_time_ticks));
    }
    for (k, v) in [
        ("process", &s.process),
        ("cgroup", &s.cgroup),
        ("mount", &s.mount),
        ("device", &s.device),
        ("address", &s.address),
        ("destination", &s.destination),
        ("resource", &s.resource),
    ] {
        if !v.is_empty() {
            m.insert(k.into(), json!(v));
        }
    }
    if s.port > 0 {
        m.insert("port".into(), json!(s.port));
    }
    Value::Object(m)
}

/// JSON view of one alert (stable field names for scripts).
pub fn alert_json(a: &pb::Alert) -> Value {
    let e = a.evidence.clone().unwrap_or_default();
    let values: Map<String, Value> = e
        .values
        .iter()
        .map(|v| (v.name.clone(), json!({ "value": v.value, "unit": v.unit })))
        .collect();
    json!({
        "id": a.id,
        "rule": a.rule,
        "severity": severity_name(a.severity),
        "state": state_name(a.state),
        "host_id": a.host_id,
        "hostname": a.hostname,
        "subject": subject_json(&a.subject.clone().unwrap_or_default()),
        "summary": a.summary,
        "evidence": {
            "value": e.value,
            "threshold": e.threshold,
            "window_seconds": e.window_seconds,
            "values": values,
            "series_name": e.series_name,
            "series": e.series.iter().map(|p| json!([p.time_unix_nano, p.value])).collect::<Vec<_>>(),
            "time_to_impact_low_seconds": e.time_to_impact_low_seconds,
            "time_to_impact_high_seconds": e.time_to_impact_high_seconds,
        },
        "time_to_impact_seconds": a.time_to_impact_seconds,
        "pending_since_unix_nano": a.pending_since_unix_nano,
        "fired_at_unix_nano": a.fired_at_unix_nano,
        "resolved_at_unix_nano": a.resolved_at_unix_nano,
        "last_active_unix_nano": a.last_active_unix_nano,
    })
}

fn request(args: &AlertsArgs) -> pb::ListAlertsRequest {
    pb::ListAlertsRequest {
        states: Vec::new(),
        severities: args
            .severity
            .iter()
            .map(|&s| pb::AlertSeverity::from(s) as i32)
            .collect(),
        rule: args.rule.clone().unwrap_or_default(),
        host: args.host.clone().unwrap_or_default(),
        all: args.all,
    }
}

fn since(a: &pb::Alert) -> i64 {
    [
        a.resolved_at_unix_nano,
        a.fired_at_unix_nano,
        a.pending_since_unix_nano,
    ]
    .into_iter()
    .find(|&t| t > 0)
    .unwrap_or(0)
}

/// Runs `nodewatch alerts`.
pub async fn run(
    channel: Channel,
    args: &AlertsArgs,
    output: OutputFormat,
) -> Result<(), CliError> {
    if let Some(AlertsCommand::Show { id }) = &args.command {
        return show(channel, id, output).await;
    }
    if args.watch {
        return watch(channel, args, output).await;
    }
    let alerts = query_client(channel)
        .list_alerts(request(args))
        .await?
        .into_inner()
        .alerts;
    if output == OutputFormat::Json {
        return print_json(&Value::Array(alerts.iter().map(alert_json).collect()));
    }
    if alerts.is_empty() {
        eprintln!(
            "no alerts{}",
            if args.all {
                ""
            } else {
                " (pending or firing; --all adds resolved)"
            }
        );
        return Ok(());
    }
    let mut t = Table::new([
        "ID", "STATE", "SEVERITY", "RULE", "HOST", "SINCE", "SUMMARY",
    ]);
    for a in &alerts {
        t.row([
            a.id.clone(),
            state_name(a.state).to_string(),
            severity_name(a.severity).to_string(),
            a.rule.clone(),
            a.hostname.clone(),
            ago(since(a)),
            a.summary.clone(),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

async fn watch(channel: Channel, args: &AlertsArgs, output: OutputFormat) -> Result<(), CliError> {
    let mut stream = query_client(channel)
        .watch_alerts(pb::WatchAlertsRequest {
            filter: Some(request(args)),
        })
        .await?
        .into_inner();
    while let Some(msg) = stream.message().await? {
        let a = msg.alert.unwrap_or_default();
        if output == OutputFormat::Json {
            let mut v = alert_json(&a);
            v["initial"] = json!(msg.initial);
            if let Some(t) = &msg.transition {
                v["transition"] = json!({
                    "time_unix_nano": t.time_unix_nano,
                    "from": state_name(t.from),
                    "to": state_name(t.to),
                    "severity": severity_name(t.severity),
                });
            }
            println!(
                "{}",
                serde_json::to_string(&v).map_err(|e| CliError::Output(e.to_string()))?
            );
        } else {
            let (time, what) = match &msg.transition {
                Some(t) => (
                    t.time_unix_nano,
                    format!("{} -> {}", state_name(t.from), state_name(t.to)),
                ),
                None => (since(&a), state_name(a.state).to_string()),
            };
            println!(
                "{}  {:<20} {:<8} {:<16} {:<12} {}  {}",
                utc_text(time),
                what,
                severity_name(a.severity),
                a.rule,
                a.hostname,
                a.id,
                a.summary
            );
        }
    }
    Ok(())
}

async fn show(channel: Channel, id: &str, output: OutputFormat) -> Result<(), CliError> {
    let r = query_client(channel)
        .get_alert(pb::GetAlertRequest { id: id.to_string() })
        .await?
        .into_inner();
    let a = r.alert.unwrap_or_default();
    if output == OutputFormat::Json {
        let mut v = alert_json(&a);
        v["timeline"] = Value::Array(
            r.timeline
                .iter()
                .map(|t| {
                    json!({
                        "time_unix_nano": t.time_unix_nano,
                        "from": state_name(t.from),
                        "to": state_name(t.to),
                        "severity": severity_name(t.severity),
                        "summary": t.summary,
                        "value": t.value,
                    })
                })
                .collect(),
        );
        return print_json(&v);
    }
    println!(
        "{} {} [{}] {}",
        a.id,
        a.rule,
        severity_name(a.severity),
        state_name(a.state)
    );
    println!("host:     {} ({})", a.hostname, a.host_id);
    if let Some(s) = &a.subject {
        let sj = subject_json(s);
        if let Some(m) = sj.as_object().filter(|m| !m.is_empty()) {
            let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("subject:  {}", parts.join(" "));
        }
    }
    println!("summary:  {}", a.summary);
    if let Some(t) = a.time_to_impact_seconds {
        println!("impact:   in ~{}", human_secs(t));
    }
    println!("\ntimeline:");
    let mut t = Table::new(["TIME (UTC)", "TRANSITION", "SEVERITY", "VALUE", "SUMMARY"]);
    for tr in &r.timeline {
        t.row([
            utc_text(tr.time_unix_nano),
            format!("{} -> {}", state_name(tr.from), state_name(tr.to)),
            severity_name(tr.severity).to_string(),
            format!("{:.4}", tr.value),
            tr.summary.clone(),
        ]);
    }
    print!("{}", t.render());
    if let Some(e) = &a.evidence {
        println!(
            "\nevidence: value {:.4}, threshold {:.4}",
            e.value, e.threshold
        );
        if e.window_seconds > 0.0 {
            println!("  window: {}", human_secs(e.window_seconds));
        }
        for v in &e.values {
            println!("  {}: {} {}", v.name, v.value, v.unit);
        }
        if e.time_to_impact_low_seconds > 0.0 {
            let hi = if e.time_to_impact_high_seconds > 0.0 {
                human_secs(e.time_to_impact_high_seconds)
            } else {
                "never".to_string()
            };
            println!(
                "  time to impact (95 %): {} .. {}",
                human_secs(e.time_to_impact_low_seconds),
                hi
            );
        }
        if e.series.len() >= 2 {
            let values: Vec<f64> = e.series.iter().map(|p| p.value).collect();
            let first = e.series[0].time_unix_nano;
            let last = e.series[e.series.len() - 1].time_unix_nano;
            println!(
                "\n{} from {} to {} UTC:",
                e.series_name,
                utc_text(first),
                utc_text(last)
            );
            print!("{}", chart(&values, 72, 8, |v| format!("{v:.0}")));
        }
    }
    Ok(())
}

fn human_secs(s: f64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(s.max(0.0).round() as u64))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_the_fields_that_apply() {
        let a = pb::Alert {
            id: "ab".into(),
            rule: "memory_leak".into(),
            severity: pb::AlertSeverity::High as i32,
            state: pb::AlertState::Firing as i32,
            subject: Some(pb::AlertSubject {
                pid: 42,
                process: "api".into(),
                ..Default::default()
            }),
            time_to_impact_seconds: Some(60.0),
            ..Default::default()
        };
        let v = alert_json(&a);
        assert_eq!(v["severity"], "high");
        assert_eq!(v["state"], "firing");
        assert_eq!(v["subject"]["pid"], 42);
        assert!(v["subject"].get("mount").is_none());
        assert_eq!(v["time_to_impact_seconds"], 60.0);
    }
}
