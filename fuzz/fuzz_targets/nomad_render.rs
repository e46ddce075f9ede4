//! Nomad job rendering (`control::nomad::render::render_job`) of structured-arbitrary
//! deployments and render options.
//!
//! Names are drawn mostly from the valid alphabet (so most inputs get past validation),
//! other strings from fragments that break text templating (quotes, braces, markers, JSON
//! and HCL pieces) and arbitrary text. Asserts, besides never panicking, for every job it
//! renders: it is valid JSON (serialised and parsed back unchanged); the deployment, the
//! count and the job ID read back from it; its shape (object keys and value kinds outside
//! the `Meta` and `Env` data maps) is the shape of a plain function with the same driver,
//! resources and constraint count, so no user value became structure; the data maps hold
//! only strings, under the keys the scheme allows.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use arbitrary::{Arbitrary, Unstructured};
use faasgate::control::nomad::render::{
    self, group_count, job_id, render_job, spec_from_job, RenderOptions, DRIVER_ANNOTATION,
};
use faasgate::model::names::FunctionKey;
use faasgate::model::types::{FunctionDeployment, FunctionResources};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

/// Fragments that would break a renderer that pastes text into JSON, HCL or a template.
const NASTY: &[&str] = &[
    "\"",
    "\\",
    "\n",
    "\t",
    "\u{0}",
    "${NOMAD_PORT_http}",
    "${attr.kernel.name}",
    "$${x}",
    "%{ if true }x%{ endif }",
    "[[ .Name ]]",
    "{{faasgate.env}}",
    "{{faasgate.job_id}}",
    "{{faasgate.count}}",
    "{{faasgate.",
    "}}",
    "\"},\"Driver\":\"raw_exec\",\"x\":{\"",
    "\"]}]}",
    "job \"evil\" { type = \"system\" }",
    "EOT\n}\n",
    "<<EOT",
    "é✓",
    " ",
    "Meta",
    "Env",
    "faasgate.spec",
    "faasgate.label.",
    "com.openfaas.scale.min",
    "fprocess",
    "port",
];
const NAME_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.";
const CONSTRAINTS: &[&str] = &[
    "node.platform.os == linux",
    "node.platform.arch==x86_64",
    "node.labels.zone != a",
    "${attr.kernel.name} = linux",
    "node.hostname is_set",
    "meta.rack regexp ^r[0-9]+$",
    "datacenter == dc1",
];
const MEMORY: &[&str] = &["", "128Mi", "1G", "512M", "1Gi", "5Mi", "0", "x"];
const CPU: &[&str] = &["", "0.5", "100m", "2", "-1"];

/// A string from fragments and arbitrary text.
struct Nasty(String);

impl<'a> Arbitrary<'a> for Nasty {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let mut s = String::new();
        for _ in 0..u.int_in_range(0..=4)? {
            if u.arbitrary()? {
                s.push_str(u.choose(NASTY)?);
            } else {
                s.push_str(u.arbitrary::<&str>()?);
            }
        }
        Ok(Nasty(s))
    }
}

/// A name: mostly from the valid alphabet, sometimes anything.
struct Name(String);

impl<'a> Arbitrary<'a> for Name {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        if u.ratio(1, 8)? {
            return Ok(Name(Nasty::arbitrary(u)?.0));
        }
        let len = u.int_in_range(1..=70)?;
        let mut s = String::with_capacity(len);
        for _ in 0..len {
            s.push(char::from(*u.choose(NAME_CHARS)?));
        }
        Ok(Name(s))
    }
}

fn map(u: &mut Unstructured<'_>) -> arbitrary::Result<Option<BTreeMap<String, String>>> {
    if !u.arbitrary()? {
        return Ok(None);
    }
    let mut m = BTreeMap::new();
    for _ in 0..u.int_in_range(0..=4)? {
        m.insert(Nasty::arbitrary(u)?.0, Nasty::arbitrary(u)?.0);
    }
    Ok(Some(m))
}

fn resources(u: &mut Unstructured<'_>) -> arbitrary::Result<Option<FunctionResources>> {
    if !u.arbitrary()? {
        return Ok(None);
    }
    let pick = |u: &mut Unstructured<'_>, fixed: &[&str]| -> arbitrary::Result<String> {
        Ok(if u.ratio(1, 8)? {
            u.arbitrary::<String>()?
        } else {
            u.choose(fixed)?.to_string()
        })
    };
    Ok(Some(FunctionResources {
        memory: pick(u, MEMORY)?,
        cpu: pick(u, CPU)?,
    }))
}

#[derive(Debug)]
struct Case {
    deployment: FunctionDeployment,
    count: u64,
    opts: RenderOptions,
}

