//! The web UI end to end, in a real headless Chromium driven over WebDriver (chromedriver on
//! an ephemeral loopback port, fantoccini as the client) against the real binary with basic
//! auth on: wrong password -> login again; log in; deploy through the form (the API's
//! validation messages appear next to their fields); see the function in the list; invoke
//! it from the invoke panel; see its invocation count rise in the list; scale it to 3 and
//! see 3 ready and the decision; read its logs; cancel, then confirm, a delete; create,
//! update and delete a secret on the secrets page (its value never shown); log out.
//! Namespaces: create one, select it, deploy into it, see its delete refused while it holds
//! the function, then delete both. Then 1,000 functions in one namespace: all listed,
//! filterable.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`bash scripts/test-setup.sh` installs
//! them; `.ci/run` does too). Screenshots go to a temporary directory whose path is
//! printed; with `FAASGATE_UI_SCREENSHOTS=<dir>` they go there instead (that is how the
//! pictures in docs/ui.md are made).

use crate::support;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use support::Gateway;

const PASSWORD: &str = "ui-test-password";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const WAIT: Duration = Duration::from_secs(30);
const BULK: usize = 1000;

/// A chromedriver child process, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Self {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: install Debian's chromium and chromium-driver \
                 (bash scripts/test-setup.sh, as root)"
            );
        }
        // chromedriver cannot be told to pick a port and report it: take a free one. Another
        // process grabbing it in between makes chromedriver exit, and we try again.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free loopback port")
                .port();
            let mut child = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn chromedriver");
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = Instant::now() + WAIT;
            while Instant::now() < deadline {
                if child.try_wait().expect("try_wait").is_some() {
                    break;
                }
                if std::net::TcpStream::connect(addr).is_ok() {
                    return Driver {
                        child,
                        url: format!("http://{addr}"),
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("chromedriver did not start");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver, profile: &Path) -> Client {
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
    });
    let caps = caps.as_object().expect("object").clone();
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("WebDriver session with headless Chromium")
}

