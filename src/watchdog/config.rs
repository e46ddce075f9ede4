//! The watchdog's configuration, read from of-watchdog's environment variables.
//!
//! Owns: every env var name the watchdog reads (see [`env`](mod@env)) and their parsing into one typed
//! [`WatchdogConfig`]. Invariants: a `WatchdogConfig` always has a non-empty `fprocess`, and in
//! `http` mode an `http://host[:port]` upstream. Parsing reads through a lookup function (not
//! the process environment directly) so it is testable; errors name the variable, the value
//! and the rule. Durations are seconds or Go durations (`crate::config::parse_duration`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use http::Uri;

use crate::config::{parse_duration, ConfigError};

/// Environment variable names (of-watchdog's, plus `bind_address`).
pub(crate) mod env {
    pub(crate) const FPROCESS: &str = "fprocess";
    pub(crate) const FUNCTION_PROCESS: &str = "function_process";
    pub(crate) const MODE: &str = "mode";
    pub(crate) const UPSTREAM_URL: &str = "upstream_url";
    pub(crate) const HTTP_UPSTREAM_URL: &str = "http_upstream_url";
    pub(crate) const PORT: &str = "port";
    /// faasgate extension: the address to bind (default `0.0.0.0`).
    pub(crate) const BIND_ADDRESS: &str = "bind_address";
    pub(crate) const READ_TIMEOUT: &str = "read_timeout";
    pub(crate) const WRITE_TIMEOUT: &str = "write_timeout";
    pub(crate) const EXEC_TIMEOUT: &str = "exec_timeout";
    pub(crate) const MAX_INFLIGHT: &str = "max_inflight";
    pub(crate) const CONTENT_TYPE: &str = "content_type";
}

/// of-watchdog's default for read, write and exec timeouts.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// of-watchdog's default port.
pub(crate) const DEFAULT_PORT: u16 = 8080;

/// How requests reach the function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Fork `fprocess` per request: body to stdin, stdout to the response.
    Streaming,
    /// Start `fprocess` once and reverse-proxy every request to `upstream`.
    Http { upstream: Uri },
}

/// Everything the watchdog needs, parsed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogConfig {
    /// The command and its arguments (never empty).
    pub fprocess: Vec<String>,
    pub mode: Mode,
    /// Where to listen (`bind_address`:`port`).
    pub listen: SocketAddr,
    /// Bound on reading a request's headers.
    pub read_timeout: Duration,
    /// Bound on draining in-flight requests at shutdown.
    pub write_timeout: Duration,
    /// Bound on a call until its response starts (zero: none).
    pub exec_timeout: Duration,
    /// Concurrent calls allowed (zero: unlimited); 429 beyond.
    pub max_inflight: usize,
    /// Response Content-Type in streaming mode, overriding the request's.
    pub content_type: Option<String>,
}

// === impl WatchdogConfig ===

