//! End to end with the real Prometheus and Alertmanager (Debian packages `prometheus` and
//! `prometheus-alertmanager`; `.ci/run` installs them): Prometheus scrapes the gateway and
//! evaluates the shipped `loadtest/prometheus/alert.rules.yml`, Alertmanager posts the
//! webhook, replicas rise; when load stops the resolved alert brings them back to min.
//! Everything listens on loopback ports; intervals are shortened in the generated configs
//! (1 s scrape and evaluation, 1 s group wait), the rule is the shipped one verbatim.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{free_port, join_load, spawn_load, Gateway};

/// A child process killed (and reaped) when dropped; its output goes to `log`.
struct Service {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    fn start(name: &'static str, bin: &Path, args: &[String], dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("service log file");
        let child = Command::new(bin)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        Service { name, child, log }
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- {} log (last lines) ---\n{}",
            self.name,
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }
}

fn find(candidates: &[&str]) -> PathBuf {
    for c in candidates {
        for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
            let p = Path::new(dir).join(c);
            if p.exists() {
                return p;
            }
        }
    }
    panic!(
        "{} not found: install the Debian packages prometheus and prometheus-alertmanager \
         (apt-get install -y prometheus prometheus-alertmanager; .ci/run does)",
        candidates.join(" or ")
    );
}

async fn wait_http_ok(url_port: u16, path: &str, what: &str, services: &[&Service]) {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], url_port));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            let r = support::request(addr, "GET", path, &[], Default::default()).await;
            if r.status == 200 {
                return;
            }
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = services.iter().map(|s| s.tail()).collect();
            panic!("{what} did not become ready\n{}", logs.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_alert_scales_the_function_up_and_its_resolution_back_to_min() {
    let prometheus = find(&["prometheus"]);
    let alertmanager = find(&["prometheus-alertmanager", "alertmanager"]);
    let gw = Gateway::start();
    let labels = json!({"com.openfaas.scale.max": "4", "com.openfaas.scale.factor": "50"});
    let r = gw
        .deploy(json!({"service": "busy", "image": "x", "envProcess": "env", "labels": labels}))
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    gw.wait_available("busy", 1).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let (prom_port, am_port) = (free_port(), free_port());
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("loadtest/prometheus");
    std::fs::copy(
        shipped.join("alert.rules.yml"),
        dir.path().join("alert.rules.yml"),
    )
    .expect("copy the shipped rule file");
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: ['alert.rules.yml']\n\
             alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am_port}']\n\
             scrape_configs:\n  - job_name: faasgate\n    static_configs:\n      - targets: ['{}']\n",
            gw.addr
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("alertmanager.yml"),
        format!(
            "route:\n  group_by: ['alertname', 'cluster', 'service']\n  group_wait: 1s\n  \
             group_interval: 1s\n  repeat_interval: 30s\n  receiver: scale-up\n\
             receivers:\n  - name: scale-up\n    webhook_configs:\n      - url: http://{}/system/alert\n        \
             send_resolved: true\n",
            gw.addr
        ),
    )
    .unwrap();
    let d = dir.path().display();
    let am = Service::start(
        "alertmanager",
        &alertmanager,
        &[
            format!("--config.file={d}/alertmanager.yml"),
            format!("--storage.path={d}/am-data"),
            format!("--web.listen-address=127.0.0.1:{am_port}"),
            "--cluster.listen-address=".into(),
        ],
        dir.path(),
    );
    let prom = Service::start(
        "prometheus",
        &prometheus,
        &[
            format!("--config.file={d}/prometheus.yml"),
            format!("--storage.tsdb.path={d}/prom-data"),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
            "--rules.alert.resend-delay=1s".into(),
        ],
        dir.path(),
    );
    wait_http_ok(am_port, "/-/ready", "alertmanager", &[&am]).await;
    wait_http_ok(prom_port, "/-/ready", "prometheus", &[&prom]).await;

    // Load well above 5 successful calls per second.
    let stop = Arc::new(AtomicBool::new(false));
    let load = spawn_load(gw.addr, "/function/busy", 2, stop.clone());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = gw.status("busy").await;
        if s["replicas"].as_u64().unwrap_or(0) >= 3 {
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "the alert did not scale busy up; status {s}\n{}\n{}",
                prom.tail(),
                am.tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = join_load(load).await;
    assert!(failed.is_empty(), "{failed:?}");
    assert!(ok > 50, "{ok}");

    // Quiet: the rate falls, the alert resolves, replicas go back to min (1).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = gw.status("busy").await;
        if s["replicas"] == 1 {
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "the resolved alert did not bring busy back to 1; status {s}\n{}\n{}",
                prom.tail(),
                am.tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = gw.log.lock().unwrap().join("\n");
    assert!(log.contains("reason=\"alert_firing\""), "{log}");
    assert!(log.contains("reason=\"alert_resolved\""), "{log}");
}
