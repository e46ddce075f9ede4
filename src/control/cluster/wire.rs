//! The demand report on the wire: a compact binary form, because the leader reads one from
//! every member every tick (`benches/cluster.rs` measured JSON at 50 gateways x 1,000 active
//! functions: 96 KB per report and most of the leader's tick spent decoding it).
//!
//! Layout (`application/vnd.faasgate.demand`): the magic `FGD1`, one byte `full` (0 or 1),
//! a LEB128 count, then per function: a LEB128 length and the UTF-8 `name.namespace`, then
//! `inflight`, `queued`, `arrivals`, `busy_us`, `idle_ms` as LEB128 integers.
//!
//! Invariant: [`decode`] never panics and never allocates more than its input justifies: a
//! count or a length larger than the bytes left is an error, as is trailing data.

use thiserror::Error;

use crate::control::cluster::demand::{FunctionReport, Report};
use crate::sys::leb128::{self, ReadError};

/// The `Content-Type` of an encoded report.
pub const CONTENT_TYPE: &str = "application/vnd.faasgate.demand";
const MAGIC: &[u8; 4] = b"FGD1";
/// The fewest bytes one function takes (an empty name and six one-byte integers).
const MIN_ENTRY: usize = 6;

/// Bytes that are not a demand report.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("malformed demand report: {0}")]
pub struct DecodeError(&'static str);

impl From<ReadError> for DecodeError {
    fn from(e: ReadError) -> Self {
        DecodeError(e.reason())
    }
}

/// Encodes `report`.
pub fn encode(report: &Report) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + report.functions.len() * 32);
    out.extend_from_slice(MAGIC);
    out.push(u8::from(report.full));
    leb128::put(&mut out, report.functions.len() as u64);
    for f in &report.functions {
        leb128::put(&mut out, f.function.len() as u64);
        out.extend_from_slice(f.function.as_bytes());
        for v in [f.inflight, f.queued, f.arrivals, f.busy_us, f.idle_ms] {
            leb128::put(&mut out, v);
        }
    }
    out
}

/// Decodes a report written by [`encode`].
pub fn decode(mut b: &[u8]) -> Result<Report, DecodeError> {
    let magic = leb128::take(&mut b, MAGIC.len())?;
    if magic != MAGIC {
        return Err(DecodeError("bad magic"));
    }
    let full = match leb128::take(&mut b, 1)?[0] {
        0 => false,
        1 => true,
        _ => return Err(DecodeError("bad full flag")),
    };
    let count = leb128::get(&mut b)?;
    if count > (b.len() / MIN_ENTRY) as u64 {
        return Err(DecodeError("count larger than the report"));
    }
    let mut functions = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let len = leb128::get(&mut b)?;
        if len > b.len() as u64 {
            return Err(DecodeError("name longer than the report"));
        }
        let name = std::str::from_utf8(leb128::take(&mut b, len as usize)?)
            .map_err(|_| DecodeError("name is not UTF-8"))?;
        let mut v = [0u64; 5];
        for x in &mut v {
            *x = leb128::get(&mut b)?;
        }
        functions.push(FunctionReport {
            function: name.to_string(),
            inflight: v[0],
            queued: v[1],
            arrivals: v[2],
            busy_us: v[3],
            idle_ms: v[4],
        });
    }
    if !b.is_empty() {
        return Err(DecodeError("trailing bytes"));
    }
    Ok(Report { full, functions })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn report() -> impl Strategy<Value = Report> {
        let f = (
            "[a-z0-9.-]{0,40}",
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(|(function, inflight, queued, arrivals, busy_us, idle_ms)| {
                FunctionReport {
                    function,
                    inflight,
                    queued,
                    arrivals,
                    busy_us,
                    idle_ms,
                }
            });
        (any::<bool>(), proptest::collection::vec(f, 0..50))
            .prop_map(|(full, functions)| Report { full, functions })
    }

    proptest! {
        #[test]
        fn round_trips(r in report()) {
            prop_assert_eq!(decode(&encode(&r)).unwrap(), r);
        }

        /// Arbitrary bytes, and every cut or corruption of a real report, decode to a report
        /// or an error, never a panic.
        #[test]
        fn adversarial_bytes_are_refused_or_read(
            r in report(),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            noise in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let bytes = encode(&r);
            let _ = decode(&noise);
            let _ = decode(&bytes[..cut.index(bytes.len() + 1)]);
            let mut bad = bytes.clone();
            let i = flip.index(bad.len());
            bad[i] ^= 0x55;
            let _ = decode(&bad);
            if cut.index(bytes.len() + 1) < bytes.len() {
                prop_assert!(decode(&bytes[..cut.index(bytes.len() + 1)]).is_err());
            }
        }
    }

    #[test]
    fn huge_counts_and_lengths_are_refused_before_allocating() {
        let mut b = MAGIC.to_vec();
        b.push(1);
        leb128::put(&mut b, u64::MAX);
        assert_eq!(decode(&b), Err(DecodeError("count larger than the report")));
        let mut b = MAGIC.to_vec();
        b.push(0);
        leb128::put(&mut b, 1);
        leb128::put(&mut b, 1 << 40);
        b.extend_from_slice(&[0; 8]);
        assert_eq!(decode(&b), Err(DecodeError("name longer than the report")));
        let mut b = MAGIC.to_vec();
        b.push(0);
        b.extend_from_slice(&[0xff; 11]);
        assert!(decode(&b).is_err());
    }
}
