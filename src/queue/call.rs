//! One accepted async call as it is stored: what the function will be sent (method, sub-path,
//! raw query, headers, body), where its answer goes (`X-Callback-Url`), and when it arrived.
//!
//! Layout (version 1): the magic `FGQ1`, then LEB128-framed fields in this order: call id,
//! function (`name.namespace`), method, path, query, callback URL (empty: none), arrival
//! (unix milliseconds, an integer), the header count and each header's name and value, then
//! the body. Every string is checked UTF-8 on decode.
//!
//! Invariant: [`QueuedCall::decode`] never panics and never allocates more than its input
//! justifies; trailing bytes are an error, so a record is either read whole or refused.

use bytes::Bytes;
use thiserror::Error;

use crate::sys::leb128::{self, ReadError};

const MAGIC: &[u8; 4] = b"FGQ1";

/// A stored record that is not a queued call.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("malformed queued call: {0}")]
pub struct DecodeError(&'static str);

impl From<ReadError> for DecodeError {
    fn from(e: ReadError) -> Self {
        DecodeError(e.reason())
    }
}

/// An accepted `/async-function` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedCall {
    /// `X-Call-Id`: the client's, or one made at enqueue; sent on every attempt.
    pub call_id: String,
    /// `name.namespace`.
    pub function: String,
    pub method: String,
    /// The part after the function name (`""` or `/sub/path`).
    pub path: String,
    /// The raw query, without `?`.
    pub query: String,
    /// Request headers, hop-by-hop ones removed, in arrival order.
    pub headers: Vec<(String, Bytes)>,
    pub body: Bytes,
    /// `X-Callback-Url`, when sent.
    pub callback_url: Option<String>,
    pub arrived_unix_ms: u64,
}

/// A call in its stored form, with the fields a store indexes it by: what
/// [`CallStore::enqueue`](crate::queue::CallStore::enqueue) takes. The request path builds it
/// straight from the request ([`Fields::encode`]), without a [`QueuedCall`] in between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedCall {
    pub call_id: String,
    /// `name.namespace`.
    pub function: String,
    pub arrived_unix_ms: u64,
    /// The record (see the module doc).
    pub record: Vec<u8>,
}

/// The fields of a record, borrowed: one writer of the layout for [`QueuedCall::encode`] and
/// the request path.
pub struct Fields<'a> {
    pub call_id: &'a str,
    pub function: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    /// `""`: none.
    pub callback_url: &'a str,
    pub arrived_unix_ms: u64,
}

impl Fields<'_> {
    /// The record: these fields, the headers `headers()` yields (called twice: once to
    /// count them; names are stored lowercased, as `http::HeaderName` holds them, whoever
    /// parsed the request) and `body`, in one allocation sized up front.
    pub fn encode<'h, H, I>(&self, headers: H, body: &[u8]) -> Vec<u8>
    where
        H: Fn() -> I,
        I: Iterator<Item = (&'h [u8], &'h [u8])>,
    {
        let mut count = 0u64;
        let mut header_bytes = 0;
        for (n, v) in headers() {
            count += 1;
            header_bytes += n.len() + v.len() + 4;
        }
        let mut out = Vec::with_capacity(
            64 + self.call_id.len()
                + self.function.len()
                + self.method.len()
                + self.path.len()
                + self.query.len()
                + self.callback_url.len()
                + header_bytes
                + body.len(),
        );
        out.extend_from_slice(MAGIC);
        for s in [
            self.call_id,
            self.function,
            self.method,
            self.path,
            self.query,
            self.callback_url,
        ] {
            leb128::put_bytes(&mut out, s.as_bytes());
        }
        leb128::put(&mut out, self.arrived_unix_ms);
        leb128::put(&mut out, count);
        for (name, value) in headers() {
            leb128::put(&mut out, name.len() as u64);
            out.extend(name.iter().map(u8::to_ascii_lowercase));
            leb128::put_bytes(&mut out, value);
        }
        leb128::put_bytes(&mut out, body);
        out
    }
}

impl QueuedCall {
    /// The stored form (see the module doc).
    pub fn encode(&self) -> Vec<u8> {
        Fields {
            call_id: &self.call_id,
            function: &self.function,
            method: &self.method,
            path: &self.path,
            query: &self.query,
            callback_url: self.callback_url.as_deref().unwrap_or(""),
            arrived_unix_ms: self.arrived_unix_ms,
        }
        .encode(
            || self.headers.iter().map(|(n, v)| (n.as_bytes(), v.as_ref())),
            &self.body,
        )
    }

