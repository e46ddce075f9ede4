//! The double's deployments: what Nomad does with a task group whose update strategy asks
//! for canaries (`Update.Canary > 0`, `MaxParallel > 0`), which is how faasgate updates a
//! function without a gap (`src/control/nomad/rollout.rs`).
//!
//! Modelled, as Nomad's reconciler and deployment watcher do it:
//! - a destructive change of such a group creates a deployment (`Status` `running`) and
//!   places `Canary` canaries beside the old allocations, which keep running; a newer job
//!   version cancels an active deployment ("Cancelled due to newer version of job"), and the
//!   unpromoted canaries of a cancelled or failed deployment are stopped;
//! - a canary's service registers with the service's `CanaryTags` until it is promoted,
//!   then with its `Tags`;
//! - health: a canary is healthy once its check passes (the double has no
//!   `MinHealthyTime`: faasgate renders 0), unhealthy once its task fails;
//!   `HealthyAllocs`/`UnhealthyAllocs`/`PlacedAllocs`/`PlacedCanaries` follow;
//! - `POST /v1/deployment/promote/:id` (500 with Nomad's text when a canary is not healthy
//!   or the deployment is terminal), after which the old allocations are stopped and the
//!   deployment turns `successful` once `DesiredTotal` are healthy (the job version becomes
//!   `Stable`); `AutoPromote` promotes when every canary is healthy;
//! - `POST /v1/deployment/fail/:id` ("Deployment marked as failed": the canaries stop, the old
//!   allocations keep running);
//! - `POST /v1/job/:id/revert` registers an earlier version's spec as a new version;
//! - `/scale` is refused while the job's latest deployment is active (in `super::scale`).
//!
//! Not modelled: rolling updates without canaries (`Canary: 0` with `MaxParallel > 0`
//! still replaces all allocations at once, with no deployment), `MinHealthyTime`,
//! `HealthyDeadline`/`ProgressDeadline` expiry, and `AutoRevert`; faasgate's rollout uses
//! none of them (it enforces its own deadline and reverts itself).

use super::*;

pub(super) const RUNNING_NEEDS_PROMOTION: &str =
    "Deployment is running but requires manual promotion";
pub(super) const RUNNING_AUTO_PROMOTION: &str = "Deployment is running pending automatic promotion";
pub(super) const RUNNING: &str = "Deployment is running";
pub(super) const SUCCESSFUL: &str = "Deployment completed successfully";
pub(super) const NEWER_JOB: &str = "Cancelled due to newer version of job";
pub(super) const STOPPED_JOB: &str = "Cancelled because job is stopped";
pub(super) const FAILED_BY_USER: &str = "Deployment marked as failed";

/// A group's effective update strategy (group fields over the job's).
#[derive(Debug, Clone, Copy)]
pub(super) struct Strategy {
    pub canary: u64,
    pub auto_promote: bool,
    pub auto_revert: bool,
    pub progress_deadline: u64,
}

/// The canary strategy of `group` in `job`, if it has one.
pub(super) fn canary_strategy(job: &Value, group: &Value) -> Option<Strategy> {
    let field = |k: &str| {
        group["Update"]
            .get(k)
            .filter(|v| !v.is_null())
            .or_else(|| job["Update"].get(k).filter(|v| !v.is_null()))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let max_parallel = field("MaxParallel").as_u64().unwrap_or(1);
    let canary = field("Canary").as_u64().unwrap_or(0);
    (max_parallel > 0 && canary > 0).then(|| Strategy {
        canary,
        auto_promote: field("AutoPromote").as_bool().unwrap_or(false),
        auto_revert: field("AutoRevert").as_bool().unwrap_or(false),
        progress_deadline: field("ProgressDeadline")
            .as_u64()
            .unwrap_or(600_000_000_000),
    })
}

fn active(d: &Value) -> bool {
    !matches!(
        d["Status"].as_str(),
        Some("failed" | "successful" | "cancelled")
    )
}

/// The job's most recent deployment (highest `CreateIndex`).
pub(super) fn latest<'a>(i: &'a Inner, job_id: &str) -> Option<&'a Value> {
    i.deployments
        .values()
        .filter(|d| d["JobID"] == json!(job_id))
        .max_by_key(|d| d["CreateIndex"].as_u64().unwrap_or(0))
}

