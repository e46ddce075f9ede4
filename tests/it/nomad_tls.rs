//! The Nomad and Consul clients over TLS, against the API double serving HTTPS with a
//! certificate chain minted here (rcgen): a CA, a server certificate for
//! `server.global.nomad` and 127.0.0.1 (as Nomad's own `nomad tls cert create -server` makes),
//! and a client certificate the double requires (Nomad's `verify_https_client = true`).
//! Everything listens on 127.0.0.1; the certificates live in a temporary directory.

use crate::nomad_double;
use crate::support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use faasgate::client::{ConsulClient, ConsulSettings, NomadClient, NomadSettings, QueryOptions};
use nomad_double::NomadDouble;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;
use support::{Gateway, BIN};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};

const TOKEN: &str = "s3cr3t-nomad-tls-token-77c1";

/// One test PKI: PEM files on disk, and the server side's config.
struct Pki {
    dir: tempfile::TempDir,
    server: Arc<ServerConfig>,
}

struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    der: CertificateDer<'static>,
    pem: String,
}

fn ca(name: &str) -> Ca {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} CA"));
    let cert = p.self_signed(&key).unwrap();
    Ca {
        der: cert.der().clone(),
        pem: cert.pem(),
        issuer: rcgen::Issuer::new(p, key),
    }
}

