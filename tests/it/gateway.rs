//! Integration tests of `faasgate serve` on the local provider: the real binary on port 0
//! with a temporary data dir, functions run as `faasgate watchdog` child processes.

use crate::support;

use std::time::Duration;

use serde_json::json;
use support::{descendants, eventually, Gateway};

fn env_fn(name: &str) -> serde_json::Value {
    json!({
        "service": name,
        "image": "docker.io/functions/alpine:latest",
        "envProcess": "env",
        "envVars": {"custom_env": "custom_env_value"},
        "labels": {"canary_build": "true"},
        "annotations": {"some-json": "{\n  \"a\": 1\n}"},
        "limits": {"memory": "5Mi", "cpu": "100m"}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_list_status_and_invoke_with_every_verb() {
    let gw = Gateway::start();
    let r = gw.deploy(env_fn("env-test")).await;
    assert_eq!(r.status, 202, "{}", r.text());

    // replicas = desired at once; availableReplicas once healthy.
    let s = gw.status("env-test").await;
    assert_eq!(s["replicas"], 1);
    let s = gw.wait_available("env-test", 1).await;
    assert_eq!(s["name"], "env-test");
    assert_eq!(s["namespace"], "openfaas-fn");
    assert_eq!(s["image"], "docker.io/functions/alpine:latest");
    assert_eq!(s["envProcess"], "env");
    assert_eq!(s["envVars"]["custom_env"], "custom_env_value");
    assert_eq!(s["labels"]["faas_function"], "env-test");
    assert_eq!(s["labels"]["canary_build"], "true");
    assert_eq!(s["annotations"]["some-json"], "{\n  \"a\": 1\n}");
    assert_eq!(s["limits"], json!({"memory": "5Mi", "cpu": "100m"}));
    assert!(s["requests"].is_null());

    let list = gw.get("/system/functions").await;
    assert_eq!(list.status, 200);
    let list = list.json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "env-test");

    for verb in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        let r = gw.req(verb, "/function/env-test", "").await;
        assert_eq!(r.status, 200, "{verb}: {}", r.text());
        assert!(
            r.text().contains(&format!("Http_Method={verb}")),
            "{}",
            r.text()
        );
        assert!(r.text().contains("custom_env=custom_env_value"));
        assert!(
            !r.header("x-call-id").unwrap_or("").is_empty(),
            "{verb} X-Call-Id"
        );
        assert!(
            !r.header("x-start-time").unwrap_or("").is_empty(),
            "{verb} X-Start-Time"
        );
    }
    // Namespace suffix, sub-path and raw query pass through.
    let r = gw
        .req(
            "POST",
            "/function/env-test.openfaas-fn/sub/path?testing=1",
            "",
        )
        .await;
    assert_eq!(r.status, 200);
    let body = r.text();
    assert!(body.contains("Http_Query=testing=1"), "{body}");
    assert!(body.contains("Http_Path=/sub/path"), "{body}");
    // A client's X-Call-Id is kept.
    let r = gw
        .req_h("GET", "/function/env-test", &[("X-Call-Id", "my-call")], "")
        .await;
    assert!(r.text().contains("Http_X_Call_Id=my-call"), "{}", r.text());

    // The invocations are counted in status and metrics.
    let s = gw.status("env-test").await;
    assert!(s["invocationCount"].as_u64().unwrap() >= 7, "{s}");
    assert!(s["stats"]["p50"].as_f64().unwrap() > 0.0, "{s}");
    let m = gw.get("/metrics").await.text();
    assert!(
        m.contains(
            r#"gateway_function_invocation_total{code="200",function_name="env-test.openfaas-fn"}"#
        ),
        "{m}"
    );
    assert!(m.contains("gateway_functions_seconds_bucket"));
    assert!(m.contains(r#"gateway_service_count{function_name="env-test.openfaas-fn"} 1"#));
}

/// `--workers 1` (nginx's `worker_processes 1`): the runtime has one worker (the serving
/// line reports the runtime's own count) and it serves concurrent invocations; a count that
/// is not a number is refused naming the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_serves_concurrent_invocations() {
    let gw = Gateway::start_with(&["--no-auth", "--workers", "1"], &[]);
    let r = gw
        .deploy(json!({"service": "cat1", "image": "x", "envProcess": "cat"}))
        .await;
    assert_eq!(r.status, 202);
    let calls = (0..16).map(|i| {
        let body = format!("call {i}");
        let gw = &gw;
        async move { (gw.req("POST", "/function/cat1", body.clone()).await, body) }
    });
    for (r, body) in futures_util::future::join_all(calls).await {
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), body);
    }
    let serving = gw
        .log
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.contains("faasgate is serving"))
        .cloned()
        .expect("serving line");
    assert!(serving.contains(" workers=1"), "{serving}");

    let out = std::process::Command::new(support::BIN)
        .args(["serve", "--workers", "two"])
        .output()
        .expect("run faasgate");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--workers"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_function_hashes_the_body() {
    let gw = Gateway::start();
    let r = gw
        .deploy(json!({"service": "stronghash", "image": "x", "envProcess": "sha512sum"}))
        .await;
    assert_eq!(r.status, 202);
    let r = gw.req("POST", "/function/stronghash", "hello").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().starts_with("9b71d224bd62f378"), "{}", r.text());
}

