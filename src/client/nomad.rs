//! The Nomad HTTP API client: one method per endpoint faasgate uses.
//!
//! Every request names the configured namespace and region (`NOMAD_NAMESPACE`,
//! `NOMAD_REGION`) when set; the token goes in `X-Nomad-Token`. Blocking reads take
//! [`QueryOptions`] and return [`Indexed`] values with `X-Nomad-Index` (floored to 1).
//!
//! Variables and variable locks (Nomad 1.7+, `/v1/var/:path`): a path is a [`VarPath`],
//! checked once against Nomad's rule `^[a-zA-Z0-9-_~/]{1,128}$`. Every variable call sends
//! the namespace twice, as `?namespace=` and as the body's `Namespace` (`default` when none
//! is configured): the server takes the body's on writes, acquire and release, but only the
//! query's on renew, so a renew without it would miss a lock held outside `default`. What a
//! lock answer means is typed, not left in an error: acquire answers [`LockOutcome::Held`]
//! on 409 (another ID holds it; the server never says who); renew answers
//! [`RenewOutcome::Lost`] on 409 (wrong ID, no lock, or the lease already ran out) and on
//! 404 `variable doesn't exist`; release answers [`ReleaseOutcome::NotHeld`] on 409 and on
//! the server's 500s for a missing variable or lock. Anything else (unreachable, timeout,
//! 403, another status) stays a [`ClientError`]: the caller decides what a failed renew
//! means (for a leader: stop leading at once). Lock calls are bounded by [`CALL_TIMEOUT`]
//! (30 s), more than a lease's TTL: a leader puts its own deadline on a renew.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderName;
use http::Method;
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::client::settings::NomadSettings;
use crate::client::transport::{encode, index_of, with_query, Transport, CALL_TIMEOUT};
use crate::client::wire::nomad::{
    Allocation, Deployment, DeploymentFailRequest, DeploymentPromoteRequest,
    DeploymentUpdateResponse, Evaluation, Job, JobDeregisterResponse, JobListStub,
    JobRegisterRequest, JobRegisterResponse, JobRevertRequest, JobScaleStatus, JobSummary,
    ScalingRequest, ServiceRegistration,
};
use crate::client::wire::variables::{Items, Variable, VariableLock, VariableMetadata};
use crate::client::{ClientError, Indexed, QueryOptions};

pub(crate) const TOKEN_HEADER: HeaderName = HeaderName::from_static("x-nomad-token");
pub(crate) const INDEX_HEADER: &str = "x-nomad-index";

/// Longest variable path Nomad accepts, in bytes.
pub const VAR_PATH_MAX: usize = 128;
/// The namespace Nomad uses when a request names none.
const DEFAULT_NAMESPACE: &str = "default";
/// Nomad's 404 body for a variable read that finds nothing.
const VAR_NOT_FOUND: &str = "variable not found";
/// Nomad's renew (404) and release (500) body for a missing variable.
const VAR_DOES_NOT_EXIST: &str = "variable doesn't exist";
/// Nomad's release (500) body for a variable without a lock.
const VAR_HOLDS_NO_LOCK: &str = "variable doesn't hold a lock";

/// A client of one Nomad agent.
#[derive(Debug)]
pub struct NomadClient {
    transport: Transport,
    namespace: Option<String>,
    region: Option<String>,
}

/// Which log stream of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogType {
    Stdout,
    Stderr,
}

/// Where a logs read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOrigin {
    /// `offset` bytes from the start.
    Start(u64),
    /// `offset` bytes before the end.
    End(u64),
}

/// A Nomad variable path, checked against `^[a-zA-Z0-9-_~/]{1,128}$`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VarPath(String);

/// A string that is not a Nomad variable path.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid Nomad variable path {path:?}: {rule}")]
pub struct InvalidVarPath {
    pub path: String,
    pub rule: &'static str,
}

/// What `?lock-acquire` answered.
#[derive(Debug, Clone, PartialEq)]
pub enum LockOutcome {
    /// This caller holds the lock; `lock.id` is the proof of ownership renew and release
    /// need. `variable` is the stored variable as the server answered it.
    Acquired {
        lock: VariableLock,
        variable: Box<Variable>,
    },
    /// Another lock ID holds it (409), or its lease ran out and its lock delay has not.
    Held,
}

