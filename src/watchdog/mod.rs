//! The function-side watchdog (pending: being written).

use thiserror::Error;

/// Printed to stderr, followed by `ip:port` and a newline, once the watchdog listens.
/// The local provider reads it to learn the replica's address (with `port=0`).
pub const LISTENING_PREFIX: &str = "faasgate watchdog listening on ";

#[derive(Debug, Error)]
pub enum WatchdogError {
    #[error("{0}")]
    Config(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads the of-watchdog environment, binds, serves until SIGTERM/SIGINT, then drains.
pub async fn run_from_env() -> Result<(), WatchdogError> {
    Err(WatchdogError::Config("not yet built".into()))
}
