//! Scaling decisions, kept for people: a bounded ring of [`ScaleEvent`]s that the UI shows.
//!
//! Whoever changes a function's desired replica count records why: the scale API
//! (`reason = "api"`), the cold-start task (`"scale from zero"`) and the autoscaler (its own
//! reasons). The ring holds the newest [`DEFAULT_CAPACITY`] events of all functions; the
//! oldest fall off. Recording takes a short mutex on the control plane only: nothing on the
//! invocation path records here. Reading copies what it returns.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::{Serialize, Serializer};

use crate::model::names::FunctionKey;

/// Events kept by [`ScaleEvents::default`].
pub(crate) const DEFAULT_CAPACITY: usize = 1024;

/// Reasons recorded by the gateway itself; the autoscaler adds its own.
pub(crate) mod reason {
    /// `POST /system/scale-function/{name}` (the UI, curl, scripts).
    pub(crate) const API: &str = "api";
    /// A request arrived for a function scaled to zero.
    pub(crate) const COLD_START: &str = "scale from zero";
}

/// One change of a function's desired replica count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ScaleEvent {
    /// Unix time in milliseconds.
    pub time: u64,
    /// `name.namespace`.
    #[serde(serialize_with = "display")]
    pub function: FunctionKey,
    /// Desired replicas before.
    pub from: u64,
    /// Desired replicas after.
    pub to: u64,
    /// Why, in a few words (`api`, `scale from zero`, `queue depth 12 > target 5`, ...).
    pub reason: String,
}

/// A bounded ring of the newest scale events of every function.
pub struct ScaleEvents {
    ring: Mutex<VecDeque<ScaleEvent>>,
    capacity: usize,
}

// === impl ScaleEvents ===

impl Default for ScaleEvents {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl ScaleEvents {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            ring: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity,
        }
    }

    /// Records a change from `from` to `to` replicas now.
    pub(crate) fn record(
        &self,
        function: &FunctionKey,
        from: u64,
        to: u64,
        reason: impl Into<String>,
    ) {
        self.push(ScaleEvent {
            time: crate::sys::clock::unix_ms(),
            function: function.clone(),
            from,
            to,
            reason: reason.into(),
        });
    }

    /// Adds an event (its time set by the caller), dropping the oldest when full.
    pub(crate) fn push(&self, event: ScaleEvent) {
        let mut ring = self.ring.lock().expect("scale events mutex poisoned");
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back(event);
    }

    /// The newest `limit` events, oldest first; only `function`'s when given.
    pub(crate) fn recent(&self, function: Option<&FunctionKey>, limit: usize) -> Vec<ScaleEvent> {
        let ring = self.ring.lock().expect("scale events mutex poisoned");
        let mut out: Vec<ScaleEvent> = ring
            .iter()
            .rev()
            .filter(|e| function.is_none_or(|f| &e.function == f))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }
}

fn display<S: Serializer>(key: &FunctionKey, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: &str) -> FunctionKey {
        FunctionKey::new(n, "").unwrap()
    }

    #[test]
    fn ring_is_bounded_and_filters_by_function() {
        let ev = ScaleEvents::with_capacity(3);
        ev.record(&key("a"), 0, 1, reason::COLD_START);
        ev.record(&key("b"), 1, 2, reason::API);
        ev.record(&key("a"), 1, 3, reason::API);
        ev.record(&key("a"), 3, 1, "queue empty");
        let all = ev.recent(None, 10);
        assert_eq!(all.len(), 3, "oldest dropped");
        assert_eq!(all[0].function, key("b"));
        let a = ev.recent(Some(&key("a")), 10);
        assert_eq!(
            a.iter().map(|e| (e.from, e.to)).collect::<Vec<_>>(),
            [(1, 3), (3, 1)]
        );
        assert_eq!(ev.recent(Some(&key("a")), 1)[0].reason, "queue empty");
        let v = serde_json::to_value(&a[0]).unwrap();
        assert_eq!(v["function"], "a.openfaas-fn");
        assert_eq!(v["reason"], "api");
        assert!(v["time"].as_u64().unwrap() > 1_600_000_000_000);
    }
}
