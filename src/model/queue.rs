//! A function's async-queue settings, from its labels or annotations (a label wins), read
//! with the scale settings by the one parser ([`crate::model::scale::ScaleSettings::parse`])
//! and published with them:
//!
//! | name | value | default |
//! |---|---|---|
//! | `com.openfaas.queue.max-inflight` | calls delivered at once, at most (1 to 2^32-1) | `--async-max-inflight` |
//! | `com.openfaas.retry.attempts` | deliveries before the dead letters (1 to 1000) | `--async-max-attempts` |
//! | `com.openfaas.retry.codes` | statuses retried, comma-separated (100 to 599) | `--async-retry-codes` |
//! | `com.openfaas.retry.min_wait` | first backoff, a duration (`10s`) | `--async-retry-wait` |
//! | `com.openfaas.retry.max_wait` | longest backoff, a duration | `--async-retry-max-wait` |
//!
//! The `retry.*` names are OpenFaaS Pro's queue-worker annotations. A value that does not
//! parse is an error naming it (a deploy answers 400), where Pro's worker falls back to its
//! defaults silently. Pure; `Copy` (the codes are a bit set), so the route table carries it.

use std::time::Duration;

/// Label (or annotation) names.
pub mod labels {
    pub const MAX_INFLIGHT: &str = "com.openfaas.queue.max-inflight";
    pub const RETRY_ATTEMPTS: &str = "com.openfaas.retry.attempts";
    pub const RETRY_CODES: &str = "com.openfaas.retry.codes";
    pub const RETRY_MIN_WAIT: &str = "com.openfaas.retry.min_wait";
    pub const RETRY_MAX_WAIT: &str = "com.openfaas.retry.max_wait";
}

/// The most attempts a function may ask for.
pub const MAX_ATTEMPTS: u32 = 1000;

/// A set of HTTP statuses (100 to 599).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusSet([u64; 8]);

impl StatusSet {
    pub fn contains(&self, code: u16) -> bool {
        (100..600).contains(&code)
            && self.0[usize::from(code - 100) / 64] >> ((code - 100) % 64) & 1 == 1
    }

    fn insert(&mut self, code: u16) {
        self.0[usize::from(code - 100) / 64] |= 1 << ((code - 100) % 64);
    }

    /// `408,429,500`: comma-separated statuses from 100 to 599 (spaces allowed).
    pub fn parse(s: &str) -> Option<Self> {
        let mut set = Self::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let code: u16 = part.parse().ok()?;
            if !(100..600).contains(&code) {
                return None;
            }
            set.insert(code);
        }
        Some(set)
    }
}

/// One function's overrides of the gateway's async settings (None: the gateway's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueSettings {
    pub max_inflight: Option<u64>,
    pub attempts: Option<u32>,
    pub codes: Option<StatusSet>,
    pub min_wait: Option<Duration>,
    pub max_wait: Option<Duration>,
}

/// A value that the settings cannot take: (name, value, what it takes).
pub(crate) type Bad<'a> = (&'static str, &'a str, &'static str);

impl QueueSettings {
    /// Reads the settings; `get` looks a name up (labels first, then annotations).
    pub(crate) fn parse<'a>(
        get: impl Fn(&'static str) -> Option<(&'static str, &'a str)>,
    ) -> Result<Self, Bad<'a>> {
        let max_inflight = match get(labels::MAX_INFLIGHT) {
            None => None,
            Some((l, v)) => Some(
                v.parse::<u64>()
                    .ok()
                    .filter(|n| (1..=u64::from(u32::MAX)).contains(n))
                    .ok_or((l, v, "a positive integer"))?,
            ),
        };
        let attempts = match get(labels::RETRY_ATTEMPTS) {
            None => None,
            Some((l, v)) => Some(
                v.parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_ATTEMPTS).contains(n))
                    .ok_or((l, v, "an integer from 1 to 1000"))?,
            ),
        };
        let codes = match get(labels::RETRY_CODES) {
            None => None,
            Some((l, v)) => Some(StatusSet::parse(v).ok_or((
                l,
                v,
                "comma-separated HTTP statuses such as 429,503",
            ))?),
        };
        let wait = |name: &'static str| match get(name) {
            None => Ok(None),
            Some((l, v)) => crate::model::duration::parse(v).map(Some).ok_or((
                l,
                v,
                "a duration such as 500ms, 10s or 2m",
            )),
        };
        Ok(Self {
            max_inflight,
            attempts,
            codes,
            min_wait: wait(labels::RETRY_MIN_WAIT)?,
            max_wait: wait(labels::RETRY_MAX_WAIT)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_sets_hold_what_they_were_given() {
        let s = StatusSet::parse("408, 429,500,599,100").unwrap();
        for c in [100, 408, 429, 500, 599] {
            assert!(s.contains(c), "{c}");
        }
        for c in [0, 99, 101, 200, 503, 600, 65535] {
            assert!(!s.contains(c), "{c}");
        }
        assert_eq!(StatusSet::parse(""), Some(StatusSet::default()));
        for bad in ["abc", "99", "600", "5xx", "500;503"] {
            assert_eq!(StatusSet::parse(bad), None, "{bad}");
        }
    }
}
