//! Nomad API bodies (v1.4+; shapes per `../shared/fixtures/nomad`).
//!
//! The job itself travels as `serde_json::Value` (rendered from an operator's template, it
//! may hold any field Nomad knows); [`Job`] is the typed view of what faasgate reads back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::nd;

pub type Meta = BTreeMap<String, String>;

/// `GET /v1/jobs` element.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JobListStub {
    #[serde(rename = "ID", default, deserialize_with = "nd")]
    pub id: String,
    #[serde(rename = "ParentID", default, deserialize_with = "nd")]
    pub parent_id: String,
    #[serde(default, deserialize_with = "nd")]
    pub name: String,
    #[serde(default, deserialize_with = "nd")]
    pub namespace: String,
    #[serde(default, deserialize_with = "nd")]
    pub datacenters: Vec<String>,
    #[serde(rename = "Type", default, deserialize_with = "nd")]
    pub kind: String,
    #[serde(default, deserialize_with = "nd")]
    pub priority: i64,
    #[serde(default, deserialize_with = "nd")]
    pub stop: bool,
    #[serde(default, deserialize_with = "nd")]
    pub status: String,
    #[serde(default, deserialize_with = "nd")]
    pub status_description: String,
    #[serde(default)]
    pub job_summary: Option<JobSummary>,
    #[serde(default, deserialize_with = "nd")]
    pub create_index: u64,
    #[serde(default, deserialize_with = "nd")]
    pub modify_index: u64,
    #[serde(default, deserialize_with = "nd")]
    pub job_modify_index: u64,
    #[serde(default, deserialize_with = "nd")]
    pub submit_time: i64,
    /// Only with `?meta=true` (Nomad 1.5+).
    #[serde(default)]
    pub meta: Option<Meta>,
}

/// `GET /v1/job/:id/summary`, and `JobListStub.JobSummary`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JobSummary {
    #[serde(rename = "JobID", default, deserialize_with = "nd")]
    pub job_id: String,
    #[serde(default, deserialize_with = "nd")]
    pub namespace: String,
    #[serde(default, deserialize_with = "nd")]
    pub summary: BTreeMap<String, TaskGroupSummary>,
    #[serde(default)]
    pub children: Option<JobChildrenSummary>,
    #[serde(default, deserialize_with = "nd")]
    pub create_index: u64,
    #[serde(default, deserialize_with = "nd")]
    pub modify_index: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskGroupSummary {
    #[serde(default, deserialize_with = "nd")]
    pub queued: i64,
    #[serde(default, deserialize_with = "nd")]
    pub complete: i64,
    #[serde(default, deserialize_with = "nd")]
    pub failed: i64,
    #[serde(default, deserialize_with = "nd")]
    pub running: i64,
    #[serde(default, deserialize_with = "nd")]
    pub starting: i64,
    #[serde(default, deserialize_with = "nd")]
    pub lost: i64,
    #[serde(default, deserialize_with = "nd")]
    pub unknown: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JobChildrenSummary {
    #[serde(default, deserialize_with = "nd")]
    pub pending: i64,
    #[serde(default, deserialize_with = "nd")]
    pub running: i64,
    #[serde(default, deserialize_with = "nd")]
    pub dead: i64,
}

/// The typed view of `GET /v1/job/:id` (and of `POST /v1/jobs/parse`, job versions).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Job {
    #[serde(rename = "ID", default, deserialize_with = "nd")]
    pub id: String,
    #[serde(default, deserialize_with = "nd")]
    pub name: String,
    #[serde(default, deserialize_with = "nd")]
    pub namespace: String,
    #[serde(default, deserialize_with = "nd")]
    pub region: String,
    #[serde(rename = "Type", default, deserialize_with = "nd")]
    pub kind: String,
    #[serde(default, deserialize_with = "nd")]
    pub priority: i64,
    #[serde(default, deserialize_with = "nd")]
    pub datacenters: Vec<String>,
    #[serde(default, deserialize_with = "nd")]
    pub meta: Meta,
    #[serde(default, deserialize_with = "nd")]
    pub task_groups: Vec<TaskGroup>,
    #[serde(default, deserialize_with = "nd")]
    pub stop: bool,
    #[serde(default, deserialize_with = "nd")]
    pub status: String,
    #[serde(default, deserialize_with = "nd")]
    pub version: u64,
    #[serde(default, deserialize_with = "nd")]
    pub submit_time: i64,
    #[serde(default, deserialize_with = "nd")]
    pub create_index: u64,
    #[serde(default, deserialize_with = "nd")]
    pub modify_index: u64,
    #[serde(default, deserialize_with = "nd")]
    pub job_modify_index: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskGroup {
    #[serde(default, deserialize_with = "nd")]
    pub name: String,
    /// Absent in a submitted job means 1 (or `Scaling.Min`); the server always fills it.
    #[serde(default)]
    pub count: Option<u64>,
    #[serde(default, deserialize_with = "nd")]
    pub services: Vec<Service>,
    #[serde(default, deserialize_with = "nd")]
    pub tasks: Vec<Task>,
    #[serde(default, deserialize_with = "nd")]
    pub meta: Meta,
    /// Nanoseconds.
    #[serde(default)]
    pub shutdown_delay: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Task {
    #[serde(default, deserialize_with = "nd")]
    pub name: String,
    #[serde(default, deserialize_with = "nd")]
    pub driver: String,
    #[serde(default, deserialize_with = "nd")]
    pub config: BTreeMap<String, Value>,
    #[serde(default, deserialize_with = "nd")]
    pub env: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "nd")]
    pub services: Vec<Service>,
    #[serde(default)]
    pub lifecycle: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Service {
    #[serde(default, deserialize_with = "nd")]
    pub name: String,
    #[serde(default, deserialize_with = "nd")]
    pub port_label: String,
    /// `nomad` or `consul` (the default when empty).
    #[serde(default, deserialize_with = "nd")]
    pub provider: String,
    #[serde(default, deserialize_with = "nd")]
    pub tags: Vec<String>,
}

/// `POST /v1/jobs` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JobRegisterRequest {
    pub job: Value,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enforce_index: bool,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub job_modify_index: u64,
    /// Keep the current group counts of an existing job (an update never resets the count).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preserve_counts: bool,
}

