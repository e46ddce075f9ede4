//! TLS for the Nomad and Consul clients (rustls with the `ring` provider, TLS 1.2 and 1.3).
//!
//! Everything is read and checked once, when the settings are resolved: an unreadable file,
//! a file without the PEM block it should hold, or a client key that does not belong to the
//! client certificate is a [`ConfigError`] naming the variable and the file, never the file's
//! contents. Verification roots are the CA file (`*_CACERT`) and every certificate in the CA
//! directory (`*_CAPATH`) when either is set, else the Mozilla roots compiled in
//! (`webpki-roots`), as the Go clients fall back to the system's. `*_SKIP_VERIFY`
//! (`CONSUL_HTTP_SSL_VERIFY=false`) accepts any server certificate and warns once. The
//! handshake itself is hyper-rustls's ([`TlsConnector::https`]), run with this configuration.
//!
//! Invariant: key material lives only inside the rustls configuration; this module's
//! `Debug` output and errors carry paths, names and modes.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{self, CryptoProvider};
use tokio_rustls::rustls::{self, ClientConfig, DigitallySignedStruct, RootCertStore};

use crate::config::ConfigError;

/// The variable names of one service's TLS settings (for errors).
#[derive(Debug, Clone, Copy)]
pub struct TlsVars {
    pub ca_cert: &'static str,
    pub ca_path: &'static str,
    pub client_cert: &'static str,
    pub client_key: &'static str,
    pub server_name: &'static str,
    pub skip_verify: &'static str,
}

/// TLS options as read from the environment: paths and names, no key material.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    pub ca_cert: Option<PathBuf>,
    pub ca_path: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// The name sent as SNI and checked against the certificate (default: the address host).
    pub server_name: Option<String>,
    pub skip_verify: bool,
}

/// A checked client TLS configuration, shared by every connection to one agent.
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
    roots: Roots,
    client_auth: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Roots {
    Files,
    WebPki,
    SkipVerify,
}

/// Accepts any server certificate (`*_SKIP_VERIFY`); signatures are still checked so the
/// handshake itself stays sound, only the chain and name are not.
#[derive(Debug)]
struct AcceptAnyServerCert {
    provider: Arc<CryptoProvider>,
    service: &'static str,
    warned: AtomicBool,
}

// === impl TlsConnector ===

impl TlsConnector {
    /// Loads and checks every file `opts` names; `service` is "nomad" or "consul" (logs).
    pub fn build(
        service: &'static str,
        vars: &TlsVars,
        opts: &TlsOptions,
    ) -> Result<Self, ConfigError> {
        let provider = Arc::new(crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default TLS versions");

        let (builder, roots) = if opts.skip_verify {
            let verifier = Arc::new(AcceptAnyServerCert {
                provider: provider.clone(),
                service,
                warned: AtomicBool::new(false),
            });
            (
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(verifier),
                Roots::SkipVerify,
            )
        } else {
            let mut store = RootCertStore::empty();
            let roots = if opts.ca_cert.is_none() && opts.ca_path.is_none() {
                store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                Roots::WebPki
            } else {
                if let Some(f) = &opts.ca_cert {
                    add_ca_file(&mut store, vars.ca_cert, f, true)?;
                }
                if let Some(dir) = &opts.ca_path {
                    add_ca_dir(&mut store, vars.ca_path, dir)?;
                }
                Roots::Files
            };
            (builder.with_root_certificates(store), roots)
        };

        let (config, client_auth) = match (&opts.client_cert, &opts.client_key) {
            (None, None) => (builder.with_no_client_auth(), false),
            (Some(_), None) | (None, Some(_)) => {
                let (name, value) = match &opts.client_cert {
                    Some(p) => (vars.client_cert, p),
                    None => (vars.client_key, opts.client_key.as_ref().expect("key set")),
                };
                return Err(err(
                    name,
                    value,
                    "the client certificate and the client key must be set together \
                     (*_CLIENT_CERT and *_CLIENT_KEY)",
                ));
            }
            (Some(cert_path), Some(key_path)) => {
                let certs = read_certs(vars.client_cert, cert_path)?;
                let key = read_key(vars.client_key, key_path)?;
                let config = builder.with_client_auth_cert(certs, key).map_err(|e| {
                    let rule = match e {
                        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                            "the private key does not belong to the client certificate"
                        }
                        _ => "the private key is not usable (unsupported key type or corrupt)",
                    };
                    err(vars.client_key, key_path, rule)
                })?;
                (config, true)
            }
        };

        let server_name = match &opts.server_name {
            Some(n) => {
                Some(
                    ServerName::try_from(n.trim().to_string()).map_err(|_| ConfigError {
                        name: vars.server_name.to_string(),
                        value: n.clone(),
                        rule: "expected a DNS name or an IP address, e.g. server.global.nomad",
                    })?,
                )
            }
            None => None,
        };
        Ok(Self {
            config: Arc::new(config),
            server_name,
            roots,
            client_auth,
        })
    }

