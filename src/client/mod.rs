//! Typed HTTP clients for Nomad and Consul, and their wire types. No policy lives here: the
//! provider ([`crate::control::nomad`]) and discovery ([`crate::discovery`]) decide what to
//! ask and what an answer means.
//!
//! - [`settings`]: the standard client environment (`NOMAD_ADDR`, `NOMAD_TOKEN`, ...,
//!   `CONSUL_HTTP_ADDR`, ...), resolved once, TLS files loaded and checked included.
//! - [`tls`]: rustls client configuration (CA file/dir, mTLS pair, server name, skip-verify).
//! - [`transport`]: HTTP/1.1 over TCP, TLS or a unix socket through hyper-util's pooled
//!   client, the ACL token header, timeouts sized for blocking queries, and plain-text error
//!   bodies turned into [`ClientError::Status`].
//! - [`nomad`], [`consul`]: one method per endpoint, each returning a typed value and, for
//!   blocking reads, the `X-Nomad-Index` / `X-Consul-Index` it was read at.
//! - [`wire`]: serde types with the servers' exact field names; every field optional
//!   (servers omit zero fields on some structs), unknown fields ignored.
//!
//! Invariant: a token never leaves through `Debug`, `Display`, an error or a log line; it is
//! held in a [`Secret`] and sent as a header marked sensitive.

pub(crate) mod consul;
pub mod nomad;
pub(crate) mod settings;
pub mod tls;
pub mod transport;
pub mod wire;

use std::fmt;
use std::time::Duration;

use thiserror::Error;

pub use consul::ConsulClient;
pub use nomad::NomadClient;
pub use settings::{ConsulSettings, NomadSettings};

/// Errors of a Nomad or Consul call.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The server could not be reached (connect refused, reset, DNS).
    #[error("{service} at {addr} is unreachable: {reason}")]
    Unreachable {
        service: &'static str,
        addr: String,
        reason: String,
    },
    /// No complete answer within the timeout.
    #[error("{service} did not answer {what} within {after:?}")]
    Timeout {
        service: &'static str,
        what: String,
        after: Duration,
    },
    /// The server answered an error status; `message` is its plain-text body.
    #[error("{service} answered {status}: {message}")]
    Status {
        service: &'static str,
        status: u16,
        message: String,
    },
    /// The body did not decode as the expected wire type.
    #[error("{service} {what}: unexpected response body: {reason}")]
    Decode {
        service: &'static str,
        what: String,
        reason: String,
    },
}

/// A secret (ACL token, basic-auth password): never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

/// A value read with a blocking query, and the index it was read at (floored to 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Indexed<T> {
    pub value: T,
    pub index: u64,
}

/// Blocking-query parameters: `index=0` answers at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryOptions {
    pub index: u64,
    pub wait: Option<Duration>,
}

// === impl ClientError ===

impl ClientError {
    /// The HTTP status the server answered, if it answered one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when the server answered 404.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// True when the server was not reached or did not answer (retry later).
    #[cfg(test)]
    pub(crate) fn is_unavailable(&self) -> bool {
        matches!(
            self,
            ClientError::Unreachable { .. } | ClientError::Timeout { .. }
        )
    }
}

// === impl Secret ===

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("Secret(<empty>)")
        } else {
            f.write_str("Secret(<redacted>)")
        }
    }
}

// === impl QueryOptions ===

impl QueryOptions {
    /// A blocking read: answer when the index passes `index`, or after `wait`.
    pub fn blocking(index: u64, wait: Duration) -> Self {
        Self {
            index,
            wait: Some(wait),
        }
    }

    /// Query-string pairs (`index`, `wait` in milliseconds as the Go client sends it).
    pub(crate) fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.index > 0 {
            out.push(("index", self.index.to_string()));
            if let Some(w) = self.wait {
                out.push(("wait", format!("{}ms", w.as_millis().max(1))));
            }
        }
        out
    }

    /// How long the whole call may take: the wait, the server's jitter (wait/16) and slack.
    pub(crate) fn timeout(&self, base: Duration) -> Duration {
        match (self.index, self.wait) {
            (0, _) | (_, None) => base,
            (_, Some(w)) => w + w / 16 + base,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("s3cr3t-token");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert!(!format!("{:?}", Some(&s)).contains("s3cr3t"));
    }

    #[test]
    fn blocking_pairs_and_timeout() {
        assert!(QueryOptions::default().pairs().is_empty());
        let q = QueryOptions::blocking(42, Duration::from_secs(16));
        assert_eq!(
            q.pairs(),
            vec![("index", "42".to_string()), ("wait", "16000ms".to_string())]
        );
        assert_eq!(
            q.timeout(Duration::from_secs(10)),
            Duration::from_secs(16 + 1 + 10)
        );
        // index 0 never blocks, whatever the wait says.
        assert!(QueryOptions::blocking(0, Duration::from_secs(5))
            .pairs()
            .is_empty());
    }
}
