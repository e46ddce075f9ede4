//! The accept loop: HTTP/1.1 with keep-alive, a header read timeout, and graceful shutdown.
//!
//! `serve` runs until `shutdown` resolves, then stops accepting and lets in-flight requests
//! finish, bounded by `drain` (the gateway's `write_timeout`); connections still open then
//! are dropped.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use super::Gateway;
use crate::dataplane::forward::Peer;

pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    read_timeout: Duration,
    drain: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(read_timeout)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
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
                let peer = Peer::new(addr);
                let gw = gateway.clone();
                let svc = service_fn(move |req| {
                    let gw = gw.clone();
                    let peer = peer.clone();
                    async move { Ok::<_, Infallible>(gw.handle(req, &peer).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(?drain, "drain timed out; closing remaining connections");
    }
}
