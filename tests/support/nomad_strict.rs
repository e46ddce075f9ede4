//! The Nomad API double's strict reading of job registrations and scale requests: what a
//! Nomad 1.11 agent refuses, the double refuses, with Nomad's status and text.
//!
//! Owns three checks, applied by the double at the start of its register
//! (`POST /v1/jobs`, `POST /v1/job/:id`) and scale (`POST /v1/job/:id/scale`) handlers:
//!
//! 1. **Decoding** (400). Nomad's agent decodes the body with Go's `encoding/json` into the
//!    `api` package's structs (`command/agent/http.go` `decodeBody`; `job_endpoint.go`
//!    `jobUpdate` into `api.JobRegisterRequest`, `jobScaleAction` into `api.ScalingRequest`)
//!    and answers a decode error with `CodedError(400, err.Error())`: no prefix. [`SCHEMA`]
//!    mirrors the fields and Go types of `api/jobs.go`, `tasks.go`, `services.go`,
//!    `resources.go` and `constraint.go`; a known key (matched as Go does: exactly, else
//!    ignoring ASCII case) whose JSON value has the wrong kind is refused with Go's text,
//!    `json: cannot unmarshal <kind> into Go struct field <Struct>.<path> of type <type>`,
//!    where `<Struct>` is the innermost Go struct holding the field and `<path>` the field
//!    names from the root, slices and maps adding nothing, an embedded struct adding its
//!    name (Go 1.24+; Nomad 1.11 is built with Go 1.25). Durations (`time.Duration`) are
//!    integers of nanoseconds, so `"5s"` is refused; an integer that does not fit its Go type
//!    (or has a fraction or an exponent) is `number <literal>`. `null` is always accepted and
//!    unknown keys are ignored, as Go does. Driver `Config`, `Connect`, `Periodic.Spec`,
//!    `NUMA`, `CNI`, volume `MountOptions` and scaling `Policy` are opaque here.
//! 2. **Validation** (500, go-multierror text, as `Job.Register` returns it), only for a body
//!    that has a job with an ID (so the double's 400s for a missing job or ID come first):
//!    constraint attributes Nomad 1.11.2+ refuses (`nomad/structs/constraint.go`
//!    `validateConstraintAttribute`: `unsupported attribute "${node.region}"`, wrapped as
//!    `Job.Validate`/`TaskGroup.Validate`/`Task.Validate` wrap it), a negative group `Count`
//!    (`Task group count can't be negative`), and a job whose group counts add up to more
//!    than the server's `job_max_count` ([`JOB_MAX_COUNT`], Nomad's default).
//! 3. **Scale bounds** (400): a scale `Count` above [`JOB_MAX_COUNT`].
//!
//! Limits, stated: the body reaches this module parsed by `serde_json` (objects sorted by
//! key, no arbitrary precision), so when a body has several wrong fields the one named may
//! differ from the one Go names first (Go reports the first in document order), and a
//! non-integer number is spelled as `serde_json` prints it (`1e20`), not as written. The
//! validation errors here are reported on their own, not merged with the double's other
//! validation errors into one list as Nomad would. The exact wording of Nomad's
//! `job_max_count` refusal was not available (see [`job_max_count_message`]).

use std::sync::LazyLock;

use http::StatusCode;
use serde_json::{Map, Value};

/// Nomad's default `job_max_count` (server config; `website/content/docs/configuration/
/// server.mdx`, added by hashicorp/nomad#26858): the most allocations one job may ask for.
pub const JOB_MAX_COUNT: i64 = 50_000;

/// A refusal: the status and the plain-text body Nomad answers with.
pub type Refusal = (StatusCode, String);

