//! Per-request cost of demand accounting: what `Invocation` does at a request's start and end.
//!
//! - `before`: the counters this replaced: arrivals, last arrival (a second clock read,
//!   `clock::now_ms`), and an in-flight counter incremented and decremented.
//! - `after`: `Demand::begin`/`end`: arrivals, last arrival from the one clock read already
//!   taken, and the packed word (in-flight count + busy-time integral) in one `fetch_add` each
//!   way, which is what gives the scaler exact window averages.
//! - `clock only`: the `Instant::now()` and `elapsed()` every invocation takes anyway.
//!
//! Each is measured uncontended and with two threads on the same function (`iter_custom`).
//! Run: `cargo bench --bench demand`. The ratio after/before is printed at the end.
#![allow(clippy::unwrap_used)] // test and tool code: a failed unwrap is a failed run

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use faasgate::dataplane::table::Demand;
use faasgate::sys::clock;

/// The baseline: demand accounted without the scaler's busy-time integral.
#[derive(Default)]
struct Before {
    inflight: AtomicU64,
    arrivals: AtomicU64,
    last_arrival_ms: AtomicU64,
}

fn clock_only() {
    let start = Instant::now();
    black_box(start);
    black_box(start.elapsed());
}

fn before(d: &Before) {
    let start = Instant::now();
    d.arrivals.fetch_add(1, Ordering::Relaxed);
    d.last_arrival_ms.store(clock::now_ms(), Ordering::Relaxed);
    d.inflight.fetch_add(1, Ordering::Relaxed);
    black_box(start.elapsed());
    d.inflight.fetch_sub(1, Ordering::Relaxed);
}

fn after(d: &Demand) {
    let start = Instant::now();
    let start_us = clock::us_at(start);
    d.begin(start_us);
    let elapsed = black_box(start.elapsed());
    d.end(start_us + elapsed.as_micros() as u64);
}

/// Runs `f` `iters` times on each of two threads at once; the wall time of the slower one.
fn contended<S: Send + Sync + 'static>(iters: u64, state: Arc<S>, f: fn(&S)) -> Duration {
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (state, barrier) = (state.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let t = Instant::now();
                for _ in 0..iters {
                    f(&state);
                }
                t.elapsed()
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("bench thread"))
        .max()
        .unwrap_or_default()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("demand accounting per request");
    g.bench_function("clock only", |b| b.iter(clock_only));
    let old = Before::default();
    g.bench_function("before", |b| b.iter(|| before(&old)));
    let new = Demand::default();
    g.bench_function("after", |b| b.iter(|| after(&new)));
    g.bench_function("before, 2 threads", |b| {
        b.iter_custom(|n| contended(n, Arc::new(Before::default()), before))
    });
    g.bench_function("after, 2 threads", |b| {
        b.iter_custom(|n| contended(n, Arc::new(Demand::default()), after))
    });
    g.finish();

    // A plain ratio from one more timed run of each, for the log.
    let n = 2_000_000u64;
    let time = |f: &dyn Fn()| {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        t.elapsed().as_secs_f64() * 1e9 / n as f64
    };
    let (b_ns, a_ns) = (time(&|| before(&old)), time(&|| after(&new)));
    let (bc, ac) = (
        contended(n, Arc::new(Before::default()), before).as_secs_f64() * 1e9 / n as f64,
        contended(n, Arc::new(Demand::default()), after).as_secs_f64() * 1e9 / n as f64,
    );
    println!(
        "demand accounting: before {b_ns:.1} ns, after {a_ns:.1} ns (ratio {:.2}); \
         2 threads: before {bc:.1} ns, after {ac:.1} ns (ratio {:.2})",
        a_ns / b_ns,
        ac / bc
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
