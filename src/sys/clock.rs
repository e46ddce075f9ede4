//! The crate's clocks: a monotonic one for the hot path (throttle windows, arrivals,
//! demand, pool idle times) and the wall clock for what leaves the process (event times).
//!
//! `Instant::now()` is a vDSO call; the monotonic readings are only a subtraction on top of
//! it, with no allocation, and their epoch is fixed at first use. Monotonic readings never
//! go back; wall-clock readings may (the system clock can be set).

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

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

/// Milliseconds since the Unix epoch (0 if the clock is before it); the wall clock.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
