//! The data plane's hot-path choices, each beside its baseline in the same run .
//!
//! Every group ends by printing `ratio <ours> / <baseline>` from criterion's own estimates
//! (`target/criterion/<group>/.../new/estimates.json`), so the decision reads off one run on
//! whatever machine ran it. Results and decisions are recorded in the module docs of
//! `dataplane::table`, `dataplane::balance`, `metrics::histogram`, and in `benches/README.md`.
//!
//!     cargo bench --bench dataplane               # all groups
//!     cargo bench --bench dataplane -- p2c_pick   # one group
#![allow(clippy::unwrap_used)] // test and tool code: a failed unwrap is a failed run

#[path = "../tests/support/inproc.rs"]
mod inproc;

use std::collections::HashMap;
use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use faasgate::dataplane::forward::Invocation;
use faasgate::dataplane::{balance, FunctionHandle, Replica, Routes};
use faasgate::metrics::LatencyHistogram;
use faasgate::model::names::{FunctionKey, KeyRef};
use faasgate::sys::clock;
use http::Method;
use tower::ServiceExt;

const THREADS: usize = 4;

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .configure_from_args()
}

/// Prints the ratio of two benchmarks' mean times, read from criterion's estimates.
fn ratio(group: &str, ours: &str, baseline: &str) {
    let mean = |id: &str| -> Option<f64> {
        let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
        let path = format!("{dir}/criterion/{group}/{id}/new/estimates.json");
        let text = std::fs::read_to_string(path).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["mean"]["point_estimate"].as_f64()
    };
    match (mean(ours), mean(baseline)) {
        (Some(a), Some(b)) => println!(
            "ratio {group}: {ours} / {baseline} = {:.3} ({:.1} ns vs {:.1} ns)",
            a / b,
            a,
            b
        ),
        _ => println!("ratio {group}: {ours} / {baseline}: no estimates (filtered out?)"),
    }
}

fn keys(n: usize) -> Vec<FunctionKey> {
    (0..n)
        .map(|i| FunctionKey::new(&format!("fn-{i:06}"), "").expect("valid name"))
        .collect()
}

// --- route lookup ------------------------------------------------------------------------

/// Lookup by name from the request path: our sharded ArcSwap table with a borrowed key vs a
/// `RwLock<HashMap<String, _>>` keyed by `name.namespace`. Flat cost from 1 to 100k is the
/// claim.
fn route_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_lookup");
    for n in [1usize, 1_000, 100_000] {
        let keys = keys(n);
        let routes = Routes::new();
        let mut locked: HashMap<String, Arc<FunctionHandle>> = HashMap::new();
        for k in &keys {
            let h = routes.upsert(k);
            locked.insert(k.to_string(), h);
        }
        let locked = RwLock::new(locked);
        // Names as a request path carries them, visited in a scattered order.
        let names: Vec<String> = (0..1024)
            .map(|i| keys[(i * 7919) % n].name().to_string())
            .collect();
        let full: Vec<String> = (0..1024)
            .map(|i| keys[(i * 7919) % n].to_string())
            .collect();
        let mut i = 0usize;
        g.bench_with_input(BenchmarkId::new("arcswap", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) & 1023;
                black_box(routes.get(KeyRef::parse_segment(&names[i], "")))
            })
        });
        g.bench_with_input(BenchmarkId::new("rwlock_hashmap", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) & 1023;
                black_box(locked.read().unwrap().get(full[i].as_str()).cloned())
            })
        });
    }
    // The same lookups from THREADS threads at once (1,000 functions): where a shared
    // reader count makes the RwLock's cache line bounce between cores.
    let n = 1_000;
    let keys = Arc::new(keys(n));
    let routes = Arc::new(Routes::new());
    let mut map = HashMap::new();
    for k in keys.iter() {
        map.insert(k.to_string(), routes.upsert(k));
    }
    let locked = Arc::new(RwLock::new(map));
    g.bench_with_input(BenchmarkId::new("arcswap_contended", n), &n, |b, _| {
        b.iter_custom(|iters| {
            threaded(iters, |per| {
                let (routes, keys) = (routes.clone(), keys.clone());
                move || {
                    for i in 0..per as usize {
                        let k = &keys[(i * 7919) % n];
                        black_box(routes.get(KeyRef::parse_segment(k.name(), "")));
                    }
                }
            })
        })
    });
    let full: Arc<Vec<String>> = Arc::new(keys.iter().map(|k| k.to_string()).collect());
    g.bench_with_input(
        BenchmarkId::new("rwlock_hashmap_contended", n),
        &n,
        |b, _| {
            b.iter_custom(|iters| {
                threaded(iters, |per| {
                    let (locked, full) = (locked.clone(), full.clone());
                    move || {
                        for i in 0..per as usize {
                            let k = &full[(i * 7919) % n];
                            black_box(locked.read().unwrap().get(k.as_str()).cloned());
                        }
                    }
                })
            })
        },
    );
    g.finish();
    ratio(
        "route_lookup",
        "arcswap_contended/1000",
        "rwlock_hashmap_contended/1000",
    );
    for n in [1, 1_000, 100_000] {
        ratio(
            "route_lookup",
            &format!("arcswap/{n}"),
            &format!("rwlock_hashmap/{n}"),
        );
    }
    ratio("route_lookup", "arcswap/100000", "arcswap/1");
}

