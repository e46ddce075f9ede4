//! HTTP mode: reverse-proxy every request to the function's own HTTP server (`upstream_url`).
//!
//! Owns: request/response rewriting and the upstream keep-alive connections. Invariants:
//! method, path (after `upstream_url`'s own path prefix), raw query, end-to-end headers and
//! status pass through unchanged (a 302 reaches the client unfollowed); hop-by-hop headers
//! (and those named in `Connection`) are dropped both ways; bodies stream both ways.
//!
//! The upstream leg is the gateway's own (`dataplane`): each exchange is driven in the
//! request's task on a pooled raw connection (`dataplane::pool::{Pool, Conn}`), the head
//! written and the response head parsed by `dataplane::http1` (through
//! `http1::exchange`), the request body streamed by `http1::body::Upload`
//! and the response body read by its framing as the client takes it ([`PooledBody`], a
//! `http1::body::PooledResponse`, which decides whether the connection goes back). No connection task, channel or oneshot per
//! request, as hyper's client connection had.
//!
//! A connection goes back to the pool only when its response body has ended cleanly on a
//! persistent connection, so it carries one request at a time. A pooled connection the
//! function closed is dropped at checkout when the reactor has seen it close; one that turns
//! out closed on use is retried once on a new connection when nothing of the request can
//! have been acted on: a bodiless request whose write failed, or a bodiless
//! GET/HEAD/OPTIONS/TRACE that got no response byte (as Go's transport, so of-watchdog,
//! does). Nothing else is retried. `exec_timeout` bounds the wait for the response head; on
//! expiry the connection is dropped. The upstream address is resolved once, at start.

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
use thiserror::Error;
use tokio::net::TcpStream;

use super::response::{BoxError, CallError, RespBody};
use super::WatchdogError;
use crate::http1::body::{PooledResponse, Release, Upload, UpstreamBody};
use crate::http1::codec::ResponseHead;
use crate::http1::exchange::{exchange, idempotent, Failure};
use crate::http1::headers::strip_hop_by_hop;
use crate::http1::pool::{Checkout, Conn, Pool};

/// How often to probe the upstream port until it accepts connections.
pub(crate) const READY_POLL: Duration = Duration::from_millis(20);
/// How long the function may take to start listening.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(30);

const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The reverse proxy to the function's HTTP server.
pub(crate) struct HttpProxy {
    addr: SocketAddr,
    /// `upstream_url`'s authority, sent as `Host`.
    authority: HeaderValue,
    /// `upstream_url`'s path without a trailing `/`, prepended to every request path.
    prefix: String,
    pool: Arc<Pool>,
}

/// Why an exchange with the function's server failed before its response head arrived.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum UpstreamError {
    #[error("the connection failed before the request was sent")]
    NotSent,
    #[error("the connection closed before any response byte")]
    NoResponse,
    #[error("the exchange broke (request body, malformed response head, or connection reset)")]
    Broken,
}

/// An upstream response body, read off its pooled connection by the response framing; the
/// connection goes back to the pool when the body ends cleanly and may be reused, and is
/// dropped otherwise (an error, or the client went away mid-body).
pub(crate) struct PooledBody(PooledResponse<Arc<Pool>>);

// === impl HttpProxy ===

