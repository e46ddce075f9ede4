//! The async enqueue case's baseline (`loadtest/run --async`, row `jetstream-raw`): what
//! JetStream itself does per durable publish, with nothing of faasgate in the way.
//!
//! Creates its own stream (`--stream`, default `jspub-bench`, subject `jspub.bench`) with the
//! settings of faasgate's `faasgate-async` (WorkQueue retention, file storage, `discard: new`,
//! a 2-minute duplicate window), then runs `--conns` publishers for `--duration` seconds:
//! each publishes a `--size`-byte message with a unique `Nats-Msg-Id` header (a 36-byte
//! UUID-like id, as a call id is) and awaits its publish ack before the next one. By default
//! the publishers share one connection (as a gateway's enqueues share its one connection, so
//! the client batches their writes); with `--conn-each` every publisher has a connection of
//! its own, as `nats bench js pub --clients N --batch 1` runs them and as wrk's connections
//! each carry one call at a time. Last, it deletes the stream, so the server's state is
//! as it found it. Prints one JSON line, the same fields as `loadtest/wrk/bench.lua`:
//! requests (acked publishes), duration (µs), errors, p50/p99/p99.9 latency (µs).
//!
//!     cargo run --release --example jspub -- --url nats://127.0.0.1:PORT \
//!         [--conns 64] [--conn-each] [--duration 5] [--size 1024] [--stream jspub-bench]
//!
//! Bounded: every publish and ack wait has a 10 s timeout, and the run stops at its deadline.
#![allow(clippy::unwrap_used)] // test and tool code: a failed unwrap is a failed run

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use hdrhistogram::Histogram;

const TIMEOUT: Duration = Duration::from_secs(10);

struct Args {
    url: String,
    conns: usize,
    conn_each: bool,
    duration: Duration,
    size: usize,
    stream: String,
}

fn args() -> Args {
    let mut a = Args {
        url: "nats://127.0.0.1:4222".into(),
        conns: 64,
        conn_each: false,
        duration: Duration::from_secs(5),
        size: 1024,
        stream: "jspub-bench".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().unwrap_or_else(|| panic!("{name} needs a value"));
        match arg.as_str() {
            "--url" => a.url = value("--url"),
            "--conns" => a.conns = value("--conns").parse().expect("--conns N"),
            "--duration" => {
                a.duration =
                    Duration::from_secs_f64(value("--duration").parse().expect("--duration S"))
            }
            "--conn-each" => a.conn_each = true,
            "--size" => a.size = value("--size").parse().expect("--size BYTES"),
            "--stream" => a.stream = value("--stream"),
            other => panic!("unknown argument {other:?}"),
        }
    }
    a
}

/// A 36-byte id like a call id (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`), unique per message.
fn msg_id() -> String {
    let (hi, lo) = (fastrand::u64(..), fastrand::u64(..));
    let h = format!("{hi:016x}{lo:016x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn main() {
    let a = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(a));
}

async fn connect(url: &str) -> (async_nats::Client, jetstream::Context) {
    let client = async_nats::ConnectOptions::new()
        .name("jspub")
        .connection_timeout(TIMEOUT)
        .connect(url)
        .await
        .expect("connect to nats");
    let mut js = jetstream::new(client.clone());
    js.set_timeout(TIMEOUT);
    (client, js)
}

async fn run(a: Args) {
    let (client, js) = connect(&a.url).await;
    let subject = format!("{}.bench", a.stream.replace('-', "_"));
    // Left over from a run that did not finish: start empty.
    let _ = js.delete_stream(&a.stream).await;
    js.create_stream(stream::Config {
        name: a.stream.clone(),
        subjects: vec![subject.clone()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::New,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .expect("create the stream");

    let payload = Bytes::from(vec![b'x'; a.size]);
    let errors = Arc::new(AtomicU64::new(0));
    // Connected before the clock starts: the run measures publishes, not handshakes.
    let mut own = Vec::new();
    let mut publishers = Vec::with_capacity(a.conns);
    for _ in 0..a.conns {
        publishers.push(if a.conn_each {
            let (c, js) = connect(&a.url).await;
            own.push(c);
            js
        } else {
            js.clone()
        });
    }
    let start = Instant::now();
    let deadline = start + a.duration;
    let mut tasks = Vec::with_capacity(a.conns);
    for js in publishers {
        let (subject, payload, errors) = (subject.clone(), payload.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let mut headers = HeaderMap::new();
                headers.insert("Nats-Msg-Id", msg_id().as_str());
                let acked = tokio::time::timeout(TIMEOUT, async {
                    js.publish_with_headers(subject.clone(), headers, payload.clone())
                        .await
                        .map_err(|e| e.to_string())?
                        .await
                        .map_err(|e| e.to_string())
                })
                .await;
                match acked {
                    Ok(Ok(ack)) if !ack.duplicate => {
                        h.saturating_record(t0.elapsed().as_micros() as u64);
                    }
                    other => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("jspub: publish failed: {other:?}");
                        }
                    }
                }
            }
            h
        }));
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for t in tasks {
        all.add(t.await.unwrap()).unwrap();
    }
    let elapsed = start.elapsed();
    drop(own);
    let stored = js
        .get_stream(&a.stream)
        .await
        .map_or(0, |s| s.cached_info().state.messages);
    if let Err(e) = js.delete_stream(&a.stream).await {
        eprintln!("jspub: cannot delete stream {}: {e}", a.stream);
    }
    client.flush().await.ok();
    eprintln!(
        "jspub: {} publishes acked, {} stored in {} ({} publishers on {} connection(s), {} B each)",
        all.len(),
        stored,
        a.stream,
        a.conns,
        if a.conn_each { a.conns } else { 1 },
        a.size
    );
    // A publish acked and not stored would be a lost message: count it as an error.
    let errors = errors.load(Ordering::Relaxed) + all.len().saturating_sub(stored);
    println!(
        "{{\"requests\":{},\"duration_us\":{},\"errors\":{},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{}}}",
        all.len(),
        elapsed.as_micros(),
        errors,
        all.value_at_quantile(0.50),
        all.value_at_quantile(0.99),
        all.value_at_quantile(0.999)
    );
}
