//! `nodewatch series <HOST> [METRIC] [--label k=v] [--since 1h] [--step 1m]`:
//! history of one metric of one host, as a table with a small terminal chart,
//! or JSON. Without METRIC it lists the host's metrics.

use std::time::Duration;

use nodewatch_proto::time::now_nanos;

use nodewatch_proto::pb;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::client::CliError;
use crate::render::chart::{bounds, chart, sparkline};
use crate::render::units::{duration_ns, utc_text, value_text};
use crate::render::{OutputFormat, Table, print_json};

/// Arguments of `nodewatch series`.
#[derive(Debug, Clone, clap::Args)]
pub struct SeriesArgs {
    /// Host id, hostname, or a unique prefix of either.
    pub host: String,
    /// Metric name, e.g. process_rss_bytes; omit it to list the host's metrics.
    pub metric: Option<String>,
    /// Label matcher, repeatable: name=value, name!=value or name^=prefix.
    #[arg(long = "label", short = 'l', value_name = "K=V")]
    pub labels: Vec<String>,
    /// How far back to look, e.g. 15m, 1h, 2days.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub since: Duration,
    /// Step between points, e.g. 10s, 1m [default: about 60 points over --since].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub step: Option<Duration>,
    /// How samples within a step combine [default: rate for counters, avg otherwise].
    #[arg(long, value_enum)]
    pub agg: Option<Agg>,
    /// Most series shown.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
}

/// Aggregation within a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Agg {
    /// Mean.
    Avg,
    /// Smallest.
    Min,
    /// Largest.
    Max,
    /// Newest.
    Last,
    /// Per-second increase (counters).
    Rate,
}

impl Agg {
    fn pb(self) -> pb::Aggregation {
        match self {
            Agg::Avg => pb::Aggregation::Avg,
            Agg::Min => pb::Aggregation::Min,
            Agg::Max => pb::Aggregation::Max,
            Agg::Last => pb::Aggregation::Last,
            Agg::Rate => pb::Aggregation::Rate,
        }
    }
}

/// Parses `name=value`, `name!=value` or `name^=prefix`.
pub fn parse_matcher(s: &str) -> Result<pb::LabelMatcher, CliError> {
    let (name, value, op) = if let Some((n, v)) = s.split_once("!=") {
        (n, v, pb::MatchOp::NotEqual)
    } else if let Some((n, v)) = s.split_once("^=") {
        (n, v, pb::MatchOp::Prefix)
    } else if let Some((n, v)) = s.split_once('=') {
        (n, v, pb::MatchOp::Equal)
    } else {
        return Err(CliError::Output(format!(
            "bad --label {s:?}: use name=value, name!=value or name^=prefix"
        )));
    };
    if name.is_empty() {
        return Err(CliError::Output(format!(
            "bad --label {s:?}: empty label name"
        )));
    }
    Ok(pb::LabelMatcher {
        name: name.to_string(),
        value: value.to_string(),
        op: op as i32,
    })
}

/// Default step: about 60 points over the range, at least 1 s, rounded to a whole unit.
pub fn auto_step(since: Duration) -> Duration {
    let raw = (since.as_secs() / 60).max(1);
    let round = [
        1, 5, 10, 15, 30, 60, 300, 600, 900, 1800, 3600, 7200, 21_600, 86_400,
    ]
    .into_iter()
    .find(|&r| r >= raw)
    .unwrap_or(86_400);
    Duration::from_secs(round)
}

