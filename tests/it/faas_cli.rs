//! faas-cli, OpenFaaS's own client, against the real binary with basic auth on.
//!
//! `faas-cli` cannot be installed by our scripts (a Go binary from GitHub releases, on no
//! registry we reach), so the test that runs it does so only when it is on PATH, and
//! otherwise prints `skipped: faas-cli is not on PATH (...)` and returns. When present it
//! logs in, `faas-cli invoke --async` sends stdin (with a query and an `X-Callback-Url`
//! header) and the function receives it and the callback its answer, and
//! `faas-cli describe` prints an Async URL that accepts a call.
//!
//! What `faas-cli invoke --async` sends is covered without it, by plain HTTP that copies its
//! requests, as read in the sources:
//! - faas-cli `commands/invoke.go` of the go-sdk era (0.16 and later; it builds the request
//!   and calls openfaas/go-sdk `functions.go` `Client.InvokeFunction`):
//!   `POST /async-function/{name}.{namespace}` (the SDK adds `openfaas-fn` when no
//!   `--namespace` is given) `?{--query}` with `Content-Type` from `--content-type` (default
//!   `text/plain`), `User-Agent: faas-cli/{version} (openfaas; {os}; {arch})`, every
//!   `--header k=v` (e.g. `X-Callback-Url`), and Go's `Accept-Encoding: gzip`; no
//!   `Authorization` (basic auth goes only to the system API; a function token only with
//!   `--auth`). 202 means "Function submitted asynchronously.".
//! - the older faas-cli `proxy/invoke.go` (commit 73004c23): `POST /async-function/{name}`
//!   with no namespace suffix, `Content-Type` and the `--header`s, Go's default User-Agent,
//!   no `Authorization` either ("system-level basic auth secrets should not be transmitted
//!   to functions").

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::Gateway;

const PASSWORD: &str = "faas-cli-test-password";
const WAIT: Duration = Duration::from_secs(60);
/// The User-Agent of faas-cli 0.17.x on Linux (its version is whatever the build says).
const FAAS_CLI_UA: &str = "faas-cli/0.17.8 (openfaas; linux; amd64)";

/// A function whose process appends one `|`-separated line per call to its log:
/// method, path, query, content type, user agent, call id, body. It answers `done: {body}`.
fn recorder(dir: &Path, name: &str) -> (serde_json::Value, PathBuf) {
    let log = dir.join(format!("{name}.log"));
    let script = dir.join(format!("{name}.sh"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nbody=$(cat)\n\
             echo \"$Http_Method|$Http_Path|$Http_Query|$Http_Content_Type|$Http_User_Agent|\
             $Http_X_Call_Id|$body\" >> {}\necho \"done: $body\"\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let f = json!({"service": name, "image": "local/recorder", "envProcess": script.display().to_string()});
    (f, log)
}

/// One call as the function saw it.
#[derive(Debug, PartialEq)]
struct Call {
    method: String,
    path: String,
    query: String,
    content_type: String,
    user_agent: String,
    call_id: String,
    body: String,
}

fn calls(log: &Path) -> Vec<Call> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.splitn(7, '|').collect();
            assert_eq!(f.len(), 7, "log line {l:?}");
            Call {
                method: f[0].into(),
                path: f[1].into(),
                query: f[2].into(),
                content_type: f[3].into(),
                user_agent: f[4].into(),
                call_id: f[5].into(),
                body: f[6].into(),
            }
        })
        .collect()
}

/// The gateway with basic auth on and loopback callbacks allowed, with `rec` deployed.
async fn gateway_with_recorder(dir: &Path) -> (Gateway, PathBuf) {
    let gw = Gateway::start_with(
        &["--callback-allow", "127.0.0.0/8"],
        &[("FAASGATE_BASIC_AUTH_PASSWORD", PASSWORD)],
    )
    .with_password(PASSWORD);
    let (f, log) = recorder(dir, "rec");
    let r = gw.deploy(f).await;
    assert_eq!(r.status, 202, "{}", r.text());
    gw.wait_available("rec", 1).await;
    (gw, log)
}

/// Waits (bounded) for the call whose body is `body` to reach the function.
async fn delivered(log: &Path, body: &str) -> Call {
    support::eventually(WAIT, &format!("a call with body {body:?}"), || {
        calls(log).iter().any(|c| c.body == body)
    })
    .await;
    calls(log).into_iter().find(|c| c.body == body).unwrap()
}

