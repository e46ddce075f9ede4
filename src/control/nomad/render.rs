//! One function deployment -> one Nomad job (the object under `"Job"` in `POST /v1/jobs`).
//!
//! Owns the job template mechanism, the job ID and service name rules, the meta key scheme,
//! and reading a deployment back from a job. Pure: no I/O, no clock, no randomness.
//!
//! ## Templates: user values are always data
//! A template is a JSON job (`{"Job": {...}}` or the bare job object). Wherever a JSON
//! **string value is exactly** a marker such as `"{{faasgate.env}}"`, rendering puts a whole
//! JSON value in its place (a string, number, array or object built with `serde_json`).
//! Rendering is one pass over the *template*: substituted values are never scanned again, no
//! text is ever concatenated into JSON or HCL, so a user value containing `"`, newlines,
//! `${...}`, `[[ ]]`, `{{faasgate.x}}` or a JSON/HCL fragment stays a string. The job's keys
//! come from the template and from fixed code, except inside the data maps `Meta` and `Env`
//! (whose keys are the user's label/annotation/env names). `tests/render.rs` proves this
//! with a property test. A string that merely *contains* `{{faasgate.` (a marker inside a
//! longer string), an object key containing it, or an unknown marker is a template error.
//!
//! | marker | value |
//! |---|---|
//! | `job_id` | [`job_id`] of the function (required, as `Job.ID`) |
//! | `name`, `namespace` | the OpenFaaS name and namespace |
//! | `service_name` | [`service_name`] |
//! | `count` | the group count, a number (required, exactly once, as `TaskGroups[i].Count`) |
//! | `meta` | the job meta object, see below (required, as `Job.Meta`) |
//! | `nomad_namespace`, `region` | from [`RenderOptions`]; the key is **removed** when unset |
//! | `datacenters` | array from [`RenderOptions`]; the key is **removed** when empty (Nomad's default `["*"]`) |
//! | `constraints` | array of Nomad constraints ([`super::constraints`]) |
//! | `driver` | `docker`, `exec` or `raw_exec` (see Drivers) |
//! | `task_config` | the driver config object |
//! | `port_to` | `8080` for docker (the watchdog's port in the container), `0` otherwise |
//! | `env` | the task env object |
//! | `resources` | `{"CPU","MemoryMB"[,"MemoryMaxMB"]}` ([`super::resources`]) |
//! | `service_meta` | `{"faasgate_function": name, "faasgate_namespace": namespace}` (Consul-valid keys) |
//! | `image`, `watchdog_path` | strings |
//! | `templates` | the task's `Templates` array: one per secret (see Secrets); required when the function has secrets |
//!
//! ## Drivers
//! `docker` when the function has an image and no `com.faasgate.driver` annotation: config
//! `{"image", "ports": ["http"], "readonly_rootfs"}`, the dynamic port `http` mapped to 8080.
//! `exec` / `raw_exec` when annotated so, or when the image is empty: config
//! `{"command": <watchdog_path>, "args": ["watchdog"]}`, env `port=${NOMAD_PORT_http}` and
//! `bind_address=${NOMAD_IP_http}` (the port is not mapped: the watchdog binds the host port).
//! `exec` needs the binary inside its chroot (`/usr/local/bin` is, by Nomad's default
//! `chroot_env`).
//!
//! ## Env
//! `envVars`, then `fprocess` = `envProcess` when it is not empty (an image's own `fprocess`
//! is kept otherwise), then the exec port settings. Nomad interpolates `${...}` references to
//! *known* runtime variables (`${NOMAD_...}`, `${attr...}`, `${meta...}`) in task env values
//! when the task starts; that is Nomad's runtime feature, not job structure, and it has no
//! escape syntax, so a user value containing such a reference reaches the process resolved.
//!
//! ## Secrets
//! A function's secrets reach its task as files rendered by Nomad from ONE Variable per
//! function, [`secrets_var_path`] (`faasgate/function-secrets/<service name>`), whose items
//! are secret name → base64 of the value; the provider writes it (`super::provider`). Per
//! secret `<name>` the task gets a template (`Templates[]`, Nomad's JSON field names):
//! `DestPath` `secrets/openfaas/<name>`, `EmbeddedTmpl`
//! `{{ with nomadVar "<path>" }}{{ (index . "<name>").Value | base64Decode }}{{ end }}`
//! (inline, so no newline is added: the file holds the exact bytes), `ChangeMode`
//! `restart`, `Splay` 5 s, `Perms` `0400`, `ErrMissingKey` true. The job holds references
//! only, never a value. docker tasks get a read-only bind `mount` of the task-relative
//! `secrets/openfaas` at `/var/openfaas/secrets`; exec/raw_exec tasks get the env var
//! `secret_mount_path=${NOMAD_SECRETS_DIR}/openfaas` (the name the local provider's folder
//! mode and OpenFaaS's go-sdk use).
//!
//! ## Meta key scheme
//! Nomad job meta is `map[string]string`; its JSON API takes any key (dots and slashes
//! included; only HCL block syntax and the `NOMAD_META_*` env names, which turn characters
//! outside `[A-Za-z0-9_.]` into `_`, are restricted). Keys:
//! - [`meta::SPEC`]: the deployment as JSON, exactly as received ([`spec_from_job`] reads it);
//! - [`meta::FUNCTION`], [`meta::NAMESPACE`]: the key, for `filter` expressions;
//! - [`meta::GROUP`]: the name of the group that runs the function;
//! - [`meta::LABEL_PREFIX`]`<label>` and [`meta::ANNOTATION_PREFIX`]`<annotation>`: each label
//!   and annotation, key kept verbatim behind the prefix. The prefixes make the scheme
//!   injective: no user key can collide with another kind or with a fixed key.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde_json::{json, Map, Value};
use thiserror::Error;

