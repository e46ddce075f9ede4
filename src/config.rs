//! Typed configuration and every environment variable name the gateway reads, in one place.
//!
//! Durations follow OpenFaaS: an integer is seconds, otherwise a Go duration (`65s`, `1m30s`,
//! `500ms`). Errors name the variable, the value and the rule.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

/// Environment variable names.
pub mod env {
    pub const LISTEN: &str = "FAASGATE_LISTEN";
    pub const PROVIDER: &str = "FAASGATE_PROVIDER";
    pub const DATA_DIR: &str = "FAASGATE_DATA_DIR";
    pub const SECRETS_ISOLATION: &str = "FAASGATE_SECRETS_ISOLATION";
    pub const BASIC_AUTH_USER: &str = "FAASGATE_BASIC_AUTH_USER";
    pub const BASIC_AUTH_PASSWORD: &str = "FAASGATE_BASIC_AUTH_PASSWORD";
    pub const MAX_BODY_BYTES: &str = "FAASGATE_MAX_BODY_BYTES";
    pub const HOLD_TIMEOUT: &str = "FAASGATE_HOLD_TIMEOUT";
    pub const MAX_QUEUE: &str = "FAASGATE_MAX_QUEUE";
    pub const MAX_ASYNC_BODY: &str = "FAASGATE_MAX_ASYNC_BODY";
    pub const MAX_ASYNC_QUEUE: &str = "FAASGATE_MAX_ASYNC_QUEUE";
    pub const ASYNC_MAX_INFLIGHT: &str = "FAASGATE_ASYNC_MAX_INFLIGHT";
    pub const ASYNC_MAX_ATTEMPTS: &str = "FAASGATE_ASYNC_MAX_ATTEMPTS";
    pub const ASYNC_MAX_AGE: &str = "FAASGATE_ASYNC_MAX_AGE";
    pub const ASYNC_RETRY_WAIT: &str = "FAASGATE_ASYNC_RETRY_WAIT";
    pub const ASYNC_RETRY_MAX_WAIT: &str = "FAASGATE_ASYNC_RETRY_MAX_WAIT";
    pub const ASYNC_RETRY_CODES: &str = "FAASGATE_ASYNC_RETRY_CODES";
    pub const CALLBACK_ALLOW: &str = "FAASGATE_CALLBACK_ALLOW";
    pub const QUEUE: &str = "FAASGATE_QUEUE";
    pub const WORKERS: &str = "FAASGATE_WORKERS";
    pub const UPSTREAM_READ_TIMEOUT: &str = "FAASGATE_UPSTREAM_READ_TIMEOUT";
    pub const UPSTREAM_IDLE_TIMEOUT: &str = "FAASGATE_UPSTREAM_IDLE_TIMEOUT";
    pub const UPSTREAM_MAX_IDLE: &str = "FAASGATE_UPSTREAM_MAX_IDLE";
    pub const MAX_CONNECTIONS: &str = "FAASGATE_MAX_CONNECTIONS";
    pub const ALLOW_UNDERSCORE_HEADERS: &str = "FAASGATE_ALLOW_UNDERSCORE_HEADERS";
    pub const SCALER_TICK: &str = "FAASGATE_SCALER_TICK";
    pub const SCALE_STABLE_WINDOW: &str = "FAASGATE_SCALE_STABLE_WINDOW";
    pub const SCALE_PANIC_WINDOW: &str = "FAASGATE_SCALE_PANIC_WINDOW";
    pub const SCALE_DOWN_DELAY: &str = "FAASGATE_SCALE_DOWN_DELAY";
    pub const ALERT_MIN_INTERVAL: &str = "FAASGATE_ALERT_MIN_INTERVAL";
    pub const PEERS: &str = "FAASGATE_PEERS";
    pub const CLUSTER_LOCK: &str = "FAASGATE_CLUSTER_LOCK";
    pub const CLUSTER_LOCK_TTL: &str = "FAASGATE_CLUSTER_LOCK_TTL";
    pub const CLUSTER_LOCK_DELAY: &str = "FAASGATE_CLUSTER_LOCK_DELAY";
    pub const CLUSTER_SERVICE: &str = "FAASGATE_CLUSTER_SERVICE";
    /// Set by Nomad in every task: this gateway's own allocation (left out of the members).
    pub const NOMAD_ALLOC_ID: &str = "NOMAD_ALLOC_ID";
    /// OpenFaaS gateway variables.
    pub(crate) const READ_TIMEOUT: &str = "read_timeout";
    pub(crate) const WRITE_TIMEOUT: &str = "write_timeout";
    pub const UPSTREAM_TIMEOUT: &str = "upstream_timeout";

