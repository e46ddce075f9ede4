//! Nomad API bodies (v1.4+; shapes per `../shared/fixtures/nomad`).
//!
//! The job itself travels as `serde_json::Value` (rendered from an operator's template, it
//! may hold any field Nomad knows); [`Job`] is the typed view of what faasgate reads back.
//! Every response type is declared with `lenient!` (see [`super`]): any field may be absent
//! or `null`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub type Meta = BTreeMap<String, String>;

lenient! {
    /// `GET /v1/jobs` element.
    pub struct JobListStub {
        #[serde(rename = "ID")]
        pub id: String,
        #[serde(rename = "ParentID")]
        pub parent_id: String,
        pub name: String,
        pub namespace: String,
        pub datacenters: Vec<String>,
        #[serde(rename = "Type")]
        pub kind: String,
        pub priority: i64,
        pub stop: bool,
        pub status: String,
        pub status_description: String,
        pub job_summary: Option<JobSummary>,
        pub create_index: u64,
        pub modify_index: u64,
        pub job_modify_index: u64,
        pub submit_time: i64,
        /// Only with `?meta=true` (Nomad 1.5+).
        pub meta: Option<Meta>,
    }

    /// `GET /v1/job/:id/summary`, and `JobListStub.JobSummary`.
    pub struct JobSummary {
        #[serde(rename = "JobID")]
        pub job_id: String,
        pub namespace: String,
        pub summary: BTreeMap<String, TaskGroupSummary>,
        pub children: Option<JobChildrenSummary>,
        pub create_index: u64,
        pub modify_index: u64,
    }

    pub struct TaskGroupSummary {
        pub queued: i64,
        pub complete: i64,
        pub failed: i64,
        pub running: i64,
        pub starting: i64,
        pub lost: i64,
        pub unknown: i64,
    }

    pub struct JobChildrenSummary {
        pub pending: i64,
        pub running: i64,
        pub dead: i64,
    }

    /// The typed view of `GET /v1/job/:id` (and of `POST /v1/jobs/parse`, job versions).
    pub struct Job {
        #[serde(rename = "ID")]
        pub id: String,
        pub name: String,
        pub namespace: String,
        pub region: String,
        #[serde(rename = "Type")]
        pub kind: String,
        pub priority: i64,
        pub datacenters: Vec<String>,
        pub meta: Meta,
        pub task_groups: Vec<TaskGroup>,
        pub stop: bool,
        pub status: String,
        pub version: u64,
        pub submit_time: i64,
        pub create_index: u64,
        pub modify_index: u64,
        pub job_modify_index: u64,
    }

    pub struct TaskGroup {
        pub name: String,
        /// Absent in a submitted job means 1 (or `Scaling.Min`); the server always fills it.
        pub count: Option<u64>,
        pub services: Vec<Service>,
        pub tasks: Vec<Task>,
        pub meta: Meta,
        /// Nanoseconds.
        pub shutdown_delay: Option<i64>,
    }

    pub struct Task {
        pub name: String,
        pub driver: String,
        pub config: BTreeMap<String, Value>,
        pub env: BTreeMap<String, String>,
        pub services: Vec<Service>,
        pub lifecycle: Option<Value>,
    }

    pub struct Service {
        pub name: String,
        pub port_label: String,
        /// `nomad` or `consul` (the default when empty).
        pub provider: String,
        pub tags: Vec<String>,
    }

    /// Answer of register, update, scale and evaluate (`JobRegisterResponse`).
    pub struct JobRegisterResponse {
        #[serde(rename = "EvalID")]
        pub eval_id: String,
        pub eval_create_index: u64,
        pub job_modify_index: u64,
        pub warnings: String,
        pub index: u64,
        pub last_contact: u64,
        pub known_leader: bool,
    }

    /// Answer of `DELETE /v1/job/:id`.
    pub struct JobDeregisterResponse {
        #[serde(rename = "EvalID")]
        pub eval_id: String,
        pub eval_create_index: u64,
        pub job_modify_index: u64,
        #[serde(rename = "VolumeEvalID")]
        pub volume_eval_id: String,
        pub volume_eval_index: u64,
        pub index: u64,
    }

    /// `POST /v1/job/:id/scale` body (`api.ScalingRequest`). `Error` is a bool on the wire.
    pub struct ScalingRequest {
        #[serde(skip_serializing_if = "Option::is_none")]
        pub count: Option<i64>,
        pub target: ScalingTarget,
        pub message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub meta: Option<BTreeMap<String, Value>>,
        pub error: bool,
        pub policy_override: bool,
    }

    pub struct ScalingTarget {
        pub group: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub job: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub namespace: Option<String>,
    }

    /// `GET /v1/job/:id/scale`. Its `JobModifyIndex` is really the job's `ModifyIndex`.
    pub struct JobScaleStatus {
        #[serde(rename = "JobID")]
        pub job_id: String,
        pub namespace: String,
        pub job_create_index: u64,
        pub job_modify_index: u64,
        pub job_stopped: bool,
        pub task_groups: BTreeMap<String, TaskGroupScaleStatus>,
    }

    pub struct TaskGroupScaleStatus {
        pub desired: i64,
        pub placed: i64,
        pub running: i64,
        pub healthy: i64,
        pub unhealthy: i64,
        pub events: Vec<ScalingEvent>,
    }

    pub struct ScalingEvent {
        pub time: i64,
        pub count: Option<i64>,
        pub previous_count: Option<i64>,
        pub message: String,
        pub error: bool,
        #[serde(rename = "EvalID")]
        pub eval_id: Option<String>,
        pub create_index: u64,
    }

    /// `GET /v1/job/:id/allocations` and `/v1/allocations` element (`AllocListStub`); also the
    /// fields of a full `Allocation` that faasgate reads.
    pub struct Allocation {
        #[serde(rename = "ID")]
        pub id: String,
        #[serde(rename = "EvalID")]
        pub eval_id: String,
        pub name: String,
        pub namespace: String,
        #[serde(rename = "NodeID")]
        pub node_id: String,
        pub node_name: String,
        #[serde(rename = "JobID")]
        pub job_id: String,
        pub job_version: u64,
        pub task_group: String,
        pub desired_status: String,
        pub desired_description: String,
        pub client_status: String,
        pub client_description: String,
        pub task_states: BTreeMap<String, TaskState>,
        pub deployment_status: Option<AllocDeploymentStatus>,
        pub allocated_resources: Option<AllocatedResources>,
        pub create_index: u64,
        pub modify_index: u64,
        pub create_time: i64,
        pub modify_time: i64,
    }

    /// `GET /v1/job/:id/deployment` (the latest; the body is `null` when there is none) and
    /// `GET /v1/deployment/:id`.
    pub struct Deployment {
        #[serde(rename = "ID")]
        pub id: String,
        #[serde(rename = "JobID")]
        pub job_id: String,
        pub job_version: u64,
        pub job_create_index: u64,
        pub task_groups: BTreeMap<String, DeploymentState>,
        /// `running|paused|failed|successful|cancelled|pending|blocked|unblocking|initializing`.
        pub status: String,
        pub status_description: String,
        pub create_index: u64,
        pub modify_index: u64,
    }

    /// One group of a [`Deployment`].
    pub struct DeploymentState {
        pub promoted: bool,
        pub placed_canaries: Vec<String>,
        pub desired_canaries: u64,
        pub desired_total: u64,
        pub placed_allocs: u64,
        pub healthy_allocs: u64,
        pub unhealthy_allocs: u64,
    }

    /// The answer of a deployment promote or fail (`DeploymentUpdateResponse`).
    pub struct DeploymentUpdateResponse {
        #[serde(rename = "EvalID")]
        pub eval_id: String,
        pub deployment_modify_index: u64,
        pub index: u64,
    }

    pub struct TaskState {
        pub state: String,
        pub failed: bool,
        pub restarts: u64,
        /// RFC 3339; `null` or `0001-01-01T00:00:00Z` when unset.
        pub started_at: Option<String>,
        pub finished_at: Option<String>,
        pub events: Vec<TaskEvent>,
    }

    pub struct TaskEvent {
        #[serde(rename = "Type")]
        pub kind: String,
        pub time: i64,
        pub display_message: String,
        pub exit_code: i64,
    }

    pub struct AllocDeploymentStatus {
        pub healthy: Option<bool>,
        pub canary: bool,
        pub modify_index: u64,
    }

    pub struct AllocatedResources {
        pub shared: Option<AllocatedSharedResources>,
    }

    pub struct AllocatedSharedResources {
        pub ports: Vec<AllocatedPort>,
        #[serde(rename = "DiskMB")]
        pub disk_mb: i64,
    }

    /// Dial `HostIP:Value`; `To` is the port inside the task's network namespace.
    pub struct AllocatedPort {
        pub label: String,
        pub value: u16,
        pub to: i64,
        #[serde(rename = "HostIP")]
        pub host_ip: String,
    }

    /// `POST /v1/allocation/:id/stop` answer.
    pub struct AllocStopResponse {
        #[serde(rename = "EvalID")]
        pub eval_id: String,
        pub index: u64,
    }

    /// `GET /v1/allocation/:id/checks` value (the body is a map check ID -> this).
    pub struct AllocCheckStatus {
        #[serde(rename = "ID")]
        pub id: String,
        pub check: String,
        pub group: String,
        pub mode: String,
        pub output: String,
        pub service: String,
        /// `success`, `failure` or `pending`.
        pub status: String,
        pub timestamp: i64,
    }

    /// `GET /v1/service/:name`, `/v1/job/:id/services`, `/v1/allocation/:id/services` element.
    pub struct ServiceRegistration {
        #[serde(rename = "ID")]
        pub id: String,
        pub service_name: String,
        pub namespace: String,
        #[serde(rename = "NodeID")]
        pub node_id: String,
        pub datacenter: String,
        #[serde(rename = "JobID")]
        pub job_id: String,
        #[serde(rename = "AllocID")]
        pub alloc_id: String,
        pub tags: Vec<String>,
        pub address: String,
        pub port: u16,
        pub create_index: u64,
        pub modify_index: u64,
    }

    /// `GET /v1/services` element: one per namespace.
    pub struct ServiceRegistrationListStub {
        pub namespace: String,
        pub services: Vec<ServiceRegistrationStub>,
    }

    pub struct ServiceRegistrationStub {
        pub service_name: String,
        pub tags: Vec<String>,
    }

    /// `GET /v1/evaluation/:id` (diagnostics: why nothing was placed).
    pub struct Evaluation {
        #[serde(rename = "ID")]
        pub id: String,
        #[serde(rename = "JobID")]
        pub job_id: String,
        pub namespace: String,
        #[serde(rename = "Type")]
        pub kind: String,
        pub triggered_by: String,
        /// `pending|complete|blocked|failed|canceled`.
        pub status: String,
        pub status_description: String,
        pub blocked_eval: String,
        /// Placement failures per group (`AllocMetric`, kept opaque).
        #[serde(rename = "FailedTGAllocs")]
        pub failed_tg_allocs: BTreeMap<String, Value>,
        pub queued_allocations: BTreeMap<String, i64>,
        pub related_evals: Vec<Evaluation>,
        pub create_index: u64,
        pub modify_index: u64,
    }

    /// `GET /v1/scaling/policy/:id` and `/v1/scaling/policies` elements.
    pub struct ScalingPolicy {
        #[serde(rename = "ID")]
        pub id: String,
        #[serde(rename = "Type")]
        pub kind: String,
        pub enabled: bool,
        pub min: Option<i64>,
        pub max: Option<i64>,
        pub target: BTreeMap<String, String>,
        pub policy: Option<Value>,
    }

    /// `GET /v1/job/:id/versions` answer.
    pub struct JobVersions {
        pub versions: Vec<Job>,
        pub diffs: Vec<Value>,
        pub index: u64,
    }
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
    pub(crate) fn main_task(&self) -> Option<&Task> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The rule `lenient!` applies to every field: absent or `null` is the zero value; names
    /// are PascalCase unless renamed; optional request fields are left out when unset.
    #[test]
    fn absent_and_null_fields_read_as_zero() {
        let a: Allocation = serde_json::from_value(json!({
            "ID": "a1", "Name": null, "JobVersion": null, "TaskStates": null,
            "DeploymentStatus": null, "ClientStatus": "running"
        }))
        .unwrap();
        assert_eq!(a.id, "a1");
        assert_eq!((a.name.as_str(), a.job_version), ("", 0));
        assert!(a.task_states.is_empty() && a.deployment_status.is_none());
        assert_eq!(a.client_status, "running");
        let g: TaskGroup = serde_json::from_value(json!({"Count": null})).unwrap();
        assert_eq!(g.count, None);
        let g: TaskGroup = serde_json::from_value(json!({"Count": 3})).unwrap();
        assert_eq!(g.count, Some(3));
        let req = ScalingRequest {
            target: ScalingTarget {
                group: "fn".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            json!({"Target": {"Group": "fn"}, "Message": "", "Error": false, "PolicyOverride": false})
        );
    }
}

impl Deployment {
    /// Nomad's `Active()`: not `failed`, `successful` or `cancelled`.
    pub fn is_active(&self) -> bool {
        !matches!(self.status.as_str(), "failed" | "successful" | "cancelled")
    }
}

/// `POST /v1/deployment/promote/:id`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeploymentPromoteRequest {
    #[serde(rename = "DeploymentID")]
    pub deployment_id: String,
    pub all: bool,
}

/// `POST /v1/deployment/fail/:id`.
#[derive(Debug, Clone, Serialize)]
pub struct DeploymentFailRequest {
    #[serde(rename = "DeploymentID")]
    pub deployment_id: String,
}

/// `POST /v1/job/:id/revert`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct JobRevertRequest {
    #[serde(rename = "JobID")]
    pub job_id: String,
    pub job_version: u64,
    /// The revert happens only while the job is still at this version.
    pub enforce_prior_version: Option<u64>,
}
