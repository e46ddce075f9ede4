//! Client settings from the standard Nomad and Consul environment variables, resolved once.
//!
//! Honoured: `NOMAD_ADDR` (default `http://127.0.0.1:4646`; `http://`, `unix://` or bare
//! `host:port`), `NOMAD_TOKEN` (`X-Nomad-Token`), `NOMAD_NAMESPACE`, `NOMAD_REGION`,
//! `NOMAD_HTTP_AUTH` (`user[:pass]`); `CONSUL_HTTP_ADDR` (default `127.0.0.1:8500`),
//! `CONSUL_HTTP_TOKEN` / `CONSUL_HTTP_TOKEN_FILE` (`X-Consul-Token`, the file wins),
//! `CONSUL_HTTP_AUTH`, `CONSUL_NAMESPACE` (`ns`), and the Consul datacenter is the agent's.
//!
//! TLS is not built into this binary. Rather than ignore a TLS setting, resolving fails with a
//! [`ConfigError`] naming the variable: an `https://` address, `NOMAD_CACERT`, `NOMAD_CAPATH`,
//! `NOMAD_CLIENT_CERT`, `NOMAD_CLIENT_KEY`, `NOMAD_TLS_SERVER_NAME`, a true
//! `NOMAD_SKIP_VERIFY`, a true `CONSUL_HTTP_SSL`, and the `CONSUL_*` TLS twins. Reach a TLS
//! cluster through the local agent's plain-HTTP address or a TLS-terminating proxy.

use crate::client::transport::Endpoint;
use crate::client::Secret;
use crate::config::{env, ConfigError};

/// Resolved Nomad client settings.
#[derive(Debug, Clone)]
pub struct NomadSettings {
    pub endpoint: Endpoint,
    pub token: Secret,
    /// The Nomad namespace every request names (`?namespace=`); `None` = the server default.
    pub namespace: Option<String>,
    pub region: Option<String>,
    /// Basic auth for a proxy in front of Nomad.
    pub http_auth: Option<(String, Secret)>,
}

/// Resolved Consul client settings.
#[derive(Debug, Clone)]
pub struct ConsulSettings {
    pub endpoint: Endpoint,
    pub token: Secret,
    pub http_auth: Option<(String, Secret)>,
    /// Consul Enterprise namespace (`?ns=`).
    pub namespace: Option<String>,
}

const TLS_RULE: &str = "TLS is not built into faasgate: use the agent's plain-HTTP address \
                        (e.g. http://127.0.0.1:4646) or a TLS-terminating proxy, and unset this";

// === impl NomadSettings ===

impl NomadSettings {
    pub const DEFAULT_ADDR: &'static str = "http://127.0.0.1:4646";

    /// Reads the `NOMAD_*` variables through `lookup` (empty values count as unset).
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        for name in [
            env::NOMAD_CACERT,
            env::NOMAD_CAPATH,
            env::NOMAD_CLIENT_CERT,
            env::NOMAD_CLIENT_KEY,
            env::NOMAD_TLS_SERVER_NAME,
        ] {
            if let Some(v) = get(name) {
                return Err(tls_error(name, &v));
            }
        }
        if let Some(v) = get(env::NOMAD_SKIP_VERIFY) {
            if parse_bool(env::NOMAD_SKIP_VERIFY, &v)? {
                return Err(tls_error(env::NOMAD_SKIP_VERIFY, &v));
            }
        }
        let addr = get(env::NOMAD_ADDR).unwrap_or_else(|| Self::DEFAULT_ADDR.to_string());
        let endpoint = Endpoint::parse(env::NOMAD_ADDR, &addr)?;
        Ok(Self {
            endpoint,
            token: Secret::new(get(env::NOMAD_TOKEN).unwrap_or_default().trim()),
            namespace: get(env::NOMAD_NAMESPACE),
            region: get(env::NOMAD_REGION),
            http_auth: get(env::NOMAD_HTTP_AUTH).map(|v| split_auth(&v)),
        })
    }

    /// Settings for an address with nothing else set (tests, `faasgate render`).
    pub fn for_addr(addr: &str) -> Result<Self, ConfigError> {
        Self::from_env(|k| (k == env::NOMAD_ADDR).then(|| addr.to_string()))
    }
}

// === impl ConsulSettings ===

impl ConsulSettings {
    pub const DEFAULT_ADDR: &'static str = "127.0.0.1:8500";