impl HttpProxy {
    /// Resolves `upstream` (an `http://host[:port][/prefix]` URL) once.
    pub(crate) async fn resolve(upstream: &Uri) -> Result<Self, WatchdogError> {
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

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Idle pooled connections to the function now (tests, metrics).
    #[cfg(test)]
    pub(crate) fn idle(&self) -> usize {
        self.pool.idle()
    }

    /// Waits (polling every 20 ms, up to 30 s) until the upstream accepts TCP connections.
    pub(crate) async fn wait_ready(&self) -> Result<(), WatchdogError> {
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

    /// Forwards one request; `forwarded_for` is the client's IP (sent as `X-Forwarded-For`
    /// unless the request has one) and `deadline` bounds the wait for the response head.
    pub(crate) async fn call(
        &self,
        mut req: Request<Incoming>,
        forwarded_for: &HeaderValue,
        deadline: Option<tokio::time::Instant>,
        exec_timeout: Duration,
    ) -> Result<Response<RespBody>, CallError> {
        self.rewrite(&mut req, forwarded_for);
        self.forward(req.map(UpstreamBody::from_client), deadline, exec_timeout)
            .await
    }

    /// Sends the rewritten `req` and returns the response with its body streaming.
    async fn forward(
        &self,
        mut req: Request<UpstreamBody>,
        deadline: Option<tokio::time::Instant>,
        exec_timeout: Duration,
    ) -> Result<Response<RespBody>, CallError> {
        let sent = self.send(&mut req);
        let (head, upload, conn) = match deadline {
            Some(d) => tokio::time::timeout_at(d, sent)
                .await
                .map_err(|_| CallError::Timeout(exec_timeout))??,
            None => sent.await?,
        };
        let ResponseHead {
            mut parts,
            framing,
            keep_alive,
        } = head;
        strip_hop_by_hop(&mut parts.headers);
        let body = PooledBody(PooledResponse::new(
            conn,
            upload,
            framing,
            keep_alive,
            self.pool.clone(),
        ));
        Ok(Response::from_parts(parts, body.boxed_unsync()))
    }

    /// Turns the client's request into the upstream request, in place. The URI is rewritten
    /// only under a path prefix: the request head is written from its path and query alone.
    fn rewrite<B>(&self, req: &mut Request<B>, forwarded_for: &HeaderValue) {
        let original_host = req.headers().get(header::HOST).cloned().or_else(|| {
            req.uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        if !self.prefix.is_empty() {
            let pq = req.uri().path_and_query().map_or("/", PathAndQuery::as_str);
            if let Ok(uri) = format!("{}{pq}", self.prefix).parse::<Uri>() {
                *req.uri_mut() = uri;
            }
        }
        let headers = req.headers_mut();
        strip_hop_by_hop(headers);
        headers.insert(header::HOST, self.authority.clone());
        if let Some(host) = original_host {
            if !headers.contains_key(X_FORWARDED_HOST) {
                headers.insert(X_FORWARDED_HOST, host);
            }
        }
        if !headers.contains_key(X_FORWARDED_FOR) {
            headers.insert(X_FORWARDED_FOR, forwarded_for.clone());
        }
    }

    /// Exchanges `req` on a pooled connection up to the response head; once more on a new
    /// connection when a pooled one turns out stale and nothing can have been acted on.
    async fn send(
        &self,
        req: &mut Request<UpstreamBody>,
    ) -> Result<(ResponseHead, Option<Box<Upload>>, Conn), CallError> {
        let bodiless = req.body().is_empty();
        let Checkout { mut conn, reused } =
            self.pool.checkout().await.map_err(CallError::Connect)?;
        match exchange(&mut conn, req, None).await {
            Ok((head, upload)) => return Ok((head, upload, conn)),
            Err(Failure::NotSent) if bodiless && reused => {}
            Err(Failure::NoResponse) if bodiless && reused && idempotent(req.method()) => {}
            Err(f) => return Err(CallError::Upstream(f.into())),
        }
        let mut conn = self.pool.connect().await.map_err(CallError::Connect)?;
        match exchange(&mut conn, req, None).await {
            Ok((head, upload)) => Ok((head, upload, conn)),
            Err(f) => Err(CallError::Upstream(f.into())),
        }
    }
}

// === impl UpstreamError ===

impl From<Failure> for UpstreamError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::NotSent => UpstreamError::NotSent,
            Failure::NoResponse => UpstreamError::NoResponse,
            Failure::Broken
            | Failure::ClientBody { .. }
            | Failure::ClientStalled { .. }
            | Failure::ClientGone => UpstreamError::Broken,
        }
    }
}

// === impl PooledBody ===

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.get_mut()
            .0
            .poll_data(cx)
            .map(|d| d.map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

impl Release for Arc<Pool> {
    fn checkin(&mut self, conn: Conn) {
        Pool::checkin(self, conn);
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::StatusCode;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;

    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    /// A function server on 127.0.0.1 that hands its `n`th accepted connection to `script`;
    /// returns its address and the count of connections accepted.
    async fn upstream<F, Fut>(script: F) -> (SocketAddr, Arc<AtomicUsize>)
    where
        F: Fn(usize, TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let n = count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(script(n, stream));
            }
        });
        (addr, accepted)
    }

