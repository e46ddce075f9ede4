//! The Nomad provider: OpenFaaS operations as Nomad HTTP API calls, and the set of functions
//! this gateway routes to, kept in step with Nomad.
//!
//! Nomad is the source of truth; this provider is stateless across restarts:
//! - deploy: `POST /v1/jobs` with the rendered job and `com.openfaas.scale.min` (default 1)
//!   as the count; update: read the job, render with its **current** group `Count`, and
//!   register with `PreserveCounts` (a scale racing the update is kept too);
//! - scale: `POST /v1/job/{id}/scale` `{Count, Target:{Group}, Message}` (one call per
//!   decision, never a re-register); delete: `DELETE /v1/job/{id}?purge=true`;
//! - scale down without losing a request: before a scale call that lowers the count, the
//!   allocations Nomad will stop ([`scale_down`]: the highest name indexes) leave rotation
//!   ([`Publisher::drain`]) and their in-flight requests finish (bounded by
//!   [`NomadOptions::drain_timeout`]); only then is scale called. If Nomad refuses, they go
//!   back in rotation; if Nomad keeps one running after all, it goes back once that is seen
//!   (within `STOP_CHECK`, 30 s). With other gateways, they drain the same allocations
//!   first and the call waits for them too (`control::cluster::drain`); this provider is
//!   also their member side ([`Provider::drain_for_peer`]). Scale calls of one function
//!   are serialised; a newer one ends the drain of an older scale-down, which then fails
//!   with 409 (a scale-up never waits behind the drain of a scale-down it replaces).
//! - list/status: jobs under the prefix (`GET /v1/jobs?prefix=&meta=true`), the deployment
//!   read back from the job meta, `replicas` = the group `Count`, `availableReplicas` = the
//!   instances discovery has found ready. A job scaled to 0 is listed; a stopped one is not.
//!
//! Tracking: every live function job gets a route-table entry, a [`Publisher`] and a
//! catalog watcher ([`crate::discovery`]). Functions are tracked when this gateway deploys
//! them, when a read meets them, and by the reconciler, a blocking query on the jobs list
//! that also picks up changes made by other gateways or by hand (`nomad job scale`). A
//! function is untracked when deleted here, or when a jobs list at least as new as what we
//! know no longer holds it.
//!
//! Namespaces: an OpenFaaS namespace is a segment of the job ID (`<prefix><name>.<ns>`) and a
//! job meta key; all function jobs live in one Nomad namespace (`NOMAD_NAMESPACE`, default
//! `default`), so no Nomad namespace has to be created per OpenFaaS namespace. The managed
//! set is kept in Nomad Variables (`faasgate/namespaces/<name>` in that Nomad namespace,
//! `control::namespaces`), so every gateway of a cluster sees the same set; at start the
//! namespaces of existing jobs are stored there too.
//!
//! Secrets: the source of truth is one Variable per secret (`control::secrets::nomad`,
//! `faasgate/secrets/<namespace>/<name>`). A function's task cannot read those without an ACL
//! policy per job, so the provider copies the secrets a function names into ONE Variable of
//! its own, [`render::secrets_var_path`] (items: secret name → base64 of the value), which
//! the job's templates read (`render`, Secrets). Deploy and update write it **before**
//! registering the job (a secret that does not exist: 400 `unable to find secret: <name>`,
//! nothing registered); delete removes it after the job; [`Provider::secret_updated`]
//! rewrites it for every function of the namespace naming the secret. A copy whose items are
//! unchanged is not rewritten (every write moves the `ModifyIndex`, which re-renders the
//! templates and restarts the tasks). Writes use check-and-set with the index read, retried
//! a few times when another gateway wrote meanwhile.
//!
//! Errors: Nomad's status and plain-text message reach the API caller as
//! [`ProviderError::Upstream`]; an unreachable Nomad is 502, a timeout 504.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Value;
use tokio::task::JoinHandle;

use super::logs;
use super::render::{self, RenderError, RenderOptions};
use super::rollout::{self, Outcome, Rollout};
use super::scale_down;
use crate::client::nomad::{job_view, DeleteOutcome, PutOutcome, VarPath};
use crate::client::wire::nomad::{JobListStub, JobRegisterRequest, ScalingRequest, ScalingTarget};
use crate::client::wire::variables::Items;
use crate::client::{ClientError, ConsulSettings, NomadClient, NomadSettings, QueryOptions};
use crate::control::cluster::Cluster;
use crate::control::namespaces::{Namespaces, VariablesBackend};
use crate::control::provider::{LogQuery, LogStream, Provider, ProviderError};
use crate::control::secrets::nomad::NomadSecretStore;
use crate::control::secrets::{SecretError, SecretStore};
use crate::dataplane::Routes;
use crate::discovery::watch::Backoff;
use crate::discovery::{
    spawn_watcher, Catalog, DiscoveryKind, Publisher, WatchConfig, WatchHandle,
};
use crate::model::names::FunctionKey;
use crate::model::scale::ScaleSettings;
use crate::model::types::{
    FunctionDeployment, FunctionStatus, ProviderInfo, UpdateState, VersionInfo,
};

/// How often a drain looks at the pending counts of the replicas it waits for.
const DRAIN_POLL: Duration = Duration::from_millis(20);
/// How long after a scale-down Nomad has to stop the allocations drained for it.
const STOP_CHECK: Duration = Duration::from_secs(30);

use crate::model::types::ReplicaCounts;

/// Everything the Nomad provider needs, resolved by the CLI.
#[derive(Debug, Clone)]
pub struct NomadOptions {
    pub nomad: NomadSettings,
    /// Required when `discovery` is Consul.
    pub consul: Option<ConsulSettings>,
    pub discovery: DiscoveryKind,
    pub render: RenderOptions,
    pub watch: WatchConfig,
    /// How long the jobs-list reconciler's blocking query is held.
    pub(crate) reconcile_wait: Duration,
    /// Bound on waiting for the in-flight requests of replicas drained before a scale-down.
    pub drain_timeout: Duration,
    /// How long an update's new version has to become ready ([`super::rollout`]).
    pub update_deadline: Duration,
}

/// The provider; see the module doc.
pub(crate) struct NomadProvider {
    /// Itself, for the tasks it spawns (rollouts, deferred scales).
    me: std::sync::Weak<NomadProvider>,
    nomad: Arc<NomadClient>,
    catalog: Arc<Catalog>,
    routes: Arc<Routes>,
    /// The other gateways, which drain before this one's scale-downs too.
    cluster: Arc<Cluster>,
    opts: NomadOptions,
    functions: Mutex<BTreeMap<FunctionKey, Arc<Tracked>>>,
    reconciler: Mutex<Option<JoinHandle<()>>>,
    /// The managed namespaces, one Nomad Variable each (`control::namespaces`).
    namespaces: Namespaces,
    /// The secrets, one Nomad Variable each (`control::secrets::nomad`).
    secrets: NomadSecretStore,
}

/// How many times a function's secrets copy is written when other writers keep winning.
const SECRET_COPY_ATTEMPTS: usize = 4;