impl<'a> Arbitrary<'a> for Case {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let service = Name::arbitrary(u)?.0;
        let namespace = if u.arbitrary()? {
            String::new()
        } else {
            Name::arbitrary(u)?.0
        };
        let image = if u.ratio(1, 4)? {
            String::new()
        } else {
            Nasty::arbitrary(u)?.0
        };
        let mut annotations = map(u)?;
        match u.int_in_range(0..=4)? {
            0 => {}
            n => {
                let driver = match n {
                    1 => "docker".to_string(),
                    2 => "exec".to_string(),
                    3 => "raw_exec".to_string(),
                    _ => Nasty::arbitrary(u)?.0,
                };
                annotations
                    .get_or_insert_with(BTreeMap::new)
                    .insert(DRIVER_ANNOTATION.into(), driver);
            }
        }
        let mut labels = map(u)?;
        if u.ratio(1, 4)? {
            let min = if u.arbitrary()? {
                u.int_in_range(0..=20u32)?.to_string()
            } else {
                Nasty::arbitrary(u)?.0
            };
            labels
                .get_or_insert_with(BTreeMap::new)
                .insert("com.openfaas.scale.min".into(), min);
        }
        let mut constraints = Vec::new();
        for _ in 0..u.int_in_range(0..=3)? {
            constraints.push(if u.ratio(1, 4)? {
                Nasty::arbitrary(u)?.0
            } else {
                u.choose(CONSTRAINTS)?.to_string()
            });
        }
        let mut secrets = Vec::new();
        for _ in 0..u.int_in_range(0..=2)? {
            secrets.push(Nasty::arbitrary(u)?.0);
        }
        let deployment = FunctionDeployment {
            service,
            image,
            namespace,
            env_process: Nasty::arbitrary(u)?.0,
            env_vars: map(u)?,
            constraints,
            secrets,
            labels,
            annotations,
            limits: resources(u)?,
            requests: resources(u)?,
            read_only_root_filesystem: u.arbitrary()?,
        };
        let opt = |u: &mut Unstructured<'_>| -> arbitrary::Result<Option<String>> {
            Ok(if u.arbitrary()? {
                Some(Nasty::arbitrary(u)?.0)
            } else {
                None
            })
        };
        let mut opts = RenderOptions::default();
        if let Some(prefix) = opt(u)? {
            opts.job_prefix = prefix;
        }
        for _ in 0..u.int_in_range(0..=2)? {
            opts.datacenters.push(Nasty::arbitrary(u)?.0);
        }
        opts.nomad_namespace = opt(u)?;
        opts.region = opt(u)?;
        if let Some(path) = opt(u)? {
            opts.watchdog_path = path;
        }
        Ok(Case {
            deployment,
            count: u.arbitrary()?,
            opts,
        })
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

/// A plain function with the same driver, resources, and constraint and secret presence as
/// `d`.
fn baseline(d: &FunctionDeployment) -> FunctionDeployment {
    let driver = d
        .annotations
        .as_ref()
        .and_then(|a| a.get(DRIVER_ANNOTATION))
        .map(|v| BTreeMap::from([(DRIVER_ANNOTATION.to_string(), v.clone())]));
    FunctionDeployment {
        service: "plain".into(),
        image: if d.image.trim().is_empty() {
            String::new()
        } else {
            "img".into()
        },
        env_process: "cat".into(),
        annotations: driver,
        constraints: if d.constraints.is_empty() {
            Vec::new()
        } else {
            vec!["node.labels.zone == a".into()]
        },
        // Each secret is one template (and, for docker, one mount): the shape has one
        // element of each however many there are.
        secrets: if d.secrets.is_empty() {
            Vec::new()
        } else {
            vec!["s".into()]
        },
        limits: d.limits.clone(),
        requests: d.requests.clone(),
        read_only_root_filesystem: d.read_only_root_filesystem,
        ..Default::default()
    }
}

fuzz_target!(|case: Case| {
    let Case {
        deployment: d,
        count,
        opts,
    } = case;
    let Ok(job) = render_job(&d, count, &opts) else {
        return;
    };
    let key = FunctionKey::new(&d.service, &d.namespace).expect("rendered: a valid key");

    // Valid JSON, as the provider sends it and Nomad parses it.
    let text = serde_json::to_string(&json!({ "Job": job })).expect("serialises");
    let parsed: Value = serde_json::from_str(&text).expect("the rendered job is valid JSON");
    assert_eq!(parsed["Job"], job, "the JSON round trip changed the job");
    let job = &parsed["Job"];
    assert_eq!(
        spec_from_job(job).as_ref(),
        Some(&d),
        "the deployment reads back"
    );
    assert_eq!(group_count(job), Some(count));
    assert_eq!(
        job["ID"].as_str(),
        Some(job_id(&opts.job_prefix, &key).as_str())
    );

    // No user value became structure.
    let base = render_job(&baseline(&d), 1, &opts).expect("the plain function renders");
    assert_eq!(
        skeleton(job),
        skeleton(&base),
        "the job's shape depends on user values"
    );

    // The data maps: strings only, under the scheme's keys.
    let meta = job["Meta"].as_object().expect("Meta is an object");
    for (k, v) in meta {
        assert!(v.is_string(), "Meta {k:?} is {v}");
        let label = k
            .strip_prefix(render::meta::LABEL_PREFIX)
            .is_some_and(|l| d.labels.as_ref().is_some_and(|m| m.contains_key(l)));
        let annotation = k
            .strip_prefix(render::meta::ANNOTATION_PREFIX)
            .is_some_and(|a| d.annotations.as_ref().is_some_and(|m| m.contains_key(a)));
        let fixed = [
            render::meta::SPEC,
            render::meta::FUNCTION,
            render::meta::NAMESPACE,
            render::meta::GROUP,
        ]
        .contains(&k.as_str());
        assert!(label || annotation || fixed, "Meta key {k:?} from nowhere");
    }
    let task = &job["TaskGroups"][0]["Tasks"][0];
    let env = task["Env"].as_object().expect("Env is an object");
    for (k, v) in env {
        assert!(v.is_string(), "Env {k:?} is {v}");
        let user = d.env_vars.as_ref().is_some_and(|m| m.contains_key(k));
        let ours = [
            render::env::FPROCESS,
            render::env::PORT,
            render::env::BIND_ADDRESS,
        ]
        .contains(&k.as_str())
            // Where a non-docker task finds its secrets, when it has any.
            || (k == render::env::SECRET_MOUNT_PATH && !d.secrets.is_empty());
        assert!(user || ours, "Env key {k:?} from nowhere");
    }
});
