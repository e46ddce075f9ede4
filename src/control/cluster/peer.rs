//! HTTP to the other gateways of the cluster: one pooled client for the demand pull and the
//! requests a follower hands to the leader, carrying this gateway's basic-auth credentials
//! (every gateway of a cluster has the same).

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub struct PeerClient {
    client: Client<HttpConnector, Full<Bytes>>,
    authorization: Option<HeaderValue>,
}

impl PeerClient {
    /// `authorization`: the gateway's credentials, when auth is on.
    pub fn new(authorization: Option<HeaderValue>) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            authorization,
        }
    }

    /// Sends `body` to `path_and_query` on `member` (`host:port`); its status and body, the
    /// body cut off past `limit` bytes as an error.
    pub async fn call(
        &self,
        member: &str,
        method: Method,
        path_and_query: &str,
        headers: &[(HeaderName, &'static str)],
        body: Bytes,
        limit: usize,
    ) -> Result<(StatusCode, Bytes), String> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{member}{path_and_query}"))
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        for (name, value) in headers {
            req.headers_mut()
                .insert(name.clone(), HeaderValue::from_static(value));
        }
        if let Some(auth) = &self.authorization {
            req.headers_mut().insert(AUTHORIZATION, auth.clone());
        }
        let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), limit)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    }
}