/// `serve --stack` started in another folder: a relative program in `fprocess` is the stack
/// file's (it crash-looped with "exit status" when it was the gateway's working directory's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_files_relative_program_is_found_from_another_folder() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let (stack, cwd, data) = (
        tmp.path().join("stack"),
        tmp.path().join("elsewhere"),
        tmp.path().join("data"),
    );
    for d in [&stack.join("bin"), &cwd, &data] {
        std::fs::create_dir_all(d).unwrap();
    }
    let script = stack.join("bin/hello.sh");
    std::fs::write(&script, "#!/bin/sh\necho \"hello from $0\"\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        stack.join("stack.yml"),
        "provider:\n  name: openfaas\nfunctions:\n  hello:\n    image: local/hello\n    \
         fprocess: ./bin/hello.sh\n    environment:\n      mode: streaming\n",
    )
    .unwrap();
    // The stack path is relative to the gateway's working directory, not the stack's folder.
    let gw = Gateway::start_in_cwd(
        &data,
        Some(&cwd),
        &["--no-auth", "--stack", "../stack/stack.yml"],
        &[],
    );
    let s = gw.wait_available("hello", 1).await;
    let program = std::path::Path::new(s["envProcess"].as_str().unwrap());
    assert!(program.is_absolute(), "{program:?}");
    assert_eq!(
        program.canonicalize().unwrap(),
        script.canonicalize().unwrap()
    );
    let r = gw.req("POST", "/function/hello", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().starts_with("hello from /"), "{}", r.text());
}

/// A replica that crashes at start says why in the gateway's log: the warning carries the last
/// lines of its stderr, not only "exit status: 1".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_start_logs_the_replicas_last_stderr_lines() {
    use std::os::unix::fs::PermissionsExt;
    let gw = Gateway::start();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("crash.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho 'first words' >&2\necho 'cannot open config.toml' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = gw
        .deploy(json!({
            "service": "crasher",
            "image": "local/crasher",
            "envProcess": script.to_str().unwrap(),
            "envVars": {"mode": "http"},
        }))
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let crash_line = || {
        gw.log
            .lock()
            .unwrap()
            .iter()
            .find(|l| {
                l.contains("replica exited at start") && l.contains("cannot open config.toml")
            })
            .cloned()
    };
    eventually(
        Duration::from_secs(30),
        "a warning with the replica's stderr",
        || crash_line().is_some(),
    )
    .await;
    let line = crash_line().unwrap();
    assert!(
        line.contains("WARN") && line.contains("first words"),
        "{line}"
    );
    assert!(line.contains("exit status: 1"), "{line}");
}

