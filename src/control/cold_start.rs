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

use crate::control::events::{reason, ScaleEvents};
use crate::control::{Provider, ProviderError};
use crate::dataplane::FunctionHandle;

/// Scale calls tried per cold start before giving up (held requests then time out with 503).
pub(crate) const MAX_TRIES: u32 = 20;

pub(crate) fn spawn_cold_start(
    provider: Arc<dyn Provider>,
    events: Arc<ScaleEvents>,
    mut rx: mpsc::UnboundedReceiver<Arc<FunctionHandle>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(handle) = rx.recv().await {
            let provider = provider.clone();
            let events = events.clone();
            tokio::spawn(async move { scale_from_zero(provider.as_ref(), &events, &handle).await });
        }
    })
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
