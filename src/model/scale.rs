//! The per-function `com.openfaas.scale.*` settings (and, read with them, the async queue's
//! [`QueueSettings`], whose `max-inflight` caps the load a backlog puts on the function): the
//! label names, their defaults and the one parser every reader uses (the API at deploy, both
//! providers, the Nomad renderer, the scaler, the alert handler and the dispatcher).
//!
//! Rules (reference section 5.4): a label wins over an annotation of the same name (faasd
//! users put them in annotations); a value that does not parse or is out of range is an
//! error naming the label ([`ScaleError`]), which a deploy answers with 400. `max` below
//! `min` is raised to `min`. Functions read back from a provider's store were checked when
//! they were deployed; one that was not (a Nomad job written by hand) and holds a bad value
//! gets the defaults ([`ScaleSettings::from_maps`] logs why). Pure.

use std::time::Duration;

use thiserror::Error;

use crate::model::queue::QueueSettings;
use crate::model::types::{FunctionDeployment, StringMap};

/// Label (or annotation) names.
pub mod labels {
    pub(crate) const MIN: &str = "com.openfaas.scale.min";
    pub const MAX: &str = "com.openfaas.scale.max";
    pub const FACTOR: &str = "com.openfaas.scale.factor";
    pub const TARGET: &str = "com.openfaas.scale.target";
    pub const TARGET_PROPORTION: &str = "com.openfaas.scale.target-proportion";
    pub const TYPE: &str = "com.openfaas.scale.type";
    pub const ZERO: &str = "com.openfaas.scale.zero";
    pub const ZERO_DURATION: &str = "com.openfaas.scale.zero-duration";
}

pub(crate) const DEFAULT_MIN: u64 = 1;
pub(crate) const DEFAULT_MAX: u64 = 20;
pub(crate) const DEFAULT_FACTOR: u64 = 20;
pub(crate) const DEFAULT_TARGET: f64 = 50.0;
pub(crate) const DEFAULT_TARGET_PROPORTION: f64 = 0.9;
pub(crate) const DEFAULT_ZERO_DURATION: Duration = Duration::from_secs(15 * 60);

/// What a function's load is measured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScaleKind {
    /// Requests in flight or held (`capacity`, the default): target = in flight per replica.
    #[default]
    Capacity,
    /// Requests per second (`rps`): target = requests per second per replica.
    Rps,
}

/// A function's scaling settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleSettings {
    /// Lower bound (and cold-start target, at least 1). Default 1.
    pub min: u64,
    /// Upper bound, at least `min`. Default 20.
    pub max: u64,
    /// Percent of `max` an alert adds, as written (the alert rule checks 1..=100). Default 20.
    pub factor: u64,
    /// Load per replica the scaler aims at. Default 50.
    pub target: f64,
    /// Fraction of `target` actually planned for, in (0, 1]. Default 0.9.
    pub(crate) target_proportion: f64,
    pub kind: ScaleKind,
    /// Whether an idle function may go to zero replicas. Default false.
    pub zero: bool,
    /// How long without an arrival counts as idle. Default 15m.
    pub(crate) zero_duration: Duration,
    /// The async queue's overrides (`com.openfaas.queue.*`, `com.openfaas.retry.*`).
    pub queue: QueueSettings,
}

// === impl ScaleSettings ===

impl Default for ScaleSettings {
    fn default() -> Self {
        Self {
            min: DEFAULT_MIN,
            max: DEFAULT_MAX,
            factor: DEFAULT_FACTOR,
            target: DEFAULT_TARGET,
            target_proportion: DEFAULT_TARGET_PROPORTION,
            kind: ScaleKind::Capacity,
            zero: false,
            zero_duration: DEFAULT_ZERO_DURATION,
            queue: QueueSettings::default(),
        }
    }
}

/// A `com.openfaas.scale.*` value that the settings cannot take.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("label {label} {value:?} is invalid: expected {expected}")]
pub struct ScaleError {
    /// The label (or annotation) name.
    pub label: &'static str,
    /// The value as written.
    pub value: String,
    /// What the label takes.
    pub expected: &'static str,
}

/// The most replicas a function may have: the bound of `com.openfaas.scale.min`/`max` and of
/// a `/system/scale-function` request. It is Nomad's default server `job_max_count` (50000,
/// the most allocations one job may ask for since Nomad 1.11; a faasgate job has one group),
/// so a count faasgate accepts is one a default Nomad server accepts too.
pub const MAX_REPLICAS: u64 = 50_000;

impl ScaleSettings {
    /// Reads the settings of a deployment (labels first, then annotations).
    pub(crate) fn parse_deployment(d: &FunctionDeployment) -> Result<Self, ScaleError> {
        Self::parse(d.labels.as_ref(), d.annotations.as_ref())
    }