/// What `?lock-renew` answered.
#[derive(Debug, Clone, PartialEq)]
pub enum RenewOutcome {
    /// The lease restarted; the lock as the server holds it.
    Renewed(VariableLock),
    /// The lock is not this caller's any more; `reason` is the server's text.
    Lost { status: u16, reason: String },
}

/// What `?lock-release` answered.
#[derive(Debug, Clone, PartialEq)]
pub enum ReleaseOutcome {
    /// The lock is gone; another caller may acquire it at once.
    Released,
    /// There was nothing of this caller's to release; `reason` is the server's answer.
    NotHeld { status: u16, reason: String },
}

/// What a plain write (`PUT /v1/var/:path[?cas=N]`) answered.
#[derive(Debug, Clone, PartialEq)]
pub enum PutOutcome {
    /// Stored; the variable as the server answered it (its `ModifyIndex` is the next CAS
    /// token).
    Written(Variable),
    /// 409: the check-and-set did not hold, or another lock ID holds the variable. The body
    /// is the current variable, or the zero variable (`ModifyIndex` 0, only `Namespace` and
    /// `Path`) when it is absent or locked.
    Conflict(Variable),
}

/// What `DELETE /v1/var/:path[?cas=N]` answered.
#[derive(Debug, Clone, PartialEq)]
pub enum DeleteOutcome {
    /// 204: gone (deleting a missing path succeeds too, as in Nomad).
    Deleted,
    /// 409, with the body as [`PutOutcome::Conflict`] describes.
    Conflict(Variable),
}

/// Which lock operation a variable write is (its query key).
#[derive(Debug, Clone, Copy)]
enum LockOp {
    Acquire,
    Renew,
    Release,
}

// === impl VarPath ===

impl VarPath {
    pub fn new(path: impl Into<String>) -> Result<Self, InvalidVarPath> {
        let path = path.into();
        let err = |rule| InvalidVarPath {
            path: path.clone(),
            rule,
        };
        if path.is_empty() || path.len() > VAR_PATH_MAX {
            return Err(err("a path is 1 to 128 bytes long"));
        }
        if !path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~' | b'/'))
        {
            return Err(err(
                "only letters, digits, '-', '_', '~' and '/' are allowed (no '.', no '@')",
            ));
        }
        Ok(Self(path))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `/v1/var/<path>`: every allowed character is URL-safe, slashes included.
    fn url(&self) -> String {
        format!("/v1/var/{}", self.0)
    }
}

impl fmt::Display for VarPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for VarPath {
    type Err = InvalidVarPath;

    fn from_str(s: &str) -> Result<Self, InvalidVarPath> {
        Self::new(s)
    }
}

// === impl LockOp ===

impl LockOp {
    fn key(self) -> &'static str {
        match self {
            LockOp::Acquire => "lock-acquire",
            LockOp::Renew => "lock-renew",
            LockOp::Release => "lock-release",
        }
    }
}

// === impl NomadClient ===

impl NomadClient {
    pub fn new(settings: &NomadSettings) -> Self {
        Self {
            transport: Transport::new(
                "nomad",
                settings.endpoint.clone(),
                TOKEN_HEADER,
                &settings.token,
                settings.http_auth.as_ref(),
            )
            .with_tls(settings.tls.clone()),
            namespace: settings.namespace.clone(),
            region: settings.region.clone(),
        }
    }

    /// The Nomad namespace requests name (`None` = the server's default, `default`).
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    pub fn address(&self) -> String {
        self.transport.endpoint().to_string()
    }

    /// `GET /v1/jobs?prefix=&meta=true` (stopped jobs included).
    pub async fn list_jobs(
        &self,
        prefix: &str,
        q: QueryOptions,
    ) -> Result<Indexed<Vec<JobListStub>>, ClientError> {
        let mut p = vec![("prefix", prefix.to_string()), ("meta", "true".to_string())];
        p.extend(q.pairs());
        self.get_json("/v1/jobs", p, q).await
    }

    /// `GET /v1/job/:id`: the job as sent back by the server (canonicalised).
    pub async fn job(&self, id: &str) -> Result<Indexed<Value>, ClientError> {
        let path = format!("/v1/job/{}", encode(id));
        self.get_json(&path, Vec::new(), QueryOptions::default())
            .await
    }

