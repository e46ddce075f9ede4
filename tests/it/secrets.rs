//! `/system/secrets` on the local provider, and functions reading their secrets.
//!
//! What is proved, against the real binary on port 0:
//! - every route and status of the API (faasgate's choices, reference §B.2), namespaces from
//!   the body and the query, faasd's name messages, values never echoed, the files' bytes and
//!   modes under the data dir;
//! - exactly what faas-cli 0.17 sends (`secret create --from-file` with both `rawValue` and a
//!   trimmed `value`, `--replace` = 409 then PUT, `remove` = DELETE with a body) and, when
//!   faas-cli is on PATH, faas-cli itself;
//! - a deploy naming a missing secret is a 400 and deploys nothing;
//! - each function reads exactly its own secrets at `/var/openfaas/secrets/<name>` (the mount
//!   namespace: CI runs as root) or in the folder `secret_mount_path` names (forced with
//!   `--secrets-isolation folder`), and not another function's, not the store's files;
//! - no value (nor the gateway's credentials) in any replica's `/proc/<pid>/environ`, the
//!   function API, `/metrics` or the gateway's log;
//! - a secret update rolls its function under load with no failed request.

use crate::support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::json;
use support::{Gateway, Resp};

const WAIT: Duration = Duration::from_secs(60);
const PASSWORD_ENV: &str = "FAASGATE_BASIC_AUTH_PASSWORD";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A gateway with basic auth on (user `admin`, password `password`) and a helper that sends
/// the credentials on every `/system` call.
struct Api {
    gw: Gateway,
    auth: String,
}

impl Api {
    fn start(password: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut all_env = vec![(PASSWORD_ENV, password)];
        all_env.extend_from_slice(env);
        let gw = Gateway::start_with(args, &all_env);
        let auth = support::basic_auth("admin", password);
        Self { gw, auth }
    }

