//! HTTP/1.1 to one Nomad or Consul agent, in clear or over TLS ([`TlsConnector`]): a
//! keep-alive pool, auth headers, timeouts, and error bodies turned into [`ClientError`].
//!
//! Control-plane traffic only (a few calls per second, plus one held blocking query per
//! watched service), so the idle pool is a `std` mutex around a small `Vec`, held for a push
//! or a pop, never across `.await`. A request goes on a pooled connection when one is idle;
//! if that connection turns out closed before the request left, it is re-sent once on a new
//! connection. Streaming reads (logs) get a connection of their own.
//!
//! Invariant: the token header is marked sensitive and never formatted; errors carry the
//! server's plain-text message, the status and the service name, nothing from the request.

use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use crate::client::tls::TlsConnector;
use crate::client::{ClientError, Secret};
use crate::config::ConfigError;

/// Bound on opening a connection.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on a non-blocking call, and the slack added to a blocking one.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per agent.
const MAX_IDLE: usize = 16;

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

/// One agent, its headers and its idle connections.
pub(crate) struct Transport {
    service: &'static str,
    endpoint: Endpoint,
    headers: HeaderMap,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    tls: Option<TlsConnector>,
}

/// A complete answer with a success status.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

// === impl Endpoint ===

impl Endpoint {
    /// Parses `http(s)://host:port[/prefix]`, `unix:///path` or a bare `host:port`; errors
    /// name `var`.
    pub(crate) fn parse(var: &str, value: &str) -> Result<Self, ConfigError> {
        Self::parse_with(var, value, false)
    }

