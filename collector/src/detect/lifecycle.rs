//! The life of an alert, one per (rule, host, subject): inactive -> pending
//! -> firing once the condition has held for `for` -> resolved once it has
//! not held for `keep_firing_for` (after Prometheus' `rules/alerting.go`).
//! Hysteresis comes from the rules' `hold` severities: an active alert keeps
//! the severity its relaxed thresholds still support, so a value hovering at a
//! threshold neither flaps nor re-notifies.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use nodewatch_proto::pb;
use nodewatch_proto::time::duration_nanos;

use super::rule::{Evaluation, Observation, Severity};
use crate::config::RuleCommon;

/// Transitions kept per alert (the oldest are dropped first).
pub const MAX_TIMELINE: usize = 64;

/// One alert with its timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackedAlert {
    /// The alert as of its latest evaluation.
    pub alert: pb::Alert,
    /// Its transitions, oldest first.
    pub timeline: Vec<pb::AlertTransition>,
}

impl TrackedAlert {
    /// True while pending or firing.
    pub fn active(&self) -> bool {
        matches!(
            state(&self.alert),
            pb::AlertState::Pending | pb::AlertState::Firing
        )
    }
}

/// One transition and the alert after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The alert after the transition.
    pub alert: pb::Alert,
    /// The transition.
    pub transition: pb::AlertTransition,
}

fn state(a: &pb::Alert) -> pb::AlertState {
    pb::AlertState::try_from(a.state).unwrap_or_default()
}

fn severity(a: &pb::Alert) -> Option<Severity> {
    Severity::from_pb(pb::AlertSeverity::try_from(a.severity).unwrap_or_default())
}

/// The stable id of (rule, host, subject): FNV-1a over their fields, 16 hex digits.
pub fn alert_id(rule: &str, host_id: &str, s: &pb::AlertSubject) -> String {
    let key = format!(
        "{rule}\0{host_id}\0{}\0{}\0{}\0{}\0{}\0{}\0{}\0{}\0{}\0{}",
        s.pid,
        s.start_time_ticks,
        s.process,
        s.cgroup,
        s.mount,
        s.device,
        s.address,
        s.port,
        s.destination,
        s.resource
    );
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Every alert the collector knows, active and recently resolved.
#[derive(Debug, Default)]
pub struct AlertBook {
    alerts: HashMap<String, TrackedAlert>,
}

/// The host an evaluation was about.
#[derive(Debug, Clone, Copy)]
pub struct HostRef<'a> {
    /// Host id.
    pub id: &'a str,
    /// Host name.
    pub name: &'a str,
}

impl AlertBook {
    /// A book holding `alerts` (restored from the store).
    pub fn restore(alerts: Vec<TrackedAlert>) -> Self {
        Self {
            alerts: alerts
                .into_iter()
                .map(|a| (a.alert.id.clone(), a))
                .collect(),
        }
    }

    /// Every alert.
    pub fn iter(&self) -> impl Iterator<Item = &TrackedAlert> {
        self.alerts.values()
    }

    /// One alert by id.
    pub fn get(&self, id: &str) -> Option<&TrackedAlert> {
        self.alerts.get(id)
    }

