//! The Nomad job files in `nomad/`: every `*.hcl` parses (hcl-rs), and the fields that make
//! them work are what they must be: the gateway is a system job on static port 8080 with a
//! checked service and secrets from Nomad Variables; Prometheus scrapes faasgate from the
//! catalog with the OpenFaaS alert rule; Alertmanager posts to /system/alert with
//! send_resolved. The default function template renders.

use std::path::{Path, PathBuf};

use faasgate::config::env;
use faasgate::control::nomad::render::{self, RenderOptions};
use faasgate::model::types::FunctionDeployment;
use hcl::{Block, Body, Expression};

const RULE_EXPR: &str =
    r#"sum(rate(gateway_function_invocation_total{code="200"}[10s])) BY (function_name) > 5"#;

fn nomad_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("nomad")
}

fn load(name: &str) -> Body {
    let path = nomad_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    hcl::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn blocks<'a>(body: &'a Body, ident: &str) -> Vec<&'a Block> {
    body.blocks().filter(|b| b.identifier() == ident).collect()
}

/// The one block `ident` (with label `label`, when given).
fn block<'a>(body: &'a Body, ident: &str, label: Option<&str>) -> &'a Block {
    let found: Vec<&Block> = blocks(body, ident)
        .into_iter()
        .filter(|b| match label {
            None => true,
            Some(l) => b.labels().first().map(|x| x.as_str()) == Some(l),
        })
        .collect();
    assert_eq!(found.len(), 1, "one {ident} {label:?} block");
    found[0]
}

fn attr<'a>(body: &'a Body, key: &str) -> &'a Expression {
    body.attributes()
        .find(|a| a.key() == key)
        .map(|a| a.expr())
        .unwrap_or_else(|| panic!("attribute {key} missing"))
}

fn text(e: &Expression) -> String {
    match e {
        Expression::String(s) => s.clone(),
        Expression::TemplateExpr(t) => t.to_string(),
        other => panic!("expected a string, got {other:?}"),
    }
}

fn strings(e: &Expression) -> Vec<String> {
    match e {
        Expression::Array(items) => items.iter().map(text).collect(),
        other => panic!("expected an array, got {other:?}"),
    }
}

fn number(e: &Expression) -> i64 {
    match e {
        Expression::Number(n) => n.as_i64().unwrap(),
        other => panic!("expected a number, got {other:?}"),
    }
}

fn job(body: &Body) -> &Block {
    let jobs = blocks(body, "job");
    assert_eq!(jobs.len(), 1, "one job per file");
    jobs[0]
}

/// The `template` block of `task` whose destination is `dest`.
fn template<'a>(task: &'a Block, dest: &str) -> &'a Body {
    blocks(task.body(), "template")
        .into_iter()
        .map(|t| t.body())
        .find(|t| text(attr(t, "destination")) == dest)
        .unwrap_or_else(|| panic!("no template with destination {dest}"))
}

fn yaml(s: &str) -> serde_norway::Value {
    serde_norway::from_str(s).unwrap_or_else(|e| panic!("{e}\n{s}"))
}

#[test]
fn every_hcl_file_parses_as_one_job() {
    let mut seen = 0;
    for entry in std::fs::read_dir(nomad_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("hcl") {
            let body = load(path.file_name().unwrap().to_str().unwrap());
            job(&body);
            seen += 1;
        }
    }
    assert!(seen >= 2, "expected the gateway and monitoring jobs");
}

#[test]
fn faasgate_runs_as_a_system_job_on_port_8080() {
    let body = load("faasgate.nomad.hcl");
    let job = job(&body).body();
    assert_eq!(text(attr(job, "type")), "system");

    let group = block(job, "group", None).body();
    let network = block(group, "network", None).body();
    assert_eq!(text(attr(network, "mode")), "host");
    let port = block(network, "port", Some("http")).body();
    assert_eq!(number(attr(port, "static")), 8080);

    let service = block(group, "service", None).body();
    assert_eq!(text(attr(service, "port")), "http");
    assert_eq!(text(attr(service, "name")), "faasgate");
    // The gateways find each other as the instances of this service in Nomad's own catalog
    // (`--cluster-service`'s default), each leaving its own allocation out.
    assert_eq!(
        text(attr(service, "name")),
        faasgate::config::DEFAULT_CLUSTER_SERVICE
    );
    assert_eq!(text(attr(service, "provider")), "nomad");
    let check = block(service, "check", None).body();
    assert_eq!(text(attr(check, "type")), "http");
    assert_eq!(text(attr(check, "path")), "/healthz");

    let task = block(group, "task", None);
    let driver = text(attr(task.body(), "driver"));
    assert!(driver == "exec" || driver == "raw_exec", "{driver}");
    let config = block(task.body(), "config", None).body();
    let args = strings(attr(config, "args"));
    assert!(
        args.windows(3)
            .any(|w| w == ["serve", "--provider", "nomad"]),
        "{args:?}"
    );
    // It listens on the port Nomad reserved (the node's address, port 8080).
    assert!(
        args.iter().any(|a| a.contains("NOMAD_ADDR_http")),
        "{args:?}"
    );
    // The binary accepts these flags (clap rejects an unknown flag or value before --help).
    let resolved: Vec<String> = args
        .iter()
        .map(|a| a.replace("${NOMAD_ADDR_http}", "10.0.0.1:8080"))
        .collect();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_faasgate"))
        .args(&resolved)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "faasgate {resolved:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Secrets from Nomad Variables into the environment, rendered under secrets/.
    let secrets = template(task, "secrets/faasgate.env");
    assert!(matches!(attr(secrets, "env"), Expression::Bool(true)));
    let data = text(attr(secrets, "data"));
    assert!(data.contains("nomadVar \"nomad/jobs/faasgate\""), "{data}");
    assert!(data.contains(&format!("{}=", env::NOMAD_TOKEN)), "{data}");
    assert!(
        data.contains(&format!("{}=", env::BASIC_AUTH_PASSWORD)),
        "{data}"
    );
    let task_env = block(task.body(), "env", None).body();
    assert_eq!(text(attr(task_env, env::BASIC_AUTH_USER)), "admin");
    assert!(text(attr(task_env, env::NOMAD_ADDR)).ends_with(":4646"));
}