/// A function this gateway routes to.
struct Tracked {
    job_id: String,
    publisher: Arc<Publisher>,
    /// Serialises scale calls (a drain and its scale call are one step).
    scaling: tokio::sync::Mutex<()>,
    /// Scale calls begun; a drain whose call is no longer the latest gives up.
    scale_calls: AtomicU64,
    facts: Mutex<JobFacts>,
    /// The update being rolled out, if any ([`super::rollout`]).
    rollout: Mutex<Option<RolloutRun>>,
    /// What `/system/function` says of updates: in progress, or the last one failed.
    update_state: Mutex<Option<UpdateState>>,
    /// The latest count asked for while Nomad refuses to scale (an active deployment),
    /// applied when it ends.
    pending_scale: Mutex<Option<u64>>,
    /// A task applying `pending_scale` is running.
    scale_waiter: std::sync::atomic::AtomicBool,
    _watch: WatchHandle,
}

/// An update in progress.
struct RolloutRun {
    /// The version that was serving before it (what a failure reverts to).
    from: u64,
    /// The version it rolls out.
    to: u64,
}

/// What faasgate reads from a function's job.
#[derive(Debug, Clone)]
struct JobFacts {
    spec: FunctionDeployment,
    count: u64,
    group: String,
    service: String,
    task: String,
    submit_time: i64,
    /// The job's `Version`.
    version: u64,
    /// Meta `faasgate.created`: when the function was first deployed (None: a job from
    /// before faasgate kept it; its `SubmitTime` stands in).
    created: Option<String>,
    /// The job's `JobModifyIndex` when read (or the index a write here returned).
    job_modify_index: u64,
}

// === impl NomadOptions ===

impl NomadOptions {
    /// Options with Nomad at `settings` and everything else default.
    pub fn new(nomad: NomadSettings) -> Self {
        Self {
            render: RenderOptions {
                nomad_namespace: nomad.namespace.clone(),
                region: nomad.region.clone(),
                ..RenderOptions::default()
            },
            nomad,
            consul: None,
            discovery: DiscoveryKind::Nomad,
            watch: WatchConfig::default(),
            reconcile_wait: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(60),
            update_deadline: Duration::from_secs(300),
        }
    }
}

// === impl NomadProvider ===