/// A Go type, as far as `encoding/json` cares.
enum Ty {
    /// `interface{}` (or a struct not modelled here): anything goes.
    Any,
    Str,
    Bool,
    Int(IntKind),
    /// `[]byte`: a base64 string or an array of bytes.
    Bytes,
    /// A slice, with its Go type name (`[]*api.Constraint`).
    Slice(&'static str, Box<Ty>),
    /// A map with string keys, with its Go type name (`map[string]string`).
    Map(&'static str, Box<Ty>),
    Struct(Struct),
}

#[derive(Clone, Copy)]
enum IntKind {
    /// Go `int` (64 bits on the platforms Nomad ships for).
    Int,
    Int64,
    Int8,
    Uint8,
    Uint64,
    /// `time.Duration`: an int64 of nanoseconds.
    Duration,
}

struct Struct {
    /// The Go type name without the package (`Task`).
    name: &'static str,
    /// Each field's JSON name, behind the embedded struct that holds it when there is one
    /// (`WriteRequest.Region`): Go 1.24+ names embedded structs in the error's field path.
    fields: Vec<(&'static str, Ty)>,
}

struct Ctx {
    /// The innermost struct whose field is being decoded (`""` at the top).
    strukt: &'static str,
    /// The field names from the root.
    stack: Vec<&'static str>,
}

/// `api.JobRegisterRequest` and `api.ScalingRequest`, built once.
static SCHEMA: LazyLock<(Ty, Ty)> = LazyLock::new(|| (register_request(), scaling_request()));

const NODE_TARGETS: [&str; 5] = [
    "${node.unique.id}",
    "${node.datacenter}",
    "${node.unique.name}",
    "${node.class}",
    "${node.pool}",
];
const PREFIX_TARGETS: [&str; 4] = ["${attr.", "${device.", "${meta.", "${device.attr."];

// === the checks ===

/// The register hook: decode errors (400), then, for a job with an ID matching `url_id`,
/// validation errors (500).
pub fn check_register(body: &Value, url_id: Option<&str>) -> Result<(), Refusal> {
    decode(body, &SCHEMA.0).map_err(|m| (StatusCode::BAD_REQUEST, m))?;
    let Some(job) = body.get("Job").filter(|j| j.is_object()) else {
        return Ok(());
    };
    let id = job.get("ID").and_then(Value::as_str).unwrap_or("");
    if id.is_empty() || url_id.is_some_and(|u| u != id) {
        return Ok(());
    }
    let errs = validate_job(job);
    if errs.is_empty() {
        Ok(())
    } else {
        Err((StatusCode::INTERNAL_SERVER_ERROR, multierror(&errs)))
    }
}

/// The scale hook: decode errors, then a `Count` above [`JOB_MAX_COUNT`] (both 400).
pub fn check_scale(body: &Value) -> Result<(), Refusal> {
    decode(body, &SCHEMA.1).map_err(|m| (StatusCode::BAD_REQUEST, m))?;
    match body.get("Count").and_then(Value::as_i64) {
        Some(c) if c > JOB_MAX_COUNT => Err((StatusCode::BAD_REQUEST, job_max_count_message(c))),
        _ => Ok(()),
    }
}

/// Nomad's constraint attribute rule (`nomad/structs/constraint.go`
/// `validateConstraintAttribute`, 1.11.2+): a literal, one of the node fields, or an
/// `attr.`/`device.`/`meta.` reference.
pub fn constraint_attribute_error(target: &str) -> Option<String> {
    if !target.starts_with('$') {
        return None;
    }
    if !target.starts_with("${") {
        return Some(format!(
            "attribute {} is missing an opening brace",
            go_quote(target)
        ));
    }
    if !target.ends_with('}') {
        return Some(format!(
            "attribute {} is missing a closing brace",
            go_quote(target)
        ));
    }
    if NODE_TARGETS.contains(&target) || PREFIX_TARGETS.iter().any(|p| target.starts_with(p)) {
        return None;
    }
    Some(format!("unsupported attribute {}", go_quote(target)))
}

/// The refusal of a job asking for more than `job_max_count` allocations. The wording of
/// Nomad's own message was not found in the sources at hand: tests match on `job_max_count`
/// and the figures only.
pub fn job_max_count_message(total: i64) -> String {
    format!("total count was greater than configured job_max_count: {total} > {JOB_MAX_COUNT}")
}

/// go-multierror's default text (`ListFormatFunc`).
pub fn multierror(errs: &[String]) -> String {
    if errs.len() == 1 {
        return format!("1 error occurred:\n\t* {}\n\n", errs[0]);
    }
    let points: Vec<String> = errs.iter().map(|e| format!("* {e}")).collect();
    format!(
        "{} errors occurred:\n\t{}\n\n",
        errs.len(),
        points.join("\n\t")
    )
}

// === validation ===

fn validate_job(job: &Value) -> Vec<String> {
    let mut errs = constraint_errors(job);
    let mut total: i64 = 0;
    for g in job
        .get("TaskGroups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let mut group_errs = Vec::new();
        // A missing count is 1, or the scaling minimum (`api.TaskGroup.Canonicalize`).
        let count = g.get("Count").and_then(Value::as_i64).unwrap_or_else(|| {
            g.get("Scaling")
                .and_then(|s| s.get("Min"))
                .and_then(Value::as_i64)
                .unwrap_or(1)
        });
        if count < 0 {
            group_errs.push("Task group count can't be negative".to_string());
        }
        total = total.saturating_add(count.max(0));
        group_errs.extend(constraint_errors(g));
        for t in g
            .get("Tasks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let task_errs = constraint_errors(t);
            if !task_errs.is_empty() {
                let name = t.get("Name").and_then(Value::as_str).unwrap_or("");
                group_errs.push(format!(
                    "Task {name} validation failed: {}",
                    multierror(&task_errs)
                ));
            }
        }
        if !group_errs.is_empty() {
            let name = g.get("Name").and_then(Value::as_str).unwrap_or("");
            errs.push(format!(
                "Task group {name} validation failed: {}",
                multierror(&group_errs)
            ));
        }
    }
    if total > JOB_MAX_COUNT {
        errs.push(job_max_count_message(total));
    }
    errs
}

/// `Constraint N validation failed: ...` for each refused constraint of `owner`.
fn constraint_errors(owner: &Value) -> Vec<String> {
    owner
        .get("Constraints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, c)| {
            let target = c.get("LTarget").and_then(Value::as_str).unwrap_or("");
            constraint_attribute_error(target).map(|e| {
                format!(
                    "Constraint {} validation failed: {}",
                    i + 1,
                    multierror(&[e])
                )
            })
        })
        .collect()
}

/// Go's `%q` for the strings constraints hold.
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// === decoding ===

fn decode(body: &Value, ty: &Ty) -> Result<(), String> {
    let mut ctx = Ctx {
        strukt: "",
        stack: Vec::new(),
    };
    walk(body, ty, &mut ctx)
}

fn walk(v: &Value, ty: &Ty, ctx: &mut Ctx) -> Result<(), String> {
    if v.is_null() {
        return Ok(());
    }
    let refuse = |what: String| Err(refusal(&what, ty, ctx));
    match ty {
        Ty::Any => Ok(()),
        Ty::Str => match v {
            Value::String(_) => Ok(()),
            _ => refuse(json_kind(v).to_string()),
        },
        Ty::Bool => match v {
            Value::Bool(_) => Ok(()),
            _ => refuse(json_kind(v).to_string()),
        },
        Ty::Int(k) => match v {
            Value::Number(n) if int_fits(n, *k) => Ok(()),
            Value::Number(n) => refuse(format!("number {n}")),
            _ => refuse(json_kind(v).to_string()),
        },
        Ty::Bytes => match v {
            Value::String(_) => Ok(()),
            Value::Array(items) => {
                let byte = Ty::Int(IntKind::Uint8);
                items.iter().try_for_each(|i| walk(i, &byte, ctx))
            }
            _ => refuse(json_kind(v).to_string()),
        },
        Ty::Slice(_, elem) => match v {
            Value::Array(items) => items.iter().try_for_each(|i| walk(i, elem, ctx)),
            _ => refuse(json_kind(v).to_string()),
        },
        Ty::Map(_, elem) => match v {
            Value::Object(m) => m.values().try_for_each(|i| walk(i, elem, ctx)),
            _ => refuse(json_kind(v).to_string()),
        },
        Ty::Struct(s) => match v {
            Value::Object(m) => walk_struct(m, s, ctx),
            _ => refuse(json_kind(v).to_string()),
        },
    }
}

/// A field's JSON key: its name without the embedded struct in front.
fn json_name(field: &str) -> &str {
    field.rsplit('.').next().unwrap_or(field)
}

fn walk_struct(m: &Map<String, Value>, s: &Struct, ctx: &mut Ctx) -> Result<(), String> {
    for (key, value) in m {
        // Go prefers an exact name, then one equal ignoring case; other keys are ignored.
        let field = s
            .fields
            .iter()
            .find(|(n, _)| json_name(n) == key)
            .or_else(|| {
                s.fields
                    .iter()
                    .find(|(n, _)| json_name(n).eq_ignore_ascii_case(key))
            });
        let Some((name, ty)) = field else { continue };
        let outer = ctx.strukt;
        ctx.strukt = s.name;
        ctx.stack.push(name);
        let r = walk(value, ty, ctx);
        ctx.stack.pop();
        ctx.strukt = outer;
        r?;
    }
    Ok(())
}

/// `encoding/json`'s `UnmarshalTypeError` text.
fn refusal(what: &str, ty: &Ty, ctx: &Ctx) -> String {
    if ctx.strukt.is_empty() && ctx.stack.is_empty() {
        format!(
            "json: cannot unmarshal {what} into Go value of type {}",
            type_name(ty)
        )
    } else {
        format!(
            "json: cannot unmarshal {what} into Go struct field {}.{} of type {}",
            ctx.strukt,
            ctx.stack.join("."),
            type_name(ty)
        )
    }
}

/// The name Go's encoding/json gives a JSON value's kind in its errors (`cannot unmarshal
/// <kind> into ...`); the double and the conformance tests use it too.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_name(ty: &Ty) -> String {
    match ty {
        Ty::Any => "interface {}".into(),
        Ty::Str => "string".into(),
        Ty::Bool => "bool".into(),
        Ty::Bytes => "[]uint8".into(),
        Ty::Int(k) => match k {
            IntKind::Int => "int",
            IntKind::Int64 => "int64",
            IntKind::Int8 => "int8",
            IntKind::Uint8 => "uint8",
            IntKind::Uint64 => "uint64",
            IntKind::Duration => "time.Duration",
        }
        .into(),
        Ty::Slice(n, _) | Ty::Map(n, _) => (*n).into(),
        Ty::Struct(s) => format!("api.{}", s.name),
    }
}

/// Whether Go's `strconv.ParseInt`/`ParseUint` take the number for `k`: an integer literal
/// (serde_json keeps those as i64/u64; a fraction or exponent makes an f64) within range.
fn int_fits(n: &serde_json::Number, k: IntKind) -> bool {
    let v: i128 = if let Some(u) = n.as_u64() {
        i128::from(u)
    } else if let Some(i) = n.as_i64() {
        i128::from(i)
    } else {
        return false;
    };
    let (lo, hi): (i128, i128) = match k {
        IntKind::Int | IntKind::Int64 | IntKind::Duration => {
            (i128::from(i64::MIN), i128::from(i64::MAX))
        }
        IntKind::Int8 => (i128::from(i8::MIN), i128::from(i8::MAX)),
        IntKind::Uint8 => (0, i128::from(u8::MAX)),
        IntKind::Uint64 => (0, i128::from(u64::MAX)),
    };
    (lo..=hi).contains(&v)
}

// === the api structs (Nomad 1.11) ===

fn st(name: &'static str, fields: Vec<(&'static str, Ty)>) -> Ty {
    Ty::Struct(Struct { name, fields })
}
fn slice(name: &'static str, elem: Ty) -> Ty {
    Ty::Slice(name, Box::new(elem))
}
fn map(name: &'static str, elem: Ty) -> Ty {
    Ty::Map(name, Box::new(elem))
}
fn strings() -> Ty {
    slice("[]string", Ty::Str)
}
fn string_map() -> Ty {
    map("map[string]string", Ty::Str)
}
fn any_map() -> Ty {
    map("map[string]interface {}", Ty::Any)
}
const INT: Ty = Ty::Int(IntKind::Int);
const DUR: Ty = Ty::Int(IntKind::Duration);