/// Answer of register, update, scale and evaluate (`JobRegisterResponse`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JobRegisterResponse {
    #[serde(rename = "EvalID", default, deserialize_with = "nd")]
    pub eval_id: String,
    #[serde(default, deserialize_with = "nd")]
    pub eval_create_index: u64,
    #[serde(default, deserialize_with = "nd")]
    pub job_modify_index: u64,
    #[serde(default, deserialize_with = "nd")]
    pub warnings: String,
    #[serde(default, deserialize_with = "nd")]
    pub index: u64,
    #[serde(default, deserialize_with = "nd")]
    pub last_contact: u64,
    #[serde(default, deserialize_with = "nd")]
    pub known_leader: bool,
}

/// Answer of `DELETE /v1/job/:id`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JobDeregisterResponse {
    #[serde(rename = "EvalID", default, deserialize_with = "nd")]
    pub eval_id: String,
    #[serde(default, deserialize_with = "nd")]
    pub eval_create_index: u64,
    #[serde(default, deserialize_with = "nd")]
    pub job_modify_index: u64,
    #[serde(rename = "VolumeEvalID", default, deserialize_with = "nd")]
    pub volume_eval_id: String,
    #[serde(default, deserialize_with = "nd")]
    pub volume_eval_index: u64,
    #[serde(default, deserialize_with = "nd")]
    pub index: u64,
}