/// One route change (deploy or delete) with 10,000 functions: our sharded table vs one
/// immutable map copied whole per change (the previous design).
fn route_update(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_update");
    let n = 10_000;
    let keys = keys(n);
    let routes = Routes::new();
    let whole: ArcSwap<hashbrown::HashMap<FunctionKey, Arc<FunctionHandle>>> = ArcSwap::default();
    let mut map = hashbrown::HashMap::new();
    for k in &keys {
        map.insert(k.clone(), routes.upsert(k));
    }
    whole.store(Arc::new(map));
    let extra = FunctionKey::new("churn", "").unwrap();
    g.bench_with_input(BenchmarkId::new("sharded", n), &n, |b, _| {
        b.iter(|| {
            routes.upsert(&extra);
            routes.remove(&extra)
        })
    });
    g.bench_with_input(BenchmarkId::new("whole_map_copy", n), &n, |b, _| {
        b.iter(|| {
            let mut next = hashbrown::HashMap::clone(&whole.load());
            next.insert(extra.clone(), Arc::new(FunctionHandle::new(extra.clone())));
            whole.store(Arc::new(next));
            let mut next = hashbrown::HashMap::clone(&whole.load());
            let removed = next.remove(&extra);
            whole.store(Arc::new(next));
            removed
        })
    });
    g.finish();
    ratio("route_update", "sharded/10000", "whole_map_copy/10000");
}

// --- p2c pick under contention -----------------------------------------------------------