    /// The stored form with its index fields, as a store takes it.
    pub fn encoded(&self) -> EncodedCall {
        EncodedCall {
            call_id: self.call_id.clone(),
            function: self.function.clone(),
            arrived_unix_ms: self.arrived_unix_ms,
            record: self.encode(),
        }
    }

    /// Reads a record written by [`QueuedCall::encode`].
    pub fn decode(mut b: &[u8]) -> Result<Self, DecodeError> {
        if leb128::take(&mut b, MAGIC.len())? != MAGIC {
            return Err(DecodeError("bad magic"));
        }
        let text = |b: &mut &[u8]| -> Result<String, DecodeError> {
            let raw = leb128::get_bytes(b)?;
            String::from_utf8(raw.to_vec()).map_err(|_| DecodeError("text is not UTF-8"))
        };
        let call_id = text(&mut b)?;
        let function = text(&mut b)?;
        let method = text(&mut b)?;
        let path = text(&mut b)?;
        let query = text(&mut b)?;
        let callback = text(&mut b)?;
        let arrived_unix_ms = leb128::get(&mut b)?;
        let count = leb128::get(&mut b)?;
        // Each header takes at least two bytes (two empty lengths).
        if count > (b.len() / 2) as u64 {
            return Err(DecodeError("more headers than bytes"));
        }
        let mut headers = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let name = text(&mut b)?;
            let value = Bytes::copy_from_slice(leb128::get_bytes(&mut b)?);
            headers.push((name, value));
        }
        let body = Bytes::copy_from_slice(leb128::get_bytes(&mut b)?);
        if !b.is_empty() {
            return Err(DecodeError("trailing bytes"));
        }
        Ok(Self {
            call_id,
            function,
            method,
            path,
            query,
            headers,
            body,
            callback_url: (!callback.is_empty()).then_some(callback),
            arrived_unix_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn call() -> impl Strategy<Value = QueuedCall> {
        (
            "[a-f0-9-]{0,36}",
            "[a-z0-9.-]{1,40}",
            "(GET|POST|PUT|DELETE|PATCH)",
            "(/[a-zA-Z0-9._~%-]{0,10}){0,3}",
            "[a-z0-9=&%]{0,30}",
            proptest::option::of("https?://[a-z.]{1,20}(:[0-9]{1,5})?/[a-z]{0,10}"),
            any::<u64>(),
            proptest::collection::vec(
                (
                    "[A-Za-z-]{1,20}",
                    proptest::collection::vec(any::<u8>(), 0..40),
                ),
                0..8,
            ),
            proptest::collection::vec(any::<u8>(), 0..2000),
        )
            .prop_map(
                |(call_id, function, method, path, query, callback_url, at, headers, body)| {
                    QueuedCall {
                        call_id,
                        function,
                        method,
                        path,
                        query,
                        headers: headers
                            .into_iter()
                            .map(|(n, v)| (n, Bytes::from(v)))
                            .collect(),
                        body: Bytes::from(body),
                        callback_url,
                        arrived_unix_ms: at,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn a_call_round_trips(c in call()) {
            // Header names come back lowercased; everything else as it was.
            let mut lowered = c.clone();
            for (name, _) in &mut lowered.headers {
                name.make_ascii_lowercase();
            }
            prop_assert_eq!(QueuedCall::decode(&c.encode()), Ok(lowered));
        }

        /// Any prefix, any single corrupted byte or trailing garbage: an error or a valid
        /// call, never a panic.
        #[test]
        fn damaged_records_never_panic(c in call(), cut in any::<prop::sample::Index>(),
                                       flip in any::<prop::sample::Index>(), x in any::<u8>()) {
            let bytes = c.encode();
            let cut = cut.index(bytes.len());
            prop_assert!(QueuedCall::decode(&bytes[..cut]).is_err());
            let mut damaged = bytes.clone();
            let i = flip.index(damaged.len());
            damaged[i] ^= x | 1;
            let _ = QueuedCall::decode(&damaged);
            let mut longer = bytes;
            longer.push(x);
            prop_assert!(QueuedCall::decode(&longer).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend_from_slice(&input);
            let _ = QueuedCall::decode(&input);
            let _ = QueuedCall::decode(&with_magic);
        }
    }
}
