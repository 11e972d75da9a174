//! Alerts as readers ask for them: `ListAlerts` (filters and order),
//! `GetAlert` (by id or unique prefix) and the filter a `WatchAlerts` stream
//! applies to every transition. Plain data in, plain data out: the alerts come
//! from the detectors, the host names resolve through the registry.

use std::collections::HashMap;

use nodewatch_proto::pb;

use super::QueryError;
use crate::hosts::HostRegistry;

/// A request's filter with its host resolved.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    states: Vec<i32>,
    severities: Vec<i32>,
    rule: String,
    host_id: Option<String>,
}

impl AlertFilter {
    /// The filter of `req`; the host resolves through `registry`.
    pub fn new(registry: &HostRegistry, req: &pb::ListAlertsRequest) -> Result<Self, QueryError> {
        let states = if req.all {
            Vec::new()
        } else if req.states.is_empty() {
            vec![
                pb::AlertState::Pending as i32,
                pb::AlertState::Firing as i32,
            ]
        } else {
            req.states.clone()
        };
        let host_id = if req.host.is_empty() {
            None
        } else {
            Some(registry.resolve(&req.host)?)
        };
        Ok(Self {
            states,
            severities: req
                .severities
                .iter()
                .copied()
                .filter(|&s| s != pb::AlertSeverity::Unspecified as i32)
                .collect(),
            rule: req.rule.clone(),
            host_id,
        })
    }

    /// Lets every state pass (watchers of firing alerts see them resolve).
    pub fn any_state(&mut self) {
        self.states.clear();
    }

    /// True when `a` passes every filter.
    pub fn matches(&self, a: &pb::Alert) -> bool {
        (self.states.is_empty() || self.states.contains(&a.state))
            && (self.severities.is_empty() || self.severities.contains(&a.severity))
            && (self.rule.is_empty() || self.rule == a.rule)
            && self.host_id.as_ref().is_none_or(|h| *h == a.host_id)
    }
}

fn state_rank(state: i32) -> u8 {
    match pb::AlertState::try_from(state).unwrap_or_default() {
        pb::AlertState::Firing => 0,
        pb::AlertState::Pending => 1,
        pb::AlertState::Resolved => 2,
        _ => 3,
    }
}

/// The alerts passing `filter`: firing, pending, resolved; most severe first; newest first.
pub fn list(alerts: Vec<pb::Alert>, filter: &AlertFilter) -> pb::ListAlertsResponse {
    let mut alerts: Vec<pb::Alert> = alerts.into_iter().filter(|a| filter.matches(a)).collect();
    alerts.sort_by(|a, b| {
        state_rank(a.state)
            .cmp(&state_rank(b.state))
            .then(b.severity.cmp(&a.severity))
            .then(b.pending_since_unix_nano.cmp(&a.pending_since_unix_nano))
            .then(a.id.cmp(&b.id))
    });
    pb::ListAlertsResponse { alerts }
}

/// Why an alert lookup found nothing to return.
#[derive(Debug, thiserror::Error)]
pub enum AlertLookupError {
    /// No alert has this id or prefix.
    #[error("no alert {0:?} (nodewatch alerts --all lists them)")]
    NotFound(String),
    /// The id is empty or a prefix of several alerts.
    #[error(transparent)]
    Invalid(#[from] QueryError),
}

/// One alert by id or unique prefix.
pub fn get(
    mut alerts: HashMap<String, pb::GetAlertResponse>,
    id: &str,
) -> Result<pb::GetAlertResponse, AlertLookupError> {
    if id.is_empty() {
        return Err(QueryError::invalid("alert id must not be empty").into());
    }
    if let Some(a) = alerts.remove(id) {
        return Ok(a);
    }
    let matching: Vec<String> = alerts
        .keys()
        .filter(|k| k.starts_with(id))
        .cloned()
        .collect();
    match matching.as_slice() {
        [one] => Ok(alerts.remove(one).unwrap_or_default()),
        [] => Err(AlertLookupError::NotFound(id.to_string())),
        many => Err(QueryError::invalid(format!(
            "alert id prefix {id:?} matches {} alerts",
            many.len()
        ))
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(id: &str, state: pb::AlertState, sev: pb::AlertSeverity, rule: &str) -> pb::Alert {
        pb::Alert {
            id: id.into(),
            state: state as i32,
            severity: sev as i32,
            rule: rule.into(),
            host_id: "h1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn default_is_pending_and_firing_most_severe_first() {
        let reg = HostRegistry::default();
        let all = vec![
            alert(
                "a",
                pb::AlertState::Pending,
                pb::AlertSeverity::Critical,
                "x",
            ),
            alert("b", pb::AlertState::Firing, pb::AlertSeverity::High, "x"),
            alert(
                "c",
                pb::AlertState::Resolved,
                pb::AlertSeverity::Critical,
                "y",
            ),
            alert(
                "d",
                pb::AlertState::Firing,
                pb::AlertSeverity::Critical,
                "y",
            ),
        ];
        let f = AlertFilter::new(&reg, &pb::ListAlertsRequest::default()).unwrap();
        let ids: Vec<String> = list(all.clone(), &f)
            .alerts
            .into_iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(ids, ["d", "b", "a"]);
        let f = AlertFilter::new(
            &reg,
            &pb::ListAlertsRequest {
                all: true,
                rule: "y".into(),
                ..Default::default()
            },
        )
        .unwrap();
        let ids: Vec<String> = list(all, &f).alerts.into_iter().map(|a| a.id).collect();
        assert_eq!(ids, ["d", "c"]);
    }

    #[test]
    fn get_by_prefix() {
        let mut m = HashMap::new();
        for id in ["00ab", "00ac"] {
            m.insert(
                id.to_string(),
                pb::GetAlertResponse {
                    alert: Some(alert(
                        id,
                        pb::AlertState::Firing,
                        pb::AlertSeverity::High,
                        "x",
                    )),
                    timeline: vec![],
                },
            );
        }
        assert!(get(m.clone(), "00ab").is_ok());
        assert!(get(m.clone(), "00a").is_err());
        assert_eq!(get(m.clone(), "00ac").unwrap().alert.unwrap().id, "00ac");
        assert!(matches!(get(m, "ff"), Err(AlertLookupError::NotFound(_))));
    }
}
