//! `GET /system/logs`: a function's replica output as an NDJSON stream.
//!
//! Query: `name` (required), `namespace`, `instance`, `tail` (<= 0: everything kept),
//! `since` (RFC 3339), `follow` (bool). One JSON object per line, flushed per message; the
//! stream ends when `follow` is false. A bad query answers 422, as faas-provider does; a
//! namespace outside the managed set 400 `namespace not valid`.

use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use super::error::ApiError;
use super::Gateway;
use crate::control::LogQuery;
use crate::dataplane::response::GatewayBody;
use crate::http1::body::BoxError;
use crate::model::names::FunctionKey;

#[derive(Debug, Default, Deserialize)]
struct Query {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    instance: String,
    tail: Option<String>,
    since: Option<String>,
    follow: Option<String>,
}

pub(crate) async fn logs(
    gw: &Gateway,
    req: &Request<Incoming>,
) -> Result<Response<GatewayBody>, ApiError> {
    let q: Query = serde_urlencoded::from_str(req.uri().query().unwrap_or(""))
        .map_err(|e| ApiError::Unprocessable(format!("invalid query: {e}")))?;
    if q.name.is_empty() {
        return Err(ApiError::Unprocessable("name is required".into()));
    }
    let function = FunctionKey::parse_segment(&q.name, &q.namespace)
        .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    super::namespaces::require(gw, function.namespace()).await?;
    let tail = match q.tail.as_deref() {
        None | Some("") => None,
        Some(t) => {
            let n: i64 = t
                .parse()
                .map_err(|_| ApiError::Unprocessable(format!("tail={t:?} must be an integer")))?;
            (n > 0).then_some(n as usize)
        }
    };
    let since = match q.since.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map_err(|_| {
                    ApiError::Unprocessable(format!("since={s:?} must be an RFC 3339 time"))
                })?,
        ),
    };
    let follow = match q.follow.as_deref() {
        None | Some("") | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(f) => {
            return Err(ApiError::Unprocessable(format!(
                "follow={f:?} must be true or false"
            )))
        }
    };
    let stream = gw
        .provider
        .logs(LogQuery {
            function,
            instance: (!q.instance.is_empty()).then_some(q.instance),
            tail,
            since,
            follow,
        })
        .await?;
    let lines = stream.map(|msg| -> Result<Bytes, BoxError> {
        let mut line = serde_json::to_vec(&msg)?;
        line.push(b'\n');
        Ok(Bytes::from(line))
    });
    let mut resp = Response::new(GatewayBody::Stream(lines.boxed()));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(resp)
}
