//! The replica health probe: `GET /_/health` over a fresh loopback connection.
//!
//! Owns nothing but the probe: one TCP connect, one HTTP/1 request, one status check, all
//! within [`PROBE_TIMEOUT`]. It uses its own connection (not the data plane's pool) so a probe
//! never takes a connection a request could use, and a stuck replica cannot stall it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub(crate) const HEALTH_PATH: &str = "/_/health";
/// Bound on one probe, connect to status line.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// True when the replica at `addr` answers `200` to `GET /_/health` in time.
pub(super) async fn probe(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, probe_inner(addr)).await,
        Ok(Ok(200))
    )
}

async fn probe_inner(addr: SocketAddr) -> Result<u16, Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let req = http::Request::get(HEALTH_PATH)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::USER_AGENT, "faasgate-health")
        .body(Empty::new())?;
    let result = sender.send_request(req).await;
    drop(sender);
    driver.abort();
    Ok(result?.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn serve_once(status: &'static str) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let resp = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn probe_reads_the_status() {
        assert!(probe(serve_once("200 OK").await).await);
        assert!(!probe(serve_once("503 Service Unavailable").await).await);
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert!(!probe(closed).await);
    }
}
