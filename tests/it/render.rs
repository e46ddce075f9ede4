//! Job rendering: user values are data (property test: render, serialise, parse back,
//! compare), and `faasgate render` prints what the provider would register.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use faasgate::control::nomad::render::{
    self, group_count, job_id, render_job, service_name, spec_from_job, RenderOptions,
    DRIVER_ANNOTATION,
};
use faasgate::model::names::FunctionKey;
use faasgate::model::scale::MAX_REPLICAS;
use faasgate::model::stack::parse_stack_in;
use faasgate::model::types::{FunctionDeployment, FunctionResources};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use serde_json::{json, Value};

use crate::support::nomad_strict;

const BIN: &str = env!("CARGO_BIN_EXE_faasgate");

/// Fragments that would break a renderer that pastes text into JSON, HCL or a Go/Nomad
/// template.
const NASTY: &[&str] = &[
    "\"",
    "\\",
    "\n",
    "\r\n",
    "\t",
    "\u{0}",
    "${NOMAD_PORT_http}",
    "${attr.kernel.name}",
    "$${x}",
    "%{ if true }x%{ endif }",
    "[[ .Name ]]",
    "[[",
    "]]",
    "{{faasgate.env}}",
    "{{faasgate.job_id}}",
    "{{ .Name }}",
    "{{",
    "}}",
    "\"},\"Driver\":\"raw_exec\",\"x\":{\"",
    "\"]}]}",
    "job \"evil\" { type = \"system\" }",
    "EOT\n}\n",
    "<<EOT",
    "'",
    "é✓",
    " ",
];

fn nasty_string() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            3 => proptest::sample::select(NASTY).prop_map(str::to_string),
            2 => "\\PC{0,6}",
        ],
        0..5,
    )
    .prop_map(|parts| parts.concat())
}

fn nasty_map() -> impl Strategy<Value = Option<BTreeMap<String, String>>> {
    proptest::option::of(proptest::collection::btree_map(
        nasty_string(),
        nasty_string(),
        0..5,
    ))
}

fn resources() -> impl Strategy<Value = Option<FunctionResources>> {
    proptest::option::of(
        (
            proptest::sample::select(&["", "128Mi", "1G", "512M", "1Gi", "5Mi"][..]),
            proptest::sample::select(&["", "0.5", "100m", "2"][..]),
        )
            .prop_map(|(m, c)| FunctionResources {
                memory: m.into(),
                cpu: c.into(),
            }),
    )
}

prop_compose! {
    fn deployment()(
        name in "[-a-zA-Z_0-9.]{1,63}",
        namespace in proptest::option::of("[-a-zA-Z_0-9]{1,63}"),
        exec in any::<bool>(),
        image in nasty_string(),
        env_process in nasty_string(),
        env_vars in nasty_map(),
        labels in nasty_map(),
        annotations in nasty_map(),
        secrets in proptest::collection::vec(
            "[a-z0-9]{1,5}(-[a-z0-9]{1,5})?([.][a-z0-9]{1,5})?",
            0..3,
        ),
        constraint_values in proptest::collection::vec("[a-zA-Z0-9_.-]{1,10}", 1..3),
        limits in resources(),
        requests in resources(),
        read_only in any::<bool>(),
    ) -> FunctionDeployment {
        let mut annotations = annotations;
        if let Some(a) = annotations.as_mut() {
            a.remove(DRIVER_ANNOTATION);
        }
        let (image, env_process) = if exec {
            // exec: no image, and the watchdog needs a command.
            (String::new(), format!("cmd {env_process}"))
        } else {
            (format!("img{image}"), env_process)
        };
        FunctionDeployment {
            service: name,
            image,
            namespace: namespace.unwrap_or_default(),
            env_process,
            env_vars,
            constraints: constraint_values
                .iter()
                .map(|v| format!("node.labels.zone == {v}"))
                .collect(),
            secrets,
            labels,
            annotations,
            limits,
            requests,
            read_only_root_filesystem: read_only,
        }
    }
}

/// The job's shape: object keys and value kinds, with the user-keyed data maps (`Meta`,
/// `Env`) opaque and array elements as a set (so list lengths do not count).
fn skeleton(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let s = if k == "Meta" || k == "Env" {
                        json!("<data map>")
                    } else {
                        skeleton(v)
                    };
                    (k.clone(), s)
                })
                .collect(),
        ),
        Value::Array(items) => {
            let set: BTreeSet<String> = items.iter().map(|i| skeleton(i).to_string()).collect();
            json!(set)
        }
        Value::String(_) => json!("string"),
        Value::Number(_) => json!("number"),
        Value::Bool(_) => json!("bool"),
        Value::Null => Value::Null,
    }
}

