//! The per-function `com.openfaas.scale.*` settings, parsed once from labels or annotations.
//!
//! Owns the label names, their defaults and the parse rules (reference section 5.4): a label
//! wins over an annotation of the same name (faasd users put them in annotations); a value
//! that does not parse, or is out of range, falls back to the default, as OpenFaaS does for
//! non-integer labels. Providers call [`ScaleSettings::from_maps`] when they publish a
//! function, so the scaler and the alert handler never parse on a tick. Pure.

use std::time::Duration;

use crate::model::types::{FunctionDeployment, StringMap};

/// Label (or annotation) names.
pub mod labels {
    pub const MIN: &str = "com.openfaas.scale.min";
    pub const MAX: &str = "com.openfaas.scale.max";
    pub const FACTOR: &str = "com.openfaas.scale.factor";
    pub const TARGET: &str = "com.openfaas.scale.target";
    pub const TARGET_PROPORTION: &str = "com.openfaas.scale.target-proportion";
    pub const TYPE: &str = "com.openfaas.scale.type";
    pub const ZERO: &str = "com.openfaas.scale.zero";
    pub const ZERO_DURATION: &str = "com.openfaas.scale.zero-duration";
}

pub const DEFAULT_MIN: u64 = 1;
pub const DEFAULT_MAX: u64 = 20;
pub const DEFAULT_FACTOR: u64 = 20;
pub const DEFAULT_TARGET: f64 = 50.0;
pub const DEFAULT_TARGET_PROPORTION: f64 = 0.9;
pub const DEFAULT_ZERO_DURATION: Duration = Duration::from_secs(15 * 60);

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
    pub target_proportion: f64,
    pub kind: ScaleKind,
    /// Whether an idle function may go to zero replicas. Default false.
    pub zero: bool,
    /// How long without an arrival counts as idle. Default 15m.
    pub zero_duration: Duration,
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
        }
    }
}

impl ScaleSettings {
    /// Reads the settings of a deployment (labels first, then annotations).
    pub fn from_deployment(d: &FunctionDeployment) -> Self {
        Self::from_maps(d.labels.as_ref(), d.annotations.as_ref())
    }

    pub fn from_maps(labels: Option<&StringMap>, annotations: Option<&StringMap>) -> Self {
        let get = |name: &str| {
            labels
                .and_then(|m| m.get(name))
                .or_else(|| annotations.and_then(|m| m.get(name)))
                .map(|v| v.trim())
        };
        let d = Self::default();
        let int = |name| get(name).and_then(|v| v.parse::<u64>().ok());
        let float = |name| {
            get(name)
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|f| f.is_finite())
        };
        let min = int(labels::MIN).unwrap_or(d.min);
        let max = int(labels::MAX).unwrap_or(d.max).max(min);
        Self {
            min,
            max,
            factor: int(labels::FACTOR).unwrap_or(d.factor),
            target: float(labels::TARGET)
                .filter(|t| *t > 0.0)
                .unwrap_or(d.target),
            target_proportion: float(labels::TARGET_PROPORTION)
                .filter(|p| *p > 0.0 && *p <= 1.0)
                .unwrap_or(d.target_proportion),
            kind: match get(labels::TYPE).map(str::to_ascii_lowercase).as_deref() {
                Some("rps") => ScaleKind::Rps,
                _ => ScaleKind::Capacity,
            },
            zero: matches!(
                get(labels::ZERO).map(str::to_ascii_lowercase).as_deref(),
                Some("true" | "1" | "yes")
            ),
            zero_duration: get(labels::ZERO_DURATION)
                .and_then(|v| crate::config::parse_duration(labels::ZERO_DURATION, v).ok())
                .unwrap_or(d.zero_duration),
        }
    }

    /// `min == max` turns autoscaling (queue depth and alerts) off for the function.
    pub fn autoscaled(&self) -> bool {
        self.min != self.max
    }

    /// The load one replica is planned for: `target x target-proportion`.
    pub fn per_replica(&self) -> f64 {
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
    fn labels_win_over_annotations_and_bad_values_fall_back() {
        let l = map(&[
            (labels::MIN, "2"),
            (labels::TARGET, "oops"),
            (labels::TYPE, "RPS"),
        ]);
        let a = map(&[
            (labels::MIN, "7"),
            (labels::MAX, "9"),
            (labels::TARGET_PROPORTION, "1.5"),
            (labels::ZERO, "true"),
            (labels::ZERO_DURATION, "2m30s"),
            (labels::FACTOR, "100"),
        ]);
        let s = ScaleSettings::from_maps(Some(&l), Some(&a));
        assert_eq!(s.min, 2);
        assert_eq!(s.max, 9);
        assert_eq!(s.target, DEFAULT_TARGET);
        assert_eq!(s.target_proportion, DEFAULT_TARGET_PROPORTION);
        assert_eq!(s.kind, ScaleKind::Rps);
        assert!(s.zero);
        assert_eq!(s.zero_duration, Duration::from_secs(150));
        assert_eq!(s.factor, 100);
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