use super::constraints::{self, ConstraintError};
use super::resources::{NomadResources, ResourceError};
use crate::model::names::{FunctionKey, NameError};
use crate::model::scale::ScaleSettings;
use crate::model::types::FunctionDeployment;

/// The default template, shipped as `nomad/function.job.json`.
pub const DEFAULT_TEMPLATE: &str = include_str!("../../../nomad/function.job.json");
/// Job IDs start with this unless configured otherwise.
pub const DEFAULT_JOB_PREFIX: &str = "faasgate-";
/// Where the exec drivers find the faasgate binary unless configured otherwise.
pub const DEFAULT_WATCHDOG_PATH: &str = "/usr/local/bin/faasgate";
/// The annotation that picks a driver: `docker`, `exec` or `raw_exec`.
pub const DRIVER_ANNOTATION: &str = "com.faasgate.driver";
/// The group port label the service and the driver use.
pub(crate) const PORT_LABEL: &str = "http";
/// The watchdog's port inside a container.
pub(crate) const WATCHDOG_PORT: u16 = 8080;
#[cfg(test)]
/// The health check path of the watchdog.
pub(crate) const HEALTH_PATH: &str = "/_/health";

/// Job meta keys (see the module docs).
pub mod meta {
    pub const SPEC: &str = "faasgate.spec";
    pub const FUNCTION: &str = "faasgate.function";
    pub const NAMESPACE: &str = "faasgate.namespace";
    pub const GROUP: &str = "faasgate.group";
    /// When the function was first deployed (RFC 3339), its `createdAt`: set by the
    /// provider at deploy and carried over by updates (Nomad's `SubmitTime` moves with every
    /// scale and update).
    pub const CREATED: &str = "faasgate.created";
    pub const LABEL_PREFIX: &str = "faasgate.label.";
    pub const ANNOTATION_PREFIX: &str = "faasgate.annotation.";
}

/// Where a function's secrets are copied for its task (one Variable per function).
pub const FUNCTION_SECRETS_VAR_PREFIX: &str = "faasgate/function-secrets/";
/// Where secret files appear in an OpenFaaS function's container.
pub const SECRETS_MOUNT_TARGET: &str = "/var/openfaas/secrets";
/// The task-relative directory the templates render into.
pub const SECRETS_TASK_DIR: &str = "secrets/openfaas";
/// How long Nomad waits (at random, up to) before restarting a task on a secret change.
const SECRET_SPLAY_NS: u64 = 5_000_000_000;

/// Service meta keys (Consul accepts only `[A-Za-z0-9_-]` in service meta keys).
pub(crate) mod service_meta {
    pub(crate) const FUNCTION: &str = "faasgate_function";
    pub(crate) const NAMESPACE: &str = "faasgate_namespace";
}

/// Env var names the renderer sets.
pub mod env {
    pub const FPROCESS: &str = "fprocess";
    pub const PORT: &str = "port";
    pub const BIND_ADDRESS: &str = "bind_address";
    /// The directory of the secret files, for exec/raw_exec tasks.
    pub const SECRET_MOUNT_PATH: &str = "secret_mount_path";
    /// `NOMAD_SECRETS_DIR`'s sub-directory the secret templates render into.
    pub(crate) const SECRET_MOUNT_PATH_VALUE: &str = "${NOMAD_SECRETS_DIR}/openfaas";
    /// Nomad's runtime interpolation of the group port and its host IP.
    pub(crate) const NOMAD_PORT_HTTP: &str = "${NOMAD_PORT_http}";
    pub(crate) const NOMAD_IP_HTTP: &str = "${NOMAD_IP_http}";
}

/// How faasgate renders jobs: the operator's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderOptions {
    /// Job IDs are `<job_prefix><name>.<namespace>`.
    pub job_prefix: String,
    /// Empty: omit the field, Nomad applies its default (`["*"]` since 1.5).
    pub datacenters: Vec<String>,
    /// The Nomad namespace for function jobs; `None`: omit (`default`, or the request's).
    pub nomad_namespace: Option<String>,
    /// `None`: omit (the agent's region).
    pub region: Option<String>,
    /// A parsed template ([`parse_template`]); `None`: [`DEFAULT_TEMPLATE`].
    pub template: Option<Value>,
    /// The faasgate binary the `exec`/`raw_exec` drivers run as the watchdog.
    pub watchdog_path: String,
}

