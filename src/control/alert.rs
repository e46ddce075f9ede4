//! Prometheus alert scaling: OpenFaaS's rule for `POST /system/alert`, with replay detection.
//!
//! The rule (reference section 5.3, `handlers/alerthandler.go`), applied per alert:
//! `step = ceil(max x factor / 100)` with `com.openfaas.scale.factor` (default 20, must be
//! 1..=100); firing: `min(current + step, max)`; resolved: `min`. faasgate's `max` defaults
//! to 20 and is not capped at 5 as in CE since 2023.
//!
//! Replays: Alertmanager re-sends a firing alert every `repeat_interval` (30 s in the shipped
//! config) and, because `function_name` is not in `group_by`, whenever another alert of the
//! group changes (every `group_interval`, 10 s). OpenFaaS steps on every delivery. Here an
//! alert is identified by its `fingerprint` (or, from senders without one, its labels and
//! `startsAt`); a firing delivery of an alert that already stepped its function less than
//! `min_interval` ago (default 25 s, just under the repeat interval) is a replay and does not
//! step again. A new episode (a different `startsAt`, so a different fingerprint's start) steps.
//!
//! With the queue-depth scaler on, a firing alert also leaves a floor: the scaler will not
//! go below the count the alert set until the alert resolves (or `floor_ttl` passes with no
//! delivery, in case the resolution is lost). Resolved sets `min` and removes the floor; the
//! queue-depth scaler raises the count again on its next tick if demand still needs it.
//! Time is passed in (`tokio::time::Instant`), so tests run on the paused clock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use thiserror::Error;
use tokio::time::Instant;

use crate::model::names::FunctionKey;
use crate::model::scale::{labels, ScaleSettings};

/// Default guard against replays.
pub(crate) const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(25);
/// How long a firing alert's floor holds without a new delivery.
pub(crate) const DEFAULT_FLOOR_TTL: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AlertStatus {
    Firing,
    Resolved,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum AlertError {
    #[error("label {label} must be between 1 and 100, got {0}", label = labels::FACTOR)]
    BadFactor(u64),
}

/// What to do for one alert delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AlertAction {
    /// Set the replicas to this count (it may equal the current one).
    Scale(u64),
    /// A replay of a delivery that already stepped: nothing.
    Replay,
}

/// Alert episodes seen per function, and the floors they leave.
pub struct AlertBook {
    min_interval: Duration,
    floor_ttl: Duration,
    inner: Mutex<Book>,
}

#[derive(Default)]
struct Book {
    /// (function, alert identity) -> when it last stepped.
    stepped: HashMap<(FunctionKey, String), Instant>,
    /// function -> (floor, last delivery).
    floors: HashMap<FunctionKey, (u64, Instant)>,
}

/// OpenFaaS's target for one alert: firing `min(current + step, max)`, else `min`.
pub(crate) fn openfaas_target(
    status: AlertStatus,
    current: u64,
    s: &ScaleSettings,
) -> Result<u64, AlertError> {
    if !(1..=100).contains(&s.factor) {
        return Err(AlertError::BadFactor(s.factor));
    }
    let step = (s.max * s.factor).div_ceil(100);
    Ok(match status {
        AlertStatus::Firing if step > 0 => (current + step).min(s.max),
        _ => s.min,
    })
}

// === impl AlertBook ===

impl Default for AlertBook {
    fn default() -> Self {
        Self::new(DEFAULT_MIN_INTERVAL, DEFAULT_FLOOR_TTL)
    }
}

