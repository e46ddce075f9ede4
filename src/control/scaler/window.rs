//! Demand over sliding windows: the stable (default 60 s) and panic (default 6 s) averages.
//!
//! Owns a short history of per-tick intervals of one function, built from successive
//! [`DemandSample`]s (cumulative counters, as a demand source reports them). Each interval
//! keeps its in-flight integral and arrivals, so an average over any window is exact for the
//! ticks it covers: concurrency = busy time / elapsed time, rps = arrivals / elapsed seconds.
//! Before a window has filled, it averages over what there is (as Knative's KPA does).
//! Pure: time is the samples' `at_us`; no clock is read.

use std::collections::VecDeque;
use std::time::Duration;

use crate::control::scaler::settings::ScaleKind;
use crate::dataplane::table::DemandSample;

/// Arrivals a [`DemandWindow::latency`] estimate needs.
pub const MIN_LATENCY_ARRIVALS: u64 = 10;

/// A function's recent demand.
#[derive(Debug, Clone)]
pub struct DemandWindow {
    horizon_us: u64,
    last: Option<DemandSample>,
    ticks: VecDeque<Tick>,
}

#[derive(Debug, Clone, Copy)]
struct Tick {
    end_us: u64,
    dt_us: u64,
    busy_us: u64,
    arrivals: u64,
}

// === impl DemandWindow ===

impl DemandWindow {
    /// Keeps intervals for `horizon` (the longest window asked for).
    pub fn new(horizon: Duration) -> Self {
        Self {
            horizon_us: horizon.as_micros() as u64,
            last: None,
            ticks: VecDeque::new(),
        }
    }

    /// Adds the interval since the previous sample. Samples out of order are ignored.
    pub fn push(&mut self, s: DemandSample) {
        if let Some(prev) = self.last {
            if s.at_us <= prev.at_us {
                return;
            }
            self.ticks.push_back(Tick {
                end_us: s.at_us,
                dt_us: s.at_us - prev.at_us,
                busy_us: s.busy_since(&prev),
                arrivals: s.arrivals.wrapping_sub(prev.arrivals),
            });
        }
        self.last = Some(s);
        let oldest = s.at_us.saturating_sub(self.horizon_us);
        while self.ticks.front().is_some_and(|t| t.end_us <= oldest) {
            self.ticks.pop_front();
        }
    }

    /// The latest sample.
    pub fn last(&self) -> Option<&DemandSample> {
        self.last.as_ref()
    }

    /// Mean demand over the latest interval (the newest tick).
    pub fn latest(&self, kind: ScaleKind) -> f64 {
        match self.ticks.back() {
            Some(t) => t.average(kind),
            None => 0.0,
        }
    }

    /// Mean time a request spent in flight over the last `window`, in seconds, by Little's
    /// law (in-flight integral / arrivals); None with fewer than [`MIN_LATENCY_ARRIVALS`].
    pub fn latency(&self, window: Duration) -> Option<f64> {
        let last = self.last?;
        let from = last.at_us.saturating_sub(window.as_micros() as u64);
        let (mut busy, mut arrivals) = (0u64, 0u64);
        for t in self.ticks.iter().rev().take_while(|t| t.end_us > from) {
            busy += t.busy_us;
            arrivals += t.arrivals;
        }
        (arrivals >= MIN_LATENCY_ARRIVALS).then(|| busy as f64 / 1e6 / arrivals as f64)
    }

    /// Mean demand over the last `window` (intervals ending within it), in `kind`'s unit:
    /// requests in flight (held included) or requests per second. 0 without data.
    pub fn average(&self, window: Duration, kind: ScaleKind) -> f64 {
        let Some(last) = self.last else { return 0.0 };
        let from = last.at_us.saturating_sub(window.as_micros() as u64);
        let (mut dt, mut busy, mut arrivals) = (0u64, 0u64, 0u64);
        for t in self.ticks.iter().rev().take_while(|t| t.end_us > from) {
            dt += t.dt_us;
            busy += t.busy_us;
            arrivals += t.arrivals;
        }
        Tick {
            end_us: last.at_us,
            dt_us: dt,
            busy_us: busy,
            arrivals,
        }
        .average(kind)
    }
}

// === impl Tick ===

impl Tick {
    fn average(&self, kind: ScaleKind) -> f64 {
        if self.dt_us == 0 {
            return 0.0;
        }
        match kind {
            ScaleKind::Capacity => self.busy_us as f64 / self.dt_us as f64,
            ScaleKind::Rps => self.arrivals as f64 * 1e6 / self.dt_us as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_s: f64, busy_s: f64, arrivals: u64) -> DemandSample {
        DemandSample {
            at_us: (at_s * 1e6) as u64,
            busy_us: (busy_s * 1e6) as u64,
            arrivals,
            ..Default::default()
        }
    }

    #[test]
    fn averages_over_each_window() {
        let mut w = DemandWindow::new(Duration::from_secs(60));
        assert_eq!(w.average(Duration::from_secs(6), ScaleKind::Capacity), 0.0);
        // 54 s of concurrency 1 and 1 rps, then 6 s of concurrency 10 and 100 rps.
        let (mut busy, mut arrivals) = (0.0, 0);
        w.push(sample(0.0, 0.0, 0));
        for i in 1..=60 {
            let (c, r) = if i <= 54 { (1.0, 1) } else { (10.0, 100) };
            busy += c;
            arrivals += r;
            w.push(sample(i as f64, busy, arrivals));
        }
        let panic = w.average(Duration::from_secs(6), ScaleKind::Capacity);
        let stable = w.average(Duration::from_secs(60), ScaleKind::Capacity);
        assert!((panic - 10.0).abs() < 1e-9, "{panic}");
        assert!((stable - (54.0 + 60.0) / 60.0).abs() < 1e-9, "{stable}");
        let rps = w.average(Duration::from_secs(6), ScaleKind::Rps);
        assert!((rps - 100.0).abs() < 1e-9, "{rps}");
        assert!((w.latest(ScaleKind::Capacity) - 10.0).abs() < 1e-9);
        // Little's law: 60 request-seconds for 600 arrivals in the last 6 s.
        let lat = w.latency(Duration::from_secs(6)).unwrap();
        assert!((lat - 0.1).abs() < 1e-9, "{lat}");
        // Old intervals fall out of the horizon.
        for i in 61..=200 {
            w.push(sample(i as f64, busy, arrivals));
        }
        assert_eq!(w.average(Duration::from_secs(60), ScaleKind::Capacity), 0.0);
        assert!(w.ticks.len() <= 60);
    }

    #[test]
    fn a_partial_window_averages_what_it_has() {
        let mut w = DemandWindow::new(Duration::from_secs(60));
        w.push(sample(10.0, 0.0, 0));
        w.push(sample(10.5, 2.0, 3));
        assert!((w.average(Duration::from_secs(60), ScaleKind::Capacity) - 4.0).abs() < 1e-9);
        assert!((w.average(Duration::from_secs(6), ScaleKind::Rps) - 6.0).abs() < 1e-9);
        // Out of order: ignored.
        w.push(sample(9.0, 100.0, 100));
        assert_eq!(w.last().unwrap().at_us, 10_500_000);
    }
}
