//! HTTP mode: reverse-proxy every request to the function's own HTTP server (`upstream_url`).
//!
//! Owns: request/response rewriting and the upstream keep-alive connections. Invariants:
//! method, path (after `upstream_url`'s own path prefix), raw query, end-to-end headers and
//! status pass through unchanged (a 302 reaches the client unfollowed); hop-by-hop headers
//! (and those named in `Connection`) are dropped both ways; bodies stream both ways (the
//! server's `Incoming` goes upstream as is). Connections come from
//! `super::pool::Pool` and go back only when the response body has ended, so a
//! connection carries one request at a time. A request that a reused connection could not
//! send comes back untouched and is retried once on a fresh connection; nothing is retried
//! after it was sent. The upstream address is resolved once, at start.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::net::TcpStream;

use super::pool::{Checkout, Pool, Sender};
use super::response::{CallError, RespBody};
use super::WatchdogError;
use crate::dataplane::body::UpstreamBody;
use crate::dataplane::forward::strip_hop_by_hop;

/// How often to probe the upstream port until it accepts connections.
pub const READY_POLL: Duration = Duration::from_millis(20);
/// How long the function may take to start listening.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The reverse proxy to the function's HTTP server.
pub struct HttpProxy {
    addr: SocketAddr,
    /// `upstream_url`'s authority, sent as `Host`.
    authority: HeaderValue,
    /// `upstream_url`'s path without a trailing `/`, prepended to every request path.
    prefix: String,
    pool: Arc<Pool>,
}

pin_project_lite::pin_project! {
    /// An upstream response body that returns its connection to the pool when it ends.
    struct PooledBody {
        #[pin]
        inner: Incoming,
        conn: Option<(Sender, Arc<Pool>)>,
    }
}

// === impl HttpProxy ===

impl HttpProxy {
    /// Resolves `upstream` (an `http://host[:port][/prefix]` URL) once.
    pub async fn resolve(upstream: &Uri) -> Result<Self, WatchdogError> {
        let bad = |why: String| WatchdogError::Upstream {
            url: upstream.to_string(),
            why,
        };
        let host = upstream.host().ok_or_else(|| bad("no host".into()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = upstream.port_u16().unwrap_or(80);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| bad(e.to_string()))?
            .collect();
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| addrs.first())
            .copied()
            .ok_or_else(|| bad("resolves to no address".into()))?;
        let authority = upstream
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .ok_or_else(|| bad("no authority".into()))?;
        Ok(Self {
            addr,
            authority,
            prefix: upstream.path().trim_end_matches('/').to_string(),
            pool: Arc::new(Pool::new(addr)),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits (polling every 20 ms, up to 30 s) until the upstream accepts TCP connections.
    pub async fn wait_ready(&self) -> Result<(), WatchdogError> {
        let until = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if TcpStream::connect(self.addr).await.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= until {
                return Err(WatchdogError::UpstreamNotReady {
                    addr: self.addr,
                    waited: READY_TIMEOUT,
                });
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// Forwards one request; `deadline` bounds the wait for the response head.
    pub async fn call(
        &self,
        req: Request<Incoming>,
        remote: SocketAddr,
        deadline: Option<tokio::time::Instant>,
        exec_timeout: Duration,
    ) -> Result<Response<RespBody>, CallError> {
        let req = self.rewrite(req, remote);
        let sent = self.send(req);
        let (resp, sender) = match deadline {
            Some(d) => tokio::time::timeout_at(d, sent)
                .await
                .map_err(|_| CallError::Timeout(exec_timeout))??,
            None => sent.await?,
        };
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let body = PooledBody::new(body, sender, self.pool.clone());
        Ok(Response::from_parts(
            parts,
            body.map_err(Into::into).boxed_unsync(),
        ))
    }

    fn rewrite(&self, req: Request<Incoming>, remote: SocketAddr) -> Request<Incoming> {
        let (mut parts, body) = req.into_parts();
        let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let pq = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
        let target = if self.prefix.is_empty() {
            pq.parse::<Uri>()
        } else {
            format!("{}{pq}", self.prefix).parse::<Uri>()
        };
        if let Ok(uri) = target {
            parts.uri = uri;
        }
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.insert(header::HOST, self.authority.clone());
        if let Some(host) = original_host {
            if !parts.headers.contains_key(X_FORWARDED_HOST) {
                parts.headers.insert(X_FORWARDED_HOST, host);
            }
        }
        if !parts.headers.contains_key(X_FORWARDED_FOR) {
            if let Ok(v) = HeaderValue::from_str(&remote.ip().to_string()) {
                parts.headers.insert(X_FORWARDED_FOR, v);
            }
        }
        Request::from_parts(parts, body)
    }

    /// Sends on a pooled connection; retries once on a fresh one if a reused connection
    /// failed before the request left.
    async fn send(
        &self,
        req: Request<Incoming>,
    ) -> Result<(Response<Incoming>, Sender), CallError> {
        let Checkout { mut sender, reused } =
            self.pool.checkout().await.map_err(CallError::Connect)?;
        match sender
            .try_send_request(req.map(UpstreamBody::from_client))
            .await
        {
            Ok(resp) => Ok((resp, sender)),
            Err(mut e) => match e.take_message() {
                Some(req) if reused => {
                    let mut fresh = super::pool::connect(self.addr)
                        .await
                        .map_err(CallError::Connect)?;
                    let resp = fresh.send_request(req).await?;
                    Ok((resp, fresh))
                }
                _ => Err(CallError::Upstream(e.into_error())),
            },
        }
    }
}

// === impl PooledBody ===

impl PooledBody {
    fn new(inner: Incoming, sender: Sender, pool: Arc<Pool>) -> Self {
        if inner.is_end_stream() {
            // hyper may never poll an empty body: the response is complete, return it now.
            // (The pool's checkout waits for `ready()` before reusing it.)
            pool.checkin(sender);
            return Self { inner, conn: None };
        }
        Self {
            inner,
            conn: Some((sender, pool)),
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some((sender, pool)) = this.conn.take() {
                    pool.checkin(sender);
                }
            }
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => {
                // hyper stops polling once the body says it has ended: check in now.
                if let Some((sender, pool)) = this.conn.take() {
                    pool.checkin(sender);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                // The connection is broken: drop it.
                this.conn.take();
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_once_with_prefix() {
        let p = HttpProxy::resolve(&"http://127.0.0.1:5000/api/".parse().unwrap())
            .await
            .unwrap();
        assert_eq!(p.addr(), "127.0.0.1:5000".parse().unwrap());
        assert_eq!(p.prefix, "/api");
        assert_eq!(p.authority, "127.0.0.1:5000");
    }
}