/// Why a deployment or a template cannot be rendered. Each message names the field and value.
#[derive(Debug, PartialEq, Error)]
pub enum RenderError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Resources(#[from] ResourceError),
    #[error(transparent)]
    Constraint(#[from] ConstraintError),
    #[error("annotation {DRIVER_ANNOTATION} {0:?} is invalid: expected docker, exec or raw_exec")]
    Driver(String),
    /// The deployment lacks what its driver needs.
    #[error("{0}")]
    Invalid(String),
    /// The template is not usable; the message says where and why.
    #[error("job template: {0}")]
    Template(String),
}

/// The task driver a function runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Docker,
    Exec,
    RawExec,
}

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// Everything a marker can stand for, computed once per render.
struct Values {
    job_id: String,
    key: FunctionKey,
    service_name: String,
    count: u64,
    meta: Map<String, Value>,
    nomad_namespace: Option<String>,
    region: Option<String>,
    datacenters: Vec<String>,
    constraints: Vec<Value>,
    driver: Driver,
    task_config: Value,
    env: Map<String, Value>,
    resources: Value,
    image: String,
    watchdog_path: String,
    templates: Vec<Value>,
}

/// What the walk saw of the required markers.
#[derive(Default)]
struct Seen {
    job_id_at_id: bool,
    meta_at_meta: bool,
    count_group: Option<usize>,
    count_uses: usize,
    templates_uses: usize,
}

static DEFAULT_TEMPLATE_JSON: LazyLock<Value> = LazyLock::new(|| {
    parse_template(DEFAULT_TEMPLATE)
        .expect("nomad/function.job.json is a valid template (checked by a unit test)")
});

// === impl RenderOptions ===

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            job_prefix: DEFAULT_JOB_PREFIX.to_string(),
            datacenters: Vec::new(),
            nomad_namespace: None,
            region: None,
            template: None,
            watchdog_path: DEFAULT_WATCHDOG_PATH.to_string(),
        }
    }
}

// === impl Driver ===

impl Driver {
    /// The driver name Nomad knows.
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Docker => "docker",
            Driver::Exec => "exec",
            Driver::RawExec => "raw_exec",
        }
    }

    /// `com.faasgate.driver` if present, else docker with an image and exec without one.
    pub(crate) fn for_deployment(spec: &FunctionDeployment) -> Result<Self, RenderError> {
        let annotated = spec
            .annotations
            .as_ref()
            .and_then(|a| a.get(DRIVER_ANNOTATION));
        let driver = match annotated.map(|s| s.as_str()) {
            None if spec.image.trim().is_empty() => Driver::Exec,
            None | Some("docker") => Driver::Docker,
            Some("exec") => Driver::Exec,
            Some("raw_exec") => Driver::RawExec,
            Some(other) => return Err(RenderError::Driver(other.to_string())),
        };
        if driver == Driver::Docker && spec.image.trim().is_empty() {
            return Err(RenderError::Invalid(format!(
                "image is required by the docker driver (annotation {DRIVER_ANNOTATION} \
                 exec or raw_exec runs the function without one)"
            )));
        }
        Ok(driver)
    }
}

/// The Job object faasgate registers for `spec` with `count` instances.
pub fn render_job(
    spec: &FunctionDeployment,
    count: u64,
    opts: &RenderOptions,
) -> Result<Value, RenderError> {
    let values = Values::new(spec, count, opts)?;
    let template = opts.template.as_ref().unwrap_or(&DEFAULT_TEMPLATE_JSON);
    let template = job_object(template).ok_or_else(|| {
        RenderError::Template("expected a JSON object (the job, or {\"Job\": job})".into())
    })?;
    let mut seen = Seen::default();
    let mut path = Vec::new();
    let mut job = walk(template, &mut path, &values, &mut seen)?
        .ok_or_else(|| RenderError::Template("the job itself cannot be a marker".into()))?;

    if !seen.job_id_at_id {
        return Err(RenderError::Template(
            "\"ID\" must be the marker \"{{faasgate.job_id}}\"".into(),
        ));
    }
    if !seen.meta_at_meta {
        return Err(RenderError::Template(
            "\"Meta\" must be the marker \"{{faasgate.meta}}\" (faasgate keeps the deployment there)"
                .into(),
        ));
    }
    let group = match (seen.count_uses, seen.count_group) {
        (1, Some(i)) => i,
        _ => {
            return Err(RenderError::Template(
                "\"{{faasgate.count}}\" must appear exactly once, as the \"Count\" of one of \
                 \"TaskGroups\""
                    .into(),
            ))
        }
    };
    let group_name = job["TaskGroups"][group]["Name"]
        .as_str()
        .ok_or_else(|| {
            RenderError::Template(format!("TaskGroups[{group}] needs a string \"Name\""))
        })?
        .to_string();
    if !values.templates.is_empty() && seen.templates_uses == 0 {
        return Err(RenderError::Template(
            "the function has secrets, but no task has \"Templates\": \"{{faasgate.templates}}\" \
             (the secret files are rendered by those templates)"
                .into(),
        ));
    }
    if let Some(Value::Object(m)) = job.get_mut("Meta") {
        m.insert(meta::GROUP.into(), Value::String(group_name));
    }
    Ok(job)
}

/// Parses a template file's text (`{"Job": {...}}` or a bare job) and checks it renders.
pub fn parse_template(text: &str) -> Result<Value, RenderError> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| RenderError::Template(format!("not valid JSON: {e}")))?;
    if job_object(&v).is_none() {
        return Err(RenderError::Template(
            "expected a JSON object (the job, or {\"Job\": job})".into(),
        ));
    }
    Ok(v)
}

/// The count a new function starts with: its `com.openfaas.scale.min` (`model::scale`),
/// else 1.
pub fn initial_count(spec: &FunctionDeployment) -> Result<u64, RenderError> {
    ScaleSettings::parse_deployment(spec)
        .map(|s| s.min)
        .map_err(|e| RenderError::Invalid(e.to_string()))
}