    /// faasgate's Nomad provider flags.
    pub const NOMAD_DATACENTERS: &str = "FAASGATE_NOMAD_DATACENTERS";
    pub const NOMAD_JOB_PREFIX: &str = "FAASGATE_NOMAD_JOB_PREFIX";
    pub const NOMAD_JOB_TEMPLATE: &str = "FAASGATE_NOMAD_JOB_TEMPLATE";
    pub const DISCOVERY: &str = "FAASGATE_DISCOVERY";
    pub const NOMAD_WATCHDOG_PATH: &str = "FAASGATE_NOMAD_WATCHDOG_PATH";
    pub const NOMAD_UPDATE_DEADLINE: &str = "FAASGATE_NOMAD_UPDATE_DEADLINE";
    /// The standard Nomad client variables.
    pub const NOMAD_ADDR: &str = "NOMAD_ADDR";
    pub const NOMAD_TOKEN: &str = "NOMAD_TOKEN";
    pub const NOMAD_NAMESPACE: &str = "NOMAD_NAMESPACE";
    pub const NOMAD_REGION: &str = "NOMAD_REGION";
    pub(crate) const NOMAD_HTTP_AUTH: &str = "NOMAD_HTTP_AUTH";
    pub const NOMAD_CACERT: &str = "NOMAD_CACERT";
    pub const NOMAD_CAPATH: &str = "NOMAD_CAPATH";
    pub const NOMAD_CLIENT_CERT: &str = "NOMAD_CLIENT_CERT";
    pub const NOMAD_CLIENT_KEY: &str = "NOMAD_CLIENT_KEY";
    pub const NOMAD_TLS_SERVER_NAME: &str = "NOMAD_TLS_SERVER_NAME";
    pub const NOMAD_SKIP_VERIFY: &str = "NOMAD_SKIP_VERIFY";
    /// The standard Consul client variables.
    pub const CONSUL_HTTP_ADDR: &str = "CONSUL_HTTP_ADDR";
    pub const CONSUL_HTTP_TOKEN: &str = "CONSUL_HTTP_TOKEN";
    pub(crate) const CONSUL_HTTP_TOKEN_FILE: &str = "CONSUL_HTTP_TOKEN_FILE";
    pub(crate) const CONSUL_HTTP_AUTH: &str = "CONSUL_HTTP_AUTH";
    pub const CONSUL_HTTP_SSL: &str = "CONSUL_HTTP_SSL";
    pub const CONSUL_HTTP_SSL_VERIFY: &str = "CONSUL_HTTP_SSL_VERIFY";
    pub(crate) const CONSUL_NAMESPACE: &str = "CONSUL_NAMESPACE";
    pub const CONSUL_CACERT: &str = "CONSUL_CACERT";
    pub(crate) const CONSUL_CAPATH: &str = "CONSUL_CAPATH";
    pub const CONSUL_CLIENT_CERT: &str = "CONSUL_CLIENT_CERT";
    pub const CONSUL_CLIENT_KEY: &str = "CONSUL_CLIENT_KEY";
    pub const CONSUL_TLS_SERVER_NAME: &str = "CONSUL_TLS_SERVER_NAME";
}

#[derive(Debug, Error, PartialEq)]
#[error("{name}={value:?}: {rule}")]
pub struct ConfigError {
    pub name: String,
    pub value: String,
    pub rule: &'static str,
}

/// Which provider runs functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProviderKind {
    /// Functions run as child processes on this machine.
    Local,
    /// Functions run as Nomad jobs.
    Nomad,
}

/// Everything `faasgate serve` needs, resolved from flags and environment.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    pub provider: ProviderKind,
    pub data_dir: PathBuf,
    pub stacks: Vec<PathBuf>,
    pub auth: bool,
    pub timeouts: Timeouts,
    /// Largest `/system/*` request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// How long a request may wait for a ready replica (cold start, all replicas starting).
    pub hold_timeout: Duration,
    /// How many requests per function may wait at once (429 beyond).
    pub max_queue: u64,
    /// Settings of the nomad provider (`Some` when `provider` is `Nomad`).
    pub nomad: Option<crate::control::nomad::NomadOptions>,
    /// The queue-depth autoscaler and alert scaling.
    pub scaler: crate::control::scaler::ScalerConfig,
    /// Bounds of the client connections and the upstream leg.
    pub wire: WireLimits,
    /// The other gateways of this one's cluster (none: a gateway alone).
    pub cluster: ClusterConfig,
    /// Async invocations (`/async-function`).
    pub async_calls: AsyncConfig,
    /// How local replicas get their function's secrets.
    pub secrets_isolation: crate::control::local::SecretsIsolation,
}

/// The async queue (`queue`).
#[derive(Debug, Clone)]
pub struct AsyncConfig {
    /// Where calls are kept: the embedded store under the data dir (None), or NATS
    /// JetStream at this `nats://` URL, shared by every gateway that names it.
    pub nats: Option<String>,
    /// Largest body accepted (413 beyond).
    pub max_body: usize,
    /// Calls queued at most (429 beyond).
    pub max_queued: u64,
    pub dispatch: crate::queue::DispatchConfig,
    pub callbacks: crate::queue::CallbackConfig,
}

