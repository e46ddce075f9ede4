//! The byte-level client loop's request planner (`http1::head::plan`) on arbitrary bytes.
//!
//! Asserts, besides never panicking: a served request lies within the buffer; its upstream
//! form parses (httparse) as one complete HTTP/1.1 request head followed by exactly the
//! client's body; its target is what follows `/function/<name>`, rooted; its
//! `Content-Length` values equal the body's length (none only for an empty body); it has no
//! hop-by-hop header, one `X-Call-Id` and one `X-Start-Time`, and no header name the client
//! did not send but those the gateway adds. Planning only the request's own bytes gives the
//! same plan (bytes after it are the next request's), and a strict prefix of them asks for
//! more.
#![no_main]

use faasgate::testing::{plan, Planned};
use libfuzzer_sys::fuzz_target;

const PEER: &[u8] = b"10.0.0.9:4000";
/// Headers the gateway adds to the upstream request.
const ADDED: [&str; 5] = [
    "x-call-id",
    "x-start-time",
    "x-forwarded-for",
    "x-forwarded-host",
    "content-length",
];
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Every function name is deployed in the default namespace, so any well-formed invocation
/// can be served.
fn run(buf: &[u8], up: &mut Vec<u8>) -> Planned {
    plan(buf, up, PEER, |k| k.namespace == "openfaas-fn")
}

/// The plan without the per-request values (`X-Call-Id`, `X-Start-Time`).
fn shape(p: &Planned) -> Planned {
    match p {
        Planned::Serve {
            len,
            bodiless,
            idempotent,
            head_request,
            close,
            call_id,
            ..
        } => Planned::Serve {
            len: *len,
            bodiless: *bodiless,
            idempotent: *idempotent,
            head_request: *head_request,
            close: *close,
            call_id: call_id.map(|_| [0; 36]),
            start_time: 0,
        },
        other => other.clone(),
    }
}

fn lower(name: &str) -> String {
    name.to_ascii_lowercase()
}

fuzz_target!(|buf: &[u8]| {
    let mut up = Vec::new();
    let planned = run(buf, &mut up);
    if let Planned::Enqueue { head_len, len, .. } = planned {
        // An async call: its head and whole body are in the buffer.
        assert!(head_len <= len && len <= buf.len(), "{planned:?} of {}", buf.len());
        return;
    }
    let Planned::Serve {
        len,
        bodiless,
        call_id,
        start_time,
        ..
    } = planned
    else {
        return;
    };
    assert!(len <= buf.len(), "len {len} > buffer {}", buf.len());

    // The client's request as httparse reads it (the planner parsed it with 64 slots).
    let mut client_slots = [httparse::EMPTY_HEADER; 64];
    let mut client = httparse::Request::new(&mut client_slots);
    let client_head = match client.parse(&buf[..len]) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("served a request httparse reads as {other:?}"),
    };
    let body = &buf[client_head..len];
    assert_eq!(bodiless, body.is_empty());
    let client_names: Vec<String> = client.headers.iter().map(|h| lower(h.name)).collect();

    // The upstream form: one complete head, then exactly the body.
    let mut slots = [httparse::EMPTY_HEADER; 80];
    let mut req = httparse::Request::new(&mut slots);
    let head_len = match req.parse(&up) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!(
            "upstream head {other:?}: {:?}",
            String::from_utf8_lossy(&up)
        ),
    };
    assert_eq!(req.version, Some(1), "the upstream speaks HTTP/1.1");
    assert_eq!(req.method, client.method);
    // The target: what follows `/function/<name>`, rooted.
    let target = client.path.expect("a served request has a target");
    let after = &target["/function/".len()..];
    let rest = &after[after.find(['/', '?']).unwrap_or(after.len())..];
    let expected = if rest.starts_with('/') {
        rest.to_string()
    } else {
        format!("/{rest}")
    };
    assert_eq!(req.path, Some(expected.as_str()), "the upstream target");
    assert_eq!(&up[head_len..], body, "the upstream body is the client's");
    let names: Vec<String> = req.headers.iter().map(|h| lower(h.name)).collect();
    let values = |n: &str| -> Vec<&[u8]> {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(n))
            .map(|h| h.value)
            .collect()
    };
    // One length at most, whatever the client repeated (equal duplicates are one value).
    let lengths = values("content-length");
    assert!(lengths.len() <= 1, "{} Content-Length lines", lengths.len());
    // RFC 9112 3.2: a served HTTP/1.1 request had exactly one valid Host, forwarded.
    assert_eq!(values("host").len(), 1, "one Host upstream");
    assert!(
        names.iter().all(|n| !n.contains('_')),
        "a name with '_' reached the upstream"
    );
    if lengths.is_empty() {
        assert!(body.is_empty(), "a body without a Content-Length");
    }
    for v in lengths {
        assert_eq!(
            std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok()),
            Some(body.len() as u64),
            "Content-Length {:?}",
            String::from_utf8_lossy(v)
        );
    }
    for n in &names {
        assert!(
            !HOP_BY_HOP.contains(&n.as_str()),
            "hop-by-hop {n} reached the upstream"
        );
        assert!(
            client_names.contains(n) || ADDED.contains(&n.as_str()),
            "{n} reached the upstream but the client did not send it"
        );
    }
    let ids = values("x-call-id");
    assert_eq!(ids.len(), 1, "one X-Call-Id");
    if let Some(id) = call_id {
        assert_eq!(ids[0], &id[..]);
    }
    let start = start_time.to_string();
    assert_eq!(
        values("x-start-time"),
        [start.as_bytes()],
        "one X-Start-Time"
    );
    assert!(!values("x-forwarded-for").is_empty(), "an X-Forwarded-For");

    // The request's own bytes give the same plan; a strict prefix asks for more.
    let mut again = Vec::new();
    let alone = run(&buf[..len], &mut again);
    assert_eq!(shape(&alone), shape(&planned));
    for cut in [len - 1, len / 2, client_head.saturating_sub(1)] {
        if cut < len {
            let p = run(&buf[..cut], &mut again);
            assert_eq!(p, Planned::More, "a prefix of {cut} bytes");
        }
    }
});