/// Renders a sample function with `opts` so a broken template fails at start, not at the
/// first deploy.
pub(crate) fn check_options(opts: &RenderOptions) -> Result<(), RenderError> {
    let probe = FunctionDeployment {
        service: "probe".into(),
        image: "ghcr.io/openfaas/alpine:latest".into(),
        env_process: "cat".into(),
        ..Default::default()
    };
    render_job(&probe, 1, opts).map(|_| ())
}

/// The Nomad job ID of a function: `<prefix><name>.<namespace>`.
///
/// Injective over (name, namespace) for a fixed prefix: names may contain dots but
/// namespaces may not (see [`crate::model::names`]), so the last dot splits the two unambiguously.
/// Every character of a valid name is valid in a Nomad job ID.
pub fn job_id(prefix: &str, key: &FunctionKey) -> String {
    format!("{prefix}{}.{}", key.name(), key.namespace())
}

/// The catalog service name of a function (Nomad and Consul): `fn-<slug>-<hash>`.
///
/// Nomad requires RFC 1123 labels (`[a-z0-9-]`, at most 63, no dash at either end), which
/// OpenFaaS names (`[-a-zA-Z_0-9.]`, up to 63, plus a namespace) do not satisfy. So:
/// `<slug>` is `<name>-<namespace>` lowercased with every other character turned into `-`,
/// cut to 49 characters; `<hash>` is the first 10 hex digits (40 bits) of the FNV-1a 64-bit
/// hash of `name \0 namespace`. The slug keeps it readable, the hash keeps it unique: two
/// functions share a service name only on a 40-bit hash collision (about 1 in 10^12 for
/// a pair; 5·10^-5 over 10 000 functions). The value is stable across releases.
pub fn service_name(key: &FunctionKey) -> String {
    let mut slug: String = format!("{}-{}", key.name(), key.namespace())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    slug.truncate(49);
    let mut h = Fnv1a::new();
    h.write(key.name().as_bytes());
    h.write(&[0]);
    h.write(key.namespace().as_bytes());
    let hash = format!("{:016x}", h.finish());
    format!("fn-{slug}-{}", &hash[..10])
}

/// The deployment stored in the job's meta (job object, or `{"Job": job}`), exactly as
/// rendered; `None` when the job is not a faasgate function job.
pub fn spec_from_job(job: &Value) -> Option<FunctionDeployment> {
    let s = job_object(job)?.get("Meta")?.get(meta::SPEC)?.as_str()?;
    serde_json::from_str(s).ok()
}

/// The Variable a function's task reads its secrets from (see Secrets in the module doc):
/// keyed by the service name, which is unique per function and a valid Variable path
/// segment (job IDs contain a `.`, which Variable paths do not allow).
pub fn secrets_var_path(key: &FunctionKey) -> String {
    format!("{FUNCTION_SECRETS_VAR_PREFIX}{}", service_name(key))
}

/// The `Templates` entry that writes secret `name` from `var_path` into the task.
fn secret_template(var_path: &str, name: &str) -> Value {
    json!({
        "DestPath": format!("{SECRETS_TASK_DIR}/{name}"),
        "EmbeddedTmpl": format!(
            "{{{{ with nomadVar \"{var_path}\" }}}}{{{{ (index . \"{name}\").Value | base64Decode }}}}{{{{ end }}}}"
        ),
        "ChangeMode": "restart",
        "Splay": SECRET_SPLAY_NS,
        "Perms": "0400",
        "ErrMissingKey": true,
    })
}

/// The secret names of a deployment, sorted, each once.
pub fn secret_names(spec: &FunctionDeployment) -> Vec<String> {
    let mut names = spec.secrets.clone();
    names.sort();
    names.dedup();
    names
}

/// The function key in the job's meta.
pub(crate) fn key_from_job(job: &Value) -> Option<FunctionKey> {
    let m = job_object(job)?.get("Meta")?;
    FunctionKey::new(
        m.get(meta::FUNCTION)?.as_str()?,
        m.get(meta::NAMESPACE)?.as_str()?,
    )
    .ok()
}

/// The name of the group that runs the function (for `POST /v1/job/:id/scale`):
/// [`meta::GROUP`], else the first group's name.
pub(crate) fn group_name(job: &Value) -> Option<String> {
    let job = job_object(job)?;
    if let Some(g) = job
        .get("Meta")
        .and_then(|m| m.get(meta::GROUP))
        .and_then(Value::as_str)
    {
        return Some(g.to_string());
    }
    job.get("TaskGroups")?
        .get(0)?
        .get("Name")?
        .as_str()
        .map(str::to_string)
}

/// The `Count` of the function's group.
pub fn group_count(job: &Value) -> Option<u64> {
    let name = group_name(job)?;
    job_object(job)?
        .get("TaskGroups")?
        .as_array()?
        .iter()
        .find(|g| g.get("Name").and_then(Value::as_str) == Some(name.as_str()))?
        .get("Count")?
        .as_u64()
}

// === impl Values ===

