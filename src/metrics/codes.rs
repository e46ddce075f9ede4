//! Per-function, per-status-code counters and Prometheus histograms, lock-free.
//!
//! `gateway_function_invocation_total{code}` and `gateway_functions_seconds{code}` need a
//! series per status code. A function sees few distinct codes, so each has [`SLOTS`] slots
//! claimed by compare-and-swap on first use; recording is then a short scan and three relaxed
//! `fetch_add`s. Codes beyond the slots are counted in an overflow slot exported as
//! `code="other"` rather than being dropped or mislabelled.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Distinct status codes tracked per function before overflow.
pub(crate) const SLOTS: usize = 12;
/// Prometheus' default histogram buckets (seconds), as the OpenFaaS gateway uses.
pub(crate) const BUCKETS_SECONDS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BUCKETS_NANOS: [u64; 11] = [
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];
const FREE: u32 = 0;
const OVERFLOW: u32 = u32::MAX;

#[derive(Default)]
pub(crate) struct CodeSlot {
    code: AtomicU32,
    count: AtomicU64,
    sum_nanos: AtomicU64,
    /// Non-cumulative bucket counts; exposition accumulates.
    buckets: [AtomicU64; 11],
}

#[derive(Default)]
pub struct CodeTable {
    slots: [CodeSlot; SLOTS],
    overflow: CodeSlot,
}

/// One code's totals, read for exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeSample {
    /// The status code, or `None` for the overflow series.
    pub code: Option<u16>,
    pub count: u64,
    pub(crate) sum_seconds: f64,
    /// Cumulative counts for [`BUCKETS_SECONDS`].
    pub(crate) cumulative: [u64; 11],
}

// === impl CodeTable ===

impl CodeTable {
    #[inline]
    pub(crate) fn record(&self, code: u16, d: Duration) {
        let slot = self.slot(code as u32);
        let nanos = d.as_nanos().min(u64::MAX as u128) as u64;
        slot.count.fetch_add(1, Ordering::Relaxed);
        slot.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        if let Some(b) = BUCKETS_NANOS.iter().position(|&le| nanos <= le) {
            slot.buckets[b].fetch_add(1, Ordering::Relaxed);
        }
    }

    #[inline]
    fn slot(&self, code: u32) -> &CodeSlot {
        for s in &self.slots {
            let c = s.code.load(Ordering::Acquire);
            if c == code {
                return s;
            }
            if c == FREE {
                match s
                    .code
                    .compare_exchange(FREE, code, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => return s,
                    Err(actual) if actual == code => return s,
                    Err(_) => continue,
                }
            }
        }
        self.overflow.code.store(OVERFLOW, Ordering::Relaxed);
        &self.overflow
    }

    /// Total calls over all codes.
    pub fn total(&self) -> u64 {
        self.slots
            .iter()
            .chain(std::iter::once(&self.overflow))
            .map(|s| s.count.load(Ordering::Relaxed))
            .sum()
    }

    pub fn samples(&self) -> Vec<CodeSample> {
        self.slots
            .iter()
            .chain(std::iter::once(&self.overflow))
            .filter_map(|s| {
                let code = s.code.load(Ordering::Acquire);
                if code == FREE {
                    return None;
                }
                let mut cumulative = [0u64; 11];
                let mut acc = 0;
                for (i, b) in s.buckets.iter().enumerate() {
                    acc += b.load(Ordering::Relaxed);
                    cumulative[i] = acc;
                }
                Some(CodeSample {
                    code: (code != OVERFLOW).then_some(code as u16),
                    count: s.count.load(Ordering::Relaxed),
                    sum_seconds: s.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
                    cumulative,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_code_and_overflows_honestly() {
        let t = CodeTable::default();
        t.record(200, Duration::from_millis(3));
        t.record(200, Duration::from_millis(30));
        t.record(502, Duration::from_secs(20));
        let s = t.samples();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].code, Some(200));
        assert_eq!(s[0].count, 2);
        assert_eq!(s[0].cumulative[0], 1); // <= 5ms
        assert_eq!(s[0].cumulative[3], 2); // <= 50ms
        assert_eq!(s[1].cumulative[10], 0); // 20s is only in +Inf
        for code in 300..320 {
            t.record(code, Duration::from_millis(1));
        }
        let s = t.samples();
        assert_eq!(s.len(), SLOTS + 1);
        assert_eq!(s.last().unwrap().code, None);
        assert_eq!(t.total(), 23);
    }
}
