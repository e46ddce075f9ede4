//! Demand over sliding windows: the stable (default 60 s) and panic (default 6 s) averages.
//!
//! Owns a short history of per-tick intervals of one function, built from successive
//! [`DemandSample`]s (cumulative counters, as a demand source reports them). Each interval
//! keeps its in-flight integral and arrivals, so an average over any window is exact for the
//! ticks it covers: concurrency = busy time / elapsed time, rps = arrivals / elapsed seconds.
//! Before a window has filled, it averages over what there is (as Knative's KPA does).
//!
//! It also gives what Little's law sizing needs ([`crate::control::scaler::decide`]):
//! - the **service time** of completed requests ([`DemandWindow::service_time`]): time in
//!   flight minus time held, over departures (`arrivals - change of in flight`), so waiting
//!   for capacity is not counted as work; the held integral is the trapezoid of the held
//!   counts sampled at the ends of each tick;
//! - **arrival-rate bounds** over trailing windows ([`DemandWindow::arrival_rate`]): Poisson
//!   confidence bounds `(a -/+ z sqrt(a)) / t`, the window taken being the one whose lower
//!   bound is highest (after a step that is the longest window wholly after it), and whether
//!   the newest tick is still significantly above the one before (a step inside it).
//!
//! Pure: time is the samples' `at_us`; no clock is read.

use std::collections::VecDeque;
use std::time::Duration;

use crate::dataplane::table::DemandSample;
use crate::model::scale::ScaleKind;

/// Completed requests a [`DemandWindow::service_time`] estimate needs.
pub(crate) const MIN_COMPLETIONS: u64 = 20;

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
    /// Integral of the held count (trapezoid of the two samples), request x microseconds.
    held_us: u64,
    /// Arrivals minus the change of the in-flight count: requests that ended (signed, as a
    /// tick may see more begin than end; sums over a window telescope exactly).
    departures: i64,
}

/// Sums of the intervals of a window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Totals {
    pub(crate) dt_us: u64,
    /// In-flight integral (held included), request x microseconds.
    pub busy_us: u64,
    pub arrivals: u64,
    /// In-flight integral without time held.
    pub(crate) serving_us: u64,
    /// Requests ended (see `Tick::departures`).
    pub(crate) departures: i64,
}

/// Mean service time of the requests completed over a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServiceTime {
    /// Seconds in flight per completed request, time held excluded.
    pub mean: f64,
    /// Requests completed over the window (the estimate's sample size).
    pub completions: u64,
}