impl Values {
    fn new(
        spec: &FunctionDeployment,
        count: u64,
        opts: &RenderOptions,
    ) -> Result<Self, RenderError> {
        let key = FunctionKey::new(&spec.service, &spec.namespace)?;
        let driver = Driver::for_deployment(spec)?;
        let resources = NomadResources::from_deployment(spec)?.to_json();
        let constraints = constraints::translate_all(&spec.constraints)?
            .iter()
            .map(|c| c.to_json())
            .collect();

        let mut env: Map<String, Value> = spec
            .env_vars
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        if !spec.env_process.is_empty() {
            env.insert(env::FPROCESS.into(), spec.env_process.clone().into());
        }
        let secrets = secret_names(spec);
        for name in &secrets {
            crate::control::secrets::validate_name(name)
                .map_err(|e| RenderError::Invalid(format!("secret {name:?}: {e}")))?;
        }
        let var_path = secrets_var_path(&key);
        let templates: Vec<Value> = secrets
            .iter()
            .map(|n| secret_template(&var_path, n))
            .collect();
        let task_config = match driver {
            Driver::Docker => {
                let mut c = json!({
                    "image": spec.image,
                    "ports": [PORT_LABEL],
                    "readonly_rootfs": spec.read_only_root_filesystem,
                });
                if !secrets.is_empty() {
                    c["mount"] = json!([{
                        "type": "bind",
                        "source": SECRETS_TASK_DIR,
                        "target": SECRETS_MOUNT_TARGET,
                        "readonly": true,
                    }]);
                }
                c
            }
            Driver::Exec | Driver::RawExec => {
                let has_fprocess = env
                    .get(env::FPROCESS)
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.trim().is_empty());
                if !has_fprocess {
                    return Err(RenderError::Invalid(format!(
                        "envProcess is required by the {} driver (the command the watchdog runs)",
                        driver.as_str()
                    )));
                }
                env.insert(env::PORT.into(), env::NOMAD_PORT_HTTP.into());
                env.insert(env::BIND_ADDRESS.into(), env::NOMAD_IP_HTTP.into());
                if !secrets.is_empty() {
                    env.insert(
                        env::SECRET_MOUNT_PATH.into(),
                        env::SECRET_MOUNT_PATH_VALUE.into(),
                    );
                }
                json!({ "command": opts.watchdog_path, "args": ["watchdog"] })
            }
        };

        let spec_json = serde_json::to_string(spec)
            .expect("a FunctionDeployment of strings and maps always serialises");
        let mut meta = Map::new();
        meta.insert(meta::SPEC.into(), spec_json.into());
        meta.insert(meta::FUNCTION.into(), key.name().into());
        meta.insert(meta::NAMESPACE.into(), key.namespace().into());
        prefixed(&mut meta, meta::LABEL_PREFIX, spec.labels.as_ref());
        prefixed(
            &mut meta,
            meta::ANNOTATION_PREFIX,
            spec.annotations.as_ref(),
        );

        Ok(Self {
            job_id: job_id(&opts.job_prefix, &key),
            service_name: service_name(&key),
            key,
            count,
            meta,
            nomad_namespace: opts.nomad_namespace.clone().filter(|s| !s.is_empty()),
            region: opts.region.clone().filter(|s| !s.is_empty()),
            datacenters: opts.datacenters.clone(),
            constraints,
            driver,
            task_config,
            env,
            resources,
            image: spec.image.clone(),
            watchdog_path: opts.watchdog_path.clone(),
            templates,
        })
    }

    /// The value of marker `name`: `Ok(None)` = remove the key.
    fn get(&self, name: &str) -> Result<Option<Value>, RenderError> {
        Ok(Some(match name {
            "job_id" => self.job_id.clone().into(),
            "name" => self.key.name().into(),
            "namespace" => self.key.namespace().into(),
            "service_name" => self.service_name.clone().into(),
            "count" => self.count.into(),
            "meta" => Value::Object(self.meta.clone()),
            "nomad_namespace" => return Ok(self.nomad_namespace.clone().map(Value::String)),
            "region" => return Ok(self.region.clone().map(Value::String)),
            "datacenters" if self.datacenters.is_empty() => return Ok(None),
            "datacenters" => json!(self.datacenters),
            "constraints" => Value::Array(self.constraints.clone()),
            "driver" => self.driver.as_str().into(),
            "task_config" => self.task_config.clone(),
            "port_to" => match self.driver {
                Driver::Docker => WATCHDOG_PORT.into(),
                Driver::Exec | Driver::RawExec => 0.into(),
            },
            "env" => Value::Object(self.env.clone()),
            "resources" => self.resources.clone(),
            "service_meta" => json!({
                service_meta::FUNCTION: self.key.name(),
                service_meta::NAMESPACE: self.key.namespace(),
            }),
            "image" => self.image.clone().into(),
            "watchdog_path" => self.watchdog_path.clone().into(),
            "templates" => Value::Array(self.templates.clone()),
            other => {
                return Err(RenderError::Template(format!(
                    "unknown marker \"{{{{faasgate.{other}}}}}\""
                )))
            }
        }))
    }
}

fn prefixed(meta: &mut Map<String, Value>, prefix: &str, map: Option<&BTreeMap<String, String>>) {
    for (k, v) in map.into_iter().flatten() {
        meta.insert(format!("{prefix}{k}"), Value::String(v.clone()));
    }
}

/// The job object of `{"Job": {...}}` or of a bare job.
fn job_object(v: &Value) -> Option<&Value> {
    match v.get("Job") {
        Some(job @ Value::Object(_)) => Some(job),
        _ if v.is_object() => Some(v),
        _ => None,
    }
}

