//! A scale-down that loses nothing at any gateway: the gateway about to lower a function's
//! count tells every member which allocations Nomad will stop, and calls scale only once
//! their requests in flight through every gateway are done (bounded).
//!
//! The gateway making the call (the leader for the scaler's decisions, any gateway for a
//! manual `/system/scale-function`) computes the set once (`control::nomad::scale_down`,
//! the highest name indexes) and announces it; members do not compute it themselves, as their
//! views of the allocations may differ by a blocking query. Each member takes the allocations
//! out of rotation, answers when its own requests on them are done or the bound passed, and
//! watches Nomad stop them (what Nomad keeps running goes back in rotation, as at the caller:
//! this is also what puts them back if the caller dies before its call).
//!
//! Invariants:
//! - The caller waits for every member in parallel and at most its own drain bound (plus
//!   [`SLACK`] for the answer to travel): a member that is down or partitioned does not hold
//!   a scale-down back, and its requests on those allocations are covered by the function
//!   job's `shutdown_delay` (catalog deregistration reaches it before the task is signalled).
//! - A call that does not happen (superseded by a newer one, or refused by Nomad) is
//!   cancelled at every member: the allocations go back in rotation at once.
//! - The exchange is `/system/cluster/drain`, behind the gateway's basic auth like every
//!   `/system` route, and never reachable from `/function/*`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::control::cluster::peer::PeerClient;
use crate::model::names::FunctionKey;

/// Where members take a drain.
pub const PATH: &str = "/system/cluster/drain";
/// How long past the drain bound a member's answer may take to arrive.
pub const SLACK: Duration = Duration::from_secs(2);
/// The longest wait a member accepts.
pub const MAX_WAIT: Duration = Duration::from_secs(600);
/// The most allocations one announcement may name.
pub const MAX_ALLOCATIONS: usize = 10_000;

/// `POST /system/cluster/drain`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DrainRequest {
    /// `name.namespace`.
    pub function: String,
    /// The allocations Nomad will stop.
    pub allocations: Vec<String>,
    /// How long the member may wait for its requests on them (milliseconds).
    #[serde(default)]
    pub wait_ms: u64,
    /// The scale call will not happen: put the allocations back in rotation.
    #[serde(default)]
    pub cancel: bool,
}

/// A member's answer.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DrainAnswer {
    /// Requests still in flight on the allocations when the member answered.
    pub inflight: u64,
}

/// What the members said, for the caller's log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MembersDrained {
    /// Members whose requests on the allocations are done.
    pub done: usize,
    /// Members that answered with requests still in flight at the bound.
    pub busy: usize,
    /// Members that did not answer in time (down, partitioned, or too slow).
    pub silent: usize,
}

/// Announces drains to the members.
pub struct MemberDrain {
    peers: Arc<PeerClient>,
}

impl DrainRequest {
    /// The request's checks: a function key, a bounded list of allocation ids, a bounded
    /// wait. The error names the field.
    pub fn validate(&self) -> Result<(FunctionKey, Duration), String> {
        let key = FunctionKey::parse_segment(self.function.trim(), "")
            .map_err(|e| format!("function: {e}"))?;
        if self.allocations.len() > MAX_ALLOCATIONS {
            return Err(format!(
                "allocations: {} named, at most {MAX_ALLOCATIONS}",
                self.allocations.len()
            ));
        }
        if self.allocations.iter().any(|a| a.is_empty()) {
            return Err("allocations: an allocation id is empty".into());
        }
        let wait = Duration::from_millis(self.wait_ms);
        if wait > MAX_WAIT {
            return Err(format!(
                "waitMs: {} is over the limit of {}",
                self.wait_ms,
                MAX_WAIT.as_millis()
            ));
        }
        Ok((key, wait))
    }
}

impl MemberDrain {
    pub fn new(peers: Arc<PeerClient>) -> Self {
        Self { peers }
    }

