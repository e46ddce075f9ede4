//! Callbacks: when an async call carried `X-Callback-Url`, the function's answer (status,
//! headers, body) is POSTed there once the call is over (delivered, or buried after its last
//! attempt), with OpenFaaS's headers: `X-Call-Id`, `X-Function-Status` (503 when the function
//! gave no answer), `X-Function-Name`, `X-Duration-Seconds` (of the last attempt, six
//! decimals) and `X-Start-Time` (its start, unix nanoseconds).
//!
//! Rules:
//! - Only `http` and `https` URLs with a host; `https` is verified against the Web PKI roots.
//! - `--callback-allow` (host names, IP addresses or CIDRs, comma-separated) restricts where
//!   callbacks may go: a host name must be listed, or resolve only to addresses inside a
//!   listed CIDR; an IP must be listed or inside one. Empty: anywhere (as OpenFaaS). The URL
//!   is checked at enqueue (400) and the addresses again when the callback is sent.
//! - A callback never carries the gateway's credentials, nor the caller's request headers:
//!   only the function's answer headers (hop-by-hop ones removed) and the five above.
//! - A failed callback (no answer or a 5xx) is retried, `attempts` times in all, with the
//!   wait doubling from `wait`; then it is logged and dropped. The call itself is done.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::client::tls::{TlsConnector, TlsOptions, TlsVars};
use crate::http1::headers::{strip_hop_by_hop, X_CALL_ID};

/// Where callbacks may go, and how hard they are tried.
#[derive(Debug, Clone)]
pub struct CallbackConfig {
    /// Empty: anywhere.
    pub allow: Vec<Allowed>,
    /// Tries of one callback in all.
    pub attempts: u32,
    /// The first wait between tries; it doubles.
    pub wait: Duration,
    /// Bound on one try.
    pub timeout: Duration,
}

impl Default for CallbackConfig {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            attempts: 5,
            wait: Duration::from_secs(1),
            timeout: Duration::from_secs(30),
        }
    }
}

/// One `--callback-allow` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    Host(String),
    Net(IpAddr, u8),
}

impl Allowed {
    /// Parses a host name, an IP address or a CIDR (`10.0.0.0/8`, `fd00::/8`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some((ip, bits)) = s.split_once('/') {
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| format!("--callback-allow: {s:?} is not a CIDR"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits: u8 = bits
                .parse()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("--callback-allow: {s:?} has a bad prefix length"))?;
            return Ok(Allowed::Net(ip, bits));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            let bits = if ip.is_ipv4() { 32 } else { 128 };
            return Ok(Allowed::Net(ip, bits));
        }
        if s.is_empty()
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Err(format!(
                "--callback-allow: {s:?} is not a host, an IP or a CIDR"
            ));
        }
        Ok(Allowed::Host(s.to_ascii_lowercase()))
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let Allowed::Net(net, bits) = self else {
            return false;
        };
        match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(*bits)).unwrap_or(0);
                u32::from(*n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(*bits)).unwrap_or(0);
                u128::from(*n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Checks a callback URL: an absolute `http`/`https` URL whose host `allow` admits (a
/// listed host name is admitted here; one admitted only through a CIDR is checked once
/// resolved, when the callback is sent).
pub fn check_url(url: &str, allow: &[Allowed]) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|_| format!("X-Callback-Url {url:?} is not a URL"))?;
    let host = match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(h)) if !h.is_empty() => h,
        _ => {
            return Err(format!(
                "X-Callback-Url {url:?} must be an absolute http or https URL"
            ))
        }
    };
    if allow.is_empty() {
        return Ok(uri);
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let admitted = match host.parse::<IpAddr>() {
        Ok(ip) => allow.iter().any(|a| a.contains(ip)),
        Err(_) => {
            let host = host.to_ascii_lowercase();
            allow.iter().any(|a| *a == Allowed::Host(host.clone()))
                || allow.iter().any(|a| matches!(a, Allowed::Net(..)))
        }
    };
    if admitted {
        Ok(uri)
    } else {
        Err(format!(
            "X-Callback-Url {url:?}: its host is not in --callback-allow"
        ))
    }
}

/// What a callback reports.
#[derive(Debug, Clone)]
pub struct Answer {
    pub call_id: String,
    pub function: String,
    /// The function's status (503 when it gave no answer).
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub duration: Duration,
    pub start_unix_nanos: u128,
}

