//! HTTP/1.1 to one Nomad or Consul agent, in clear, over TLS ([`TlsConnector`]) or over a
//! unix socket: hyper-util's pooled client (`client::legacy::Client`, with hyper-rustls for
//! `https`), the auth headers, timeouts, and error bodies turned into [`ClientError`].
//!
//! Control-plane traffic only (a few calls per second, plus one held blocking query per
//! watched service). What this module relies on the pooled client for: idle keep-alive
//! connections (at most [`MAX_IDLE`] per agent, dropped after 90 s idle); a request given a
//! pooled connection that turns out closed before the request left is re-sent on another
//! connection (`retry_canceled_requests`, on by default; a request already written is never
//! re-sent); a streaming read (logs) holds its connection until its body ends or is dropped,
//! so other calls take other connections meanwhile. HTTP/1.1 only: hyper-util is built
//! without `http2` and the TLS configuration offers no ALPN. Opening a connection (TCP and
//! the TLS handshake, or the unix socket) is bounded by [`CONNECT_TIMEOUT`], a whole call by
//! its own timeout ([`CALL_TIMEOUT`], plus the wait for a blocking query).
//!
//! Invariant: the token header is marked sensitive and never formatted; errors carry the
//! server's plain-text message, the status and the service name, nothing from the request.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::rt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{
    capture_connection, Connected, Connection, HttpConnector,
};
use hyper_util::client::legacy::{self, Client};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::UnixStream;
use tokio_rustls::rustls::{self, AlertDescription};
use tower_service::Service;

use crate::client::tls::TlsConnector;
use crate::client::{ClientError, Secret};
use crate::config::ConfigError;

/// Bound on opening a connection (TCP connect and TLS handshake, or the unix socket).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on a non-blocking call, and the slack added to a blocking one.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per agent.
const MAX_IDLE: usize = 16;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Where an agent listens.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    kind: EndpointKind,
    /// Path prefix before `/v1/...`, without a trailing slash ("" usually).
    prefix: String,
}

#[derive(Clone, PartialEq, Eq)]
enum EndpointKind {
    Tcp { authority: String, tls: bool },
    Unix { path: PathBuf },
}

/// One agent, its headers and its pooled client.
pub struct Transport {
    service: &'static str,
    endpoint: Endpoint,
    /// `scheme://authority/prefix` every request URI starts with (the pool's key).
    base: String,
    headers: HeaderMap,
    pool: Client<Opener, Full<Bytes>>,
}

/// Opens the pool's connections, within [`CONNECT_TIMEOUT`], each [`Watched`].
#[derive(Clone)]
enum Opener {
    Tcp(HttpConnector),
    Tls(HttpsConnector<HttpConnector>),
    /// Every request goes to this socket, whatever its URI says.
    Unix(Arc<Path>),
    /// An `https` endpoint without a TLS configuration (settings always set one).
    NoTls,
}

/// What a pooled connection is: plain or TLS over TCP, or a unix socket.
trait Io: rt::Read + rt::Write + Connection + Send + Unpin + 'static {}
impl<T: rt::Read + rt::Write + Connection + Send + Unpin + 'static> Io for T {}

/// A pooled connection that keeps the first TLS error it reads. The pool drives each
/// connection in a task of its own and only logs how it ended; a TLS 1.3 server refusing
/// the client certificate sends its alert after the client's side of the handshake, and when
/// that task reads the alert before the request left, the request fails with "connection
/// was not ready" alone. [`Transport::failed`] finds the alert here (through the pool's
/// `capture_connection`).
struct Watched {
    io: Box<dyn Io>,
    seen: SeenTls,
}

/// A connection's first TLS error, shared with the connection's metadata.
#[derive(Clone, Default)]
struct SeenTls(Arc<OnceLock<rustls::Error>>);

/// A complete answer with a success status.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

// === impl Endpoint ===

impl Endpoint {
    /// Parses `http(s)://host:port[/prefix]`, `unix:///path` or a bare `host:port`; errors
    /// name `var`.
    pub fn parse(var: &str, value: &str) -> Result<Self, ConfigError> {
        Self::parse_with(var, value, false)
    }