/// `nodewatch series`.
pub async fn run(
    channel: Channel,
    args: &SeriesArgs,
    output: OutputFormat,
) -> Result<(), CliError> {
    let mut client = crate::client::query_client(channel);
    let metrics = client
        .list_metrics(pb::ListMetricsRequest {
            host: args.host.clone(),
        })
        .await?
        .into_inner();
    let Some(metric) = &args.metric else {
        return print_metrics(&metrics, output);
    };
    let Some(info) = metrics.metrics.iter().find(|m| &m.name == metric) else {
        let close: Vec<&str> = metrics
            .metrics
            .iter()
            .map(|m| m.name.as_str())
            .filter(|n| {
                n.contains(metric.as_str()) || metric.contains(n.split('_').next().unwrap_or(""))
            })
            .take(8)
            .collect();
        return Err(CliError::Output(format!(
            "host {} has no metric {metric:?}{}; `nodewatch series {}` lists them",
            metrics.host_id,
            if close.is_empty() {
                String::new()
            } else {
                format!(" (similar: {})", close.join(", "))
            },
            args.host
        )));
    };
    let matchers = args
        .labels
        .iter()
        .map(|l| parse_matcher(l))
        .collect::<Result<Vec<_>, _>>()?;
    let end = now_nanos();
    let step = args.step.unwrap_or_else(|| auto_step(args.since));
    // Steps aligned to whole multiples of the step (stable buckets between runs).
    let step_ns = (step.as_nanos() as i64).max(1);
    let start = (end - args.since.as_nanos() as i64).div_euclid(step_ns) * step_ns;
    if info.histogram {
        let req = pb::QueryHistogramRequest {
            host: args.host.clone(),
            metric: metric.clone(),
            matchers,
            start_unix_nano: start,
            end_unix_nano: end,
            step_nanos: 0,
            percentiles: vec![50.0, 90.0, 99.0],
            include_buckets: false,
            limit: args.limit,
        };
        // Range-wide percentiles from one merge, the chart from per-step merges.
        let whole = client.query_histogram(req.clone()).await?.into_inner();
        let stepped = client
            .query_histogram(pb::QueryHistogramRequest {
                step_nanos: step.as_nanos() as i64,
                ..req
            })
            .await?
            .into_inner();
        return print_histograms(&whole, &stepped, metric, output);
    }
    let r = client
        .query_series(pb::QuerySeriesRequest {
            host: args.host.clone(),
            metric: metric.clone(),
            matchers,
            start_unix_nano: start,
            end_unix_nano: end,
            step_nanos: step.as_nanos() as i64,
            aggregation: args.agg.map_or(pb::Aggregation::Unspecified, Agg::pb) as i32,
            limit: args.limit,
        })
        .await?
        .into_inner();
    print_series(&r, metric, step, output)
}

fn labels_text(labels: &[pb::Label]) -> String {
    if labels.is_empty() {
        return "-".to_string();
    }
    labels
        .iter()
        .map(|l| format!("{}={}", l.name, l.value))
        .collect::<Vec<_>>()
        .join(",")
}

fn labels_json(labels: &[pb::Label]) -> Value {
    Value::Object(
        labels
            .iter()
            .map(|l| (l.name.clone(), Value::String(l.value.clone())))
            .collect(),
    )
}

fn print_metrics(r: &pb::ListMetricsResponse, output: OutputFormat) -> Result<(), CliError> {
    match output {
        OutputFormat::Json => print_json(&json!({
            "host_id": r.host_id,
            "metrics": r.metrics.iter().map(|m| json!({
                "name": m.name,
                "series": m.series,
                "histogram": m.histogram,
                "counter": m.counter,
            })).collect::<Vec<_>>(),
        })),
        OutputFormat::Table => {
            let mut t = Table::new(["METRIC", "KIND", "SERIES"]);
            for m in &r.metrics {
                let kind = if m.histogram {
                    "histogram"
                } else if m.counter {
                    "counter"
                } else {
                    "gauge"
                };
                t.row([m.name.clone(), kind.to_string(), m.series.to_string()]);
            }
            if t.is_empty() {
                eprintln!("no stored metrics for host {} yet", r.host_id);
            } else {
                print!("{}", t.render());
            }
            Ok(())
        }
    }
}