    /// Reads one bodiless request head; None at EOF.
    async fn read_head(s: &mut TcpStream) -> Option<String> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).await.ok()? == 0 {
                return None;
            }
            head.push(byte[0]);
        }
        Some(String::from_utf8_lossy(&head).into_owned())
    }

    async fn answer(s: &mut TcpStream, body: &str) {
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(resp.as_bytes()).await.unwrap();
    }

    async fn proxy(url: String) -> HttpProxy {
        HttpProxy::resolve(&url.parse().unwrap()).await.unwrap()
    }

    fn request(method: http::Method, path: &str) -> Request<UpstreamBody> {
        Request::builder()
            .method(method)
            .uri(path)
            .body(UpstreamBody::Empty)
            .unwrap()
    }

    async fn call(
        p: &HttpProxy,
        method: http::Method,
        path: &str,
    ) -> Result<(StatusCode, Bytes), CallError> {
        let resp =
            tokio::time::timeout(WAIT, p.forward(request(method, path), None, Duration::ZERO))
                .await
                .expect("answered in time")?;
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Ok((status, body))
    }

    #[tokio::test]
    async fn resolves_once_with_prefix() {
        let p = HttpProxy::resolve(&"http://127.0.0.1:5000/api/".parse().unwrap())
            .await
            .unwrap();
        assert_eq!(p.addr(), "127.0.0.1:5000".parse().unwrap());
        assert_eq!(p.prefix, "/api");
        assert_eq!(p.authority, "127.0.0.1:5000");
    }

    #[tokio::test]
    async fn rewrites_path_host_and_forwarding_headers() {
        let p = proxy("http://127.0.0.1:5000/api/".into()).await;
        let mut req = Request::get("/fn/sub?x=1&y")
            .header(header::HOST, "client.test")
            .header(header::CONNECTION, "x-secret")
            .header("x-secret", "1")
            .header("x-kept", "2")
            .body(())
            .unwrap();
        p.rewrite(&mut req, &HeaderValue::from_static("10.1.2.3"));
        assert_eq!(req.uri(), "/api/fn/sub?x=1&y");
        let h = req.headers();
        assert_eq!(h[header::HOST], "127.0.0.1:5000");
        assert_eq!(h[X_FORWARDED_HOST], "client.test");
        assert_eq!(h[X_FORWARDED_FOR], "10.1.2.3");
        assert_eq!(h["x-kept"], "2");
        assert!(!h.contains_key("x-secret") && !h.contains_key(header::CONNECTION));

        // Without a prefix the URI is left as is (the head is written from path and query).
        // A client's own X-Forwarded-For is kept.
        let p = proxy("http://127.0.0.1:5000".into()).await;
        let mut req = Request::get("/fn?q")
            .header(X_FORWARDED_FOR, "192.0.2.1")
            .body(())
            .unwrap();
        p.rewrite(&mut req, &HeaderValue::from_static("127.0.0.1"));
        assert_eq!(req.uri(), "/fn?q");
        assert_eq!(req.headers()[X_FORWARDED_FOR], "192.0.2.1");
    }

    #[tokio::test]
    async fn streams_chunked_bodies_and_reuses_one_connection() {
        let (gate_tx, gate_rx) = oneshot::channel::<()>();
        let gate = std::sync::Mutex::new(Some(gate_rx));
        let (addr, accepted) = upstream(move |_, mut s| {
            let gate = gate.lock().unwrap().take();
            async move {
                let head = read_head(&mut s).await.unwrap();
                assert!(head.starts_with("GET /stream HTTP/1.1\r\n"), "{head}");
                s.write_all(
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\
                      connection: keep-alive, x-hop\r\nx-hop: 1\r\nx-kept: 2\r\n\r\n\
                      5\r\nfirst\r\n",
                )
                .await
                .unwrap();
                // The rest only once the proxy's client has the first piece: streamed.
                gate.unwrap().await.unwrap();
                s.write_all(b"6\r\nsecond\r\n0\r\n\r\n").await.unwrap();
                read_head(&mut s).await.unwrap();
                answer(&mut s, "again").await;
                read_head(&mut s).await;
            }
        })
        .await;
        let p = proxy(format!("http://{addr}")).await;
        let resp = p
            .forward(request(http::Method::GET, "/stream"), None, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(resp.headers()["x-kept"], "2");
        assert!(!resp.headers().contains_key("x-hop"));
        assert!(!resp.headers().contains_key(header::CONNECTION));
        assert!(!resp.headers().contains_key(header::TRANSFER_ENCODING));
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "first");
        assert_eq!(p.idle(), 0, "checked in before the body ended");
        gate_tx.send(()).unwrap();
        let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(second, "second");
        assert!(body.frame().await.is_none());
        assert_eq!(p.idle(), 1);

        let (status, body) = call(&p, http::Method::GET, "/again").await.unwrap();
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"again"[..]));
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "the connection was not reused"
        );
        assert_eq!(p.idle(), 1);
    }

    #[tokio::test]
    async fn stale_connection_is_retried_only_when_nothing_was_acted_on() {
        // Every connection answers its first request, then takes the next and closes
        // unanswered: the keep-alive race of a function closing an idle connection.
        let (addr, accepted) = upstream(|n, mut s| async move {
            read_head(&mut s).await.unwrap();
            answer(&mut s, &format!("conn {n}")).await;
            read_head(&mut s).await;
        })
        .await;
        let p = proxy(format!("http://{addr}")).await;
        let (_, body) = call(&p, http::Method::GET, "/").await.unwrap();
        assert_eq!(body, "conn 0");
        // The pooled connection closes under an idempotent bodiless request: sent again on a
        // new connection.
        let (status, body) = call(&p, http::Method::GET, "/").await.unwrap();
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"conn 1"[..]));
        // Not a POST: the function may have acted on it.
        let e = call(&p, http::Method::POST, "/").await.unwrap_err();
        assert!(
            matches!(e, CallError::Upstream(UpstreamError::NoResponse)),
            "{e:?}"
        );
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn idle_connection_closed_by_the_function_is_not_used() {
        let (addr, accepted) = upstream(|n, mut s| async move {
            read_head(&mut s).await.unwrap();
            s.write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nconn {n}").as_bytes())
                .await
                .unwrap();
            // Closed right after answering, while the proxy keeps it idle.
        })
        .await;
        let p = proxy(format!("http://{addr}")).await;
        for want in ["conn 0", "conn 1", "conn 2"] {
            let (status, body) = call(&p, http::Method::POST, "/").await.unwrap();
            assert_eq!((status, &body[..]), (StatusCode::OK, want.as_bytes()));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn close_delimited_and_connection_close_responses_are_not_pooled() {
        let (addr, _) = upstream(|n, mut s| async move {
            read_head(&mut s).await.unwrap();
            let resp = if n == 0 {
                "HTTP/1.1 200 OK\r\n\r\nuntil eof".to_string()
            } else {
                "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 4\r\n\r\ndone".into()
            };
            s.write_all(resp.as_bytes()).await.unwrap();
        })
        .await;
        let p = proxy(format!("http://{addr}")).await;
        let (_, body) = call(&p, http::Method::GET, "/").await.unwrap();
        assert_eq!(body, "until eof");
        assert_eq!(p.idle(), 0);
        let (_, body) = call(&p, http::Method::GET, "/").await.unwrap();
        assert_eq!(body, "done");
        assert_eq!(p.idle(), 0);
    }

    #[tokio::test]
    async fn deadline_bounds_the_response_head() {
        let (addr, _) = upstream(|_, mut s| async move {
            read_head(&mut s).await.unwrap();
            // Never answers; holds the connection until the proxy drops it.
            let _ = s.read(&mut [0u8; 1]).await;
        })
        .await;
        let p = proxy(format!("http://{addr}")).await;
        let limit = Duration::from_millis(100);
        let deadline = tokio::time::Instant::now() + limit;
        let e = p
            .forward(request(http::Method::GET, "/"), Some(deadline), limit)
            .await
            .unwrap_err();
        assert!(matches!(e, CallError::Timeout(l) if l == limit), "{e:?}");
        assert_eq!(e.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(p.idle(), 0);
    }

    #[tokio::test]
    async fn unreachable_function_is_a_connect_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let p = proxy(format!("http://127.0.0.1:{port}")).await;
        let e = call(&p, http::Method::GET, "/").await.unwrap_err();
        assert!(matches!(e, CallError::Connect(_)), "{e:?}");
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