/// Polls `css`'s text until `pred` holds (bounded); returns it.
async fn wait_text(
    c: &Client,
    css: &str,
    limit: Duration,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + limit;
    let mut last = String::from("(element not found)");
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if let Ok(t) = e.text().await {
                if pred(&t) {
                    return t;
                }
                last = t;
            }
        }
        if Instant::now() > deadline {
            let shot = save(c, &shots_dir(), "failure").await;
            panic!(
                "timed out after {limit:?} waiting for {what} ({css}); last text: {last:?}; \
                 screenshot {}",
                shot.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_present(c: &Client, css: &str, what: &str) {
    wait_text(c, css, WAIT, what, |_| true).await;
}

async fn fill(c: &Client, css: &str, text: &str) {
    let e = c.find(Locator::Css(css)).await.expect(css);
    e.clear().await.expect("clear");
    if !text.is_empty() {
        e.send_keys(text).await.expect("type");
    }
}

async fn press(c: &Client, css: &str, key: Key) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .send_keys(&char::from(key).to_string())
        .await
        .unwrap_or_else(|e| panic!("key on {css}: {e}"));
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

async fn hash(c: &Client) -> String {
    c.execute("return location.hash", vec![])
        .await
        .expect("location.hash")
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn shots_dir() -> PathBuf {
    match std::env::var_os("FAASGATE_UI_SCREENSHOTS") {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir().join(format!("faasgate-ui-{}", std::process::id())),
    }
}

async fn save(c: &Client, dir: &Path, name: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("screenshot dir");
    let path = dir.join(format!("{name}.png"));
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(&path, png).expect("write screenshot");
    println!("screenshot: {}", path.display());
    path
}

fn auth_header() -> String {
    support::basic_auth("admin", PASSWORD)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_end_to_end_in_headless_chromium() {
    let gw = Gateway::start_with(&[], &[("FAASGATE_BASIC_AUTH_PASSWORD", PASSWORD)]);
    let driver = Driver::start();
    let profile = tempfile::tempdir().expect("profile dir");
    let c = browser(&driver, profile.path()).await;
    let result = tokio::time::timeout(Duration::from_secs(240), scenario(&gw, &c)).await;
    let _ = c.close().await;
    result.expect("the UI scenario finished within 240 s");
}

/// The secrets page: create a secret (its value never shown, the field cleared), a duplicate
/// refused with a message, update it from its row, cancel nothing, delete it after
/// confirmation; the store under the data dir follows each step.
async fn secrets_page(gw: &Gateway, c: &Client, shots: &Path) {
    let file = gw.data_dir.join("secrets/functions/openfaas-fn/ui-key");
    click(c, "#nav-secrets").await;
    wait_present(c, "#secs-empty:not([hidden])", "the empty secrets page").await;
    fill(c, "#sec-name", "ui-key").await;
    fill(c, "#sec-value", "ui-secret-value").await;
    click(c, "#sec-create").await;
    wait_present(
        c,
        "#secs-body tr[data-secret='ui-key']",
        "the new secret listed",
    )
    .await;
    assert_eq!(std::fs::read(&file).expect("stored"), b"ui-secret-value");
    let value = c
        .find(Locator::Css("#sec-value"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(value.as_deref(), Some(""), "the value field is cleared");
    let page = c.source().await.expect("page source");
    assert!(!page.contains("ui-secret-value"), "the page shows a value");

    // The same name again: refused, with a message.
    fill(c, "#sec-name", "ui-key").await;
    fill(c, "#sec-value", "other").await;
    click(c, "#sec-create").await;
    wait_text(c, "#sec-error", WAIT, "the duplicate's message", |t| {
        t.contains("exists already")
    })
    .await;
    assert_eq!(std::fs::read(&file).unwrap(), b"ui-secret-value");

    // Update from its row.
    click(c, "#secs-body button.link[data-secret='ui-key']").await;
    fill(c, "#sec-value", "ui-updated").await;
    click(c, "#sec-update").await;
    wait_text(c, "#flash", WAIT, "the update's confirmation", |t| {
        t.contains("Updated ui-key")
    })
    .await;
    assert_eq!(std::fs::read(&file).unwrap(), b"ui-updated");
    save(c, shots, "ui-secrets").await;

    // Delete, after confirmation.
    click(c, "#secs-body button.danger[data-secret='ui-key']").await;
    wait_present(c, "dialog#confirm[open]", "the confirmation dialog").await;
    wait_text(c, "#confirm-title", WAIT, "the secret's dialog", |t| {
        t == "Delete secret?"
    })
    .await;
    click(c, "#confirm-ok").await;
    wait_present(c, "#secs-empty:not([hidden])", "the list without ui-key").await;
    assert!(!file.exists(), "deleted from the store");
}

async fn scenario(gw: &Gateway, c: &Client) {
    let base = format!("http://{}", gw.addr);
    let shots = shots_dir();
    let auth = auth_header();

    // Wrong credentials: the login prompt again, with a message.
    c.goto(&format!("{base}/ui/")).await.expect("open /ui/");
    wait_present(c, "#login-password", "the login form").await;
    fill(c, "#login-password", "not-the-password").await;
    click(c, "#login-submit").await;
    wait_text(c, "#login-error", WAIT, "the wrong-password message", |t| {
        t.contains("Wrong user name or password")
    })
    .await;
    assert!(c.find(Locator::Css("#login-password")).await.is_ok());
    assert_eq!(c.find(Locator::Css("#fns")).await.ok().map(|_| ()), None);

    // Right credentials, submitted from the keyboard: the (empty) function list.
    fill(c, "#login-password", PASSWORD).await;
    press(c, "#login-password", Key::Enter).await;
    wait_present(c, "#fns-empty:not([hidden])", "the empty function list").await;

    // Deploy through the form; the API's validation messages land next to their fields.
    click(c, "#list-deploy").await;
    wait_present(c, "#dep-name", "the deploy form").await;
    fill(c, "#dep-name", "bad name").await;
    fill(c, "#dep-fprocess", "cat").await;
    click(c, "#dep-submit").await;
    wait_text(c, "#dep-name-err", WAIT, "the name's API error", |t| {
        t.contains("must match")
    })
    .await;
    fill(c, "#dep-name", "ui-cat").await;
    fill(c, "#dep-fprocess", "").await;
    click(c, "#dep-submit").await;
    wait_text(
        c,
        "#dep-fprocess-err",
        WAIT,
        "the envProcess API error",
        |t| t.contains("envProcess is required"),
    )
    .await;
    fill(c, "#dep-fprocess", "cat").await;
    fill(c, "#dep-scale-min", "lots").await;
    click(c, "#dep-submit").await;
    wait_text(
        c,
        "#dep-scale-min-err",
        WAIT,
        "the scale.min API error",
        |t| t.contains("com.openfaas.scale.min"),
    )
    .await;
    fill(c, "#dep-scale-min", "1").await;
    fill(c, "#dep-scale-max", "5").await;
    fill(c, "#dep-env", "GREETING=hello\nAPI_TOKEN=do-not-show-me").await;
    fill(c, "#dep-labels", "team=ui").await;
    click(c, "#dep-submit").await;
    wait_text(c, "#fn-badge", WAIT, "ui-cat ready", |t| t == "1/1 ready").await;
    assert_eq!(hash(c).await, "#/function/openfaas-fn/ui-cat");
    let env = wait_text(c, "#fn-env", WAIT, "env var names", |t| {
        t.contains("API_TOKEN")
    })
    .await;
    assert!(
        !env.contains("do-not-show-me"),
        "env values are never shown"
    );
    let page = c.source().await.expect("page source");
    assert!(
        !page.contains("do-not-show-me"),
        "env values are not in the page"
    );
    wait_text(c, "#fn-labels", WAIT, "labels", |t| t.contains("team")).await;
    wait_text(c, "#fn-scale-settings", WAIT, "scale labels", |t| {
        t.contains("max") && t.contains('5')
    })
    .await;

    // The list shows it, with no invocations yet.
    click(c, "#fn-back").await;
    let row = "tr[data-name='ui-cat']";
    wait_text(
        c,
        &format!("{row} td:nth-child(4)"),
        WAIT,
        "0 invocations",
        |t| t == "0",
    )
    .await;
    wait_text(
        c,
        &format!("{row} td:nth-child(9)"),
        WAIT,
        "no async calls queued",
        |t| t == "0",
    )
    .await;

    // Invoke from the invoke panel.
    click(c, &format!("{row} a")).await;
    wait_present(c, "#inv-send", "the invoke panel").await;
    wait_text(c, "#fn-overview", WAIT, "the async queue's depth", |t| {
        t.contains("Async queue") && t.contains("empty")
    })
    .await;
    c.find(Locator::Css("#inv-method"))
        .await
        .expect("method")
        .select_by_value("POST")
        .await
        .expect("select POST");
    fill(c, "#inv-path", "/hello").await;
    fill(c, "#inv-query", "x=1").await;
    fill(c, "#inv-headers", "Content-Type: text/plain\nX-Test: yes").await;
    fill(c, "#inv-body", "hello from the browser").await;
    for _ in 0..5 {
        click(c, "#inv-send").await;
        wait_text(c, "#inv-status", WAIT, "the invoke status", |t| {
            t == "200 OK"
        })
        .await;
        wait_text(c, "#inv-resp-body", WAIT, "the echoed body", |t| {
            t == "hello from the browser"
        })
        .await;
        // Wait for this call's own result before the next (the button is re-enabled).
        wait_present(c, "#inv-send:not([disabled])", "send enabled").await;
    }
    wait_text(c, "#inv-duration", WAIT, "the duration", |t| {
        t.ends_with(" ms") || t.ends_with(" s")
    })
    .await;
    click(c, "#inv-result details summary").await;
    wait_text(c, "#inv-resp-headers", WAIT, "response headers", |t| {
        t.contains("x-call-id") || t.contains("x-duration-seconds")
    })
    .await;

    // Scale to 3 and see 3 ready, and the decision.
    fill(c, "#scale-replicas", "3").await;
    click(c, "#scale-submit").await;
    wait_text(
        c,
        "#fn-badge",
        Duration::from_secs(60),
        "3 ready replicas",
        |t| t == "3/3 ready",
    )
    .await;
    wait_text(c, "#fn-events", WAIT, "the scale decision", |t| {
        t.contains("1 → 3") && t.contains("api")
    })
    .await;

    // Logs: the watchdog logged the calls.
    wait_text(c, "#logs", WAIT, "the calls in the logs", |t| {
        t.contains("POST /hello")
    })
    .await;
    // The chart has samples (the sampler runs every second).
    wait_present(c, "#chart svg path.c-ready", "the replicas line").await;
    c.set_window_size(1280, 1900).await.expect("tall window");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fn_shot = save(c, &shots, "ui-function").await;

    // The count rose in the list.
    click(c, "#fn-back").await;
    wait_text(
        c,
        &format!("{row} td:nth-child(4)"),
        WAIT,
        "5 invocations",
        |t| t == "5",
    )
    .await;
    wait_text(c, &format!("{row} td:nth-child(3)"), WAIT, "3 / 3", |t| {
        t == "3 / 3"
    })
    .await;
    c.set_window_size(1280, 720).await.expect("window");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let list_shot = save(c, &shots, "ui-list").await;
    c.set_window_size(390, 844).await.expect("narrow window");
    tokio::time::sleep(Duration::from_millis(300)).await;
    save(c, &shots, "ui-list-narrow").await;
    c.set_window_size(1280, 1000).await.expect("window");

    // Delete: open it from the keyboard and cancel with Escape (nothing happens; focus comes
    // back to the button), then confirm.
    click(c, &format!("{row} a")).await;
    wait_present(c, "#delete", "the delete button").await;
    press(c, "#delete", Key::Enter).await;
    wait_present(c, "dialog#confirm[open]", "the confirmation dialog").await;
    let focused = c.active_element().await.expect("focus");
    assert_eq!(
        focused.attr("id").await.expect("id").as_deref(),
        Some("confirm-cancel"),
        "the dialog focuses Cancel"
    );
    focused
        .send_keys(&char::from(Key::Escape).to_string())
        .await
        .expect("Escape");
    wait_present(c, "dialog#confirm:not([open])", "the dialog closed").await;
    let r = gw
        .req_h(
            "GET",
            "/system/function/ui-cat",
            &[("authorization", &auth)],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "cancel keeps the function");
    click(c, "#delete").await;
    wait_present(c, "dialog#confirm[open]", "the confirmation dialog").await;
    click(c, "#confirm-ok").await;
    wait_present(c, "#fns-empty:not([hidden])", "the list without ui-cat").await;
    let r = gw
        .req_h(
            "GET",
            "/system/function/ui-cat",
            &[("authorization", &auth)],
            "",
        )
        .await;
    assert_eq!(r.status, 404, "deleted");

    secrets_page(gw, c, &shots).await;

    // The deploy form, for docs/ui.md.
    click(c, "#nav-functions").await;
    wait_present(c, "#list-deploy", "the function list").await;
    click(c, "#list-deploy").await;
    wait_present(c, "#dep-name", "the deploy form").await;
    fill(c, "#dep-name", "Not a name!").await;
    fill(c, "#dep-fprocess", "env").await;
    click(c, "#dep-submit").await;
    wait_text(c, "#dep-name-err", WAIT, "the name's API error", |t| {
        t.contains("must match")
    })
    .await;
    save(c, &shots, "ui-deploy").await;

    // Namespaces: create one in the UI (the API's name rule shown next to the field), pick
    // it in the header's selector, deploy into it, see its delete refused while it holds the
    // function, delete the function, then the namespace.
    click(c, "#nav-namespaces").await;
    wait_present(
        c,
        "#nss-body tr[data-ns='openfaas-fn']",
        "the namespace list",
    )
    .await;
    assert!(
        c.find(Locator::Css("button[data-delete='openfaas-fn']"))
            .await
            .is_err(),
        "the default namespace offers no delete"
    );
    fill(c, "#ns-name", "Bad_Name").await;
    click(c, "#ns-submit").await;
    wait_text(c, "#ns-name-err", WAIT, "the name rule", |t| {
        t.contains("DNS-1123")
    })
    .await;
    fill(c, "#ns-name", "ui-team").await;
    fill(c, "#ns-labels", "owner=ui").await;
    click(c, "#ns-submit").await;
    wait_text(
        c,
        "#nss-body tr[data-ns='ui-team'] td:nth-child(2)",
        WAIT,
        "the new namespace's labels",
        |t| t.contains("owner=ui") && t.contains("openfaas=1"),
    )
    .await;
    wait_present(c, "#ns option[value='ui-team']", "ui-team in the selector").await;
    save(c, &shots, "ui-namespaces").await;
    c.find(Locator::Css("#ns"))
        .await
        .expect("selector")
        .select_by_value("ui-team")
        .await
        .expect("select ui-team");
    click(c, "#nav-deploy").await;
    wait_present(c, "#dep-name", "the deploy form").await;
    let ns_field = c
        .find(Locator::Css("#dep-namespace"))
        .await
        .expect("namespace field")
        .prop("value")
        .await
        .expect("value");
    assert_eq!(
        ns_field.as_deref(),
        Some("ui-team"),
        "the form takes the chosen namespace"
    );
    fill(c, "#dep-name", "ns-cat").await;
    fill(c, "#dep-fprocess", "cat").await;
    click(c, "#dep-submit").await;
    wait_text(c, "#fn-badge", WAIT, "ns-cat ready", |t| t == "1/1 ready").await;
    assert_eq!(hash(c).await, "#/function/ui-team/ns-cat");
    let r = gw
        .req_h(
            "GET",
            "/system/function/ns-cat?namespace=ui-team",
            &[("authorization", &auth)],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    click(c, "#nav-namespaces").await;
    wait_present(c, "button[data-delete='ui-team']", "ui-team's delete").await;
    click(c, "button[data-delete='ui-team']").await;
    wait_present(c, "dialog#confirm[open]", "the confirmation dialog").await;
    click(c, "#confirm-ok").await;
    wait_text(c, "#nss-error", WAIT, "the refusal", |t| {
        t.contains("still holds functions ns-cat")
    })
    .await;
    c.execute("location.hash = '#/function/ui-team/ns-cat'", vec![])
        .await
        .expect("open ns-cat");
    wait_present(c, "#delete", "the delete button").await;
    click(c, "#delete").await;
    wait_present(c, "dialog#confirm[open]", "the confirmation dialog").await;
    click(c, "#confirm-ok").await;
    wait_present(c, "#fns-empty:not([hidden])", "ui-team without ns-cat").await;
    click(c, "#nav-namespaces").await;
    wait_present(c, "button[data-delete='ui-team']", "ui-team's delete").await;
    click(c, "button[data-delete='ui-team']").await;
    wait_present(c, "dialog#confirm[open]", "the confirmation dialog").await;
    click(c, "#confirm-ok").await;
    wait_text(c, "#nss-body", WAIT, "ui-team gone from the list", |t| {
        t.contains("openfaas-fn") && !t.contains("ui-team")
    })
    .await;
    wait_text(c, "#ns", WAIT, "ui-team gone from the selector", |t| {
        !t.contains("ui-team")
    })
    .await;
    let r = gw
        .req_h("GET", "/system/namespaces", &[("authorization", &auth)], "")
        .await;
    assert_eq!(r.json(), json!(["openfaas-fn"]));

    // 1,000 functions in one namespace (at zero replicas: no processes): all listed,
    // filterable, and the page keeps refreshing.
    let r = gw
        .req_h(
            "POST",
            "/system/namespace/",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            r#"{"name":"bulk","labels":{"openfaas":"1"}}"#,
        )
        .await;
    assert_eq!(r.status, 201, "create the bulk namespace: {}", r.text());
    let started = Instant::now();
    for i in 0..BULK {
        let r = gw
            .req_h(
                "POST",
                "/system/functions",
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                serde_json::to_vec(&json!({
                    "service": format!("fn-{i:04}"),
                    "namespace": "bulk",
                    "image": "functions/alpine:latest",
                    "envProcess": "cat",
                    "labels": {"com.openfaas.scale.min": "0"},
                }))
                .unwrap(),
            )
            .await;
        assert_eq!(r.status, 202, "bulk deploy {i}: {}", r.text());
    }
    println!("deployed {BULK} functions in {:?}", started.elapsed());
    c.execute(
        "localStorage.setItem('faasgate.namespace', 'bulk'); location.hash = '#/'; location.reload();",
        vec![],
    )
    .await
    .expect("switch namespace");
    let t0 = Instant::now();
    wait_text(
        c,
        "#list-meta",
        Duration::from_secs(60),
        "1,000 functions listed",
        |t| t.starts_with("1,000 functions"),
    )
    .await;
    println!("list of {BULK} rendered {:?} after reload", t0.elapsed());
    let rows = c
        .execute(
            "return document.querySelectorAll('#fns-body tr').length",
            vec![],
        )
        .await
        .expect("row count");
    assert_eq!(rows.as_u64(), Some(BULK as u64));
    let before = c
        .find(Locator::Css("#list-meta"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    fill(c, "#filter", "fn-0999").await;
    wait_text(c, "#list-meta", WAIT, "one shown", |t| {
        t.contains("1 shown")
    })
    .await;
    // Still refreshing: the "updated" time moves on.
    wait_text(
        c,
        "#list-meta",
        Duration::from_secs(30),
        "a later refresh",
        |t| t.split("updated").nth(1) != before.split("updated").nth(1),
    )
    .await;

    // Log out: the login prompt again.
    click(c, "#logout").await;
    wait_present(c, "#login-password", "the login form after logout").await;

    println!(
        "screenshots: list {} function {}",
        list_shot.display(),
        fn_shot.display()
    );
}

/// A failed Nomad update shows on the function page (and as the list's warning dot), in
/// the words of the API's `update` state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_update_shows_on_the_function_page() {
    use crate::nomad_double::NomadDouble;
    use crate::nomad_updates::{deploy_v1, gateway, start_bad_update, wait_update_failed, JOB};
    let dir = tempfile::tempdir().unwrap();
    let double = NomadDouble::start().await;
    let gw = gateway(&double, "2s");
    deploy_v1(&gw, &double, dir.path(), 1).await;
    start_bad_update(&gw, &double, dir.path(), 1).await;
    wait_update_failed(&gw).await;
    assert_eq!(double.live_allocs(JOB).len(), 1);

    let driver = Driver::start();
    let profile = tempfile::tempdir().expect("profile dir");
    let c = browser(&driver, profile.path()).await;
    let base = format!("http://{}", gw.addr);
    let check = async {
        c.goto(&format!("{base}/ui/#/function/openfaas-fn/ver"))
            .await
            .expect("open the function page");
        wait_text(&c, "#fn-overview", WAIT, "the failed update", |t| {
            t.contains("Last update")
                && t.contains("0 of 1 new replicas healthy")
                && t.contains("the previous version serves")
        })
        .await;
        c.goto(&format!("{base}/ui/")).await.expect("open the list");
        wait_present(
            &c,
            "#fns tr[data-name='ver'] .dot[data-state='warn']",
            "the list's warning dot",
        )
        .await;
    };
    let result = tokio::time::timeout(Duration::from_secs(120), check).await;
    let _ = c.close().await;
    result.expect("the page showed the failed update within 120 s");
}
