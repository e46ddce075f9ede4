//! Client settings from the standard Nomad and Consul environment variables, resolved once.
//!
//! Honoured: `NOMAD_ADDR` (default `http://127.0.0.1:4646`; `http://`, `https://`,
//! `unix://` or bare `host:port`), `NOMAD_TOKEN` (`X-Nomad-Token`), `NOMAD_NAMESPACE`,
//! `NOMAD_REGION`, `NOMAD_HTTP_AUTH` (`user[:pass]`); `CONSUL_HTTP_ADDR` (default
//! `127.0.0.1:8500`), `CONSUL_HTTP_TOKEN` / `CONSUL_HTTP_TOKEN_FILE` (`X-Consul-Token`, the
//! file wins), `CONSUL_HTTP_AUTH`, `CONSUL_NAMESPACE` (`ns`), and the Consul datacenter is
//! the agent's.
//!
//! TLS, as the Go clients read it: an `https://` address (or, for Consul, a bare address with
//! `CONSUL_HTTP_SSL=true`) connects over TLS configured by `NOMAD_CACERT` / `NOMAD_CAPATH`
//! (verification roots; default the compiled-in Mozilla roots), `NOMAD_CLIENT_CERT` +
//! `NOMAD_CLIENT_KEY` (mTLS), `NOMAD_TLS_SERVER_NAME` (SNI and the name verified, e.g.
//! `server.global.nomad`), `NOMAD_SKIP_VERIFY=true`; and the `CONSUL_*` twins, with
//! `CONSUL_HTTP_SSL_VERIFY=false` for skip-verify. The files are loaded and checked here, so
//! a bad file fails at startup with a [`ConfigError`] naming the variable and the path. With
//! an `http://` address the TLS variables are ignored, as the Go clients do, with a warning.

use std::path::PathBuf;

use crate::client::tls::{TlsConnector, TlsOptions, TlsVars};
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
    pub(crate) http_auth: Option<(String, Secret)>,
    /// Set when the address is `https`.
    pub tls: Option<TlsConnector>,
}

/// Resolved Consul client settings.
#[derive(Debug, Clone)]
pub struct ConsulSettings {
    pub endpoint: Endpoint,
    pub token: Secret,
    pub(crate) http_auth: Option<(String, Secret)>,
    /// Consul Enterprise namespace (`?ns=`).
    pub namespace: Option<String>,
    /// Set when the address is `https` (or bare with `CONSUL_HTTP_SSL=true`).
    pub tls: Option<TlsConnector>,
}

const NOMAD_TLS: TlsVars = TlsVars {
    ca_cert: env::NOMAD_CACERT,
    ca_path: env::NOMAD_CAPATH,
    client_cert: env::NOMAD_CLIENT_CERT,
    client_key: env::NOMAD_CLIENT_KEY,
    server_name: env::NOMAD_TLS_SERVER_NAME,
    skip_verify: env::NOMAD_SKIP_VERIFY,
};

const CONSUL_TLS: TlsVars = TlsVars {
    ca_cert: env::CONSUL_CACERT,
    ca_path: env::CONSUL_CAPATH,
    client_cert: env::CONSUL_CLIENT_CERT,
    client_key: env::CONSUL_CLIENT_KEY,
    server_name: env::CONSUL_TLS_SERVER_NAME,
    skip_verify: env::CONSUL_HTTP_SSL_VERIFY,
};

// === impl NomadSettings ===

impl NomadSettings {
    pub(crate) const DEFAULT_ADDR: &'static str = "http://127.0.0.1:4646";

    /// Reads the `NOMAD_*` variables through `lookup` (empty values count as unset).
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let addr = get(env::NOMAD_ADDR).unwrap_or_else(|| Self::DEFAULT_ADDR.to_string());
        let endpoint = Endpoint::parse(env::NOMAD_ADDR, &addr)?;
        let skip_verify = match get(env::NOMAD_SKIP_VERIFY) {
            Some(v) => parse_bool(env::NOMAD_SKIP_VERIFY, &v)?,
            None => false,
        };
        let opts = tls_options(&get, &NOMAD_TLS, skip_verify);
        let tls = resolve_tls("nomad", &endpoint, &NOMAD_TLS, &opts)?;
        Ok(Self {
            tls,
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
    pub(crate) const DEFAULT_ADDR: &'static str = "127.0.0.1:8500";

    /// Reads the `CONSUL_*` variables through `lookup` (empty values count as unset).
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let ssl = match get(env::CONSUL_HTTP_SSL) {
            Some(v) => parse_bool(env::CONSUL_HTTP_SSL, &v)?,
            None => false,
        };
        let addr = get(env::CONSUL_HTTP_ADDR).unwrap_or_else(|| Self::DEFAULT_ADDR.to_string());
        let endpoint = Endpoint::parse_with(env::CONSUL_HTTP_ADDR, &addr, ssl)?;
        let verify = match get(env::CONSUL_HTTP_SSL_VERIFY) {
            Some(v) => parse_bool(env::CONSUL_HTTP_SSL_VERIFY, &v)?,
            None => true,
        };
        let opts = tls_options(&get, &CONSUL_TLS, !verify);
        let tls = resolve_tls("consul", &endpoint, &CONSUL_TLS, &opts)?;
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
            tls,
        })
    }

    /// Settings for an address with nothing else set (tests).
    pub fn for_addr(addr: &str) -> Result<Self, ConfigError> {
        Self::from_env(|k| (k == env::CONSUL_HTTP_ADDR).then(|| addr.to_string()))
    }
}

