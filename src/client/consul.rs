//! The Consul HTTP API client: the health and catalog reads discovery needs.

use http::header::HeaderName;
use http::Method;
use serde::de::DeserializeOwned;

use crate::client::settings::ConsulSettings;
use crate::client::transport::{encode, index_of, with_query, Transport, CALL_TIMEOUT};
use crate::client::wire::consul::ServiceEntry;
use crate::client::{ClientError, Indexed, QueryOptions};

pub(crate) const TOKEN_HEADER: HeaderName = HeaderName::from_static("x-consul-token");
pub(crate) const INDEX_HEADER: &str = "x-consul-index";

/// A client of one Consul agent.
#[derive(Debug)]
pub struct ConsulClient {
    transport: Transport,
    namespace: Option<String>,
}

// === impl ConsulClient ===

impl ConsulClient {
    pub fn new(settings: &ConsulSettings) -> Self {
        Self {
            transport: Transport::new(
                "consul",
                settings.endpoint.clone(),
                TOKEN_HEADER,
                &settings.token,
                settings.http_auth.as_ref(),
            )
            .with_tls(settings.tls.clone()),
            namespace: settings.namespace.clone(),
        }
    }

    pub fn address(&self) -> String {
        self.transport.endpoint().to_string()
    }

    /// `GET /v1/health/service/:name[?passing]`: instances with their node and checks.
    /// An unknown service is `[]`, never 404.
    pub async fn health_service(
        &self,
        name: &str,
        passing: bool,
        q: QueryOptions,
    ) -> Result<Indexed<Vec<ServiceEntry>>, ClientError> {
        let mut p = Vec::new();
        if passing {
            p.push(("passing", "true".to_string()));
        }
        p.extend(q.pairs());
        self.get_json(&format!("/v1/health/service/{}", encode(name)), p, q)
            .await
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        mut pairs: Vec<(&'static str, String)>,
        q: QueryOptions,
    ) -> Result<Indexed<T>, ClientError> {
        if let Some(ns) = &self.namespace {
            pairs.push(("ns", ns.clone()));
        }
        let url = with_query(path, &pairs);
        let reply = self
            .transport
            .send(Method::GET, &url, None, q.timeout(CALL_TIMEOUT))
            .await?;
        let value = serde_json::from_slice(&reply.body).map_err(|e| ClientError::Decode {
            service: "consul",
            what: path.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Indexed {
            value,
            index: index_of(&reply.headers, INDEX_HEADER),
        })
    }
}
