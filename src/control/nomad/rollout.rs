//! Function updates on Nomad without a gap: a blue/green Nomad deployment whose switch the
//! gateway makes.
//!
//! Why Nomad deployments (and not a second job the gateway switches to): the job ID, its
//! service, its scaling events and its ACL policy stay those of the function; Nomad itself
//! places the new version beside the old one, checks its health and keeps the record
//! (`nomad job status`, `GET /v1/job/:id/deployment`) that outlives any gateway. What Nomad
//! does not do is route: that is the gateway's part, so the switch is made here.
//!
//! How (`NomadProvider::update` starts it; [`Rollout::run`] drives it):
//! 1. The new version is registered with a group update strategy of `Canary` = `MaxParallel`
//!    = the current count, `AutoPromote` false, `HealthCheck` `checks` ([`canary_update`]):
//!    Nomad places that many canaries and leaves the old allocations running. Canaries
//!    register with `CanaryTags` (the service's tags plus [`CANARY_TAG`]), which discovery
//!    keeps out of rotation: every gateway keeps serving the old version.
//! 2. Once Nomad counts every canary healthy and this gateway has found them ready (its own
//!    probe), the switch: canaries are admitted, the old allocations are drained here and at
//!    the other gateways (in-flight requests finish, bounded by the drain timeout), and only
//!    then is the deployment promoted; Nomad stops the old allocations, and the deployment
//!    succeeds when the canaries are healthy. The other gateways route to the new version when
//!    Nomad re-registers the promoted canaries without the marker (they hold requests, never
//!    fail them, for that moment).
//! 3. Not ready by the deadline (`--nomad-update-deadline`, default 5 minutes): the deployment
//!    is failed (Nomad stops the canaries; the old allocations never stopped serving) and the
//!    job is reverted to the version that was serving (`/revert` with
//!    `EnforcePriorVersion`, so a newer update is never undone). The reason, the canaries' last
//!    task event, is the function's `update` status.
//! 4. After success the job is registered once more without the canary strategy: with one,
//!    every later scale would start a deployment and Nomad would refuse the next scale until
//!    it ends ("job scaling blocked due to active deployment").
//!
//! Scaling during an update: Nomad refuses `/scale` while the deployment is active, so the
//! provider keeps the latest count asked for and applies it when the rollout ends (success
//! or failure): a count decided mid-update is what the function runs with after it.
//!
//! A gateway that starts tracking a function whose update deployment is open follows it too
//! (`NomadProvider::resume_rollout`), so an update outlives the gateway that began it; one
//! Nomad failed while no gateway watched is reverted then.
//!
//! A newer update of the same function supersedes the rollout (Nomad cancels the
//! deployment); the newer one reverts, if it fails, to the version that was serving before
//! both.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::provider::wait_idle;
use crate::client::wire::nomad::{Allocation, Deployment};
use crate::client::{NomadClient, QueryOptions};
use crate::control::cluster::Cluster;
use crate::discovery::{Publisher, CANARY_TAG};
use crate::model::names::FunctionKey;

/// How long one deployment read is held (a blocking query) before the deadline is checked.
const POLL_WAIT: Duration = Duration::from_secs(2);
/// Pause after a failed read or a refused promotion.
const RETRY: Duration = Duration::from_millis(250);

/// The group update strategy an update registers with: every replica gets a canary.
pub(crate) fn canary_update(count: u64, deadline: Duration) -> Value {
    let deadline_ns = deadline.as_nanos() as u64;
    json!({
        "MaxParallel": count,
        "Canary": count,
        "AutoPromote": false,
        "AutoRevert": false,
        "HealthCheck": "checks",
        "MinHealthyTime": 0,
        // Nomad requires HealthyDeadline < ProgressDeadline; Nomad's own deadline is a
        // backstop a minute after the gateway's (a gateway that died mid-update).
        "HealthyDeadline": deadline_ns,
        "ProgressDeadline": deadline_ns + 60_000_000_000,
        "Stagger": 30_000_000_000u64,
    })
}

/// Sets `update` as the update strategy of every group of `job` (`None`: removes it, the
/// template's job-level strategy applies again).
pub(crate) fn set_group_update(job: &mut Value, update: Option<&Value>) {
    for g in job["TaskGroups"].as_array_mut().into_iter().flatten() {
        if let Some(o) = g.as_object_mut() {
            match update {
                Some(u) => {
                    o.insert("Update".into(), u.clone());
                }
                None => {
                    o.remove("Update");
                }
            }
        }
    }
}

/// Gives every service of `job` `CanaryTags` = its `Tags` plus [`CANARY_TAG`].
pub(crate) fn add_canary_tags(job: &mut Value) {
    for g in job["TaskGroups"].as_array_mut().into_iter().flatten() {
        for s in g["Services"].as_array_mut().into_iter().flatten() {
            let mut tags: Vec<Value> = s["Tags"].as_array().cloned().unwrap_or_default();
            tags.push(json!(CANARY_TAG));
            s["CanaryTags"] = Value::Array(tags);
        }
    }
}