fn tls_options(get: &dyn Fn(&str) -> Option<String>, vars: &TlsVars, skip: bool) -> TlsOptions {
    let path = |k: &str| get(k).map(|v| PathBuf::from(v.trim()));
    TlsOptions {
        ca_cert: path(vars.ca_cert),
        ca_path: path(vars.ca_path),
        client_cert: path(vars.client_cert),
        client_key: path(vars.client_key),
        server_name: get(vars.server_name).map(|v| v.trim().to_string()),
        skip_verify: skip,
    }
}

/// Builds the TLS configuration for an `https` endpoint; for a clear one, TLS variables are
/// ignored (the Go clients' rule) with a warning naming them.
fn resolve_tls(
    service: &'static str,
    endpoint: &Endpoint,
    vars: &TlsVars,
    opts: &TlsOptions,
) -> Result<Option<TlsConnector>, ConfigError> {
    if endpoint.is_tls() {
        return TlsConnector::build(service, vars, opts).map(Some);
    }
    if *opts != TlsOptions::default() {
        tracing::warn!(
            service,
            address = %endpoint,
            "TLS variables are set but the address is not https: they are ignored ({}, ...)",
            vars.ca_cert
        );
    }
    Ok(None)
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
    fn tls_settings_are_read_and_checked() {
        // https with no CA file: the compiled-in roots.
        let s = NomadSettings::from_env(lookup(&[("NOMAD_ADDR", "https://nomad:4646")])).unwrap();
        assert!(s.endpoint.is_tls() && s.tls.is_some());
        // A CA file that does not exist: named, with its path.
        let e = NomadSettings::from_env(lookup(&[
            ("NOMAD_ADDR", "https://nomad:4646"),
            ("NOMAD_CACERT", "/nonexistent/ca.pem"),
        ]))
        .unwrap_err();
        assert_eq!(e.name, "NOMAD_CACERT");
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        let e = NomadSettings::from_env(lookup(&[
            ("NOMAD_ADDR", "https://nomad:4646"),
            ("NOMAD_TLS_SERVER_NAME", "bad name"),
        ]))
        .unwrap_err();
        assert_eq!(e.name, "NOMAD_TLS_SERVER_NAME");
        // With an http address the TLS variables are ignored, as the Go client does.
        let s = NomadSettings::from_env(lookup(&[
            ("NOMAD_ADDR", "http://nomad:4646"),
            ("NOMAD_CACERT", "/nonexistent/ca.pem"),
            ("NOMAD_SKIP_VERIFY", "true"),
        ]))
        .unwrap();
        assert!(s.tls.is_none());
        let e = NomadSettings::from_env(lookup(&[("NOMAD_SKIP_VERIFY", "maybe")])).unwrap_err();
        assert!(e.rule.contains("boolean"));

        // Consul: CONSUL_HTTP_SSL makes a bare address https; SSL_VERIFY=false skips checks.
        let s = ConsulSettings::from_env(lookup(&[
            ("CONSUL_HTTP_ADDR", "10.0.0.1:8501"),
            ("CONSUL_HTTP_SSL", "true"),
            ("CONSUL_HTTP_SSL_VERIFY", "false"),
        ]))
        .unwrap();
        assert_eq!(s.endpoint.to_string(), "https://10.0.0.1:8501");
        assert!(s.tls.is_some());
        let e = ConsulSettings::from_env(lookup(&[
            ("CONSUL_HTTP_ADDR", "https://consul:8501"),
            ("CONSUL_CLIENT_KEY", "/k.pem"),
        ]))
        .unwrap_err();
        assert_eq!(e.name, "CONSUL_CLIENT_KEY");
        let e = ConsulSettings::from_env(lookup(&[("CONSUL_HTTP_SSL_VERIFY", "nah")])).unwrap_err();
        assert_eq!(e.name, "CONSUL_HTTP_SSL_VERIFY");
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