/// `POST /v1/job/:id/scale` body (`api.ScalingRequest`). `Error` is a bool on the wire.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScalingRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
    #[serde(default, deserialize_with = "nd")]
    pub target: ScalingTarget,
    #[serde(default, deserialize_with = "nd")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<BTreeMap<String, Value>>,
    #[serde(default, deserialize_with = "nd")]
    pub error: bool,
    #[serde(default, deserialize_with = "nd")]
    pub policy_override: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScalingTarget {
    #[serde(default, deserialize_with = "nd")]
    pub group: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `GET /v1/job/:id/scale`. Its `JobModifyIndex` is really the job's `ModifyIndex`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JobScaleStatus {
    #[serde(rename = "JobID", default, deserialize_with = "nd")]
    pub job_id: String,
    #[serde(default, deserialize_with = "nd")]
    pub namespace: String,
    #[serde(default, deserialize_with = "nd")]
    pub job_create_index: u64,
    #[serde(default, deserialize_with = "nd")]
    pub job_modify_index: u64,
    #[serde(default, deserialize_with = "nd")]
    pub job_stopped: bool,
    #[serde(default, deserialize_with = "nd")]
    pub task_groups: BTreeMap<String, TaskGroupScaleStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskGroupScaleStatus {
    #[serde(default, deserialize_with = "nd")]
    pub desired: i64,
    #[serde(default, deserialize_with = "nd")]
    pub placed: i64,
    #[serde(default, deserialize_with = "nd")]
    pub running: i64,
    #[serde(default, deserialize_with = "nd")]
    pub healthy: i64,
    #[serde(default, deserialize_with = "nd")]
    pub unhealthy: i64,
    #[serde(default, deserialize_with = "nd")]
    pub events: Vec<ScalingEvent>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScalingEvent {
    #[serde(default, deserialize_with = "nd")]
    pub time: i64,
    #[serde(default)]
    pub count: Option<i64>,
    #[serde(default)]
    pub previous_count: Option<i64>,
    #[serde(default, deserialize_with = "nd")]
    pub message: String,
    #[serde(default, deserialize_with = "nd")]
    pub error: bool,
    #[serde(rename = "EvalID", default)]
    pub eval_id: Option<String>,
    #[serde(default, deserialize_with = "nd")]
    pub create_index: u64,
}

/// `GET /v1/job/:id/allocations` and `/v1/allocations` element (`AllocListStub`); also the
/// fields of a full `Allocation` that faasgate reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Allocation {
    #[serde(rename = "ID", default, deserialize_with = "nd")]
    pub id: String,
    #[serde(rename = "EvalID", default, deserialize_with = "nd")]
    pub eval_id: String,
    #[serde(default, deserialize_with = "nd")]
    pub name: String,
    #[serde(default, deserialize_with = "nd")]
    pub namespace: String,
    #[serde(rename = "NodeID", default, deserialize_with = "nd")]
    pub node_id: String,
    #[serde(default, deserialize_with = "nd")]
    pub node_name: String,
    #[serde(rename = "JobID", default, deserialize_with = "nd")]
    pub job_id: String,
    #[serde(default, deserialize_with = "nd")]
    pub job_version: u64,
    #[serde(default, deserialize_with = "nd")]
    pub task_group: String,
    #[serde(default, deserialize_with = "nd")]
    pub desired_status: String,
    #[serde(default, deserialize_with = "nd")]
    pub desired_description: String,
    #[serde(default, deserialize_with = "nd")]
    pub client_status: String,
    #[serde(default, deserialize_with = "nd")]
    pub client_description: String,
    #[serde(default, deserialize_with = "nd")]
    pub task_states: BTreeMap<String, TaskState>,
    #[serde(default)]
    pub deployment_status: Option<AllocDeploymentStatus>,
    #[serde(default)]
    pub allocated_resources: Option<AllocatedResources>,
    #[serde(default, deserialize_with = "nd")]
    pub create_index: u64,
    #[serde(default, deserialize_with = "nd")]
    pub modify_index: u64,
    #[serde(default, deserialize_with = "nd")]
    pub create_time: i64,
    #[serde(default, deserialize_with = "nd")]
    pub modify_time: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskState {
    #[serde(default, deserialize_with = "nd")]
    pub state: String,
    #[serde(default, deserialize_with = "nd")]
    pub failed: bool,
    #[serde(default, deserialize_with = "nd")]
    pub restarts: u64,
    /// RFC 3339; `null` or `0001-01-01T00:00:00Z` when unset.
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default, deserialize_with = "nd")]
    pub events: Vec<TaskEvent>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskEvent {
    #[serde(rename = "Type", default, deserialize_with = "nd")]
    pub kind: String,
    #[serde(default, deserialize_with = "nd")]
    pub time: i64,
    #[serde(default, deserialize_with = "nd")]
    pub display_message: String,
    #[serde(default, deserialize_with = "nd")]
    pub exit_code: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AllocDeploymentStatus {
    #[serde(default)]
    pub healthy: Option<bool>,
    #[serde(default, deserialize_with = "nd")]
    pub canary: bool,
    #[serde(default, deserialize_with = "nd")]
    pub modify_index: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AllocatedResources {
    #[serde(default)]
    pub shared: Option<AllocatedSharedResources>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AllocatedSharedResources {
    #[serde(default, deserialize_with = "nd")]
    pub ports: Vec<AllocatedPort>,
    #[serde(rename = "DiskMB", default, deserialize_with = "nd")]
    pub disk_mb: i64,
}

/// Dial `HostIP:Value`; `To` is the port inside the task's network namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AllocatedPort {
    #[serde(default, deserialize_with = "nd")]
    pub label: String,
    #[serde(default, deserialize_with = "nd")]
    pub value: u16,
    #[serde(default, deserialize_with = "nd")]
    pub to: i64,
    #[serde(rename = "HostIP", default, deserialize_with = "nd")]
    pub host_ip: String,
}

/// `POST /v1/allocation/:id/stop` answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AllocStopResponse {
    #[serde(rename = "EvalID", default, deserialize_with = "nd")]
    pub eval_id: String,
    #[serde(default, deserialize_with = "nd")]
    pub index: u64,
}

/// `GET /v1/allocation/:id/checks` value (the body is a map check ID -> this).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AllocCheckStatus {
    #[serde(rename = "ID", default, deserialize_with = "nd")]
    pub id: String,
    #[serde(default, deserialize_with = "nd")]
    pub check: String,
    #[serde(default, deserialize_with = "nd")]
    pub group: String,
    #[serde(default, deserialize_with = "nd")]
    pub mode: String,
    #[serde(default, deserialize_with = "nd")]
    pub output: String,
    #[serde(default, deserialize_with = "nd")]
    pub service: String,
    /// `success`, `failure` or `pending`.
    #[serde(default, deserialize_with = "nd")]
    pub status: String,
    #[serde(default, deserialize_with = "nd")]
    pub timestamp: i64,
}

/// `GET /v1/service/:name`, `/v1/job/:id/services`, `/v1/allocation/:id/services` element.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceRegistration {
    #[serde(rename = "ID", default, deserialize_with = "nd")]
    pub id: String,
    #[serde(default, deserialize_with = "nd")]
    pub service_name: String,
    #[serde(default, deserialize_with = "nd")]
    pub namespace: String,
    #[serde(rename = "NodeID", default, deserialize_with = "nd")]
    pub node_id: String,
    #[serde(default, deserialize_with = "nd")]
    pub datacenter: String,
    #[serde(rename = "JobID", default, deserialize_with = "nd")]
    pub job_id: String,
    #[serde(rename = "AllocID", default, deserialize_with = "nd")]
    pub alloc_id: String,
    #[serde(default, deserialize_with = "nd")]
    pub tags: Vec<String>,
    #[serde(default, deserialize_with = "nd")]
    pub address: String,
    #[serde(default, deserialize_with = "nd")]
    pub port: u16,
    #[serde(default, deserialize_with = "nd")]
    pub create_index: u64,
    #[serde(default, deserialize_with = "nd")]
    pub modify_index: u64,
}