/// How a rollout ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The new version serves; the old one is stopped.
    Promoted,
    /// The new version was abandoned; the old one serves (reverted to `from`).
    Failed(String),
    /// A newer update (or a delete) took over.
    Superseded,
}

/// One update's deployment, driven to its end.
pub(crate) struct Rollout {
    pub nomad: Arc<NomadClient>,
    pub publisher: Arc<Publisher>,
    pub cluster: Arc<Cluster>,
    pub key: FunctionKey,
    pub job_id: String,
    /// The version serving before the update (what a failure reverts to).
    pub from: u64,
    /// The version registered by the update.
    pub to: u64,
    pub deadline: Duration,
    pub drain_timeout: Duration,
}

impl Rollout {
    pub(crate) async fn run(self) -> Outcome {
        let until = tokio::time::Instant::now() + self.deadline;
        let mut index = 0;
        loop {
            let now = tokio::time::Instant::now();
            if now >= until {
                return self.abandon(None).await;
            }
            let q = if index == 0 {
                QueryOptions::default()
            } else {
                QueryOptions::blocking(index, POLL_WAIT.min(until - now))
            };
            let d = match self.nomad.latest_deployment(&self.job_id, q).await {
                Ok(r) => {
                    index = r.index.max(1);
                    r.value
                }
                Err(e) if e.is_not_found() => return Outcome::Superseded,
                Err(e) => {
                    tracing::debug!(function = %self.key, error = %e, "cannot read the update's deployment");
                    index = 0;
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            // Until Nomad's scheduler has created it, the latest is an older one (or none).
            // An update that changed nothing the tasks run (Nomad updates in place) never
            // gets one: done once every allocation runs the new version.
            let Some(d) = d.filter(|d| d.job_version >= self.to) else {
                if self.updated_in_place().await {
                    return Outcome::Promoted;
                }
                continue;
            };
            if d.job_version > self.to {
                return Outcome::Superseded;
            }
            match d.status.as_str() {
                "cancelled" => return Outcome::Superseded,
                "successful" => return Outcome::Promoted,
                "failed" => return self.abandon(Some(&d)).await,
                _ => {}
            }
            if promoted(&d) {
                // Promoted (by us before a restart, or by hand): wait for success.
                continue;
            }
            if canaries_healthy(&d) && self.ready_here(&d) {
                match self.switch(&d).await {
                    Ok(()) => index = 0,
                    Err(e) => {
                        tracing::warn!(function = %self.key, deployment = %d.id, error = %e,
                            "promotion refused; the old version keeps serving");
                        tokio::time::sleep(RETRY).await;
                    }
                }
            }
        }
    }

    /// Every live allocation of the job already runs version `to` (or a newer one).
    async fn updated_in_place(&self) -> bool {
        match self
            .nomad
            .job_allocations(&self.job_id, QueryOptions::default())
            .await
        {
            Ok(r) => {
                let live: Vec<&Allocation> = r.value.iter().filter(|a| !a.is_terminal()).collect();
                !live.is_empty() && live.iter().all(|a| a.job_version >= self.to)
            }
            Err(_) => false,
        }
    }

    /// Every placed canary is ready at this gateway (found by discovery and probed).
    fn ready_here(&self, d: &Deployment) -> bool {
        let (ready, _) = self.publisher.ready_split();
        d.task_groups
            .values()
            .flat_map(|g| g.placed_canaries.iter())
            .filter(|id| ready.contains(id))
            .count() as u64
            >= d.task_groups.values().map(|g| g.desired_canaries).sum()
    }

    /// Moves traffic to the canaries, drains the old allocations everywhere, then promotes.
    async fn switch(&self, d: &Deployment) -> Result<(), crate::client::ClientError> {
        let (_, old) = self.publisher.ready_split();
        self.publisher.admit_canaries(true);
        let replicas = self.publisher.drain(&old);
        let inflight: usize = replicas.iter().map(|r| r.pending()).sum();
        tracing::info!(function = %self.key, deployment = %d.id, old = old.len(), inflight,
            "new version ready: traffic moved to it; draining the old version");
        let members = {
            let (cluster, key, ids, bound) = (
                self.cluster.clone(),
                self.key.clone(),
                old.clone(),
                self.drain_timeout,
            );
            tokio::spawn(async move { cluster.drain_at_members(&key, &ids, bound).await })
        };
        wait_idle(
            &replicas,
            tokio::time::Instant::now() + self.drain_timeout,
            || false,
        )
        .await;
        let _ = members.await;
        match self.nomad.promote_deployment(&d.id).await {
            Ok(_) => {
                self.publisher.commit_drain(&old);
                tracing::info!(function = %self.key, deployment = %d.id, "deployment promoted");
                Ok(())
            }
            Err(e) => {
                self.publisher.undrain(&old);
                self.cluster.cancel_at_members(&self.key, &old).await;
                self.publisher.admit_canaries(false);
                Err(e)
            }
        }
    }

    /// Fails the deployment (if still active) and reverts the job to [`Rollout::from`].
    async fn abandon(&self, failed: Option<&Deployment>) -> Outcome {
        self.publisher.admit_canaries(false);
        let current = match failed {
            Some(d) => Some(d.clone()),
            None => match self
                .nomad
                .latest_deployment(&self.job_id, QueryOptions::default())
                .await
            {
                Ok(r) => r.value.filter(|d| d.job_version == self.to),
                Err(_) => None,
            },
        };
        let reason = match &current {
            Some(d) => self.reason(d).await,
            None => format!(
                "the new version did not become ready within {:?}",
                self.deadline
            ),
        };
        if let Some(d) = current.as_ref().filter(|d| d.is_active()) {
            if let Err(e) = self.nomad.fail_deployment(&d.id).await {
                tracing::warn!(function = %self.key, deployment = %d.id, error = %e, "cannot fail the deployment");
            }
        }
        match self
            .nomad
            .revert_job(&self.job_id, self.from, self.to)
            .await
        {
            Ok(_) => {
                tracing::warn!(function = %self.key, from = self.to, to = self.from, %reason,
                    "update abandoned; the previous version keeps serving")
            }
            Err(e) => {
                // A newer version was registered meanwhile: it is not undone.
                tracing::warn!(function = %self.key, error = %e, "update abandoned; revert refused");
                return Outcome::Superseded;
            }
        }
        Outcome::Failed(reason)
    }

    /// Why the canaries of `d` are not ready: how many are, and the last task event of one
    /// that is not.
    async fn reason(&self, d: &Deployment) -> String {
        let desired: u64 = d.task_groups.values().map(|g| g.desired_canaries).sum();
        let healthy: u64 = d
            .task_groups
            .values()
            .map(|g| g.healthy_allocs.min(g.desired_canaries))
            .sum();
        let mut why = format!(
            "{healthy} of {desired} new replicas healthy after {}s",
            self.deadline.as_secs()
        );
        let canaries: Vec<&String> = d
            .task_groups
            .values()
            .flat_map(|g| g.placed_canaries.iter())
            .collect();
        if let Ok(allocs) = self
            .nomad
            .job_allocations(&self.job_id, QueryOptions::default())
            .await
        {
            let unhealthy = allocs.value.iter().find(|a| {
                canaries.contains(&&a.id)
                    && a.deployment_status.as_ref().and_then(|s| s.healthy) != Some(true)
            });
            if let Some(event) = unhealthy.and_then(last_event) {
                why.push_str("; last event: ");
                why.push_str(&event);
            }
        }
        why
    }
}

fn promoted(d: &Deployment) -> bool {
    !d.task_groups.is_empty() && d.task_groups.values().all(|g| g.promoted)
}

fn canaries_healthy(d: &Deployment) -> bool {
    !d.task_groups.is_empty()
        && d.task_groups
            .values()
            .all(|g| g.healthy_allocs >= g.desired_canaries && g.desired_canaries > 0)
}

/// The latest task event of an allocation: `<Type>: <DisplayMessage>`.
fn last_event(a: &Allocation) -> Option<String> {
    let e = a
        .task_states
        .values()
        .flat_map(|t| t.events.iter())
        .max_by_key(|e| e.time)?;
    Some(if e.display_message.is_empty() {
        e.kind.clone()
    } else {
        format!("{}: {}", e.kind, e.display_message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canary_strategy_is_one_nomad_accepts() {
        let u = canary_update(3, Duration::from_secs(300));
        assert_eq!(u["Canary"], 3);
        assert_eq!(u["MaxParallel"], 3);
        let (min, healthy, progress) = (
            u["MinHealthyTime"].as_u64().unwrap(),
            u["HealthyDeadline"].as_u64().unwrap(),
            u["ProgressDeadline"].as_u64().unwrap(),
        );
        // Nomad's UpdateStrategy.Validate.
        assert!(min < healthy && healthy < progress);
        assert_eq!(u["HealthCheck"], "checks");
    }

    #[test]
    fn canary_tags_extend_the_tags() {
        let mut job = json!({"TaskGroups": [{"Services": [{"Tags": ["faasgate"]}]}]});
        add_canary_tags(&mut job);
        assert_eq!(
            job["TaskGroups"][0]["Services"][0]["CanaryTags"],
            json!(["faasgate", CANARY_TAG])
        );
        set_group_update(&mut job, Some(&json!({"Canary": 1})));
        assert_eq!(job["TaskGroups"][0]["Update"]["Canary"], 1);
        set_group_update(&mut job, None);
        assert!(job["TaskGroups"][0].get("Update").is_none());
    }
}