/// A plain function with the same driver and resource choices as `d`.
fn baseline(d: &FunctionDeployment) -> FunctionDeployment {
    FunctionDeployment {
        service: "plain".into(),
        image: if d.image.is_empty() {
            String::new()
        } else {
            "img".into()
        },
        env_process: "cat".into(),
        constraints: vec!["node.labels.zone == a".into()],
        limits: d.limits.clone(),
        requests: d.requests.clone(),
        read_only_root_filesystem: d.read_only_root_filesystem,
        secrets: if d.secrets.is_empty() {
            Vec::new()
        } else {
            vec!["s".into()]
        },
        ..Default::default()
    }
}

fn valid_service_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

proptest! {
    // A fixed seed: the same cases on every run and machine.
    #![proptest_config(ProptestConfig {
        cases: 256,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x0fa5_6a7e),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn user_values_come_out_as_data(d in deployment(), count in 0u64..50) {
        let opts = RenderOptions::default();
        let job = render_job(&d, count, &opts).unwrap();
        let key = FunctionKey::new(&d.service, &d.namespace).unwrap();

        // Serialise as the provider sends it, parse back as Nomad would.
        let text = serde_json::to_string(&json!({ "Job": job })).unwrap();
        let parsed: Value = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(&parsed["Job"], &job);
        let parsed = &parsed["Job"];

        // Nomad takes it: the strict double's reading of a registration accepts it.
        prop_assert_eq!(nomad_strict::check_register(&json!({ "Job": job }), None), Ok(()));

        // The exact deployment comes back.
        prop_assert_eq!(spec_from_job(parsed), Some(d.clone()));
        prop_assert_eq!(group_count(parsed), Some(count));
        let id = job_id(&opts.job_prefix, &key);
        prop_assert_eq!(parsed["ID"].as_str(), Some(id.as_str()));
        let svc = parsed["TaskGroups"][0]["Services"][0]["Name"].as_str().unwrap();
        prop_assert_eq!(svc, service_name(&key));
        prop_assert!(valid_service_name(svc), "{}", svc);

        // Every env value, label and annotation is there verbatim, as a string.
        let task = &parsed["TaskGroups"][0]["Tasks"][0];
        let exec = d.image.is_empty();
        let reserved = |k: &str| {
            (k == "fprocess" && !d.env_process.is_empty())
                || (exec && (k == "port" || k == "bind_address"))
                || (exec && !d.secrets.is_empty() && k == "secret_mount_path")
        };
        for (k, v) in d.env_vars.iter().flatten() {
            if !reserved(k) {
                prop_assert_eq!(task["Env"][k].as_str(), Some(v.as_str()));
            }
        }
        if !d.env_process.is_empty() {
            prop_assert_eq!(task["Env"]["fprocess"].as_str(), Some(d.env_process.as_str()));
        }
        for (k, v) in d.labels.iter().flatten() {
            let mk = format!("{}{k}", render::meta::LABEL_PREFIX);
            prop_assert_eq!(parsed["Meta"][&mk].as_str(), Some(v.as_str()));
        }
        for (k, v) in d.annotations.iter().flatten() {
            let mk = format!("{}{k}", render::meta::ANNOTATION_PREFIX);
            prop_assert_eq!(parsed["Meta"][&mk].as_str(), Some(v.as_str()));
        }
        if !exec {
            prop_assert_eq!(task["Config"]["image"].as_str(), Some(d.image.as_str()));
        }
        // The driver is the one the rules pick, whatever the values say.
        prop_assert_eq!(task["Driver"].as_str(), Some(if exec { "exec" } else { "docker" }));

        // One template per secret, naming it and only referencing the function's Variable.
        let templates = task["Templates"].as_array().unwrap();
        let names = render::secret_names(&d);
        prop_assert_eq!(templates.len(), names.len());
        let var = render::secrets_var_path(&key);
        for (t, n) in templates.iter().zip(&names) {
            let dest = format!("secrets/openfaas/{n}");
            prop_assert_eq!(t["DestPath"].as_str(), Some(dest.as_str()));
            let tmpl = t["EmbeddedTmpl"].as_str().unwrap();
            prop_assert!(tmpl.contains(&format!("nomadVar \"{var}\"")), "{}", tmpl);
            prop_assert!(tmpl.contains(&format!("index . \"{n}\"")), "{}", tmpl);
        }

        // The structure does not depend on user values.
        let base = render_job(&baseline(&d), 1, &opts).unwrap();
        prop_assert_eq!(skeleton(parsed), skeleton(&base));
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x005e_c2e7),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// A secret name reaches a consul-template string, so only valid names render.
    #[test]
    fn only_valid_secret_names_render(name in nasty_string()) {
        let d = FunctionDeployment {
            service: "f".into(),
            image: "img".into(),
            secrets: vec![name.clone()],
            ..Default::default()
        };
        let valid = faasgate::control::secrets::validate_name(&name).is_ok();
        prop_assert_eq!(render_job(&d, 1, &RenderOptions::default()).is_ok(), valid, "{:?}", name);
    }
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run faasgate")
}