    /// Reads the `CONSUL_*` variables through `lookup` (empty values count as unset).
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        for name in [
            env::CONSUL_CACERT,
            env::CONSUL_CAPATH,
            env::CONSUL_CLIENT_CERT,
            env::CONSUL_CLIENT_KEY,
            env::CONSUL_TLS_SERVER_NAME,
        ] {
            if let Some(v) = get(name) {
                return Err(tls_error(name, &v));
            }
        }
        if let Some(v) = get(env::CONSUL_HTTP_SSL) {
            if parse_bool(env::CONSUL_HTTP_SSL, &v)? {
                return Err(tls_error(env::CONSUL_HTTP_SSL, &v));
            }
        }
        let addr = get(env::CONSUL_HTTP_ADDR).unwrap_or_else(|| Self::DEFAULT_ADDR.to_string());
        let endpoint = Endpoint::parse(env::CONSUL_HTTP_ADDR, &addr)?;
        let token = match get(env::CONSUL_HTTP_TOKEN_FILE) {
            Some(path) => {
                let t = std::fs::read_to_string(path.trim()).map_err(|_| ConfigError {
                    name: env::CONSUL_HTTP_TOKEN_FILE.into(),
                    value: path.clone(),
                    rule: "must name a readable file holding the Consul ACL token",
                })?;
                Secret::new(t.trim())
            }
            None => Secret::new(get(env::CONSUL_HTTP_TOKEN).unwrap_or_default().trim()),
        };
        Ok(Self {
            endpoint,
            token,
            http_auth: get(env::CONSUL_HTTP_AUTH).map(|v| split_auth(&v)),
            namespace: get(env::CONSUL_NAMESPACE),
        })
    }

    /// Settings for an address with nothing else set (tests).
    pub fn for_addr(addr: &str) -> Result<Self, ConfigError> {
        Self::from_env(|k| (k == env::CONSUL_HTTP_ADDR).then(|| addr.to_string()))
    }
}

fn tls_error(name: &str, value: &str) -> ConfigError {
    // Paths and server names are not secrets; still, show only what is needed.
    ConfigError {
        name: name.to_string(),
        value: value.to_string(),
        rule: TLS_RULE,
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(name: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(ConfigError {
            name: name.to_string(),
            value: value.to_string(),
            rule: "expected a boolean (true, false, 1, 0)",
        }),
    }
}

fn split_auth(v: &str) -> (String, Secret) {
    match v.split_once(':') {
        Some((u, p)) => (u.to_string(), Secret::new(p)),
        None => (v.to_string(), Secret::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn nomad_defaults_and_values() {
        let s = NomadSettings::from_env(lookup(&[])).unwrap();
        assert_eq!(s.endpoint.to_string(), "http://127.0.0.1:4646");
        assert!(s.token.is_empty() && s.namespace.is_none() && s.region.is_none());
        let s = NomadSettings::from_env(lookup(&[
            ("NOMAD_ADDR", "http://nomad.service:4646/"),
            ("NOMAD_TOKEN", " abc "),
            ("NOMAD_NAMESPACE", "functions"),
            ("NOMAD_REGION", "eu"),
            ("NOMAD_SKIP_VERIFY", "false"),
        ]))
        .unwrap();
        assert_eq!(s.token.expose(), "abc");
        assert_eq!(s.namespace.as_deref(), Some("functions"));
        assert_eq!(s.region.as_deref(), Some("eu"));
        assert!(!format!("{s:?}").contains("abc"));
    }

    #[test]
    fn tls_settings_are_refused_by_name() {
        for (k, v) in [
            ("NOMAD_ADDR", "https://nomad:4646"),
            ("NOMAD_CACERT", "/etc/nomad/ca.pem"),
            ("NOMAD_CLIENT_CERT", "/c.pem"),
            ("NOMAD_SKIP_VERIFY", "true"),
            ("NOMAD_TLS_SERVER_NAME", "server.global.nomad"),
        ] {
            let e = NomadSettings::from_env(lookup(&[(k, v)])).unwrap_err();
            assert_eq!(e.name, k, "{e}");
            assert!(e.to_string().contains("TLS"), "{e}");
        }
        let e = ConsulSettings::from_env(lookup(&[("CONSUL_HTTP_SSL", "true")])).unwrap_err();
        assert_eq!(e.name, "CONSUL_HTTP_SSL");
        let e = NomadSettings::from_env(lookup(&[("NOMAD_SKIP_VERIFY", "maybe")])).unwrap_err();
        assert!(e.rule.contains("boolean"));
    }

    #[test]
    fn consul_bare_address_and_token_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "file-token\n").unwrap();
        let s = ConsulSettings::from_env(lookup(&[
            ("CONSUL_HTTP_ADDR", "10.0.0.1:8500"),
            ("CONSUL_HTTP_TOKEN", "env-token"),
            ("CONSUL_HTTP_TOKEN_FILE", f.to_str().unwrap()),
        ]))
        .unwrap();
        assert_eq!(s.endpoint.to_string(), "http://10.0.0.1:8500");
        assert_eq!(s.token.expose(), "file-token");
    }
}
