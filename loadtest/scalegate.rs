//! The gateway's request path with 10,000 functions deployed and the route table changing
//! 1,000 times a second: the scale check, run by `loadtest/run`.
//!
//! Serves the real path (`api::server::serve` -> `Gateway::handle` -> forwarder) over a route
//! table published directly (the cheap, honest way to deploy 10,000 functions: no process
//! per function; see `tests/support/inproc.rs`). Every function, and `bench`, has one replica
//! at `--upstream`. Prints `listening on <addr>`, then the resident memory before and after
//! deploying the functions. SIGUSR1 starts the churn, SIGUSR2 stops it and prints what it
//! did: each update deploys or removes a function (a route-table change, alternating, so the
//! table stays at N) and republishes one function's replica set. It also prints how many
//! requests each of the 3 replicas of `spread` answered since the last SIGUSR2 (three
//! in-process counting upstreams: the p2c spread check).
//!
//!     cargo run --release --example scalegate -- --upstream 127.0.0.1:PORT \
//!         [--listen 127.0.0.1:0] [--functions 10000] [--churn 1000]
#![allow(clippy::unwrap_used)] // test and tool code: a failed unwrap is a failed run

#[path = "../tests/support/inproc.rs"]
mod inproc;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use faasgate::dataplane::{FunctionState, Replica, Routes};
use faasgate::model::names::FunctionKey;
use tokio::signal::unix::{signal, SignalKind};

fn main() -> std::io::Result<()> {
    let mut listen: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut upstream: Option<SocketAddr> = None;
    let mut functions = 10_000usize;
    let mut churn = 1_000u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .unwrap_or_else(|| panic!("{name} needs a value"))
        };
        match arg.as_str() {
            "--listen" => listen = value("--listen").parse().expect("--listen ADDR"),
            "--upstream" => upstream = Some(value("--upstream").parse().expect("--upstream ADDR")),
            "--functions" => functions = value("--functions").parse().expect("--functions N"),
            "--churn" => churn = value("--churn").parse().expect("--churn PER_SECOND"),
            other => panic!("unknown argument {other:?}"),
        }
    }
    let upstream = upstream.expect("--upstream ADDR is required");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(listen, upstream, functions, churn))
}

async fn run(
    listen: SocketAddr,
    upstream: SocketAddr,
    functions: usize,
    churn: u64,
) -> std::io::Result<()> {
    let routes = Arc::new(Routes::new());
    let gw = inproc::spawn_gateway_on(listen, routes.clone()).await;
    inproc::publish(&routes, "bench", &[upstream]);
    let mut spread = Vec::new();
    let mut spread_addrs = Vec::new();
    for _ in 0..3 {
        let (addr, count) = inproc::spawn_counting_upstream().await;
        spread_addrs.push(addr);
        spread.push(count);
    }
    inproc::publish(&routes, "spread", &spread_addrs);
    let before = rss_kib();
    for i in 0..functions {
        inproc::publish(&routes, &format!("fn-{i:05}"), &[upstream]);
    }
    let after = rss_kib();
    println!("listening on {}", gw.addr);
    println!(
        "memory: functions={functions} rss_before_kib={before} rss_after_kib={after} \
         bytes_per_function={}",
        (after.saturating_sub(before) * 1024) / functions.max(1) as u64
    );
    std::io::stdout().flush()?;

    let on = Arc::new(AtomicBool::new(false));
    let worker = {
        let (routes, on) = (routes.clone(), on.clone());
        std::thread::Builder::new()
            .name("churn".into())
            .spawn(move || churn_loop(&routes, &on, upstream, functions, churn))?
    };
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    let mut term = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = usr1.recv() => on.store(true, Ordering::Release),
            _ = usr2.recv() => {
                on.store(false, Ordering::Release);
                let counts: Vec<String> = spread
                    .iter()
                    .map(|c| c.swap(0, Ordering::Relaxed).to_string())
                    .collect();
                println!("spread: counts={}", counts.join(","));
                std::io::stdout().flush()?;
            }
            _ = term.recv() => break,
        }
    }
    drop(worker);
    Ok(())
}

/// Applies `per_second` updates a second while `on`; prints a summary each time it stops.
fn churn_loop(
    routes: &Routes,
    on: &AtomicBool,
    upstream: SocketAddr,
    functions: usize,
    per_second: u64,
) {
    let period = Duration::from_nanos(1_000_000_000 / per_second.max(1));
    let mut n = 0u64;
    loop {
        while !on.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let (started, mut done, mut busy) = (Instant::now(), 0u64, Duration::ZERO);
        let mut next = started;
        while on.load(Ordering::Acquire) {
            let t = Instant::now();
            let key = FunctionKey::new(&format!("churn-{}", n / 2), "").expect("valid name");
            if n.is_multiple_of(2) {
                let h = routes.upsert(&key);
                h.publish(state(upstream, "churn"));
            } else {
                routes.remove(&key);
            }
            let victim = format!("fn-{:05}", n as usize % functions.max(1));
            if let Some(h) = routes.get(FunctionKey::new(&victim, "").expect("valid").as_ref()) {
                h.publish(state(upstream, &victim));
            }
            busy += t.elapsed();
            n += 1;
            done += 1;
            next += period;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "churn: updates={done} seconds={secs:.2} rate={:.0} busy_us_per_update={:.1} \
             functions={}",
            done as f64 / secs,
            busy.as_secs_f64() * 1e6 / done.max(1) as f64,
            routes.len()
        );
        let _ = std::io::stdout().flush();
    }
}

fn state(upstream: SocketAddr, name: &str) -> FunctionState {
    FunctionState {
        replicas: vec![Replica::new(format!("{name}-0"), upstream)].into(),
        desired: 1,
        cold_start_replicas: 1,
        scale: Default::default(),
    }
}

/// Resident set size of this process, in KiB (`VmRSS` of /proc/self/status).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