/// A bad `com.openfaas.scale.*` value is a 400 naming the label, at deploy and at update, in
/// a label or an annotation alike (one parser: `model::scale`), and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_scale_label_is_refused_at_deploy_naming_it() {
    let gw = Gateway::start_with(&["--no-auth", "--no-autoscale"], &[]);
    for (field, label, value) in [
        ("labels", "com.openfaas.scale.min", "two"),
        ("labels", "com.openfaas.scale.max", "-1"),
        // Beyond the documented maximum of replicas (Nomad's default job_max_count).
        ("labels", "com.openfaas.scale.max", "50001"),
        (
            "annotations",
            "com.openfaas.scale.min",
            "9223372036854775808",
        ),
        ("annotations", "com.openfaas.scale.zero", "maybe"),
        ("labels", "com.openfaas.scale.type", "cpu"),
        ("labels", "com.openfaas.scale.zero-duration", "soon"),
    ] {
        let mut f = env_fn("badscale");
        f[field] = json!({ label: value });
        let r = gw.deploy(f).await;
        assert_eq!(r.status, 400, "{label}={value}: {}", r.text());
        assert!(r.text().contains(label), "{label}: {}", r.text());
        assert_eq!(gw.get("/system/function/badscale").await.status, 404);
    }
    // Deployed well, then updated with a bad value: refused, the function keeps its spec.
    let mut f = env_fn("badscale");
    f["labels"] = json!({"com.openfaas.scale.min": "1"});
    assert_eq!(gw.deploy(f.clone()).await.status, 202);
    f["labels"] = json!({"com.openfaas.scale.min": "1.5"});
    let r = gw.req("PUT", "/system/functions", f.to_string()).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("com.openfaas.scale.min"), "{}", r.text());
    assert_eq!(
        gw.status("badscale").await["labels"]["com.openfaas.scale.min"],
        "1"
    );
    // A scale beyond the maximum is refused too, and changes nothing.
    let r = gw
        .post_json(
            "/system/scale-function/badscale",
            json!({"serviceName": "badscale", "replicas": 50_001}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text()
            .contains("replicas 50001 is above the maximum of 50000"),
        "{}",
        r.text()
    );
    assert_eq!(gw.status("badscale").await["replicas"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_up_down_to_zero_and_back_on_invoke() {
    // Manual scaling below min is what this tests: the autoscaler would raise it back.
    let gw = Gateway::start_with(&["--no-auth", "--no-autoscale"], &[]);
    let mut f = env_fn("scaler");
    f["labels"] = json!({"com.openfaas.scale.min": "2"});
    assert_eq!(gw.deploy(f).await.status, 202);
    assert_eq!(gw.status("scaler").await["replicas"], 2);
    gw.wait_available("scaler", 2).await;

    let scale = |n: u64| json!({"serviceName": "scaler", "replicas": n});
    let r = gw
        .post_json("/system/scale-function/scaler", scale(3))
        .await;
    assert!(r.status == 200 || r.status == 202, "{}", r.text());
    assert_eq!(gw.status("scaler").await["replicas"], 3);
    gw.wait_available("scaler", 3).await;

    assert_eq!(
        gw.post_json("/system/scale-function/scaler", scale(1))
            .await
            .status,
        202
    );
    assert_eq!(gw.status("scaler").await["replicas"], 1);
    gw.wait_available("scaler", 1).await;

    assert_eq!(
        gw.post_json("/system/scale-function/scaler", scale(0))
            .await
            .status,
        202
    );
    assert_eq!(gw.status("scaler").await["replicas"], 0);
    gw.wait_available("scaler", 0).await;
    // Scaled to zero, the function is still listed.
    assert_eq!(
        gw.get("/system/functions").await.json()[0]["name"],
        "scaler"
    );

    // An invoke at zero is held, scales the function up (to max(1, min) = 2) and succeeds.
    let r = gw.req("GET", "/function/scaler", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("Http_Method=GET"));
    assert_eq!(gw.status("scaler").await["replicas"], 2);

    // Unknown function: 404 on status, scale and invoke.
    assert_eq!(gw.get("/system/function/nope").await.status, 404);
    let r = gw
        .post_json("/system/scale-function/nope", json!({"replicas": 1}))
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(gw.req("POST", "/function/nope", "").await.status, 404);
    assert_eq!(
        gw.req("POST", "/function/.openfaas-fn", "").await.status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_concurrent_requests_at_a_cold_function_all_succeed() {
    // Without the autoscaler, so the one scale-up seen is the cold start's.
    let gw = Gateway::start_with(&["--no-auth", "--no-autoscale"], &[]);
    assert_eq!(gw.deploy(env_fn("cold")).await.status, 202);
    gw.wait_available("cold", 1).await;
    let r = gw
        .post_json("/system/scale-function/cold", json!({"replicas": 0}))
        .await;
    assert_eq!(r.status, 202);
    gw.wait_available("cold", 0).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let addr = gw.addr;
        tasks.push(tokio::spawn(async move {
            support::request(addr, "GET", "/function/cold", &[], Default::default())
                .await
                .status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    // Exactly one scale-up happened: to max(1, min) = 1.
    assert_eq!(gw.status("cold").await["replicas"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_under_load_fails_no_request() {
    let gw = Gateway::start();
    let mut f = env_fn("roller");
    f["labels"] = json!({"com.openfaas.scale.min": "2"});
    assert_eq!(gw.deploy(f.clone()).await.status, 202);
    gw.wait_available("roller", 2).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (addr, stop) = (gw.addr, stop.clone());
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = support::request(addr, "POST", "/function/roller", &[], "x".into()).await;
                if r.status == 200 {
                    ok += 1
                } else {
                    failed.push((r.status, r.text()))
                }
            }
            (ok, failed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    f["envVars"] = json!({"custom_env": "v2"});
    let r = gw
        .req_h(
            "PUT",
            "/system/functions",
            &[("content-type", "application/json")],
            serde_json::to_vec(&f).unwrap(),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    // The new spec reads back at once and the count is kept.
    let s = gw.status("roller").await;
    assert_eq!(s["envVars"]["custom_env"], "v2");
    assert_eq!(s["replicas"], 2);
    // Wait until every answer comes from the new replicas.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut all_new = true;
        for _ in 0..6 {
            let r = gw.req("GET", "/function/roller", "").await;
            all_new &= r.text().contains("custom_env=v2");
        }
        if all_new {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "roll did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        let (ok, failed) = w.await.unwrap();
        assert!(failed.is_empty(), "failed during the roll: {failed:?}");
        total += ok;
    }
    assert!(total > 10, "too little load to prove anything: {total}");
    gw.wait_available("roller", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_replica_is_replaced_while_requests_succeed() {
    let gw = Gateway::start();
    let mut f = env_fn("crashy");
    f["labels"] = json!({"com.openfaas.scale.min": "2"});
    assert_eq!(gw.deploy(f).await.status, 202);
    gw.wait_available("crashy", 2).await;
    let before = descendants(gw.pid());
    assert!(before.len() >= 2, "{before:?}");
    // Kill one watchdog (a direct child of the gateway).
    let victim = *before
        .iter()
        .find(|p| support::descendants(gw.pid()).contains(p) && is_child_of(**p, gw.pid()))
        .expect("a watchdog child");
    support::signal(victim, libc::SIGKILL);
    for i in 0..40 {
        let r = gw.req("GET", "/function/crashy", "").await;
        assert_eq!(r.status, 200, "request {i} after the kill: {}", r.text());
    }
    eventually(Duration::from_secs(60), "a replacement replica", || {
        !support::alive(victim)
    })
    .await;
    gw.wait_available("crashy", 2).await;
    let r = gw.req("GET", "/function/crashy", "").await;
    assert_eq!(r.status, 200);
}

fn is_child_of(pid: u32, parent: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')').and_then(|x| {
                x.1.split_whitespace()
                    .nth(1)
                    .map(|p| p == parent.to_string())
            })
        })
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_stops_the_function() {
    let gw = Gateway::start();
    assert_eq!(gw.deploy(env_fn("gone")).await.status, 202);
    gw.wait_available("gone", 1).await;
    let del = |name: &str| serde_json::to_vec(&json!({"functionName": name})).unwrap();
    let r = gw
        .req_h(
            "DELETE",
            "/system/functions",
            &[("content-type", "application/json")],
            del("gone"),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(gw.get("/system/function/gone").await.status, 404);
    assert_eq!(gw.req("GET", "/function/gone", "").await.status, 404);
    let r = gw
        .req_h(
            "DELETE",
            "/system/functions",
            &[("content-type", "application/json")],
            del("gone"),
        )
        .await;
    assert_eq!(r.status, 404);
    eventually(Duration::from_secs(30), "replica processes gone", || {
        descendants(gw.pid()).is_empty()
    })
    .await;
    let r = gw.req_h("DELETE", "/system/functions", &[], "").await;
    assert_eq!(r.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_restores_functions_and_shutdown_leaves_no_child() {
    let tmp = tempfile::tempdir().unwrap();
    let mut gw = Gateway::start_in(tmp.path(), &["--no-auth"], &[]);
    assert_eq!(gw.deploy(env_fn("one")).await.status, 202);
    let r = gw
        .post_json(
            "/system/namespace/",
            json!({"name": "team", "labels": {"openfaas": "1"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let mut two = env_fn("two");
    two["namespace"] = json!("team");
    assert_eq!(gw.deploy(two).await.status, 202);
    let r = gw
        .post_json("/system/scale-function/one", json!({"replicas": 2}))
        .await;
    assert_eq!(r.status, 202);
    gw.wait_available("one", 2).await;
    gw.wait_available("two.team", 1).await;
    let children = descendants(gw.pid());
    assert!(children.len() >= 3, "{children:?}");
    assert_eq!(gw.stop(), Some(0));
    for pid in &children {
        assert!(!support::alive(*pid), "child {pid} outlived the gateway");
    }

    let gw = Gateway::start_in(tmp.path(), &["--no-auth"], &[]);
    assert_eq!(gw.status("one").await["replicas"], 2);
    gw.wait_available("one", 2).await;
    gw.wait_available("two.team", 1).await;
    let ns = gw.get("/system/namespaces").await.json();
    assert_eq!(ns, json!(["openfaas-fn", "team"]));
    let r = gw.req("GET", "/function/two.team", "").await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_routes_need_basic_auth() {
    let gw = Gateway::start_with(&[], &[("FAASGATE_BASIC_AUTH_PASSWORD", "s3cret-pass")]);
    let r = gw.get("/system/functions").await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"Restricted\"")
    );
    // The UI's files load without credentials (its login form needs them); its data does not.
    assert_eq!(gw.get("/ui/").await.status, 200);
    let r = gw.get("/ui/api/summary").await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        None,
        "no browser password dialog"
    );
    // admin:wrong, then admin:s3cret-pass
    let r = gw
        .req_h(
            "GET",
            "/system/functions",
            &[("authorization", "Basic YWRtaW46d3Jvbmc=")],
            "",
        )
        .await;
    assert_eq!(r.status, 401);
    let r = gw
        .req_h(
            "GET",
            "/system/functions",
            &[("authorization", "Basic YWRtaW46czNjcmV0LXBhc3M=")],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(gw.get("/healthz").await.status, 200);
    assert_eq!(gw.get("/metrics").await.status, 200);
    assert_eq!(gw.req("GET", "/function/none", "").await.status, 404);
    // The password never reaches the log.
    assert!(!gw.log.lock().unwrap().join("\n").contains("s3cret-pass"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_password_is_written_0600_and_not_logged() {
    use std::os::unix::fs::PermissionsExt;
    let gw = Gateway::start_with(&[], &[]);
    let file = gw.data_dir.join("secrets/basic-auth-password");
    let meta = std::fs::metadata(&file).expect("password file");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let password = std::fs::read_to_string(&file).unwrap();
    assert!(password.trim().len() >= 32);
    let log = gw.log.lock().unwrap().join("\n");
    assert!(!log.contains(password.trim()));
    assert!(
        log.contains("basic-auth-password"),
        "the log names the file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected_and_changes_nothing() {
    let gw = Gateway::start_with(&["--no-auth", "--max-body-bytes", "2000"], &[]);
    assert_eq!(gw.deploy(env_fn("keep")).await.status, 202);
    let before = gw.status("keep").await;

    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("bad name", serde_json::to_vec(&json!({"service": "a b", "envProcess": "env"})).unwrap(), 400, "must match"),
        ("long name", serde_json::to_vec(&json!({"service": "x".repeat(64), "envProcess": "env"})).unwrap(), 400, "longer than 63"),
        ("no service", serde_json::to_vec(&json!({"image": "x", "envProcess": "env"})).unwrap(), 400, "service is required"),
        ("no envProcess", serde_json::to_vec(&json!({"service": "keep"})).unwrap(), 400, "envProcess"),
        ("malformed JSON", b"{\"service\": ".to_vec(), 400, "invalid JSON"),
        ("bad namespace", serde_json::to_vec(&json!({"service": "keep", "namespace": "a.b", "envProcess": "env"})).unwrap(), 400, "namespace"),
        ("too large", serde_json::to_vec(&json!({"service": "keep", "envProcess": "env", "envVars": {"big": "x".repeat(5000)}})).unwrap(), 413, "larger than"),
    ];
    for (what, body, status, msg) in cases {
        for method in ["POST", "PUT"] {
            let r = gw
                .req_h(
                    method,
                    "/system/functions",
                    &[("content-type", "application/json")],
                    body.clone(),
                )
                .await;
            assert_eq!(r.status, status, "{what} ({method}): {}", r.text());
            assert!(
                r.text().contains(msg),
                "{what}: {:?} lacks {msg:?}",
                r.text()
            );
        }
    }
    let r = gw.get("/system/functions?namespace=nope").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, "namespace not valid"),
        "a namespace outside the managed set"
    );
    let r = gw
        .post_json(
            "/system/scale-function/keep",
            json!({"serviceName": "keep"}),
        )
        .await;
    assert_eq!(r.status, 400, "scale without replicas");
    let r = gw
        .req_h(
            "PUT",
            "/system/functions",
            &[("content-type", "application/json")],
            serde_json::to_vec(&json!({"service": "missing", "envProcess": "env"})).unwrap(),
        )
        .await;
    assert_eq!(r.status, 404, "PUT of a missing function");

    let mut after = gw.status("keep").await;
    let mut before = before;
    for v in [&mut before, &mut after] {
        v.as_object_mut().unwrap().remove("availableReplicas");
        v.as_object_mut().unwrap().remove("stats");
    }
    assert_eq!(before, after, "bad input changed the deployed function");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_info_namespaces_logs_and_form_deploys() {
    let gw = Gateway::start();
    let r = gw.get("/").await;
    assert_eq!(r.status, 307);
    assert_eq!(r.header("location"), Some("/ui/"));
    assert_eq!(gw.get("/ui/").await.status, 200);
    assert_eq!(gw.get("/nowhere").await.status, 404);
    assert_eq!(gw.get("/system/scale-function/x").await.status, 405);
    assert_eq!(gw.req("PATCH", "/system/functions", "").await.status, 405);
    assert_eq!(gw.req("POST", "/healthz", "").await.status, 405);

    let info = gw.get("/system/info").await.json();
    assert_eq!(info["provider"]["provider"], "faasgate");
    assert_eq!(info["provider"]["orchestration"], "local");
    assert!(!info["provider"]["version"]["release"]
        .as_str()
        .unwrap()
        .is_empty());
    assert!(!info["provider"]["version"]["sha"]
        .as_str()
        .unwrap()
        .is_empty());
    assert!(!info["version"]["sha"].as_str().unwrap().is_empty());
    assert_eq!(
        gw.get("/system/namespaces").await.json(),
        json!(["openfaas-fn"])
    );

    // Form-encoded deploy, as the Airflow hook sends it.
    let r = gw
        .req_h(
            "POST",
            "/system/functions",
            &[("content-type", "application/x-www-form-urlencoded")],
            "service=test-logger&image=functions%2Falpine%3Alatest&envProcess=cat",
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    gw.wait_available("test-logger", 1).await;
    let r = gw.req("POST", "/function/test-logger", "openfaas-fn").await;
    assert_eq!(r.text(), "openfaas-fn");

    // Logs: NDJSON, ends without follow, carries the watchdog's lines.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = gw
            .get("/system/logs?name=test-logger&namespace=openfaas-fn&follow=false")
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
        let lines: Vec<serde_json::Value> = r
            .text()
            .lines()
            .map(|l| serde_json::from_str(l).expect("NDJSON line"))
            .collect();
        assert!(lines.iter().all(|l| l["name"] == "test-logger"));
        let texts: Vec<&str> = lines.iter().filter_map(|l| l["text"].as_str()).collect();
        if texts.iter().any(|t| t.contains("Forking fprocess"))
            && texts.iter().any(|t| t.contains("Wrote 11 Bytes"))
        {
            let tail = gw
                .get("/system/logs?name=test-logger&tail=1&follow=false")
                .await
                .text();
            assert_eq!(tail.lines().count(), 1);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "log lines missing: {texts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(gw.get("/system/logs").await.status, 422);
    assert_eq!(
        gw.get("/system/logs?name=test-logger&tail=x").await.status,
        422
    );
}

/// An http-mode function (python3): `/stream` writes a chunked event stream whose last event
/// waits for the file `$MARKER`; `/redirect` answers 302; `/headers` echoes request headers.
const HTTP_FN: &str = r#"
import json, os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        if self.path.startswith("/stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.chunk(b"data: first\n\n")
            deadline = time.time() + 60
            while not os.path.exists(os.environ["MARKER"]) and time.time() < deadline:
                time.sleep(0.02)
            self.chunk(b"data: last\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        elif self.path.startswith("/redirect"):
            body = b"moved"
            self.send_response(302)
            self.send_header("Location", "http://example.com/elsewhere")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def chunk(self, b):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(b), b))
        self.wfile.flush()

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

/// Writes `HTTP_FN` into `dir` and deploys it as an http-mode function `name`.
async fn deploy_http_fn(gw: &Gateway, dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let script = dir.join("fn.py");
    std::fs::write(&script, HTTP_FN).unwrap();
    let marker = dir.join("go");
    let r = gw
        .deploy(json!({
            "service": name,
            "image": "local/http-fn",
            "envProcess": format!("python3 {}", script.display()),
            "envVars": {"mode": "http", "MARKER": marker.to_string_lossy()},
        }))
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    gw.wait_available(name, 1).await;
    marker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_timeout_answers_504() {
    let gw = Gateway::start_with(&["--no-auth"], &[("upstream_timeout", "1s")]);
    let r = gw
        .deploy(json!({
            "service": "sleepy",
            "image": "functions/alpine:latest",
            "envProcess": "sleep 5",
            "envVars": {"exec_timeout": "30s"},
        }))
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    gw.wait_available("sleepy", 1).await;
    // The function answers nothing for 5 s; the gateway gives up after 1 s.
    let r = gw.req("POST", "/function/sleepy", "").await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.header("x-call-id").is_some());
    let metrics = gw.get("/metrics").await.text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gateway_function_invocation_total{")
                && l.contains(r#"function_name="sleepy.openfaas-fn""#)
                && l.contains(r#"code="504""#)
                && l.ends_with(" 1")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_reaches_the_client_chunk_by_chunk() {
    use http_body_util::BodyExt;
    let gw = Gateway::start();
    let tmp = tempfile::tempdir().unwrap();
    let marker = deploy_http_fn(&gw, tmp.path(), "sse").await;

    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/function/sse/stream")
        .header("host", gw.addr.to_string())
        .header("accept", "text/event-stream")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(60), sender.send_request(req))
        .await
        .expect("response head within 60 s")
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    // The function cannot finish before the marker exists: the first event arriving now
    // proves it was streamed, not buffered.
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("data: first\n\n") {
        let frame = tokio::time::timeout(Duration::from_secs(60), body.frame())
            .await
            .expect("first event within 60 s")
            .expect("the stream goes on until the marker exists")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            seen.extend_from_slice(&data);
        }
    }
    assert!(!String::from_utf8_lossy(&seen).contains("last"));
    std::fs::write(&marker, b"").unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(60), body.collect())
        .await
        .expect("end of stream within 60 s")
        .unwrap()
        .to_bytes();
    seen.extend_from_slice(&rest);
    assert_eq!(
        String::from_utf8_lossy(&seen),
        "data: first\n\ndata: last\n\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_pass_through_and_forwarded_headers_reach_the_function() {
    let gw = Gateway::start();
    let tmp = tempfile::tempdir().unwrap();
    deploy_http_fn(&gw, tmp.path(), "web").await;

    let r = gw.get("/function/web/redirect").await;
    assert_eq!(r.status, 302, "{}", r.text());
    assert_eq!(r.header("location"), Some("http://example.com/elsewhere"));
    assert_eq!(r.text(), "moved");

    let r = gw
        .req_h(
            "GET",
            "/function/web/headers?x=1",
            &[("connection", "keep-alive, x-hop"), ("x-hop", "1")],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = r.json();
    let host = gw.addr.to_string();
    assert_eq!(seen["x-forwarded-host"], host.as_str());
    let xff = seen["x-forwarded-for"].as_str().unwrap();
    assert!(xff.starts_with("127.0.0.1:"), "{xff}");
    assert!(seen["x-call-id"].as_str().is_some_and(|v| v.len() == 36));
    assert!(seen["x-start-time"].as_str().is_some());
    assert!(
        seen.get("x-hop").is_none(),
        "Connection-named header forwarded: {seen}"
    );

    // Values the client sent are kept.
    let r = gw
        .req_h(
            "GET",
            "/function/web/headers",
            &[
                ("x-forwarded-for", "10.1.2.3"),
                ("x-forwarded-host", "example.org"),
                ("x-call-id", "my-call"),
            ],
            "",
        )
        .await;
    let seen = r.json();
    assert_eq!(seen["x-forwarded-for"], "10.1.2.3");
    assert_eq!(seen["x-forwarded-host"], "example.org");
    assert_eq!(seen["x-call-id"], "my-call");
    assert_eq!(
        r.header("x-call-id"),
        None,
        "only a generated call id is returned"
    );
}

/// A streaming function (python3): body `hold` waits for the file `$MARKER`, anything else
/// answers at once.
const SLOW_FN: &str = r#"
import os, sys, time
body = sys.stdin.read()
if body == "hold":
    deadline = time.time() + 60
    while not os.path.exists(os.environ["MARKER"]) and time.time() < deadline:
        time.sleep(0.02)
    print("held")
else:
    print("quick")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_answering_429_is_avoided() {
    let gw = Gateway::start();
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("slow.py");
    std::fs::write(&script, SLOW_FN).unwrap();
    let marker = tmp.path().join("go");
    let r = gw
        .deploy(json!({
            "service": "busy",
            "image": "local/busy",
            "envProcess": format!("python3 {}", script.display()),
            "envVars": {"max_inflight": "1", "MARKER": marker.to_string_lossy()},
            "labels": {"com.openfaas.scale.min": "2"},
        }))
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    gw.wait_available("busy", 2).await;

    // The replicas' addresses, from their watchdogs' first log lines.
    let mut addrs: Vec<std::net::SocketAddr> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while addrs.len() < 2 {
        assert!(std::time::Instant::now() < deadline, "addresses not logged");
        let logs = gw.get("/system/logs?name=busy&follow=false").await.text();
        addrs = logs
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|l| {
                l["text"]
                    .as_str()?
                    .strip_prefix("faasgate watchdog listening on ")?
                    .trim()
                    .parse()
                    .ok()
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Saturate one replica behind the gateway's back: it answers 429 to anything else.
    let saturated = addrs[0];
    let held =
        tokio::spawn(
            async move { support::request(saturated, "POST", "/", &[], "hold".into()).await },
        );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while support::request(saturated, "GET", "/_/ready", &[], bytes::Bytes::new())
        .await
        .status
        != 429
    {
        assert!(std::time::Instant::now() < deadline, "replica never busy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Every request through the gateway succeeds: p2c draws the busy replica about half the
    // time, and a refused bodiless request goes to the other one.
    for i in 0..20 {
        let r = gw.get("/function/busy").await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.text().trim(), "quick");
    }

    std::fs::write(&marker, b"").unwrap();
    let r = held.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text().trim(), "held");
}