fn leaf(ca: &Ca, names: &[&str], client: bool) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    p.extended_key_usages = vec![if client {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    }];
    (p.signed_by(&key, &ca.issuer).unwrap(), key)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca("nomad");
        let (srv, srv_key) = leaf(&ca, &["server.global.nomad", "127.0.0.1"], false);
        let (cli, cli_key) = leaf(&ca, &["cli.global.nomad"], true);
        let other = self::ca("other");
        let (other_cli, other_cli_key) = leaf(&other, &["cli.global.nomad"], true);
        let w = |n: &str, s: &str| std::fs::write(dir.path().join(n), s).unwrap();
        w("ca.pem", &ca.pem);
        w("cli.pem", &cli.pem());
        w("cli-key.pem", &cli_key.serialize_pem());
        w("other-ca.pem", &other.pem);
        w("other-cli.pem", &other_cli.pem());
        w("other-cli-key.pem", &other_cli_key.serialize_pem());

        let mut roots = RootCertStore::empty();
        roots.add(ca.der.clone()).unwrap();
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap();
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![srv.der().clone(), ca.der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(srv_key.serialize_der())),
            )
            .unwrap();
        Self {
            dir,
            server: Arc::new(server),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

fn env_of(pairs: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
    move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
}

/// `NOMAD_*` for the double: CA, client pair, the server's name as Nomad's servers use it.
fn nomad_env(pki: &Pki, double: &NomadDouble) -> Vec<(&'static str, String)> {
    vec![
        ("NOMAD_ADDR", double.url()),
        ("NOMAD_CACERT", pki.path("ca.pem")),
        ("NOMAD_CLIENT_CERT", pki.path("cli.pem")),
        ("NOMAD_CLIENT_KEY", pki.path("cli-key.pem")),
        ("NOMAD_TLS_SERVER_NAME", "server.global.nomad".to_string()),
    ]
}

async fn list(env: Vec<(&'static str, String)>) -> Result<usize, String> {
    let settings = NomadSettings::from_env(env_of(env)).map_err(|e| format!("config: {e}"))?;
    let c = NomadClient::new(&settings);
    c.list_jobs("", QueryOptions::default())
        .await
        .map(|v| v.value.len())
        .map_err(|e| e.to_string())
}

fn without(mut env: Vec<(&'static str, String)>, names: &[&str]) -> Vec<(&'static str, String)> {
    env.retain(|(k, _)| !names.contains(k));
    env
}

fn with(
    mut env: Vec<(&'static str, String)>,
    k: &'static str,
    v: impl Into<String>,
) -> Vec<(&'static str, String)> {
    env.retain(|(n, _)| *n != k);
    env.push((k, v.into()));
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nomad_client_connects_with_ca_client_cert_and_server_name() {
    let pki = Pki::new();
    let double = NomadDouble::start_tls(pki.server.clone(), None).await;
    assert!(double.url().starts_with("https://127.0.0.1:"));
    let env = nomad_env(&pki, &double);
    assert_eq!(list(env.clone()).await, Ok(0));
    // The IP SAN verifies too, without NOMAD_TLS_SERVER_NAME.
    assert_eq!(
        list(without(env.clone(), &["NOMAD_TLS_SERVER_NAME"])).await,
        Ok(0)
    );
    // A CA directory instead of a file.
    let cadir = pki.dir.path().join("cadir");
    std::fs::create_dir(&cadir).unwrap();
    std::fs::copy(pki.dir.path().join("ca.pem"), cadir.join("ca.pem")).unwrap();
    let e = without(env, &["NOMAD_CACERT"]);
    assert_eq!(
        list(with(e, "NOMAD_CAPATH", cadir.display().to_string())).await,
        Ok(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nomad_client_fails_clearly_without_client_cert_or_with_wrong_ca() {
    let pki = Pki::new();
    let double = NomadDouble::start_tls(pki.server.clone(), None).await;
    let env = nomad_env(&pki, &double);

    let e = list(without(
        env.clone(),
        &["NOMAD_CLIENT_CERT", "NOMAD_CLIENT_KEY"],
    ))
    .await
    .unwrap_err();
    assert!(e.contains("unreachable"), "{e}");
    assert!(e.contains("NOMAD_CLIENT_CERT"), "{e}");

    // A client certificate from a CA the server does not trust.
    let e = list(with(
        with(env.clone(), "NOMAD_CLIENT_CERT", pki.path("other-cli.pem")),
        "NOMAD_CLIENT_KEY",
        pki.path("other-cli-key.pem"),
    ))
    .await
    .unwrap_err();
    assert!(e.contains("NOMAD_CLIENT_CERT"), "{e}");

    // The wrong CA: the server's certificate is not trusted; the error says where to look.
    let e = list(with(env.clone(), "NOMAD_CACERT", pki.path("other-ca.pem")))
        .await
        .unwrap_err();
    assert!(e.contains("TLS handshake failed"), "{e}");
    assert!(e.contains("UnknownIssuer"), "{e}");
    assert!(e.contains("NOMAD_CACERT"), "{e}");

    // The right CA but a name the certificate does not carry.
    let e = list(with(
        env.clone(),
        "NOMAD_TLS_SERVER_NAME",
        "client.global.nomad",
    ))
    .await
    .unwrap_err();
    assert!(
        e.contains("not valid for name") && e.contains("NOMAD_TLS_SERVER_NAME"),
        "{e}"
    );

    // No CA at all: the compiled-in public roots do not know this CA.
    let e = list(without(env.clone(), &["NOMAD_CACERT"]))
        .await
        .unwrap_err();
    assert!(e.contains("UnknownIssuer"), "{e}");

    // A key that is not the certificate's: refused before any connection, by name.
    let e = list(with(env, "NOMAD_CLIENT_KEY", pki.path("other-cli-key.pem")))
        .await
        .unwrap_err();
    assert!(e.starts_with("config: NOMAD_CLIENT_KEY="), "{e}");
    assert!(
        e.contains("other-cli-key.pem") && !e.contains("PRIVATE"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nomad_skip_verify_connects_without_ca() {
    let pki = Pki::new();
    let double = NomadDouble::start_tls(pki.server.clone(), None).await;
    let env = without(
        nomad_env(&pki, &double),
        &["NOMAD_CACERT", "NOMAD_TLS_SERVER_NAME"],
    );
    assert_eq!(list(with(env, "NOMAD_SKIP_VERIFY", "true")).await, Ok(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_client_over_tls_with_http_ssl() {
    let pki = Pki::new();
    let double = NomadDouble::start_tls(pki.server.clone(), None).await;
    let bare = double.addr().to_string();
    let base = vec![
        ("CONSUL_HTTP_ADDR", bare),
        ("CONSUL_HTTP_SSL", "true".to_string()),
        ("CONSUL_CLIENT_CERT", pki.path("cli.pem")),
        ("CONSUL_CLIENT_KEY", pki.path("cli-key.pem")),
    ];
    let call = |env: Vec<(&'static str, String)>| async move {
        let s = ConsulSettings::from_env(env_of(env)).map_err(|e| e.to_string())?;
        ConsulClient::new(&s)
            .health_service("nothing", true, QueryOptions::default())
            .await
            .map(|v| v.value.len())
            .map_err(|e| e.to_string())
    };
    let good = with(
        with(base.clone(), "CONSUL_CACERT", pki.path("ca.pem")),
        "CONSUL_TLS_SERVER_NAME",
        "server.global.nomad",
    );
    assert_eq!(call(good).await, Ok(0));
    assert_eq!(
        call(with(base.clone(), "CONSUL_HTTP_SSL_VERIFY", "false")).await,
        Ok(0)
    );
    let e = call(with(base, "CONSUL_CACERT", pki.path("other-ca.pem")))
        .await
        .unwrap_err();
    assert!(e.contains("CONSUL_CACERT"), "{e}");
}

/// `faasgate serve --provider nomad` over mTLS: deploy -> job registered over TLS -> the
/// double runs the watchdog -> the service is discovered over TLS -> invocation routed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_runs_functions_on_a_tls_nomad() {
    let pki = Pki::new();
    let double = NomadDouble::start_tls(pki.server.clone(), Some(TOKEN)).await;
    let mut env: Vec<(&str, String)> = nomad_env(&pki, &double);
    env.push(("NOMAD_TOKEN", TOKEN.to_string()));
    env.push(("RUST_LOG", "info,faasgate=debug".to_string()));
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let gw = Gateway::start_with(
        &[
            "--no-auth",
            "--provider",
            "nomad",
            "--nomad-watchdog-path",
            BIN,
        ],
        &env_ref,
    );
    let r = gw
        .deploy(json!({
            "service": "echo",
            "image": "",
            "envProcess": "cat",
            "annotations": {"com.faasgate.driver": "raw_exec"}
        }))
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = gw.req("POST", "/function/echo", "hello over tls").await;
        if r.status == 200 {
            assert_eq!(r.text(), "hello over tls");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not routed: {} {}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let info = gw.get("/system/info").await.text();
    assert!(!info.contains(TOKEN));
    let log = gw.log.lock().unwrap().join("\n");
    assert!(!log.contains(TOKEN), "token in the log");
    assert!(!log.contains("PRIVATE KEY"), "key material in the log");
}

/// A bad TLS file stops `faasgate serve` at startup with the variable and the path.
#[test]
fn serve_refuses_a_bad_tls_file_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    std::fs::write(&key, "not a key").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--no-auth"])
        .args(["--provider", "nomad", "--data-dir"])
        .arg(dir.path())
        .env("NOMAD_ADDR", "https://127.0.0.1:1")
        .env("NOMAD_CLIENT_CERT", missing(dir.path()))
        .env("NOMAD_CLIENT_KEY", &key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NOMAD_CLIENT_CERT"), "{err}");
    assert!(
        err.contains("cli.pem") && err.contains("file not found"),
        "{err}"
    );
}

fn missing(dir: &Path) -> PathBuf {
    dir.join("cli.pem")
}
