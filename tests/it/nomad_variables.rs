//! Nomad variable locks through [`NomadClient`] against the API double, and the double's
//! variable rules (`../shared/reference/nomad-variables.md` sections 2-9 and 13).
//!
//! Lease timing runs on the double's lock clock, paused and moved forward by the tests
//! (`pause_lock_clock`, `advance_lock_clock`): every expiry is checked one millisecond before
//! and at its deadline, deterministically, with no test waiting for real time to pass.

use crate::nomad_double::{raw, NomadDouble};

use std::time::Duration;

use faasgate::client::nomad::{LockOutcome, ReleaseOutcome, RenewOutcome, VarPath};
use faasgate::client::wire::nomad as nw;
use faasgate::client::wire::variables::VariableLock;
use faasgate::client::{NomadClient, NomadSettings, Secret};
use serde_json::{json, Value};

const LOCK: &str = "faasgate/leader";
const TTL: Duration = Duration::from_secs(10);
const DELAY: Duration = Duration::from_secs(15);
const MS: Duration = Duration::from_millis(1);

fn client(double: &NomadDouble, namespace: Option<&str>, token: Option<&str>) -> NomadClient {
    let mut s = NomadSettings::for_addr(&double.url()).unwrap();
    s.namespace = namespace.map(str::to_string);
    if let Some(t) = token {
        s.token = Secret::new(t);
    }
    NomadClient::new(&s)
}

fn lock_path() -> VarPath {
    VarPath::new(LOCK).unwrap()
}

async fn acquire(c: &NomadClient, ttl: Duration, delay: Duration) -> VariableLock {
    match c.var_lock_acquire(&lock_path(), ttl, delay).await.unwrap() {
        LockOutcome::Acquired { lock, .. } => lock,
        LockOutcome::Held => panic!("expected to acquire {LOCK}, it is held"),
    }
}