const MARKER_OPEN: &str = "{{faasgate.";
const MARKER_CLOSE: &str = "}}";

/// The marker name if `s` is exactly `{{faasgate.NAME}}`; an error if `s` contains a marker
/// opening without being one.
fn marker(s: &str, path: &[Seg]) -> Result<Option<String>, RenderError> {
    if !s.contains(MARKER_OPEN) {
        return Ok(None);
    }
    let name = s
        .strip_prefix(MARKER_OPEN)
        .and_then(|r| r.strip_suffix(MARKER_CLOSE))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
    match name {
        Some(n) => Ok(Some(n.to_string())),
        None => Err(RenderError::Template(format!(
            "at {}: {s:?} contains a marker but is not exactly one; markers must be whole \
             string values such as \"{{{{faasgate.env}}}}\"",
            show(path)
        ))),
    }
}

/// Copies `node`, replacing marker strings by values. Substituted values are not visited.
fn walk(
    node: &Value,
    path: &mut Vec<Seg>,
    values: &Values,
    seen: &mut Seen,
) -> Result<Option<Value>, RenderError> {
    match node {
        Value::String(s) => {
            let Some(name) = marker(s, path)? else {
                return Ok(Some(node.clone()));
            };
            match (name.as_str(), path.as_slice()) {
                ("job_id", [Seg::Key(k)]) if k == "ID" => seen.job_id_at_id = true,
                ("meta", [Seg::Key(k)]) if k == "Meta" => seen.meta_at_meta = true,
                ("count", [Seg::Key(tg), Seg::Index(i), Seg::Key(c)])
                    if tg == "TaskGroups" && c == "Count" =>
                {
                    seen.count_uses += 1;
                    seen.count_group = Some(*i);
                }
                ("count", _) => seen.count_uses += 1,
                ("templates", _) => seen.templates_uses += 1,
                _ => {}
            }
            values.get(&name)
        }
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                path.push(Seg::Index(i));
                let v = walk(item, path, values, seen)?;
                let v = v.ok_or_else(|| {
                    RenderError::Template(format!(
                        "at {}: this marker can be unset and so cannot be an array element",
                        show(path)
                    ))
                })?;
                path.pop();
                out.push(v);
            }
            Ok(Some(Value::Array(out)))
        }
        Value::Object(fields) => {
            let mut out = Map::new();
            for (k, v) in fields {
                if k.contains(MARKER_OPEN) {
                    return Err(RenderError::Template(format!(
                        "at {}: key {k:?}: markers are values, never keys",
                        show(path)
                    )));
                }
                path.push(Seg::Key(k.clone()));
                if let Some(v) = walk(v, path, values, seen)? {
                    out.insert(k.clone(), v);
                }
                path.pop();
            }
            Ok(Some(Value::Object(out)))
        }
        other => Ok(Some(other.clone())),
    }
}

