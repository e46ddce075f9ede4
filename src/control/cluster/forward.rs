//! A follower's way to the leader: what must be decided once for the whole cluster (an
//! Alertmanager alert, a scale from zero) is sent to every member, and only the leader acts
//! on it.
//!
//! A follower does not know which member leads (Nomad shows a lock's holder to management
//! tokens only), so it asks them all at once; each marks the request as forwarded
//! ([`FORWARDED`]) and a member that does not lead answers [`NOT_LEADER`] (421 Misdirected
//! Request) without acting. The leader's answer is the answer. Forwarded requests are never
//! forwarded again, and carry the gateway's basic-auth credentials like every `/system` call.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Marks a request a member forwarded.
pub const FORWARDED: HeaderName = HeaderName::from_static("x-faasgate-forwarded");
/// A member that does not lead answers a forwarded request with this status.
pub const NOT_LEADER: StatusCode = StatusCode::MISDIRECTED_REQUEST;
/// An answer from the leader larger than this is cut (alerts answer a line per alert).
const MAX_ANSWER: usize = 64 * 1024;

/// Sends requests to the members and keeps the leader's answer.
pub struct LeaderForward {
    client: Client<HttpConnector, Full<Bytes>>,
    authorization: Option<HeaderValue>,
    timeout: Duration,
}

impl LeaderForward {
    pub fn new(authorization: Option<HeaderValue>, timeout: Duration) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            authorization,
            timeout,
        }
    }

    /// Sends `body` to `path` on every member; the leader's status and body, or `None` when
    /// no member answered as leader within the timeout.
    pub async fn send(
        &self,
        members: &[String],
        method: Method,
        path: &str,
        content_type: &'static str,
        body: Bytes,
    ) -> Option<(StatusCode, Bytes)> {
        let calls = members.iter().map(|member| {
            let (method, body) = (method.clone(), body.clone());
            async move {
                let mut req = Request::builder()
                    .method(method)
                    .uri(format!("http://{member}{path}"))
                    .header(CONTENT_TYPE, content_type)
                    .header(FORWARDED, "1")
                    .body(Full::new(body))
                    .ok()?;
                if let Some(auth) = &self.authorization {
                    req.headers_mut().insert(AUTHORIZATION, auth.clone());
                }
                let call = async {
                    let resp = self.client.request(req).await.ok()?;
                    let status = resp.status();
                    if status == NOT_LEADER {
                        return None;
                    }
                    let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
                        .collect()
                        .await
                        .ok()?
                        .to_bytes();
                    Some((status, body))
                };
                tokio::time::timeout(self.timeout, call)
                    .await
                    .ok()
                    .flatten()
            }
        });
        futures_util::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
            .next()
    }
}
