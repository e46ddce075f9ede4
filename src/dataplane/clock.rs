//! A coarse monotonic clock for the hot path (throttle windows, arrivals, demand).
//! `Instant::now()` is a vDSO call; these are only a subtraction on top of it, with no
//! allocation, and the epoch is fixed at first use.

use std::sync::OnceLock;
use std::time::Instant;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since the process's first call; monotonic.
pub fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

/// Microseconds since the process's first call; monotonic.
pub fn now_us() -> u64 {
    epoch().elapsed().as_micros() as u64
}

/// `at` in microseconds since the epoch (0 for an instant before it): lets a caller that
/// already read `Instant::now()` avoid a second clock read.
pub fn us_at(at: Instant) -> u64 {
    at.saturating_duration_since(epoch()).as_micros() as u64
}