    /// `GET /v1/job/:id/summary`.
    pub async fn job_summary(&self, id: &str) -> Result<JobSummary, ClientError> {
        let path = format!("/v1/job/{}/summary", encode(id));
        Ok(self
            .get_json(&path, Vec::new(), QueryOptions::default())
            .await?
            .value)
    }

    /// `POST /v1/jobs`: register or update.
    pub async fn register(
        &self,
        req: &JobRegisterRequest,
    ) -> Result<JobRegisterResponse, ClientError> {
        self.write_json(Method::POST, "/v1/jobs", Vec::new(), Some(req))
            .await
    }

    /// `DELETE /v1/job/:id?purge=`.
    pub async fn deregister(
        &self,
        id: &str,
        purge: bool,
    ) -> Result<JobDeregisterResponse, ClientError> {
        let path = format!("/v1/job/{}", encode(id));
        self.write_json::<(), _>(
            Method::DELETE,
            &path,
            vec![("purge", purge.to_string())],
            None,
        )
        .await
    }

    /// `POST /v1/job/:id/scale`.
    pub async fn scale(
        &self,
        id: &str,
        req: &ScalingRequest,
    ) -> Result<JobRegisterResponse, ClientError> {
        let path = format!("/v1/job/{}/scale", encode(id));
        self.write_json(Method::POST, &path, Vec::new(), Some(req))
            .await
    }

    /// `GET /v1/job/:id/scale`.
    pub async fn scale_status(&self, id: &str) -> Result<JobScaleStatus, ClientError> {
        let path = format!("/v1/job/{}/scale", encode(id));
        Ok(self
            .get_json(&path, Vec::new(), QueryOptions::default())
            .await?
            .value)
    }

    /// `GET /v1/job/:id/deployment`: the job's most recent deployment (`None`: it never had
    /// one; Nomad answers 200 with `null`).
    pub async fn latest_deployment(
        &self,
        job_id: &str,
        q: QueryOptions,
    ) -> Result<Indexed<Option<Deployment>>, ClientError> {
        let path = format!("/v1/job/{}/deployment", encode(job_id));
        self.get_json(&path, q.pairs(), q).await
    }

    /// `POST /v1/deployment/promote/:id` with `All`.
    pub async fn promote_deployment(
        &self,
        id: &str,
    ) -> Result<DeploymentUpdateResponse, ClientError> {
        let path = format!("/v1/deployment/promote/{}", encode(id));
        let req = DeploymentPromoteRequest {
            deployment_id: id.to_string(),
            all: true,
        };
        self.write_json(Method::POST, &path, Vec::new(), Some(&req))
            .await
    }

    /// `POST /v1/deployment/fail/:id`.
    pub async fn fail_deployment(&self, id: &str) -> Result<DeploymentUpdateResponse, ClientError> {
        let path = format!("/v1/deployment/fail/{}", encode(id));
        let req = DeploymentFailRequest {
            deployment_id: id.to_string(),
        };
        self.write_json(Method::POST, &path, Vec::new(), Some(&req))
            .await
    }

    /// `POST /v1/job/:id/revert`: registers version `to` again, as a new version, if the job
    /// is still at `from`.
    pub async fn revert_job(
        &self,
        job_id: &str,
        to: u64,
        from: u64,
    ) -> Result<JobRegisterResponse, ClientError> {
        let path = format!("/v1/job/{}/revert", encode(job_id));
        let req = JobRevertRequest {
            job_id: job_id.to_string(),
            job_version: to,
            enforce_prior_version: Some(from),
        };
        self.write_json(Method::POST, &path, Vec::new(), Some(&req))
            .await
    }

    /// `GET /v1/job/:id/allocations` (no `AllocatedResources`; see the reference 6.6).
    pub(crate) async fn job_allocations(
        &self,
        id: &str,
        q: QueryOptions,
    ) -> Result<Indexed<Vec<Allocation>>, ClientError> {
        let path = format!("/v1/job/{}/allocations", encode(id));
        self.get_json(&path, q.pairs(), q).await
    }

    /// `GET /v1/service/:name`: every registration of a Nomad-provider service (no health
    /// filter exists in Nomad's catalog).
    pub async fn service(
        &self,
        name: &str,
        q: QueryOptions,
    ) -> Result<Indexed<Vec<ServiceRegistration>>, ClientError> {
        let path = format!("/v1/service/{}", encode(name));
        self.get_json(&path, q.pairs(), q).await
    }

