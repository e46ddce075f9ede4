//! The OpenFaaS HTTP API on one listener: routing, auth, and one file per resource.
//!
//! Routes (reference section 2): `ANY /function/{name}[.{ns}][/{path}]` (open, the hot path,
//! matched first), `/system/*` (basic auth), `/ui/` (the web UI: its files are open, its
//! data under `/ui/api/*` needs basic auth, see `ui`), `/healthz` and `/metrics` (open),
//! `/` (307 to `/ui/`). Unknown paths answer 404, known paths with a wrong method 405.

pub(crate) mod alert;
pub mod async_call;
mod async_wire;
pub mod error;
pub(crate) mod functions;
pub(crate) mod logs;
pub mod metrics;
pub(crate) mod namespaces;
pub(crate) mod secrets;
pub mod server;
pub(crate) mod system;
pub(crate) mod ui;

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;

use crate::api::metrics::exposition::Exposition;
use crate::api::metrics::series::Series;
use crate::auth::{self, Credentials};
use crate::control::events::ScaleEvents;
use crate::control::scaler::Scaling;
use crate::control::Provider;
use crate::dataplane::forward::Forwarder;
use crate::dataplane::response::GatewayBody;
use crate::dataplane::Routes;
use crate::http1::headers::Peer;
use crate::http1::request_rules;
use crate::model::names::KeyRef;
use error::{empty, text, ApiError};

const FUNCTION_PREFIX: &str = "/function/";

/// Everything a request may need; shared by all connections.
pub struct Gateway {
    pub routes: Arc<Routes>,
    pub forwarder: Forwarder,
    pub provider: Arc<dyn Provider>,
    pub auth: Option<Credentials>,
    pub exposition: Exposition,
    pub max_body_bytes: usize,
    /// Per-function time series the UI charts.
    pub series: Arc<Series>,
    /// Recent scaling decisions: the scale API, cold starts and the autoscaler record here.
    pub events: Arc<ScaleEvents>,
    /// The scaler's shared state: alert book and decision counters.
    pub scaling: Arc<Scaling>,
    /// Invocations are served by the byte-level client loop (`conn`); `false` sends every
    /// request through hyper's server (tests run their cases both ways).
    pub byte_loop: bool,
    /// The async queue (`None`: `/async-function` answers 404).
    pub async_calls: Option<async_call::AsyncCalls>,
}

impl crate::dataplane::conn::Frontend for Gateway {
    fn routes(&self) -> &Routes {
        &self.routes
    }

    fn forwarder(&self) -> &Forwarder {
        &self.forwarder
    }

    fn byte_loop(&self) -> bool {
        self.byte_loop
    }

    fn handle(
        &self,
        req: Request<Incoming>,
        peer: &Peer,
    ) -> impl std::future::Future<Output = Response<GatewayBody>> + Send {
        Gateway::handle(self, req, peer)
    }

    fn enqueue<'a>(
        &'a self,
        req: &'a [u8],
        head_len: usize,
        close: bool,
        out: &'a mut Vec<u8>,
    ) -> impl std::future::Future<Output = bool> + Send + 'a {
        async_wire::enqueue(self, req, head_len, close, out)
    }
}

/// The 400 (501 for a transfer coding) for a request that breaks a rule every request must
/// pass (`request_rules`);
/// the connection closes after it. (hyper's parser applies the framing rules itself: a
/// conflicting `Content-Length` or a `Transfer-Encoding` not ending in `chunked` is a 400
/// before a request reaches `handle`.)
pub(crate) fn reject(e: request_rules::RequestError) -> Response<GatewayBody> {
    request_rules::count_rejected(e);
    let mut resp = text(e.status(), e.message());
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// The `?namespace=` query of /system routes.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct NamespaceQuery {
    #[serde(default)]
    pub namespace: String,
}

impl Gateway {
    pub async fn handle(&self, req: Request<Incoming>, peer: &Peer) -> Response<GatewayBody> {
        if let Err(e) = request_rules::check_parsed(req.version(), req.headers()) {
            return reject(e);
        }
        let path = req.uri().path();
        if let Some(rest) = path.strip_prefix(FUNCTION_PREFIX) {
            let segment = rest.split('/').next().unwrap_or("");
            let rest_start = FUNCTION_PREFIX.len() + segment.len();
            return match self.routes.get(KeyRef::parse_segment(segment, "")) {
                Some(handle) => self.forwarder.forward(handle, req, rest_start, peer).await,
                None => text(
                    StatusCode::NOT_FOUND,
                    format!("error finding function {segment}: not found"),
                ),
            };
        }
        if let (true, Some(calls)) = (
            path.starts_with(async_call::PREFIX),
            self.async_calls.as_ref(),
        ) {
            return match async_call::enqueue(self, calls, req).await {
                Ok(resp) => resp,
                Err(e) => e.into_response(),
            };
        }
        match self.route(req).await {
            Ok(resp) => resp,
            Err(e) => e.into_response(),
        }
    }