impl NomadProvider {
    /// Checks the options (the template renders), builds the clients, reads the jobs that
    /// exist (a Nomad that is down is retried in the background) and starts the reconciler.
    /// `cluster`: the other gateways, told of every scale-down's drain (alone: nobody).
    pub(crate) async fn start(
        opts: NomadOptions,
        routes: Arc<Routes>,
        cluster: Arc<Cluster>,
    ) -> Result<Arc<NomadProvider>, ProviderError> {
        render::check_options(&opts.render)
            .map_err(|e| ProviderError::Backend(format!("nomad provider: {e}")))?;
        let nomad = Arc::new(NomadClient::new(&opts.nomad));
        let catalog = Catalog::new(opts.discovery, nomad.clone(), opts.consul.as_ref())
            .map_err(|e| ProviderError::Backend(format!("nomad provider: {e}")))?;
        let catalog = Arc::new(catalog);
        tracing::info!(
            nomad = %nomad.address(),
            namespace = nomad.namespace().unwrap_or("default"),
            discovery = catalog.name(),
            job_prefix = %opts.render.job_prefix,
            "nomad provider"
        );
        let namespaces = Namespaces::new(Box::new(VariablesBackend::new(nomad.clone())));
        let secrets = NomadSecretStore::new(nomad.clone());
        let provider = Arc::new_cyclic(|me| NomadProvider {
            me: me.clone(),
            nomad,
            catalog,
            routes,
            cluster,
            opts,
            functions: Mutex::new(BTreeMap::new()),
            reconciler: Mutex::new(None),
            namespaces,
            secrets,
        });
        match provider
            .nomad
            .list_jobs(&provider.opts.render.job_prefix, QueryOptions::default())
            .await
        {
            Ok(list) => {
                provider.sync(&list.value, list.index).await;
                // Namespaces of jobs deployed before namespaces were kept stay managed once
                // emptied. Until this succeeds they are in the set anyway (they hold jobs).
                let held: BTreeSet<String> = provider
                    .lock()
                    .keys()
                    .map(|k| k.namespace().to_string())
                    .collect();
                if let Err(e) = provider.namespaces.adopt(held).await {
                    tracing::warn!(error = %e, "cannot store the namespaces of existing jobs");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list function jobs yet; retrying in the background")
            }
        }
        let task = tokio::spawn(reconcile(Arc::downgrade(&provider)));
        *provider
            .reconciler
            .lock()
            .expect("reconciler mutex poisoned") = Some(task);
        Ok(provider)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<FunctionKey, Arc<Tracked>>> {
        self.functions
            .lock()
            .expect("function table mutex poisoned")
    }

    fn job_id(&self, key: &FunctionKey) -> String {
        render::job_id(&self.opts.render.job_prefix, key)
    }

    /// Renders `spec` with `count`, adapting service providers to the discovery in use, and
    /// records `created` (RFC 3339) in the job's meta.
    fn render(
        &self,
        spec: &FunctionDeployment,
        count: u64,
        created: &str,
    ) -> Result<Value, ProviderError> {
        let mut job = render::render_job(spec, count, &self.opts.render).map_err(render_error)?;
        if self.opts.discovery == DiscoveryKind::Consul {
            set_service_provider(&mut job, "consul");
        }
        if let Some(meta) = job.get_mut("Meta").and_then(Value::as_object_mut) {
            meta.insert(render::meta::CREATED.into(), Value::String(created.into()));
        }
        rollout::add_canary_tags(&mut job);
        Ok(job)
    }

    /// Writes the copy of `spec`'s secrets its task reads ([`render::secrets_var_path`]):
    /// one item per secret, the value in base64. A secret that does not exist is a 400
    /// `unable to find secret: <name>` unless `keep_missing` (a secret update fanning out:
    /// the copy keeps what it held for a secret deleted since). Skips the write when the
    /// items are unchanged. A function without secrets has no copy (not written here).
    async fn write_secret_copy(
        &self,
        key: &FunctionKey,
        spec: &FunctionDeployment,
        keep_missing: bool,
    ) -> Result<(), ProviderError> {
        let names = render::secret_names(spec);
        if names.is_empty() {
            return Ok(());
        }
        let path = secret_copy_path(key)?;
        let mut current = self.nomad.var_read(&path).await.map_err(upstream)?;
        let mut items = Items::new();
        for name in &names {
            match self.secrets.read(key.namespace(), name).await {
                Ok(v) => {
                    items.insert(name.clone(), STANDARD.encode(v.as_bytes()));
                }
                Err(SecretError::NotFound { .. } | SecretError::InvalidName(_)) if keep_missing => {
                    if let Some(old) = current.as_ref().and_then(|c| c.items.get(name)) {
                        items.insert(name.clone(), old.clone());
                    }
                    tracing::warn!(function = %key, secret = %name, "secret named by the function no longer exists; its copy keeps the last value");
                }
                Err(SecretError::NotFound { .. } | SecretError::InvalidName(_)) => {
                    return Err(ProviderError::Invalid(format!(
                        "unable to find secret: {name}"
                    )))
                }
                Err(e) => return Err(ProviderError::Backend(e.to_string())),
            }
        }
        if items.is_empty() {
            return Ok(());
        }
        for _ in 0..SECRET_COPY_ATTEMPTS {
            let cas = match &current {
                Some(c) if c.items == items => return Ok(()),
                Some(c) => c.meta.modify_index,
                None => 0,
            };
            match self
                .nomad
                .var_put(&path, &items, Some(cas))
                .await
                .map_err(upstream)?
            {
                PutOutcome::Written(_) => {
                    tracing::info!(function = %key, variable = %path.as_str(), secrets = items.len(), "function secrets copied");
                    return Ok(());
                }
                PutOutcome::Conflict(_) => {
                    current = self.nomad.var_read(&path).await.map_err(upstream)?;
                }
            }
        }
        Err(ProviderError::Upstream {
            status: 409,
            message: format!("the secrets of {key} changed meanwhile; retry"),
        })
    }

    /// Removes a function's secrets copy (absent: nothing to do). Failures are logged: the
    /// copy of a function that is gone holds values nobody reads, and the next deploy of the
    /// name rewrites it.
    async fn remove_secret_copy(&self, key: &FunctionKey) {
        let path = match secret_copy_path(key) {
            Ok(p) => p,
            Err(_) => return,
        };
        match self.nomad.var_delete(&path, None).await {
            Ok(DeleteOutcome::Deleted) => {}
            Ok(DeleteOutcome::Conflict(_)) => {
                tracing::warn!(function = %key, variable = %path.as_str(), "secrets copy is locked; left in place")
            }
            Err(e) => {
                tracing::warn!(function = %key, variable = %path.as_str(), error = %e, "cannot remove the secrets copy")
            }
        }
    }

    /// Reads a live function job: `None` when absent, stopped or not a function job.
    async fn read(&self, key: &FunctionKey) -> Result<Option<JobFacts>, ProviderError> {
        let job = match self.nomad.job(&self.job_id(key)).await {
            Ok(j) => j.value,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(upstream(e)),
        };
        Ok(facts_of(&job).filter(|(k, _)| k == key).map(|(_, f)| f))
    }

    /// Starts routing to `key` (or refreshes what is known of it).
    fn track(&self, key: &FunctionKey, facts: JobFacts) -> Arc<Tracked> {
        let mut functions = self.lock();
        if let Some(t) = functions.get(key) {
            let t = t.clone();
            drop(functions);
            t.publisher.set_desired(facts.count);
            t.publisher
                .set_scale(ScaleSettings::from_deployment(&facts.spec));
            *t.facts.lock().expect("facts mutex poisoned") = facts;
            return t;
        }
        let handle = self.routes.upsert(key);
        let publisher = Arc::new(Publisher::new(
            handle,
            facts.count,
            ScaleSettings::from_deployment(&facts.spec),
        ));
        let watch = spawn_watcher(
            self.catalog.clone(),
            facts.service.clone(),
            publisher.clone(),
            self.opts.watch.clone(),
        );
        tracing::info!(function = %key, service = %facts.service, replicas = facts.count, "routing to function");
        let t = Arc::new(Tracked {
            job_id: self.job_id(key),
            publisher,
            scaling: tokio::sync::Mutex::new(()),
            scale_calls: AtomicU64::new(0),
            facts: Mutex::new(facts),
            rollout: Mutex::new(None),
            update_state: Mutex::new(None),
            pending_scale: Mutex::new(None),
            scale_waiter: std::sync::atomic::AtomicBool::new(false),
            _watch: watch,
        });
        functions.insert(key.clone(), t.clone());
        drop(functions);
        if let Some(me) = self.me.upgrade() {
            let (key, t) = (key.clone(), t.clone());
            tokio::spawn(async move { me.resume_rollout(&key, &t).await });
        }
        t
    }

    /// For a function this gateway starts tracking: an update's deployment still open (its
    /// gateway stopped, or another gateway runs it) is driven from here too; one that failed
    /// while no gateway watched, leaving the job at the abandoned version, is reverted.
    async fn resume_rollout(&self, key: &FunctionKey, tracked: &Arc<Tracked>) {
        let d = match self
            .nomad
            .latest_deployment(&tracked.job_id, QueryOptions::default())
            .await
        {
            Ok(r) => r.value,
            Err(e) => {
                tracing::debug!(function = %key, error = %e, "cannot read the latest deployment");
                return;
            }
        };
        let Some(d) = d.filter(|d| d.task_groups.values().any(|g| g.desired_canaries > 0)) else {
            return;
        };
        let version = tracked.facts().version;
        if d.job_version != version {
            return;
        }
        let allocs = match self
            .nomad
            .job_allocations(&tracked.job_id, QueryOptions::default())
            .await
        {
            Ok(r) => r.value,
            Err(_) => return,
        };
        // The version serving: the newest one among live allocations that are not canaries.
        let canaries: Vec<&String> = d
            .task_groups
            .values()
            .flat_map(|g| g.placed_canaries.iter())
            .collect();
        let Some(from) = allocs
            .iter()
            .filter(|a| !a.is_terminal() && !canaries.contains(&&a.id) && a.job_version < version)
            .map(|a| a.job_version)
            .max()
        else {
            return;
        };
        let promoted = d.task_groups.values().all(|g| g.promoted);
        if d.is_active() {
            tracing::info!(function = %key, deployment = %d.id, from, to = version,
                "an update is rolling out; following it from here");
            self.start_rollout(key, tracked, from, version);
        } else if d.status == "failed" && !promoted {
            tracing::warn!(function = %key, deployment = %d.id, from, to = version,
                "an update failed while no gateway followed it; reverting");
            self.start_rollout(key, tracked, from, version);
        }
    }

    fn untrack(&self, key: &FunctionKey) {
        let removed = self.lock().remove(key);
        if removed.is_some() {
            self.routes.remove(key);
            tracing::info!(function = %key, "no longer routing to function");
        }
    }

    /// Brings the tracked set in line with a jobs list read at `index`.
    async fn sync(&self, stubs: &[JobListStub], index: u64) {
        let mut live = BTreeSet::new();
        for stub in stubs {
            if stub.stop || !stub.id.starts_with(&self.opts.render.job_prefix) {
                continue;
            }
            // With `meta=true` (Nomad 1.5+) the key is in the stub; older servers need a read.
            let key = stub
                .meta
                .as_ref()
                .and_then(|m| render::key_from_job(&serde_json::json!({ "Meta": m })));
            if let Some(key) = &key {
                live.insert(key.clone());
                let known = self.lock().get(key).map(|t| t.facts().job_modify_index);
                if known.is_some_and(|k| k >= stub.job_modify_index) {
                    continue;
                }
            }
            match self.nomad.job(&stub.id).await {
                Ok(job) => {
                    if let Some((k, f)) = facts_of(&job.value) {
                        live.insert(k.clone());
                        self.track(&k, f);
                    }
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::debug!(job = %stub.id, error = %e, "cannot read function job");
                }
            }
        }
        let stale: Vec<FunctionKey> = self
            .lock()
            .iter()
            .filter(|(k, t)| !live.contains(*k) && t.facts().job_modify_index <= index)
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            self.untrack(&k);
        }
    }

    /// Takes out of rotation the allocations of `group` that Nomad stops when the count
    /// becomes `count`, here and at every other gateway of the cluster
    /// (`control::cluster::drain`), and waits (bounded by [`NomadOptions::drain_timeout`])
    /// until their replicas have no request in flight anywhere. Returns their allocation IDs
    /// (none: no stop). A newer scale call of the function (`call` is no longer the latest)
    /// ends the wait: the replicas go back in rotation everywhere and this call fails with
    /// 409, so a scale-up never waits behind the drain of a scale-down it replaces.
    async fn drain_for_scale_down(
        &self,
        key: &FunctionKey,
        tracked: &Tracked,
        group: &str,
        count: u64,
        call: u64,
    ) -> Result<Vec<String>, ProviderError> {
        let allocs = self
            .nomad
            .job_allocations(&tracked.job_id, QueryOptions::default())
            .await
            .map_err(upstream)?
            .value;
        let ids: Vec<String> = scale_down::allocs_to_stop(&allocs, &tracked.job_id, group, count)
            .into_iter()
            .map(|a| a.id.clone())
            .collect();
        if ids.is_empty() {
            return Ok(ids);
        }
        let replicas = tracked.publisher.drain(&ids);
        let inflight: usize = replicas.iter().map(|r| r.pending()).sum();
        tracing::info!(function = %key, allocations = ?ids, replicas = replicas.len(), inflight,
            "draining replicas before scale-down");
        let bound = self.opts.drain_timeout;
        let members = {
            let (cluster, key, ids) = (self.cluster.clone(), key.clone(), ids.clone());
            tokio::spawn(async move { cluster.drain_at_members(&key, &ids, bound).await })
        };
        let superseded = || tracked.scale_calls.load(Ordering::SeqCst) != call;
        if !wait_idle(&replicas, tokio::time::Instant::now() + bound, superseded).await {
            members.abort();
            self.put_back(key, tracked, &ids).await;
            tracing::info!(function = %key, to = count, "scale-down superseded while draining; replicas back in rotation");
            return Err(ProviderError::Upstream {
                status: 409,
                message: format!("scale of {key} to {count} was superseded by a newer scale call"),
            });
        }
        let left: usize = replicas.iter().map(|r| r.pending()).sum();
        if left > 0 {
            tracing::warn!(function = %key, inflight = left, timeout = ?bound,
                "drain timed out; scaling down with requests in flight");
        }
        // The members answer within the bound (plus the time to travel).
        if let Ok(Some(m)) = members.await {
            tracing::info!(function = %key, done = m.done, busy = m.busy, silent = m.silent,
                "drained at the other gateways");
        }
        Ok(ids)
    }

    /// Starts the rollout of version `to` of `key` (nothing when one already follows it). An
    /// older rollout still running is not cut short: Nomad cancelled its deployment, so it
    /// ends as superseded on its own (a promotion it tries is refused and undone); the
    /// version a failure reverts to stays the one serving before both.
    fn start_rollout(&self, key: &FunctionKey, tracked: &Arc<Tracked>, from: u64, to: u64) {
        let mut slot = tracked.rollout.lock().expect("rollout mutex poisoned");
        let from = match slot.as_ref() {
            Some(run) if run.to >= to => return,
            Some(run) => run.from,
            None => from,
        };
        *tracked.update_state.lock().expect("update mutex poisoned") = Some(UpdateState {
            status: "in-progress".into(),
            message: format!(
                "version {to} is starting beside version {from}, which serves until it is ready"
            ),
            since: rfc3339(time::OffsetDateTime::now_utc()),
        });
        let run = Rollout {
            nomad: self.nomad.clone(),
            publisher: tracked.publisher.clone(),
            cluster: self.cluster.clone(),
            key: key.clone(),
            job_id: tracked.job_id.clone(),
            from,
            to,
            deadline: self.opts.update_deadline,
            drain_timeout: self.opts.drain_timeout,
        };
        let (me, key, tracked2) = (self.me.clone(), key.clone(), tracked.clone());
        tokio::spawn(async move {
            let outcome = run.run().await;
            if let Some(p) = me.upgrade() {
                p.rollout_ended(&key, &tracked2, to, outcome).await;
            }
        });
        *slot = Some(RolloutRun { from, to });
    }

    /// Records how the rollout of version `to` ended, drops its canary strategy (success),
    /// and applies the count asked for meanwhile.
    async fn rollout_ended(
        &self,
        key: &FunctionKey,
        tracked: &Arc<Tracked>,
        to: u64,
        outcome: Outcome,
    ) {
        tracing::info!(function = %key, version = to, ?outcome, "update rollout ended");
        let current = tracked
            .rollout
            .lock()
            .expect("rollout mutex poisoned")
            .as_ref()
            .map(|r| r.to);
        if current != Some(to) {
            // A newer rollout owns the function's update state.
            return;
        }
        let state = match &outcome {
            Outcome::Promoted => {
                if let Err(e) = self.drop_canary_strategy(key).await {
                    tracing::warn!(function = %key, error = %e, "cannot remove the update strategy after the update");
                }
                None
            }
            Outcome::Failed(reason) => Some(UpdateState {
                status: "failed".into(),
                message: reason.clone(),
                since: rfc3339(time::OffsetDateTime::now_utc()),
            }),
            // A version this gateway does not follow (registered elsewhere) took over.
            Outcome::Superseded => None,
        };
        tracked.publisher.admit_canaries(false);
        *tracked.update_state.lock().expect("update mutex poisoned") = state;
        tracked
            .rollout
            .lock()
            .expect("rollout mutex poisoned")
            .take();
        if let Ok(Some(f)) = self.read(key).await {
            self.track(key, f);
        }
        self.apply_pending_scale(key, tracked);
    }

    /// Registers the job again with the template's own update strategy (no canaries), so
    /// that later scale calls start no deployment; the rest of the spec is unchanged, so
    /// Nomad updates the allocations in place.
    async fn drop_canary_strategy(&self, key: &FunctionKey) -> Result<(), ProviderError> {
        let Some(current) = self.read(key).await? else {
            return Ok(());
        };
        let job = self.render(
            &current.spec,
            current.count,
            &created_at(&current).unwrap_or_default(),
        )?;
        self.nomad
            .register(&JobRegisterRequest {
                job,
                preserve_counts: true,
                ..Default::default()
            })
            .await
            .map_err(upstream)?;
        Ok(())
    }

    /// Keeps `replicas` as the count to apply once Nomad accepts scale calls again (the
    /// rollout ends, or another gateway's deployment does), and makes sure a task applies it.
    fn defer_scale(&self, key: &FunctionKey, tracked: &Arc<Tracked>, replicas: u64) {
        let before = tracked
            .pending_scale
            .lock()
            .expect("pending mutex poisoned")
            .replace(replicas);
        if before != Some(replicas) {
            tracing::info!(function = %key, replicas, "scale deferred until the update's deployment ends");
        }
        if tracked
            .rollout
            .lock()
            .expect("rollout mutex poisoned")
            .is_none()
        {
            self.apply_pending_scale(key, tracked);
        }
    }

    /// Applies the deferred count once no deployment of the job is active (one task per
    /// function at a time; a newer deferred count replaces an older one).
    fn apply_pending_scale(&self, key: &FunctionKey, tracked: &Arc<Tracked>) {
        if tracked.scale_waiter.swap(true, Ordering::SeqCst) {
            return;
        }
        let (me, key, tracked) = (self.me.clone(), key.clone(), tracked.clone());
        tokio::spawn(async move {
            let mut index = 0;
            loop {
                let Some(p) = me.upgrade() else { return };
                if tracked
                    .rollout
                    .lock()
                    .expect("rollout mutex poisoned")
                    .is_some()
                {
                    // The rollout applies it when it ends.
                    break;
                }
                let q = if index == 0 {
                    QueryOptions::default()
                } else {
                    QueryOptions::blocking(index, Duration::from_secs(5))
                };
                match p.nomad.latest_deployment(&tracked.job_id, q).await {
                    Ok(r) if r.value.as_ref().is_some_and(|d| d.is_active()) => {
                        index = r.index.max(1);
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => break,
                    Err(_) => {
                        index = 0;
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        continue;
                    }
                }
                let Some(n) = tracked
                    .pending_scale
                    .lock()
                    .expect("pending mutex poisoned")
                    .take()
                else {
                    break;
                };
                tracked.scale_waiter.store(false, Ordering::SeqCst);
                match p.scale(&key, n).await {
                    Ok(()) => {
                        tracing::info!(function = %key, replicas = n, "deferred scale applied")
                    }
                    Err(e) => {
                        tracing::warn!(function = %key, replicas = n, error = %e, "deferred scale failed")
                    }
                }
                return;
            }
            tracked.scale_waiter.store(false, Ordering::SeqCst);
        });
    }

    /// Puts `drained` back in rotation, here and at the other gateways: the scale call they
    /// were drained for will not be made.
    async fn put_back(&self, key: &FunctionKey, tracked: &Tracked, drained: &[String]) {
        if drained.is_empty() {
            return;
        }
        tracked.publisher.undrain(drained);
        self.cluster.cancel_at_members(key, drained).await;
    }

    fn status_of(&self, key: &FunctionKey, facts: &JobFacts) -> FunctionStatus {
        let tracked = self.lock().get(key).cloned();
        let (available, invocations) = match &tracked {
            Some(t) => (
                t.publisher.available(),
                t.publisher.handle().metrics.codes.total(),
            ),
            None => (0, 0),
        };
        let mut st = status(key, facts, available, invocations);
        st.update = tracked.and_then(|t| t.update_state.lock().expect("update mutex").clone());
        st
    }

    /// The live function jobs, read from Nomad, tracking any not yet tracked.
    async fn live_jobs(&self) -> Result<Vec<(FunctionKey, JobFacts)>, ProviderError> {
        let list = self
            .nomad
            .list_jobs(&self.opts.render.job_prefix, QueryOptions::default())
            .await
            .map_err(upstream)?;
        self.sync(&list.value, list.index).await;
        let functions = self.lock();
        let mut out: Vec<(FunctionKey, JobFacts)> = functions
            .iter()
            .map(|(k, t)| (k.clone(), t.facts()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

impl Drop for NomadProvider {
    fn drop(&mut self) {
        if let Ok(mut r) = self.reconciler.lock() {
            if let Some(t) = r.take() {
                t.abort();
            }
        }
    }
}

#[async_trait]
impl Provider for NomadProvider {
    async fn deploy(&self, mut spec: FunctionDeployment) -> Result<(), ProviderError> {
        let key = key_of(&spec)?;
        spec.namespace = key.namespace().to_string();
        let count = render::initial_count(&spec).map_err(render_error)?;
        let job = self.render(&spec, count, &rfc3339(time::OffsetDateTime::now_utc()))?;
        if self.read(&key).await?.is_some() {
            return Err(ProviderError::AlreadyExists(key));
        }
        self.write_secret_copy(&key, &spec, false).await?;
        let resp = match self
            .nomad
            .register(&JobRegisterRequest {
                job: job.clone(),
                ..Default::default()
            })
            .await
        {
            Ok(r) => r,
            Err(e) => {
                if !spec.secrets.is_empty() {
                    self.remove_secret_copy(&key).await;
                }
                return Err(upstream(e));
            }
        };
        tracing::info!(function = %key, job = %self.job_id(&key), replicas = count, eval = %resp.eval_id, "function job registered");
        match facts_of(&job) {
            Some((_, mut f)) => {
                f.job_modify_index = resp.job_modify_index;
                self.track(&key, f);
            }
            None => tracing::warn!(function = %key, "rendered job does not describe the function"),
        }
        Ok(())
    }

    async fn update(&self, mut spec: FunctionDeployment) -> Result<(), ProviderError> {
        let key = key_of(&spec)?;
        spec.namespace = key.namespace().to_string();
        let current = self
            .read(&key)
            .await?
            .ok_or_else(|| ProviderError::NotFound(key.clone()))?;
        let mut job = self.render(
            &spec,
            current.count,
            &created_at(&current).unwrap_or_default(),
        )?;
        // With replicas running, the new version is rolled out beside them (`rollout`).
        let roll = current.count > 0;
        if roll {
            rollout::set_group_update(
                &mut job,
                Some(&rollout::canary_update(
                    current.count,
                    self.opts.update_deadline,
                )),
            );
        }
        self.write_secret_copy(&key, &spec, false).await?;
        let resp = self
            .nomad
            .register(&JobRegisterRequest {
                job: job.clone(),
                preserve_counts: true,
                ..Default::default()
            })
            .await
            .map_err(upstream)?;
        tracing::info!(function = %key, replicas = current.count, eval = %resp.eval_id, rolling = roll, "function job updated");
        if spec.secrets.is_empty() && !current.spec.secrets.is_empty() {
            self.remove_secret_copy(&key).await;
        }
        let Some((_, mut f)) = facts_of(&job) else {
            return Ok(());
        };
        f.count = current.count;
        f.job_modify_index = resp.job_modify_index;
        // Nomad registers an unchanged job as is (same JobModifyIndex, no new version, nothing
        // to roll out); any change is exactly one new version.
        let changed = resp.job_modify_index != current.job_modify_index;
        f.version = current.version + u64::from(changed);
        let to = f.version;
        let tracked = self.track(&key, f);
        if roll && changed {
            self.start_rollout(&key, &tracked, current.version, to);
        }
        Ok(())
    }

    async fn delete(&self, key: &FunctionKey) -> Result<(), ProviderError> {
        let Some(facts) = self.read(key).await? else {
            self.untrack(key);
            return Err(ProviderError::NotFound(key.clone()));
        };
        self.nomad
            .deregister(&self.job_id(key), true)
            .await
            .map_err(upstream)?;
        self.untrack(key);
        // Only a function with secrets has a copy (a gateway token without `destroy` there is
        // then never asked for it).
        if !facts.spec.secrets.is_empty() {
            self.remove_secret_copy(key).await;
        }
        tracing::info!(function = %key, "function job purged");
        Ok(())
    }

    async fn scale(&self, key: &FunctionKey, replicas: u64) -> Result<(), ProviderError> {
        self.scale_if(key, replicas, &|| true).await
    }

    async fn scale_if(
        &self,
        key: &FunctionKey,
        replicas: u64,
        valid: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<(), ProviderError> {
        let tracked = self.lock().get(key).cloned();
        let tracked = match tracked {
            Some(t) => t,
            None => {
                let f = self
                    .read(key)
                    .await?
                    .ok_or_else(|| ProviderError::NotFound(key.clone()))?;
                self.track(key, f)
            }
        };
        let count = i64::try_from(replicas)
            .map_err(|_| ProviderError::Invalid(format!("replicas {replicas} is too large")))?;
        if tracked
            .rollout
            .lock()
            .expect("rollout mutex poisoned")
            .is_some()
        {
            self.defer_scale(key, &tracked, replicas);
            return Ok(());
        }
        let call = tracked.scale_calls.fetch_add(1, Ordering::SeqCst) + 1;
        let _one_at_a_time = tracked.scaling.lock().await;
        let facts = tracked.facts();
        let drained = if replicas < facts.count || replicas == 0 {
            self.drain_for_scale_down(key, &tracked, &facts.group, replicas, call)
                .await?
        } else {
            Vec::new()
        };
        // The drain (or another scale of this function) may have taken a while: the call is
        // made only if the decision it is for still holds.
        if !valid() {
            self.put_back(key, &tracked, &drained).await;
            tracing::info!(function = %key, to = replicas, allocations = ?drained,
                "scale call dropped: its decision no longer holds (this gateway no longer leads); drained replicas back in rotation");
            return Err(crate::control::provider::superseded(key, replicas));
        }
        let req = ScalingRequest {
            count: Some(count),
            target: ScalingTarget {
                group: facts.group,
                ..Default::default()
            },
            message: format!("faasgate: scale {key} to {replicas}"),
            ..Default::default()
        };
        let result = self.nomad.scale(&tracked.job_id, &req).await;
        if result.is_err() && !drained.is_empty() {
            self.put_back(key, &tracked, &drained).await;
            tracing::info!(function = %key, allocations = ?drained, "scale call failed; drained replicas are back in rotation");
        }
        match result {
            Ok(resp) => {
                if !drained.is_empty() {
                    tracked.publisher.commit_drain(&drained);
                    tokio::spawn(confirm_stops(
                        self.nomad.clone(),
                        tracked.publisher.clone(),
                        tracked.job_id.clone(),
                        drained,
                        STOP_CHECK,
                    ));
                }
                if let Some(t) = self.lock().get(key) {
                    let mut f = t.facts.lock().expect("facts mutex poisoned");
                    f.count = replicas;
                    f.job_modify_index = f.job_modify_index.max(resp.job_modify_index);
                    t.publisher.set_desired(replicas);
                }
                tracing::info!(function = %key, replicas, "function scaled");
                Ok(())
            }
            Err(e) if e.is_not_found() => {
                self.untrack(key);
                Err(ProviderError::NotFound(key.clone()))
            }
            Err(e) if is_blocked_by_deployment(&e) => {
                self.defer_scale(key, &tracked, replicas);
                Ok(())
            }
            Err(e) => Err(upstream(e)),
        }
    }

    async fn list(&self, namespace: &str) -> Result<Vec<FunctionStatus>, ProviderError> {
        Ok(self
            .live_jobs()
            .await?
            .iter()
            .filter(|(k, _)| k.namespace() == namespace)
            .map(|(k, f)| self.status_of(k, f))
            .collect())
    }

    async fn status(&self, key: &FunctionKey) -> Result<FunctionStatus, ProviderError> {
        let facts = self
            .read(key)
            .await?
            .ok_or_else(|| ProviderError::NotFound(key.clone()))?;
        self.track(key, facts.clone());
        Ok(self.status_of(key, &facts))
    }

    fn namespace_store(&self) -> Option<&Namespaces> {
        Some(&self.namespaces)
    }

    fn secrets(&self) -> Option<&dyn SecretStore> {
        Some(&self.secrets)
    }

    /// Rewrites the secrets copy of every function of `namespace` naming `name`; their
    /// templates re-render and restart the tasks (`ChangeMode` restart).
    async fn secret_updated(&self, namespace: &str, name: &str) -> Result<(), ProviderError> {
        let mut first_error = None;
        for (key, facts) in self.live_jobs().await? {
            if key.namespace() != namespace || !facts.spec.secrets.iter().any(|s| s == name) {
                continue;
            }
            if let Err(e) = self.write_secret_copy(&key, &facts.spec, true).await {
                tracing::warn!(function = %key, secret = %name, error = %e, "cannot copy an updated secret");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn occupied_namespaces(&self) -> Result<BTreeMap<String, Vec<String>>, ProviderError> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (key, _) in self.live_jobs().await? {
            out.entry(key.namespace().to_string())
                .or_default()
                .push(key.name().to_string());
        }
        Ok(out)
    }

    async fn logs(&self, query: LogQuery) -> Result<LogStream, ProviderError> {
        let facts = self
            .read(&query.function)
            .await?
            .ok_or_else(|| ProviderError::NotFound(query.function.clone()))?;
        logs::stream(
            self.nomad.clone(),
            self.job_id(&query.function),
            facts.task,
            query,
        )
        .await
    }

    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            provider: "faasgate".into(),
            orchestration: "nomad".into(),
            version: VersionInfo {
                commit_message: String::new(),
                sha: crate::SHA.into(),
                release: crate::RELEASE.into(),
            },
        }
    }

    async fn drain_for_peer(
        &self,
        key: &FunctionKey,
        allocations: &[String],
        bound: Duration,
    ) -> Result<u64, ProviderError> {
        let Some(tracked) = self.lock().get(key).cloned() else {
            // Not routed through this gateway: nothing of ours is in flight on them.
            return Ok(0);
        };
        let replicas = tracked.publisher.drain(allocations);
        // Their stop is about to be ordered by the other gateway: each is forgotten once the
        // catalog drops it; whatever Nomad keeps running (a cancelled or failed call, or a
        // caller that died before calling) goes back in rotation once that is seen.
        tracked.publisher.commit_drain(allocations);
        tokio::spawn(confirm_stops(
            self.nomad.clone(),
            tracked.publisher.clone(),
            tracked.job_id.clone(),
            allocations.to_vec(),
            bound + STOP_CHECK,
        ));
        let inflight: usize = replicas.iter().map(|r| r.pending()).sum();
        tracing::info!(function = %key, allocations = ?allocations, inflight,
            "draining replicas for another gateway's scale-down");
        wait_idle(&replicas, tokio::time::Instant::now() + bound, || false).await;
        Ok(replicas.iter().map(|r| r.pending() as u64).sum())
    }

    fn cancel_peer_drain(&self, key: &FunctionKey, allocations: &[String]) {
        if let Some(tracked) = self.lock().get(key).cloned() {
            tracked.publisher.undrain(allocations);
            tracing::info!(function = %key, allocations = ?allocations,
                "another gateway's scale-down was called off; replicas back in rotation");
        }
    }

    /// Stops watching; the function jobs keep running (Nomad owns them).
    async fn shutdown(&self) {
        if let Some(t) = self
            .reconciler
            .lock()
            .expect("reconciler mutex poisoned")
            .take()
        {
            t.abort();
        }
        let all: Vec<Arc<Tracked>> = std::mem::take(&mut *self.lock()).into_values().collect();
        drop(all);
    }
}

// === impl Tracked ===

impl Tracked {
    fn facts(&self) -> JobFacts {
        self.facts.lock().expect("facts mutex poisoned").clone()
    }
}

/// Waits until none of `replicas` has a request in flight (true), `deadline` passes (true:
/// the caller goes on with requests in flight), or `cancelled()` turns true (false).
pub(super) async fn wait_idle(
    replicas: &[Arc<crate::dataplane::Replica>],
    deadline: tokio::time::Instant,
    cancelled: impl Fn() -> bool,
) -> bool {
    loop {
        if cancelled() {
            return false;
        }
        if replicas.iter().all(|r| r.pending() == 0) || tokio::time::Instant::now() >= deadline {
            return true;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// Watches the allocations drained for a scale-down until Nomad has stopped them all, for
/// at most `within` ([`STOP_CHECK`]); any still wanted then (Nomad chose others, e.g. ones on
/// a draining node) goes back in rotation.
async fn confirm_stops(
    nomad: Arc<NomadClient>,
    publisher: Arc<Publisher>,
    job_id: String,
    mut waiting: Vec<String>,
    within: Duration,
) {
    let deadline = tokio::time::Instant::now() + within;
    let mut index = 0;
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            break;
        }
        let q = if index == 0 {
            QueryOptions::default()
        } else {
            QueryOptions::blocking(index, deadline - now)
        };
        match tokio::time::timeout_at(deadline, nomad.job_allocations(&job_id, q)).await {
            Ok(Ok(list)) => {
                index = list.index.max(1);
                waiting.retain(|id| list.value.iter().any(|a| &a.id == id && !a.is_terminal()));
                if waiting.is_empty() {
                    return;
                }
            }
            Ok(Err(e)) => {
                tracing::debug!(job = %job_id, error = %e, "cannot read allocations after a scale-down");
                index = 0;
                tokio::time::sleep(DRAIN_POLL * 25).await;
            }
            Err(_) => break,
        }
    }
    tracing::warn!(job = %job_id, allocations = ?waiting,
        "Nomad kept allocations drained for a scale-down running; back in rotation");
    publisher.undrain(&waiting);
}

/// Follows the jobs list with a blocking query and syncs the tracked set on every change.
async fn reconcile(provider: std::sync::Weak<NomadProvider>) {
    let mut last = 0u64;
    let mut backoff = Backoff::default();
    loop {
        let Some(p) = provider.upgrade() else { return };
        let q = QueryOptions::blocking(last, p.opts.reconcile_wait);
        let nomad = p.nomad.clone();
        let prefix = p.opts.render.job_prefix.clone();
        let (base, max) = (p.opts.watch.backoff_base, p.opts.watch.backoff_max);
        drop(p);
        match nomad.list_jobs(&prefix, q).await {
            Ok(list) => {
                backoff.reset();
                last = if list.index < last { 0 } else { list.index };
                let Some(p) = provider.upgrade() else { return };
                p.sync(&list.value, list.index).await;
            }
            Err(e) => {
                let delay = backoff.next(base, max, fastrand::f64());
                tracing::debug!(error = %e, ?delay, "jobs list read failed");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Reads the function key and facts from a job (a read one, or one just rendered).
fn facts_of(job: &Value) -> Option<(FunctionKey, JobFacts)> {
    let key = render::key_from_job(job)?;
    let spec = render::spec_from_job(job)?;
    let view = job_view(job).ok()?;
    if view.stop {
        return None;
    }
    let group = render::group_name(job)?;
    let count = render::group_count(job).unwrap_or(0);
    let service = view
        .services()
        .first()
        .map(|s| s.name.clone())
        .unwrap_or_else(|| render::service_name(&key));
    let task = view.main_task().map(|t| t.name.clone()).unwrap_or_default();
    Some((
        key,
        JobFacts {
            spec,
            count,
            group,
            service,
            task,
            submit_time: view.submit_time,
            version: job.get("Version").and_then(Value::as_u64).unwrap_or(0),
            created: job
                .get("Meta")
                .and_then(|m| m.get(render::meta::CREATED))
                .and_then(Value::as_str)
                .map(str::to_string),
            job_modify_index: view.job_modify_index,
        },
    ))
}

/// Nomad's refusal of a scale call while a deployment of the job is active.
fn is_blocked_by_deployment(e: &ClientError) -> bool {
    matches!(e, ClientError::Status { status: 400, message, .. } if message.contains("scaling blocked due to active deployment"))
}

/// The path of a function's secrets copy.
fn secret_copy_path(key: &FunctionKey) -> Result<VarPath, ProviderError> {
    VarPath::new(render::secrets_var_path(key)).map_err(|e| ProviderError::Backend(e.to_string()))
}

/// Sets `Provider` on every service of the job (group and task level).
fn set_service_provider(job: &mut Value, provider: &str) {
    let Some(groups) = job.get_mut("TaskGroups").and_then(Value::as_array_mut) else {
        return;
    };
    for g in groups {
        let mut lists: Vec<&mut Value> = Vec::new();
        if let Some(obj) = g.as_object_mut() {
            for (k, v) in obj.iter_mut() {
                if k == "Services" {
                    lists.push(v);
                } else if k == "Tasks" {
                    if let Some(tasks) = v.as_array_mut() {
                        for t in tasks {
                            if let Some(s) = t.get_mut("Services") {
                                lists.push(s);
                            }
                        }
                    }
                }
            }
        }
        for list in lists {
            for s in list.as_array_mut().into_iter().flatten() {
                if let Some(o) = s.as_object_mut() {
                    o.insert("Provider".into(), Value::String(provider.into()));
                }
            }
        }
    }
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A function's `createdAt`: its first deploy, as the job's meta keeps it; for a job without
/// it (written before faasgate kept it), its `SubmitTime`.
fn created_at(facts: &JobFacts) -> Option<String> {
    if let Some(c) = &facts.created {
        return Some(c.clone());
    }
    (facts.submit_time > 0)
        .then(|| time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(facts.submit_time)))
        .and_then(Result::ok)
        .map(rfc3339)
}

/// The OpenFaaS status of a function: its deployment echoed, plus counts.
fn status(key: &FunctionKey, facts: &JobFacts, available: u64, invocations: u64) -> FunctionStatus {
    let created_at = created_at(facts);
    FunctionStatus::from_deployment(
        key.name(),
        key.namespace(),
        &facts.spec,
        created_at,
        ReplicaCounts {
            desired: facts.count,
            available,
            invocations,
        },
    )
}

fn key_of(d: &FunctionDeployment) -> Result<FunctionKey, ProviderError> {
    FunctionKey::new(&d.service, &d.namespace).map_err(|e| ProviderError::Invalid(e.to_string()))
}

fn render_error(e: RenderError) -> ProviderError {
    match e {
        RenderError::Template(_) => ProviderError::Backend(e.to_string()),
        other => ProviderError::Invalid(other.to_string()),
    }
}

/// A Nomad error as the API caller sees it: Nomad's own status and message.
fn upstream(e: ClientError) -> ProviderError {
    match e {
        ClientError::Status {
            status, message, ..
        } => ProviderError::Upstream {
            status,
            message: format!("nomad: {message}"),
        },
        ClientError::Unreachable { .. } => ProviderError::Upstream {
            status: 502,
            message: e.to_string(),
        },
        ClientError::Timeout { .. } => ProviderError::Upstream {
            status: 504,
            message: e.to_string(),
        },
        ClientError::Decode { .. } => ProviderError::Backend(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::scale::labels as scale_labels;
    use serde_json::json;

    #[test]
    fn nomad_errors_keep_status_and_message() {
        let e = upstream(ClientError::Status {
            service: "nomad",
            status: 500,
            message: "1 error occurred:\n\t* Missing job task groups".into(),
        });
        assert!(
            matches!(&e, ProviderError::Upstream { status: 500, message } if message.contains("Missing job task groups"))
        );
        let e = upstream(ClientError::Unreachable {
            service: "nomad",
            addr: "http://127.0.0.1:1".into(),
            reason: "refused".into(),
        });
        assert!(matches!(e, ProviderError::Upstream { status: 502, .. }));
    }

    #[test]
    fn facts_come_from_the_rendered_job() {
        let spec = FunctionDeployment {
            service: "echo".into(),
            namespace: "team-a".into(),
            image: "ghcr.io/x/echo:1".into(),
            labels: Some([(scale_labels::MIN.to_string(), "3".to_string())].into()),
            ..Default::default()
        };
        let job = render::render_job(&spec, 3, &RenderOptions::default()).unwrap();
        let (key, f) = facts_of(&job).unwrap();
        assert_eq!(key.to_string(), "echo.team-a");
        assert_eq!(f.count, 3);
        assert_eq!(f.service, render::service_name(&key));
        assert_eq!(f.spec, spec);
        assert!(!f.task.is_empty() && !f.group.is_empty());
        assert_eq!(
            ScaleSettings::from_deployment(&f.spec).cold_start_replicas(),
            3
        );
        let s = status(&key, &f, 2, 0);
        assert_eq!((s.replicas, s.available_replicas), (3, 2));
        assert_eq!(s.labels[crate::model::types::LABEL_FUNCTION], "echo");
        assert_eq!(s.namespace, "team-a");
    }

    /// A Nomad that answers every request with `allocations` (index 7).
    async fn nomad_answering(allocations: Value) -> Arc<NomadClient> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let body = allocations.to_string();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        let mut r = http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(body.clone()),
                        ));
                        r.headers_mut()
                            .insert("x-nomad-index", http::HeaderValue::from_static("7"));
                        async move { Ok::<_, std::convert::Infallible>(r) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                });
            }
        });
        let settings =
            NomadSettings::from_env(|k| (k == "NOMAD_ADDR").then(|| format!("http://{addr}")))
                .unwrap();
        Arc::new(NomadClient::new(&settings))
    }

    /// A publisher routing to replica `a1`, drained for a scale-down whose stop was ordered.
    fn drained_a1() -> (Arc<Publisher>, Arc<crate::dataplane::Replica>) {
        let key = FunctionKey::new("f", "").unwrap();
        let handle = Arc::new(crate::dataplane::FunctionHandle::new(key));
        let publisher = Arc::new(Publisher::new(handle, 2, ScaleSettings::default()));
        let a1 = crate::dataplane::Replica::new("a1", "127.0.0.1:1".parse().unwrap());
        publisher.set_replicas(vec![a1.clone()]);
        publisher.drain(&["a1".to_string()]);
        publisher.commit_drain(&["a1".to_string()]);
        assert!(publisher.replicas().is_empty());
        (publisher, a1)
    }

    #[tokio::test]
    async fn an_allocation_nomad_keeps_goes_back_in_rotation() {
        let nomad = nomad_answering(json!([{"ID": "a1", "Name": "j.fn[1]", "TaskGroup": "fn",
            "DesiredStatus": "run", "ClientStatus": "running"}]))
        .await;
        let (publisher, a1) = drained_a1();
        let within = Duration::from_millis(300);
        confirm_stops(
            nomad,
            publisher.clone(),
            "j".into(),
            vec!["a1".into()],
            within,
        )
        .await;
        assert!(publisher.draining().is_empty());
        assert!(!a1.is_draining());
        assert_eq!(publisher.replicas().len(), 1);
    }

    #[tokio::test]
    async fn an_allocation_nomad_stops_stays_out() {
        let nomad = nomad_answering(json!([{"ID": "a1", "Name": "j.fn[1]", "TaskGroup": "fn",
            "DesiredStatus": "stop", "ClientStatus": "running"}]))
        .await;
        let (publisher, a1) = drained_a1();
        // Returns as soon as Nomad is seen stopping it, well before the bound.
        let within = Duration::from_secs(60);
        tokio::time::timeout(
            Duration::from_secs(30),
            confirm_stops(
                nomad,
                publisher.clone(),
                "j".into(),
                vec!["a1".into()],
                within,
            ),
        )
        .await
        .expect("confirm_stops returns once the stop is seen");
        assert_eq!(publisher.draining(), ["a1"]);
        assert!(a1.is_draining() && publisher.replicas().is_empty());
    }

    #[test]
    fn consul_discovery_sets_service_providers() {
        let mut job = json!({"TaskGroups": [{"Services": [{"Name": "a", "Provider": "nomad"}],
            "Tasks": [{"Services": [{"Name": "b"}]}]}]});
        set_service_provider(&mut job, "consul");
        assert_eq!(job["TaskGroups"][0]["Services"][0]["Provider"], "consul");
        assert_eq!(
            job["TaskGroups"][0]["Tasks"][0]["Services"][0]["Provider"],
            "consul"
        );
    }
}
