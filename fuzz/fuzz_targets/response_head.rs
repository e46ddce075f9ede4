//! The upstream response head parser (`http1::codec::parse_response_raw`, and
//! `parse_response_head` built on it) on arbitrary bytes.
//!
//! The first input byte picks whether the request was a HEAD and where the bytes are split
//! (as two reads); the rest is what the upstream sent. Asserts, besides never panicking: a
//! parsed head lies within the buffer and is final (not 1xx); the framing follows the rules
//! (a HEAD answer, 204 and 304 have no body; `Length(0)` is `Empty`; a close-delimited body
//! never keeps the connection); reading the bytes in two pieces gives what reading them
//! whole gives; and the `HeaderMap` parser agrees with the raw one.
#![no_main]

use bytes::BytesMut;
use faasgate::http1::codec::{
    parse_response_head, parse_response_raw, Framing, RawHead, WireError,
};
use libfuzzer_sys::fuzz_target;

/// What a parse ended with, in plain data.
#[derive(Debug, PartialEq)]
enum Outcome {
    Incomplete,
    Failed(WireError),
    Head {
        /// Bytes of interim 1xx heads consumed before the final head.
        skipped: usize,
        len: usize,
        status: u16,
        framing: Framing,
        keep_alive: bool,
        reason: Vec<u8>,
        headers: Vec<(Vec<u8>, Vec<u8>)>,
    },
}

/// `fed`: the bytes given to the parser so far.
fn outcome(fed: usize, buf: &BytesMut, parsed: Result<bool, WireError>, raw: &RawHead) -> Outcome {
    match parsed {
        Ok(false) => Outcome::Incomplete,
        Err(e) => Outcome::Failed(e),
        Ok(true) => {
            assert!(
                raw.len <= buf.len(),
                "head {} > buffer {}",
                raw.len,
                buf.len()
            );
            let head = &buf[..raw.len];
            Outcome::Head {
                skipped: fed - buf.len(),
                len: raw.len,
                status: raw.status.as_u16(),
                framing: raw.framing,
                keep_alive: raw.keep_alive,
                reason: raw.reason(head).to_vec(),
                headers: raw
                    .headers(head)
                    .map(|(n, v)| (n.to_vec(), v.to_vec()))
                    .collect(),
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let head_request = flags & 1 == 1;

    // Whole.
    let mut buf = BytesMut::from(input);
    let mut raw = RawHead::default();
    let parsed = parse_response_raw(&mut buf, head_request, &mut raw);
    let whole = outcome(input.len(), &buf, parsed, &raw);
    if let Outcome::Head {
        status,
        framing,
        keep_alive,
        ..
    } = &whole
    {
        assert!(*status >= 200, "an interim {status} taken as final");
        if head_request || *status == 204 || *status == 304 {
            assert_eq!(*framing, Framing::Empty, "{status} has a body");
        }
        assert_ne!(*framing, Framing::Length(0));
        if *framing == Framing::Close {
            assert!(!keep_alive, "a close-delimited body kept the connection");
        }
    }

    // In two reads.
    let cut = (usize::from(flags >> 1) * input.len()) / 127;
    let cut = cut.min(input.len());
    let mut buf = BytesMut::from(&input[..cut]);
    let mut raw = RawHead::default();
    let mut parsed = parse_response_raw(&mut buf, head_request, &mut raw);
    let mut fed = cut;
    if parsed == Ok(false) {
        buf.extend_from_slice(&input[cut..]);
        fed = input.len();
        parsed = parse_response_raw(&mut buf, head_request, &mut raw);
    }
    let split = outcome(fed, &buf, parsed, &raw);
    assert_eq!(whole, split, "split at {cut}");

    // The HeaderMap parser agrees.
    let mut buf = BytesMut::from(input);
    match (parse_response_head(&mut buf, head_request), &whole) {
        (Ok(None), Outcome::Incomplete) => {}
        (Err(e), Outcome::Failed(f)) => assert_eq!(&e, f),
        (
            Ok(Some(h)),
            Outcome::Head {
                status,
                framing,
                keep_alive,
                headers,
                ..
            },
        ) => {
            assert_eq!(h.parts.status.as_u16(), *status);
            assert_eq!(h.framing, *framing);
            assert_eq!(h.keep_alive, *keep_alive);
            assert_eq!(h.parts.headers.len(), headers.len());
        }
        (got, want) => panic!("parse_response_head gave {got:?}, the raw parser {want:?}"),
    }
});
