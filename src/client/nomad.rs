//! The Nomad HTTP API client: one method per endpoint faasgate uses.
//!
//! Every request names the configured namespace and region (`NOMAD_NAMESPACE`,
//! `NOMAD_REGION`) when set; the token goes in `X-Nomad-Token`. Blocking reads take
//! [`QueryOptions`] and return [`Indexed`] values with `X-Nomad-Index` (floored to 1).

use bytes::Bytes;
use http::header::HeaderName;
use http::Method;
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::client::settings::NomadSettings;
use crate::client::transport::{encode, index_of, with_query, Transport, CALL_TIMEOUT};
use crate::client::wire::nomad::{
    Allocation, Evaluation, Job, JobDeregisterResponse, JobListStub, JobRegisterRequest,
    JobRegisterResponse, JobScaleStatus, JobSummary, ScalingRequest, ServiceRegistration,
};
use crate::client::{ClientError, Indexed, QueryOptions};

pub(crate) const TOKEN_HEADER: HeaderName = HeaderName::from_static("x-nomad-token");
pub(crate) const INDEX_HEADER: &str = "x-nomad-index";

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

fn decode<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|e| ClientError::Decode {
        service: "nomad",
        what: what.to_string(),
        reason: e.to_string(),
    })
}