/// `GET /v1/services` element: one per namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceRegistrationListStub {
    #[serde(default, deserialize_with = "nd")]
    pub namespace: String,
    #[serde(default, deserialize_with = "nd")]
    pub services: Vec<ServiceRegistrationStub>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceRegistrationStub {
    #[serde(default, deserialize_with = "nd")]
    pub service_name: String,
    #[serde(default, deserialize_with = "nd")]
    pub tags: Vec<String>,
}

/// `GET /v1/evaluation/:id` (diagnostics: why nothing was placed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Evaluation {
    #[serde(rename = "ID", default, deserialize_with = "nd")]
    pub id: String,
    #[serde(rename = "JobID", default, deserialize_with = "nd")]
    pub job_id: String,
    #[serde(default, deserialize_with = "nd")]
    pub namespace: String,
    #[serde(rename = "Type", default, deserialize_with = "nd")]
    pub kind: String,
    #[serde(default, deserialize_with = "nd")]
    pub triggered_by: String,
    /// `pending|complete|blocked|failed|canceled`.
    #[serde(default, deserialize_with = "nd")]
    pub status: String,
    #[serde(default, deserialize_with = "nd")]
    pub status_description: String,
    #[serde(default, deserialize_with = "nd")]
    pub blocked_eval: String,
    /// Placement failures per group (`AllocMetric`, kept opaque).
    #[serde(rename = "FailedTGAllocs", default, deserialize_with = "nd")]
    pub failed_tg_allocs: BTreeMap<String, Value>,
    #[serde(default, deserialize_with = "nd")]
    pub queued_allocations: BTreeMap<String, i64>,
    #[serde(default, deserialize_with = "nd")]
    pub related_evals: Vec<Evaluation>,
    #[serde(default, deserialize_with = "nd")]
    pub create_index: u64,
    #[serde(default, deserialize_with = "nd")]
    pub modify_index: u64,
}