fn register_request() -> Ty {
    st(
        "JobRegisterRequest",
        vec![
            (
                "Submission",
                st(
                    "JobSubmission",
                    vec![
                        ("Source", Ty::Str),
                        ("Format", Ty::Str),
                        ("VariableFlags", string_map()),
                        ("Variables", Ty::Str),
                    ],
                ),
            ),
            ("Job", job()),
            ("EnforceIndex", Ty::Bool),
            ("JobModifyIndex", Ty::Int(IntKind::Uint64)),
            ("PolicyOverride", Ty::Bool),
            ("PreserveCounts", Ty::Bool),
            ("PreserveResources", Ty::Bool),
            ("EvalPriority", INT),
            ("WriteRequest.Region", Ty::Str),
            ("WriteRequest.Namespace", Ty::Str),
            ("WriteRequest.SecretID", Ty::Str),
        ],
    )
}

fn scaling_request() -> Ty {
    st(
        "ScalingRequest",
        vec![
            ("Count", Ty::Int(IntKind::Int64)),
            ("Target", string_map()),
            ("Error", Ty::Bool),
            ("Message", Ty::Str),
            ("Meta", any_map()),
            ("PolicyOverride", Ty::Bool),
            ("JobModifyIndex", Ty::Int(IntKind::Uint64)),
            ("WriteRequest.Region", Ty::Str),
            ("WriteRequest.Namespace", Ty::Str),
            ("WriteRequest.SecretID", Ty::Str),
        ],
    )
}