/// Waits (bounded) for the callback of call `id`; returns its headers and body.
async fn callback_of(got: &crate::async_calls::Received, id: &str) -> (http::HeaderMap, String) {
    let find = || {
        got.lock()
            .unwrap()
            .iter()
            .find(|(h, _)| h.get("x-call-id").is_some_and(|v| v == id))
            .map(|(h, b)| (h.clone(), String::from_utf8_lossy(b).into_owned()))
    };
    support::eventually(WAIT, &format!("the callback of {id}"), || find().is_some()).await;
    find().unwrap()
}

/// faas-cli's requests, copied: the go-sdk era's (namespace suffix, its User-Agent), then
/// the older one's; each with a query, a callback header and no credentials. Accepted with
/// 202 and a call id, delivered whole, and the callback carries the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_faas_cli_invoke_async_sends_is_queued_delivered_and_called_back() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, log) = gateway_with_recorder(dir.path()).await;
    let (cb, got) = crate::async_calls::receiver(0).await;
    let callback = format!("http://{cb}/done");
    let cases = [
        (
            "/async-function/rec.openfaas-fn?q=sdk",
            FAAS_CLI_UA,
            "from the go-sdk faas-cli\n",
        ),
        (
            "/async-function/rec?q=proxy",
            "Go-http-client/1.1",
            "from the older faas-cli\n",
        ),
    ];
    for (path, agent, body) in cases {
        let r = gw
            .req_h(
                "POST",
                path,
                &[
                    ("user-agent", agent),
                    ("content-type", "text/plain"),
                    ("x-callback-url", &callback),
                    ("accept-encoding", "gzip"),
                ],
                body,
            )
            .await;
        assert_eq!(r.status, 202, "{path}: {}", r.text());
        let id = r.header("x-call-id").unwrap_or_default().to_string();
        assert!(!id.is_empty(), "{path}: a call id");
        // The shell's $(cat) drops the trailing newline.
        let call = delivered(&log, body.trim_end()).await;
        let query = path.split_once('?').unwrap().1;
        assert_eq!(
            (
                call.method.as_str(),
                call.path.as_str(),
                call.query.as_str()
            ),
            ("POST", "/", query)
        );
        assert_eq!(call.content_type, "text/plain");
        assert_eq!(call.user_agent, agent);
        assert_eq!(call.call_id, id, "the function sees the id the caller got");
        let (h, answer) = callback_of(&got, &id).await;
        assert_eq!(answer, format!("done: {}\n", body.trim_end()));
        assert_eq!(h["x-function-status"], "200");
        assert_eq!(h["x-function-name"], "rec.openfaas-fn");
    }
    assert_eq!(calls(&log).len(), 2, "each call delivered once");
}

