//! LEB128 integers and length-checked reads: the pieces of the crate's binary formats (the
//! cluster's demand report, queued async calls).
//!
//! Invariant: a read never panics and never trusts a length beyond the bytes it has.

use thiserror::Error;

/// Bytes that end before a value, or an integer that does not fit 64 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ReadError {
    #[error("truncated")]
    Truncated,
    #[error("integer overflows 64 bits")]
    Overflow,
}

impl ReadError {
    /// What went wrong, for a format's own error.
    pub fn reason(self) -> &'static str {
        match self {
            ReadError::Truncated => "truncated",
            ReadError::Overflow => "integer overflows 64 bits",
        }
    }
}

/// Appends `v` as an unsigned LEB128 integer (7 bits a byte, low first).
pub fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads an unsigned LEB128 integer from the front of `b`.
pub fn get(b: &mut &[u8]) -> Result<u64, ReadError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = take(b, 1)?[0];
        let bits = u64::from(byte & 0x7f);
        if shift == 63 && bits > 1 {
            return Err(ReadError::Overflow);
        }
        v |= bits << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(ReadError::Overflow)
}

/// Takes the first `n` bytes of `b`.
pub fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], ReadError> {
    if b.len() < n {
        return Err(ReadError::Truncated);
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Ok(head)
}

/// Appends `bytes` after their length.
pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Reads bytes written by [`put_bytes`].
pub fn get_bytes<'a>(b: &mut &'a [u8]) -> Result<&'a [u8], ReadError> {
    let len = get(b)?;
    if len > b.len() as u64 {
        return Err(ReadError::Truncated);
    }
    take(b, len as usize)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn integers_and_bytes_round_trip(v in any::<u64>(), bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut out = Vec::new();
            put(&mut out, v);
            put_bytes(&mut out, &bytes);
            let mut b = &out[..];
            prop_assert_eq!(get(&mut b), Ok(v));
            prop_assert_eq!(get_bytes(&mut b), Ok(&bytes[..]));
            prop_assert!(b.is_empty());
        }

        #[test]
        fn reads_never_panic(input in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut b = &input[..];
            let _ = get(&mut b);
            let _ = get_bytes(&mut b);
        }
    }

    #[test]
    fn edges() {
        let mut out = Vec::new();
        put(&mut out, u64::MAX);
        assert_eq!(out.len(), 10);
        assert_eq!(get(&mut &out[..]), Ok(u64::MAX));
        // An eleventh byte, or a tenth above 1, does not fit.
        assert_eq!(get(&mut &[0xff; 10][..]), Err(ReadError::Overflow));
        assert_eq!(get(&mut &[0x80][..]), Err(ReadError::Truncated));
        assert_eq!(get_bytes(&mut &[5, 1, 2][..]), Err(ReadError::Truncated));
    }
}