    /// `GET /v1/evaluation/:id`.
    pub async fn evaluation(&self, id: &str) -> Result<Evaluation, ClientError> {
        let path = format!("/v1/evaluation/{}", encode(id));
        Ok(self
            .get_json(&path, Vec::new(), QueryOptions::default())
            .await?
            .value)
    }

    /// `GET /v1/client/fs/logs/:alloc?task=&type=&plain=true&follow=&origin=&offset=`: the
    /// task's raw output as a streaming body.
    pub async fn logs(
        &self,
        alloc_id: &str,
        task: &str,
        kind: LogType,
        origin: LogOrigin,
        follow: bool,
    ) -> Result<Incoming, ClientError> {
        let (origin, offset) = match origin {
            LogOrigin::Start(o) => ("start", o),
            LogOrigin::End(o) => ("end", o),
        };
        let mut p = vec![
            ("task", task.to_string()),
            (
                "type",
                match kind {
                    LogType::Stdout => "stdout",
                    LogType::Stderr => "stderr",
                }
                .to_string(),
            ),
            ("plain", "true".to_string()),
            ("follow", follow.to_string()),
            ("origin", origin.to_string()),
            ("offset", offset.to_string()),
        ];
        self.scope(&mut p);
        let path = with_query(&format!("/v1/client/fs/logs/{}", encode(alloc_id)), &p);
        Ok(self.transport.stream(&path).await?.into_body())
    }

