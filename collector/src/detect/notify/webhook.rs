//! A JSON POST per transition in the payload shape Alertmanager sends to its
//! webhook receivers (version 4), so receivers written for Alertmanager work:
//! one alert per message, `status` "firing" or "resolved".

use nodewatch_proto::pb;
use serde_json::json;

use super::{annotations, labels, rfc3339};
use crate::detect::lifecycle::Change;

/// The JSON body for one transition.
pub fn payload(c: &Change) -> Vec<u8> {
    let a = &c.alert;
    let resolved = c.transition.to == pb::AlertState::Resolved as i32;
    let status = if resolved { "resolved" } else { "firing" };
    let l = labels(a);
    let ann = annotations(a);
    let starts = if a.fired_at_unix_nano > 0 {
        a.fired_at_unix_nano
    } else {
        a.pending_since_unix_nano
    };
    let ends = if resolved {
        rfc3339(a.resolved_at_unix_nano)
    } else {
        "0001-01-01T00:00:00Z".to_string()
    };
    let body = json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{}\"}}", a.rule),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "nodewatch",
        "groupLabels": { "alertname": a.rule },
        "commonLabels": l,
        "commonAnnotations": ann,
        "externalURL": "",
        "alerts": [{
            "status": status,
            "labels": l,
            "annotations": ann,
            "startsAt": rfc3339(starts),
            "endsAt": ends,
            "generatorURL": "",
            "fingerprint": a.id,
        }],
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alertmanager_webhook_shape() {
        let c = Change {
            alert: pb::Alert {
                id: "00ff".into(),
                rule: "disk_full".into(),
                severity: pb::AlertSeverity::Critical as i32,
                state: pb::AlertState::Resolved as i32,
                resolved_at_unix_nano: 1_000_000_000,
                ..Default::default()
            },
            transition: pb::AlertTransition {
                to: pb::AlertState::Resolved as i32,
                ..Default::default()
            },
        };
        let v: serde_json::Value = serde_json::from_slice(&payload(&c)).unwrap();
        assert_eq!(v["version"], "4");
        assert_eq!(v["status"], "resolved");
        assert_eq!(v["alerts"][0]["labels"]["alertname"], "disk_full");
        assert_eq!(v["alerts"][0]["labels"]["severity"], "critical");
        assert_eq!(v["alerts"][0]["fingerprint"], "00ff");
        assert_eq!(v["alerts"][0]["endsAt"], "1970-01-01T00:00:01.000Z");
    }
}