/// Picks (and counts as pending, then completes) from `THREADS` tasks at once on a 2-worker
/// runtime: our `&self` p2c over the published snapshot vs round robin on a shared counter
/// vs tower's `p2c::Balance` (which needs `&mut self`) shared through a `Buffer`.
fn p2c_pick(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let replicas: Vec<Arc<Replica>> = (0..8)
        .map(|i| {
            Replica::new(
                format!("r{i}"),
                SocketAddr::from(([127, 0, 0, 1], 9000 + i)),
            )
        })
        .collect();
    let routes = Arc::new(Routes::new());
    let handle = routes.upsert(&FunctionKey::new("f", "").unwrap());
    handle.publish(faasgate::dataplane::FunctionState {
        replicas: replicas.clone().into(),
        desired: 8,
        cold_start_replicas: 1,
        scale: Default::default(),
    });
    let tasks = 64usize;
    let mut g = c.benchmark_group("p2c_pick");

    g.bench_function("p2c_snapshot", |b| {
        b.iter_custom(|iters| {
            let per = iters.div_ceil(tasks as u64);
            rt.block_on(async {
                let start = Instant::now();
                let joins: Vec<_> = (0..tasks)
                    .map(|_| {
                        let handle = handle.clone();
                        tokio::spawn(async move {
                            for _ in 0..per {
                                let state = handle.state();
                                let picked = balance::pick(&state.replicas, clock::now_ms())
                                    .expect("replicas")
                                    .start();
                                drop(state);
                                black_box(&picked);
                            }
                        })
                    })
                    .collect();
                for j in joins {
                    j.await.unwrap();
                }
                start.elapsed()
            })
        })
    });

    let rr = Arc::new(AtomicUsize::new(0));
    g.bench_function("round_robin", |b| {
        b.iter_custom(|iters| {
            let per = iters.div_ceil(tasks as u64);
            rt.block_on(async {
                let start = Instant::now();
                let joins: Vec<_> = (0..tasks)
                    .map(|_| {
                        let (handle, rr) = (handle.clone(), rr.clone());
                        tokio::spawn(async move {
                            for _ in 0..per {
                                let state = handle.state();
                                let i = rr.fetch_add(1, Ordering::Relaxed) % state.replicas.len();
                                let picked = state.replicas[i].start();
                                drop(state);
                                black_box(&picked);
                            }
                        })
                    })
                    .collect();
                for j in joins {
                    j.await.unwrap();
                }
                start.elapsed()
            })
        })
    });

    let buffer = rt.block_on(async {
        let services: Vec<_> = (0..8)
            .map(|_| {
                tower::load::PendingRequests::new(
                    tower::service_fn(|_: ()| async { Ok::<_, Infallible>(()) }),
                    tower::load::CompleteOnResponse::default(),
                )
            })
            .collect();
        let balance =
            tower::balance::p2c::Balance::new(tower::discover::ServiceList::new(services));
        tower::buffer::Buffer::new(balance, 1024)
    });
    g.bench_function("tower_balance_buffer", |b| {
        b.iter_custom(|iters| {
            let per = iters.div_ceil(tasks as u64);
            rt.block_on(async {
                let start = Instant::now();
                let joins: Vec<_> = (0..tasks)
                    .map(|_| {
                        let mut svc = buffer.clone();
                        tokio::spawn(async move {
                            for _ in 0..per {
                                let r = svc.ready().await.expect("ready").call(()).await;
                                r.expect("call");
                            }
                        })
                    })
                    .collect();
                for j in joins {
                    j.await.unwrap();
                }
                start.elapsed()
            })
        })
    });
    g.finish();
    ratio("p2c_pick", "p2c_snapshot", "round_robin");
    ratio("p2c_pick", "p2c_snapshot", "tower_balance_buffer");
}

use tower::Service;

// --- latency recording -------------------------------------------------------------------

/// Recording one latency from `THREADS` threads into one function's histogram: our atomic
/// HDR-layout buckets vs a shared `Mutex<hdrhistogram::Histogram>` vs per-thread HDR
/// recorders (no sharing at all; the lower bound, before any merge cost).
fn latency_record(c: &mut Criterion) {
    let mut g = c.benchmark_group("latency_record");
    let ours = Arc::new(LatencyHistogram::default());
    let locked = Arc::new(Mutex::new(
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 1 << 38, 2).unwrap(),
    ));
    let value = |i: u64| Duration::from_micros(100 + (i * 37) % 5000);
    g.bench_function("atomic_buckets", |b| {
        b.iter_custom(|iters| {
            threaded(iters, |per| {
                let ours = ours.clone();
                move || {
                    for i in 0..per {
                        ours.record(value(i));
                    }
                }
            })
        })
    });
    g.bench_function("mutex_hdrhistogram", |b| {
        b.iter_custom(|iters| {
            threaded(iters, |per| {
                let locked = locked.clone();
                move || {
                    for i in 0..per {
                        let _ = locked.lock().unwrap().record(value(i).as_micros() as u64);
                    }
                }
            })
        })
    });
    g.bench_function("per_thread_hdrhistogram", |b| {
        b.iter_custom(|iters| {
            threaded(iters, |per| {
                move || {
                    let mut h =
                        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 1 << 38, 2).unwrap();
                    for i in 0..per {
                        let _ = h.record(value(i).as_micros() as u64);
                    }
                    black_box(h.len());
                }
            })
        })
    });
    g.finish();
    ratio("latency_record", "atomic_buckets", "mutex_hdrhistogram");
    ratio(
        "latency_record",
        "atomic_buckets",
        "per_thread_hdrhistogram",
    );
}

