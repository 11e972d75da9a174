//! Alertmanager's v2 API: `POST /api/v2/alerts` with a JSON array of alerts.
//! Firing alerts carry `endsAt` = now + 4 × `resend_interval` and are re-posted
//! every `resend_interval` (Alertmanager resolves alerts whose `endsAt`
//! passes); resolved ones carry their resolution time as `endsAt`.

use std::time::Duration;

use nodewatch_proto::pb;
use nodewatch_proto::time::duration_nanos;
use serde_json::{Value, json};

use super::{annotations, labels, rfc3339};

/// The JSON body for `alerts`.
pub fn payload(alerts: &[&pb::Alert], resend: Duration, now: i64) -> Vec<u8> {
    let items: Vec<Value> = alerts
        .iter()
        .map(|a| {
            let resolved = a.state == pb::AlertState::Resolved as i32;
            let ends = if resolved {
                a.resolved_at_unix_nano
            } else {
                now + 4 * duration_nanos(resend)
            };
            let starts = if a.fired_at_unix_nano > 0 {
                a.fired_at_unix_nano
            } else {
                a.pending_since_unix_nano
            };
            json!({
                "labels": labels(a),
                "annotations": annotations(a),
                "startsAt": rfc3339(starts),
                "endsAt": rfc3339(ends),
            })
        })
        .collect();
    serde_json::to_vec(&items).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firing_and_resolved_shapes() {
        let mut a = pb::Alert {
            id: "ab".into(),
            rule: "fd_exhaustion".into(),
            severity: pb::AlertSeverity::High as i32,
            state: pb::AlertState::Firing as i32,
            host_id: "h1".into(),
            hostname: "web-1".into(),
            subject: Some(pb::AlertSubject {
                pid: 42,
                process: "api".into(),
                ..Default::default()
            }),
            summary: "api (pid 42) holds ...".into(),
            fired_at_unix_nano: 1_700_000_000_000_000_000,
            ..Default::default()
        };
        let now = 1_700_000_060_000_000_000;
        let v: Value =
            serde_json::from_slice(&payload(&[&a], Duration::from_secs(60), now)).unwrap();
        let x = &v[0];
        assert_eq!(x["labels"]["alertname"], "fd_exhaustion");
        assert_eq!(x["labels"]["severity"], "high");
        assert_eq!(x["labels"]["pid"], "42");
        assert_eq!(x["labels"]["hostname"], "web-1");
        assert!(x["labels"].get("mount").is_none());
        assert_eq!(x["startsAt"], "2023-11-14T22:13:20.000Z");
        assert_eq!(x["endsAt"], "2023-11-14T22:18:20.000Z");
        a.state = pb::AlertState::Resolved as i32;
        a.resolved_at_unix_nano = now;
        let v: Value =
            serde_json::from_slice(&payload(&[&a], Duration::from_secs(60), now)).unwrap();
        assert_eq!(v[0]["endsAt"], "2023-11-14T22:14:20.000Z");
    }
}