/// Bounds on the arrival rate (requests per second) over a trailing window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ArrivalRate {
    /// Lower confidence bound.
    pub low: f64,
    /// Upper confidence bound (of the same window).
    pub high: f64,
    /// False while the newest tick's rate is significantly above the previous tick's: the
    /// load rose inside the newest tick (which may not show all of it yet) or inside the
    /// previous one.
    pub settled: bool,
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
            let dt_us = s.at_us - prev.at_us;
            let arrivals = s.arrivals.wrapping_sub(prev.arrivals);
            self.ticks.push_back(Tick {
                end_us: s.at_us,
                dt_us,
                busy_us: s.busy_since(&prev),
                arrivals,
                held_us: (s.queued + prev.queued) * dt_us / 2,
                departures: arrivals as i64 - (s.inflight as i64 - prev.inflight as i64),
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
            Some(t) if t.dt_us > 0 => match kind {
                ScaleKind::Capacity => t.busy_us as f64 / t.dt_us as f64,
                ScaleKind::Rps => t.arrivals as f64 * 1e6 / t.dt_us as f64,
            },
            _ => 0.0,
        }
    }

    /// Mean service time over the last `window`: in-flight time minus held time, over the
    /// requests that ended (Little's law on the requests being served). None with fewer than
    /// [`MIN_COMPLETIONS`].
    pub fn service_time(&self, window: Duration) -> Option<ServiceTime> {
        self.totals(window).service_time()
    }

    /// Bounds on the arrival rate over trailing windows of 1, 2, ... ticks up to `window`:
    /// for each, `(a - z_low sqrt(a)) / t` and `(a + z_high sqrt(a + 1)) / t` for `a` arrivals
    /// in `t` seconds; the window with the highest lower bound is the one reported. 0 without
    /// data.
    pub(crate) fn arrival_rate(&self, window: Duration, z_low: f64, z_high: f64) -> ArrivalRate {
        let mut best = ArrivalRate {
            settled: true,
            ..Default::default()
        };
        let (mut dt, mut arrivals) = (0u64, 0u64);
        for t in self.within(window) {
            dt += t.dt_us;
            arrivals += t.arrivals;
            let secs = dt as f64 / 1e6;
            let a = arrivals as f64;
            let low = (a - z_low * a.sqrt()).max(0.0) / secs;
            let high = (a + z_high * (a + 1.0).sqrt()) / secs;
            // The window with the highest lower bound; among windows that bound the rate no
            // better from below (no arrival in any of them, say), the one that bounds it best
            // from above: after the load stops, the longer quiet window says more than the
            // newest tick alone (which, empty, still allows z_high / tick per second).
            if low > best.low || (low == best.low && high < best.high) || best.high == 0.0 {
                best.low = low;
                best.high = high;
            }
        }
        let mut newest = self.ticks.iter().rev();
        if let (Some(n), Some(p)) = (newest.next(), newest.next()) {
            let rate = |t: &Tick| t.arrivals as f64 * 1e6 / t.dt_us as f64;
            let var = |t: &Tick| t.arrivals as f64 * (1e6 / t.dt_us as f64).powi(2);
            best.settled = rate(n) - rate(p) <= z_low * (var(n) + var(p)).sqrt();
        }
        best
    }

    /// Arrivals over the last `window` and the seconds the intervals cover.
    pub fn arrivals(&self, window: Duration) -> (u64, f64) {
        let t = self.totals(window);
        (t.arrivals, t.dt_us as f64 / 1e6)
    }

    /// Sums over the last `window` (one pass for every figure of that window).
    pub(crate) fn totals(&self, window: Duration) -> Totals {
        let mut sum = Totals::default();
        for t in self.within(window) {
            sum.dt_us += t.dt_us;
            sum.busy_us += t.busy_us;
            sum.arrivals += t.arrivals;
            sum.serving_us += t.busy_us.saturating_sub(t.held_us);
            sum.departures += t.departures;
        }
        sum
    }

    /// The intervals ending within the last `window`, newest first.
    fn within(&self, window: Duration) -> impl Iterator<Item = &Tick> {
        let from = self
            .last
            .map_or(0, |l| l.at_us.saturating_sub(window.as_micros() as u64));
        self.ticks.iter().rev().take_while(move |t| t.end_us > from)
    }

    /// Mean demand over the last `window` (intervals ending within it), in `kind`'s unit:
    /// requests in flight (held included) or requests per second. 0 without data.
    pub fn average(&self, window: Duration, kind: ScaleKind) -> f64 {
        self.totals(window).average(kind)
    }
}

// === impl Totals ===

impl Totals {
    /// Mean demand in `kind`'s unit; 0 without data.
    pub(crate) fn average(&self, kind: ScaleKind) -> f64 {
        if self.dt_us == 0 {
            return 0.0;
        }
        match kind {
            ScaleKind::Capacity => self.busy_us as f64 / self.dt_us as f64,
            ScaleKind::Rps => self.arrivals as f64 * 1e6 / self.dt_us as f64,
        }
    }

    /// See [`DemandWindow::service_time`].
    pub(crate) fn service_time(&self) -> Option<ServiceTime> {
        let completions = u64::try_from(self.departures).ok()?;
        (completions >= MIN_COMPLETIONS).then(|| ServiceTime {
            mean: self.serving_us as f64 / 1e6 / completions as f64,
            completions,
        })
    }

    /// Seconds covered.
    pub(crate) fn secs(&self) -> f64 {
        self.dt_us as f64 / 1e6
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
        // Little's law: 60 request-seconds for 600 completions in the last 6 s.
        let st = w.service_time(Duration::from_secs(6)).unwrap();
        assert!((st.mean - 0.1).abs() < 1e-9, "{st:?}");
        assert_eq!(st.completions, 600);
        // Old intervals fall out of the horizon.
        for i in 61..=200 {
            w.push(sample(i as f64, busy, arrivals));
        }
        assert_eq!(w.average(Duration::from_secs(60), ScaleKind::Capacity), 0.0);
        assert!(w.ticks.len() <= 60);
    }