    /// Applies one rule's evaluation of one host at `now` (Unix ns): returns
    /// the transitions and the ids of the alerts that changed in any way
    /// (`touched`, to persist) or disappeared (`removed`).
    pub fn apply(
        &mut self,
        rule: &str,
        common: &RuleCommon,
        host: HostRef<'_>,
        eval: Evaluation,
        now: i64,
        out: &mut Outcome,
    ) {
        let mut seen = HashSet::new();
        for obs in eval.observations {
            let id = alert_id(rule, host.id, &obs.subject);
            seen.insert(id.clone());
            if obs.unknown {
                continue;
            }
            self.step(rule, common, host, id, Some(obs), now, out);
        }
        if eval.complete {
            let gone: Vec<String> = self
                .alerts
                .values()
                .filter(|a| {
                    a.active()
                        && a.alert.rule == rule
                        && a.alert.host_id == host.id
                        && !seen.contains(&a.alert.id)
                })
                .map(|a| a.alert.id.clone())
                .collect();
            for id in gone {
                self.step(rule, common, host, id, None, now, out);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        rule: &str,
        common: &RuleCommon,
        host: HostRef<'_>,
        id: String,
        obs: Option<Observation>,
        now: i64,
        out: &mut Outcome,
    ) {
        let current = self.alerts.get(&id);
        let cur_state = current.map_or(pb::AlertState::Unspecified, |a| state(&a.alert));
        let active = matches!(cur_state, pb::AlertState::Pending | pb::AlertState::Firing);
        let cur_sev = current.filter(|_| active).and_then(|a| severity(&a.alert));
        let new_sev = obs.as_ref().and_then(|o| o.level.max(cur_sev.min(o.hold)));
        let for_ns = duration_nanos(common.for_);
        match (active, new_sev) {
            (false, None) => {}
            (false, Some(sev)) => {
                let Some(o) = obs else { return };
                let alert = pb::Alert {
                    id: id.clone(),
                    rule: rule.to_string(),
                    host_id: host.id.to_string(),
                    hostname: host.name.to_string(),
                    subject: Some(o.subject.clone()),
                    pending_since_unix_nano: now,
                    ..Default::default()
                };
                let timeline = current.map(|a| a.timeline.clone()).unwrap_or_default();
                let mut t = TrackedAlert { alert, timeline };
                refresh(&mut t.alert, &o, sev, now);
                transition(&mut t, cur_state, pb::AlertState::Pending, now, out);
                if for_ns == 0 {
                    t.alert.fired_at_unix_nano = now;
                    transition(
                        &mut t,
                        pb::AlertState::Pending,
                        pb::AlertState::Firing,
                        now,
                        out,
                    );
                }
                out.touched.insert(id.clone());
                self.alerts.insert(id, t);
            }
            (true, Some(sev)) => {
                let Some(o) = obs else { return };
                let Some(t) = self.alerts.get_mut(&id) else {
                    return;
                };
                let changed = cur_sev != Some(sev);
                refresh(&mut t.alert, &o, sev, now);
                t.alert.hostname = host.name.to_string();
                if cur_state == pb::AlertState::Pending
                    && now - t.alert.pending_since_unix_nano >= for_ns
                {
                    t.alert.fired_at_unix_nano = now;
                    transition(t, pb::AlertState::Pending, pb::AlertState::Firing, now, out);
                } else if changed && cur_state == pb::AlertState::Firing {
                    transition(t, pb::AlertState::Firing, pb::AlertState::Firing, now, out);
                }
                out.touched.insert(id);
            }
            (true, None) => {
                let Some(t) = self.alerts.get_mut(&id) else {
                    return;
                };
                t.alert.evaluated_at_unix_nano = now;
                if cur_state == pb::AlertState::Pending {
                    transition(
                        t,
                        pb::AlertState::Pending,
                        pb::AlertState::Inactive,
                        now,
                        out,
                    );
                    self.alerts.remove(&id);
                    out.removed.insert(id);
                    return;
                }
                if now - t.alert.last_active_unix_nano >= duration_nanos(common.keep_firing_for) {
                    t.alert.resolved_at_unix_nano = now;
                    if let Some(o) = &obs {
                        t.alert.summary = format!("resolved: {}", o.summary);
                        t.alert.evidence = Some(o.evidence.clone());
                    }
                    t.alert.time_to_impact_seconds = None;
                    transition(
                        t,
                        pb::AlertState::Firing,
                        pb::AlertState::Resolved,
                        now,
                        out,
                    );
                }
                out.touched.insert(id);
            }
        }
    }

    /// Forgets resolved alerts older than `keep`; returns their ids.
    pub fn purge(&mut self, keep: Duration, now: i64) -> Vec<String> {
        let cutoff = now.saturating_sub(duration_nanos(keep));
        let old: Vec<String> = self
            .alerts
            .values()
            .filter(|a| {
                state(&a.alert) == pb::AlertState::Resolved
                    && a.alert.resolved_at_unix_nano < cutoff
            })
            .map(|a| a.alert.id.clone())
            .collect();
        for id in &old {
            self.alerts.remove(id);
        }
        old
    }
}

/// What one tick changed.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Transitions, in order.
    pub changes: Vec<Change>,
    /// Alerts updated (to persist).
    pub touched: HashSet<String>,
    /// Alerts forgotten (to delete).
    pub removed: HashSet<String>,
}

fn refresh(a: &mut pb::Alert, o: &Observation, sev: Severity, now: i64) {
    a.severity = sev.to_pb() as i32;
    a.summary.clone_from(&o.summary);
    a.evidence = Some(o.evidence.clone());
    a.time_to_impact_seconds = o.time_to_impact;
    a.last_active_unix_nano = now;
    a.evaluated_at_unix_nano = now;
}

fn transition(
    t: &mut TrackedAlert,
    from: pb::AlertState,
    to: pb::AlertState,
    now: i64,
    out: &mut Outcome,
) {
    t.alert.state = to as i32;
    let tr = pb::AlertTransition {
        time_unix_nano: now,
        from: from as i32,
        to: to as i32,
        severity: t.alert.severity,
        summary: t.alert.summary.clone(),
        value: t.alert.evidence.as_ref().map_or(0.0, |e| e.value),
    };
    t.timeline.push(tr.clone());
    if t.timeline.len() > MAX_TIMELINE {
        t.timeline.remove(0);
    }
    out.changes.push(Change {
        alert: t.alert.clone(),
        transition: tr,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const S: i64 = 1_000_000_000;

    fn common(for_secs: u64, keep_secs: u64) -> RuleCommon {
        RuleCommon {
            enabled: true,
            for_: Duration::from_secs(for_secs),
            keep_firing_for: Duration::from_secs(keep_secs),
            hosts: BTreeMap::new(),
        }
    }

    fn obs(level: Option<Severity>, hold: Option<Severity>) -> Evaluation {
        Evaluation {
            observations: vec![Observation {
                subject: pb::AlertSubject {
                    pid: 7,
                    ..Default::default()
                },
                level,
                hold,
                summary: "s".into(),
                ..Default::default()
            }],
            complete: true,
        }
    }

    const HOST: HostRef<'static> = HostRef {
        id: "h1",
        name: "web-1",
    };

    fn run(book: &mut AlertBook, c: &RuleCommon, e: Evaluation, t: i64) -> Vec<(i32, i32, i32)> {
        let mut out = Outcome::default();
        book.apply("fd_exhaustion", c, HOST, e, t * S, &mut out);
        out.changes
            .iter()
            .map(|c| (c.transition.from, c.transition.to, c.transition.severity))
            .collect()
    }

    const P: i32 = pb::AlertState::Pending as i32;
    const F: i32 = pb::AlertState::Firing as i32;
    const R: i32 = pb::AlertState::Resolved as i32;
    const HI: i32 = pb::AlertSeverity::High as i32;
    const CR: i32 = pb::AlertSeverity::Critical as i32;

    #[test]
    fn pending_then_firing_then_escalated_then_resolved() {
        let c = common(10, 0);
        let mut b = AlertBook::default();
        let h = Some(Severity::High);
        assert_eq!(run(&mut b, &c, obs(h, h), 0), vec![(0, P, HI)]);
        assert!(run(&mut b, &c, obs(h, h), 5).is_empty());
        assert_eq!(run(&mut b, &c, obs(h, h), 10), vec![(P, F, HI)]);
        let cr = Some(Severity::Critical);
        assert_eq!(run(&mut b, &c, obs(cr, cr), 11), vec![(F, F, CR)]);
        // Hovering just under the critical threshold keeps critical.
        assert!(run(&mut b, &c, obs(h, cr), 12).is_empty());
        assert_eq!(run(&mut b, &c, obs(h, h), 13), vec![(F, F, HI)]);
        // Below the high threshold but within the hysteresis: still firing.
        assert!(run(&mut b, &c, obs(None, h), 14).is_empty());
        assert_eq!(run(&mut b, &c, obs(None, None), 15), vec![(F, R, HI)]);
        let a = b.iter().next().unwrap();
        assert_eq!(a.alert.fired_at_unix_nano, 10 * S);
        assert_eq!(a.alert.resolved_at_unix_nano, 15 * S);
        assert_eq!(a.timeline.len(), 5);
        // Firing again later: same id, a new pending phase.
        assert_eq!(run(&mut b, &c, obs(h, h), 20), vec![(R, P, HI)]);
    }

    #[test]
    fn pending_that_stops_is_forgotten_and_zero_for_fires_at_once() {
        let c = common(10, 0);
        let mut b = AlertBook::default();
        let h = Some(Severity::High);
        run(&mut b, &c, obs(h, h), 0);
        let i = pb::AlertState::Inactive as i32;
        assert_eq!(run(&mut b, &c, obs(None, None), 5), vec![(P, i, HI)]);
        assert_eq!(b.iter().count(), 0);
        let c0 = common(0, 0);
        assert_eq!(run(&mut b, &c0, obs(h, h), 6), vec![(0, P, HI), (P, F, HI)]);
    }

    #[test]
    fn keep_firing_for_and_unknown_and_complete() {
        let c = common(0, 10);
        let mut b = AlertBook::default();
        let h = Some(Severity::High);
        run(&mut b, &c, obs(h, h), 0);
        assert!(run(&mut b, &c, obs(None, None), 5).is_empty());
        // Unknown keeps the state.
        let mut unknown = obs(None, None);
        unknown.observations[0].unknown = true;
        unknown.complete = true;
        assert!(run(&mut b, &c, unknown, 30).is_empty());
        // A subject missing from a complete evaluation clears.
        let gone = Evaluation {
            observations: vec![],
            complete: true,
        };
        assert_eq!(run(&mut b, &c, gone, 31), vec![(F, R, HI)]);
        // An incomplete evaluation never clears.
        run(&mut b, &c, obs(h, h), 40);
        let partial = Evaluation {
            observations: vec![],
            complete: false,
        };
        assert!(run(&mut b, &c, partial, 100).is_empty());
    }

    #[test]
    fn purge_forgets_old_resolved_alerts_and_ids_are_stable() {
        let c = common(0, 0);
        let mut b = AlertBook::default();
        let h = Some(Severity::High);
        run(&mut b, &c, obs(h, h), 0);
        run(&mut b, &c, obs(None, None), 1);
        assert!(b.purge(Duration::from_secs(10), 5 * S).is_empty());
        assert_eq!(b.purge(Duration::from_secs(10), 20 * S).len(), 1);
        let s = pb::AlertSubject {
            pid: 7,
            ..Default::default()
        };
        assert_eq!(alert_id("r", "h", &s), alert_id("r", "h", &s.clone()));
        assert_ne!(alert_id("r", "h", &s), alert_id("r", "h2", &s));
        assert_eq!(alert_id("r", "h", &s).len(), 16);
    }
}