/// True when `/scale` must be refused: the latest deployment of this job is active.
pub(super) fn blocks_scaling(i: &Inner, job_id: &str, job: &Value) -> bool {
    latest(i, job_id).is_some_and(|d| active(d) && d["JobCreateIndex"] == job["CreateIndex"])
}

fn set_status(i: &mut Inner, id: &str, status: &str, description: &str) {
    let idx = i.bump();
    if let Some(d) = i.deployments.get_mut(id) {
        d["Status"] = json!(status);
        d["StatusDescription"] = json!(description);
        d["ModifyIndex"] = json!(idx);
        d["ModifyTime"] = json!(now_ns());
    }
    i.deploy_idx = idx;
}

/// Cancels the job's active deployments for versions other than `keep_version`.
pub(super) fn cancel_older(i: &mut Inner, job_id: &str, keep_version: Option<u64>, why: &str) {
    let ids: Vec<String> = i
        .deployments
        .values()
        .filter(|d| d["JobID"] == json!(job_id) && active(d))
        .filter(|d| keep_version.is_none_or(|v| d["JobVersion"].as_u64() != Some(v)))
        .filter_map(|d| d["ID"].as_str().map(str::to_string))
        .collect();
    for id in ids {
        set_status(i, &id, "cancelled", why);
    }
}

/// The deployment of the job's current version for `group`: (id, promoted, failed),
/// created when there is none.
pub(super) fn ensure(
    i: &mut Inner,
    job_id: &str,
    job: &Value,
    group: &str,
    s: Strategy,
    count: u64,
) -> (String, bool, bool) {
    let version = job["Version"].as_u64().unwrap_or(0);
    let existing = i
        .deployments
        .values()
        .filter(|d| d["JobID"] == json!(job_id) && d["JobVersion"].as_u64() == Some(version))
        .filter(|d| d["JobCreateIndex"] == job["CreateIndex"])
        .max_by_key(|d| d["CreateIndex"].as_u64().unwrap_or(0));
    if let Some(d) = existing {
        let g = &d["TaskGroups"][group];
        return (
            d["ID"].as_str().unwrap_or("").to_string(),
            g["Promoted"].as_bool().unwrap_or(false),
            d["Status"] == json!("failed"),
        );
    }
    cancel_older(i, job_id, Some(version), NEWER_JOB);
    let idx = i.bump();
    let id = uuid();
    let now = now_ns();
    let description = if s.auto_promote {
        RUNNING_AUTO_PROMOTION
    } else {
        RUNNING_NEEDS_PROMOTION
    };
    i.deployments.insert(
        id.clone(),
        json!({
            "ID": id, "Namespace": job["Namespace"], "JobID": job_id, "JobVersion": version,
            "JobModifyIndex": job["JobModifyIndex"], "JobSpecModifyIndex": job["JobModifyIndex"],
            "JobCreateIndex": job["CreateIndex"], "IsMultiregion": false,
            "TaskGroups": {group: {
                "AutoRevert": s.auto_revert, "AutoPromote": s.auto_promote,
                "ProgressDeadline": s.progress_deadline,
                "RequireProgressBy": rfc3339_at(now + s.progress_deadline as i64),
                "Promoted": false, "PlacedCanaries": [], "DesiredCanaries": s.canary,
                "DesiredTotal": count, "PlacedAllocs": 0, "HealthyAllocs": 0,
                "UnhealthyAllocs": 0}},
            "Status": "running", "StatusDescription": description,
            "CreateIndex": idx, "ModifyIndex": idx, "CreateTime": now, "ModifyTime": now
        }),
    );
    i.deploy_idx = idx;
    (id, false, false)
}

