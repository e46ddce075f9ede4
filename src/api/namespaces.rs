//! `/system/namespace/{name}` and `/system/namespaces/{name}` (create, get, update, delete),
//! and [`require`], the check every function route makes of the namespace it names.
//!
//! Shapes and statuses follow OpenFaaS (faasd `pkg/provider/handlers/mutate_namespaces.go`,
//! go-sdk's namespace client; the rules of the set are in `control::namespaces`):
//! - `POST /system/namespace/` with `{"name","labels","annotations"}`: 201, empty body. The
//!   name is in the body (a name in the URL must equal it); a new name must be a DNS-1123
//!   label. 409 `namespace <n> already exists`.
//! - `GET /system/namespace/<n>`: 200 `{"name","labels","annotations"}`; 404
//!   `namespace <n> not found`.
//! - `PUT /system/namespace/<n>`: 202; the body's name must equal the URL's; labels and
//!   annotations are replaced whole. 404 when missing.
//! - `DELETE /system/namespace/<n>`: 202; 404 when missing, 409 while it holds functions
//!   (or secrets), 403 for the default namespace. The body go-sdk sends
//!   (`{"name","labels":{"openfaas":"1"}}`) is checked like PUT's; an empty body (curl) is
//!   accepted, the name then comes from the URL alone.
//! - POST and PUT need `openfaas: "1"` in `labels` or `annotations` (faasd reads labels,
//!   the Enterprise docs' curl examples send annotations, go-sdk sends both).
//! - 400 texts are faasd's: `namespace not specified in URL`, `namespace in request body does
//!   not match namespace in URL`, `namespace not specified in request body`,
//!   `request does not have openfaas=1 label`, `error parsing request body: ...`.
//! - Other verbs: 405. Singular and plural paths are the same routes (the docs use both).

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::error::{empty, json, ApiError};
use super::Gateway;
use crate::control::namespaces::NamespaceError;
use crate::control::ProviderError;
use crate::dataplane::response::GatewayBody;
use crate::model::names::{validate_namespace, validate_new_namespace, DEFAULT_NAMESPACE};
use crate::model::types::FunctionNamespace;

type ApiResult = Result<Response<GatewayBody>, ApiError>;

/// faasd's answer (400) to an operation in a namespace outside the managed set.
pub(crate) const NOT_VALID: &str = "namespace not valid";

/// 400 [`NOT_VALID`] unless `namespace` is in the managed set. Every route that reads or
/// changes functions of a namespace calls it before the provider, so an unknown namespace
/// changes nothing.
pub(crate) async fn require(gw: &Gateway, namespace: &str) -> Result<(), ApiError> {
    if gw.provider.namespace_exists(namespace).await? {
        Ok(())
    } else {
        Err(ApiError::BadRequest(NOT_VALID.into()))
    }
}

/// `/system/namespace/{name}` and `/system/namespaces/{name}`; `name` may be empty.
pub(crate) async fn route(gw: &Gateway, req: Request<Incoming>, name: &str) -> ApiResult {
    let name = name.to_string();
    match *req.method() {
        Method::GET => get(gw, &name).await,
        Method::POST => create(gw, req, &name).await,
        Method::PUT => update(gw, req, &name).await,
        Method::DELETE => delete(gw, req, &name).await,
        _ => Err(ApiError::MethodNotAllowed),
    }
}

async fn get(gw: &Gateway, name: &str) -> ApiResult {
    let name = url_name(name)?;
    let ns = gw.provider.namespace(name).await?;
    Ok(json(StatusCode::OK, &ns))
}

async fn create(gw: &Gateway, req: Request<Incoming>, url: &str) -> ApiResult {
    let body = read(gw, req).await?;
    let ns = parse(&body)?;
    if !url.is_empty() && ns.name != url {
        return Err(bad(
            "namespace in request body does not match namespace in URL",
        ));
    }
    check_body(&ns)?;
    validate_new_namespace(&ns.name)?;
    gw.provider.create_namespace(ns).await?;
    Ok(empty(StatusCode::CREATED))
}

async fn update(gw: &Gateway, req: Request<Incoming>, url: &str) -> ApiResult {
    let body = read(gw, req).await?;
    let ns = parse(&body)?;
    let url = url_name(url)?;
    if ns.name != url {
        return Err(bad(
            "namespace in request body does not match namespace in URL",
        ));
    }
    check_body(&ns)?;
    gw.provider.update_namespace(ns).await?;
    Ok(empty(StatusCode::ACCEPTED))
}

async fn delete(gw: &Gateway, req: Request<Incoming>, url: &str) -> ApiResult {
    let body = read(gw, req).await?;
    let url = url_name(url)?;
    if !body.iter().all(u8::is_ascii_whitespace) {
        let ns = parse(&body)?;
        if ns.name != url {
            return Err(bad(
                "namespace in request body does not match namespace in URL",
            ));
        }
    }
    if url == DEFAULT_NAMESPACE {
        return Err(ProviderError::from(NamespaceError::Default(url.to_string())).into());
    }
    gw.provider
        .delete_namespace(url, held_elsewhere(gw, url).await?)
        .await?;
    Ok(empty(StatusCode::ACCEPTED))
}

/// What stores other than the provider still hold in namespace `name`, phrased for the 409
/// of a delete ("secrets a, b"). The provider adds its own functions. A store that keeps
/// things per namespace (secrets) adds its names here.
async fn held_elsewhere(gw: &Gateway, name: &str) -> Result<Vec<String>, ApiError> {
    let Some(store) = gw.provider.secrets() else {
        return Ok(Vec::new());
    };
    let names = store.list(name).await?;
    Ok(if names.is_empty() {
        Vec::new()
    } else {
        vec![format!("secrets {}", names.join(", "))]
    })
}

/// The name in a GET/PUT/DELETE URL: 400 when empty; 404 when it cannot be a namespace (so
/// it is in no set, and never reaches a store as a path).
fn url_name(name: &str) -> Result<&str, ApiError> {
    if name.is_empty() {
        return Err(bad("namespace not specified in URL"));
    }
    if validate_namespace(name).is_err() {
        return Err(ProviderError::from(NamespaceError::NotFound(name.to_string())).into());
    }
    Ok(name)
}

async fn read(gw: &Gateway, req: Request<Incoming>) -> Result<bytes::Bytes, ApiError> {
    Ok(gw.read_body(req).await?.1)
}

fn parse(body: &[u8]) -> Result<FunctionNamespace, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad(&format!("error parsing request body: {e}")))
}

/// faasd's order: a name, then the marker.
fn check_body(ns: &FunctionNamespace) -> Result<(), ApiError> {
    if ns.name.is_empty() {
        return Err(bad("namespace not specified in request body"));
    }
    if !ns.is_marked() {
        return Err(bad("request does not have openfaas=1 label"));
    }
    Ok(())
}

fn bad(msg: &str) -> ApiError {
    ApiError::BadRequest(msg.to_string())
}