#[test]
fn prometheus_scrapes_faasgate_with_the_openfaas_rule() {
    let body = load("monitoring.nomad.hcl");
    let job = job(&body).body();
    let group = block(job, "group", Some("prometheus")).body();
    let task = block(group, "task", Some("prometheus"));

    // Every template uses [[ ]] so Prometheus' own {{ }} pass through Nomad untouched.
    for t in blocks(task.body(), "template") {
        assert_eq!(text(attr(t.body(), "left_delimiter")), "[[");
    }

    let config = yaml(&text(attr(template(task, "local/prometheus.yml"), "data")));
    let scrape = config["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|s| s["job_name"] == "faasgate")
        .expect("a faasgate scrape job");
    assert_eq!(scrape["metrics_path"], "/metrics");
    let sd = &scrape["nomad_sd_configs"][0];
    assert!(sd["server"].as_str().unwrap().ends_with(":4646"));
    let keep = scrape["relabel_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "keep")
        .unwrap();
    assert_eq!(keep["source_labels"][0], "__meta_nomad_service");
    assert_eq!(keep["regex"], "faasgate");
    assert_eq!(config["rule_files"][0], "/local/alert.rules.yml");
    // The token file Prometheus reads is one the job renders.
    let cred = sd["authorization"]["credentials_file"].as_str().unwrap();
    template(task, cred.trim_start_matches('/'));

    let rules = yaml(&text(attr(template(task, "local/alert.rules.yml"), "data")));
    let rule = rules["groups"][0]["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|r| r["alert"] == "APIHighInvocationRate")
        .expect("the APIHighInvocationRate rule");
    assert_eq!(rule["expr"], RULE_EXPR);
    assert_eq!(rule["for"], "5s");
    assert_eq!(rule["labels"]["service"], "gateway");
    assert_eq!(rule["labels"]["severity"], "major");
}

#[test]
fn alertmanager_posts_to_system_alert() {
    let body = load("monitoring.nomad.hcl");
    let job = job(&body).body();
    let group = block(job, "group", Some("alertmanager")).body();
    let task = block(group, "task", Some("alertmanager"));
    let config = yaml(&text(attr(
        template(task, "local/alertmanager.yml"),
        "data",
    )));
    assert_eq!(config["route"]["receiver"], "scale-up");
    let receiver = config["receivers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "scale-up")
        .unwrap();
    let hook = &receiver["webhook_configs"][0];
    let url = hook["url"].as_str().unwrap();
    assert!(url.starts_with("http://"), "{url}");
    assert!(url.ends_with(":8080/system/alert"), "{url}");
    assert_eq!(hook["send_resolved"], true);
    let auth = &hook["http_config"]["basic_auth"];
    assert_eq!(auth["username"], "admin");
    let password_file = auth["password_file"].as_str().unwrap();
    let secret = template(task, password_file.trim_start_matches('/'));
    assert!(text(attr(secret, "data")).contains("nomadVar"));
}

#[test]
fn the_default_function_template_renders() {
    let text = std::fs::read_to_string(nomad_dir().join("function.job.json")).unwrap();
    assert_eq!(
        text,
        render::DEFAULT_TEMPLATE,
        "the shipped file is the one compiled in"
    );
    let opts = RenderOptions {
        template: Some(render::parse_template(&text).unwrap()),
        ..Default::default()
    };
    let spec = FunctionDeployment {
        service: "figlet".into(),
        image: "ghcr.io/openfaas/figlet:latest".into(),
        ..Default::default()
    };
    let job = render::render_job(&spec, 2, &opts).unwrap();
    assert_eq!(job["Type"], "service");
    assert_eq!(render::group_count(&job), Some(2));
    assert_eq!(render::spec_from_job(&job), Some(spec));
}

/// Every `kill_timeout` in the job files is within the Nomad client's default
/// `max_kill_timeout` (30s): a longer one is cut to it silently.
#[test]
fn kill_timeouts_fit_the_clients_default_max_kill_timeout() {
    fn walk(body: &Body, file: &str, found: &mut usize) {
        for a in body.attributes().filter(|a| a.key() == "kill_timeout") {
            let t = text(a.expr());
            let secs: u64 = t
                .strip_suffix('s')
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{file}: kill_timeout {t:?} is not whole seconds"));
            assert!(secs <= 30, "{file}: kill_timeout {t} is above 30s");
            *found += 1;
        }
        for b in body.blocks() {
            walk(b.body(), file, found);
        }
    }
    let mut found = 0;
    for entry in std::fs::read_dir(nomad_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("hcl") {
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            walk(&load(&name), &name, &mut found);
        }
    }
    assert!(found > 0, "the gateway's job sets a kill_timeout");
}
