//! Checks on what agents send, before anything is stored.

use std::time::{Duration, SystemTime};

use nodewatch_proto::pb;

use nodewatch_proto::time::unix_nanos;

/// Why a Hello or a Batch was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ValidationError {
    /// Hello without a host identity.
    #[error("missing host identity")]
    MissingHost,
    /// The host id is empty, too long or not printable ASCII.
    #[error("host_id must be 1..=64 characters of [0-9A-Za-z._-], got {0:?}")]
    BadHostId(String),
    /// A string field is longer than allowed.
    #[error("{field} longer than {max} bytes")]
    TooLong {
        /// Field name.
        field: &'static str,
        /// Limit in bytes.
        max: usize,
    },
    /// Too many labels.
    #[error("{0} labels, at most {MAX_LABELS} allowed")]
    TooManyLabels(usize),
    /// Too many sampler statuses.
    #[error("{0} sampler statuses, at most {MAX_FEATURES} allowed")]
    TooManyFeatures(usize),
    /// Batch sequence number 0.
    #[error("seq must start at 1")]
    ZeroSeq,
    /// The batch time is outside the accepted window.
    #[error("timestamp {0} ns is {1} the accepted window (now -{2:?} .. now +{3:?})")]
    BadTime(i64, &'static str, Duration, Duration),
    /// A value is NaN or infinite.
    #[error("{0} is not a finite number")]
    NotFinite(&'static str),
}

use nodewatch_proto::hello_limits::{
    MAX_FEATURES, MAX_LABELS, MAX_REASON_BYTES, MAX_STRING_BYTES as MAX_STRING, valid_host_id,
};

/// How far batch times may stray from the collector's clock.
#[derive(Debug, Clone)]
pub struct ValidationLimits {
    /// Oldest accepted batch (agents replay spooled batches after an outage).
    pub max_age: Duration,
    /// Furthest in the future a batch may be (clock skew).
    pub max_future: Duration,
}

impl Default for ValidationLimits {
    fn default() -> Self {
        Self {
            max_age: crate::config::DEFAULT_MAX_BATCH_AGE,
            max_future: crate::config::DEFAULT_MAX_CLOCK_SKEW,
        }
    }
}

/// Checks an agent's Hello.
pub fn hello(hello: &pb::Hello) -> Result<(), ValidationError> {
    let host = hello.host.as_ref().ok_or(ValidationError::MissingHost)?;
    let id = &host.host_id;
    if !valid_host_id(id) {
        return Err(ValidationError::BadHostId(id.chars().take(80).collect()));
    }
    for (field, value) in [
        ("hostname", &host.hostname),
        ("boot_id", &host.boot_id),
        ("kernel", &host.kernel),
        ("arch", &host.arch),
        ("os", &host.os),
        ("agent_version", &hello.agent_version),
    ] {
        if value.len() > MAX_STRING {
            return Err(ValidationError::TooLong {
                field,
                max: MAX_STRING,
            });
        }
    }
    if hello.labels.len() > MAX_LABELS {
        return Err(ValidationError::TooManyLabels(hello.labels.len()));
    }
    if hello
        .labels
        .iter()
        .any(|(k, v)| k.len() > MAX_STRING || v.len() > MAX_STRING)
    {
        return Err(ValidationError::TooLong {
            field: "label",
            max: MAX_STRING,
        });
    }
    if let Some(caps) = &hello.capabilities {
        if caps.samplers.len() > MAX_FEATURES {
            return Err(ValidationError::TooManyFeatures(caps.samplers.len()));
        }
        for f in caps.ebpf.iter().chain(&caps.samplers) {
            if f.name.len() > MAX_STRING {
                return Err(ValidationError::TooLong {
                    field: "capability name",
                    max: MAX_STRING,
                });
            }
            if f.reason.len() > MAX_REASON_BYTES {
                return Err(ValidationError::TooLong {
                    field: "capability reason",
                    max: MAX_REASON_BYTES,
                });
            }
        }
    }
    Ok(())
}

/// Checks a batch: seq, time window, finite numbers.
pub fn batch(
    batch: &pb::Batch,
    limits: &ValidationLimits,
    now: SystemTime,
) -> Result<(), ValidationError> {
    if batch.seq == 0 {
        return Err(ValidationError::ZeroSeq);
    }
    let now_ns = unix_nanos(now);
    let t = batch.time_unix_nano;
    let age = i64::try_from(limits.max_age.as_nanos()).unwrap_or(i64::MAX);
    let future = i64::try_from(limits.max_future.as_nanos()).unwrap_or(i64::MAX);
    if t < now_ns.saturating_sub(age) {
        return Err(ValidationError::BadTime(
            t,
            "before",
            limits.max_age,
            limits.max_future,
        ));
    }
    if t > now_ns.saturating_add(future) {
        return Err(ValidationError::BadTime(
            t,
            "after",
            limits.max_age,
            limits.max_future,
        ));
    }
    match crate::metrics::first_non_finite(batch) {
        Some(name) => Err(ValidationError::NotFinite(name)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good_batch(now: SystemTime) -> pb::Batch {
        pb::Batch {
            seq: 1,
            time_unix_nano: unix_nanos(now),
            cpu: Some(pb::CpuStats {
                load1: 0.5,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn accepts_a_sane_batch() {
        let now = SystemTime::now();
        assert_eq!(
            batch(&good_batch(now), &ValidationLimits::default(), now),
            Ok(())
        );
    }

    #[test]
    fn rejects_nan_zero_seq_and_bad_times() {
        let now = SystemTime::now();
        let limits = ValidationLimits::default();
        let mut b = good_batch(now);
        b.cpu.as_mut().unwrap().load1 = f64::NAN;
        assert_eq!(
            batch(&b, &limits, now),
            Err(ValidationError::NotFinite("cpu.load1"))
        );
        let mut b = good_batch(now);
        b.seq = 0;
        assert_eq!(batch(&b, &limits, now), Err(ValidationError::ZeroSeq));
        let mut b = good_batch(now);
        b.time_unix_nano += 3600 * 1_000_000_000;
        assert!(matches!(
            batch(&b, &limits, now),
            Err(ValidationError::BadTime(_, "after", _, _))
        ));
        let mut b = good_batch(now);
        b.time_unix_nano = 1;
        assert!(matches!(
            batch(&b, &limits, now),
            Err(ValidationError::BadTime(_, "before", _, _))
        ));
    }

    #[test]
    fn hello_needs_a_clean_host_id() {
        let mut h = pb::Hello::default();
        assert_eq!(hello(&h), Err(ValidationError::MissingHost));
        h.host = Some(pb::HostIdentity {
            host_id: "ab/../cd".into(),
            ..Default::default()
        });
        assert!(matches!(hello(&h), Err(ValidationError::BadHostId(_))));
        h.host.as_mut().unwrap().host_id = "0123abcd".into();
        assert_eq!(hello(&h), Ok(()));
        for i in 0..=MAX_LABELS {
            h.labels.insert(format!("k{i}"), "v".into());
        }
        assert_eq!(
            hello(&h),
            Err(ValidationError::TooManyLabels(MAX_LABELS + 1))
        );
    }

    #[test]
    fn hello_fields_are_bounded() {
        let ok = || pb::Hello {
            host: Some(pb::HostIdentity {
                host_id: "0123abcd".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut h = ok();
        h.host.as_mut().unwrap().boot_id = "b".repeat(MAX_STRING + 1);
        assert!(matches!(
            hello(&h),
            Err(ValidationError::TooLong {
                field: "boot_id",
                ..
            })
        ));
        let mut h = ok();
        let feature = pb::FeatureStatus {
            name: "cpu".into(),
            ..Default::default()
        };
        h.capabilities = Some(pb::Capabilities {
            samplers: vec![feature; MAX_FEATURES + 1],
            ..Default::default()
        });
        assert_eq!(
            hello(&h),
            Err(ValidationError::TooManyFeatures(MAX_FEATURES + 1))
        );
        let mut h = ok();
        h.capabilities = Some(pb::Capabilities {
            ebpf: Some(pb::FeatureStatus {
                name: "ebpf".into(),
                reason: "x".repeat(MAX_REASON_BYTES + 1),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(matches!(
            hello(&h),
            Err(ValidationError::TooLong {
                field: "capability reason",
                ..
            })
        ));
    }
}