/// True when the job's current version has a deployment.
pub(super) fn exists(i: &Inner, job_id: &str, job: &Value) -> bool {
    i.deployments.values().any(|d| {
        d["JobID"] == json!(job_id)
            && d["JobVersion"] == job["Version"]
            && d["JobCreateIndex"] == job["CreateIndex"]
    })
}

/// Records an allocation placed by deployment `id` (a canary, or one placed after promotion).
pub(super) fn placed(i: &mut Inner, id: &str, group: &str, alloc: &str, canary: bool) {
    let idx = i.bump();
    if let Some(d) = i.deployments.get_mut(id) {
        let g = &mut d["TaskGroups"][group];
        if canary {
            if let Some(list) = g["PlacedCanaries"].as_array_mut() {
                list.push(json!(alloc));
            }
        }
        g["PlacedAllocs"] = json!(g["PlacedAllocs"].as_u64().unwrap_or(0) + 1);
        d["ModifyIndex"] = json!(idx);
    }
    i.deploy_idx = idx;
}

/// Sets a deployment allocation's health once (Nomad records the first verdict), then
/// moves the deployment on: auto-promotion, success.
pub(super) fn record_health(state: &Arc<State>, alloc_id: &str, healthy: bool) {
    let mut promote = None;
    {
        let mut i = state.inner.lock().unwrap();
        let idx = i.bump();
        let Some(a) = i.allocs.get_mut(alloc_id) else {
            return;
        };
        let Some(dep) = a.deployment.clone() else {
            return;
        };
        if a.healthy.is_some() {
            return;
        }
        a.healthy = Some(healthy);
        a.health_time = now_ns();
        a.health_idx = idx;
        a.modify_index = idx;
        let group = a.group.clone();
        i.allocs_idx = idx;
        let Some(d) = i.deployments.get_mut(&dep) else {
            return;
        };
        if !active(d) {
            return;
        }
        let g = &mut d["TaskGroups"][&group];
        let key = if healthy {
            "HealthyAllocs"
        } else {
            "UnhealthyAllocs"
        };
        g[key] = json!(g[key].as_u64().unwrap_or(0) + 1);
        d["ModifyIndex"] = json!(idx);
        i.deploy_idx = idx;
        if healthy {
            let d = &i.deployments[&dep];
            let g = &d["TaskGroups"][&group];
            if g["AutoPromote"].as_bool() == Some(true)
                && g["Promoted"].as_bool() == Some(false)
                && canaries_healthy(&i, &dep)
            {
                promote = Some(dep.clone());
            }
            check_success(&mut i, &dep);
        }
    }
    if let Some(dep) = promote {
        let _ = do_promote(state, &dep);
    }
    state.notify();
}