#[test]
fn render_prints_one_register_body_per_function() {
    let out = run(&["render", "-f", "examples/stack.yml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<Value> = serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap();
    let ids: Vec<&str> = docs
        .iter()
        .map(|d| d["Job"]["ID"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "faasgate-echo.openfaas-fn",
            "faasgate-env.openfaas-fn",
            "faasgate-sha512sum.openfaas-fn"
        ]
    );
    for d in &docs {
        assert_eq!(d.as_object().unwrap().len(), 1, "only the Job key");
        assert!(spec_from_job(d).is_some());
        assert!(d["Job"].get("Datacenters").is_none());
    }
}

#[test]
fn render_one_function_with_options() {
    let out = run(&[
        "render",
        "-f",
        "examples/stack.yml",
        "--function",
        "echo",
        "--job-prefix",
        "fg-",
        "--datacenters",
        "dc1,dc2",
        "--count",
        "3",
        "--nomad-namespace",
        "functions",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    let job = &body["Job"];
    assert_eq!(job["ID"], "fg-echo.openfaas-fn");
    assert_eq!(job["Type"], "service");
    assert_eq!(job["Namespace"], "functions");
    assert_eq!(job["Datacenters"], json!(["dc1", "dc2"]));
    assert_eq!(group_count(job), Some(3));
    let group = &job["TaskGroups"][0];
    assert_eq!(group["Services"][0]["Checks"][0]["Path"], "/_/health");
    let task = &group["Tasks"][0];
    assert_eq!(task["Driver"], "docker");
    assert_eq!(
        task["Config"]["image"],
        "ghcr.io/openfaas/python3-http:latest"
    );
    assert_eq!(task["Env"]["fprocess"], "./functions/echo.py");
    assert_eq!(task["Env"]["mode"], "http");
    assert_eq!(job["Meta"]["faasgate.label.com.openfaas.scale.max"], "4");
    let spec = spec_from_job(job).unwrap();
    assert_eq!(spec.service, "echo");
    assert_eq!(
        spec.annotations.unwrap()["description"],
        "Echoes the request back as JSON"
    );

    // Without --count, the count is com.openfaas.scale.min.
    let out = run(&[
        "render",
        "-f",
        "examples/stack.yml",
        "--function",
        "sha512sum",
    ]);
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(group_count(&body["Job"]), Some(1));
}

#[test]
fn render_uses_an_operator_template() {
    let dir = tempfile::tempdir().unwrap();
    let mut template: Value =
        serde_json::from_str(include_str!("../../nomad/function.job.json")).unwrap();
    template["Job"]["Priority"] = json!(80);
    template["Job"]["TaskGroups"][0]["Services"][0]["Provider"] = json!("consul");
    template["Job"]["TaskGroups"][0]["Tasks"][0]["Meta"] = json!({"owner": "{{faasgate.name}}"});
    let path = dir.path().join("job.json");
    std::fs::write(&path, template.to_string()).unwrap();

    let out = run(&[
        "render",
        "-f",
        "examples/stack.yml",
        "--function",
        "env",
        "--job-template",
        path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["Job"]["Priority"], 80);
    let group = &body["Job"]["TaskGroups"][0];
    assert_eq!(group["Services"][0]["Provider"], "consul");
    assert_eq!(group["Tasks"][0]["Meta"]["owner"], "env");

    // A broken template fails with a message that says where.
    template["Job"]["Name"] = json!("x-{{faasgate.name}}");
    std::fs::write(&path, template.to_string()).unwrap();
    let out = run(&[
        "render",
        "-f",
        "examples/stack.yml",
        "--job-template",
        path.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Job.Name"), "{err}");
}

#[test]
fn render_reports_unknown_functions() {
    let out = run(&["render", "-f", "examples/stack.yml", "--function", "nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"nope\""), "{err}");
}

#[test]
fn render_shows_secret_templates_never_values() {
    let dir = tempfile::tempdir().unwrap();
    let stack = dir.path().join("stack.yml");
    std::fs::write(
        &stack,
        "version: 1.0\nprovider:\n  name: openfaas\nfunctions:\n  api:\n    image: ghcr.io/x/api:1\n    secrets:\n      - api-key\n",
    )
    .unwrap();
    let out = run(&["render", "-f", stack.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    let task = &body["Job"]["TaskGroups"][0]["Tasks"][0];
    let var = render::secrets_var_path(&FunctionKey::new("api", "").unwrap());
    assert_eq!(task["Templates"][0]["DestPath"], "secrets/openfaas/api-key");
    assert_eq!(
        task["Templates"][0]["EmbeddedTmpl"],
        format!("{{{{ with nomadVar \"{var}\" }}}}{{{{ (index . \"api-key\").Value | base64Decode }}}}{{{{ end }}}}")
    );
    assert_eq!(
        task["Config"]["mount"][0]["target"],
        "/var/openfaas/secrets"
    );
    assert_eq!(task["Config"]["mount"][0]["readonly"], true);
}

/// Constraint attributes a stack file may name, Nomad's own syntax included: those Nomad
/// resolves and some it refuses (`${node.region}`: "unsupported attribute").
const NOMAD_TARGETS: &[&str] = &[
    "${attr.kernel.name}",
    "${attr.unique.hostname}",
    "${meta.rack}",
    "${device.model}",
    "${node.datacenter}",
    "${node.class}",
    "${node.pool}",
    "${node.unique.id}",
    "${node.unique.name}",
    "${node.region}",
    "${node.name}",
    "${env.PATH}",
    "${}",
];

/// Attributes in OpenFaaS's (Docker Swarm's) words, some mapped, some not.
const SWARM_ATTRIBUTES: &[&str] = &[
    "node.platform.os",
    "node.platform.arch",
    "node.hostname",
    "node.id",
    "node.labels.zone",
    "engine.labels.disk",
    "datacenter",
    "node.region",
    "node.role",
    "node.class",
    "node.pool",
    "node.unique.name",
    "attr.cpu.arch",
    "meta.team",
    "device.vendor",
];

const OPERATORS: &[&str] = &[
    "==",
    "=",
    "!=",
    "<",
    ">=",
    "regexp",
    "version",
    "set_contains",
];

/// Scale label values: in range, at the bound, beyond it, and not numbers.
const SCALE_VALUES: &[&str] = &[
    "0",
    "1",
    "3",
    "20",
    "49999",
    "50000",
    "50001",
    "9223372036854775807",
    "9223372036854775808",
    "-1",
    "2.5",
    "many",
];

/// One constraint as a stack file writes it; Nomad's `${...}` syntax goes through a
/// variable (`${T3}` -> `${node.region}`), since the stack file's own `${VAR}` substitution
/// takes only plain names.
fn stack_constraint() -> impl Strategy<Value = String> {
    let value = "[a-z0-9_.-]{1,8}";
    prop_oneof![
        (
            0..NOMAD_TARGETS.len(),
            proptest::sample::select(OPERATORS),
            value
        )
            .prop_map(|(t, op, v)| format!("${{T{t}}} {op} {v}")),
        (
            proptest::sample::select(SWARM_ATTRIBUTES),
            proptest::sample::select(OPERATORS),
            value
        )
            .prop_map(|(a, op, v)| format!("{a} {op} {v}")),
        proptest::sample::select(SWARM_ATTRIBUTES).prop_map(|a| format!("{a} is_set")),
    ]
}

/// One function of a stack file, as JSON (a stack file is YAML; JSON is YAML).
fn stack_function() -> impl Strategy<Value = Value> {
    (
        any::<bool>(),
        "[a-z0-9][a-z0-9./:-]{0,20}",
        // Printable ASCII but `$`: a stack file's `${` is its own substitution syntax.
        "[ -#%-~]{0,16}",
        proptest::collection::btree_map("[A-Za-z_][A-Za-z0-9_]{0,8}", "[ -#%-~]{0,12}", 0..4),
        proptest::collection::vec(stack_constraint(), 0..3),
        proptest::option::of(proptest::sample::select(SCALE_VALUES)),
        proptest::option::of(proptest::sample::select(SCALE_VALUES)),
        proptest::option::of(proptest::sample::select(
            &["64Mi", "1G", "512M", "5Mi", "2"][..],
        )),
        proptest::collection::vec("[a-z0-9]{1,6}", 0..3),
    )
        .prop_map(
            |(exec, image, fprocess, env, constraints, min, max, memory, secrets)| {
                let mut labels = serde_json::Map::new();
                if let Some(m) = min {
                    labels.insert("com.openfaas.scale.min".into(), json!(m));
                }
                if let Some(m) = max {
                    labels.insert("com.openfaas.scale.max".into(), json!(m));
                }
                let mut f = json!({
                    "image": if exec { String::new() } else { image },
                    "fprocess": format!("cmd {fprocess}"),
                    "environment": env,
                    "labels": labels,
                    "constraints": constraints,
                    "secrets": secrets,
                });
                if exec {
                    f["annotations"] = json!({ DRIVER_ANNOTATION: "exec" });
                }
                if let Some(m) = memory {
                    f["limits"] = json!({ "memory": m });
                }
                f
            },
        )
}

fn stack_file() -> impl Strategy<Value = String> {
    proptest::collection::btree_map("[a-z][a-z0-9-]{0,12}", stack_function(), 1..4).prop_map(
        |functions| {
            json!({
                "version": 1.0,
                "provider": {"name": "openfaas", "gateway": "http://127.0.0.1:8080"},
                "functions": functions,
            })
            .to_string()
        },
    )
}

fn render_options() -> impl Strategy<Value = RenderOptions> {
    (
        proptest::collection::vec("[a-z0-9*-]{1,6}", 0..3),
        proptest::option::of("[a-z0-9-]{1,10}"),
        proptest::option::of("[a-z0-9-]{1,10}"),
    )
        .prop_map(|(datacenters, nomad_namespace, region)| RenderOptions {
            datacenters,
            nomad_namespace,
            region,
            ..RenderOptions::default()
        })
}

/// Every job faasgate renders from a stack file is one Nomad takes: the strict double's
/// reading of a registration (Go's decoding of the `api` structs, constraint attributes,
/// count bounds) accepts it, at the count the function starts with and at any count up to
/// [`MAX_REPLICAS`]. What faasgate refuses (a bad label, a constraint Nomad would not
/// resolve) it refuses before rendering, at deploy; enough cases render to make the
/// property mean something.
#[test]
fn every_job_rendered_from_a_stack_file_is_one_nomad_takes() {
    let mut runner = TestRunner::new(Config {
        cases: 256,
        rng_seed: RngSeed::Fixed(0x057a_c4f1),
        failure_persistence: None,
        ..Config::default()
    });
    let rendered = std::cell::Cell::new(0usize);
    let strategy = (stack_file(), render_options(), 0..=MAX_REPLICAS);
    runner
        .run(&strategy, |(text, opts, any_count)| {
            let env = |name: &str| {
                let i: usize = name.strip_prefix('T')?.parse().ok()?;
                NOMAD_TARGETS.get(i).map(|t| t.to_string())
            };
            let functions = parse_stack_in(&text, env, std::path::Path::new("."))
                .map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
            for f in functions {
                // A label out of range: refused at deploy (400 naming it), never rendered.
                let Ok(start) = render::initial_count(&f) else {
                    continue;
                };
                for count in [start, any_count] {
                    // A constraint Nomad would not resolve: refused at deploy too.
                    let Ok(job) = render_job(&f, count, &opts) else {
                        continue;
                    };
                    rendered.set(rendered.get() + 1);
                    let body = json!({ "Job": job });
                    prop_assert_eq!(
                        nomad_strict::check_register(&body, None),
                        Ok(()),
                        "{} at count {}",
                        f.service,
                        count
                    );
                }
            }
            Ok(())
        })
        .unwrap();
    assert!(
        rendered.get() >= 256,
        "only {} jobs rendered: the property says little",
        rendered.get()
    );
}
