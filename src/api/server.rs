//! The accept loop: each connection goes to `conn` (the invocation loop, which hands other
//! requests to hyper), with a header read timeout and graceful shutdown.
//!
//! `serve` runs until `shutdown` resolves, then stops accepting, tells every connection to
//! finish the request in hand and close, and waits for them, bounded by `drain` (the
//! gateway's `write_timeout`); connections still open then are dropped.
//!
//! At most `max_connections` client connections are served at once: at the limit the loop
//! stops accepting until one closes, so further clients wait in the kernel's listen backlog
//! (and beyond it their connects are refused or time out, as the kernel decides), and the
//! gateway's memory and descriptors stay bounded whatever clients do. Open connections are
//! exported as `faasgate_client_connections`.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use super::Gateway;
use crate::dataplane::conn;

static OPEN: AtomicU64 = AtomicU64::new(0);

/// One open connection in [`OPEN`], for as long as it lives (a panicking connection task
/// drops it too).
struct Open;

impl Open {
    fn count() -> Self {
        OPEN.fetch_add(1, Ordering::Relaxed);
        Open
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Client connections open now, in this process.
pub(crate) fn open_connections() -> u64 {
    OPEN.load(Ordering::Relaxed)
}

/// Serves `listener` with at most [`crate::config::DEFAULT_MAX_CONNECTIONS`] connections.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    read_timeout: Duration,
    drain: Duration,
    shutdown: impl Future<Output = ()>,
) {
    serve_limited(
        listener,
        gateway,
        read_timeout,
        drain,
        crate::config::DEFAULT_MAX_CONNECTIONS,
        shutdown,
    )
    .await
}

/// Serves `listener` with at most `max_connections` client connections at once.
pub async fn serve_limited(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    read_timeout: Duration,
    drain: Duration,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) {
    // Every connection task holds a receiver: `closed` resolves when the last one ends.
    let (stopping, watch) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        // A free slot before the next accept: at the limit, clients wait in the backlog.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, addr) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let gw = gateway.clone();
                let watch = watch.clone();
                let open = Open::count();
                tokio::spawn(async move {
                    conn::serve(stream, addr, gw, read_timeout, watch).await;
                    drop((open, slot));
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    drop(watch);
    tracing::info!("shutting down: draining in-flight requests");
    stopping.send_replace(true);
    if tokio::time::timeout(drain, stopping.closed())
        .await
        .is_err()
    {
        tracing::warn!(?drain, "drain timed out; closing remaining connections");
    }
}