impl WatchdogConfig {
    /// Reads the configuration from the process environment.
    pub(crate) fn from_process_env() -> Result<Self, ConfigError> {
        Self::from_env(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (an env var name -> its value).
    pub(crate) fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        // Empty values count as unset, as in of-watchdog.
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());

        let fprocess: Vec<String> = get(env::FPROCESS)
            .or_else(|| get(env::FUNCTION_PROCESS))
            .map(|v| v.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        if fprocess.is_empty() {
            return Err(ConfigError {
                name: env::FPROCESS.to_string(),
                value: String::new(),
                rule: "required: the function's command (or set function_process)",
            });
        }

        let mode = match get(env::MODE).as_deref().map(str::trim) {
            None | Some("streaming") => Mode::Streaming,
            Some("http") => {
                let (name, value) = match get(env::UPSTREAM_URL) {
                    Some(v) => (env::UPSTREAM_URL, v),
                    None => match get(env::HTTP_UPSTREAM_URL) {
                        Some(v) => (env::HTTP_UPSTREAM_URL, v),
                        None => {
                            return Err(ConfigError {
                                name: env::UPSTREAM_URL.to_string(),
                                value: String::new(),
                                rule: "required in http mode, e.g. http://127.0.0.1:5000",
                            })
                        }
                    },
                };
                Mode::Http {
                    upstream: parse_upstream(name, &value)?,
                }
            }
            Some(other) => {
                return Err(ConfigError {
                    name: env::MODE.to_string(),
                    value: other.to_string(),
                    rule: "expected streaming or http",
                })
            }
        };

        let port = match get(env::PORT) {
            None => DEFAULT_PORT,
            Some(v) => v.trim().parse::<u16>().map_err(|_| ConfigError {
                name: env::PORT.to_string(),
                value: v.clone(),
                rule: "expected a TCP port 0-65535 (0: any free port)",
            })?,
        };
        let ip = match get(env::BIND_ADDRESS) {
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Some(v) => v.trim().parse::<IpAddr>().map_err(|_| ConfigError {
                name: env::BIND_ADDRESS.to_string(),
                value: v.clone(),
                rule: "expected an IP address such as 0.0.0.0 or 127.0.0.1",
            })?,
        };

        let duration = |name: &str| match get(name) {
            None => Ok(DEFAULT_TIMEOUT),
            Some(v) => parse_duration(name, &v),
        };

        let max_inflight = match get(env::MAX_INFLIGHT) {
            None => 0,
            Some(v) => v.trim().parse::<usize>().map_err(|_| ConfigError {
                name: env::MAX_INFLIGHT.to_string(),
                value: v.clone(),
                rule: "expected a whole number of concurrent requests (0: unlimited)",
            })?,
        };

        Ok(Self {
            fprocess,
            mode,
            listen: SocketAddr::new(ip, port),
            read_timeout: duration(env::READ_TIMEOUT)?,
            write_timeout: duration(env::WRITE_TIMEOUT)?,
            exec_timeout: duration(env::EXEC_TIMEOUT)?,
            max_inflight,
            content_type: get(env::CONTENT_TYPE),
        })
    }
}

/// Checks an upstream URL: `http://host[:port][/prefix]`.
fn parse_upstream(name: &str, value: &str) -> Result<Uri, ConfigError> {
    let err = || ConfigError {
        name: name.to_string(),
        value: value.to_string(),
        rule: "expected an http:// URL with a host, e.g. http://127.0.0.1:5000",
    };
    let uri: Uri = value.trim().parse().map_err(|_| err())?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(err());
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<WatchdogConfig, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        WatchdogConfig::from_env(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = parse(&[("fprocess", "cat")]).unwrap();
        assert_eq!(c.fprocess, vec!["cat"]);
        assert_eq!(c.mode, Mode::Streaming);
        assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.read_timeout, Duration::from_secs(30));
        assert_eq!(c.write_timeout, Duration::from_secs(30));
        assert_eq!(c.exec_timeout, Duration::from_secs(30));
        assert_eq!(c.max_inflight, 0);
        assert_eq!(c.content_type, None);
    }

    #[test]
    fn fprocess_splits_on_whitespace_and_falls_back() {
        let c = parse(&[("function_process", "  python3   index.py  -u ")]).unwrap();
        assert_eq!(c.fprocess, vec!["python3", "index.py", "-u"]);
        let c = parse(&[("fprocess", "a b"), ("function_process", "c")]).unwrap();
        assert_eq!(c.fprocess, vec!["a", "b"]);
        let e = parse(&[("fprocess", "  ")]).unwrap_err();
        assert_eq!(e.name, "fprocess");
    }

    #[test]
    fn mode_and_upstream() {
        let c = parse(&[
            ("fprocess", "node index.js"),
            ("mode", "http"),
            ("http_upstream_url", "http://127.0.0.1:3000"),
        ])
        .unwrap();
        assert_eq!(
            c.mode,
            Mode::Http {
                upstream: "http://127.0.0.1:3000".parse().unwrap()
            }
        );
        let e = parse(&[("fprocess", "x"), ("mode", "http")]).unwrap_err();
        assert_eq!(e.name, "upstream_url");
        let e = parse(&[
            ("fprocess", "x"),
            ("mode", "http"),
            ("upstream_url", "https://x"),
        ])
        .unwrap_err();
        assert_eq!(e.name, "upstream_url");
        let e = parse(&[("fprocess", "x"), ("mode", "serializing")]).unwrap_err();
        assert_eq!(e.name, "mode");
        assert!(e.to_string().contains("mode=\"serializing\""), "{e}");
    }

    #[test]
    fn numbers_durations_and_address() {
        let c = parse(&[
            ("fprocess", "x"),
            ("port", "0"),
            ("bind_address", "127.0.0.1"),
            ("read_timeout", "5"),
            ("write_timeout", "500ms"),
            ("exec_timeout", "1m30s"),
            ("max_inflight", "4"),
            ("content_type", "text/plain"),
        ])
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(c.read_timeout, Duration::from_secs(5));
        assert_eq!(c.write_timeout, Duration::from_millis(500));
        assert_eq!(c.exec_timeout, Duration::from_secs(90));
        assert_eq!(c.max_inflight, 4);
        assert_eq!(c.content_type.as_deref(), Some("text/plain"));
        for (name, bad) in [
            ("port", "70000"),
            ("bind_address", "localhost"),
            ("exec_timeout", "soon"),
            ("max_inflight", "-1"),
        ] {
            let e = parse(&[("fprocess", "x"), (name, bad)]).unwrap_err();
            assert_eq!(e.name, name);
        }
    }
}
