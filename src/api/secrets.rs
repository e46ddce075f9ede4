//! `/system/secrets`: list, create, update and delete a namespace's secrets.
//!
//! Statuses (faasgate's choices among OpenFaaS's providers, reference §B.2): GET 200 with
//! `[{"name","namespace"}]` (names only, never values); POST 201, an existing name 409 (so
//! `faas-cli secret create --replace` goes on to PUT); PUT 202, a missing name 404; DELETE
//! 202 (never 204: faas-cli treats it as a failure), a missing name 404. The namespace comes
//! from the body, else `?namespace=`, else the default, and must be one the provider serves
//! (400 `namespace not valid`, faasd's message). Names follow `secrets::validate_name`
//! (faasd's messages). A value is `rawValue` (base64) when that is non-empty, else `value`:
//! faas-cli's `--from-file` sends both, the raw bytes and a trimmed string.
//!
//! Invariant: no response, log line or error of this module carries a value. Body parse
//! errors are reported by position only (serde's messages may quote the offending text).

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use super::error::{empty, json, ApiError};
use super::{namespace_query, Gateway};
use crate::control::secrets::{validate_name, SecretValue};
use crate::dataplane::response::GatewayBody;
use crate::model::names::{validate_namespace, DEFAULT_NAMESPACE};

type ApiResult = Result<Response<GatewayBody>, ApiError>;

/// faas-provider's `types.Secret` as received.
#[derive(Default, Deserialize)]
struct SecretBody {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    value: Option<String>,
    #[serde(default, rename = "rawValue")]
    raw_value: Option<String>,
}

/// One item of the list: never a value.
#[derive(Serialize)]
struct SecretName<'a> {
    name: &'a str,
    namespace: &'a str,
}

/// Routes one `/system/secrets` request.
pub(crate) async fn route(gw: &Gateway, req: Request<Incoming>) -> ApiResult {
    let Some(store) = gw.provider.secrets() else {
        return Err(ApiError::NotImplemented);
    };
    let method = req.method().clone();
    let query_ns = namespace_query(&req)?.namespace;
    match method {
        Method::GET => {
            let ns = namespace(gw, None, &query_ns).await?;
            let names = store.list(&ns).await?;
            let items: Vec<SecretName> = names
                .iter()
                .map(|n| SecretName {
                    name: n,
                    namespace: &ns,
                })
                .collect();
            Ok(json(StatusCode::OK, &items))
        }
        Method::POST | Method::PUT => {
            let body = parse(gw, req).await?;
            let ns = namespace(gw, body.namespace.as_deref(), &query_ns).await?;
            validate_name(&body.name)?;
            let value = value_of(&body)?;
            if method == Method::POST {
                store.create(&ns, &body.name, &value).await?;
                Ok(empty(StatusCode::CREATED))
            } else {
                store.update(&ns, &body.name, &value).await?;
                if let Err(e) = gw.provider.secret_updated(&ns, &body.name).await {
                    tracing::warn!(namespace = %ns, secret = %body.name, error = %e, "secret updated, but its functions were not rolled");
                }
                Ok(empty(StatusCode::ACCEPTED))
            }
        }
        Method::DELETE => {
            let body = parse(gw, req).await?;
            let ns = namespace(gw, body.namespace.as_deref(), &query_ns).await?;
            validate_name(&body.name)?;
            store.delete(&ns, &body.name).await?;
            Ok(empty(StatusCode::ACCEPTED))
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

/// Reads the JSON body (an empty body is an empty secret: the name check then answers).
async fn parse(gw: &Gateway, req: Request<Incoming>) -> Result<SecretBody, ApiError> {
    let (_, body) = gw.read_body(req).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(SecretBody::default());
    }
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "invalid JSON body ({:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })
}

/// The namespace of a request: the body's, else the query's, else the default; it must be
/// valid and served by the provider.
async fn namespace(gw: &Gateway, body: Option<&str>, query: &str) -> Result<String, ApiError> {
    let ns = match body.filter(|n| !n.is_empty()) {
        Some(n) => n,
        None if !query.is_empty() => query,
        None => DEFAULT_NAMESPACE,
    };
    validate_namespace(ns)?;
    super::namespaces::require(gw, ns).await?;
    Ok(ns.to_string())
}

/// `rawValue` when non-empty (exact bytes), else `value`.
fn value_of(body: &SecretBody) -> Result<SecretValue, ApiError> {
    if let Some(raw) = body.raw_value.as_deref().filter(|r| !r.is_empty()) {
        let bytes = STANDARD
            .decode(raw)
            .or_else(|_| STANDARD_NO_PAD.decode(raw))
            .map_err(|_| ApiError::BadRequest("rawValue is not valid base64".into()))?;
        if !bytes.is_empty() {
            return Ok(SecretValue::new(bytes));
        }
    }
    Ok(SecretValue::new(
        body.value.clone().unwrap_or_default().into_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> SecretBody {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn raw_value_wins_when_non_empty() {
        let b = body(r#"{"name":"a","value":"text","rawValue":"AAEC/w=="}"#);
        assert_eq!(value_of(&b).unwrap().as_bytes(), [0, 1, 2, 255]);
        let b = body(r#"{"name":"a","value":"text","rawValue":""}"#);
        assert_eq!(value_of(&b).unwrap().as_bytes(), b"text");
        let b = body(r#"{"name":"a","value":"text","rawValue":null}"#);
        assert_eq!(value_of(&b).unwrap().as_bytes(), b"text");
        let b = body(r#"{"name":"a"}"#);
        assert!(value_of(&b).unwrap().is_empty());
        let b = body(r#"{"name":"a","rawValue":"AAEC_w"}"#);
        let e = value_of(&b).unwrap_err().to_string();
        assert_eq!(e, "rawValue is not valid base64");
    }
}