    async fn route(&self, req: Request<Incoming>) -> Result<Response<GatewayBody>, ApiError> {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        match path.as_str() {
            "/healthz" => {
                only(&method, &[Method::GET, Method::HEAD]).map(|_| text(StatusCode::OK, "OK"))
            }
            "/metrics" => only(&method, &[Method::GET]).map(|_| self.metrics()),
            "/" => only(&method, &[Method::GET, Method::HEAD]).map(|_| {
                let mut r = empty(StatusCode::TEMPORARY_REDIRECT);
                r.headers_mut()
                    .insert(header::LOCATION, HeaderValue::from_static("/ui/"));
                r
            }),
            p if p == "/ui" || p.starts_with("/ui/") => ui::route(self, &req, p),
            p if p.starts_with("/system/") => {
                if let Some(denied) = self.authorize(&req) {
                    return Ok(denied);
                }
                self.system(req, &p["/system/".len()..]).await
            }
            _ => Ok(text(StatusCode::NOT_FOUND, "404 page not found")),
        }
    }

    async fn system(
        &self,
        req: Request<Incoming>,
        sub: &str,
    ) -> Result<Response<GatewayBody>, ApiError> {
        let method = req.method().clone();
        let (resource, name) = match sub.split_once('/') {
            Some((r, n)) => (r, Some(n)),
            None => (sub, None),
        };
        match (resource, name) {
            ("functions", None) => match method {
                Method::GET => functions::list(self, &req).await,
                Method::POST => functions::deploy(self, req, false).await,
                Method::PUT => functions::deploy(self, req, true).await,
                Method::DELETE => functions::delete(self, req).await,
                _ => Err(ApiError::MethodNotAllowed),
            },
            ("function", Some(name)) => {
                only(&method, &[Method::GET])?;
                functions::status(self, &req, name).await
            }
            ("scale-function", Some(name)) => {
                only(&method, &[Method::POST])?;
                functions::scale(self, req, name).await
            }
            ("namespaces", None) => {
                only(&method, &[Method::GET])?;
                system::namespaces(self).await
            }
            ("namespace" | "namespaces", Some(name)) => namespaces::route(self, req, name).await,
            ("secrets", None) => secrets::route(self, req).await,
            ("info", None) => {
                only(&method, &[Method::GET])?;
                Ok(system::info(self))
            }
            ("cluster", None) => {
                only(&method, &[Method::GET])?;
                Ok(system::cluster(self))
            }
            ("cluster", Some("demand")) => {
                only(&method, &[Method::GET])?;
                Ok(system::cluster_demand(self, &req))
            }
            ("cluster", Some("wake")) => {
                only(&method, &[Method::POST])?;
                system::cluster_wake(self, req).await
            }
            ("async", Some(rest))
                if rest == "dead-letters" || rest.starts_with("dead-letters/") =>
            {
                let Some(calls) = self.async_calls.as_ref() else {
                    return Err(ApiError::NotFound("no async queue".into()));
                };
                match rest.strip_prefix("dead-letters/") {
                    None => {
                        only(&method, &[Method::GET])?;
                        async_call::dead_letters(calls, &req).await
                    }
                    Some(id) => async_call::dead_letter(calls, &method, id).await,
                }
            }
            ("cluster", Some("drain")) => {
                only(&method, &[Method::POST])?;
                system::cluster_drain(self, req).await
            }
            ("logs", None) => {
                only(&method, &[Method::GET])?;
                logs::logs(self, &req).await
            }
            ("alert", None) => {
                only(&method, &[Method::POST])?;
                alert::alert(self, req).await
            }
            ("telemetry", None) => Err(ApiError::NotImplemented),
            _ => Ok(text(StatusCode::NOT_FOUND, "404 page not found")),
        }
    }

    /// None when the request may proceed; else the 401 response.
    pub(crate) fn authorize<B>(&self, req: &Request<B>) -> Option<Response<GatewayBody>> {
        let creds = self.auth.as_ref()?;
        if creds.check(req.headers().get(header::AUTHORIZATION)) {
            return None;
        }
        let mut resp = text(StatusCode::UNAUTHORIZED, auth::UNAUTHORIZED_BODY);
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(auth::WWW_AUTHENTICATE),
        );
        Some(resp)
    }

    fn metrics(&self) -> Response<GatewayBody> {
        let mut resp = text(StatusCode::OK, self.exposition.render());
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::api::metrics::exposition::CONTENT_TYPE),
        );
        resp
    }

    /// Reads a whole /system request body, bounded by `max_body_bytes` (413 beyond).
    pub async fn read_body(
        &self,
        req: Request<Incoming>,
    ) -> Result<(http::request::Parts, Bytes), ApiError> {
        read_body_within(req, self.max_body_bytes).await
    }
}

/// Reads a whole request body of at most `limit` bytes (413 beyond).
pub(crate) async fn read_body_within(
    req: Request<Incoming>,
    limit: usize,
) -> Result<(http::request::Parts, Bytes), ApiError> {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::TooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok((parts, c.to_bytes())),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::TooLarge { limit }),
        Err(e) => Err(ApiError::BadRequest(format!("reading request body: {e}"))),
    }
}

/// Parses the `?namespace=` query (other parameters are ignored).
pub(crate) fn namespace_query<B>(req: &Request<B>) -> Result<NamespaceQuery, ApiError> {
    match req.uri().query() {
        None => Ok(NamespaceQuery::default()),
        Some(q) => serde_urlencoded::from_str(q)
            .map_err(|e| ApiError::BadRequest(format!("invalid query string: {e}"))),
    }
}

fn only(method: &Method, allowed: &[Method]) -> Result<(), ApiError> {
    if allowed.contains(method) {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed)
    }
}
