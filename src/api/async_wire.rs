//! The byte loop's `/async-function` enqueue: an async call's stored record written straight
//! from the request bytes (`dataplane::conn`, [`Step::Enqueue`](crate::http1::head::Step)),
//! and its `202` written as bytes: no `Request`, `HeaderMap` or `Response` is built.
//!
//! It serves only the calls `async_call::enqueue` would accept, and stores the same call:
//! the same method, sub-path, raw query and body, the same headers (hop-by-hop ones and
//! those `Connection` names out, `X-Call-Id` and `X-Callback-Url` apart, names lowercased
//! by the record's encoder; in the order the client sent them, where hyper's `HeaderMap`
//! groups a name's values, which a delivery's own `HeaderMap` does too), the client's first
//! `X-Call-Id` or a new one. Every call it
//! would refuse at the door (no queue, a bad name, an unknown function, a body over
//! `--max-async-body`, an `X-Callback-Url` that is not a visible-ASCII URL `--callback-allow`
//! admits) goes to hyper's path unserved, which answers it as it answers every request: one
//! behaviour, which `tests/it/downstream_wire.rs` runs both ways. What the store says
//! (full, failed) is answered here, with the status and text hyper's path gives.
//!
//! Invariant: the answer is written only after the store says the call is durably stored.

use std::mem::MaybeUninit;

use http::StatusCode;

use super::error::ApiError;
use super::Gateway;
use crate::http1::head::{date, eq, header, is_hop_by_hop, status_line, MAX_HEADERS};
use crate::http1::headers::{call_id_bytes, names_a_header};
use crate::model::names::KeyRef;
use crate::queue::call::Fields;
use crate::queue::EncodedCall;

/// The `Connection` tokens a request's headers name, at most this many (more: the loop
/// hands the request to hyper before it gets here, `http1::head::MAX_NAMED`).
const MAX_NAMED: usize = crate::http1::head::MAX_NAMED;

/// Enqueues the async call `req` (its head the first `head_len` bytes, its whole body
/// after): `false` when it is not served here (nothing is stored and `out` is untouched:
/// hyper's path answers it), else its answer is in `out`.
pub(crate) async fn enqueue(
    gw: &Gateway,
    req: &[u8],
    head_len: usize,
    close: bool,
    out: &mut Vec<u8>,
) -> bool {
    let Some(calls) = gw.async_calls.as_ref() else {
        return false;
    };
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let (Ok(httparse::Status::Complete(n)), body) = (
        httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut parsed,
            req,
            &mut slots,
        ),
        &req[head_len..],
    ) else {
        return false;
    };
    let (Some(method), Some(target), true) = (parsed.method, parsed.path, n == head_len) else {
        return false;
    };
    let Some(target) = target.strip_prefix(super::async_call::PREFIX) else {
        return false;
    };
    let (target, query) = target.split_once('?').unwrap_or((target, ""));
    let (segment, path) = target
        .find('/')
        .map_or((target, ""), |i| target.split_at(i));
    // Only valid names are deployed: one not found (invalid or unknown) is hyper's 400 or 404.
    let Some(handle) = gw.routes.get(KeyRef::parse_segment(segment, "")) else {
        return false;
    };
    if body.len() > calls.max_body {
        return false;
    }

    let headers = parsed.headers;
    let mut named: [&[u8]; MAX_NAMED] = [&[]; MAX_NAMED];
    let mut named_count = 0;
    let (mut client_id, mut callback) = (None, None);
    for h in headers.iter() {
        let name = h.name.as_bytes();
        if eq(name, b"connection") {
            for token in h.value.split(|&b| b == b',').map(crate::http1::codec::trim) {
                if !names_a_header(token) {
                    continue;
                }
                if named_count == MAX_NAMED {
                    return false;
                }
                named[named_count] = token;
                named_count += 1;
            }
        } else if eq(name, b"x-call-id") {
            client_id = client_id.or(Some(h.value));
        } else if eq(name, b"x-callback-url") {
            callback = callback.or(Some(h.value));
        }
    }
    let named = &named[..named_count];
    // As `HeaderValue::to_str` reads a value, then `--callback-allow`.
    let callback_url = match callback {
        None => "",
        Some(v) => match std::str::from_utf8(v) {
            Ok(s)
                if v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
                    && crate::queue::callback::check_url(
                        s,
                        calls.dispatcher.callbacks().allow(),
                    )
                    .is_ok() =>
            {
                s
            }
            _ => return false,
        },
    };
    let generated;
    let id: &[u8] = match client_id {
        Some(id) => id,
        None => {
            generated = call_id_bytes();
            &generated
        }
    };
    let call_id = String::from_utf8_lossy(id).into_owned();
    // `name.namespace`, as `FunctionKey`'s `Display` writes it.
    let function = handle.label().to_owned();
    let arrived_unix_ms = crate::sys::clock::unix_ms();
    let kept = || {
        headers
            .iter()
            .filter(|h| {
                let name = h.name.as_bytes();
                !(is_hop_by_hop(name)
                    || eq(name, b"x-call-id")
                    || eq(name, b"x-callback-url")
                    || named.iter().any(|t| eq(name, t)))
            })
            .map(|h| (h.name.as_bytes(), h.value))
    };
    let record = Fields {
        call_id: &call_id,
        function: &function,
        method,
        path,
        query,
        callback_url,
        arrived_unix_ms,
    }
    .encode(kept, body);
    let stored = calls
        .store
        .enqueue(EncodedCall {
            call_id,
            function,
            arrived_unix_ms,
            record,
        })
        .await;
    match stored {
        Ok(_) => {
            calls.dispatcher.notify_enqueued(&handle);
            status_line(out, StatusCode::ACCEPTED, b"");
            header(out, b"x-call-id", id);
            header(out, b"content-length", b"0");
            end_head(out, close);
        }
        Err(e) => {
            let e = ApiError::from(e);
            let status = e.status();
            if status.is_server_error() {
                tracing::warn!(%status, error = %e, "request failed");
            }
            let text = e.to_string();
            status_line(out, status, b"");
            header(out, b"content-type", b"text/plain; charset=utf-8");
            let mut itoa = itoa::Buffer::new();
            header(out, b"content-length", itoa.format(text.len()).as_bytes());
            end_head(out, close);
            out.extend_from_slice(text.as_bytes());
        }
    }
    true
}

/// `Date`, `Connection: close` when the client asked for it, and the head's end.
fn end_head(out: &mut Vec<u8>, close: bool) {
    date::with(|d| header(out, b"date", d));
    if close {
        header(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
}