    async fn call(&self, method: &str, path: &str, body: serde_json::Value) -> Resp {
        let body = if body.is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(&body).unwrap()
        };
        self.gw
            .req_h(
                method,
                path,
                &[
                    ("authorization", self.auth.as_str()),
                    ("content-type", "application/json"),
                ],
                body,
            )
            .await
    }

    /// `method /system/secrets` with a JSON body.
    async fn secrets(&self, method: &str, body: serde_json::Value) -> Resp {
        self.call(method, "/system/secrets", body).await
    }

    async fn names(&self, query: &str) -> serde_json::Value {
        let r = self
            .call("GET", &format!("/system/secrets{query}"), json!(null))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    async fn wait_available(&self, name: &str, n: u64) {
        let path = format!("/system/function/{name}");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let r = self.call("GET", &path, json!(null)).await;
            if r.status == 200 && r.json()["availableReplicas"].as_u64() == Some(n) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {n} replicas of {name}: {} {}",
                r.status,
                r.text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap_or(false)
}

fn environ(pid: u32) -> Vec<(String, String)> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=').unwrap_or((&kv, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// A function script that prints, per file of its secrets directory (the mount, or the
/// folder `secret_mount_path` names), `name=<base64 of its bytes>`, then whether it could
/// read the store's file `peek` (`peek=<base64>` or `peek=denied`) and its
/// `secret_mount_path` (`folder=...`).
fn reader_script(dir: &Path, peek: &Path) -> PathBuf {
    let script = dir.join("reader.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nd=${{secret_mount_path:-/var/openfaas/secrets}}\n\
             for f in \"$d\"/*; do [ -f \"$f\" ] && echo \"${{f##*/}}=$(base64 -w0 \"$f\")\"; done\n\
             if v=$(base64 -w0 {peek} 2>/dev/null); then echo \"peek=$v\"; else echo peek=denied; fi\n\
             echo \"folder=$secret_mount_path\"\n",
            peek = peek.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// What the reader function printed: file name -> bytes, plus `peek` and `folder`.
async fn read_function(api: &Api, name: &str) -> (BTreeMap<String, Vec<u8>>, String, String) {
    let r = api.gw.req("POST", &format!("/function/{name}"), "").await;
    assert_eq!(r.status, 200, "{name}: {}", r.text());
    let (mut files, mut peek, mut folder) = (BTreeMap::new(), String::new(), String::new());
    for line in r.text().lines() {
        let (k, v) = line.split_once('=').unwrap_or((line, ""));
        match k {
            "peek" => peek = v.to_string(),
            "folder" => folder = v.to_string(),
            _ => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .unwrap_or_else(|e| panic!("{line}: {e}"));
                files.insert(k.to_string(), bytes);
            }
        }
    }
    (files, peek, folder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_api_routes_and_statuses() {
    let api = Api::start("pw-api-test", &[], &[]);
    let store = api.gw.data_dir.join("secrets/functions/openfaas-fn");

    // Basic auth applies.
    let r = api.gw.get("/system/secrets").await;
    assert_eq!(r.status, 401);

    assert_eq!(api.names("").await, json!([]));
    let r = api
        .secrets("POST", json!({"name": "api-key", "value": "value-one"}))
        .await;
    assert_eq!((r.status, r.text().as_str()), (201, ""));
    let r = api
        .secrets("POST", json!({"name": "api-key", "value": "other"}))
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(!r.text().contains("other"));
    // rawValue wins over value, bytes kept exactly.
    let raw = b"\x00\x01binary\n\xff";
    let r = api
        .call(
            "POST",
            "/system/secrets?namespace=openfaas-fn",
            json!({"name": "blob", "rawValue": b64(raw), "value": "ignored"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(std::fs::read(store.join("blob")).unwrap(), raw);
    assert_eq!(std::fs::read(store.join("api-key")).unwrap(), b"value-one");
    assert_eq!(mode(&store), 0o700);
    assert_eq!(mode(&api.gw.data_dir.join("secrets")), 0o700);
    assert_eq!(mode(&store.join("blob")), 0o600);

    let listed = api.names("").await;
    assert_eq!(
        listed,
        json!([
            {"name": "api-key", "namespace": "openfaas-fn"},
            {"name": "blob", "namespace": "openfaas-fn"},
        ])
    );
    assert_eq!(api.names("?namespace=openfaas-fn").await, listed);
    assert!(!listed.to_string().contains("value-one"));

    // Update: 202, a missing name 404.
    let r = api
        .secrets("PUT", json!({"name": "api-key", "value": "value-two"}))
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(std::fs::read(store.join("api-key")).unwrap(), b"value-two");
    let r = api
        .secrets("PUT", json!({"name": "missing", "value": "x"}))
        .await;
    assert_eq!(r.status, 404, "{}", r.text());

    // Names: faasd's messages.
    for (name, msg) in [
        ("", "non-empty name is required"),
        ("../x", "directory traversal found in name"),
        ("a/b", "directory traversal found in name"),
    ] {
        for method in ["POST", "PUT", "DELETE"] {
            let r = api
                .call(
                    method,
                    "/system/secrets",
                    json!({"name": name, "value": "v"}),
                )
                .await;
            assert_eq!(
                (r.status, r.text().as_str()),
                (400, msg),
                "{method} {name:?}"
            );
        }
    }
    let r = api
        .secrets("POST", json!({"name": "Upper_Case", "value": "v"}))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    // A body that is not JSON, or a value of the wrong type: 400 without the value.
    let r = api
        .secrets("POST", json!({"name": "n", "value": 123456789}))
        .await;
    assert_eq!(r.status, 400);
    assert!(!r.text().contains("123456789"), "{}", r.text());

    // Namespaces: body first, then query; one the provider does not serve is a 400.
    for (path, body) in [
        (
            "/system/secrets",
            json!({"name": "x", "namespace": "nowhere", "value": "v"}),
        ),
        (
            "/system/secrets?namespace=nowhere",
            json!({"name": "x", "value": "v"}),
        ),
    ] {
        let r = api.call("POST", path, body).await;
        assert_eq!((r.status, r.text().as_str()), (400, "namespace not valid"));
    }
    let r = api
        .call("GET", "/system/secrets?namespace=nowhere", json!(null))
        .await;
    assert_eq!(r.status, 400);
    let r = api
        .call(
            "POST",
            "/system/secrets?namespace=nowhere",
            json!({"name": "x", "namespace": "openfaas-fn", "value": "v"}),
        )
        .await;
    assert_eq!(r.status, 201, "the body's namespace wins: {}", r.text());

    // Delete: name and namespace from the body, or the namespace from the query; 202, then 404.
    let r = api
        .secrets("DELETE", json!({"name": "x", "namespace": "openfaas-fn"}))
        .await;
    assert_eq!((r.status, r.text().as_str()), (202, ""));
    let r = api
        .call(
            "DELETE",
            "/system/secrets?namespace=openfaas-fn",
            json!({"name": "blob"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let r = api.secrets("DELETE", json!({"name": "blob"})).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(!store.join("blob").exists());
    assert_eq!(
        api.names("").await,
        json!([{"name": "api-key", "namespace": "openfaas-fn"}])
    );

    let r = api.call("PATCH", "/system/secrets", json!(null)).await;
    assert_eq!(r.status, 405);

    // Values appear in no log line.
    let log = api.gw.log.lock().unwrap().join("\n");
    for v in ["value-one", "value-two"] {
        assert!(!log.contains(v), "the gateway logged a secret value");
    }
}

/// What faas-cli 0.17 sends (its `proxy/secret.go`, `commands/secret_*.go`), replayed byte
/// for byte: create --from-file (rawValue + trimmed value), create --replace on an existing
/// name (POST 409, then PUT with `value` only), list, remove (DELETE with a body, no query).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_faas_cli_secret_sends() {
    let api = Api::start("pw-cli-replay", &[], &[]);
    let store = api.gw.data_dir.join("secrets/functions/openfaas-fn");
    let file = b"line one\nline two\n\n";
    let trimmed = "line one\nline two";
    let r = api
        .secrets(
            "POST",
            json!({"name": "from-file", "value": trimmed, "rawValue": b64(file)}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(std::fs::read(store.join("from-file")).unwrap(), file);

    // `--replace`: the POST's 409 makes faas-cli PUT.
    let r = api
        .secrets("POST", json!({"name": "from-file", "value": "v2"}))
        .await;
    assert_eq!(r.status, 409);
    let r = api
        .secrets("PUT", json!({"name": "from-file", "value": "v2"}))
        .await;
    assert!(
        r.status == 200 || r.status == 202,
        "{} {}",
        r.status,
        r.text()
    );
    assert_eq!(std::fs::read(store.join("from-file")).unwrap(), b"v2");

    // `secret list` sends `?namespace=` (empty without -n).
    assert_eq!(
        api.names("?namespace=").await,
        json!([{"name": "from-file", "namespace": "openfaas-fn"}])
    );
    // `secret remove`: the body names it; faas-cli accepts 200 and 202 only.
    let r = api.secrets("DELETE", json!({"name": "from-file"})).await;
    assert!(r.status == 200 || r.status == 202, "{}", r.status);
    let r = api.secrets("DELETE", json!({"name": "from-file"})).await;
    assert_eq!(r.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faas_cli_secret_commands() {
    let Some(cli) = faas_cli() else {
        println!(
            "skipped: faas-cli is not on PATH (what `faas-cli secret` sends is covered by \
             secrets::what_faas_cli_secret_sends)"
        );
        return;
    };
    let api = Api::start("pw-faas-cli", &[], &[]);
    let url = format!("http://{}", api.gw.addr);
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let file = dir.path().join("value.txt");
    std::fs::write(&file, b"from a file\n").unwrap();
    let store = api.gw.data_dir.join("secrets/functions/openfaas-fn");
    let run = |args: Vec<String>, stdin: &'static str| {
        let mut cmd = Command::new(&cli);
        cmd.args(&args)
            .env("HOME", &home)
            .env("OPENFAAS_CONFIG", home.join(".openfaas"))
            .env_remove("OPENFAAS_URL")
            .env("NO_PROXY", "*")
            .env("no_proxy", "*");
        let ran = support::run_bounded(&mut cmd, stdin.as_bytes(), WAIT);
        assert!(
            ran.success(),
            "faas-cli {args:?}: {:?}\n{}\n{}",
            ran.code,
            ran.stdout,
            ran.stderr
        );
        ran
    };
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    tokio::task::block_in_place(|| {
        run(
            s(&["login", "-g", &url, "-u", "admin", "--password-stdin"]),
            "pw-faas-cli",
        );
        run(
            s(&[
                "secret",
                "create",
                "lit",
                "-g",
                &url,
                "--from-literal",
                "literal-value",
            ]),
            "",
        );
        run(
            s(&[
                "secret",
                "create",
                "file",
                "-g",
                &url,
                "--from-file",
                &file.display().to_string(),
            ]),
            "",
        );
        assert_eq!(std::fs::read(store.join("lit")).unwrap(), b"literal-value");
        assert_eq!(std::fs::read(store.join("file")).unwrap(), b"from a file\n");
        let listed = run(s(&["secret", "list", "-g", &url]), "");
        assert!(
            listed.stdout.contains("lit") && listed.stdout.contains("file"),
            "{}",
            listed.stdout
        );
        assert!(!listed.stdout.contains("literal-value"));
        run(
            s(&[
                "secret",
                "update",
                "lit",
                "-g",
                &url,
                "--from-literal",
                "updated",
            ]),
            "",
        );
        assert_eq!(std::fs::read(store.join("lit")).unwrap(), b"updated");
        run(
            s(&[
                "secret",
                "create",
                "lit",
                "-g",
                &url,
                "--from-literal",
                "replaced",
                "--replace",
            ]),
            "",
        );
        assert_eq!(std::fs::read(store.join("lit")).unwrap(), b"replaced");
        run(s(&["secret", "remove", "lit", "-g", &url]), "");
        assert!(!store.join("lit").exists());
    });
}

fn faas_cli() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("faas-cli"))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_naming_a_missing_secret_is_a_400_and_deploys_nothing() {
    let api = Api::start("pw-missing", &[], &[]);
    let f = json!({"service": "needs", "image": "x", "envProcess": "cat", "secrets": ["absent"]});
    let r = api.call("POST", "/system/functions", f.clone()).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, "unable to find secret: absent")
    );
    let r = api.call("GET", "/system/function/needs", json!(null)).await;
    assert_eq!(r.status, 404);
    // Once it exists the same deploy goes through; an update naming another missing one
    // is refused and keeps the function as it was.
    let r = api
        .secrets("POST", json!({"name": "absent", "value": "v"}))
        .await;
    assert_eq!(r.status, 201);
    let r = api.call("POST", "/system/functions", f).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let r = api
        .call("PUT", "/system/functions", json!({"service": "needs", "image": "x", "envProcess": "cat", "secrets": ["absent", "gone"]}))
        .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, "unable to find secret: gone")
    );
    let r = api.call("GET", "/system/function/needs", json!(null)).await;
    assert_eq!(r.json()["secrets"], json!(["absent"]));
}

/// Each function reads exactly its own secrets, in the mode `args` selects; returns the
/// folder each saw (empty: the mount).
async fn functions_read_only_their_own(args: &[&str], tag: &str) -> Api {
    let password = format!("pw-{tag}");
    let nomad_token = format!("nomad-{tag}");
    let api = Api::start(&password, args, &[("NOMAD_TOKEN", nomad_token.as_str())]);
    let dir = tempfile::tempdir().unwrap();
    let a_value = format!("alpha-{tag}\n").into_bytes();
    let b_value = format!("beta-{tag}").into_bytes();
    for (name, value) in [("alpha", &a_value), ("beta", &b_value)] {
        let r = api
            .secrets("POST", json!({"name": name, "rawValue": b64(value)}))
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let beta_file = api.gw.data_dir.join("secrets/functions/openfaas-fn/beta");
    let script = reader_script(dir.path(), &beta_file);
    for (name, secrets) in [("fa", json!(["alpha"])), ("fb", json!(["beta"]))] {
        let f = json!({"service": name, "image": "x", "envProcess": script.display().to_string(), "secrets": secrets});
        let r = api.call("POST", "/system/functions", f).await;
        assert_eq!(r.status, 202, "{}", r.text());
    }
    api.wait_available("fa", 1).await;
    api.wait_available("fb", 1).await;

    let (fa, fa_peek, fa_folder) = read_function(&api, "fa").await;
    let (fb, _, fb_folder) = read_function(&api, "fb").await;
    assert_eq!(fa, BTreeMap::from([("alpha".to_string(), a_value.clone())]));
    assert_eq!(fb, BTreeMap::from([("beta".to_string(), b_value.clone())]));
    let folder = args.contains(&"folder");
    if folder {
        // The folders: private, distinct, under the data dir, named in the environment.
        for f in [&fa_folder, &fb_folder] {
            let p = Path::new(f);
            assert!(p.is_absolute() && p.starts_with(&api.gw.data_dir), "{f}");
            assert_eq!(mode(p), 0o700);
        }
        assert_ne!(fa_folder, fb_folder);
    } else {
        assert_eq!((fa_folder.as_str(), fb_folder.as_str()), ("", ""));
        // In its mount namespace a replica cannot read the store either.
        assert_eq!(fa_peek, "denied", "fa read beta from the store");
        // The host's /var/openfaas/secrets holds none of them.
        let host: Vec<_> = std::fs::read_dir("/var/openfaas/secrets")
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(host.is_empty(), "{host:?}");
    }

    // No value, nor the gateway's credentials, in any replica's environment.
    let procs = support::descendants(api.gw.pid());
    assert!(!procs.is_empty());
    for pid in procs {
        let env = environ(pid);
        let flat = env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("\n");
        for needle in [
            &format!("alpha-{tag}"),
            &format!("beta-{tag}"),
            &password,
            &nomad_token,
        ] {
            assert!(
                !flat.contains(needle.as_str()),
                "replica {pid}'s environment holds a secret"
            );
        }
        assert!(!env
            .iter()
            .any(|(k, _)| k == PASSWORD_ENV || k == "NOMAD_TOKEN"));
        if !folder {
            assert!(!env.iter().any(|(k, _)| k == "secret_mount_path"));
        }
    }
    // Names only in the function API; no value in it, in /metrics or in the log.
    let listed = api
        .call("GET", "/system/functions", json!(null))
        .await
        .text();
    let status = api.call("GET", "/system/function/fa", json!(null)).await;
    assert_eq!(status.json()["secrets"], json!(["alpha"]));
    let metrics = api.gw.get("/metrics").await.text();
    let log = api.gw.log.lock().unwrap().join("\n");
    for (what, text) in [
        ("/system/functions", &listed),
        ("/system/function/fa", &status.text()),
        ("/metrics", &metrics),
        ("the gateway's log", &log),
    ] {
        assert!(
            !text.contains(&format!("alpha-{tag}")) && !text.contains(&format!("beta-{tag}")),
            "{what} holds a secret value"
        );
    }
    api
}

/// Waits (bounded) until `staging` holds `n` entries.
async fn staged(staging: &Path, n: usize, what: &str) {
    support::eventually(WAIT, what, || {
        std::fs::read_dir(staging)
            .map(|d| d.count() == n)
            .unwrap_or(false)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_read_their_own_secrets_in_a_mount_namespace() {
    if !is_root() {
        println!("skipped: the mount namespace needs root (CI runs as root); the folder mode is tested by functions_read_their_own_secrets_in_a_private_folder");
        return;
    }
    // `mount` (not `auto`): fails to start rather than fall back silently.
    let api = functions_read_only_their_own(&["--secrets-isolation", "mount"], "mnt").await;
    // Staged copies leave the data dir once the replicas have their own.
    let staging = api.gw.data_dir.join("replica-secrets");
    staged(&staging, 0, "no staged copies left").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_read_their_own_secrets_in_a_private_folder() {
    let api = functions_read_only_their_own(&["--secrets-isolation", "folder"], "dir").await;
    let staging = api.gw.data_dir.join("replica-secrets");
    assert_eq!(mode(&staging), 0o700);
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 2);
    // A deleted function's folder goes with its replica.
    let r = api
        .call("DELETE", "/system/functions", json!({"functionName": "fa"}))
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    staged(&staging, 1, "fa's folder removed").await;
}

/// A secret update rolls the function that reads it: under a load loop, the new value is
/// served and no request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_update_rolls_its_function_with_no_failed_request() {
    let api = Api::start("pw-roll", &[], &[]);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("print.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\ncat \"${secret_mount_path:-/var/openfaas/secrets}/token\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = api
        .secrets("POST", json!({"name": "token", "value": "old-token"}))
        .await;
    assert_eq!(r.status, 201);
    let f = json!({
        "service": "roll", "image": "x", "envProcess": script.display().to_string(),
        "secrets": ["token"], "labels": {"com.openfaas.scale.min": "2"},
    });
    let r = api.call("POST", "/system/functions", f).await;
    assert_eq!(r.status, 202, "{}", r.text());
    api.wait_available("roll", 2).await;
    let r = api.gw.req("POST", "/function/roll", "").await;
    assert_eq!(r.text(), "old-token");

    let stop = Arc::new(AtomicBool::new(false));
    let load = support::spawn_load(api.gw.addr, "/function/roll", 4, stop.clone());
    // Some load before the update, so the roll happens under it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = api
        .secrets("PUT", json!({"name": "token", "value": "new-token"}))
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = api.gw.req("POST", "/function/roll", "").await;
        assert_eq!(r.status, 200, "{}", r.text());
        if r.text() == "new-token" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new value was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The old replicas leave (drained); then stop the load.
    api.wait_available("roll", 2).await;
    let ids = || {
        support::descendants(api.gw.pid())
            .into_iter()
            .filter(|p| {
                environ(*p)
                    .iter()
                    .any(|(k, v)| k == "fprocess" && v.ends_with("print.sh"))
            })
            .count()
    };
    support::eventually(WAIT, "only the two new replicas left", || ids() == 2).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = support::join_load(load).await;
    assert!(
        failed.is_empty(),
        "{} failed requests during the roll: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 0);
    let log = api.gw.log.lock().unwrap().join("\n");
    assert!(
        log.contains("secret updated: rolling replicas"),
        "no roll logged"
    );
    assert!(!log.contains("old-token") && !log.contains("new-token"));
    // Every answer now is the new value.
    for _ in 0..10 {
        assert_eq!(
            api.gw.req("POST", "/function/roll", "").await.text(),
            "new-token"
        );
    }
}

/// A namespace that still holds secrets is not deleted (409 naming them, as for functions);
/// once they are gone it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_holding_secrets_is_not_deleted_until_they_are_gone() {
    let api = Api::start("ns-secrets-pw", &[], &[]);
    let r = api
        .call(
            "POST",
            "/system/namespace/",
            json!({"name": "team", "labels": {"openfaas": "1"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = api
        .secrets(
            "POST",
            json!({"name": "api-key", "namespace": "team", "value": "k"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = api
        .call("DELETE", "/system/namespace/team", json!(null))
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("secrets api-key"), "{}", r.text());
    let r = api
        .secrets("DELETE", json!({"name": "api-key", "namespace": "team"}))
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let r = api
        .call("DELETE", "/system/namespace/team", json!(null))
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let r = api
        .secrets(
            "POST",
            json!({"name": "api-key", "namespace": "team", "value": "k"}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.text().trim(), "namespace not valid");
}
