//! Readiness probe of a discovered instance: `GET /_/health` on a connection of its own.
//!
//! The watchdog answers 200 once it accepts work. A probe never uses the data plane's pool
//! (it would take a connection a request could use) and is bounded by [`PROBE_TIMEOUT`].

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub(crate) const HEALTH_PATH: &str = "/_/health";
/// Bound on one probe, connect to status line.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// True when `addr` answers 200 to `GET /_/health` in time.
pub(crate) async fn probe(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, status_of(addr)).await,
        Ok(Some(200))
    )
}

async fn status_of(addr: SocketAddr) -> Option<u16> {
    let stream = TcpStream::connect(addr).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .ok()?;
    let driver = tokio::spawn(conn);
    let req = http::Request::get(HEALTH_PATH)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::USER_AGENT, "faasgate-discovery")
        .body(Empty::new())
        .ok()?;
    let status = sender
        .send_request(req)
        .await
        .ok()
        .map(|r| r.status().as_u16());
    drop(sender);
    driver.abort();
    status
}