    /// The name verified for a connection to `host` (the address host, without brackets).
    pub fn server_name_for(&self, host: &str) -> std::io::Result<ServerName<'static>> {
        if let Some(n) = &self.server_name {
            return Ok(n.clone());
        }
        let h = host.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(h.to_string()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{h:?} is not a valid TLS server name; set *_TLS_SERVER_NAME"),
            )
        })
    }

    /// An `https` connector over `tcp` with this configuration, for the pooled client: SNI
    /// and the verified name are `*_TLS_SERVER_NAME` when set, else the address host. No
    /// ALPN is offered (HTTP/1.1 only).
    pub(crate) fn https(&self, tcp: HttpConnector) -> HttpsConnector<HttpConnector> {
        let names = self.clone();
        let resolve = move |uri: &Uri| names.server_name_for(uri.host().unwrap_or_default());
        HttpsConnector::new(tcp, self.config.clone(), false, Arc::new(resolve))
    }
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("roots", &self.roots)
            .field("client_auth", &self.client_auth)
            .field("server_name", &self.server_name)
            .finish()
    }
}

// === impl AcceptAnyServerCert ===

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                service = self.service,
                server_name = ?server_name,
                "TLS verification is OFF (skip-verify): any server certificate is accepted; \
                 set a CA file instead"
            );
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

// === file loading ===

fn err(name: &str, path: &Path, rule: &'static str) -> ConfigError {
    ConfigError {
        name: name.to_string(),
        value: path.display().to_string(),
        rule,
    }
}

fn read_file(name: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| {
        let rule = match e.kind() {
            std::io::ErrorKind::NotFound => "file not found",
            std::io::ErrorKind::PermissionDenied => "file cannot be read: permission denied",
            _ if path.is_dir() => "expected a file, found a directory",
            _ => "file cannot be read",
        };
        err(name, path, rule)
    })
}