    /// As [`Endpoint::parse`]; a bare `host:port` means `https` when `bare_https` is set
    /// (`CONSUL_HTTP_SSL=true`). An explicit scheme always wins, as in the Go clients.
    pub fn parse_with(var: &str, value: &str, bare_https: bool) -> Result<Self, ConfigError> {
        const SHAPE: &str =
            "expected http://host:port, https://host:port, unix:///path or host:port";
        let err = |rule: &'static str| ConfigError {
            name: var.to_string(),
            value: value.to_string(),
            rule,
        };
        let v = value.trim();
        if let Some(path) = v.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(err(
                    "unix:// needs a socket path, e.g. unix:///run/nomad.sock",
                ));
            }
            return Ok(Self {
                kind: EndpointKind::Unix { path: path.into() },
                prefix: String::new(),
            });
        }
        let (rest, tls) = if let Some(r) = v.strip_prefix("https://") {
            (r, true)
        } else if let Some(r) = v.strip_prefix("http://") {
            (r, false)
        } else {
            (v, bare_https)
        };
        if rest.contains("://") {
            return Err(err(SHAPE));
        }
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains(['@', ' ', '?', '#']) {
            return Err(err(SHAPE));
        }
        // A missing port means the scheme's default.
        let authority = if authority.rsplit_once(':').is_some_and(|(h, p)| {
            !h.is_empty() && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())
        }) || authority.ends_with(']')
        {
            authority.to_string()
        } else if authority.contains(':') && !authority.starts_with('[') {
            return Err(err(SHAPE));
        } else {
            format!("{authority}:{}", if tls { 443 } else { 80 })
        };
        Ok(Self {
            kind: EndpointKind::Tcp { authority, tls },
            prefix: prefix.to_string(),
        })
    }

    /// True for an `https` address.
    pub fn is_tls(&self) -> bool {
        matches!(self.kind, EndpointKind::Tcp { tls: true, .. })
    }

    /// The value of the `Host` header.
    fn host(&self) -> &str {
        match &self.kind {
            EndpointKind::Tcp { authority, .. } => authority,
            EndpointKind::Unix { .. } => "localhost",
        }
    }

    /// The URI every request starts with (a unix socket's requests name `localhost`).
    fn base(&self) -> String {
        match &self.kind {
            EndpointKind::Tcp { authority, tls } => {
                let scheme = if *tls { "https" } else { "http" };
                format!("{scheme}://{authority}{}", self.prefix)
            }
            EndpointKind::Unix { .. } => format!("http://localhost{}", self.prefix),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            EndpointKind::Tcp { authority, tls } => {
                let scheme = if *tls { "https" } else { "http" };
                write!(f, "{scheme}://{authority}{}", self.prefix)
            }
            EndpointKind::Unix { path } => write!(f, "unix://{}", path.display()),
        }
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

// === impl Transport ===

impl Transport {
    /// `token_header` carries `token` when it is not empty; `basic` is `user[:pass]` auth.
    pub fn new(
        service: &'static str,
        endpoint: Endpoint,
        token_header: HeaderName,
        token: &Secret,
        basic: Option<&(String, Secret)>,
    ) -> Self {
        let mut headers = HeaderMap::new();
        if !token.is_empty() {
            if let Ok(mut v) = HeaderValue::from_str(token.expose()) {
                v.set_sensitive(true);
                headers.insert(token_header, v);
            } else {
                tracing::warn!(
                    service,
                    "the ACL token is not a valid header value; not sent"
                );
            }
        }
        if let Some((user, pass)) = basic {
            use base64::Engine;
            let raw = format!("{user}:{}", pass.expose());
            let enc = base64::engine::general_purpose::STANDARD.encode(raw);
            if let Ok(mut v) = HeaderValue::from_str(&format!("Basic {enc}")) {
                v.set_sensitive(true);
                headers.insert(AUTHORIZATION, v);
            }
        }
        headers.insert(USER_AGENT, HeaderValue::from_static("faasgate"));
        Self {
            service,
            base: endpoint.base(),
            pool: Opener::new(&endpoint, None).pool(),
            endpoint,
            headers,
        }
    }

    /// Connections to an `https` endpoint go through `tls` (settings always set one then).
    pub fn with_tls(mut self, tls: Option<TlsConnector>) -> Self {
        self.pool = Opener::new(&self.endpoint, tls.as_ref()).pool();
        self
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn service(&self) -> &'static str {
        self.service
    }

    /// Sends one request and reads the whole answer within `timeout`. Non-2xx answers are
    /// [`ClientError::Status`] with the body as the message.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<Reply, ClientError> {
        let what = format!("{method} {}", strip_query(path_and_query));
        let fut = async {
            let resp = self.roundtrip(&method, path_and_query, body).await?;
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| self.unreachable(chain(&e)))?
                .to_bytes();
            if !parts.status.is_success() {
                return Err(self.status_error(parts.status, &body, &what));
            }
            Ok(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout {
                service: self.service,
                what,
                after: timeout,
            }),
        }
    }

    /// Sends a GET and returns the answer's streaming body (headers within
    /// [`CALL_TIMEOUT`]); its connection goes back to the pool once the body has ended.
    pub async fn stream(&self, path_and_query: &str) -> Result<Response<Incoming>, ClientError> {
        let what = format!("GET {}", strip_query(path_and_query));
        let resp = tokio::time::timeout(
            CALL_TIMEOUT,
            self.roundtrip(&Method::GET, path_and_query, None),
        )
        .await
        .map_err(|_| ClientError::Timeout {
            service: self.service,
            what: what.clone(),
            after: CALL_TIMEOUT,
        })??;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = tokio::time::timeout(CALL_TIMEOUT, resp.into_body().collect())
                .await
                .ok()
                .and_then(|r| r.ok())
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            return Err(self.status_error(status, &body, &what));
        }
        Ok(resp)
    }

    /// One request through the pool, up to the answer's head.
    async fn roundtrip(
        &self,
        method: &Method,
        path_and_query: &str,
        body: Option<Bytes>,
    ) -> Result<Response<Incoming>, ClientError> {
        let mut req = self.request(method, path_and_query, body)?;
        let conn = capture_connection(&mut req);
        self.pool.request(req).await.map_err(|e| {
            let seen = conn.connection_metadata().as_ref().and_then(|c| {
                let mut x = http::Extensions::new();
                c.get_extras(&mut x);
                x.get::<SeenTls>().and_then(|s| s.0.get().cloned())
            });
            self.failed(&e, seen)
        })
    }

    fn request(
        &self,
        method: &Method,
        path_and_query: &str,
        body: Option<Bytes>,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let uri = format!("{}{}", self.base, path_and_query);
        let mut b = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(HOST, self.endpoint.host());
        for (k, v) in &self.headers {
            b = b.header(k, v.clone());
        }
        if body.is_some() {
            b = b.header(CONTENT_TYPE, "application/json");
        }
        b.body(Full::new(body.unwrap_or_default()))
            .map_err(|e| ClientError::Decode {
                service: self.service,
                what: strip_query(path_and_query).to_string(),
                reason: format!("invalid request: {e}"),
            })
    }

    fn unreachable(&self, e: impl fmt::Display) -> ClientError {
        ClientError::Unreachable {
            service: self.service,
            addr: self.endpoint.to_string(),
            reason: e.to_string(),
        }
    }

    /// A request that got no answer: its causes (the pool's own error only names its kind),
    /// the TLS error its connection read if the request's error lacks it, and for a TLS
    /// failure the variables to check.
    fn failed(&self, e: &legacy::Error, seen: Option<rustls::Error>) -> ClientError {
        let mut reason = match e.source() {
            Some(cause) => chain(cause),
            None => e.to_string(),
        };
        let direct = tls_cause(e);
        if let (None, Some(t)) = (direct, &seen) {
            reason = format!("{reason}; connection: {t}");
        }
        if let Some(tls) = direct.or(seen.as_ref()) {
            if e.is_connect() {
                reason = format!("TLS handshake failed: {reason}");
            }
            let var = if self.service == "consul" {
                "CONSUL"
            } else {
                "NOMAD"
            };
            match tls {
                rustls::Error::InvalidCertificate(_) => reason.push_str(&format!(
                    " (check {var}_CACERT/{var}_CAPATH and {var}_TLS_SERVER_NAME)"
                )),
                // TLS 1.3 servers refuse a client certificate after the client's side of the
                // handshake is done: the alert ends the first request.
                rustls::Error::AlertReceived(
                    AlertDescription::CertificateRequired
                    | AlertDescription::BadCertificate
                    | AlertDescription::UnknownCA
                    | AlertDescription::CertificateUnknown
                    | AlertDescription::HandshakeFailure,
                ) => reason.push_str(&format!(
                    " (the server wants a client certificate it trusts: check \
                     {var}_CLIENT_CERT/{var}_CLIENT_KEY)"
                )),
                _ => {}
            }
        }
        self.unreachable(reason)
    }

    fn status_error(&self, status: StatusCode, body: &[u8], what: &str) -> ClientError {
        let mut message = String::from_utf8_lossy(body).trim().to_string();
        if message.is_empty() {
            message = format!(
                "{what}: {}",
                status.canonical_reason().unwrap_or("no message")
            );
        }
        ClientError::Status {
            service: self.service,
            status: status.as_u16(),
            message,
        }
    }
}