/// Runs `THREADS` threads doing `iters / THREADS` operations each; returns the wall time.
fn threaded<F, W>(iters: u64, make: F) -> Duration
where
    F: Fn(u64) -> W,
    W: FnOnce() + Send + 'static,
{
    let per = iters.div_ceil(THREADS as u64);
    let work: Vec<W> = (0..THREADS).map(|_| make(per)).collect();
    let start = Instant::now();
    let joins: Vec<_> = work.into_iter().map(std::thread::spawn).collect();
    for j in joins {
        j.join().unwrap();
    }
    start.elapsed()
}

// --- demand accounting -------------------------------------------------------------------

/// The whole per-request accounting of one invocation (arrival, in-flight, started, status
/// code counters and Prometheus buckets, latency histogram) from `THREADS` threads on one
/// hot function: our atomics vs the same counters behind one mutex.
fn demand_accounting(c: &mut Criterion) {
    #[derive(Default)]
    struct Locked {
        arrivals: u64,
        inflight: u64,
        started: u64,
        last_ms: u64,
        per_code: HashMap<u16, (u64, u64)>,
        hist: Vec<u64>,
    }
    let mut g = c.benchmark_group("demand_accounting");
    let handle = Arc::new(FunctionHandle::new(FunctionKey::new("hot", "").unwrap()));
    g.bench_function("atomics", |b| {
        b.iter_custom(|iters| {
            threaded(iters, |per| {
                let handle = handle.clone();
                move || {
                    for _ in 0..per {
                        let mut inv = Invocation::start(handle.clone());
                        inv.set_status(200);
                    }
                }
            })
        })
    });
    let locked = Arc::new(Mutex::new(Locked {
        hist: vec![0; 1216],
        ..Default::default()
    }));
    g.bench_function("mutex", |b| {
        b.iter_custom(|iters| {
            threaded(iters, |per| {
                let locked = locked.clone();
                move || {
                    for _ in 0..per {
                        let start = Instant::now();
                        {
                            let mut l = locked.lock().unwrap();
                            l.arrivals += 1;
                            l.inflight += 1;
                            l.started += 1;
                            l.last_ms = clock::now_ms();
                        }
                        let elapsed = start.elapsed();
                        let mut l = locked.lock().unwrap();
                        let e = l.per_code.entry(200).or_default();
                        e.0 += 1;
                        e.1 += elapsed.as_nanos() as u64;
                        let idx = (elapsed.as_micros() as usize).min(1215);
                        l.hist[idx] += 1;
                        l.inflight -= 1;
                    }
                }
            })
        })
    });
    g.finish();
    ratio("demand_accounting", "atomics", "mutex");
}

// --- proxy round trip --------------------------------------------------------------------

/// One request at a time over a keep-alive connection: through the in-process gateway (the
/// whole request path) to an upstream, vs straight to that upstream.
fn proxy_round_trip(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (upstream, gw, gw_hyper) = rt.block_on(async {
        let upstream = inproc::spawn_upstream().await;
        let routes = Arc::new(Routes::new());
        inproc::publish(&routes, "bench", &[upstream]);
        let any = ([127, 0, 0, 1], 0).into();
        (
            upstream,
            inproc::spawn_gateway_with(any, routes.clone(), true).await,
            // The same gateway with every request through hyper's server (the client side
            // before the byte-level loop, `api::conn`).
            inproc::spawn_gateway_with(any, routes, false).await,
        )
    });
    let mut g = c.benchmark_group("proxy_round_trip");
    for (name, addr, path) in [
        ("gateway", gw.addr, "/function/bench"),
        ("gateway_hyper", gw_hyper.addr, "/function/bench"),
        ("direct", upstream, "/"),
    ] {
        let mut client = rt.block_on(inproc::Client::connect(addr));
        g.bench_function(name, |b| {
            b.iter(|| rt.block_on(client.call(Method::GET, path, Bytes::new())))
        });
    }
    g.finish();
    ratio("proxy_round_trip", "gateway", "direct");
    ratio("proxy_round_trip", "gateway", "gateway_hyper");
    rt.block_on(async {
        gw.stop();
        gw_hyper.stop();
    });
}

criterion_group! {
    name = benches;
    config = config();
    targets = route_lookup, route_update, p2c_pick, latency_record, demand_accounting,
        proxy_round_trip
}
criterion_main!(benches);
