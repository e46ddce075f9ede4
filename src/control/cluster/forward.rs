//! A follower's way to the leader: what must be decided once for the whole cluster (an
//! Alertmanager alert, a scale from zero) is sent to every member, and only the leader acts
//! on it.
//!
//! A follower does not know which member leads (Nomad shows a lock's holder to management
//! tokens only), so it asks them all at once; each marks the request as forwarded
//! ([`FORWARDED`]) and a member that does not lead answers [`NOT_LEADER`] (421 Misdirected
//! Request) without acting. The leader's answer is the answer. Forwarded requests are never
//! forwarded again, and carry the gateway's basic-auth credentials like every `/system` call.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, CONTENT_TYPE};
use http::{Method, StatusCode};

use crate::control::cluster::peer::PeerClient;

/// Marks a request a member forwarded.
pub const FORWARDED: HeaderName = HeaderName::from_static("x-faasgate-forwarded");
/// A member that does not lead answers a forwarded request with this status.
pub const NOT_LEADER: StatusCode = StatusCode::MISDIRECTED_REQUEST;
/// An answer from the leader larger than this is cut (alerts answer a line per alert).
const MAX_ANSWER: usize = 64 * 1024;

/// Sends requests to the members and keeps the leader's answer.
pub struct LeaderForward {
    peers: Arc<PeerClient>,
    timeout: Duration,
}

impl LeaderForward {
    pub fn new(peers: Arc<PeerClient>, timeout: Duration) -> Self {
        Self { peers, timeout }
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
        let headers = [(CONTENT_TYPE, content_type), (FORWARDED, "1")];
        let calls = members.iter().map(|member| {
            let call = self.peers.call(
                member,
                method.clone(),
                path,
                &headers,
                body.clone(),
                MAX_ANSWER,
            );
            async move {
                match tokio::time::timeout(self.timeout, call).await {
                    Ok(Ok((status, body))) if status != NOT_LEADER => Some((status, body)),
                    _ => None,
                }
            }
        });
        futures_util::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
            .next()
    }
}