fn print_series(
    r: &pb::QuerySeriesResponse,
    metric: &str,
    step: Duration,
    output: OutputFormat,
) -> Result<(), CliError> {
    let agg = pb::Aggregation::try_from(r.aggregation).unwrap_or_default();
    let rate = agg == pb::Aggregation::Rate;
    let agg_name = agg
        .as_str_name()
        .trim_start_matches("AGGREGATION_")
        .to_lowercase();
    match output {
        OutputFormat::Json => print_json(&json!({
            "host_id": r.host_id,
            "metric": metric,
            "aggregation": agg_name,
            "start_unix_nano": r.start_unix_nano,
            "end_unix_nano": r.end_unix_nano,
            "step_seconds": step.as_secs_f64(),
            "truncated": r.truncated,
            "series": r.series.iter().map(|s| json!({
                "labels": labels_json(&s.labels),
                "points": s.points.iter().map(|p| json!([p.time_unix_nano, p.value])).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })),
        OutputFormat::Table => {
            let fmt = |v: f64| value_text(metric, rate, v);
            println!(
                "{metric} on {} ({agg_name} per {}, {} .. {} UTC)",
                r.host_id,
                humantime::format_duration(step),
                utc_text(r.start_unix_nano),
                utc_text(r.end_unix_nano)
            );
            if r.series.iter().all(|s| s.points.is_empty()) {
                println!("no samples in range");
                return Ok(());
            }
            if let [one] = r.series.as_slice() {
                let values: Vec<f64> = one.points.iter().map(|p| p.value).collect();
                if !one.labels.is_empty() {
                    println!("{}", labels_text(&one.labels));
                }
                print!("{}", chart(&values, 60, 6, fmt));
                let mut t = Table::new(["TIME (UTC)", "VALUE"]);
                for p in &one.points {
                    t.row([utc_text(p.time_unix_nano), fmt(p.value)]);
                }
                print!("{}", t.render());
            } else {
                let mut t = Table::new(["SERIES", "MIN", "AVG", "MAX", "LAST", "CHART"]);
                for s in &r.series {
                    let values: Vec<f64> = s.points.iter().map(|p| p.value).collect();
                    if values.is_empty() {
                        continue;
                    }
                    let (lo, hi) = bounds(&values);
                    let avg = values.iter().sum::<f64>() / values.len() as f64;
                    t.row([
                        labels_text(&s.labels),
                        fmt(lo),
                        fmt(avg),
                        fmt(hi),
                        fmt(values[values.len() - 1]),
                        sparkline(&values, 30),
                    ]);
                }
                print!("{}", t.render());
            }
            if r.truncated {
                eprintln!("more series matched; narrow with --label or raise --limit");
            }
            Ok(())
        }
    }
}

fn print_histograms(
    whole: &pb::QueryHistogramResponse,
    stepped: &pb::QueryHistogramResponse,
    metric: &str,
    output: OutputFormat,
) -> Result<(), CliError> {
    let pct = |p: &pb::MergedHistogramPoint, q: f64| {
        p.percentiles
            .iter()
            .find(|x| x.percentile == q)
            .map_or(0, |x| x.value)
    };
    let points_json = |points: &[pb::MergedHistogramPoint]| {
        points
            .iter()
            .map(|p| {
                json!({
                    "time_unix_nano": p.time_unix_nano,
                    "count": p.count,
                    "percentiles": p.percentiles.iter().map(|x| json!([x.percentile, x.value])).collect::<Vec<_>>(),
                })
            })
            .collect::<Vec<_>>()
    };
    match output {
        OutputFormat::Json => print_json(&json!({
            "host_id": whole.host_id,
            "metric": metric,
            "truncated": whole.truncated,
            "series": whole.series.iter().map(|s| {
                let steps = stepped
                    .series
                    .iter()
                    .find(|x| x.labels == s.labels)
                    .map(|x| points_json(&x.points))
                    .unwrap_or_default();
                json!({
                    "labels": labels_json(&s.labels),
                    "range": points_json(&s.points).into_iter().next(),
                    "steps": steps,
                })
            }).collect::<Vec<_>>(),
        })),
        OutputFormat::Table => {
            println!("{metric} on {} (merged over the range)", whole.host_id);
            let mut t = Table::new(["SERIES", "COUNT", "P50", "P90", "P99", "P99 PER STEP"]);
            for s in &whole.series {
                let Some(p) = s.points.first() else { continue };
                let p99s: Vec<f64> = stepped
                    .series
                    .iter()
                    .find(|x| x.labels == s.labels)
                    .map(|x| x.points.iter().map(|p| pct(p, 99.0) as f64).collect())
                    .unwrap_or_default();
                t.row([
                    labels_text(&s.labels),
                    p.count.to_string(),
                    duration_ns(pct(p, 50.0) as f64),
                    duration_ns(pct(p, 90.0) as f64),
                    duration_ns(pct(p, 99.0) as f64),
                    sparkline(&p99s, 30),
                ]);
            }
            if t.is_empty() {
                println!("no samples in range");
            } else {
                print!("{}", t.render());
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_parse() {
        let m = parse_matcher("pid=42").unwrap();
        assert_eq!(
            (m.name.as_str(), m.value.as_str(), m.op),
            ("pid", "42", pb::MatchOp::Equal as i32)
        );
        let m = parse_matcher("mount!=/").unwrap();
        assert_eq!(m.op, pb::MatchOp::NotEqual as i32);
        assert_eq!(m.value, "/");
        let m = parse_matcher("name^=ngi").unwrap();
        assert_eq!(m.op, pb::MatchOp::Prefix as i32);
        assert!(parse_matcher("nolabel").is_err());
        assert!(parse_matcher("=x").is_err());
    }

    #[test]
    fn steps_give_about_sixty_points() {
        assert_eq!(
            auto_step(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
        assert_eq!(auto_step(Duration::from_secs(60)), Duration::from_secs(1));
    }
}