/// Several gateways acting as one (`control::cluster`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The other gateways, `host:port` as they listen (this one excluded). Empty: with the
    /// Nomad provider, the instances of `service` in the catalog its `discovery` names; else
    /// none.
    pub peers: Vec<String>,
    /// The gateways' own service in the catalog.
    pub service: String,
    /// This gateway's Nomad allocation, when it runs in one.
    pub self_alloc: Option<String>,
    /// The Nomad Variable whose lock elects the leader.
    pub lock_path: String,
    pub lease: crate::control::cluster::LeaseConfig,
}

/// The leader lock's default Nomad Variable path.
pub const DEFAULT_CLUSTER_LOCK: &str = "faasgate/leader";
/// The service the gateways' Nomad system job registers (`nomad/faasgate.nomad.hcl`).
pub const DEFAULT_CLUSTER_SERVICE: &str = "faasgate";

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            peers: Vec::new(),
            service: DEFAULT_CLUSTER_SERVICE.to_string(),
            self_alloc: None,
            lock_path: DEFAULT_CLUSTER_LOCK.to_string(),
            lease: Default::default(),
        }
    }
}

/// Bounds of the client side and the upstream leg of the data plane.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WireLimits {
    /// Bound on the wait for each next byte of a response body (nginx's
    /// `proxy_read_timeout`).
    pub upstream_read_timeout: Duration,
    /// An idle pooled upstream connection is closed after this (nginx's upstream
    /// `keepalive_timeout`).
    pub upstream_idle_timeout: Duration,
    /// Idle pooled upstream connections kept per replica (nginx's upstream `keepalive`).
    pub upstream_max_idle: usize,
    /// Client connections served at once; the listener stops accepting at this count (the
    /// kernel's backlog holds further ones) until one closes.
    pub max_connections: usize,
    /// Forward request headers whose names hold `_` (nginx's `underscores_in_headers`).
    pub allow_underscore_headers: bool,
}

impl Default for WireLimits {
    fn default() -> Self {
        Self {
            upstream_read_timeout: Duration::from_secs(60),
            upstream_idle_timeout: crate::http1::pool::DEFAULT_IDLE_TIMEOUT,
            upstream_max_idle: crate::http1::pool::DEFAULT_MAX_IDLE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            allow_underscore_headers: false,
        }
    }
}

/// Client connections served at once unless configured.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    /// Reading a request's headers.
    pub read: Duration,
    /// Bound on draining in-flight requests at shutdown.
    pub write: Duration,
    /// Waiting for a function's response headers (504 beyond).
    pub upstream: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            read: Duration::from_secs(60),
            write: Duration::from_secs(60),
            upstream: Duration::from_secs(60),
        }
    }
}

impl Timeouts {
    /// Reads `read_timeout`, `write_timeout`, `upstream_timeout` through `lookup`.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut t = Self::default();
        if let Some(v) = lookup(env::READ_TIMEOUT) {
            t.read = parse_duration(env::READ_TIMEOUT, &v)?;
        }
        if let Some(v) = lookup(env::WRITE_TIMEOUT) {
            t.write = parse_duration(env::WRITE_TIMEOUT, &v)?;
        }
        if let Some(v) = lookup(env::UPSTREAM_TIMEOUT) {
            t.upstream = parse_duration(env::UPSTREAM_TIMEOUT, &v)?;
        }
        Ok(t)
    }
}

/// Parses `30` (seconds) or a Go duration such as `1m30s`, `500ms`, `1.5s`, `2h`
/// (`model::duration`), naming `name` in the error.
pub fn parse_duration(name: &str, value: &str) -> Result<Duration, ConfigError> {
    crate::model::duration::parse(value).ok_or_else(|| ConfigError {
        name: name.to_string(),
        value: value.to_string(),
        rule: "expected seconds (e.g. 30) or a duration such as 500ms, 65s, 1m30s",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("t", "65").unwrap(), Duration::from_secs(65));
        assert_eq!(parse_duration("t", "65s").unwrap(), Duration::from_secs(65));
        assert_eq!(
            parse_duration("t", "1m30s").unwrap(),
            Duration::from_secs(90)
        );
        assert_eq!(
            parse_duration("t", "500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            parse_duration("t", "1.5s").unwrap(),
            Duration::from_millis(1500)
        );
        let e = parse_duration("write_timeout", "soon").unwrap_err();
        assert!(e.to_string().starts_with("write_timeout=\"soon\""));
        assert!(parse_duration("t", "").is_err());
        assert!(parse_duration("t", "10x").is_err());
        assert!(parse_duration("t", "s").is_err());
    }

    #[test]
    fn timeouts_from_env() {
        let t =
            Timeouts::from_env(|k| (k == env::UPSTREAM_TIMEOUT).then(|| "5s".to_string())).unwrap();
        assert_eq!(t.upstream, Duration::from_secs(5));
        assert_eq!(t.read, Duration::from_secs(60));
    }
}