/// Sends callbacks.
pub struct Callbacks {
    cfg: CallbackConfig,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Callbacks {
    pub fn new(cfg: CallbackConfig) -> Arc<Self> {
        // The Nomad client's TLS connector with its defaults: the Web PKI roots, no client
        // certificate, the URL's host verified.
        const VARS: TlsVars = TlsVars {
            ca_cert: "",
            ca_path: "",
            client_cert: "",
            client_key: "",
            server_name: "",
            skip_verify: "",
        };
        let tls = TlsConnector::build("callback", &VARS, &TlsOptions::default())
            .expect("default TLS options need no file");
        let mut tcp = HttpConnector::new();
        // https URLs reach it through the TLS connector.
        tcp.enforce_http(false);
        Arc::new(Self {
            cfg,
            client: Client::builder(TokioExecutor::new()).build(tls.https(tcp)),
        })
    }

    pub fn allow(&self) -> &[Allowed] {
        &self.cfg.allow
    }

    /// Sends `answer` to `url`, retrying as the module doc says.
    pub async fn send(&self, url: &str, answer: &Answer) {
        let mut wait = self.cfg.wait;
        for attempt in 1..=self.cfg.attempts.max(1) {
            match self.try_send(url, answer).await {
                Ok(status) if status < 500 => {
                    tracing::debug!(call_id = %answer.call_id, url, status, "callback sent");
                    return;
                }
                Ok(status) => tracing::info!(call_id = %answer.call_id, url, status, attempt,
                    "callback answered with a server error"),
                Err(e) => {
                    tracing::info!(call_id = %answer.call_id, url, error = %e, attempt, "callback failed");
                }
            }
            if attempt < self.cfg.attempts {
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
        }
        tracing::warn!(call_id = %answer.call_id, url, attempts = self.cfg.attempts,
            "callback given up");
    }

    async fn try_send(&self, url: &str, a: &Answer) -> Result<u16, String> {
        let uri = check_url(url, &self.cfg.allow)?;
        self.check_resolved(&uri).await?;
        let mut headers = a.headers.clone();
        strip_hop_by_hop(&mut headers);
        for h in [
            http::header::CONTENT_LENGTH,
            http::header::HOST,
            http::header::AUTHORIZATION,
        ] {
            headers.remove(h);
        }
        let set = |headers: &mut HeaderMap, name: &'static str, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), v);
            }
        };
        if let Ok(v) = HeaderValue::from_str(&a.call_id) {
            headers.insert(X_CALL_ID, v);
        }
        set(&mut headers, "x-function-status", a.status.to_string());
        set(&mut headers, "x-function-name", a.function.clone());
        set(
            &mut headers,
            "x-duration-seconds",
            format!("{:.6}", a.duration.as_secs_f64()),
        );
        set(&mut headers, "x-start-time", a.start_unix_nanos.to_string());
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .body(Full::new(a.body.clone()))
            .map_err(|e| e.to_string())?;
        *req.headers_mut() = headers;
        let resp = tokio::time::timeout(self.cfg.timeout, self.client.request(req))
            .await
            .map_err(|_| format!("no answer within {:?}", self.cfg.timeout))?
            .map_err(|e| e.to_string())?;
        Ok(resp.status().as_u16())
    }

    /// With CIDRs in the allow list, a host name admitted through them must resolve only to
    /// addresses inside them.
    async fn check_resolved(&self, uri: &Uri) -> Result<(), String> {
        let host = uri.host().unwrap_or("");
        if self.cfg.allow.is_empty()
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .is_ok()
            || self
                .cfg
                .allow
                .contains(&Allowed::Host(host.to_ascii_lowercase()))
        {
            return Ok(());
        }
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        let addrs: Vec<_> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("resolving {host}: {e}"))?
            .collect();
        if addrs.is_empty()
            || !addrs
                .iter()
                .all(|a| self.cfg.allow.iter().any(|n| n.contains(a.ip())))
        {
            return Err(format!("{host} resolves outside --callback-allow"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_entries_parse_and_match() {
        let allow: Vec<Allowed> = ["hooks.example.com", "10.0.0.0/8", "::1", "192.168.1.7"]
            .iter()
            .map(|s| Allowed::parse(s).unwrap())
            .collect();
        assert!(check_url("https://hooks.example.com/x", &allow).is_ok());
        assert!(check_url("http://HOOKS.example.com:8080/x", &allow).is_ok());
        assert!(check_url("http://10.1.2.3/x", &allow).is_ok());
        assert!(check_url("http://[::1]:9/x", &allow).is_ok());
        assert!(check_url("http://192.168.1.7/x", &allow).is_ok());
        assert!(check_url("http://192.168.1.8/x", &allow).is_err());
        assert!(check_url("http://11.0.0.1/x", &allow).is_err());
        // A host name admitted only through a CIDR is checked once resolved.
        assert!(check_url("http://other.example.com/x", &allow).is_ok());
        let hosts_only = vec![Allowed::parse("hooks.example.com").unwrap()];
        assert!(check_url("http://other.example.com/x", &hosts_only).is_err());
        for bad in ["ftp://h/x", "/relative", "not a url", "http:///x"] {
            assert!(check_url(bad, &[]).is_err(), "{bad}");
        }
        for bad in ["10.0.0.0/33", "x/8", "", "a b", "::1/129"] {
            assert!(Allowed::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Allowed::parse("0.0.0.0/0").unwrap(),
            Allowed::Net("0.0.0.0".parse().unwrap(), 0)
        );
        assert!(Allowed::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
    }
}