fn job() -> Ty {
    st(
        "Job",
        vec![
            ("Region", Ty::Str),
            ("Namespace", Ty::Str),
            ("ID", Ty::Str),
            ("Name", Ty::Str),
            ("Type", Ty::Str),
            ("Priority", INT),
            ("AllAtOnce", Ty::Bool),
            ("Datacenters", strings()),
            ("NodePool", Ty::Str),
            ("Constraints", constraints()),
            ("Affinities", affinities()),
            ("TaskGroups", slice("[]*api.TaskGroup", task_group())),
            ("Update", update_strategy()),
            ("Multiregion", multiregion()),
            ("Spreads", spreads()),
            ("Periodic", periodic()),
            (
                "ParameterizedJob",
                st(
                    "ParameterizedJobConfig",
                    vec![
                        ("Payload", Ty::Str),
                        ("MetaRequired", strings()),
                        ("MetaOptional", strings()),
                    ],
                ),
            ),
            ("Reschedule", reschedule_policy()),
            ("Migrate", migrate_strategy()),
            ("Meta", string_map()),
            ("ConsulToken", Ty::Str),
            ("VaultToken", Ty::Str),
            ("Stop", Ty::Bool),
            ("ParentID", Ty::Str),
            ("Dispatched", Ty::Bool),
            ("DispatchIdempotencyToken", Ty::Str),
            ("Payload", Ty::Bytes),
            ("ConsulNamespace", Ty::Str),
            ("VaultNamespace", Ty::Str),
            ("NomadTokenID", Ty::Str),
            ("Status", Ty::Str),
            ("StatusDescription", Ty::Str),
            ("Stable", Ty::Bool),
            ("Version", Ty::Int(IntKind::Uint64)),
            ("SubmitTime", Ty::Int(IntKind::Int64)),
            ("CreateIndex", Ty::Int(IntKind::Uint64)),
            ("ModifyIndex", Ty::Int(IntKind::Uint64)),
            ("JobModifyIndex", Ty::Int(IntKind::Uint64)),
            (
                "UI",
                st(
                    "JobUIConfig",
                    vec![
                        ("Description", Ty::Str),
                        (
                            "Links",
                            slice(
                                "[]*api.JobUILink",
                                st("JobUILink", vec![("Label", Ty::Str), ("URL", Ty::Str)]),
                            ),
                        ),
                    ],
                ),
            ),
            (
                "VersionTag",
                st(
                    "JobVersionTag",
                    vec![
                        ("Name", Ty::Str),
                        ("Description", Ty::Str),
                        ("TaggedTime", Ty::Int(IntKind::Int64)),
                    ],
                ),
            ),
        ],
    )
}

fn constraints() -> Ty {
    slice(
        "[]*api.Constraint",
        st(
            "Constraint",
            vec![
                ("LTarget", Ty::Str),
                ("RTarget", Ty::Str),
                ("Operand", Ty::Str),
            ],
        ),
    )
}

fn affinities() -> Ty {
    slice(
        "[]*api.Affinity",
        st(
            "Affinity",
            vec![
                ("LTarget", Ty::Str),
                ("RTarget", Ty::Str),
                ("Operand", Ty::Str),
                ("Weight", Ty::Int(IntKind::Int8)),
            ],
        ),
    )
}

fn spreads() -> Ty {
    slice(
        "[]*api.Spread",
        st(
            "Spread",
            vec![
                ("Attribute", Ty::Str),
                ("Weight", Ty::Int(IntKind::Int8)),
                (
                    "SpreadTarget",
                    slice(
                        "[]*api.SpreadTarget",
                        st(
                            "SpreadTarget",
                            vec![("Value", Ty::Str), ("Percent", Ty::Int(IntKind::Uint8))],
                        ),
                    ),
                ),
            ],
        ),
    )
}

fn update_strategy() -> Ty {
    st(
        "UpdateStrategy",
        vec![
            ("Stagger", DUR),
            ("MaxParallel", INT),
            ("HealthCheck", Ty::Str),
            ("MinHealthyTime", DUR),
            ("HealthyDeadline", DUR),
            ("ProgressDeadline", DUR),
            ("Canary", INT),
            ("AutoRevert", Ty::Bool),
            ("AutoPromote", Ty::Bool),
        ],
    )
}

fn migrate_strategy() -> Ty {
    st(
        "MigrateStrategy",
        vec![
            ("MaxParallel", INT),
            ("HealthCheck", Ty::Str),
            ("MinHealthyTime", DUR),
            ("HealthyDeadline", DUR),
        ],
    )
}

fn reschedule_policy() -> Ty {
    st(
        "ReschedulePolicy",
        vec![
            ("Attempts", INT),
            ("Interval", DUR),
            ("Delay", DUR),
            ("DelayFunction", Ty::Str),
            ("MaxDelay", DUR),
            ("Unlimited", Ty::Bool),
        ],
    )
}

fn restart_policy() -> Ty {
    st(
        "RestartPolicy",
        vec![
            ("Interval", DUR),
            ("Attempts", INT),
            ("Delay", DUR),
            ("Mode", Ty::Str),
            ("RenderTemplates", Ty::Bool),
        ],
    )
}

