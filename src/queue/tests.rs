//! The embedded store against the [`CallStore`] contract: order, leases, retries, the
//! dead-letter list, reopening, group commit and the bound.

use std::sync::Arc;

use bytes::Bytes;

use super::*;

fn call(function: &str, n: u64) -> QueuedCall {
    QueuedCall {
        call_id: format!("call-{n}"),
        function: function.to_string(),
        method: "POST".into(),
        path: "/sub".into(),
        query: "a=1".into(),
        headers: vec![("content-type".into(), Bytes::from_static(b"text/plain"))],
        body: Bytes::from(format!("body {n}")),
        callback_url: None,
        arrived_unix_ms: 1_000 + n,
    }
}

fn ids(taken: &[Taken]) -> Vec<String> {
    taken.iter().map(|t| t.call.call_id.clone()).collect()
}

#[tokio::test]
async fn calls_go_out_in_order_once_each_and_acks_forget_them() {
    let dir = tempfile::tempdir().unwrap();
    let s = EmbeddedStore::open(dir.path(), 100).unwrap();
    for n in 0..5 {
        s.enqueue(call("f.openfaas-fn", n).encoded()).await.unwrap();
    }
    s.enqueue(call("g.openfaas-fn", 9).encoded()).await.unwrap();
    let first = s.take("f.openfaas-fn", 2, 0).await.unwrap();
    assert_eq!(ids(&first), ["call-0", "call-1"]);
    assert_eq!(first[0].call, call("f.openfaas-fn", 0), "stored whole");
    assert_eq!(first[0].attempts, 0);
    // Leased calls are not handed out again.
    let rest = s.take("f.openfaas-fn", 10, 0).await.unwrap();
    assert_eq!(ids(&rest), ["call-2", "call-3", "call-4"]);
    assert!(s.take("f.openfaas-fn", 10, 0).await.unwrap().is_empty());
    let b = s.backlog();
    assert_eq!(b.len(), 2);
    assert_eq!(
        (b[0].function.as_str(), b[0].queued, b[0].leased),
        ("f.openfaas-fn", 5, 5)
    );
    assert_eq!((b[0].oldest_unix_ms, b[0].next_due_unix_ms), (1_000, None));
    assert_eq!(
        (b[1].queued, b[1].leased, b[1].next_due_unix_ms),
        (1, 0, Some(0))
    );
    for t in first.iter().chain(&rest) {
        s.ack(t.id).await.unwrap();
    }
    assert_eq!(s.backlog().len(), 1, "f is done");
}

#[tokio::test]
async fn a_retry_is_due_later_with_its_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let s = EmbeddedStore::open(dir.path(), 100).unwrap();
    s.enqueue(call("f", 0).encoded()).await.unwrap();
    s.enqueue(call("f", 1).encoded()).await.unwrap();
    let t = s.take("f", 1, 0).await.unwrap().remove(0);
    s.retry(t.id, 1, 5_000).await.unwrap();
    // Not due before 5 s: the next call goes first.
    assert_eq!(ids(&s.take("f", 5, 4_999).await.unwrap()), ["call-1"]);
    let again = s.take("f", 5, 5_000).await.unwrap();
    assert_eq!(ids(&again), ["call-0"]);
    assert_eq!((again[0].id, again[0].attempts), (t.id, 1));
}

#[tokio::test]
async fn dead_letters_are_listed_replayed_and_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let s = EmbeddedStore::open(dir.path(), 100).unwrap();
    for n in 0..3 {
        s.enqueue(call(if n == 2 { "g" } else { "f" }, n).encoded())
            .await
            .unwrap();
    }
    for f in ["f", "g"] {
        for t in s.take(f, 5, 0).await.unwrap() {
            s.bury(t.id, 10, 503, "no replica", 7_000).await.unwrap();
        }
    }
    assert!(s.backlog().is_empty());
    let counts = |n_f: u64, n_g: u64| {
        [("f", n_f), ("g", n_g)]
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(f, n)| (f.to_string(), n))
            .collect::<Vec<_>>()
    };
    assert_eq!(s.dead_counts(), counts(2, 1));
    // Counted again from the file on reopening.
    drop(s);
    let s = EmbeddedStore::open(dir.path(), 100).unwrap();
    assert_eq!(s.dead_counts(), counts(2, 1));
    let all = s.dead_letters(None).await.unwrap();
    assert_eq!(all.len(), 3);
    let f = s.dead_letters(Some("f")).await.unwrap();
    assert_eq!(f.len(), 2);
    assert_eq!(
        (
            f[0].call_id.as_str(),
            f[0].attempts,
            f[0].status,
            f[0].reason.as_str()
        ),
        ("call-0", 10, 503, "no replica")
    );
    assert_eq!((f[0].arrived_unix_ms, f[0].failed_unix_ms), (1_000, 7_000));
    // Replay: back in f's queue with its id, no attempt counted, the body intact.
    s.replay(f[0].id).await.unwrap();
    let back = s.take("f", 5, 0).await.unwrap();
    assert_eq!((back[0].id, back[0].attempts), (f[0].id, 0));
    assert_eq!(back[0].call, call("f", 0));
    assert_eq!(s.dead_counts(), counts(1, 1));
    // Drop.
    s.discard(f[1].id).await.unwrap();
    assert_eq!(s.dead_letters(Some("f")).await.unwrap().len(), 0);
    assert_eq!(s.dead_counts(), counts(0, 1));
    assert!(matches!(
        s.discard(f[1].id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.replay(12345).await,
        Err(StoreError::NotFound(12345))
    ));
}