/// The first `faas-cli` on PATH.
fn faas_cli() -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("faas-cli"))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Runs faas-cli (bounded) with its config in `home`, never the user's.
async fn run(cli: &Path, home: &Path, args: &[&str], stdin: &str) -> support::Ran {
    let mut cmd = Command::new(cli);
    cmd.args(args)
        .env("HOME", home)
        .env("OPENFAAS_CONFIG", home.join(".openfaas"))
        .env_remove("OPENFAAS_URL")
        .env("NO_PROXY", "*")
        .env("no_proxy", "*");
    let stdin = stdin.as_bytes().to_vec();
    let ran = tokio::task::spawn_blocking(move || support::run_bounded(&mut cmd, &stdin, WAIT))
        .await
        .unwrap();
    assert!(
        ran.success(),
        "faas-cli {args:?} failed ({:?}); stdout:\n{}\nstderr:\n{}",
        ran.code,
        ran.stdout,
        ran.stderr
    );
    ran
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faas_cli_invokes_async_and_describes_the_async_url() {
    let Some(cli) = faas_cli() else {
        println!(
            "skipped: faas-cli is not on PATH (what `faas-cli invoke --async` sends is \
             covered by faas_cli::what_faas_cli_invoke_async_sends_is_queued_delivered_and_called_back)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let (gw, log) = gateway_with_recorder(dir.path()).await;
    let url = format!("http://{}", gw.addr);
    run(
        &cli,
        &home,
        &["login", "-g", &url, "-u", "admin", "--password-stdin"],
        PASSWORD,
    )
    .await;

    let (cb, got) = crate::async_calls::receiver(0).await;
    let callback = format!("X-Callback-Url=http://{cb}/done");
    let args = [
        "invoke", "--async", "-g", &url, "rec", "--query", "q=cli", "-H", &callback,
    ];
    let ran = run(&cli, &home, &args, "hello from faas-cli\n").await;
    assert!(
        ran.stderr.contains("Function submitted asynchronously."),
        "{}",
        ran.stderr
    );
    let call = delivered(&log, "hello from faas-cli").await;
    assert_eq!(
        (
            call.method.as_str(),
            call.path.as_str(),
            call.query.as_str()
        ),
        ("POST", "/", "q=cli")
    );
    assert_eq!(call.content_type, "text/plain");
    assert!(
        call.user_agent.starts_with("faas-cli/") || call.user_agent.starts_with("Go-http-client/")
    );
    assert!(!call.call_id.is_empty());
    let (h, answer) = callback_of(&got, &call.call_id).await;
    assert_eq!(answer, "done: hello from faas-cli\n");
    assert_eq!(h["x-function-status"], "200");

    // describe (through the stored login) prints the Async URL; it takes a call.
    let ran = run(&cli, &home, &["describe", "rec", "-g", &url], "").await;
    let async_url = ran
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Async URL:"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no Async URL in:\n{}", ran.stdout));
    let path = async_url
        .strip_prefix(&url)
        .unwrap_or_else(|| panic!("{async_url} is not on {url}"));
    assert!(
        path == "/async-function/rec" || path == "/async-function/rec.openfaas-fn",
        "{async_url}"
    );
    let r = gw.req("POST", path, "via the described URL").await;
    assert_eq!(r.status, 202, "{}", r.text());
    delivered(&log, "via the described URL").await;
}

/// `faas-cli namespace create/list/get/update/delete` (faas-cli `commands/namespace_*.go`,
/// through go-sdk's namespace client) against the gateway with basic auth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faas_cli_manages_namespaces() {
    let Some(cli) = faas_cli() else {
        println!(
            "skipped: faas-cli is not on PATH (what its go-sdk sends for namespaces is covered \
             by namespaces::what_go_sdk_sends_for_namespaces_is_answered_as_it_expects)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let gw = Gateway::start_with(&[], &[("FAASGATE_BASIC_AUTH_PASSWORD", PASSWORD)]);
    let url = format!("http://{}", gw.addr);
    run(
        &cli,
        &home,
        &["login", "-g", &url, "-u", "admin", "--password-stdin"],
        PASSWORD,
    )
    .await;
    let auth = support::basic_auth("admin", PASSWORD);
    let get_ns = |name: &'static str| {
        let (gw, auth) = (&gw, auth.clone());
        async move {
            gw.req_h(
                "GET",
                &format!("/system/namespace/{name}"),
                &[("authorization", &auth)],
                "",
            )
            .await
        }
    };

    let ran = run(
        &cli,
        &home,
        &[
            "namespace",
            "create",
            "cli-team",
            "--label",
            "tier=gold",
            "--annotation",
            "owner=me",
            "-g",
            &url,
        ],
        "",
    )
    .await;
    assert!(
        ran.stdout.contains("Namespace Created: cli-team"),
        "{}",
        ran.stdout
    );
    let r = get_ns("cli-team").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"name": "cli-team",
               "labels": {"openfaas": "1", "tier": "gold"},
               "annotations": {"openfaas": "1", "owner": "me"}})
    );

    let ran = run(&cli, &home, &["namespace", "list", "-g", &url], "").await;
    assert!(ran.stdout.contains("cli-team"), "{}", ran.stdout);
    assert!(ran.stdout.contains("openfaas-fn"), "{}", ran.stdout);
    let ran = run(
        &cli,
        &home,
        &["namespace", "get", "cli-team", "-g", &url],
        "",
    )
    .await;
    assert!(ran.stdout.contains("tier"), "{}", ran.stdout);

    run(
        &cli,
        &home,
        &[
            "namespace",
            "update",
            "cli-team",
            "--label",
            "tier=silver",
            "-g",
            &url,
        ],
        "",
    )
    .await;
    assert_eq!(get_ns("cli-team").await.json()["labels"]["tier"], "silver");

    let ran = run(
        &cli,
        &home,
        &["namespace", "delete", "cli-team", "-g", &url],
        "",
    )
    .await;
    assert!(
        ran.stdout.contains("Namespace Deleted: cli-team"),
        "{}",
        ran.stdout
    );
    assert_eq!(get_ns("cli-team").await.status, 404);
}