fn multiregion() -> Ty {
    st(
        "Multiregion",
        vec![
            (
                "Strategy",
                st(
                    "MultiregionStrategy",
                    vec![("MaxParallel", INT), ("OnFailure", Ty::Str)],
                ),
            ),
            (
                "Regions",
                slice(
                    "[]*api.MultiregionRegion",
                    st(
                        "MultiregionRegion",
                        vec![
                            ("Name", Ty::Str),
                            ("Count", INT),
                            ("Datacenters", strings()),
                            ("NodePool", Ty::Str),
                            ("Meta", string_map()),
                        ],
                    ),
                ),
            ),
        ],
    )
}

fn periodic() -> Ty {
    st(
        "PeriodicConfig",
        vec![
            ("Enabled", Ty::Bool),
            ("Spec", Ty::Any),
            ("SpecType", Ty::Str),
            ("ProhibitOverlap", Ty::Bool),
            ("TimeZone", Ty::Str),
        ],
    )
}

fn task_group() -> Ty {
    st(
        "TaskGroup",
        vec![
            ("Name", Ty::Str),
            ("Count", INT),
            ("Constraints", constraints()),
            ("Affinities", affinities()),
            ("Tasks", slice("[]*api.Task", task())),
            ("Spreads", spreads()),
            (
                "Volumes",
                map(
                    "map[string]*api.VolumeRequest",
                    st(
                        "VolumeRequest",
                        vec![
                            ("Name", Ty::Str),
                            ("Type", Ty::Str),
                            ("Source", Ty::Str),
                            ("ReadOnly", Ty::Bool),
                            ("Sticky", Ty::Bool),
                            ("AccessMode", Ty::Str),
                            ("AttachmentMode", Ty::Str),
                            ("MountOptions", Ty::Any),
                            ("PerAlloc", Ty::Bool),
                        ],
                    ),
                ),
            ),
            ("RestartPolicy", restart_policy()),
            (
                "Disconnect",
                st(
                    "DisconnectStrategy",
                    vec![
                        ("LostAfter", DUR),
                        ("Replace", Ty::Bool),
                        ("Reconcile", Ty::Str),
                        ("StopOnClientAfter", DUR),
                    ],
                ),
            ),
            ("ReschedulePolicy", reschedule_policy()),
            (
                "EphemeralDisk",
                st(
                    "EphemeralDisk",
                    vec![("Sticky", Ty::Bool), ("Migrate", Ty::Bool), ("SizeMB", INT)],
                ),
            ),
            ("Update", update_strategy()),
            ("Migrate", migrate_strategy()),
            ("Networks", networks()),
            ("Meta", string_map()),
            ("Services", services()),
            ("ShutdownDelay", DUR),
            ("StopAfterClientDisconnect", DUR),
            ("MaxClientDisconnect", DUR),
            ("PreventRescheduleOnLost", Ty::Bool),
            ("Scaling", scaling_policy()),
            ("Consul", consul()),
        ],
    )
}

fn consul() -> Ty {
    st(
        "Consul",
        vec![
            ("Namespace", Ty::Str),
            ("Cluster", Ty::Str),
            ("Partition", Ty::Str),
        ],
    )
}

fn scaling_policy() -> Ty {
    st(
        "ScalingPolicy",
        vec![
            ("ID", Ty::Str),
            ("Namespace", Ty::Str),
            ("Type", Ty::Str),
            ("Target", string_map()),
            ("Min", Ty::Int(IntKind::Int64)),
            ("Max", Ty::Int(IntKind::Int64)),
            ("Policy", any_map()),
            ("Enabled", Ty::Bool),
            ("CreateIndex", Ty::Int(IntKind::Uint64)),
            ("ModifyIndex", Ty::Int(IntKind::Uint64)),
        ],
    )
}

fn networks() -> Ty {
    let port = || {
        slice(
            "[]api.Port",
            st(
                "Port",
                vec![
                    ("Label", Ty::Str),
                    ("Value", INT),
                    ("To", INT),
                    ("HostNetwork", Ty::Str),
                    ("IgnoreCollision", Ty::Bool),
                ],
            ),
        )
    };
    slice(
        "[]*api.NetworkResource",
        st(
            "NetworkResource",
            vec![
                ("Mode", Ty::Str),
                ("Device", Ty::Str),
                ("CIDR", Ty::Str),
                ("IP", Ty::Str),
                (
                    "DNS",
                    st(
                        "DNSConfig",
                        vec![
                            ("Servers", strings()),
                            ("Searches", strings()),
                            ("Options", strings()),
                        ],
                    ),
                ),
                ("ReservedPorts", port()),
                ("DynamicPorts", port()),
                ("Hostname", Ty::Str),
                ("MBits", INT),
                ("CNI", Ty::Any),
            ],
        ),
    )
}

fn check_restart() -> Ty {
    st(
        "CheckRestart",
        vec![("Limit", INT), ("Grace", DUR), ("IgnoreWarnings", Ty::Bool)],
    )
}

fn workload_identity() -> Ty {
    st(
        "WorkloadIdentity",
        vec![
            ("Name", Ty::Str),
            ("Audience", strings()),
            ("ChangeMode", Ty::Str),
            ("ChangeSignal", Ty::Str),
            ("Env", Ty::Bool),
            ("File", Ty::Bool),
            ("Filepath", Ty::Str),
            ("ServiceName", Ty::Str),
            ("TTL", DUR),
        ],
    )
}

fn services() -> Ty {
    slice(
        "[]*api.Service",
        st(
            "Service",
            vec![
                ("Name", Ty::Str),
                ("Tags", strings()),
                ("CanaryTags", strings()),
                ("EnableTagOverride", Ty::Bool),
                ("PortLabel", Ty::Str),
                ("AddressMode", Ty::Str),
                ("Address", Ty::Str),
                ("Checks", slice("[]api.ServiceCheck", service_check())),
                ("CheckRestart", check_restart()),
                ("Connect", Ty::Any),
                ("Meta", string_map()),
                ("CanaryMeta", string_map()),
                ("TaggedAddresses", string_map()),
                ("TaskName", Ty::Str),
                ("OnUpdate", Ty::Str),
                ("Identity", workload_identity()),
                (
                    "Weights",
                    st("ServiceWeights", vec![("Passing", INT), ("Warning", INT)]),
                ),
                ("Provider", Ty::Str),
                ("Cluster", Ty::Str),
            ],
        ),
    )
}

