//! `POST /system/alert`: the Alertmanager webhook (reference sections 2.10 and 5.3).
//!
//! Each alert names a function in its `function_name` label (`name` or `name.namespace`).
//! The function's replicas and `com.openfaas.scale.*` labels come from the provider's status,
//! off the request path; the rule and the replay guard are `control::alert`. Errors follow
//! OpenFaaS: no body 400 `A body is required for this endpoint`, bad JSON 400
//! `Unable to parse alert, bad format.`, any per-alert failure 500 with one `[i] <error>` line
//! per failed alert (the others are still applied), else 200 with an empty body.

use std::collections::BTreeMap;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use super::error::{empty, text, ApiError};
use super::Gateway;
use crate::control::alert::{AlertAction, AlertStatus};
use crate::control::cluster::forward::{FORWARDED, NOT_LEADER};
use crate::control::scaler::{Direction, Reason};
use crate::dataplane::response::GatewayBody;
use crate::model::names::FunctionKey;
use crate::model::scale::ScaleSettings;

pub(crate) const NO_BODY: &str = "A body is required for this endpoint";
pub(crate) const BAD_FORMAT: &str = "Unable to parse alert, bad format.";

/// The Alertmanager webhook payload (the fields used; others are ignored).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AlertMessage {
    #[serde(default)]
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Alert {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub starts_at: String,
    #[serde(default)]
    pub fingerprint: String,
}

pub(crate) async fn alert(
    gw: &Gateway,
    req: Request<Incoming>,
) -> Result<Response<GatewayBody>, ApiError> {
    let forwarded = req.headers().contains_key(FORWARDED);
    let (_, body) = gw.read_body(req).await?;
    if body.is_empty() {
        return Err(ApiError::BadRequest(NO_BODY.into()));
    }
    // One of several gateways: only the leader applies alerts (OpenFaaS's maths, one step
    // per alert for the whole cluster); a follower hands the alert to it.
    let cluster = &gw.scaling.cluster;
    if !cluster.leadership.is_leader() {
        if forwarded {
            return Ok(text(NOT_LEADER, "this gateway does not lead its cluster"));
        }
        if let Some((members, to_leader)) = cluster.leader_elsewhere() {
            let answer = to_leader
                .send(
                    &members,
                    Method::POST,
                    "/system/alert",
                    "application/json",
                    body,
                )
                .await;
            return Ok(match answer {
                Some((status, body)) => {
                    let mut r = Response::new(GatewayBody::full(body));
                    *r.status_mut() = status;
                    r
                }
                // Alertmanager sends it again.
                None => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no gateway of the cluster leads now; retry",
                ),
            });
        }
    }
    let msg: AlertMessage =
        serde_json::from_slice(&body).map_err(|_| ApiError::BadRequest(BAD_FORMAT.into()))?;
    let mut errors = Vec::new();
    for (i, a) in msg.alerts.iter().enumerate() {
        if let Err(e) = apply(gw, a).await {
            errors.push(format!("[{i}] {e}"));
        }
    }
    if errors.is_empty() {
        Ok(empty(StatusCode::OK))
    } else {
        tracing::warn!(errors = %errors.join("; "), "alert scaling failed");
        Ok(text(StatusCode::INTERNAL_SERVER_ERROR, errors.join("\n")))
    }
}

async fn apply(gw: &Gateway, a: &Alert) -> Result<(), String> {
    let name = a
        .labels
        .get("function_name")
        .filter(|n| !n.is_empty())
        .ok_or("the alert has no function_name label")?;
    let key = FunctionKey::parse_segment(name, "").map_err(|e| e.to_string())?;
    let status = if a.status.eq_ignore_ascii_case("firing") {
        AlertStatus::Firing
    } else {
        AlertStatus::Resolved
    };
    let fs = gw.provider.status(&key).await.map_err(|e| e.to_string())?;
    let settings = ScaleSettings::from_maps(Some(&fs.labels), Some(&fs.annotations));
    let id = alert_id(a);
    let action = gw
        .scaling
        .alerts
        .apply(
            &key,
            &id,
            status,
            fs.replicas,
            &settings,
            tokio::time::Instant::now(),
        )
        .map_err(|e| e.to_string())?;
    let AlertAction::Scale(to) = action else {
        tracing::debug!(function = %key, alert = %id, "alert replay: no step");
        return Ok(());
    };
    if to == fs.replicas {
        return Ok(());
    }
    let (direction, reason) = match (to > fs.replicas, status) {
        (true, AlertStatus::Firing) => (Direction::Up, Reason::AlertFiring),
        (false, AlertStatus::Firing) => (Direction::Down, Reason::AlertFiring),
        (true, AlertStatus::Resolved) => (Direction::Up, Reason::AlertResolved),
        (false, AlertStatus::Resolved) => (Direction::Down, Reason::AlertResolved),
    };
    tracing::info!(function = %key, from = fs.replicas, to, direction = direction.as_str(),
        reason = reason.as_str(), alert = %id, "scale decision");
    gw.scaling
        .stats
        .decision(&key.to_string(), direction, reason);
    gw.events.record(&key, fs.replicas, to, reason.as_str());
    // Made only while this gateway still leads in the term that decided it (a scale-down
    // drains first, and a newer leader's count must not be undone).
    let leadership = &gw.scaling.cluster.leadership;
    let term = leadership.term();
    let valid = || leadership.term() == term;
    gw.provider
        .scale_if(&key, to, &valid)
        .await
        .map_err(|e| e.to_string())
}

/// Identity of an alert episode: its fingerprint (or labels) and when it started.
fn alert_id(a: &Alert) -> String {
    let mut id = if a.fingerprint.is_empty() {
        a.labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    } else {
        a.fingerprint.clone()
    };
    id.push('@');
    id.push_str(&a.starts_at);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_alertmanager_payload() {
        // As Alertmanager 0.25 sends it.
        let m: AlertMessage = serde_json::from_str(
            r#"{"receiver":"scale-up","status":"firing","alerts":[{"status":"firing",
            "labels":{"alertname":"APIHighInvocationRate","function_name":"echo.openfaas-fn",
            "service":"gateway","severity":"major"},"annotations":{"summary":"x"},
            "startsAt":"2024-01-01T00:00:00.000Z","endsAt":"0001-01-01T00:00:00Z",
            "generatorURL":"http://p/graph","fingerprint":"a1b2"}],
            "groupLabels":{"alertname":"APIHighInvocationRate"},"commonLabels":{},
            "commonAnnotations":{},"externalURL":"http://am","version":"4",
            "groupKey":"{}:{}","truncatedAlerts":0}"#,
        )
        .unwrap();
        assert_eq!(m.alerts.len(), 1);
        assert_eq!(alert_id(&m.alerts[0]), "a1b2@2024-01-01T00:00:00.000Z");
        let no_fp = Alert {
            labels: [("function_name".to_string(), "f".to_string())].into(),
            starts_at: "t".into(),
            ..Default::default()
        };
        assert_eq!(alert_id(&no_fp), "function_name=f@t");
    }
}
