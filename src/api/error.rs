//! API errors and the one place they become HTTP statuses.
//!
//! Client input is 4xx with a plain-text message that names the field; provider failures
//! map by kind (`NotFound` 404, `Invalid` 400, backend 500, a backend's own status passed on).

use http::{header, HeaderValue, Response, StatusCode};
use thiserror::Error;

use crate::control::namespaces::NamespaceError;
use crate::control::secrets::SecretError;
use crate::control::ProviderError;
use crate::dataplane::response::GatewayBody;
use crate::model::names::NameError;

#[derive(Debug, Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Name(#[from] NameError),
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Unprocessable(String),
    #[error("Feature not implemented in this version of faasgate")]
    NotImplemented,
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// Over a bound (429).
    #[error("{0}")]
    TooMany(String),
    /// The gateway failed (500).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::Name(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            ApiError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Secret(s) => match s {
                SecretError::InvalidName(_) => StatusCode::BAD_REQUEST,
                SecretError::NotFound { .. } => StatusCode::NOT_FOUND,
                SecretError::AlreadyExists { .. } => StatusCode::CONFLICT,
                SecretError::Backend(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Provider(p) => match p {
                ProviderError::NotFound(_) => StatusCode::NOT_FOUND,
                ProviderError::AlreadyExists(_) => StatusCode::CONFLICT,
                ProviderError::Invalid(_) => StatusCode::BAD_REQUEST,
                ProviderError::Backend(_) => StatusCode::INTERNAL_SERVER_ERROR,
                ProviderError::Namespace(n) => match n {
                    NamespaceError::NotFound(_) => StatusCode::NOT_FOUND,
                    NamespaceError::AlreadyExists(_)
                    | NamespaceError::NotEmpty { .. }
                    | NamespaceError::Changed(_) => StatusCode::CONFLICT,
                    NamespaceError::Default(_) => StatusCode::FORBIDDEN,
                    NamespaceError::Backend(_) => StatusCode::INTERNAL_SERVER_ERROR,
                },
                ProviderError::Upstream { status, .. } => StatusCode::from_u16(*status)
                    .ok()
                    .filter(|s| s.is_client_error() || s.is_server_error())
                    .unwrap_or(StatusCode::BAD_GATEWAY),
            },
        }
    }

    pub(crate) fn into_response(self) -> Response<GatewayBody> {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(%status, error = %self, "request failed");
        }
        text(status, self.to_string())
    }
}

/// A plain-text response.
pub(crate) fn text(status: StatusCode, body: impl Into<bytes::Bytes>) -> Response<GatewayBody> {
    let mut resp = Response::new(GatewayBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// A JSON response.
pub(crate) fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<GatewayBody> {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut resp = Response::new(GatewayBody::full(body));
            *resp.status_mut() = status;
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// An empty response with a status.
pub(crate) fn empty(status: StatusCode) -> Response<GatewayBody> {
    let mut resp = Response::new(GatewayBody::Empty);
    *resp.status_mut() = status;
    resp
}
