//! `/ui/`: the web UI, its files embedded in the binary, and the JSON it reads beyond the
//! OpenFaaS API (`/ui/api/*`).
//!
//! Auth: the static files (HTML, JS, CSS, icon: code, no data) are served to anyone, so the
//! UI's own login form can load; it keeps the credentials in `sessionStorage` and sends them
//! as `Authorization: Basic` on every `/system/*` and `/ui/api/*` call. Everything that reads
//! or changes data therefore needs the same basic auth as `/system/*`. A 401 from `/ui/api/*`
//! carries no `WWW-Authenticate` header, so a browser never pops up its own password dialog
//! over the login form.
//!
//! The files need no build step and load nothing from elsewhere: a Content-Security-Policy
//! of `'self'` makes sure of it. `tests/ui_browser.rs` drives them in headless Chromium.

mod data;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};

use super::error::{empty, text, ApiError};
use super::Gateway;
use crate::dataplane::response::GatewayBody;

/// Path, content type, contents.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "/ui/",
        "text/html; charset=utf-8",
        include_str!("assets/index.html"),
    ),
    (
        "/ui/index.html",
        "text/html; charset=utf-8",
        include_str!("assets/index.html"),
    ),
    (
        "/ui/app.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    ),
    (
        "/ui/app.css",
        "text/css; charset=utf-8",
        include_str!("assets/app.css"),
    ),
    (
        "/ui/favicon.svg",
        "image/svg+xml",
        include_str!("assets/favicon.svg"),
    ),
];

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// Everything under `/ui`.
pub(crate) fn route<B>(
    gw: &Gateway,
    req: &Request<B>,
    path: &str,
) -> Result<Response<GatewayBody>, ApiError> {
    if let Some(endpoint) = path.strip_prefix("/ui/api/") {
        if req.method() != Method::GET {
            return Err(ApiError::MethodNotAllowed);
        }
        if let Some(mut denied) = gw.authorize(req) {
            denied.headers_mut().remove(header::WWW_AUTHENTICATE);
            return Ok(denied);
        }
        return match endpoint {
            "summary" => data::summary(gw, req),
            "series" => data::series(gw, req),
            _ => Ok(text(StatusCode::NOT_FOUND, "404 page not found")),
        };
    }
    serve_asset(req.method(), path)
}

fn serve_asset(method: &Method, path: &str) -> Result<Response<GatewayBody>, ApiError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(ApiError::MethodNotAllowed);
    }
    if path == "/ui" {
        let mut r = empty(StatusCode::TEMPORARY_REDIRECT);
        r.headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static("/ui/"));
        return Ok(r);
    }
    let Some((_, content_type, body)) = ASSETS.iter().find(|(p, _, _)| *p == path) else {
        return Ok(text(StatusCode::NOT_FOUND, "404 page not found"));
    };
    let mut resp = text(StatusCode::OK, *body);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_reference_nothing_outside() {
        for (path, _, body) in ASSETS {
            for needle in ["http://", "https://", "//fonts.", "@import"] {
                let hits: Vec<&str> = body
                    .lines()
                    .filter(|l| l.contains(needle))
                    // The SVG namespace is an identifier, not a fetch.
                    .filter(|l| !l.contains("http://www.w3.org/2000/svg"))
                    .collect();
                assert!(hits.is_empty(), "{path} refers to {needle}: {hits:?}");
            }
        }
    }

    #[test]
    fn serves_assets_and_redirects_bare_ui() {
        let r = serve_asset(&Method::GET, "/ui/app.js").unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/javascript"));
        assert!(r.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        let r = serve_asset(&Method::GET, "/ui").unwrap();
        assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
        let r = serve_asset(&Method::GET, "/ui/nope.js").unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert!(serve_asset(&Method::POST, "/ui/").is_err());
    }
}
