//! A real OpenFaaS client, the Apache Airflow OpenFaaS provider (`OpenFaasHook`, PyPI
//! `apache-airflow-providers-openfaas`), against the real binary with basic auth on. The
//! client side is `tests/clients/airflow_hook.py`, run with the venv's python: it checks a
//! deployed function exists and a missing one does not, invokes it synchronously and
//! asynchronously, deploys a function and updates it (form-encoded and JSON bodies), and
//! sees refusals (a missing function's update, a deploy without credentials) raise. This
//! side checks what the function received: each call's method, content type and
//! form-encoded body, and an async call id; and that the hook's deployment runs with its
//! last update.
//!
//! What the hook sends (provider 3.9.6): `GET {host}/system/function/{name}`,
//! `POST {host}/function/{name}`, `POST {host}/async-function/{name}`,
//! `POST|PUT {host}/system/functions` (success only on exactly 202), each body through
//! `requests.post(url, body)`: a dict goes `application/x-www-form-urlencoded`, a string as
//! it is with no Content-Type. It never sends the connection's login or password: basic
//! auth reaches the gateway only as credentials in the host URL.
//!
//! Needs the venv `target/pyenv/airflow` that `bash scripts/test-setup.sh` makes (the
//! README's `scripts/test` runs it first): without it the test fails saying so.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::Gateway;

const PASSWORD: &str = "airflow-test-password";
const PYTHON: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/target/pyenv/airflow/bin/python"
);
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/airflow_hook.py");
const WAIT: Duration = Duration::from_secs(60);

/// A function whose process appends `method|content-type|call-id|$STAGE|body` to its log
/// for every call.
fn recorder(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let log = dir.join(format!("{name}.log"));
    let script = dir.join(format!("{name}.sh"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nbody=$(cat)\n\
             echo \"$Http_Method|$Http_Content_Type|$Http_X_Call_Id|$STAGE|$body\" >> {}\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (script, log)
}

fn lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_airflow_hook_deploys_invokes_and_queues_through_the_gateway() {
    assert!(
        Path::new(PYTHON).exists(),
        "{PYTHON} is missing: the Airflow client venv is made by `bash scripts/test-setup.sh` \
         (the README's scripts/test runs it first)"
    );
    let gw = Gateway::start_with(&[], &[("FAASGATE_BASIC_AUTH_PASSWORD", PASSWORD)])
        .with_password(PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let (process, log) = recorder(dir.path(), "rec");
    let (new_process, new_log) = recorder(dir.path(), "hooked");
    let spec = json!({"service": "rec", "image": "local/recorder", "envProcess": process});
    let r = gw.deploy(spec).await;
    assert_eq!(r.status, 202, "{}", r.text());
    gw.wait_available("rec", 1).await;

    let host = format!("http://admin:{PASSWORD}@{}", gw.addr);
    let anonymous = format!("http://{}", gw.addr);
    let airflow_home = dir.path().join("airflow");
    let mut cmd = Command::new(PYTHON);
    cmd.arg(SCRIPT)
        .args(["rec", "nope", "hooked"])
        .arg(&new_process)
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .env("AIRFLOW_HOME", &airflow_home)
        .env(
            "AIRFLOW_CONN_OPEN_FAAS_DEFAULT",
            json!({"conn_type": "openfaas", "host": host}).to_string(),
        )
        .env(
            "AIRFLOW_CONN_OPENFAAS_NOAUTH",
            json!({"conn_type": "openfaas", "host": anonymous}).to_string(),
        )
        // Loopback only, whatever proxy the environment names; and no ~/.netrc credentials.
        .env("NO_PROXY", "*")
        .env("no_proxy", "*")
        .env("NETRC", dir.path().join("no-netrc"));
    let ran = tokio::task::spawn_blocking(move || support::run_bounded(&mut cmd, b"", WAIT))
        .await
        .unwrap();
    assert!(
        ran.success(),
        "the hook script failed ({:?}); stdout:\n{}\nstderr:\n{}",
        ran.code,
        ran.stdout,
        ran.stderr
    );
    let steps: Vec<&str> = ran
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ok "))
        .collect();
    assert_eq!(
        steps,
        [
            "exists",
            "missing",
            "exists-without-credentials",
            "invoke",
            "invoke-async",
            "invoke-async-without-credentials",
            "deploy",
            "update-form",
            "update-json",
            "update-missing",
            "deploy-without-credentials",
            "done"
        ],
        "stderr:\n{}",
        ran.stderr
    );

    // The sync call, then the two queued ones (delivered in their own time), each whole.
    let mut got = Vec::new();
    support::eventually(WAIT, "three calls in the function's log", || {
        got = lines(&log);
        got.len() >= 3
    })
    .await;
    let fields: Vec<Vec<&str>> = got.iter().map(|l| l.splitn(5, '|').collect()).collect();
    let form = "application/x-www-form-urlencoded";
    let find = |body: &str| {
        fields
            .iter()
            .find(|f| f.len() == 5 && f[4] == body)
            .unwrap_or_else(|| panic!("no call with body {body:?}: {got:?}"))
    };
    let sync = find("step=sync");
    assert_eq!((sync[0], sync[1]), ("POST", form), "{got:?}");
    for body in ["step=async&msg=hello+airflow", "step=async-anonymous"] {
        let call = find(body);
        assert_eq!((call[0], call[1]), ("POST", form), "{got:?}");
        assert!(
            !call[2].is_empty(),
            "an async call carries its call id: {got:?}"
        );
    }
    assert_eq!(got.len(), 3, "each call once: {got:?}");

    // The hook's deployment runs its last update (the JSON one).
    let s = gw.status("hooked").await;
    assert_eq!(s["envVars"], json!({"STAGE": "json"}), "{s}");
    assert_eq!(s["labels"]["team"], "data", "{s}");
    // Its replica is replaced on update: poll until the updated process answers.
    gw.wait_available("hooked", 1).await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let r = gw.req("POST", "/function/hooked", "ping").await;
        let got = lines(&new_log);
        let last: Vec<&str> = got.last().map_or(vec![], |l| l.splitn(5, '|').collect());
        if r.status == 200 && last.len() == 5 && last[3] == "json" {
            assert_eq!((last[0], last[4]), ("POST", "ping"), "{got:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the updated process never answered: {} {}; log {got:?}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