fn service_check() -> Ty {
    st(
        "ServiceCheck",
        vec![
            ("Name", Ty::Str),
            ("Type", Ty::Str),
            ("Command", Ty::Str),
            ("Args", strings()),
            ("Path", Ty::Str),
            ("Protocol", Ty::Str),
            ("PortLabel", Ty::Str),
            ("Expose", Ty::Bool),
            ("AddressMode", Ty::Str),
            ("Advertise", Ty::Str),
            ("Interval", DUR),
            ("Timeout", DUR),
            ("InitialStatus", Ty::Str),
            ("Notes", Ty::Str),
            ("TLSServerName", Ty::Str),
            ("TLSSkipVerify", Ty::Bool),
            ("Header", map("map[string][]string", strings())),
            ("Method", Ty::Str),
            ("CheckRestart", check_restart()),
            ("GRPCService", Ty::Str),
            ("GRPCUseTLS", Ty::Bool),
            ("TaskName", Ty::Str),
            ("SuccessBeforePassing", INT),
            ("FailuresBeforeCritical", INT),
            ("FailuresBeforeWarning", INT),
            ("Body", Ty::Str),
            ("OnUpdate", Ty::Str),
        ],
    )
}

fn task() -> Ty {
    st(
        "Task",
        vec![
            ("Name", Ty::Str),
            ("Driver", Ty::Str),
            ("User", Ty::Str),
            (
                "Lifecycle",
                st(
                    "TaskLifecycle",
                    vec![("Hook", Ty::Str), ("Sidecar", Ty::Bool)],
                ),
            ),
            ("Config", any_map()),
            ("Constraints", constraints()),
            ("Affinities", affinities()),
            ("Env", string_map()),
            ("Services", services()),
            ("Resources", resources()),
            ("RestartPolicy", restart_policy()),
            ("Meta", string_map()),
            ("KillTimeout", DUR),
            (
                "LogConfig",
                st(
                    "LogConfig",
                    vec![
                        ("MaxFiles", INT),
                        ("MaxFileSizeMB", INT),
                        ("Enabled", Ty::Bool),
                        ("Disabled", Ty::Bool),
                    ],
                ),
            ),
            (
                "Artifacts",
                slice(
                    "[]*api.TaskArtifact",
                    st(
                        "TaskArtifact",
                        vec![
                            ("GetterSource", Ty::Str),
                            ("GetterOptions", string_map()),
                            ("GetterHeaders", string_map()),
                            ("GetterMode", Ty::Str),
                            ("GetterInsecure", Ty::Bool),
                            ("RelativeDest", Ty::Str),
                            ("Chown", Ty::Bool),
                        ],
                    ),
                ),
            ),
            (
                "Vault",
                st(
                    "Vault",
                    vec![
                        ("Policies", strings()),
                        ("Role", Ty::Str),
                        ("Namespace", Ty::Str),
                        ("Cluster", Ty::Str),
                        ("Env", Ty::Bool),
                        ("DisableFile", Ty::Bool),
                        ("ChangeMode", Ty::Str),
                        ("ChangeSignal", Ty::Str),
                        ("AllowTokenExpiration", Ty::Bool),
                    ],
                ),
            ),
            ("Consul", consul()),
            ("Templates", slice("[]*api.Template", template())),
            (
                "DispatchPayload",
                st("DispatchPayloadConfig", vec![("File", Ty::Str)]),
            ),
            (
                "VolumeMounts",
                slice(
                    "[]*api.VolumeMount",
                    st(
                        "VolumeMount",
                        vec![
                            ("Volume", Ty::Str),
                            ("Destination", Ty::Str),
                            ("ReadOnly", Ty::Bool),
                            ("PropagationMode", Ty::Str),
                            ("SELinuxLabel", Ty::Str),
                        ],
                    ),
                ),
            ),
            (
                "CSIPluginConfig",
                st(
                    "TaskCSIPluginConfig",
                    vec![
                        ("ID", Ty::Str),
                        ("Type", Ty::Str),
                        ("MountDir", Ty::Str),
                        ("StagePublishBaseDir", Ty::Str),
                        ("HealthTimeout", DUR),
                    ],
                ),
            ),
            ("Leader", Ty::Bool),
            ("ShutdownDelay", DUR),
            ("KillSignal", Ty::Str),
            ("Kind", Ty::Str),
            (
                "ScalingPolicies",
                slice("[]*api.ScalingPolicy", scaling_policy()),
            ),
            ("Identity", workload_identity()),
            (
                "Identities",
                slice("[]*api.WorkloadIdentity", workload_identity()),
            ),
            (
                "Actions",
                slice(
                    "[]*api.Action",
                    st(
                        "Action",
                        vec![("Name", Ty::Str), ("Command", Ty::Str), ("Args", strings())],
                    ),
                ),
            ),
            ("Schedule", Ty::Any),
        ],
    )
}

fn resources() -> Ty {
    st(
        "Resources",
        vec![
            ("CPU", INT),
            ("Cores", INT),
            ("MemoryMB", INT),
            ("MemoryMaxMB", INT),
            ("DiskMB", INT),
            ("Networks", networks()),
            (
                "Devices",
                slice(
                    "[]*api.RequestedDevice",
                    st(
                        "RequestedDevice",
                        vec![
                            ("Name", Ty::Str),
                            ("Count", Ty::Int(IntKind::Uint64)),
                            ("Constraints", constraints()),
                            ("Affinities", affinities()),
                        ],
                    ),
                ),
            ),
            ("NUMA", Ty::Any),
            ("SecretsMB", INT),
            ("IOPS", INT),
        ],
    )
}