    #[test]
    fn service_time_leaves_out_time_held_and_requests_still_in_flight() {
        let mut w = DemandWindow::new(Duration::from_secs(60));
        let s = |at_s: f64, busy_s: f64, arrivals, inflight, queued| DemandSample {
            at_us: (at_s * 1e6) as u64,
            busy_us: (busy_s * 1e6) as u64,
            arrivals,
            inflight,
            queued,
            ..Default::default()
        };
        w.push(s(0.0, 0.0, 0, 0, 0));
        assert_eq!(w.service_time(Duration::from_secs(6)), None, "no data");
        // 1 s: 100 arrivals, 40 still in flight (20 of them held), 46 request-seconds.
        w.push(s(1.0, 46.0, 100, 40, 20));
        // 1 s more: 200 arrivals, everything ended; 24 request-seconds more.
        w.push(s(2.0, 70.0, 300, 0, 0));
        let st = w.service_time(Duration::from_secs(6)).unwrap();
        assert_eq!(st.completions, 300, "departures telescope to the arrivals");
        // Held: trapezoids 0 -> 20 -> 0 over two seconds = 20 request-seconds, left out.
        assert!((st.mean - (70.0 - 20.0) / 300.0).abs() < 1e-9, "{st:?}");
    }

    /// After the load stops, the upper bound comes from the whole quiet window, not from
    /// the newest (empty) tick alone, which would still allow z_high / 0.2 s = 10 per second.
    #[test]
    fn a_quiet_window_bounds_the_rate_from_above_by_its_whole_length() {
        let mut w = DemandWindow::new(Duration::from_secs(60));
        let mut arrivals = 0;
        w.push(sample(0.0, 0.0, 0));
        for i in 1..=10 {
            arrivals += 100;
            w.push(sample(i as f64 * 0.2, 0.0, arrivals));
        }
        for i in 11..=30 {
            w.push(sample(i as f64 * 0.2, 0.0, arrivals));
        }
        let r = w.arrival_rate(Duration::from_secs(2), 2.5, 2.0);
        assert_eq!(r.low, 0.0);
        // Ten quiet ticks (2 s): (0 + 2 x sqrt(1)) / 2 s.
        assert!((r.high - 1.0).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn arrival_rate_takes_the_window_after_a_step_and_sees_a_step_inside_a_tick() {
        let mut w = DemandWindow::new(Duration::from_secs(60));
        let mut arrivals = 0;
        w.push(sample(0.0, 0.0, 0));
        for i in 1..=20 {
            arrivals += 100; // 500 rps over 0.2 s ticks
            w.push(sample(i as f64 * 0.2, 0.0, arrivals));
        }
        let r = w.arrival_rate(Duration::from_secs(6), 3.0, 2.0);
        assert!(
            r.low < 500.0 && r.low > 450.0 && r.high > 500.0 && r.settled,
            "{r:?}"
        );
        // A x10 step halfway through the newest tick: not settled.
        arrivals += 550;
        w.push(sample(4.2, 0.0, arrivals));
        assert!(!w.arrival_rate(Duration::from_secs(6), 3.0, 2.0).settled);
        // One whole tick at the new level: the bounds come from that tick alone (it is still
        // above the partly loaded one before it).
        arrivals += 1000;
        w.push(sample(4.4, 0.0, arrivals));
        let r = w.arrival_rate(Duration::from_secs(6), 3.0, 2.0);
        assert!(r.low > 4500.0 && r.low < 5000.0 && r.high > 5000.0, "{r:?}");
        // Two: settled, bounds from both.
        arrivals += 1000;
        w.push(sample(4.6, 0.0, arrivals));
        let r = w.arrival_rate(Duration::from_secs(6), 3.0, 2.0);
        assert!(r.settled, "{r:?}");
        assert!(r.low > 4600.0 && r.high < 5300.0, "{r:?}");
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
