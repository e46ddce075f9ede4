//! The namespaces API and its enforcement on the local provider: the real binary on port 0
//! with a temporary data dir. Routes and statuses per faasd (`mutate_namespaces.go`) and
//! go-sdk (`client.go`): create/get/update/delete in singular and plural paths, faasd's 400
//! texts, 405, the default namespace, deletes refused while functions remain, persistence
//! across a restart (and the upgrade of a data dir that has functions but no namespace file),
//! and `namespace not valid` with nothing changed for every function route outside the set.

use crate::support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{descendants, eventually, Gateway, Resp};

const JSON: (&str, &str) = ("content-type", "application/json");

fn func(name: &str, ns: &str) -> Value {
    json!({"service": name, "namespace": ns, "image": "local/cat", "envProcess": "cat"})
}

async fn send(gw: &Gateway, method: &str, path: &str, body: Value) -> Resp {
    gw.req_h(method, path, &[JSON], serde_json::to_vec(&body).unwrap())
        .await
}

async fn create(gw: &Gateway, name: &str) -> Resp {
    send(
        gw,
        "POST",
        "/system/namespace/",
        json!({"name": name, "labels": {"openfaas": "1"}}),
    )
    .await
}

async fn names(gw: &Gateway) -> Value {
    let r = gw.get("/system/namespaces").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn expect(r: &Resp, status: u16, text: &str, what: &str) {
    assert_eq!((r.status, r.text().as_str()), (status, text), "{what}");
}

/// Sends each (method, path, JSON body) in turn and expects its (status, text); `what`
/// names the case in a failure.
async fn check(gw: &Gateway, cases: &[(&str, &str, Value, u16, &str, &str)]) {
    for (method, path, body, status, text, what) in cases {
        expect(
            &send(gw, method, path, body.clone()).await,
            *status,
            text,
            what,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_routes_answer_as_faasd_does() {
    let gw = Gateway::start();
    assert_eq!(names(&gw).await, json!(["openfaas-fn"]));

    // Create: 201, empty body; then it is listed and readable.
    let r = send(
        &gw,
        "POST",
        "/system/namespace/",
        json!({"name": "team-b", "labels": {"openfaas": "1", "owner": "b"}, "annotations": {"note": "x"}}),
    )
    .await;
    expect(&r, 201, "", "create");
    // Annotations alone may carry the marker (the OpenFaaS docs' curl), plural path too.
    let r = send(
        &gw,
        "POST",
        "/system/namespaces/",
        json!({"name": "team-a", "annotations": {"openfaas": "1"}}),
    )
    .await;
    expect(
        &r,
        201,
        "",
        "create with the marker in annotations, plural path",
    );
    assert_eq!(names(&gw).await, json!(["openfaas-fn", "team-a", "team-b"]));
    let r = gw.get("/system/namespace/team-b").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.json(),
        json!({"name": "team-b", "labels": {"openfaas": "1", "owner": "b"}, "annotations": {"note": "x"}})
    );
    assert_eq!(
        gw.get("/system/namespaces/team-a").await.json()["annotations"]["openfaas"],
        "1"
    );
    // The default namespace exists without being created, and cannot be created again.
    assert_eq!(
        gw.get("/system/namespace/openfaas-fn").await.json(),
        json!({"name": "openfaas-fn", "labels": {"openfaas": "1"}, "annotations": {}})
    );

    // Create refusals.
    expect(
        &create(&gw, "team-b").await,
        409,
        "namespace team-b already exists",
        "dup",
    );
    expect(
        &create(&gw, "openfaas-fn").await,
        409,
        "namespace openfaas-fn already exists",
        "default",
    );
    check(
        &gw,
        &[
            (
                "POST",
                "/system/namespace/",
                json!({"name": "x"}),
                400,
                "request does not have openfaas=1 label",
                "no marker",
            ),
            (
                "POST",
                "/system/namespace/",
                json!({"name": "x", "labels": {"openfaas": "true"}}),
                400,
                "request does not have openfaas=1 label",
                "marker not 1",
            ),
            (
                "POST",
                "/system/namespace/",
                json!({"labels": {"openfaas": "1"}}),
                400,
                "namespace not specified in request body",
                "no name",
            ),
        ],
    )
    .await;
    let r = gw
        .req_h("POST", "/system/namespace/", &[JSON], "{not json")
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.text().starts_with("error parsing request body: "),
        "{}",
        r.text()
    );
    let r = send(
        &gw,
        "POST",
        "/system/namespace/other",
        json!({"name": "x", "labels": {"openfaas": "1"}}),
    )
    .await;
    expect(
        &r,
        400,
        "namespace in request body does not match namespace in URL",
        "POST with another name in the URL",
    );
    for bad in ["Team", "a_b", "-a", "a.b", &"x".repeat(64)] {
        let r = create(&gw, bad).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert!(r.text().contains("namespace"), "{bad}: {}", r.text());
    }

    // Get refusals.
    expect(
        &gw.get("/system/namespace/nope").await,
        404,
        "namespace nope not found",
        "get missing",
    );
    expect(
        &gw.get("/system/namespace/").await,
        400,
        "namespace not specified in URL",
        "get without a name",
    );
    expect(
        &gw.get("/system/namespace/a.b").await,
        404,
        "namespace a.b not found",
        "get of a name no namespace can have",
    );

    // Update: 202, labels and annotations replaced whole.
    let r = send(
        &gw,
        "PUT",
        "/system/namespace/team-b",
        json!({"name": "team-b", "labels": {"openfaas": "1", "tier": "gold"}}),
    )
    .await;
    expect(&r, 202, "", "update");
    assert_eq!(
        gw.get("/system/namespace/team-b").await.json(),
        json!({"name": "team-b", "labels": {"openfaas": "1", "tier": "gold"}, "annotations": {}})
    );
    let r = send(
        &gw,
        "PUT",
        "/system/namespaces/team-b",
        json!({"name": "team-b", "annotations": {"openfaas": "1"}}),
    )
    .await;
    expect(&r, 202, "", "update, plural path");
    assert_eq!(
        gw.get("/system/namespace/team-b").await.json(),
        json!({"name": "team-b", "labels": {}, "annotations": {"openfaas": "1"}})
    );
    check(
        &gw,
        &[
            (
                "PUT",
                "/system/namespace/team-b",
                json!({"name": "team-a", "labels": {"openfaas": "1"}}),
                400,
                "namespace in request body does not match namespace in URL",
                "update mismatch",
            ),
            (
                "PUT",
                "/system/namespace/nope",
                json!({"name": "nope", "labels": {"openfaas": "1"}}),
                404,
                "namespace nope not found",
                "update missing",
            ),
            (
                "PUT",
                "/system/namespace/team-b",
                json!({"name": "team-b", "labels": {"a": "b"}}),
                400,
                "request does not have openfaas=1 label",
                "update without marker",
            ),
            (
                "PUT",
                "/system/namespace/",
                json!({"name": "team-b", "labels": {"openfaas": "1"}}),
                400,
                "namespace not specified in URL",
                "update without a URL name",
            ),
        ],
    )
    .await;
    // The default namespace's labels can be updated; it stays listed once.
    let r = send(
        &gw,
        "PUT",
        "/system/namespace/openfaas-fn",
        json!({"name": "openfaas-fn", "labels": {"openfaas": "1", "env": "prod"}}),
    )
    .await;
    expect(&r, 202, "", "update the default");
    assert_eq!(
        gw.get("/system/namespace/openfaas-fn").await.json()["labels"]["env"],
        "prod"
    );

    // Other verbs: 405.
    for verb in ["PATCH", "HEAD", "OPTIONS"] {
        let r = gw.req(verb, "/system/namespace/team-b", "").await;
        assert_eq!(r.status, 405, "{verb}");
    }
    for verb in ["POST", "PUT", "DELETE"] {
        let r = gw.req(verb, "/system/namespaces", "").await;
        assert_eq!(r.status, 405, "{verb} /system/namespaces");
    }

    // Delete: 202; missing 404; the default 403; an empty body (curl) is accepted.
    check(
        &gw,
        &[
            (
                "DELETE",
                "/system/namespace/team-b",
                json!({"name": "team-a", "labels": {"openfaas": "1"}}),
                400,
                "namespace in request body does not match namespace in URL",
                "delete mismatch",
            ),
            (
                "DELETE",
                "/system/namespace/team-b",
                json!({"name": "team-b", "labels": {"openfaas": "1"}}),
                202,
                "",
                "delete",
            ),
        ],
    )
    .await;
    let r = gw.req("DELETE", "/system/namespaces/team-a", "").await;
    expect(&r, 202, "", "delete with no body, plural path");
    expect(
        &gw.req("DELETE", "/system/namespace/team-a", "").await,
        404,
        "namespace team-a not found",
        "delete again",
    );
    expect(
        &gw.req("DELETE", "/system/namespace/openfaas-fn", "").await,
        403,
        "namespace openfaas-fn may not be deleted: it is the default namespace",
        "delete the default",
    );
    expect(
        &gw.req("DELETE", "/system/namespace/", "").await,
        400,
        "namespace not specified in URL",
        "delete without a name",
    );
    assert_eq!(names(&gw).await, json!(["openfaas-fn"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_namespace_is_not_valid_and_changes_nothing() {
    let gw = Gateway::start();
    assert_eq!(gw.deploy(func("keep", "openfaas-fn")).await.status, 202);
    let before = names(&gw).await;
    let nv = |r: &Resp, what: &str| expect(r, 400, "namespace not valid", what);

    nv(&gw.deploy(func("f", "ghost")).await, "deploy");
    nv(
        &gw.post_json(
            "/system/functions?namespace=ghost",
            json!({"service": "f", "envProcess": "cat"}),
        )
        .await,
        "deploy, namespace in the query",
    );
    nv(
        &send(&gw, "PUT", "/system/functions", func("keep", "ghost")).await,
        "update",
    );
    nv(
        &send(
            &gw,
            "DELETE",
            "/system/functions",
            json!({"functionName": "keep", "namespace": "ghost"}),
        )
        .await,
        "delete",
    );
    nv(
        &gw.get("/system/function/keep?namespace=ghost").await,
        "status (query)",
    );
    nv(
        &gw.get("/system/function/keep.ghost").await,
        "status (suffix)",
    );
    nv(
        &gw.post_json(
            "/system/scale-function/keep",
            json!({"serviceName": "keep", "namespace": "ghost", "replicas": 2}),
        )
        .await,
        "scale",
    );
    nv(&gw.get("/system/functions?namespace=ghost").await, "list");
    nv(
        &gw.get("/system/logs?name=keep&namespace=ghost&follow=false")
            .await,
        "logs",
    );
    // Invocations of a function that does not exist stay a plain 404.
    let r = gw.req("POST", "/function/keep.ghost", "x").await;
    assert_eq!(r.status, 404, "{}", r.text());

    assert_eq!(names(&gw).await, before);
    assert!(
        !gw.data_dir.join("functions/ghost").exists(),
        "a record was written for the unknown namespace"
    );
    let list = gw.get("/system/functions").await.json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(gw.status("keep").await["replicas"], 1);

    // Once created, the same deploy is accepted.
    assert_eq!(create(&gw, "ghost").await.status, 201);
    let r = gw.deploy(func("f", "ghost")).await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(gw.status("f.ghost").await["namespace"], "ghost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_with_functions_is_refused_until_it_is_empty() {
    let gw = Gateway::start();
    assert_eq!(create(&gw, "team").await.status, 201);
    for f in ["alpha", "beta"] {
        let r = gw.deploy(func(f, "team")).await;
        assert_eq!(r.status, 202, "{}", r.text());
    }
    gw.wait_available("alpha.team", 1).await;
    gw.wait_available("beta.team", 1).await;
    let r = gw.req("POST", "/function/alpha.team", "hi").await;
    assert_eq!((r.status, r.text().as_str()), (200, "hi"));
    let pids = descendants(gw.pid());
    assert!(pids.len() >= 2, "{pids:?}");

    expect(
        &gw.req("DELETE", "/system/namespace/team", "").await,
        409,
        "namespace team is not empty: it still holds functions alpha, beta",
        "delete with functions",
    );
    // Refused means untouched: the functions still answer.
    let r = gw.req("POST", "/function/beta.team", "still").await;
    assert_eq!((r.status, r.text().as_str()), (200, "still"));
    assert_eq!(names(&gw).await, json!(["openfaas-fn", "team"]));

    for f in ["alpha", "beta"] {
        let r = send(
            &gw,
            "DELETE",
            "/system/functions",
            json!({"functionName": f, "namespace": "team"}),
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.text());
    }
    expect(
        &gw.req("DELETE", "/system/namespace/team", "").await,
        202,
        "",
        "delete once empty",
    );
    assert_eq!(names(&gw).await, json!(["openfaas-fn"]));
    eventually(Duration::from_secs(30), "the replicas are gone", || {
        pids.iter().all(|p| !support::alive(*p))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_survive_a_restart_and_an_upgrade_keeps_occupied_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let mut gw = Gateway::start_in(tmp.path(), &["--no-auth"], &[]);
    let r = send(
        &gw,
        "POST",
        "/system/namespace/",
        json!({"name": "kept", "labels": {"openfaas": "1", "a": "1"}, "annotations": {"b": "2"}}),
    )
    .await;
    assert_eq!(r.status, 201);
    assert_eq!(create(&gw, "busy").await.status, 201);
    assert_eq!(gw.deploy(func("f", "busy")).await.status, 202);
    let file = tmp.path().join("namespaces.json");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the namespace file is the gateway user's only");
    }
    assert_eq!(gw.stop(), Some(0));

    let mut gw = Gateway::start_in(tmp.path(), &["--no-auth"], &[]);
    assert_eq!(names(&gw).await, json!(["openfaas-fn", "busy", "kept"]));
    assert_eq!(
        gw.get("/system/namespace/kept").await.json(),
        json!({"name": "kept", "labels": {"openfaas": "1", "a": "1"}, "annotations": {"b": "2"}})
    );
    assert_eq!(gw.stop(), Some(0));

    // A data dir from before namespaces were kept: functions, no namespace file. Their
    // namespace is adopted (stored) at start, so it stays once its function is deleted.
    std::fs::remove_file(&file).unwrap();
    let gw = Gateway::start_in(tmp.path(), &["--no-auth"], &[]);
    assert_eq!(names(&gw).await, json!(["openfaas-fn", "busy"]));
    assert!(file.is_file(), "the adopted namespace was stored");
    let r = send(
        &gw,
        "DELETE",
        "/system/functions",
        json!({"functionName": "f", "namespace": "busy"}),
    )
    .await;
    assert_eq!(r.status, 202);
    assert_eq!(names(&gw).await, json!(["openfaas-fn", "busy"]));
    assert_eq!(
        gw.get("/system/namespace/busy").await.json(),
        json!({"name": "busy", "labels": {"openfaas": "1"}, "annotations": {}})
    );
}

/// Exactly what go-sdk's namespace client (`client.go`, used by faas-cli's `namespace`
/// commands) sends: `json.Marshal` of `types.FunctionNamespace` (keys in Go's order, maps
/// sorted, empty maps left out), no `Content-Type`, basic auth. Create and update add
/// `labels.openfaas` and `annotations.openfaas`; delete sends `{"name","labels":{"openfaas":"1"}}`.
/// It accepts 200/201/202; 404 becomes "namespace <n> not found".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_go_sdk_sends_for_namespaces_is_answered_as_it_expects() {
    let gw = Gateway::start_with(&[], &[("FAASGATE_BASIC_AUTH_PASSWORD", "ns-pass")]);
    let auth = support::basic_auth("admin", "ns-pass");
    let h: &[(&str, &str)] = &[
        ("authorization", &auth),
        ("user-agent", "Go-http-client/1.1"),
    ];
    let sdk = |method: &'static str, path: &'static str, body: &'static str| {
        let gw = &gw;
        async move { gw.req_h(method, path, h, body).await }
    };

    let r = sdk("GET", "/system/namespaces", "").await;
    assert_eq!((r.status, r.json()), (200, json!(["openfaas-fn"])));
    let r = sdk(
        "POST",
        "/system/namespace/",
        r#"{"name":"dev","labels":{"openfaas":"1","team":"web"},"annotations":{"openfaas":"1"}}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = sdk("GET", "/system/namespace/dev", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"name": "dev", "labels": {"openfaas": "1", "team": "web"}, "annotations": {"openfaas": "1"}})
    );
    let r = sdk(
        "PUT",
        "/system/namespace/dev",
        r#"{"name":"dev","labels":{"openfaas":"1"},"annotations":{"openfaas":"1","owner":"me"}}"#,
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(
        sdk("GET", "/system/namespace/dev", "").await.json()["annotations"],
        json!({"openfaas": "1", "owner": "me"})
    );
    let r = sdk("GET", "/system/namespaces", "").await;
    assert_eq!(r.json(), json!(["openfaas-fn", "dev"]));
    let r = sdk(
        "DELETE",
        "/system/namespace/dev",
        r#"{"name":"dev","labels":{"openfaas":"1"}}"#,
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let r = sdk("GET", "/system/namespace/dev", "").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (404, "namespace dev not found")
    );
    let r = sdk(
        "DELETE",
        "/system/namespace/dev",
        r#"{"name":"dev","labels":{"openfaas":"1"}}"#,
    )
    .await;
    assert_eq!(r.status, 404);

    // Without credentials: 401, as every /system route.
    assert_eq!(gw.get("/system/namespace/openfaas-fn").await.status, 401);
    assert_eq!(create(&gw, "x").await.status, 401);
}

/// A namespace named in the operator's stack file (`serve --stack`) is one the gateway
/// manages: created (and stored) at start, so its functions deploy and it stays listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_files_namespace_is_created_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let stack = tmp.path().join("stack.yml");
    std::fs::write(
        &stack,
        "provider:\n  name: openfaas\nfunctions:\n  cat:\n    image: local/cat\n    \
         fprocess: cat\n    namespace: stacked\n",
    )
    .unwrap();
    let data = tmp.path().join("data");
    let gw = Gateway::start_in(
        &data,
        &["--no-auth", "--stack", stack.to_str().unwrap()],
        &[],
    );
    gw.wait_available("cat.stacked", 1).await;
    assert_eq!(names(&gw).await, json!(["openfaas-fn", "stacked"]));
    let stored = std::fs::read_to_string(data.join("namespaces.json")).unwrap();
    assert!(stored.contains("\"stacked\""), "{stored}");
}