    /// The settings of a function already accepted (see the module doc): the defaults, with
    /// a warning, when a value is bad.
    pub(crate) fn from_deployment(d: &FunctionDeployment) -> Self {
        Self::from_maps(d.labels.as_ref(), d.annotations.as_ref())
    }

    /// [`Self::parse`], or the defaults with a warning when a value is bad.
    pub fn from_maps(labels: Option<&StringMap>, annotations: Option<&StringMap>) -> Self {
        Self::parse(labels, annotations).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "scale settings: using the defaults");
            Self::default()
        })
    }

    /// The one parser of the `com.openfaas.scale.*` labels and annotations.
    pub fn parse(
        labels: Option<&StringMap>,
        annotations: Option<&StringMap>,
    ) -> Result<Self, ScaleError> {
        let get = |name: &'static str| {
            labels
                .and_then(|m| m.get(name))
                .or_else(|| annotations.and_then(|m| m.get(name)))
                .map(|v| (name, v.trim()))
        };
        let bad = |label: &'static str, value: &str, expected: &'static str| ScaleError {
            label,
            value: value.to_string(),
            expected,
        };
        let count = |name: &'static str, default: u64| match get(name) {
            None => Ok(default),
            Some((l, v)) => v
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= MAX_REPLICAS)
                .ok_or_else(|| bad(l, v, "an integer from 0 to 50000")),
        };
        let float =
            |name: &'static str, default: f64, ok: fn(f64) -> bool, expected| match get(name) {
                None => Ok(default),
                Some((l, v)) => v
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite() && ok(*f))
                    .ok_or_else(|| bad(l, v, expected)),
            };
        let d = Self::default();
        let min = count(labels::MIN, d.min)?;
        let max = count(labels::MAX, d.max)?.max(min);
        let factor = match get(labels::FACTOR) {
            None => d.factor,
            Some((l, v)) => v
                .parse::<u64>()
                .ok()
                .filter(|f| *f <= 100)
                .ok_or_else(|| bad(l, v, "an integer percentage from 0 to 100"))?,
        };
        let target = float(labels::TARGET, d.target, |t| t > 0.0, "a number above 0")?;
        let target_proportion = float(
            labels::TARGET_PROPORTION,
            d.target_proportion,
            |p| p > 0.0 && p <= 1.0,
            "a number above 0 and at most 1",
        )?;
        let kind = match get(labels::TYPE) {
            None => d.kind,
            Some((l, v)) => match v.to_ascii_lowercase().as_str() {
                "capacity" => ScaleKind::Capacity,
                "rps" => ScaleKind::Rps,
                _ => return Err(bad(l, v, "capacity or rps")),
            },
        };
        let zero = match get(labels::ZERO) {
            None => d.zero,
            Some((l, v)) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" | "" => false,
                _ => return Err(bad(l, v, "true or false")),
            },
        };
        let zero_duration = match get(labels::ZERO_DURATION) {
            None => d.zero_duration,
            Some((l, v)) => crate::model::duration::parse(v)
                .ok_or_else(|| bad(l, v, "a duration such as 90s, 15m or 1h30m"))?,
        };
        let queue = QueueSettings::parse(get).map_err(|(l, v, e)| bad(l, v, e))?;
        Ok(Self {
            min,
            max,
            factor,
            target,
            target_proportion,
            kind,
            zero,
            zero_duration,
            queue,
        })
    }

    /// `min == max` turns autoscaling (queue depth and alerts) off for the function.
    pub(crate) fn autoscaled(&self) -> bool {
        self.min != self.max
    }

    /// The load one replica is planned for: `target x target-proportion`.
    pub(crate) fn per_replica(&self) -> f64 {
        self.target * self.target_proportion
    }

    /// Replicas a scale from zero asks for: `max(1, min)`. The one place this is decided:
    /// providers publish it from here (`FunctionState::cold_start_replicas`).
    pub fn cold_start_replicas(&self) -> u64 {
        self.min.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::queue::labels as queue_labels;

    fn map(pairs: &[(&str, &str)]) -> StringMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults() {
        let s = ScaleSettings::from_maps(None, None);
        assert_eq!(s, ScaleSettings::default());
        assert_eq!((s.min, s.max, s.factor), (1, 20, 20));
        assert_eq!(s.per_replica(), 45.0);
        assert!(s.autoscaled());
        assert!(!s.zero);
        assert_eq!(s.zero_duration, Duration::from_secs(900));
    }

    #[test]
    fn labels_win_over_annotations() {
        let l = map(&[(labels::MIN, "2"), (labels::TYPE, "RPS")]);
        let a = map(&[
            (labels::MIN, "7"),
            (labels::MAX, "9"),
            (labels::TARGET_PROPORTION, "0.5"),
            (labels::ZERO, "true"),
            (labels::ZERO_DURATION, "2m30s"),
            (labels::FACTOR, "100"),
            (queue_labels::MAX_INFLIGHT, "3"),
            (queue_labels::RETRY_ATTEMPTS, "4"),
            (queue_labels::RETRY_CODES, "503"),
            (queue_labels::RETRY_MIN_WAIT, "250ms"),
            (queue_labels::RETRY_MAX_WAIT, "2s"),
        ]);
        let s = ScaleSettings::parse(Some(&l), Some(&a)).unwrap();
        assert_eq!(s.queue.max_inflight, Some(3));
        assert_eq!(s.queue.attempts, Some(4));
        assert!(s
            .queue
            .codes
            .is_some_and(|c| c.contains(503) && !c.contains(500)));
        assert_eq!(s.queue.min_wait, Some(Duration::from_millis(250)));
        assert_eq!(s.queue.max_wait, Some(Duration::from_secs(2)));
        assert_eq!(s.min, 2);
        assert_eq!(s.max, 9);
        assert_eq!(s.target, DEFAULT_TARGET);
        assert_eq!(s.target_proportion, 0.5);
        assert_eq!(s.kind, ScaleKind::Rps);
        assert!(s.zero);
        assert_eq!(s.zero_duration, Duration::from_secs(150));
        assert_eq!(s.factor, 100);
    }

    #[test]
    fn a_bad_value_is_an_error_naming_its_label() {
        for (label, value) in [
            (labels::MIN, "-1"),
            (labels::MIN, "two"),
            (labels::MIN, "9223372036854775808"),
            (labels::MIN, "50001"),
            (labels::MAX, "50001"),
            (labels::MAX, "18446744073709551616"),
            (labels::MAX, "1.5"),
            (labels::FACTOR, "101"),
            (labels::TARGET, "0"),
            (labels::TARGET, "oops"),
            (labels::TARGET, "inf"),
            (labels::TARGET_PROPORTION, "1.5"),
            (labels::TYPE, "cpu"),
            (labels::ZERO, "maybe"),
            (labels::ZERO_DURATION, "soon"),
            (queue_labels::MAX_INFLIGHT, "0"),
            (queue_labels::MAX_INFLIGHT, "-3"),
            (queue_labels::MAX_INFLIGHT, "many"),
            (queue_labels::RETRY_ATTEMPTS, "0"),
            (queue_labels::RETRY_ATTEMPTS, "1001"),
            (queue_labels::RETRY_CODES, "5xx"),
            (queue_labels::RETRY_MIN_WAIT, "soon"),
            (queue_labels::RETRY_MAX_WAIT, "-1s"),
        ] {
            // As a label and as an annotation alike.
            for (l, a) in [
                (Some(map(&[(label, value)])), None),
                (None, Some(map(&[(label, value)]))),
            ] {
                let e = ScaleSettings::parse(l.as_ref(), a.as_ref()).unwrap_err();
                assert_eq!((e.label, e.value.as_str()), (label, value));
                assert!(e.to_string().contains(label), "{e}");
            }
            // A function read back from a store gets the defaults.
            let m = map(&[(label, value)]);
            assert_eq!(
                ScaleSettings::from_maps(Some(&m), None),
                ScaleSettings::default()
            );
        }
        let m = map(&[(labels::MIN, "50000"), (labels::ZERO, " No ")]);
        let s = ScaleSettings::parse(Some(&m), None).unwrap();
        assert_eq!(s.min, MAX_REPLICAS);
        assert!(!s.zero);
    }

    #[test]
    fn replica_labels_are_bounded_by_max_replicas() {
        assert_eq!(MAX_REPLICAS, 50_000);
        let m = map(&[(labels::MAX, "50000")]);
        assert_eq!(
            ScaleSettings::parse(Some(&m), None).unwrap().max,
            MAX_REPLICAS
        );
        for label in [labels::MIN, labels::MAX] {
            let m = map(&[(label, "50001")]);
            let e = ScaleSettings::parse(Some(&m), None).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("label {label} \"50001\" is invalid: expected an integer from 0 to 50000")
            );
        }
    }

    #[test]
    fn max_is_at_least_min_and_min_equal_max_disables() {
        let s = ScaleSettings::from_maps(Some(&map(&[(labels::MIN, "30")])), None);
        assert_eq!((s.min, s.max), (30, 30));
        assert!(!s.autoscaled());
        let s = ScaleSettings::from_maps(Some(&map(&[(labels::MIN, "0")])), None);
        assert_eq!(s.cold_start_replicas(), 1);
    }
}