    /// Asks every member to drain `allocations` of `function` and waits for their answers,
    /// at most `bound` + [`SLACK`].
    pub async fn drain(
        &self,
        members: &[String],
        function: &FunctionKey,
        allocations: &[String],
        bound: Duration,
    ) -> MembersDrained {
        let body = request(function, allocations, bound, false);
        let calls = members
            .iter()
            .map(|m| self.send(m, body.clone(), bound + SLACK));
        let mut out = MembersDrained::default();
        for answer in futures_util::future::join_all(calls).await {
            match answer {
                Some(a) if a.inflight == 0 => out.done += 1,
                Some(_) => out.busy += 1,
                None => out.silent += 1,
            }
        }
        out
    }

    /// Tells every member the scale call will not happen (best effort: a member that does
    /// not hear it puts the allocations back once it sees Nomad keep them running).
    pub async fn cancel(&self, members: &[String], function: &FunctionKey, allocations: &[String]) {
        let body = request(function, allocations, Duration::ZERO, true);
        let calls = members.iter().map(|m| self.send(m, body.clone(), SLACK));
        futures_util::future::join_all(calls).await;
    }

    async fn send(&self, member: &str, body: Bytes, within: Duration) -> Option<DrainAnswer> {
        let call = self.peers.call(
            member,
            Method::POST,
            PATH,
            &[(CONTENT_TYPE, "application/json")],
            body,
            1024,
        );
        match tokio::time::timeout(within, call).await {
            Ok(Ok((StatusCode::OK, body))) => serde_json::from_slice(&body).ok(),
            Ok(Ok((status, body))) => {
                tracing::warn!(member, %status, answer = %String::from_utf8_lossy(&body),
                    "cluster: a member refused a drain");
                None
            }
            Ok(Err(e)) => {
                tracing::warn!(member, error = %e, "cluster: drain announcement failed");
                None
            }
            Err(_) => None,
        }
    }
}

fn request(function: &FunctionKey, allocations: &[String], bound: Duration, cancel: bool) -> Bytes {
    let req = DrainRequest {
        function: function.to_string(),
        allocations: allocations.to_vec(),
        wait_ms: u64::try_from(bound.as_millis()).unwrap_or(u64::MAX),
        cancel,
    };
    Bytes::from(serde_json::to_vec(&req).expect("a drain request serialises"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(function: &str, allocations: &[&str], wait_ms: u64) -> DrainRequest {
        DrainRequest {
            function: function.into(),
            allocations: allocations.iter().map(|a| a.to_string()).collect(),
            wait_ms,
            cancel: false,
        }
    }

    #[test]
    fn a_request_round_trips_and_is_checked_naming_the_field() {
        let key = FunctionKey::parse_segment("echo.openfaas-fn", "").unwrap();
        let body = request(&key, &["a1".into()], Duration::from_secs(3), false);
        let back: DrainRequest = serde_json::from_slice(&body).unwrap();
        assert_eq!(back, req("echo.openfaas-fn", &["a1"], 3000));
        assert_eq!(back.validate().unwrap(), (key, Duration::from_secs(3)));
        let err = |r: DrainRequest| r.validate().unwrap_err();
        assert!(err(req("", &["a1"], 0)).starts_with("function:"));
        assert!(err(req("a/b", &["a1"], 0)).starts_with("function:"));
        assert!(err(req("echo", &[""], 0)).starts_with("allocations:"));
        assert!(err(req("echo", &["a1"], 600_001)).starts_with("waitMs:"));
        let many: Vec<String> = (0..=MAX_ALLOCATIONS).map(|i| i.to_string()).collect();
        let mut r = req("echo", &[], 0);
        r.allocations = many;
        assert!(err(r).starts_with("allocations:"));
        // Fields left out take their defaults; unknown ones are ignored.
        let r: DrainRequest =
            serde_json::from_str(r#"{"function":"echo","allocations":[],"x":1}"#).unwrap();
        assert_eq!((r.wait_ms, r.cancel), (0, false));
    }
}
