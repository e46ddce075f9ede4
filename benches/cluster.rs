//! The cost of summing demand over a cluster, per scaler tick, at 50 gateways x 1,000
//! functions: what each member spends building its report, the bytes it sends, and what the
//! leader spends folding 49 reports in and observing the sum, beside the baseline of the
//! same tick for a gateway alone (observing its own 1,000 functions).
//!
//! Two loads: every function active on every gateway (each report lists all 1,000: the
//! worst case) and a tenth of them active (a member reports only what changed since its last
//! report to the leader).
//!
//! Run: `cargo bench --bench cluster`. The figures (bytes and time per tick) are printed at
//! the end.
#![allow(clippy::unwrap_used)] // test and tool code: a failed unwrap is a failed run

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use faasgate::control::cluster::demand::{ClusterDemand, Report, ReportBook};
use faasgate::control::cluster::wire;
use faasgate::control::scaler::DemandSource;
use faasgate::dataplane::Routes;
use faasgate::model::names::FunctionKey;
use faasgate::sys::clock;

const FUNCTIONS: usize = 1_000;
const MEMBERS: usize = 49;

/// A route table of `FUNCTIONS` functions that all served a request.
fn routes() -> Arc<Routes> {
    let routes = Arc::new(Routes::new());
    for i in 0..FUNCTIONS {
        let h = routes.upsert(&FunctionKey::new(&format!("fn-{i}"), "").unwrap());
        h.demand.begin(clock::now_us());
        h.demand.end(clock::now_us() + 5);
    }
    routes
}

/// Makes `share` of the functions active (a request begins and ends) since the last tick.
fn activity(routes: &Routes, share: usize) {
    for (i, h) in routes.snapshot().iter().enumerate() {
        if i % share == 0 {
            h.demand.begin(clock::now_us());
            h.demand.end(clock::now_us() + 5);
        }
    }
}

struct Figures {
    report_bytes: [usize; 2],
    json_bytes: [usize; 2],
}

fn bench(c: &mut Criterion, figures: &mut Figures) {
    let member = routes();
    let leader_routes = routes();
    for (case, share) in [(0, 1), (1, 10)] {
        let name = if share == 1 {
            "all active"
        } else {
            "a tenth active"
        };
        let book = ReportBook::default();
        let _ = Report::for_leader(&member, &book, "L", true);
        activity(&member, share);
        let sample = Report::for_leader(&member, &book, "L", false);
        figures.report_bytes[case] = wire::encode(&sample).len();
        figures.json_bytes[case] = serde_json::to_vec(&sample).unwrap().len();

        let mut g = c.benchmark_group(format!("cluster_tick/{name}"));
        g.bench_function("member: build and encode its report", |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    activity(&member, share);
                    let t = Instant::now();
                    let r = Report::for_leader(&member, &book, "L", false);
                    black_box(wire::encode(&r));
                    spent += t.elapsed();
                }
                spent
            })
        });
        // The leader: decode and fold in 49 reports, then observe the sum once.
        let demand = ClusterDemand::new(leader_routes.clone(), Duration::from_secs(3600));
        let names: Vec<String> = (0..MEMBERS).map(|i| format!("m{i}:8080")).collect();
        demand.set_members(names.clone());
        let full = wire::encode(&Report::local(&member));
        for n in &names {
            demand.apply(n, wire::decode(&full).unwrap());
        }
        let bytes = wire::encode(&sample);
        let mut out = Vec::with_capacity(FUNCTIONS);
        g.bench_function("leader: 49 reports in, the sum observed", |b| {
            b.iter(|| {
                for n in &names {
                    let r = wire::decode(&bytes).unwrap();
                    demand.apply(n, r);
                }
                out.clear();
                demand.observe(&mut out);
                black_box(out.len())
            })
        });
        g.finish();
    }
    // Baseline: a gateway alone observing its own functions.
    let alone = ClusterDemand::new(leader_routes, Duration::from_secs(3600));
    let mut out = Vec::with_capacity(FUNCTIONS);
    c.bench_function("cluster_tick/baseline: a gateway alone observes", |b| {
        b.iter(|| {
            out.clear();
            alone.observe(&mut out);
            black_box(out.len())
        })
    });
}

fn all(c: &mut Criterion) {
    let mut figures = Figures {
        report_bytes: [0; 2],
        json_bytes: [0; 2],
    };
    bench(c, &mut figures);
    println!();
    println!(
        "cluster tick at {} gateways x {FUNCTIONS} functions:",
        MEMBERS + 1
    );
    for (i, name) in ["all active", "a tenth active"].iter().enumerate() {
        let b = figures.report_bytes[i];
        println!(
            "  {name}: {b} bytes per member report ({} as JSON), {} KiB in at the leader per tick",
            figures.json_bytes[i],
            b * MEMBERS / 1024
        );
    }
    println!("  (times per tick: the criterion lines above)");
}

criterion_group!(benches, all);
criterion_main!(benches);