impl AlertBook {
    pub(crate) fn new(min_interval: Duration, floor_ttl: Duration) -> Self {
        Self {
            min_interval,
            floor_ttl,
            inner: Mutex::new(Book::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.inner.lock().expect("alert book mutex poisoned")
    }

    /// Applies one delivery of the alert `id` for `key`, whose replicas are `current`.
    pub(crate) fn apply(
        &self,
        key: &FunctionKey,
        id: &str,
        status: AlertStatus,
        current: u64,
        settings: &ScaleSettings,
        now: Instant,
    ) -> Result<AlertAction, AlertError> {
        let mut book = self.lock();
        let ttl = self.floor_ttl.max(self.min_interval);
        book.stepped.retain(|_, at| now.duration_since(*at) < ttl);
        match status {
            AlertStatus::Resolved => {
                book.stepped.retain(|(k, _), _| k != key);
                book.floors.remove(key);
                Ok(AlertAction::Scale(openfaas_target(
                    status, current, settings,
                )?))
            }
            AlertStatus::Firing => {
                let ident = (key.clone(), id.to_string());
                if let Some(at) = book.stepped.get(&ident) {
                    if now.duration_since(*at) < self.min_interval {
                        if let Some(f) = book.floors.get_mut(key) {
                            f.1 = now;
                        }
                        return Ok(AlertAction::Replay);
                    }
                }
                let target = openfaas_target(status, current, settings)?;
                book.stepped.insert(ident, now);
                book.floors.insert(key.clone(), (target, now));
                Ok(AlertAction::Scale(target))
            }
        }
    }

    /// The lower bound a firing alert puts on `key` now (0: none).
    pub(crate) fn floor(&self, key: &FunctionKey, now: Instant) -> u64 {
        let mut book = self.lock();
        match book.floors.get(key) {
            Some(&(n, at)) if now.duration_since(at) < self.floor_ttl => n,
            Some(_) => {
                book.floors.remove(key);
                0
            }
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> ScaleSettings {
        let m = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ScaleSettings::from_maps(Some(&m), None)
    }

    #[test]
    fn the_openfaas_rule() {
        let d = ScaleSettings::default();
        // step = ceil(20 x 20 / 100) = 4
        assert_eq!(openfaas_target(AlertStatus::Firing, 1, &d), Ok(5));
        assert_eq!(openfaas_target(AlertStatus::Firing, 18, &d), Ok(20));
        assert_eq!(openfaas_target(AlertStatus::Resolved, 18, &d), Ok(1));
        // The certifier's case: min 1, max 2: step 1 -> 2, then back to 1.
        let c = settings(&[(labels::MIN, "1"), (labels::MAX, "2")]);
        assert_eq!(openfaas_target(AlertStatus::Firing, 1, &c), Ok(2));
        assert_eq!(openfaas_target(AlertStatus::Resolved, 2, &c), Ok(1));
        // factor 100 jumps to max; min == max stays there.
        let f = settings(&[(labels::FACTOR, "100"), (labels::MAX, "7")]);
        assert_eq!(openfaas_target(AlertStatus::Firing, 1, &f), Ok(7));
        let fixed = settings(&[(labels::MIN, "3"), (labels::MAX, "3")]);
        assert_eq!(openfaas_target(AlertStatus::Firing, 3, &fixed), Ok(3));
        let bad = settings(&[(labels::FACTOR, "0")]);
        assert_eq!(
            openfaas_target(AlertStatus::Firing, 1, &bad),
            Err(AlertError::BadFactor(0))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn replays_within_the_interval_do_not_step_again() {
        let book = AlertBook::default();
        let k = FunctionKey::new("f", "").unwrap();
        let s = ScaleSettings::default();
        let t0 = Instant::now();
        let fire = |id, current, at| book.apply(&k, id, AlertStatus::Firing, current, &s, at);
        assert_eq!(fire("a", 1, t0), Ok(AlertAction::Scale(5)));
        assert_eq!(book.floor(&k, t0), 5);
        // Group-interval re-deliveries: replays.
        for secs in [10, 20] {
            let at = t0 + Duration::from_secs(secs);
            assert_eq!(fire("a", 5, at), Ok(AlertAction::Replay));
        }
        // A different alert of the same function steps.
        assert_eq!(
            fire("b", 5, t0 + Duration::from_secs(20)),
            Ok(AlertAction::Scale(9))
        );
        // The repeat interval: a new step.
        assert_eq!(
            fire("a", 9, t0 + Duration::from_secs(30)),
            Ok(AlertAction::Scale(13))
        );
        // Resolved: min, floor gone, and the next firing steps at once.
        let at = t0 + Duration::from_secs(31);
        assert_eq!(
            book.apply(&k, "a", AlertStatus::Resolved, 13, &s, at),
            Ok(AlertAction::Scale(1))
        );
        assert_eq!(book.floor(&k, at), 0);
        assert_eq!(fire("a", 1, at), Ok(AlertAction::Scale(5)));
        // A floor without deliveries expires.
        assert_eq!(book.floor(&k, at + DEFAULT_FLOOR_TTL), 0);
    }
}