/// Every certificate of a PEM file; none, or a broken block, is an error.
fn read_certs(name: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let bytes = read_file(name, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| err(name, path, "not valid PEM (a broken certificate block)"))?;
    if certs.is_empty() {
        return Err(err(
            name,
            path,
            "holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

fn read_key(name: &str, path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let bytes = read_file(name, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        let rule = match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "holds no PEM private key (expected -----BEGIN PRIVATE KEY-----, \
                 RSA PRIVATE KEY or EC PRIVATE KEY)"
            }
            _ => "not valid PEM (a broken private key block)",
        };
        err(name, path, rule)
    })
}

/// Adds a CA file's certificates; `strict` also refuses certificates rustls cannot use.
fn add_ca_file(
    store: &mut RootCertStore,
    name: &str,
    path: &Path,
    strict: bool,
) -> Result<usize, ConfigError> {
    let certs = read_certs(name, path)?;
    let (added, _ignored) = store.add_parsable_certificates(certs);
    if added == 0 && strict {
        return Err(err(
            name,
            path,
            "holds no usable CA certificate (the PEM blocks do not parse as X.509)",
        ));
    }
    Ok(added)
}

/// Adds every CA certificate of the files directly in `dir` (files without one are skipped,
/// as are subdirectories); a directory with none at all is an error.
fn add_ca_dir(store: &mut RootCertStore, name: &str, dir: &Path) -> Result<(), ConfigError> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        let rule = match e.kind() {
            std::io::ErrorKind::NotFound => "directory not found",
            std::io::ErrorKind::PermissionDenied => "directory cannot be read: permission denied",
            _ => "expected a readable directory of PEM CA files",
        };
        err(name, dir, rule)
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut added = 0;
    for f in files {
        let bytes = read_file(name, &f)?;
        let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
            .filter_map(Result::ok)
            .collect();
        added += store.add_parsable_certificates(certs).0;
    }
    if added == 0 {
        return Err(err(name, dir, "holds no file with a PEM CA certificate"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VARS: TlsVars = TlsVars {
        ca_cert: "NOMAD_CACERT",
        ca_path: "NOMAD_CAPATH",
        client_cert: "NOMAD_CLIENT_CERT",
        client_key: "NOMAD_CLIENT_KEY",
        server_name: "NOMAD_TLS_SERVER_NAME",
        skip_verify: "NOMAD_SKIP_VERIFY",
    };

    fn pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["client.global.nomad".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        let w = |n: &str, s: String| {
            let p = dir.join(n);
            std::fs::write(&p, s).unwrap();
            p
        };
        (
            w("ca.pem", ca_cert.pem()),
            w("cli.pem", leaf.pem()),
            w("cli-key.pem", key.serialize_pem()),
            w("other-key.pem", other.serialize_pem()),
        )
    }

    #[test]
    fn builds_and_names_the_variable_and_file_on_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key, other) = pki(dir.path());
        let ok = TlsOptions {
            ca_cert: Some(ca.clone()),
            client_cert: Some(cert.clone()),
            client_key: Some(key.clone()),
            server_name: Some("server.global.nomad".into()),
            ..Default::default()
        };
        let c = TlsConnector::build("nomad", &VARS, &ok).unwrap();
        assert!(c.client_auth && c.roots == Roots::Files);
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("PRIVATE"), "{dbg}");

        // Key mismatch: names the key variable and file, not the key.
        let e = TlsConnector::build(
            "nomad",
            &VARS,
            &TlsOptions {
                client_key: Some(other.clone()),
                ..ok.clone()
            },
        )
        .unwrap_err();
        assert_eq!(e.name, "NOMAD_CLIENT_KEY");
        assert_eq!(e.value, other.display().to_string());
        assert!(e.rule.contains("does not belong"), "{e}");
        assert!(!e.to_string().contains("PRIVATE KEY-----\n"), "{e}");

        // Missing file, a CA file that is a key, a cert without its key.
        let missing = dir.path().join("nope.pem");
        let e = TlsConnector::build(
            "nomad",
            &VARS,
            &TlsOptions {
                ca_cert: Some(missing.clone()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(
            (e.name.as_str(), e.rule),
            ("NOMAD_CACERT", "file not found")
        );
        assert!(e.to_string().contains("nope.pem"));
        let e = TlsConnector::build(
            "nomad",
            &VARS,
            &TlsOptions {
                ca_cert: Some(key.clone()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(e.name, "NOMAD_CACERT");
        assert!(e.rule.contains("no PEM certificate"), "{e}");
        assert!(!e.to_string().contains("BEGIN PRIVATE"), "{e}");
        let e = TlsConnector::build(
            "nomad",
            &VARS,
            &TlsOptions {
                client_cert: Some(cert.clone()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(e.name, "NOMAD_CLIENT_CERT");
        let e = TlsConnector::build(
            "nomad",
            &VARS,
            &TlsOptions {
                client_cert: Some(cert.clone()),
                client_key: Some(ca.clone()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(e.name, "NOMAD_CLIENT_KEY");
        assert!(e.rule.contains("no PEM private key"), "{e}");

        // A garbled PEM block.
        let bad = dir.path().join("bad.pem");
        std::fs::write(
            &bad,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = TlsConnector::build(
            "nomad",
            &VARS,
            &TlsOptions {
                ca_cert: Some(bad),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(e.name, "NOMAD_CACERT");
        assert!(e.rule.contains("PEM"), "{e}");
    }

    #[test]
    fn ca_dir_defaults_and_server_names() {
        let dir = tempfile::tempdir().unwrap();
        let (_ca, _cert, _key, _other) = pki(dir.path());
        let c = TlsConnector::build(
            "nomad",
            &VARS,
            &TlsOptions {
                ca_path: Some(dir.path().into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.roots, Roots::Files);
        let empty = tempfile::tempdir().unwrap();
        let e = TlsConnector::build(
            "nomad",
            &VARS,
            &TlsOptions {
                ca_path: Some(empty.path().into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(e.name, "NOMAD_CAPATH");

        let c = TlsConnector::build("nomad", &VARS, &TlsOptions::default()).unwrap();
        assert_eq!(c.roots, Roots::WebPki);
        assert_eq!(
            c.server_name_for("10.0.0.1").unwrap(),
            ServerName::try_from("10.0.0.1").unwrap()
        );
        assert_eq!(
            c.server_name_for("[::1]").unwrap(),
            ServerName::try_from("::1").unwrap()
        );
        let e = TlsConnector::build(
            "nomad",
            &VARS,
            &TlsOptions {
                server_name: Some("not a name!".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(e.name, "NOMAD_TLS_SERVER_NAME");
    }
}
