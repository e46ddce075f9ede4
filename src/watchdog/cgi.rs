//! The CGI-style environment a forked function sees, named exactly as of-watchdog names it.
//!
//! Owns: header-name -> env-var-name mapping (`Content-type` -> `Http_Content_Type`, Go's
//! canonical header form with `-` replaced by `_`) and the fixed variables `Http_Method`,
//! `Http_Path`, `Http_Query` (raw, only if present), `Http_ContentLength`,
//! `Http_Content_Length`, `Http_Host`. Each header contributes its first value only. A
//! header whose name holds `_` contributes nothing: its variable could stand for a name
//! with `-` as well (`X_Call_Id` and `X-Call-Id`), so a hop that framed the request by one
//! could be read by the function as the other (the gateway drops such headers too, as
//! nginx does). Pure: no I/O; the caller adds these on top of the watchdog's own
//! environment.

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::request::Parts;

/// `X-Call-Id` (any case) -> `Http_X_Call_Id`.
pub(crate) fn header_env_name(header: &str) -> String {
    let mut out = String::with_capacity(header.len() + 5);
    out.push_str("Http_");
    let mut upper = true;
    for c in header.chars() {
        if c == '-' {
            out.push('_');
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// The CGI variables for a request, in a stable order (headers first, as of-watchdog).
pub(crate) fn request_env(parts: &Parts) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = Vec::with_capacity(parts.headers.keys_len() + 6);
    for name in parts.headers.keys() {
        // Go keeps Host out of the header map; it is given as Http_Host below.
        if name == HOST || name.as_str().contains('_') {
            continue;
        }
        if let Some(value) = parts.headers.get(name) {
            vars.push((
                header_env_name(name.as_str()),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ));
        }
    }
    vars.push(("Http_Method".into(), parts.method.as_str().into()));
    // Go's r.ContentLength: the header, else -1 when chunked, else 0.
    let content_length = match parts.headers.get(CONTENT_LENGTH) {
        Some(v) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
        None if parts.headers.contains_key(TRANSFER_ENCODING) => "-1".into(),
        None => "0".into(),
    };
    vars.push(("Http_ContentLength".into(), content_length.clone()));
    if !parts.headers.contains_key(CONTENT_LENGTH) {
        vars.push(("Http_Content_Length".into(), content_length));
    }
    if let Some(query) = parts.uri.query().filter(|q| !q.is_empty()) {
        vars.push(("Http_Query".into(), query.into()));
    }
    vars.push(("Http_Path".into(), parts.uri.path().into()));
    let host = parts
        .headers
        .get(HOST)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .or_else(|| parts.uri.authority().map(|a| a.as_str().to_string()))
        .unwrap_or_default();
    vars.push(("Http_Host".into(), host));
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn underscore_names_set_no_variable() {
        let req = http::Request::builder()
            .uri("/")
            .header("Content_Length", "9")
            .header("X_Call_Id", "x")
            .header("X-Call-Id", "y")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let vars = request_env(&parts);
        assert!(
            vars.iter().all(|(k, _)| !k.ends_with("_length")),
            "{vars:?}"
        );
        assert_eq!(
            vars.iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("Http_X_Call_Id"))
                .count(),
            1
        );
        assert!(vars.contains(&("Http_X_Call_Id".into(), "y".into())));
    }

    #[test]
    fn header_names_follow_go_canonical_form() {
        assert_eq!(header_env_name("x-call-id"), "Http_X_Call_Id");
        assert_eq!(header_env_name("content-type"), "Http_Content_Type");
        assert_eq!(header_env_name("X-FORWARDED-FOR"), "Http_X_Forwarded_For");
        assert_eq!(header_env_name("accept"), "Http_Accept");
        assert_eq!(header_env_name("a--b"), "Http_A__B");
    }

    #[test]
    fn request_env_has_cgi_vars() {
        let req = http::Request::put("/some/path?a=1&b=2")
            .header("Host", "example:8080")
            .header("X-Call-Id", "abc")
            .header("X-Call-Id", "second")
            .header("Content-Type", "text/plain")
            .header("Content-Length", "5")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let vars = request_env(&parts);
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("Http_Method"), Some("PUT"));
        assert_eq!(get("Http_Path"), Some("/some/path"));
        assert_eq!(get("Http_Query"), Some("a=1&b=2"));
        assert_eq!(get("Http_X_Call_Id"), Some("abc"));
        assert_eq!(get("Http_Content_Type"), Some("text/plain"));
        assert_eq!(get("Http_ContentLength"), Some("5"));
        assert_eq!(get("Http_Content_Length"), Some("5"));
        assert_eq!(get("Http_Host"), Some("example:8080"));
        assert_eq!(vars.iter().filter(|(n, _)| n == "Http_Host").count(), 1);
    }

    #[test]
    fn no_query_no_body() {
        let (parts, ()) = http::Request::get("/").body(()).unwrap().into_parts();
        let vars = request_env(&parts);
        assert!(!vars.iter().any(|(n, _)| n == "Http_Query"));
        assert!(vars.contains(&("Http_ContentLength".into(), "0".into())));
        assert!(vars.contains(&("Http_Content_Length".into(), "0".into())));
        assert!(vars.contains(&("Http_Path".into(), "/".into())));
    }
}