    /// As [`Endpoint::parse`]; a bare `host:port` means `https` when `bare_https` is set
    /// (`CONSUL_HTTP_SSL=true`). An explicit scheme always wins, as in the Go clients.
    pub(crate) fn parse_with(
        var: &str,
        value: &str,
        bare_https: bool,
    ) -> Result<Self, ConfigError> {
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
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self.kind, EndpointKind::Tcp { tls: true, .. })
    }

    /// The value of the `Host` header.
    fn host(&self) -> &str {
        match &self.kind {
            EndpointKind::Tcp { authority, .. } => authority,
            EndpointKind::Unix { .. } => "localhost",
        }
    }

    async fn connect(&self, tls: Option<&TlsConnector>) -> std::io::Result<Box<dyn Io>> {
        match &self.kind {
            EndpointKind::Tcp {
                authority,
                tls: use_tls,
            } => {
                let s = tokio::net::TcpStream::connect(authority.as_str()).await?;
                s.set_nodelay(true)?;
                if !*use_tls {
                    return Ok(Box::new(s));
                }
                let tls = tls.ok_or_else(|| {
                    std::io::Error::other("https address without a TLS configuration")
                })?;
                let host = match authority.rsplit_once(':') {
                    Some((h, _)) => h,
                    None => authority.as_str(),
                };
                let s = tls.connect(host, s).await.map_err(|e| {
                    std::io::Error::new(e.kind(), format!("TLS handshake failed: {e}"))
                })?;
                Ok(Box::new(s))
            }
            EndpointKind::Unix { path } => {
                Ok(Box::new(tokio::net::UnixStream::connect(path).await?))
            }
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
    pub(crate) fn new(
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
            endpoint,
            headers,
            idle: Mutex::new(Vec::new()),
            tls: None,
        }
    }

    /// Connections to an `https` endpoint go through `tls` (settings always set one then).
    pub(crate) fn with_tls(mut self, tls: Option<TlsConnector>) -> Self {
        self.tls = tls;
        self
    }

    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub(crate) fn service(&self) -> &'static str {
        self.service
    }

    /// Sends one request and reads the whole answer within `timeout`. Non-2xx answers are
    /// [`ClientError::Status`] with the body as the message.
    pub(crate) async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<Reply, ClientError> {
        let what = format!("{method} {}", strip_query(path_and_query));
        let fut = self.send_inner(method, path_and_query, body, &what);
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout {
                service: self.service,
                what,
                after: timeout,
            }),
        }
    }

    async fn send_inner(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Bytes>,
        what: &str,
    ) -> Result<Reply, ClientError> {
        let req = self.request(&method, path_and_query, body.clone())?;
        let (mut sender, conn_error) = match self.checkout().await {
            Some(s) => (s, None),
            None => {
                let (s, c) = self.connect().await?;
                (s, Some(c))
            }
        };
        let reused = conn_error.is_none();
        let resp = match sender.try_send_request(req).await {
            Ok(r) => r,
            Err(mut e) => {
                if !(reused && e.take_message().is_some()) {
                    return Err(self.failed(e.into_error(), conn_error).await);
                }
                // The pooled connection was closed before the request left: once more, fresh.
                let (fresh, conn_error) = self.connect().await?;
                sender = fresh;
                let req = self.request(&method, path_and_query, body)?;
                match sender.send_request(req).await {
                    Ok(r) => r,
                    Err(e) => return Err(self.failed(e, Some(conn_error)).await),
                }
            }
        };
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| self.unreachable(chain(&e)))?
            .to_bytes();
        self.checkin(sender);
        if !parts.status.is_success() {
            return Err(self.status_error(parts.status, &body, what));
        }
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// Sends a GET on a connection of its own and returns the answer's streaming body
    /// (headers within [`CALL_TIMEOUT`]).
    pub(crate) async fn stream(
        &self,
        path_and_query: &str,
    ) -> Result<Response<Incoming>, ClientError> {
        let what = format!("GET {}", strip_query(path_and_query));
        let fut = async {
            let (mut sender, conn_error) = self.connect().await?;
            let req = self.request(&Method::GET, path_and_query, None)?;
            match sender.send_request(req).await {
                Ok(r) => Ok(r),
                Err(e) => Err(self.failed(e, Some(conn_error)).await),
            }
        };
        let resp = tokio::time::timeout(CALL_TIMEOUT, fut)
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

    fn request(
        &self,
        method: &Method,
        path_and_query: &str,
        body: Option<Bytes>,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let uri = format!("{}{}", self.endpoint.prefix, path_and_query);
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

    async fn checkout(&self) -> Option<SendRequest<Full<Bytes>>> {
        loop {
            let mut s = self.idle.lock().expect("idle pool mutex poisoned").pop()?;
            if s.is_closed() {
                continue;
            }
            if s.ready().await.is_ok() {
                return Some(s);
            }
        }
    }

    fn checkin(&self, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().expect("idle pool mutex poisoned");
        if idle.len() < MAX_IDLE {
            idle.push(sender);
        }
    }

    /// A new connection, and where its driver reports how it failed (a TLS alert the server
    /// sends after the handshake, e.g. for a missing client certificate, ends the driver, not
    /// the request).
    async fn connect(
        &self,
    ) -> Result<(SendRequest<Full<Bytes>>, oneshot::Receiver<String>), ClientError> {
        let connect = self.endpoint.connect(self.tls.as_ref());
        let io = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(io)) => io,
            Ok(Err(e)) if self.endpoint.is_tls() && e.to_string().contains("peer certificate") => {
                let var = if self.service == "consul" {
                    "CONSUL"
                } else {
                    "NOMAD"
                };
                return Err(self.unreachable(format!(
                    "{e} (check {var}_CACERT/{var}_CAPATH and {var}_TLS_SERVER_NAME)"
                )));
            }
            Ok(Err(e)) => return Err(self.unreachable(e)),
            Err(_) => return Err(self.unreachable("connect timed out")),
        };
        let (sender, conn) = http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| self.unreachable(chain(&e)))?;
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                let _ = tx.send(chain(&e));
            }
        });
        Ok((sender, rx))
    }

    fn unreachable(&self, e: impl fmt::Display) -> ClientError {
        ClientError::Unreachable {
            service: self.service,
            addr: self.endpoint.to_string(),
            reason: e.to_string(),
        }
    }

    /// A request that failed on a fresh connection: the error with its causes, and the
    /// connection driver's own error when it has one (waited for briefly).
    async fn failed(
        &self,
        e: hyper::Error,
        conn_error: Option<oneshot::Receiver<String>>,
    ) -> ClientError {
        let mut reason = chain(&e);
        if let Some(rx) = conn_error {
            if let Ok(Ok(c)) = tokio::time::timeout(Duration::from_secs(1), rx).await {
                reason = format!("{reason}; connection: {c}");
            }
        }
        if self.endpoint.is_tls()
            && [
                "alert: CertificateRequired",
                "alert: BadCertificate",
                "alert: UnknownCA",
                "alert: CertificateUnknown",
                "alert: HandshakeFailure",
            ]
            .iter()
            .any(|a| reason.contains(a))
        {
            let var = if self.service == "consul" {
                "CONSUL_CLIENT_CERT/CONSUL_CLIENT_KEY"
            } else {
                "NOMAD_CLIENT_CERT/NOMAD_CLIENT_KEY"
            };
            reason.push_str(&format!(
                " (the server wants a client certificate it trusts: check {var})"
            ));
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
pub(crate) fn index_of(headers: &HeaderMap, name: &str) -> u64 {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0)
        .max(1)
}

/// An error and its causes, `: `-joined.
fn chain(e: &dyn std::error::Error) -> String {
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
pub(crate) fn encode(s: &str) -> String {
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
pub(crate) fn with_query(path: &str, pairs: &[(&str, String)]) -> String {
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