async fn is_held(c: &NomadClient) -> bool {
    match c.var_lock_acquire(&lock_path(), TTL, DELAY).await.unwrap() {
        LockOutcome::Held => true,
        LockOutcome::Acquired { lock, .. } => {
            // Give it back so the caller's view of the lock does not change.
            let r = c.var_lock_release(&lock_path(), &lock.id).await.unwrap();
            assert_eq!(r, ReleaseOutcome::Released);
            false
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_then_a_second_acquirer_is_held() {
    let double = NomadDouble::start().await;
    let (a, b) = (client(&double, None, None), client(&double, None, None));
    assert_eq!(a.var_read(&lock_path()).await.unwrap(), None);

    let out = a.var_lock_acquire(&lock_path(), TTL, DELAY).await.unwrap();
    let LockOutcome::Acquired { lock, variable } = out else {
        panic!("a free lock is acquired")
    };
    assert!(!lock.id.is_empty());
    assert_eq!((lock.ttl, lock.lock_delay), (TTL, DELAY));
    assert_eq!(
        (
            variable.meta.namespace.as_str(),
            variable.meta.path.as_str()
        ),
        ("default", LOCK)
    );
    assert!(variable.items.is_empty());
    assert_eq!(variable.lock_id(), lock.id);

    // Anyone else (a new acquire carries no ID, so the same client too) is told it is held.
    assert_eq!(
        b.var_lock_acquire(&lock_path(), TTL, DELAY).await.unwrap(),
        LockOutcome::Held
    );
    assert_eq!(
        a.var_lock_acquire(&lock_path(), TTL, DELAY).await.unwrap(),
        LockOutcome::Held
    );
    let read = b.var_read(&lock_path()).await.unwrap().unwrap();
    assert_eq!(read.lock_id(), lock.id, "ACLs off: the lock shows in reads");
    assert_eq!(read.meta.modify_index, variable.meta.modify_index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewing_keeps_the_lock_well_past_its_ttl() {
    let double = NomadDouble::start().await;
    double.pause_lock_clock();
    let (a, b) = (client(&double, None, None), client(&double, None, None));
    let lock = acquire(&a, TTL, DELAY).await;
    // 2 x TTL + LockDelay is 35 s; renewing every 15 s keeps it for 90 s.
    for _ in 0..6 {
        double.advance_lock_clock(Duration::from_secs(15));
        match a.var_lock_renew(&lock_path(), &lock.id).await.unwrap() {
            RenewOutcome::Renewed(l) => assert_eq!(l, lock),
            lost => panic!("renew within the lease: {lost:?}"),
        }
        assert!(is_held(&b).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renew_after_the_lease_ran_out_is_lost() {
    let double = NomadDouble::start().await;
    double.pause_lock_clock();
    let (a, b) = (client(&double, None, None), client(&double, None, None));
    let lock = acquire(&a, TTL, DELAY).await;
    // The server's lease is 2 x TTL from the last acquire or renew.
    double.advance_lock_clock(2 * TTL - MS);
    assert!(matches!(
        a.var_lock_renew(&lock_path(), &lock.id).await.unwrap(),
        RenewOutcome::Renewed(_)
    ));
    double.advance_lock_clock(2 * TTL);
    assert_eq!(
        a.var_lock_renew(&lock_path(), &lock.id).await.unwrap(),
        RenewOutcome::Lost {
            status: 409,
            reason: "attempting to modify locked variable".into()
        }
    );
    // The lock is still stored (LockDelay has not passed): nobody else gets it yet.
    assert!(is_held(&b).await);
    assert_eq!(
        a.var_read(&lock_path()).await.unwrap().unwrap().lock_id(),
        lock.id
    );
    double.advance_lock_clock(DELAY);
    let next = acquire(&b, TTL, DELAY).await;
    assert_ne!(next.id, lock.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_lets_another_acquire_at_once() {
    let double = NomadDouble::start().await;
    double.pause_lock_clock();
    let (a, b) = (client(&double, None, None), client(&double, None, None));
    let first = acquire(&a, TTL, DELAY).await;
    assert_eq!(
        a.var_lock_release(&lock_path(), &first.id).await.unwrap(),
        ReleaseOutcome::Released
    );
    // No time passes on the lock clock: release frees it at once.
    let second = acquire(&b, TTL, DELAY).await;
    assert_ne!(second.id, first.id);
    // The old holder's ID is worth nothing now.
    assert_eq!(
        a.var_lock_renew(&lock_path(), &first.id).await.unwrap(),
        RenewOutcome::Lost {
            status: 409,
            reason: "attempting to modify locked variable".into()
        }
    );
    assert!(matches!(
        a.var_lock_release(&lock_path(), &first.id).await.unwrap(),
        ReleaseOutcome::NotHeld { status: 409, .. }
    ));
    assert_eq!(
        b.var_lock_release(&lock_path(), &second.id).await.unwrap(),
        ReleaseOutcome::Released
    );
    // Releasing twice, or a lock that never existed: Nomad's 500s, read as "not held".
    assert_eq!(
        b.var_lock_release(&lock_path(), &second.id).await.unwrap(),
        ReleaseOutcome::NotHeld {
            status: 500,
            reason: "variable doesn't hold a lock".into()
        }
    );
    assert_eq!(
        b.var_lock_renew(&lock_path(), &second.id).await.unwrap(),
        RenewOutcome::Lost {
            status: 409,
            reason: "variable doesn't hold a lock".into()
        }
    );
    let missing = VarPath::new("faasgate/none").unwrap();
    assert_eq!(
        b.var_lock_release(&missing, "x").await.unwrap(),
        ReleaseOutcome::NotHeld {
            status: 500,
            reason: "variable doesn't exist".into()
        }
    );
    assert_eq!(
        b.var_lock_renew(&missing, "x").await.unwrap(),
        RenewOutcome::Lost {
            status: 404,
            reason: "variable doesn't exist".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holder_frees_the_lock_after_two_ttls_and_the_lock_delay() {
    let double = NomadDouble::start().await;
    double.pause_lock_clock();
    let (a, b) = (client(&double, None, None), client(&double, None, None));
    let dead = acquire(&a, TTL, DELAY).await;
    let before = a.var_read(&lock_path()).await.unwrap().unwrap();
    // `a` stops renewing. 2 x 10 s + 15 s = 35 s.
    double.advance_lock_clock(2 * TTL + DELAY - MS);
    assert!(is_held(&b).await, "held until 2 x TTL + LockDelay");
    double.advance_lock_clock(MS);
    let next = acquire(&b, TTL, DELAY).await;
    assert_ne!(next.id, dead.id);
    let after = b.var_read(&lock_path()).await.unwrap().unwrap();
    assert!(after.meta.modify_index > before.meta.modify_index);

    // With the server's defaults (zero asks for them): 15 s and 15 s, so 45 s.
    let r = b.var_lock_release(&lock_path(), &next.id).await.unwrap();
    assert_eq!(r, ReleaseOutcome::Released);
    let defaults = acquire(&a, Duration::ZERO, Duration::ZERO).await;
    assert_eq!(
        (defaults.ttl, defaults.lock_delay),
        (Duration::from_secs(15), Duration::from_secs(15))
    );
    double.advance_lock_clock(Duration::from_secs(45) - MS);
    assert!(is_held(&b).await);
    double.advance_lock_clock(MS);
    assert!(!is_held(&b).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_reads_the_namespace_from_the_query_only() {
    let double = NomadDouble::start().await;
    double.pause_lock_clock();
    let prod = client(&double, Some("prod"), None);
    let lock = acquire(&prod, TTL, DELAY).await;
    assert!(double.variable("prod", LOCK).is_some());
    assert!(double.variable("default", LOCK).is_none());
    assert!(matches!(
        prod.var_lock_renew(&lock_path(), &lock.id).await.unwrap(),
        RenewOutcome::Renewed(_)
    ));
    // The client names the namespace twice.
    let sent = double.requests();
    let renew = sent
        .iter()
        .rfind(|r| r.query.contains("lock-renew"))
        .unwrap();
    assert!(renew.query.contains("namespace=prod"), "{}", renew.query);
    assert_eq!(renew.body["Namespace"], "prod");
    assert_eq!(renew.body["Lock"]["ID"], json!(lock.id));

    // Real Nomad: a renew body's Namespace is ignored; without ?namespace= it looks in
    // `default` and answers 404.
    let body = json!({"Namespace": "prod", "Path": LOCK, "Lock": {"ID": lock.id}});
    let r = raw(
        &double,
        "PUT",
        &format!("/v1/var/{LOCK}?lock-renew"),
        Some(body.clone()),
    )
    .await;
    assert_eq!((r.status, r.text.as_str()), (404, "variable doesn't exist"));
    let r = raw(
        &double,
        "PUT",
        &format!("/v1/var/{LOCK}?lock-renew&namespace=prod"),
        Some(body),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // A client configured for another namespace loses it the same way.
    let default = client(&double, None, None);
    assert_eq!(
        default
            .var_lock_renew(&lock_path(), &lock.id)
            .await
            .unwrap(),
        RenewOutcome::Lost {
            status: 404,
            reason: "variable doesn't exist".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_ttls_are_range_checked_as_nomad_does() {
    let double = NomadDouble::start().await;
    let c = client(&double, None, None);
    for ttl in [Duration::from_secs(9), Duration::from_secs(25 * 3600)] {
        let e = c
            .var_lock_acquire(&lock_path(), ttl, DELAY)
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(400), "{ttl:?}: {e}");
        assert!(
            e.to_string()
                .ends_with("TTL must be between 10 seconds and 24 hours"),
            "{e}"
        );
    }
    let day = acquire(&c, Duration::from_secs(24 * 3600), DELAY).await;
    assert_eq!(day.ttl, Duration::from_secs(86_400));
    // A test may let short leases through, for gateways that renew in real time.
    double.set_min_lock_ttl(Duration::from_millis(500));
    let short = VarPath::new("faasgate/short").unwrap();
    match c
        .var_lock_acquire(&short, Duration::from_secs(1), Duration::from_secs(1))
        .await
        .unwrap()
    {
        LockOutcome::Acquired { lock, .. } => assert_eq!(lock.ttl, Duration::from_secs(1)),
        LockOutcome::Held => panic!("a free lock is acquired"),
    }
}

#[test]
fn variable_paths_are_checked_before_anything_is_sent() {
    for bad in ["", "db.password", "fn@prod", "a b"] {
        let e = VarPath::new(bad).unwrap_err();
        assert!(
            e.to_string().starts_with("invalid Nomad variable path"),
            "{e}"
        );
    }
    assert!(VarPath::new("x".repeat(129)).is_err());
    assert!(VarPath::new("x".repeat(128)).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_double_keeps_nomads_variable_rules() {
    let double = NomadDouble::start().await;
    double.pause_lock_clock();
    let d = &double;
    let put = |path: &str, body: Value| {
        let path = path.to_string();
        async move { raw(d, "PUT", &path, Some(body)).await }
    };
    let data = json!({"Namespace": "default", "Path": "app/config", "Items": {"k": "v"}});

    // Query-key rules, checked before the body is read.
    let r = put("/v1/var/app/config?lock-acquire&lock-renew", data.clone()).await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (400, "multiple lock operations")
    );
    let r = put("/v1/var/app/config?cas=0&lock-acquire=1", data.clone()).await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (400, "CAS can't be used with lock operations")
    );
    // Plain writes need Items and no lock definition.
    let r = put("/v1/var/app/config", json!({"Items": {}})).await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (400, "variable missing required Items object")
    );
    let r = put(
        "/v1/var/app/config",
        json!({"Items": {"k": "v"}, "Lock": {"TTL": "15s"}}),
    )
    .await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (400, "variable should not contain lock definition")
    );
    let r = put("/v1/var/app.config", data.clone()).await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (400, "invalid path \"app.config\"")
    );
    let r = raw(d, "PUT", "/v1/var/", Some(data.clone())).await;
    assert_eq!((r.status, r.text.as_str()), (400, "missing variable path"));
    let r = raw(d, "PATCH", "/v1/var/app/config", None).await;
    assert_eq!(r.status, 400);

    // Check-and-set, per the reference's table.
    let r = put("/v1/var/app/config?cas=3", data.clone()).await;
    assert_eq!(r.status, 409);
    assert_eq!(
        r.body["ModifyIndex"], 0,
        "absent + cas>0: the zero variable"
    );
    assert!(r.body.get("Items").is_none());
    let created = put("/v1/var/app/config?cas=0", data.clone()).await;
    assert_eq!(created.status, 200, "{}", created.text);
    let idx = created.body["ModifyIndex"].as_u64().unwrap();
    assert_eq!(created.index_u64(), Some(idx));
    assert_eq!(created.body["Items"], json!({"k": "v"}));
    let r = put("/v1/var/app/config?cas=0", data.clone()).await;
    assert_eq!((r.status, r.body["ModifyIndex"].as_u64()), (409, Some(idx)));
    assert_eq!(r.body["Items"], json!({"k": "v"}), "the current variable");
    let r = put(
        &format!("/v1/var/app/config?cas={}", idx + 100),
        data.clone(),
    )
    .await;
    assert_eq!(r.status, 409);
    let r = put(&format!("/v1/var/app/config?cas={idx}"), data.clone()).await;
    assert_eq!(r.status, 200);
    let r = put("/v1/var/app/config?cas=x", data.clone()).await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (
            400,
            "can not parse cas: strconv.ParseUint: parsing \"x\": invalid syntax"
        )
    );
    // A read answers the variable with X-Nomad-Index = its ModifyIndex.
    let r = raw(d, "GET", "/v1/var/app/config", None).await;
    assert_eq!(r.index_u64(), r.body["ModifyIndex"].as_u64());
    let r = raw(d, "GET", "/v1/var/app/nothing", None).await;
    assert_eq!((r.status, r.text.as_str()), (404, "variable not found"));

    // Lock ops: renew on an unlocked variable; acquire overwrites Items.
    let r = put(
        "/v1/var/app/config?lock-renew",
        json!({"Lock": {"ID": "x"}}),
    )
    .await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (409, "variable doesn't hold a lock")
    );
    let r = put(
        "/v1/var/app/config?lock-acquire",
        json!({"Lock": {"TTL": 20_000_000_000u64, "LockDelay": "1m"}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body.get("Items").is_none(), "acquire replaced the items");
    assert_eq!(
        r.body["Lock"]["TTL"], "20s",
        "nanoseconds in, a Go duration out"
    );
    assert_eq!(r.body["Lock"]["LockDelay"], "1m0s");
    let id = r.body["Lock"]["ID"].as_str().unwrap().to_string();
    // Writes to a locked variable need its lock ID.
    let r = put("/v1/var/app/config", data.clone()).await;
    assert_eq!(r.status, 409);
    assert_eq!(
        r.body,
        json!({"Namespace": "default", "Path": "app/config", "CreateIndex": 0,
               "CreateTime": 0, "ModifyIndex": 0, "ModifyTime": 0})
    );
    let r = put(
        "/v1/var/app/config",
        json!({"Items": {"k": "w"}, "Lock": {"ID": id}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["Lock"]["ID"],
        json!(id),
        "the holder's write keeps the lock"
    );
    let r = raw(d, "DELETE", "/v1/var/app/config", None).await;
    assert_eq!(r.status, 409, "a locked variable is not deleted");
    // Release: needs the lock ID, takes no Items, keeps the stored Items.
    let r = put("/v1/var/app/config?lock-release", json!({})).await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (400, "missing lock information")
    );
    let r = put(
        "/v1/var/app/config?lock-release",
        json!({"Items": {"a": "b"}, "Lock": {"ID": id}}),
    )
    .await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (400, "lock release operation doesn't take variable items")
    );
    let r = put(
        "/v1/var/app/config?lock-release",
        json!({"Lock": {"ID": id}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body.get("Lock").is_none() && r.body.get("Items").is_none());
    let r = raw(d, "GET", "/v1/var/app/config", None).await;
    assert_eq!(r.body["Items"], json!({"k": "w"}));
    // Durations: Go's parser rules.
    let r = put(
        "/v1/var/app/other?lock-acquire",
        json!({"Lock": {"TTL": "15"}}),
    )
    .await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (400, "time: missing unit in duration \"15\"")
    );
    let r = put(
        "/v1/var/app/other?lock-acquire",
        json!({"Lock": {"TTL": "-15s"}}),
    )
    .await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (400, "Lock delay and TTL must be positive")
    );

    // Delete: 204 with no body; a missing path too.
    let r = raw(d, "DELETE", "/v1/var/app/config", None).await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    assert!(r.index_u64().is_some());
    let r = raw(d, "DELETE", "/v1/var/app/config", None).await;
    assert_eq!(r.status, 204);
    let r = raw(d, "GET", "/v1/var/app/config", None).await;
    assert_eq!(r.status, 404);

    // List: metadata only, `[]` when nothing matches, namespaces apart.
    put("/v1/var/app/a", json!({"Items": {"x": "1"}})).await;
    put("/v1/var/app/b?namespace=prod", json!({"Items": {"x": "1"}})).await;
    let r = raw(d, "GET", "/v1/vars?prefix=nothing", None).await;
    assert_eq!((r.status, r.text.as_str()), (200, "[]"));
    let r = raw(d, "GET", "/v1/vars?prefix=app/", None).await;
    let paths: Vec<&str> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["Path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["app/a"]);
    assert!(r.body[0].get("Items").is_none());
    let r = raw(d, "GET", "/v1/vars?namespace=*", None).await;
    assert_eq!(r.body.as_array().unwrap().len(), 2, "{}", r.text);
    let r = raw(d, "POST", "/v1/vars", None).await;
    assert_eq!(r.status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_read_wakes_when_the_variable_changes() {
    let double = NomadDouble::start().await;
    let c = client(&double, None, None);
    let r = raw(
        &double,
        "PUT",
        "/v1/var/app/watched",
        Some(json!({"Items": {"v": "1"}})),
    )
    .await;
    let idx = r.index_u64().unwrap();
    let held = {
        let d = double.clone();
        tokio::spawn(async move {
            raw(
                &d,
                "GET",
                &format!("/v1/var/app/watched?index={idx}&wait=60s"),
                None,
            )
            .await
        })
    };
    // Nothing changed: the read is held (a read that answers at once fails here).
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_millis(500) {
        assert!(
            !held.is_finished(),
            "a blocking read answered with nothing changed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let put = raw(
        &double,
        "PUT",
        "/v1/var/app/watched",
        Some(json!({"Items": {"v": "2"}})),
    )
    .await;
    let woke = held.await.unwrap();
    assert_eq!(woke.body["Items"]["v"], "2");
    assert_eq!(woke.index_u64(), put.index_u64());
    let read = c
        .var_read(&VarPath::new("app/watched").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.items["v"], "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_calls_name_the_gateway_that_made_them() {
    let double = NomadDouble::start().await;
    let job = json!({"ID": "fn", "Name": "fn", "Datacenters": ["dc1"], "TaskGroups": [{
        "Name": "fn", "Count": 1,
        "Tasks": [{"Name": "fn", "Driver": "docker", "Config": {"image": "x"}}]}]});
    let (a, b) = (
        client(&double, None, Some("gateway-a")),
        client(&double, None, Some("gateway-b")),
    );
    a.register(&nw::JobRegisterRequest {
        job,
        ..Default::default()
    })
    .await
    .unwrap();
    let scale = |count| nw::ScalingRequest {
        count: Some(count),
        target: nw::ScalingTarget {
            group: "fn".into(),
            ..Default::default()
        },
        message: "test".into(),
        ..Default::default()
    };
    a.scale("fn", &scale(2)).await.unwrap();
    b.scale("fn", &scale(3)).await.unwrap();
    double.refuse_next_scale("scaling blocked due to active deployment");
    assert!(a.scale("fn", &scale(4)).await.is_err());
    a.scale("fn", &scale(1)).await.unwrap();

    let calls = double.scale_calls();
    let seen: Vec<(Option<&str>, Option<i64>)> = calls
        .iter()
        .map(|c| (c.token.as_deref(), c.count))
        .collect();
    assert_eq!(
        seen,
        [
            (Some("gateway-a"), Some(2)),
            (Some("gateway-b"), Some(3)),
            (Some("gateway-a"), Some(1)),
        ],
        "only applied calls, in order, with their caller"
    );
    assert!(calls
        .windows(2)
        .all(|w| w[0].index < w[1].index && w[0].at <= w[1].at));
    assert!(calls
        .iter()
        .all(|c| c.job == "fn" && c.group == "fn" && c.user_agent.as_deref() == Some("faasgate")));
}

/// `var_put`, `var_list` and `var_delete` against the double: shapes, `X-Nomad-Index`, and
/// every check-and-set outcome of the reference's tables (sections 6 and 7), typed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_list_and_delete_with_check_and_set() {
    use faasgate::client::nomad::{DeleteOutcome, PutOutcome};
    use faasgate::client::QueryOptions;

    let double = NomadDouble::start().await;
    let c = client(&double, Some("prod"), None);
    let path = VarPath::new("app/first").unwrap();
    let items = |v: &str| -> faasgate::client::wire::variables::Items {
        [("user".to_string(), v.to_string())].into()
    };

    // Absent + cas>0: the zero variable; absent + cas=0: created.
    match c.var_put(&path, &items("a"), Some(7)).await.unwrap() {
        PutOutcome::Conflict(v) => {
            assert_eq!((v.meta.modify_index, v.items.len()), (0, 0));
            assert_eq!(
                (v.meta.namespace.as_str(), v.meta.path.as_str()),
                ("prod", "app/first")
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let created = match c.var_put(&path, &items("a"), Some(0)).await.unwrap() {
        PutOutcome::Written(v) => v,
        other => panic!("expected a write, got {other:?}"),
    };
    assert_eq!(created.items, items("a"));
    assert_eq!(created.meta.namespace, "prod");
    assert!(created.meta.modify_index > 0);
    assert_eq!(created.meta.create_index, created.meta.modify_index);
    let stored = double
        .variable("prod", "app/first")
        .expect("stored in prod");
    assert_eq!(stored["Items"], json!({"user": "a"}));
    // Present + cas=0, and a stale index: the current variable, items included.
    for stale in [0, created.meta.modify_index + 5] {
        match c.var_put(&path, &items("b"), Some(stale)).await.unwrap() {
            PutOutcome::Conflict(v) => {
                assert_eq!(v.meta.modify_index, created.meta.modify_index);
                assert_eq!(v.items, items("a"));
            }
            other => panic!("cas={stale}: expected a conflict, got {other:?}"),
        }
    }
    // The right index, then no cas at all.
    let second = match c
        .var_put(&path, &items("b"), Some(created.meta.modify_index))
        .await
        .unwrap()
    {
        PutOutcome::Written(v) => v,
        other => panic!("expected a write, got {other:?}"),
    };
    assert!(second.meta.modify_index > created.meta.modify_index);
    assert_eq!(second.meta.create_index, created.meta.create_index);
    assert!(matches!(
        c.var_put(&path, &items("c"), None).await.unwrap(),
        PutOutcome::Written(_)
    ));
    // Nomad refuses an empty item map: an error, not a conflict.
    let e = c
        .var_put(&path, &Default::default(), None)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(
        e.to_string()
            .contains("variable missing required Items object"),
        "{e}"
    );

    // List: metadata only, by prefix, in the client's namespace; `[]` when nothing matches.
    c.var_put(&VarPath::new("app/second").unwrap(), &items("x"), None)
        .await
        .unwrap();
    c.var_put(&VarPath::new("other/one").unwrap(), &items("x"), None)
        .await
        .unwrap();
    client(&double, Some("dev"), None)
        .var_put(&VarPath::new("app/elsewhere").unwrap(), &items("x"), None)
        .await
        .unwrap();
    let list = c.var_list("app/", QueryOptions::default()).await.unwrap();
    let paths: Vec<&str> = list.value.iter().map(|m| m.path.as_str()).collect();
    assert_eq!(paths, ["app/first", "app/second"]);
    assert!(list.value.iter().all(|m| m.namespace == "prod"));
    assert!(list.index >= list.value.iter().map(|m| m.modify_index).max().unwrap());
    assert!(c
        .var_list("nothing/", QueryOptions::default())
        .await
        .unwrap()
        .value
        .is_empty());
    let r = raw(&double, "GET", "/v1/vars?prefix=app/&namespace=prod", None).await;
    assert!(r.body[0].get("Items").is_none(), "a list carries no items");

    // Delete: a stale index is a conflict with the current variable; the right one deletes;
    // deleting a missing path succeeds, with cas it is a conflict with the zero variable.
    let current = c.var_read(&path).await.unwrap().expect("present");
    match c
        .var_delete(&path, Some(current.meta.modify_index + 1))
        .await
        .unwrap()
    {
        DeleteOutcome::Conflict(v) => assert_eq!(v.meta.modify_index, current.meta.modify_index),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(
        c.var_read(&path).await.unwrap().is_some(),
        "a conflict deletes nothing"
    );
    assert_eq!(
        c.var_delete(&path, Some(current.meta.modify_index))
            .await
            .unwrap(),
        DeleteOutcome::Deleted
    );
    assert!(c.var_read(&path).await.unwrap().is_none());
    assert_eq!(
        c.var_delete(&path, None).await.unwrap(),
        DeleteOutcome::Deleted
    );
    match c.var_delete(&path, Some(3)).await.unwrap() {
        DeleteOutcome::Conflict(v) => assert_eq!(v.meta.modify_index, 0),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let r = raw(&double, "DELETE", "/v1/var/app/second?namespace=prod", None).await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    assert!(r.index_u64().is_some(), "a delete carries X-Nomad-Index");

    // A variable locked by someone else: a write without its lock ID is a conflict.
    let lock = VarPath::new("app/locked").unwrap();
    let held = client(&double, Some("prod"), None);
    assert!(matches!(
        held.var_lock_acquire(&lock, TTL, DELAY).await.unwrap(),
        LockOutcome::Acquired { .. }
    ));
    match c.var_put(&lock, &items("x"), None).await.unwrap() {
        PutOutcome::Conflict(v) => assert_eq!(v.meta.modify_index, 0),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(matches!(
        c.var_delete(&lock, None).await.unwrap(),
        DeleteOutcome::Conflict(_)
    ));
}
