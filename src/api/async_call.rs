//! `ANY /async-function/{name}[.{ns}][/{path}][?query]`: an async call is accepted with
//! `202 Accepted` and its `X-Call-Id` (the client's, or a new one) only once it is durably
//! stored (`queue`), and delivered later; `/system/async/dead-letters` lists, replays and
//! drops the calls that ran out of attempts.
//!
//! Statuses at enqueue: an invalid name 400, an unknown function 404, `CONNECT` 405 (a
//! tunnel cannot be queued and replayed), a body over
//! `--max-async-body` 413, an `X-Callback-Url` that is not an absolute `http`/`https` URL
//! 400, the queue at its bound 429, a store failure 500. Like `/function/*`, the route is not
//! behind basic auth.
//!
//! This is hyper's path; the byte loop enqueues the common case itself (`async_wire`), with
//! the same record and answers, and hands everything else here.

use std::sync::Arc;

use http::header::HeaderValue;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::error::{json, ApiError};
use super::Gateway;
use crate::dataplane::response::GatewayBody;
use crate::http1::headers::{new_call_id, strip_hop_by_hop, X_CALL_ID};
use crate::model::names::FunctionKey;
use crate::queue::call::Fields;
use crate::queue::{CallStore, Dispatcher, EncodedCall, StoreError};

/// The route's prefix.
pub(crate) const PREFIX: &str = crate::http1::head::ASYNC_PREFIX;
const X_CALLBACK_URL: &str = "x-callback-url";

/// The async queue as the API sees it.
pub struct AsyncCalls {
    pub store: Arc<dyn CallStore>,
    pub dispatcher: Arc<Dispatcher>,
    /// Largest body accepted (413 beyond).
    pub max_body: usize,
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Full(_) => ApiError::TooMany(e.to_string()),
            StoreError::TooLarge(limit) => ApiError::TooLarge { limit },
            StoreError::NotFound(_) => ApiError::NotFound(e.to_string()),
            StoreError::Backend(_) => ApiError::Internal(e.to_string()),
        }
    }
}

/// `req`'s path starts with [`PREFIX`].
pub(crate) async fn enqueue(
    gw: &Gateway,
    calls: &AsyncCalls,
    req: Request<Incoming>,
) -> Result<Response<GatewayBody>, ApiError> {
    // The URI is shared (`Bytes` inside), so its clone allocates nothing and outlives `req`.
    let uri = req.uri().clone();
    let rest = &uri.path()[PREFIX.len()..];
    let (segment, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let key = FunctionKey::parse_segment(segment, "")?;
    if req.method() == http::Method::CONNECT {
        return Err(ApiError::MethodNotAllowed);
    }
    let Some(handle) = gw.routes.get(key.as_ref()) else {
        return Err(ApiError::NotFound(format!(
            "error finding function {segment}: not found"
        )));
    };
    // Everything borrowed from the request until the record is written: the record is the
    // one copy of the call (body included), and the request is dropped before the wait for
    // the store, which frees hyper's read buffer for the connection's next request.
    let method = req.method().clone();
    let (mut parts, body) = super::read_body_within(req, calls.max_body).await?;
    // Both read before the hop-by-hop headers go, as the invocation path reads `X-Call-Id`:
    // a `Connection` header naming them does not change the call.
    let callback_url = match parts.headers.get(X_CALLBACK_URL) {
        None => None,
        Some(v) => Some(callback(calls, v)?),
    };
    let (call_id, generated) = match parts.headers.get(&X_CALL_ID) {
        Some(v) => (v.clone(), false),
        None => (new_call_id(), true),
    };
    strip_hop_by_hop(&mut parts.headers);
    let call = EncodedCall {
        call_id: String::from_utf8_lossy(call_id.as_bytes()).into_owned(),
        function: key.to_string(),
        arrived_unix_ms: crate::sys::clock::unix_ms(),
        record: Vec::new(),
    };
    let headers = || {
        parts
            .headers
            .iter()
            .filter(|(name, _)| **name != X_CALL_ID && name.as_str() != X_CALLBACK_URL)
            .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()))
    };
    let record = Fields {
        call_id: &call.call_id,
        function: &call.function,
        method: method.as_str(),
        path,
        query: uri.query().unwrap_or(""),
        callback_url: callback_url.as_deref().unwrap_or(""),
        arrived_unix_ms: call.arrived_unix_ms,
    }
    .encode(headers, &body);
    drop((parts, body));
    let call = EncodedCall { record, ..call };
    let logged =
        (generated && tracing::enabled!(tracing::Level::DEBUG)).then(|| call.call_id.clone());
    calls.store.enqueue(call).await?;
    calls.dispatcher.notify_enqueued(&handle);
    let mut resp = super::error::empty(StatusCode::ACCEPTED);
    resp.headers_mut().insert(X_CALL_ID, call_id);
    if let Some(call_id) = logged {
        tracing::debug!(function = %key, %call_id, "async call queued");
    }
    Ok(resp)
}

/// An `X-Callback-Url` value: an absolute `http` or `https` URL that `--callback-allow`
/// admits.
fn callback(calls: &AsyncCalls, v: &HeaderValue) -> Result<String, ApiError> {
    let s = v
        .to_str()
        .map_err(|_| ApiError::BadRequest("X-Callback-Url is not a visible ASCII string".into()))?;
    crate::queue::callback::check_url(s, calls.dispatcher.callbacks().allow())
        .map_err(ApiError::BadRequest)?;
    Ok(s.to_string())
}

/// `GET /system/async/dead-letters[?name=]`.
pub(crate) async fn dead_letters(
    calls: &AsyncCalls,
    req: &Request<Incoming>,
) -> Result<Response<GatewayBody>, ApiError> {
    #[derive(serde::Deserialize, Default)]
    struct Q {
        #[serde(default)]
        name: String,
    }
    let q: Q = match req.uri().query() {
        None => Q::default(),
        Some(q) => serde_urlencoded::from_str(q)
            .map_err(|e| ApiError::BadRequest(format!("query: {e}")))?,
    };
    let function = if q.name.is_empty() {
        None
    } else {
        Some(FunctionKey::parse_segment(&q.name, "")?.to_string())
    };
    let list = calls.store.dead_letters(function.as_deref()).await?;
    Ok(json(StatusCode::OK, &list))
}

/// `POST /system/async/dead-letters/{id}/replay` and `DELETE /system/async/dead-letters/{id}`.
pub(crate) async fn dead_letter(
    calls: &AsyncCalls,
    method: &http::Method,
    rest: &str,
) -> Result<Response<GatewayBody>, ApiError> {
    let (id, action) = match rest.split_once('/') {
        Some((id, action)) => (id, Some(action)),
        None => (rest, None),
    };
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("dead letter id: {id:?} is not a number")))?;
    match (method, action) {
        (&http::Method::POST, Some("replay")) => {
            calls.store.replay(id).await?;
            calls.dispatcher.notify();
            Ok(super::error::empty(StatusCode::ACCEPTED))
        }
        (&http::Method::DELETE, None) => {
            calls.store.discard(id).await?;
            Ok(super::error::empty(StatusCode::OK))
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}