fn show(path: &[Seg]) -> String {
    let mut s = String::from("Job");
    for seg in path {
        match seg {
            Seg::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// FNV-1a, 64 bits: tiny, and stable forever (unlike `std`'s `DefaultHasher`).
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::types::FunctionResources;

    fn key(n: &str, ns: &str) -> FunctionKey {
        FunctionKey::new(n, ns).unwrap()
    }

    fn echo() -> FunctionDeployment {
        FunctionDeployment {
            service: "echo".into(),
            image: "ghcr.io/openfaas/alpine:latest".into(),
            env_process: "cat".into(),
            ..Default::default()
        }
    }

    #[test]
    fn default_template_renders() {
        check_options(&RenderOptions::default()).unwrap();
    }

    #[test]
    fn secrets_render_as_templates_and_a_read_only_mount() {
        let spec = FunctionDeployment {
            secrets: vec!["db.password".into(), "api-key".into(), "api-key".into()],
            ..echo()
        };
        let job = render_job(&spec, 1, &RenderOptions::default()).unwrap();
        let task = &job["TaskGroups"][0]["Tasks"][0];
        let var = secrets_var_path(&key("echo", ""));
        assert!(var.starts_with("faasgate/function-secrets/fn-echo-openfaas-fn-"));
        assert_eq!(
            task["Templates"],
            json!([
                {"DestPath": "secrets/openfaas/api-key",
                 "EmbeddedTmpl": format!("{{{{ with nomadVar \"{var}\" }}}}{{{{ (index . \"api-key\").Value | base64Decode }}}}{{{{ end }}}}"),
                 "ChangeMode": "restart", "Splay": 5_000_000_000u64, "Perms": "0400",
                 "ErrMissingKey": true},
                {"DestPath": "secrets/openfaas/db.password",
                 "EmbeddedTmpl": format!("{{{{ with nomadVar \"{var}\" }}}}{{{{ (index . \"db.password\").Value | base64Decode }}}}{{{{ end }}}}"),
                 "ChangeMode": "restart", "Splay": 5_000_000_000u64, "Perms": "0400",
                 "ErrMissingKey": true},
            ])
        );
        // No newline after `{{ end }}`: the file holds the exact bytes.
        assert!(task["Templates"][0]["EmbeddedTmpl"]
            .as_str()
            .unwrap()
            .ends_with("{{ end }}"));
        assert_eq!(
            task["Config"]["mount"],
            json!([{"type": "bind", "source": "secrets/openfaas",
                    "target": "/var/openfaas/secrets", "readonly": true}])
        );
        assert!(task["Env"].get(env::SECRET_MOUNT_PATH).is_none());
        // The variable path is one Nomad accepts (no dot, at most 128 bytes).
        assert!(crate::client::nomad::VarPath::new(var).is_ok());

        // Without secrets: an empty list, no mount.
        let plain = render_job(&echo(), 1, &RenderOptions::default()).unwrap();
        let task = &plain["TaskGroups"][0]["Tasks"][0];
        assert_eq!(task["Templates"], json!([]));
        assert!(task["Config"].get("mount").is_none());
    }

    #[test]
    fn exec_secrets_are_named_in_the_environment() {
        let spec = FunctionDeployment {
            image: String::new(),
            secrets: vec!["a".into()],
            ..echo()
        };
        let job = render_job(&spec, 1, &RenderOptions::default()).unwrap();
        let task = &job["TaskGroups"][0]["Tasks"][0];
        assert_eq!(task["Driver"], "exec");
        assert_eq!(
            task["Env"]["secret_mount_path"],
            "${NOMAD_SECRETS_DIR}/openfaas"
        );
        assert_eq!(task["Templates"][0]["DestPath"], "secrets/openfaas/a");
        assert!(task["Config"].get("mount").is_none());
    }

    #[test]
    fn a_template_without_the_templates_marker_refuses_secrets() {
        let mut t: Value = serde_json::from_str(DEFAULT_TEMPLATE).unwrap();
        t["Job"]["TaskGroups"][0]["Tasks"][0]
            .as_object_mut()
            .unwrap()
            .remove("Templates");
        let opts = RenderOptions {
            template: Some(t),
            ..RenderOptions::default()
        };
        assert!(render_job(&echo(), 1, &opts).is_ok());
        let spec = FunctionDeployment {
            secrets: vec!["a".into()],
            ..echo()
        };
        let e = render_job(&spec, 1, &opts).unwrap_err().to_string();
        assert!(e.contains("faasgate.templates"), "{e}");
    }

    #[test]
    fn job_id_splits_back_on_the_last_dot() {
        assert_eq!(job_id("faasgate-", &key("a.b", "dev")), "faasgate-a.b.dev");
        assert_ne!(
            job_id("p-", &key("a.b", "c")),
            job_id("p-", &key("a", "b_c"))
        );
    }

    #[test]
    fn service_names_are_valid_and_distinct() {
        let valid = |s: &str| {
            s.len() <= 63
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !s.starts_with('-')
                && !s.ends_with('-')
        };
        let keys = [
            key("echo", ""),
            key("Echo", ""),
            key("a-b", "c"),
            key("a", "b-c"),
            key("a.b", "c"),
            key("a_b", "c"),
            key(&"X".repeat(63), &"y".repeat(63)),
            key("-", "_"),
        ];
        let names: Vec<String> = keys.iter().map(service_name).collect();
        for n in &names {
            assert!(valid(n), "{n}");
        }
        let mut dedup = names.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), names.len());
        // Stable across releases: discovery and running jobs depend on it.
        assert_eq!(
            service_name(&key("echo", "")),
            "fn-echo-openfaas-fn-e79a36dd56"
        );
    }

    #[test]
    fn docker_job_has_the_documented_shape() {
        let mut d = echo();
        d.labels = Some([("com.openfaas.scale.min".to_string(), "2".to_string())].into());
        d.annotations = Some([("example.com/team".to_string(), "a\nb".to_string())].into());
        d.limits = Some(FunctionResources {
            memory: "128Mi".into(),
            cpu: "".into(),
        });
        d.constraints = vec!["node.platform.os == linux".into()];
        let opts = RenderOptions {
            datacenters: vec!["dc1".into(), "dc2".into()],
            nomad_namespace: Some("functions".into()),
            ..Default::default()
        };
        let job = render_job(&d, 3, &opts).unwrap();
        assert_eq!(job["ID"], "faasgate-echo.openfaas-fn");
        assert_eq!(job["Type"], "service");
        assert_eq!(job["Namespace"], "functions");
        assert!(job.get("Region").is_none());
        assert_eq!(job["Datacenters"], json!(["dc1", "dc2"]));
        assert_eq!(job["Priority"], 50);
        assert_eq!(job["Update"]["MaxParallel"], 0);
        assert_eq!(
            job["Constraints"],
            json!([{"LTarget": "${attr.kernel.name}", "RTarget": "linux", "Operand": "="}])
        );
        let g = &job["TaskGroups"][0];
        assert_eq!(g["Count"], 3);
        assert_eq!(
            g["Networks"][0]["DynamicPorts"][0],
            json!({"Label": "http", "To": 8080})
        );
        let svc = &g["Services"][0];
        assert_eq!(svc["Name"], service_name(&key("echo", "")));
        assert_eq!(svc["PortLabel"], "http");
        assert_eq!(svc["Provider"], "nomad");
        assert_eq!(svc["Checks"][0]["Path"], HEALTH_PATH);
        assert_eq!(svc["Checks"][0]["Type"], "http");
        let t = &g["Tasks"][0];
        assert_eq!(t["Driver"], "docker");
        assert_eq!(
            t["Config"],
            json!({"image": "ghcr.io/openfaas/alpine:latest", "ports": ["http"], "readonly_rootfs": false})
        );
        assert_eq!(t["Env"], json!({"fprocess": "cat"}));
        assert_eq!(t["Resources"], json!({"CPU": 100, "MemoryMB": 128}));
        let m = &job["Meta"];
        assert_eq!(m["faasgate.label.com.openfaas.scale.min"], "2");
        assert_eq!(m["faasgate.annotation.example.com/team"], "a\nb");
        assert_eq!(m[meta::GROUP], "fn");
        assert_eq!(m[meta::FUNCTION], "echo");
        assert_eq!(m[meta::NAMESPACE], "openfaas-fn");
        assert_eq!(spec_from_job(&job), Some(d.clone()));
        assert_eq!(spec_from_job(&json!({ "Job": job })), Some(d));
        assert_eq!(group_count(&job), Some(3));
        assert_eq!(group_name(&job).as_deref(), Some("fn"));
        assert_eq!(key_from_job(&job), Some(key("echo", "")));
    }

    #[test]
    fn exec_drivers_run_the_watchdog_on_the_host_port() {
        let mut d = echo();
        d.image = String::new();
        let job = render_job(&d, 1, &RenderOptions::default()).unwrap();
        let t = &job["TaskGroups"][0]["Tasks"][0];
        assert_eq!(t["Driver"], "exec");
        assert_eq!(
            t["Config"],
            json!({"command": DEFAULT_WATCHDOG_PATH, "args": ["watchdog"]})
        );
        assert_eq!(
            t["Env"],
            json!({"fprocess": "cat", "port": "${NOMAD_PORT_http}", "bind_address": "${NOMAD_IP_http}"})
        );
        assert_eq!(
            job["TaskGroups"][0]["Networks"][0]["DynamicPorts"][0]["To"],
            0
        );

        let mut d = echo();
        d.annotations = Some([(DRIVER_ANNOTATION.to_string(), "raw_exec".to_string())].into());
        let job = render_job(&d, 1, &RenderOptions::default()).unwrap();
        assert_eq!(job["TaskGroups"][0]["Tasks"][0]["Driver"], "raw_exec");

        d.annotations = Some([(DRIVER_ANNOTATION.to_string(), "podman".to_string())].into());
        assert_eq!(
            render_job(&d, 1, &RenderOptions::default()),
            Err(RenderError::Driver("podman".into()))
        );

        let mut d = echo();
        d.image = String::new();
        d.env_process = String::new();
        let e = render_job(&d, 1, &RenderOptions::default()).unwrap_err();
        assert!(e.to_string().contains("envProcess is required"), "{e}");
    }

    #[test]
    fn invalid_inputs_are_errors_that_name_the_field() {
        let mut d = echo();
        d.limits = Some(FunctionResources {
            memory: "lots".into(),
            cpu: "".into(),
        });
        let e = render_job(&d, 1, &RenderOptions::default()).unwrap_err();
        assert!(e.to_string().contains("limits.memory \"lots\""), "{e}");

        let mut d = echo();
        d.constraints = vec!["where ever".into()];
        let e = render_job(&d, 1, &RenderOptions::default()).unwrap_err();
        assert!(matches!(e, RenderError::Constraint(_)), "{e}");

        let mut d = echo();
        d.service = "a b".into();
        assert!(matches!(
            render_job(&d, 1, &RenderOptions::default()),
            Err(RenderError::Name(_))
        ));
    }

    #[test]
    fn templates_are_checked() {
        let render = |t: Value| {
            let opts = RenderOptions {
                template: Some(t),
                ..Default::default()
            };
            render_job(&echo(), 1, &opts)
        };
        let base = || DEFAULT_TEMPLATE_JSON.clone();

        let mut t = base();
        t["Job"]["Name"] = json!("fn-{{faasgate.name}}");
        let e = render(t).unwrap_err().to_string();
        assert!(
            e.contains("Job.Name") && e.contains("not exactly one"),
            "{e}"
        );

        let mut t = base();
        t["Job"]["Name"] = json!("{{faasgate.nmae}}");
        assert!(render(t)
            .unwrap_err()
            .to_string()
            .contains("unknown marker"));

        let mut t = base();
        t["Job"]["ID"] = json!("fixed");
        assert!(render(t).unwrap_err().to_string().contains("\"ID\""));

        let mut t = base();
        t["Job"]["Meta"] = json!({});
        assert!(render(t).unwrap_err().to_string().contains("\"Meta\""));

        let mut t = base();
        t["Job"]["TaskGroups"][0]["Count"] = json!(1);
        assert!(render(t).unwrap_err().to_string().contains("count"));

        let mut t = base();
        t["Job"]["Priority"] = json!("{{faasgate.count}}");
        assert!(render(t).unwrap_err().to_string().contains("exactly once"));

        let mut t = base();
        t["Job"]["Meta2"] = json!({"{{faasgate.name}}": "x"});
        assert!(render(t).unwrap_err().to_string().contains("never keys"));

        let mut t = base();
        t["Job"]["Datacenters"] = json!(["{{faasgate.region}}"]);
        assert!(render(t).unwrap_err().to_string().contains("array element"));

        // A bare job (no "Job" wrapper) and an operator's own priority work.
        let mut t = base()["Job"].clone();
        t["Priority"] = json!(70);
        assert_eq!(render(t).unwrap()["Priority"], 70);

        assert!(parse_template("[1]").is_err());
        assert!(parse_template("{").is_err());
    }
}