    /// `GET /v1/var/:path?namespace=`: the variable, or `None` when Nomad answers 404
    /// `variable not found`.
    pub async fn var_read(&self, path: &VarPath) -> Result<Option<Variable>, ClientError> {
        let url = with_query(&path.url(), &self.var_scope(None));
        match self
            .transport
            .send(Method::GET, &url, None, CALL_TIMEOUT)
            .await
        {
            Ok(reply) => decode(&reply.body, &path.url()).map(Some),
            Err(ClientError::Status {
                status: 404,
                message,
                ..
            }) if message == VAR_NOT_FOUND => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /v1/vars?prefix=&namespace=`: the metadata (never the items) of every variable
    /// whose path starts with `prefix` (a plain string prefix, `""` for all), in the
    /// client's namespace. A blocking list with `q` wakes on *any* variable write in the
    /// region: diff what it returns. Nomad pages only when asked (`per_page`), so one call
    /// returns the whole list.
    pub async fn var_list(
        &self,
        prefix: &str,
        q: QueryOptions,
    ) -> Result<Indexed<Vec<VariableMetadata>>, ClientError> {
        let mut p = self.var_scope(None);
        p.push(("prefix", prefix.to_string()));
        p.extend(q.pairs());
        let url = with_query("/v1/vars", &p);
        let reply = self
            .transport
            .send(Method::GET, &url, None, q.timeout(CALL_TIMEOUT))
            .await?;
        Ok(Indexed {
            value: decode(&reply.body, "/v1/vars")?,
            index: index_of(&reply.headers, INDEX_HEADER),
        })
    }

    /// `PUT /v1/var/:path[?cas=N]` with `{Namespace, Path, Items}`: replaces the whole item
    /// map. `cas: Some(0)` creates only if absent; `Some(n)` writes only if the stored
    /// `ModifyIndex` is `n`; `None` writes unconditionally. A 409 is
    /// [`PutOutcome::Conflict`] with the server's body; Nomad refuses empty `items` (400).
    pub async fn var_put(
        &self,
        path: &VarPath,
        items: &Items,
        cas: Option<u64>,
    ) -> Result<PutOutcome, ClientError> {
        let body = Variable {
            meta: VariableMetadata {
                namespace: self.var_namespace().to_string(),
                path: path.as_str().to_string(),
                ..Default::default()
            },
            items: items.clone(),
        };
        let body = serde_json::to_vec(&body).map_err(|e| ClientError::Decode {
            service: "nomad",
            what: path.url(),
            reason: format!("cannot encode the request: {e}"),
        })?;
        let url = with_query(&path.url(), &self.var_cas_scope(cas));
        match self
            .transport
            .send(Method::PUT, &url, Some(Bytes::from(body)), CALL_TIMEOUT)
            .await
        {
            Ok(reply) => decode(&reply.body, &path.url()).map(PutOutcome::Written),
            Err(e) => conflict_body(e).map(PutOutcome::Conflict),
        }
    }

    /// `DELETE /v1/var/:path[?cas=N]`: 204 and no body on success, a missing path included
    /// (with `cas` a missing path is a conflict). A 409 is [`DeleteOutcome::Conflict`].
    pub async fn var_delete(
        &self,
        path: &VarPath,
        cas: Option<u64>,
    ) -> Result<DeleteOutcome, ClientError> {
        let url = with_query(&path.url(), &self.var_cas_scope(cas));
        match self
            .transport
            .send(Method::DELETE, &url, None, CALL_TIMEOUT)
            .await
        {
            Ok(_) => Ok(DeleteOutcome::Deleted),
            Err(e) => conflict_body(e).map(DeleteOutcome::Conflict),
        }
    }

    /// `PUT /v1/var/:path?lock-acquire`: creates the variable if absent and locks it with a
    /// lease of `ttl` (Nomad: 10 s to 24 h; zero means its default, 15 s) and a `lock_delay`
    /// (zero: 15 s). The variable's items become empty: keep lock variables apart from data.
    pub async fn var_lock_acquire(
        &self,
        path: &VarPath,
        ttl: Duration,
        lock_delay: Duration,
    ) -> Result<LockOutcome, ClientError> {
        let lock = VariableLock {
            id: String::new(),
            ttl,
            lock_delay,
        };
        match self.var_lock_op(path, LockOp::Acquire, lock).await {
            Ok(variable) => match variable.meta.lock.clone() {
                Some(lock) if !lock.id.is_empty() => Ok(LockOutcome::Acquired {
                    lock,
                    variable: Box::new(variable),
                }),
                _ => Err(ClientError::Decode {
                    service: "nomad",
                    what: path.url(),
                    reason: "the lock-acquire answer carries no Lock.ID".into(),
                }),
            },
            Err(e) if e.status() == Some(409) => Ok(LockOutcome::Held),
            Err(e) => Err(e),
        }
    }

    /// `PUT /v1/var/:path?lock-renew`: restarts the lease of the lock `lock_id`.
    pub async fn var_lock_renew(
        &self,
        path: &VarPath,
        lock_id: &str,
    ) -> Result<RenewOutcome, ClientError> {
        match self
            .var_lock_op(path, LockOp::Renew, Self::lock_ref(lock_id))
            .await
        {
            Ok(variable) => match variable.meta.lock {
                Some(lock) => Ok(RenewOutcome::Renewed(lock)),
                None => Err(ClientError::Decode {
                    service: "nomad",
                    what: path.url(),
                    reason: "the lock-renew answer carries no Lock".into(),
                }),
            },
            Err(ClientError::Status {
                status, message, ..
            }) if status == 409 || (status == 404 && message == VAR_DOES_NOT_EXIST) => {
                Ok(RenewOutcome::Lost {
                    status,
                    reason: message,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// `PUT /v1/var/:path?lock-release`: drops the lock `lock_id` (the items stay).
    pub async fn var_lock_release(
        &self,
        path: &VarPath,
        lock_id: &str,
    ) -> Result<ReleaseOutcome, ClientError> {
        match self
            .var_lock_op(path, LockOp::Release, Self::lock_ref(lock_id))
            .await
        {
            Ok(_) => Ok(ReleaseOutcome::Released),
            Err(ClientError::Status {
                status, message, ..
            }) if status == 409
                || (status == 500
                    && (message == VAR_DOES_NOT_EXIST || message == VAR_HOLDS_NO_LOCK)) =>
            {
                Ok(ReleaseOutcome::NotHeld {
                    status,
                    reason: message,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The namespace variable calls name: the configured one, else Nomad's default.
    fn var_namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
    }

    /// `namespace` (always) and `region` (when set), then `op`'s key.
    fn var_scope(&self, op: Option<LockOp>) -> Vec<(&'static str, String)> {
        let mut p = vec![("namespace", self.var_namespace().to_string())];
        if let Some(r) = &self.region {
            p.push(("region", r.clone()));
        }
        if let Some(op) = op {
            p.push((op.key(), String::new()));
        }
        p
    }

    /// [`Self::var_scope`] without a lock op, plus `cas` when given.
    fn var_cas_scope(&self, cas: Option<u64>) -> Vec<(&'static str, String)> {
        let mut p = self.var_scope(None);
        if let Some(n) = cas {
            p.push(("cas", n.to_string()));
        }
        p
    }

    fn lock_ref(id: &str) -> VariableLock {
        VariableLock {
            id: id.to_string(),
            ..Default::default()
        }
    }

    /// One lock operation: `{Namespace, Path, Lock}` to `PUT /v1/var/:path?<op>`.
    async fn var_lock_op(
        &self,
        path: &VarPath,
        op: LockOp,
        lock: VariableLock,
    ) -> Result<Variable, ClientError> {
        let body = Variable {
            meta: VariableMetadata {
                namespace: self.var_namespace().to_string(),
                path: path.as_str().to_string(),
                lock: Some(lock),
                ..Default::default()
            },
            items: Default::default(),
        };
        let body = serde_json::to_vec(&body).map_err(|e| ClientError::Decode {
            service: "nomad",
            what: path.url(),
            reason: format!("cannot encode the request: {e}"),
        })?;
        let url = with_query(&path.url(), &self.var_scope(Some(op)));
        let reply = self
            .transport
            .send(Method::PUT, &url, Some(Bytes::from(body)), CALL_TIMEOUT)
            .await?;
        decode(&reply.body, &path.url())
    }

    fn scope(&self, p: &mut Vec<(&'static str, String)>) {
        if let Some(ns) = &self.namespace {
            p.push(("namespace", ns.clone()));
        }
        if let Some(r) = &self.region {
            p.push(("region", r.clone()));
        }
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        mut pairs: Vec<(&'static str, String)>,
        q: QueryOptions,
    ) -> Result<Indexed<T>, ClientError> {
        self.scope(&mut pairs);
        let url = with_query(path, &pairs);
        let reply = self
            .transport
            .send(Method::GET, &url, None, q.timeout(CALL_TIMEOUT))
            .await?;
        let value = decode(&reply.body, path)?;
        Ok(Indexed {
            value,
            index: index_of(&reply.headers, INDEX_HEADER),
        })
    }

    async fn write_json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        mut pairs: Vec<(&'static str, String)>,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        self.scope(&mut pairs);
        let url = with_query(path, &pairs);
        let body = match body {
            Some(b) => Some(Bytes::from(serde_json::to_vec(b).map_err(|e| {
                ClientError::Decode {
                    service: "nomad",
                    what: path.to_string(),
                    reason: format!("cannot encode the request: {e}"),
                }
            })?)),
            None => None,
        };
        let reply = self
            .transport
            .send(method, &url, body, CALL_TIMEOUT)
            .await?;
        decode(&reply.body, path)
    }
}

/// Typed view of a job read with [`NomadClient::job`].
pub fn job_view(job: &Value) -> Result<Job, ClientError> {
    Job::deserialize(job).map_err(|e| ClientError::Decode {
        service: "nomad",
        what: "job".into(),
        reason: e.to_string(),
    })
}

/// A 409's body as the variable it carries (Nomad answers CAS and lock conflicts with JSON);
/// any other error, or a 409 whose body is not a variable, stays the error.
fn conflict_body(e: ClientError) -> Result<Variable, ClientError> {
    match &e {
        ClientError::Status {
            status: 409,
            message,
            ..
        } => serde_json::from_str::<Variable>(message).map_err(|_| e),
        _ => Err(e),
    }
}

fn decode<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|e| ClientError::Decode {
        service: "nomad",
        what: what.to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_paths_follow_nomads_rule() {
        for ok in [
            "faasgate/leader",
            "a",
            "A-b_c~d/e/0",
            "nomad/jobs/fn",
            &"x".repeat(128),
        ] {
            assert_eq!(VarPath::new(ok).unwrap().as_str(), ok);
        }
        let e = VarPath::new("").unwrap_err();
        assert!(e.to_string().contains("1 to 128 bytes"), "{e}");
        assert!(VarPath::new("x".repeat(129)).is_err());
        for bad in ["db.password", "a@prod", "a b", "a?b", "é", "a%2Fb"] {
            let e = VarPath::new(bad).unwrap_err();
            assert_eq!(e.path, bad);
            assert!(e.to_string().contains("no '.'"), "{e}");
        }
        assert!("faasgate/leader".parse::<VarPath>().is_ok());
    }
}
