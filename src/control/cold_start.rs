//! Scale from zero: the control-plane side of holding requests.
//!
//! The data plane sends a function here (through an unbounded channel, once per cold period,
//! see `FunctionHandle::claim_cold_start`) when a request arrives and the function has no
//! replica desired. This task asks the provider for `max(1, com.openfaas.scale.min)`
//! replicas, retrying with backoff; held requests are served as soon as one replica is ready.
//! It never lowers a count: if something else scaled the function up meanwhile, it does nothing.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::control::cluster::Cluster;
use crate::control::events::{reason, ScaleEvents};
use crate::control::{Provider, ProviderError};
use crate::dataplane::FunctionHandle;

/// Scale calls tried per cold start before giving up (held requests then time out with 503).
pub(crate) const MAX_TRIES: u32 = 20;

/// How long a follower waits for the leader's scale from zero to show before it raises the
/// count itself.
pub(crate) const LEADER_WAKE_BOUND: Duration = Duration::from_secs(5);

pub(crate) fn spawn_cold_start(
    provider: Arc<dyn Provider>,
    events: Arc<ScaleEvents>,
    cluster: Arc<Cluster>,
    mut rx: mpsc::UnboundedReceiver<Arc<FunctionHandle>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(handle) = rx.recv().await {
            let provider = provider.clone();
            let events = events.clone();
            let cluster = cluster.clone();
            tokio::spawn(async move {
                if woken_by_leader(&cluster, &handle).await {
                    return;
                }
                scale_from_zero(provider.as_ref(), &events, &handle).await
            });
        }
    })
}

/// A follower asks the leader to scale the function from zero (one scale-up for every
/// gateway's held requests) and waits, bounded, for the count to move. `false`: this gateway
/// leads or is alone, or no leader answered, or the count did not move in time; the caller
/// then raises it itself (a scale from zero never lowers a count).
async fn woken_by_leader(cluster: &Cluster, handle: &FunctionHandle) -> bool {
    let Some((members, to_leader)) = cluster.leader_elsewhere() else {
        return false;
    };
    let body = bytes::Bytes::from(handle.key().to_string());
    let answer = to_leader
        .send(
            &members,
            http::Method::POST,
            "/system/cluster/wake",
            "text/plain",
            body,
        )
        .await;
    if !matches!(answer, Some((status, _)) if status == http::StatusCode::ACCEPTED) {
        tracing::info!(
            function = handle.label(),
            "no leader took the scale from zero; this gateway makes it"
        );
        return false;
    }
    // Every publish wakes the handle's waiters (held requests wait the same way).
    let deadline = tokio::time::Instant::now() + LEADER_WAKE_BOUND;
    loop {
        let notified = handle.ready_notify().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if handle.state().desired > 0 || handle.is_removed() {
            tracing::info!(function = handle.label(), "scaled from zero by the leader");
            return true;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            break;
        }
    }
    tracing::warn!(
        function = handle.label(),
        "the leader's scale from zero did not show; this gateway makes it"
    );
    false
}

async fn scale_from_zero(provider: &dyn Provider, events: &ScaleEvents, handle: &FunctionHandle) {
    let mut delay = Duration::from_millis(50);
    for attempt in 1..=MAX_TRIES {
        let state = handle.state_full();
        if state.desired > 0 || handle.is_removed() {
            // Claimed from a stale snapshot, or scaled up meanwhile: nothing to do; the next
            // cold period may claim again.
            handle.release_cold_start();
            return;
        }
        let target = state.cold_start_replicas.max(1);
        match provider.scale(handle.key(), target).await {
            Ok(()) => {
                events.record(handle.key(), 0, target, reason::COLD_START);
                tracing::info!(
                    function = handle.label(),
                    replicas = target,
                    "scaled from zero"
                );
                return;
            }
            Err(ProviderError::NotFound(_)) => return,
            Err(e) => {
                tracing::warn!(function = handle.label(), attempt, error = %e, "scale from zero failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
    handle.release_cold_start();
}