// === impl Opener ===

impl Opener {
    fn new(endpoint: &Endpoint, tls: Option<&TlsConnector>) -> Self {
        let tcp = || {
            let mut c = HttpConnector::new();
            // https URIs reach it through the TLS connector.
            c.enforce_http(false);
            c.set_nodelay(true);
            c
        };
        match (&endpoint.kind, tls) {
            (EndpointKind::Unix { path }, _) => Opener::Unix(path.as_path().into()),
            (EndpointKind::Tcp { tls: false, .. }, _) => Opener::Tcp(tcp()),
            (EndpointKind::Tcp { tls: true, .. }, Some(tls)) => Opener::Tls(tls.https(tcp())),
            (EndpointKind::Tcp { tls: true, .. }, None) => Opener::NoTls,
        }
    }

    /// The pooled client over this opener.
    fn pool(self) -> Client<Opener, Full<Bytes>> {
        Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(MAX_IDLE)
            .pool_timer(TokioTimer::new())
            .build(self)
    }
}

impl Service<Uri> for Opener {
    type Response = Watched;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Watched, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Opener::Tcp(c) => c.poll_ready(cx).map_err(Into::into),
            Opener::Tls(c) => c.poll_ready(cx),
            Opener::Unix(_) | Opener::NoTls => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        type Opening = Pin<Box<dyn Future<Output = Result<Box<dyn Io>, BoxError>> + Send>>;
        let opening: Opening = match self {
            Opener::Tcp(c) => {
                let f = c.call(dst);
                Box::pin(async move { Ok(Box::new(f.await?) as Box<dyn Io>) })
            }
            Opener::Tls(c) => {
                let f = c.call(dst);
                Box::pin(async move { Ok(Box::new(f.await?) as Box<dyn Io>) })
            }
            Opener::Unix(path) => {
                let path = path.clone();
                Box::pin(async move {
                    let s = UnixStream::connect(&*path).await?;
                    Ok(Box::new(TokioIo::new(s)) as Box<dyn Io>)
                })
            }
            Opener::NoTls => {
                Box::pin(async { Err("https address without a TLS configuration".into()) })
            }
        };
        Box::pin(async move {
            match tokio::time::timeout(CONNECT_TIMEOUT, opening).await {
                Ok(Ok(io)) => Ok(Watched {
                    io,
                    seen: SeenTls::default(),
                }),
                Ok(Err(e)) => Err(e),
                Err(_) => Err("connect timed out".into()),
            }
        })
    }
}