/// `GET /v1/deployment/:id`, `/v1/job/:id/deployment(s)`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Deployment {
    #[serde(rename = "ID", default, deserialize_with = "nd")]
    pub id: String,
    #[serde(rename = "JobID", default, deserialize_with = "nd")]
    pub job_id: String,
    #[serde(default, deserialize_with = "nd")]
    pub job_version: u64,
    /// Active unless `failed`, `successful` or `cancelled`.
    #[serde(default, deserialize_with = "nd")]
    pub status: String,
    #[serde(default, deserialize_with = "nd")]
    pub status_description: String,
    #[serde(default, deserialize_with = "nd")]
    pub task_groups: BTreeMap<String, DeploymentState>,
    #[serde(default, deserialize_with = "nd")]
    pub create_index: u64,
    #[serde(default, deserialize_with = "nd")]
    pub modify_index: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeploymentState {
    #[serde(default, deserialize_with = "nd")]
    pub desired_total: i64,
    #[serde(default, deserialize_with = "nd")]
    pub placed_allocs: i64,
    #[serde(default, deserialize_with = "nd")]
    pub healthy_allocs: i64,
    #[serde(default, deserialize_with = "nd")]
    pub unhealthy_allocs: i64,
}

/// `GET /v1/scaling/policy/:id` and `/v1/scaling/policies` elements.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScalingPolicy {
    #[serde(rename = "ID", default, deserialize_with = "nd")]
    pub id: String,
    #[serde(rename = "Type", default, deserialize_with = "nd")]
    pub kind: String,
    #[serde(default, deserialize_with = "nd")]
    pub enabled: bool,
    #[serde(default)]
    pub min: Option<i64>,
    #[serde(default)]
    pub max: Option<i64>,
    #[serde(default, deserialize_with = "nd")]
    pub target: BTreeMap<String, String>,
    #[serde(default)]
    pub policy: Option<Value>,
}

/// `GET /v1/job/:id/versions` answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JobVersions {
    #[serde(default, deserialize_with = "nd")]
    pub versions: Vec<Job>,
    #[serde(default, deserialize_with = "nd")]
    pub diffs: Vec<Value>,
    #[serde(default, deserialize_with = "nd")]
    pub index: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

// === impl Job ===

impl Job {
    /// The services of the first group: group-level ones, else those of its tasks.
    pub fn services(&self) -> Vec<&Service> {
        let Some(g) = self.task_groups.first() else {
            return Vec::new();
        };
        if !g.services.is_empty() {
            return g.services.iter().collect();
        }
        g.tasks.iter().flat_map(|t| t.services.iter()).collect()
    }

    /// The main task of the first group (the first that is not a lifecycle hook).
    pub fn main_task(&self) -> Option<&Task> {
        let g = self.task_groups.first()?;
        g.tasks
            .iter()
            .find(|t| matches!(t.lifecycle, None | Some(Value::Null)))
            .or_else(|| g.tasks.first())
    }
}

// === impl Allocation ===

impl Allocation {
    /// Desired to run and not yet terminal on the client.
    pub fn is_live(&self) -> bool {
        self.desired_status == "run" && matches!(self.client_status.as_str(), "pending" | "running")
    }

    /// Nomad's `TerminalStatus`: desired `stop`/`evict`, or `complete`/`failed`/`lost` on the
    /// client (an `unknown` one, on a disconnected client, is not terminal).
    pub fn is_terminal(&self) -> bool {
        matches!(self.desired_status.as_str(), "stop" | "evict")
            || matches!(self.client_status.as_str(), "complete" | "failed" | "lost")
    }
}
