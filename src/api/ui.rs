//! `/ui/`: a placeholder page until the web UI lands (issue 6). Served behind basic auth.

use http::{header, HeaderValue, Method, Response, StatusCode};

use super::error::{text, ApiError};
use crate::dataplane::body::GatewayBody;

const INDEX: &str = include_str!("ui_index.html");

pub fn serve(method: &Method, path: &str) -> Result<Response<GatewayBody>, ApiError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(ApiError::MethodNotAllowed);
    }
    if path != "/ui/" && path != "/ui" && path != "/ui/index.html" {
        return Ok(text(StatusCode::NOT_FOUND, "404 page not found"));
    }
    let mut resp = text(StatusCode::OK, INDEX);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    Ok(resp)
}