fn canaries_healthy(i: &Inner, dep: &str) -> bool {
    let d = &i.deployments[dep];
    d["TaskGroups"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(_, g)| {
            let placed: Vec<&str> = g["PlacedCanaries"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let healthy = placed
                .iter()
                .filter(|id| {
                    i.allocs
                        .get(**id)
                        .is_some_and(|a| !a.is_terminal() && a.healthy == Some(true))
                })
                .count() as u64;
            healthy >= g["DesiredCanaries"].as_u64().unwrap_or(0)
        })
}

/// A promoted deployment whose groups have `DesiredTotal` healthy allocations succeeds,
/// and its job version becomes stable.
fn check_success(i: &mut Inner, dep: &str) {
    let Some(d) = i.deployments.get(dep) else {
        return;
    };
    if !active(d) {
        return;
    }
    let done = d["TaskGroups"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(_, g)| {
            g["Promoted"].as_bool() == Some(true)
                && g["HealthyAllocs"].as_u64().unwrap_or(0)
                    >= g["DesiredTotal"].as_u64().unwrap_or(0)
        });
    if !done {
        return;
    }
    let (job_id, version) = (
        d["JobID"].as_str().unwrap_or("").to_string(),
        d["JobVersion"].as_u64(),
    );
    set_status(i, dep, "successful", SUCCESSFUL);
    let idx = i.index;
    if let Some(rec) = i.jobs.get_mut(&job_id) {
        if rec.job["Version"].as_u64() == version {
            rec.job["Stable"] = json!(true);
            rec.job["ModifyIndex"] = json!(idx);
            i.jobs_idx = idx;
        }
    }
}

fn update_response(i: &mut Inner, dep_index: u64) -> Response<Body> {
    let eval = i.next_eval();
    let idx = i.index;
    nomad_index(
        json_resp(&json!({"EvalID": eval, "EvalCreateIndex": idx,
            "DeploymentModifyIndex": dep_index, "RevertedJobVersion": null, "Index": idx,
            "LastContact": 0, "KnownLeader": false})),
        idx,
    )
}

/// Promotes every group of deployment `id` (or the error text Nomad answers).
fn do_promote(state: &Arc<State>, id: &str) -> Result<(u64, String), String> {
    let job_id;
    let dep_index;
    {
        let mut i = state.inner.lock().unwrap();
        let Some(d) = i.deployments.get(id) else {
            return Err(format!(
                "Deployment ID {id:?} couldn't be updated as it does not exist"
            ));
        };
        if !active(d) {
            return Err(format!(
                "Deployment {id:?} has terminal status {:?}:",
                d["Status"].as_str().unwrap_or("")
            ));
        }
        let mut errs = Vec::new();
        let mut have = false;
        for (group, g) in d["TaskGroups"].as_object().into_iter().flatten() {
            for c in g["PlacedCanaries"].as_array().into_iter().flatten() {
                let c = c.as_str().unwrap_or("");
                match i.allocs.get(c) {
                    Some(a) if a.is_terminal() => {}
                    Some(a) if a.healthy == Some(true) => have = true,
                    _ => errs.push(format!(
                        "Canary allocation {c:?} for group {group:?} is not healthy"
                    )),
                }
            }
        }
        if !errs.is_empty() {
            return Err(multierror(&errs));
        }
        if !have {
            return Err("no canaries to promote".into());
        }
        job_id = d["JobID"].as_str().unwrap_or("").to_string();
        let idx = i.bump();
        let d = i.deployments.get_mut(id).unwrap();
        let mut promoted_ids = Vec::new();
        for (_, g) in d["TaskGroups"].as_object_mut().into_iter().flatten() {
            g["Promoted"] = json!(true);
            promoted_ids.extend(
                g["PlacedCanaries"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.as_str().map(str::to_string)),
            );
        }
        d["StatusDescription"] = json!(RUNNING);
        d["ModifyIndex"] = json!(idx);
        i.deploy_idx = idx;
        dep_index = idx;
        // Promoted canaries register with the service's `Tags` from now on.
        for c in &promoted_ids {
            if let Some(a) = i.allocs.get_mut(c) {
                a.promoted = true;
                for s in &mut a.services {
                    s.tags = s.promoted_tags.clone();
                }
            }
        }
        i.services_idx = idx;
        i.consul_idx = idx;
        check_success(&mut i, id);
    }
    schedule(state, &job_id);
    Ok((dep_index, job_id))
}

/// `POST /v1/deployment/promote/:id`.
pub(super) fn promote(state: &Arc<State>, id: &str, body: &Value) -> Response<Body> {
    if body["All"].as_bool() != Some(true) && body["Groups"].as_array().is_none_or(|g| g.is_empty())
    {
        return text(
            StatusCode::BAD_REQUEST,
            "Must provide either All or Groups to promote",
        );
    }
    match do_promote(state, id) {
        Ok((dep_index, _)) => {
            state.notify();
            let mut i = state.inner.lock().unwrap();
            update_response(&mut i, dep_index)
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

/// `POST /v1/deployment/fail/:id`: the unpromoted canaries stop; the old allocations stay.
pub(super) fn fail(state: &Arc<State>, id: &str) -> Response<Body> {
    let job_id;
    let dep_index;
    {
        let mut i = state.inner.lock().unwrap();
        let Some(d) = i.deployments.get(id) else {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("Deployment ID {id:?} couldn't be updated as it does not exist"),
            );
        };
        if !active(d) {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!(
                    "Deployment {id:?} has terminal status {:?}:",
                    d["Status"].as_str().unwrap_or("")
                ),
            );
        }
        job_id = d["JobID"].as_str().unwrap_or("").to_string();
        set_status(&mut i, id, "failed", FAILED_BY_USER);
        dep_index = i.index;
    }
    schedule(state, &job_id);
    state.notify();
    let mut i = state.inner.lock().unwrap();
    update_response(&mut i, dep_index)
}

/// `POST /v1/job/:id/revert` `{JobID, JobVersion, EnforcePriorVersion}`.
pub(super) fn revert(state: &Arc<State>, job_id: &str, body: &Value) -> Response<Body> {
    let Some(version) = body["JobVersion"].as_u64() else {
        return text(
            StatusCode::BAD_REQUEST,
            "json: cannot unmarshal into Go struct field JobRevertRequest.JobVersion of type uint64",
        );
    };
    let spec = {
        let i = state.inner.lock().unwrap();
        let Some(rec) = i.jobs.get(job_id) else {
            return text(StatusCode::NOT_FOUND, "job not found");
        };
        let current = rec.job["Version"].as_u64().unwrap_or(0);
        if let Some(prior) = body["EnforcePriorVersion"].as_u64() {
            if prior != current {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("Current job has version {current}; enforcing version {prior}"),
                );
            }
        }
        if version == current {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "can't revert to current version",
            );
        }
        match rec
            .versions
            .iter()
            .find(|j| j["Version"].as_u64() == Some(version))
        {
            Some(j) => spec_part(j),
            None => {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!(
                        "job {job_id:?} in namespace {:?} at version {version} not found",
                        rec.job["Namespace"].as_str().unwrap_or("default")
                    ),
                )
            }
        }
    };
    register(state, json!({"Job": spec}), &BTreeMap::new(), Some(job_id))
}

