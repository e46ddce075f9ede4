//! The accept loop: each connection goes to `conn` (the invocation loop, which hands other
//! requests to hyper), with a header read timeout and graceful shutdown.
//!
//! `serve` runs until `shutdown` resolves, then stops accepting, tells every connection to
//! finish the request in hand and close, and waits for them, bounded by `drain` (the
//! gateway's `write_timeout`); connections still open then are dropped.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{conn, Gateway};

pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    read_timeout: Duration,
    drain: Duration,
    shutdown: impl Future<Output = ()>,
) {
    // Every connection task holds a receiver: `closed` resolves when the last one ends.
    let (stopping, watch) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
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
                tokio::spawn(conn::serve(stream, addr, gw, read_timeout, watch));
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