#[tokio::test]
async fn reopening_hands_out_every_call_not_done_leased_ones_included() {
    let dir = tempfile::tempdir().unwrap();
    let leased_id;
    {
        let s = EmbeddedStore::open(dir.path(), 100).unwrap();
        for n in 0..4 {
            s.enqueue(call("f", n).encoded()).await.unwrap();
        }
        let t = s.take("f", 2, 0).await.unwrap();
        s.ack(t[0].id).await.unwrap();
        leased_id = t[1].id;
        s.retry(leased_id, 2, 9_000).await.unwrap();
    }
    let s = EmbeddedStore::open(dir.path(), 100).unwrap();
    let b = s.backlog();
    assert_eq!(b[0].queued, 3);
    let due = s.take("f", 10, 0).await.unwrap();
    assert_eq!(ids(&due), ["call-2", "call-3"]);
    let later = s.take("f", 10, 9_000).await.unwrap();
    assert_eq!((later[0].id, later[0].attempts), (leased_id, 2));
    // New ids keep growing past the old ones.
    let id = s.enqueue(call("f", 7).encoded()).await.unwrap();
    assert!(id > leased_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enqueues_share_commits_and_the_bound_holds() {
    let dir = tempfile::tempdir().unwrap();
    let s: Arc<EmbeddedStore> = EmbeddedStore::open(dir.path(), 300).unwrap();
    let before = s.commits();
    let tasks: Vec<_> = (0..400)
        .map(|n| {
            let s = s.clone();
            tokio::spawn(async move { s.enqueue(call("f", n).encoded()).await.map(|_| ()) })
        })
        .collect();
    let mut full = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => {}
            Err(StoreError::Full(_)) => full += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(full, 100, "400 at once against a bound of 300");
    let commits = s.commits() - before;
    assert!(commits < 300, "{commits} commits for 300 enqueues");
    eprintln!("queue: 300 concurrent enqueues in {commits} commits");
    assert!(matches!(
        s.enqueue(call("f", 300).encoded()).await,
        Err(StoreError::Full(300))
    ));
    // Room again once one is done.
    let t = s.take("f", 1, 0).await.unwrap();
    s.ack(t[0].id).await.unwrap();
    s.enqueue(call("f", 301).encoded()).await.unwrap();
}

#[tokio::test]
async fn an_enqueue_dropped_while_it_waits_keeps_the_bound_exact() {
    // A client gone mid-enqueue drops the future after the call went to the writer: the
    // call is stored and holds its place until acked, and no place is lost or counted twice.
    let dir = tempfile::tempdir().unwrap();
    let s: Arc<EmbeddedStore> = EmbeddedStore::open(dir.path(), 2).unwrap();
    {
        let mut dropped = Box::pin(s.enqueue(call("f", 1).encoded()));
        // Polled once (the call goes to the writer), then dropped unanswered.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(std::future::Future::poll(dropped.as_mut(), &mut cx).is_pending());
    }
    s.enqueue(call("f", 2).encoded()).await.unwrap();
    // Both stored: the bound of 2 is reached, and both are handed out.
    assert!(matches!(
        s.enqueue(call("f", 3).encoded()).await,
        Err(StoreError::Full(2))
    ));
    let taken = s.take("f", 10, u64::MAX).await.unwrap();
    assert_eq!(ids(&taken), ["call-1", "call-2"]);
    for t in &taken {
        s.ack(t.id).await.unwrap();
    }
    // Both places are free again.
    s.enqueue(call("f", 4).encoded()).await.unwrap();
    s.enqueue(call("f", 5).encoded()).await.unwrap();
    assert!(matches!(
        s.enqueue(call("f", 6).encoded()).await,
        Err(StoreError::Full(2))
    ));
}