/// `GET /v1/job/:id/deployment` (latest, `null` when none) and `/deployments`.
pub(super) async fn job_deployments(
    state: &Arc<State>,
    job_id: &str,
    q: &BTreeMap<String, String>,
    all: bool,
) -> Response<Body> {
    nomad_read(
        state,
        q,
        |i| i.deploy_idx.max(1),
        |i| {
            if all {
                let mut list: Vec<Value> = i
                    .deployments
                    .values()
                    .filter(|d| d["JobID"] == json!(job_id))
                    .cloned()
                    .collect();
                list.sort_by_key(|d| std::cmp::Reverse(d["CreateIndex"].as_u64()));
                Some(Value::Array(list))
            } else {
                Some(latest(i, job_id).cloned().unwrap_or(Value::Null))
            }
        },
    )
    .await
}

/// `GET /v1/deployment/:id`.
pub(super) async fn read(
    state: &Arc<State>,
    id: &str,
    q: &BTreeMap<String, String>,
) -> Response<Body> {
    let found = state.inner.lock().unwrap().deployments.contains_key(id);
    if !found {
        return text(StatusCode::NOT_FOUND, "deployment not found");
    }
    nomad_read(
        state,
        q,
        |i| i.deploy_idx.max(1),
        |i| i.deployments.get(id).cloned(),
    )
    .await
}

/// `GET /v1/deployment/allocations/:id`.
pub(super) async fn allocations(
    state: &Arc<State>,
    id: &str,
    q: &BTreeMap<String, String>,
) -> Response<Body> {
    nomad_read(
        state,
        q,
        |i| i.allocs_idx.max(1),
        |i| {
            let list = i
                .allocs
                .values()
                .filter(|a| a.deployment.as_deref() == Some(id))
                .map(alloc_stub);
            Some(Value::Array(list.collect()))
        },
    )
    .await
}