fn template() -> Ty {
    st(
        "Template",
        vec![
            ("SourcePath", Ty::Str),
            ("DestPath", Ty::Str),
            ("EmbeddedTmpl", Ty::Str),
            ("ChangeMode", Ty::Str),
            (
                "ChangeScript",
                st(
                    "ChangeScript",
                    vec![
                        ("Command", Ty::Str),
                        ("Args", strings()),
                        ("Timeout", DUR),
                        ("FailOnError", Ty::Bool),
                    ],
                ),
            ),
            ("ChangeSignal", Ty::Str),
            ("Splay", DUR),
            ("Perms", Ty::Str),
            ("Uid", INT),
            ("Gid", INT),
            ("LeftDelim", Ty::Str),
            ("RightDelim", Ty::Str),
            ("Envvars", Ty::Bool),
            ("VaultGrace", DUR),
            ("Wait", st("WaitConfig", vec![("Min", DUR), ("Max", DUR)])),
            ("ErrMissingKey", Ty::Bool),
            ("Once", Ty::Bool),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A small valid registration, in the shape faasgate sends.
    fn body() -> Value {
        json!({"Job": {
            "ID": "fn", "Name": "fn", "Type": "service", "Datacenters": ["*"],
            "Meta": {"faasgate.function": "f"},
            "Constraints": [{"LTarget": "${attr.kernel.name}", "RTarget": "linux", "Operand": "="}],
            "Update": {"MaxParallel": 0},
            "TaskGroups": [{
                "Name": "fn", "Count": 2, "ShutdownDelay": 2_000_000_000u64,
                "RestartPolicy": {"Attempts": 3, "Interval": 300_000_000_000u64, "Delay": 5_000_000_000u64, "Mode": "delay"},
                "Networks": [{"Mode": "host", "DynamicPorts": [{"Label": "http", "To": 8080}]}],
                "Services": [{"Name": "fn", "PortLabel": "http", "Provider": "nomad",
                    "Checks": [{"Type": "http", "Path": "/_/health", "Interval": 5_000_000_000u64, "Timeout": 2_000_000_000u64}]}],
                "Tasks": [{"Name": "fn", "Driver": "docker", "Config": {"image": "x", "ports": ["http"]},
                    "Env": {"a": "b"}, "Resources": {"CPU": 100, "MemoryMB": 128},
                    "KillTimeout": 10_000_000_000u64}]
            }]
        }})
    }

    fn refused(b: &Value) -> Refusal {
        check_register(b, None).expect_err("should be refused")
    }

    #[test]
    fn a_valid_job_is_accepted() {
        assert_eq!(check_register(&body(), None), Ok(()));
        assert_eq!(check_register(&body(), Some("fn")), Ok(()));
    }

    #[test]
    fn a_string_duration_is_refused_with_gos_message() {
        let mut b = body();
        b["Job"]["TaskGroups"][0]["Tasks"][0]["KillTimeout"] = json!("5s");
        assert_eq!(
            refused(&b),
            (
                StatusCode::BAD_REQUEST,
                "json: cannot unmarshal string into Go struct field \
                 Task.Job.TaskGroups.Tasks.KillTimeout of type time.Duration"
                    .into()
            )
        );
        let mut b = body();
        b["Job"]["TaskGroups"][0]["Services"][0]["Checks"][0]["Interval"] = json!("5s");
        assert_eq!(
            refused(&b).1,
            "json: cannot unmarshal string into Go struct field \
             ServiceCheck.Job.TaskGroups.Services.Checks.Interval of type time.Duration"
        );
        let mut b = body();
        b["Job"]["Update"]["MinHealthyTime"] = json!(1.5);
        assert_eq!(
            refused(&b).1,
            "json: cannot unmarshal number 1.5 into Go struct field \
             UpdateStrategy.Job.Update.MinHealthyTime of type time.Duration"
        );
    }

    #[test]
    fn wrong_kinds_are_named_as_go_names_them() {
        let cases = [
            (
                json!({"Job": []}),
                "json: cannot unmarshal array into Go struct field JobRegisterRequest.Job of type api.Job",
            ),
            (
                json!({"Job": {"ID": "x", "TaskGroups": {}}}),
                "json: cannot unmarshal object into Go struct field Job.Job.TaskGroups of type []*api.TaskGroup",
            ),
            (
                json!({"Job": {"ID": "x", "Datacenters": ["a", 1]}}),
                "json: cannot unmarshal number into Go struct field Job.Job.Datacenters of type string",
            ),
            (
                json!({"Job": {"ID": "x", "Meta": {"k": true}}}),
                "json: cannot unmarshal bool into Go struct field Job.Job.Meta of type string",
            ),
            (
                json!({"EnforceIndex": "yes"}),
                "json: cannot unmarshal string into Go struct field JobRegisterRequest.EnforceIndex of type bool",
            ),
            (
                json!({"Job": {"ID": "x", "TaskGroups": [{"Networks": [{"DynamicPorts": [{"To": "8080"}]}]}]}}),
                "json: cannot unmarshal string into Go struct field Port.Job.TaskGroups.Networks.DynamicPorts.To of type int",
            ),
            (
                json!([1]),
                "json: cannot unmarshal array into Go value of type api.JobRegisterRequest",
            ),
            (
                json!({"Region": 1}),
                "json: cannot unmarshal number into Go struct field JobRegisterRequest.WriteRequest.Region of type string",
            ),
        ];
        for (b, msg) in cases {
            assert_eq!(
                refused(&b),
                (StatusCode::BAD_REQUEST, msg.to_string()),
                "{b}"
            );
        }
    }

    #[test]
    fn keys_match_as_go_matches_them_and_unknown_ones_are_ignored() {
        let mut b = body();
        b["Job"]["NotANomadField"] = json!({"anything": [1, "x"]});
        b["Job"]["TaskGroups"][0]["Tasks"][0]["Config"]["nested"] = json!({"a": [1]});
        assert_eq!(check_register(&b, None), Ok(()));
        // `killtimeout` is `KillTimeout` to Go.
        let mut b = body();
        b["Job"]["TaskGroups"][0]["Tasks"][0]["killtimeout"] = json!("5s");
        assert!(refused(&b)
            .1
            .ends_with("Tasks.KillTimeout of type time.Duration"));
        // null is always accepted.
        let mut b = body();
        b["Job"]["TaskGroups"][0]["Count"] = Value::Null;
        b["Job"]["Update"] = Value::Null;
        assert_eq!(check_register(&b, None), Ok(()));
    }

    #[test]
    fn a_count_out_of_gos_range_is_refused() {
        for (count, lit) in [
            (json!(9_223_372_036_854_775_808u64), "9223372036854775808"),
            (json!(2.5), "2.5"),
        ] {
            let mut b = body();
            b["Job"]["TaskGroups"][0]["Count"] = count;
            assert_eq!(
                refused(&b),
                (
                    StatusCode::BAD_REQUEST,
                    format!(
                        "json: cannot unmarshal number {lit} into Go struct field \
                         TaskGroup.Job.TaskGroups.Count of type int"
                    )
                )
            );
        }
    }

    #[test]
    fn a_negative_count_fails_validation() {
        let mut b = body();
        b["Job"]["TaskGroups"][0]["Count"] = json!(-1);
        assert_eq!(
            refused(&b),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "1 error occurred:\n\t* Task group fn validation failed: 1 error occurred:\n\t\
                 * Task group count can't be negative\n\n\n\n"
                    .into()
            )
        );
    }

    #[test]
    fn a_count_above_job_max_count_fails_validation() {
        let mut b = body();
        b["Job"]["TaskGroups"][0]["Count"] = json!(JOB_MAX_COUNT);
        assert_eq!(check_register(&b, None), Ok(()));
        b["Job"]["TaskGroups"][0]["Count"] = json!(JOB_MAX_COUNT + 1);
        let (status, msg) = refused(&b);
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            msg.contains("job_max_count") && msg.contains("50001 > 50000"),
            "{msg}"
        );
    }

    #[test]
    fn an_unsupported_constraint_attribute_fails_validation() {
        let mut b = body();
        b["Job"]["Constraints"][0]["LTarget"] = json!("${node.region}");
        assert_eq!(
            refused(&b),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "1 error occurred:\n\t* Constraint 1 validation failed: 1 error occurred:\n\t\
                 * unsupported attribute \"${node.region}\"\n\n\n\n"
                    .into()
            )
        );
        // Group and task constraints are wrapped as Nomad wraps them.
        let mut b = body();
        b["Job"]["TaskGroups"][0]["Tasks"][0]["Constraints"] =
            json!([{"LTarget": "${env.PATH}", "Operand": "is_set"}]);
        let msg = refused(&b).1;
        assert!(
            msg.starts_with("1 error occurred:\n\t* Task group fn validation failed: 1 error occurred:\n\t* Task fn validation failed: 1 error occurred:\n\t* Constraint 1 validation failed:"),
            "{msg}"
        );
        assert!(
            msg.contains("unsupported attribute \"${env.PATH}\""),
            "{msg}"
        );
        // No validation before the double's own 400s: no ID, or an ID the URL does not name.
        let mut b = body();
        b["Job"]["Constraints"][0]["LTarget"] = json!("${node.region}");
        assert_eq!(check_register(&b, Some("other")), Ok(()));
        b["Job"]["ID"] = json!("");
        assert_eq!(check_register(&b, None), Ok(()));
    }

    #[test]
    fn constraint_attributes_follow_nomads_rule() {
        for ok in [
            "",
            "literal",
            "${node.unique.id}",
            "${node.datacenter}",
            "${node.unique.name}",
            "${node.class}",
            "${node.pool}",
            "${attr.kernel.name}",
            "${meta.zone}",
            "${device.model}",
            "${device.attr.memory}",
        ] {
            assert_eq!(constraint_attribute_error(ok), None, "{ok}");
        }
        for (bad, msg) in [
            ("${node.region}", "unsupported attribute \"${node.region}\""),
            ("${node.pool.}", "unsupported attribute \"${node.pool.}\""),
            ("${}", "unsupported attribute \"${}\""),
            (
                "$attr.x",
                "attribute \"$attr.x\" is missing an opening brace",
            ),
            (
                "${node.datacenter",
                "attribute \"${node.datacenter\" is missing a closing brace",
            ),
        ] {
            assert_eq!(constraint_attribute_error(bad).as_deref(), Some(msg));
        }
    }

    #[test]
    fn scale_requests_are_decoded_and_bounded() {
        assert_eq!(
            check_scale(&json!({"Count": 3, "Target": {"Group": "fn"}, "Error": false})),
            Ok(())
        );
        assert_eq!(
            check_scale(&json!({"Count": "3"})),
            Err((
                StatusCode::BAD_REQUEST,
                "json: cannot unmarshal string into Go struct field ScalingRequest.Count of type int64"
                    .into()
            ))
        );
        assert_eq!(
            check_scale(&json!({"Count": 9_223_372_036_854_775_808u64})).map_err(|r| r.1),
            Err(
                "json: cannot unmarshal number 9223372036854775808 into Go struct field \
                 ScalingRequest.Count of type int64"
                    .into()
            )
        );
        assert_eq!(check_scale(&json!({"Count": JOB_MAX_COUNT})), Ok(()));
        let (status, msg) = check_scale(&json!({"Count": JOB_MAX_COUNT + 1})).unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(msg.contains("job_max_count"), "{msg}");
    }
}
