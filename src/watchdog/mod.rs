//! The function-side watchdog (`faasgate watchdog`), a drop-in for OpenFaaS's of-watchdog.
//!
//! Configured through of-watchdog's environment variables ([`config`]), it listens on
//! `bind_address:port` (default `0.0.0.0:8080`, so it works as a container entrypoint),
//! prints [`LISTENING_PREFIX`] + the bound address on stderr, and runs the function in one of
//! two modes:
//! - `streaming` ([`streaming`]): `fprocess` is forked per request with the CGI environment
//!   ([`cgi`]); the request body goes to its stdin and its stdout streams back.
//! - `http` ([`http`]): `fprocess` is started once and every request is reverse-proxied to
//!   `upstream_url` over pooled keep-alive connections, each exchange driven in the request's
//!   own task with the data plane's HTTP/1.1 upstream leg (`dataplane::{http1, pool, body}`).
//!
//! [`server`] owns the listener, `/_/health`, `/_/ready`, `max_inflight`, per-call logging and
//! graceful shutdown; [`response`] is the single place where a failed call becomes a status.
//! Child processes never outlive the watchdog ([`process`]).

pub(crate) mod cgi;
pub mod config;
pub(crate) mod http;
pub(crate) mod process;
pub(crate) mod response;
pub(crate) mod server;
pub(crate) mod stderr;
pub(crate) mod streaming;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

pub use config::Mode;
pub use config::WatchdogConfig;
pub use server::run;
use stderr::log;

/// Printed to stderr, followed by `ip:port` and a newline, once the watchdog listens.
/// The local provider reads it to learn the replica's address (with `port=0`).
pub const LISTENING_PREFIX: &str = "faasgate watchdog listening on ";

#[derive(Debug, Error)]
pub enum WatchdogError {
    #[error("{0}")]
    Config(String),
    #[error("config: {0}")]
    Env(#[from] crate::config::ConfigError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("can't start fprocess {program:?}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("upstream_url {url}: {why}")]
    Upstream { url: String, why: String },
    #[error("upstream {addr} did not accept connections within {waited:?}")]
    UpstreamNotReady { addr: SocketAddr, waited: Duration },
    #[error("fprocess exited: {0}")]
    ProcessExited(String),
}

/// Reads the of-watchdog environment, binds, serves until SIGTERM/SIGINT, then drains.
pub async fn run_from_env() -> Result<(), WatchdogError> {
    let config = WatchdogConfig::from_process_env()?;
    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| WatchdogError::Bind {
                addr: config.listen,
                source,
            })?;
    let addr = listener.local_addr()?;
    stderr::raw(format_args!("{LISTENING_PREFIX}{addr}"));
    run(config, listener, shutdown_signal()?).await
}

/// Resolves on the first SIGTERM or SIGINT (handlers installed before it returns).
pub fn shutdown_signal() -> Result<impl Future<Output = ()>, WatchdogError> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => log!("SIGTERM received"),
            _ = int.recv() => log!("SIGINT received"),
        }
    })
}