// === impl Watched ===

impl Connection for Watched {
    fn connected(&self) -> Connected {
        self.io.connected().extra(self.seen.clone())
    }
}

impl rt::Read for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Err(e)) = &r {
            if let Some(t) = tls_cause(e) {
                let _ = this.seen.0.set(t.clone());
            }
        }
        r
    }
}

// Writes only pass through: a TLS peer's refusal arrives as an alert, read.
impl rt::Write for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("service", &self.service)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// The index header of an answer (`X-Nomad-Index` / `X-Consul-Index`), floored to 1 as the
/// blocking-query rules ask (a fresh cluster may report 0).
pub fn index_of(headers: &HeaderMap, name: &str) -> u64 {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0)
        .max(1)
}

/// The rustls error behind `e`, if any. `io::Error::source` skips the error it wraps, so an
/// `io::Error` is opened with `get_ref`.
fn tls_cause<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        cur = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn StdError + 'static)),
            None => e.source(),
        };
    }
    None
}

/// An error and its causes, `: `-joined.
fn chain(e: &dyn StdError) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

fn strip_query(p: &str) -> &str {
    p.split('?').next().unwrap_or(p)
}

/// Percent-encodes one path segment or query value (RFC 3986 unreserved kept).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Builds `path?k=v&...` with encoded values.
pub fn with_query(path: &str, pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return path.to_string();
    }
    let q: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    format!("{path}?{}", q.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("X", "http://127.0.0.1:4646").unwrap();
        assert_eq!(e.to_string(), "http://127.0.0.1:4646");
        let e = Endpoint::parse("X", "consul.local:8500").unwrap();
        assert_eq!(e.to_string(), "http://consul.local:8500");
        let e = Endpoint::parse("X", "http://proxy/nomad/").unwrap();
        assert_eq!(e.to_string(), "http://proxy:80/nomad");
        let e = Endpoint::parse("X", "unix:///run/nomad.sock").unwrap();
        assert_eq!(e.to_string(), "unix:///run/nomad.sock");
        let e = Endpoint::parse("NOMAD_ADDR", "https://x:4646").unwrap();
        assert!(e.is_tls());
        assert_eq!(e.to_string(), "https://x:4646");
        assert_eq!(e.host(), "x:4646");
        let e = Endpoint::parse("X", "https://nomad.example").unwrap();
        assert_eq!(e.to_string(), "https://nomad.example:443");
        // CONSUL_HTTP_SSL: a bare address is https, an explicit scheme wins.
        let e = Endpoint::parse_with("X", "10.0.0.1:8501", true).unwrap();
        assert_eq!(e.to_string(), "https://10.0.0.1:8501");
        let e = Endpoint::parse_with("X", "http://10.0.0.1:8500", true).unwrap();
        assert!(!e.is_tls());
        assert_eq!(
            Endpoint::parse("NOMAD_ADDR", "ftp://x").unwrap_err().name,
            "NOMAD_ADDR"
        );
        assert!(Endpoint::parse("X", "ftp://x").is_err());
        assert!(Endpoint::parse("X", "").is_err());
    }

    /// A `unix://` endpoint: requests reach the socket with the headers the TCP ones carry
    /// (`Host: localhost`, the token), answers and error bodies come back, and a streaming
    /// read works alongside.
    #[tokio::test]
    async fn unix_socket_endpoint() {
        use hyper::server::conn::http1 as server;
        use hyper::service::service_fn;

        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let h = |n: &str| {
                        let v = req.headers().get(n);
                        v.map(|v| v.to_str().unwrap().to_string())
                            .unwrap_or_default()
                    };
                    let body = format!(
                        "{} {} host={} token={}",
                        req.method(),
                        req.uri(),
                        h("host"),
                        h("x-nomad-token")
                    );
                    let status = if req.uri().path() == "/v1/missing" {
                        StatusCode::NOT_FOUND
                    } else {
                        StatusCode::OK
                    };
                    let mut resp = Response::new(Full::new(Bytes::from(body)));
                    *resp.status_mut() = status;
                    Ok::<_, std::convert::Infallible>(resp)
                });
                tokio::spawn(server::Builder::new().serve_connection(TokioIo::new(s), svc));
            }
        });

        let endpoint = Endpoint::parse("X", &format!("unix://{}", sock.display())).unwrap();
        let t = Transport::new(
            "nomad",
            endpoint,
            HeaderName::from_static("x-nomad-token"),
            &Secret::new("t0k"),
            None,
        );
        let streamed = t.stream("/v1/client/fs/logs/a?plain=true").await.unwrap();
        for _ in 0..2 {
            let r = t
                .send(Method::GET, "/v1/jobs?prefix=a", None, CALL_TIMEOUT)
                .await
                .unwrap();
            assert_eq!(
                &r.body[..],
                b"GET /v1/jobs?prefix=a host=localhost token=t0k"
            );
        }
        let body = streamed.into_body().collect().await.unwrap().to_bytes();
        assert!(body.starts_with(b"GET /v1/client/fs/logs/a?plain=true "));
        let e = t
            .send(Method::GET, "/v1/missing", None, CALL_TIMEOUT)
            .await
            .unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert!(
            e.to_string().contains("GET /v1/missing host=localhost"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn https_without_tls_configuration_fails_saying_so() {
        let endpoint = Endpoint::parse("X", "https://127.0.0.1:1").unwrap();
        let t = Transport::new(
            "nomad",
            endpoint,
            HeaderName::from_static("x-nomad-token"),
            &Secret::default(),
            None,
        );
        let e = t
            .send(Method::GET, "/v1/jobs", None, CALL_TIMEOUT)
            .await
            .unwrap_err();
        assert!(e.is_unavailable());
        assert!(e.to_string().contains("without a TLS configuration"), "{e}");
    }

    #[test]
    fn query_encoding() {
        assert_eq!(
            with_query("/v1/jobs", &[("prefix", "faasgate-".into())]),
            "/v1/jobs?prefix=faasgate-"
        );
        assert_eq!(encode("a b/\"c\""), "a%20b%2F%22c%22");
    }

    #[test]
    fn index_floor() {
        let mut h = HeaderMap::new();
        assert_eq!(index_of(&h, "x-nomad-index"), 1);
        h.insert("x-nomad-index", HeaderValue::from_static("0"));
        assert_eq!(index_of(&h, "x-nomad-index"), 1);
        h.insert("x-nomad-index", HeaderValue::from_static("1234"));
        assert_eq!(index_of(&h, "x-nomad-index"), 1234);
    }
}
