//! Async invocations on NATS JetStream (`--queue nats://`), with a real `nats-server -js` on
//! loopback: a call reaches its function whole, a repeated call id is stored once, a full
//! stream answers 429, failing calls are retried, buried, replayed and dropped; two gateways
//! share one queue and every accepted call survives a `kill -9` of one of them; a backlog in
//! the stream wakes and scales its function.

use crate::async_calls::{
    all_delivered, dead_letters, enqueue_many, lines, recorder, replay_then_drop, wait_lines,
    QUICK_RETRIES,
};
use crate::nats::NatsServer;
use crate::support;

use std::time::{Duration, Instant};

use support::Gateway;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_nats_a_call_is_delivered_once_per_id_and_failures_are_buried_replayed_and_dropped() {
    let nats = NatsServer::start();
    let gw = Gateway::start_with(
        &[
            &[
                "--no-auth",
                "--queue",
                &nats.url,
                "--async-max-inflight",
                "1",
            ],
            QUICK_RETRIES,
        ]
        .concat(),
        &[],
    );
    let dir = tempfile::tempdir().unwrap();
    let (f, log) = recorder(dir.path(), "rec", "false");
    let (broken, broken_log) = recorder(dir.path(), "broken", "true");
    for f in [f, broken] {
        assert_eq!(gw.deploy(f).await.status, 202);
    }
    gw.wait_available("rec", 1).await;
    gw.wait_available("broken", 1).await;

    // Method, sub-path, query and body arrive; the same call id twice is stored once.
    let r = gw
        .req_h(
            "PUT",
            "/async-function/rec/a/b?x=1",
            &[("x-call-id", "same")],
            "one",
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.header("x-call-id"), Some("same"));
    let again = gw
        .req_h(
            "PUT",
            "/async-function/rec",
            &[("x-call-id", "same")],
            "two",
        )
        .await;
    assert_eq!(again.status, 202, "{}", again.text());
    let r = gw
        .req_h("GET", "/async-function/rec", &[("x-call-id", "last")], "")
        .await;
    assert_eq!(r.status, 202);
    // One at a time, in order: once `last` is in, `same` had its only chance.
    let got = wait_lines(&log, 2).await;
    support::eventually(Duration::from_secs(10), "the last call", || {
        lines(&log).iter().any(|l| l.contains(" last "))
    })
    .await;
    let got_all = lines(&log);
    assert_eq!(got[0], "PUT /a/b x=1 same one", "{got_all:?}");
    assert_eq!(
        got_all.iter().filter(|l| l.contains(" same ")).count(),
        1,
        "a repeated call id is stored once: {got_all:?}"
    );

    // Retried, then buried with its attempts and last status.
    let r = gw
        .req_h(
            "POST",
            "/async-function/broken",
            &[("x-call-id", "bad")],
            "b",
        )
        .await;
    assert_eq!(r.status, 202);
    wait_lines(&broken_log, 3).await;
    let list = dead_letters(&gw, "broken", 1).await;
    let letter = &list[0];
    assert_eq!(letter["callId"], "bad");
    assert_eq!(letter["attempts"], 3);
    assert_eq!(letter["status"], 500);
    assert_eq!(letter["function"], "broken.openfaas-fn");
    let id = letter["id"].as_u64().unwrap();
    replay_then_drop(&gw, "broken", id, &broken_log).await;
}

/// The stream's bound (`--max-async-queue`) counts calls stored, those being delivered
/// included: past it the gateway answers 429 and keeps what it accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_nats_a_full_queue_answers_429_and_loses_nothing_it_accepted() {
    let nats = NatsServer::start();
    let gw = Gateway::start_with(
        &[
            "--no-auth",
            "--queue",
            &nats.url,
            "--max-async-queue",
            "3",
            "--async-max-inflight",
            "1",
        ],
        &[],
    );
    let dir = tempfile::tempdir().unwrap();
    // Each call takes a second: the first is running while the others wait.
    let (f, log) = recorder(dir.path(), "slow", "sleep 1; false");
    assert_eq!(gw.deploy(f).await.status, 202);
    gw.wait_available("slow", 1).await;
    let mut accepted = 0;
    let mut refused = None;
    for n in 0..6 {
        let r = gw
            .req_h(
                "POST",
                "/async-function/slow",
                &[("x-call-id", &format!("c{n}"))],
                "x",
            )
            .await;
        match r.status {
            202 => accepted += 1,
            429 => {
                refused = Some(r.text());
                break;
            }
            s => panic!("{s}: {}", r.text()),
        }
    }
    let refused = refused.expect("a fourth call while three are stored is refused");
    assert!(refused.contains("full"), "{refused}");
    assert_eq!(accepted, 3);
    let got = wait_lines(&log, 3).await;
    let ids: Vec<&str> = got.iter().filter_map(|l| l.split(' ').nth(3)).collect();
    assert_eq!(ids, ["c0", "c1", "c2"]);
}

/// Issue 14's NATS durability case: two gateways on one `nats-server`; calls enqueued at both;
/// one gateway SIGKILLed while they drain: the other delivers every call id at least once
/// (the dead gateway's running calls come back after the lease's 30 s). Duplicates are
/// counted and printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_the_nats_queue_and_every_call_survives_a_kill_9_of_one() {
    const CALLS: usize = 2_000;
    let nats = NatsServer::start();
    let args = [
        "--no-auth",
        "--queue",
        &nats.url,
        "--async-max-inflight",
        "8",
    ];
    let a = Gateway::start_with(&args, &[]);
    let b = Gateway::start_with(&args, &[]);
    let dir = tempfile::tempdir().unwrap();
    // Both gateways run the function; every delivery is one line in the same log.
    let (f, log) = recorder(dir.path(), "sink", "false");
    for gw in [&a, &b] {
        assert_eq!(gw.deploy(f.clone()).await.status, 202);
        gw.wait_available("sink", 1).await;
    }
    // Half the clients enqueue at each gateway.
    enqueue_many(&[a.addr, b.addr], 16, "sink", "n-", CALLS).await;
    support::eventually(Duration::from_secs(120), "deliveries under way", || {
        lines(&log).len() >= 200
    })
    .await;
    let mut a = a;
    support::signal(a.pid(), libc::SIGKILL);
    let killed_at = lines(&log).len();
    let _ = a.stop();
    assert!(killed_at < CALLS, "drained before the kill ({killed_at})");

    let duplicates = all_delivered(&log, "n-", CALLS, Duration::from_secs(240)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = b.get("/metrics").await.text();
        let queued = support::metric_value(
            &m,
            r#"faasgate_async_queued{function_name="sink.openfaas-fn"}"#,
        );
        if queued.is_none() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stream stays non-empty: {queued:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "async durability (NATS, 2 gateways): {CALLS} accepted at both, gateway A SIGKILLed \
         after {killed_at} deliveries, all {CALLS} delivered, {duplicates} delivered twice"
    );
}

/// The backlog case of `async_calls`, with the calls in JetStream: the stream's pending
/// count per function is the demand that wakes and scales it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_nats_a_backlog_wakes_a_function_scales_it_up_drains_and_lets_it_come_down() {
    let nats = NatsServer::start();
    crate::async_calls::backlog_scales_a_function(&["--queue", &nats.url]).await;
}
