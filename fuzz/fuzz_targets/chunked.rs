//! The chunked body codec (`http1::codec::ChunkedDecoder`, `write_chunk_header`), both
//! ways, on each input.
//!
//! Decoding: the input as a chunked body, fed in pieces (sizes from the input's first byte);
//! never panics, never yields more data than it was given, never yields an empty chunk,
//! and after the end leaves what follows the body unread. Round trip: the input (after a
//! few bytes that choose the chunk and read sizes) as data, encoded in chunks of arbitrary
//! sizes with optional trailers, then decoded from reads of arbitrary sizes with the next
//! message's bytes behind it: the same bytes come back, the end is seen, and the bytes
//! behind are left.
#![no_main]

use arbitrary::Unstructured;
use bytes::BytesMut;
use faasgate::http1::codec::{write_chunk_header, ChunkedDecoder, Decoded, LAST_CHUNK};
use libfuzzer_sys::fuzz_target;

/// The bytes of the next message on the connection, behind the body.
const NEXT: &[u8] = b"HTTP/1.1 200 OK\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    decode_arbitrary(data);
    let _ = round_trip(Unstructured::new(data));
});

fn decode_arbitrary(data: &[u8]) {
    let step = 1 + usize::from(data.first().copied().unwrap_or(0) % 32);
    let mut decoder = ChunkedDecoder::new();
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut out = 0usize;
    loop {
        match decoder.decode(&mut buf) {
            Ok(Decoded::Data(d)) => {
                assert!(!d.is_empty(), "an empty data chunk");
                out += d.len();
                assert!(out <= fed, "{out} bytes of data from {fed} bytes of input");
            }
            Ok(Decoded::End) => {
                assert!(decoder.is_done());
                // What follows the body is left as it came.
                assert!(
                    data[..fed].ends_with(&buf),
                    "the bytes behind the body changed"
                );
                return;
            }
            Ok(Decoded::NeedMore) => {
                if fed == data.len() {
                    return;
                }
                let n = step.min(data.len() - fed);
                buf.extend_from_slice(&data[fed..fed + n]);
                fed += n;
            }
            Err(_) => return,
        }
    }
}

fn round_trip(mut u: Unstructured<'_>) -> arbitrary::Result<()> {
    let chunk_sizes: Vec<u8> = u.arbitrary()?;
    let read_sizes: Vec<u8> = u.arbitrary()?;
    let trailers: bool = u.arbitrary()?;
    let body = u.take_rest();

    // Encode, as the client loop writes a chunked answer.
    let mut wire = Vec::new();
    let mut rest = body;
    let mut sizes = chunk_sizes.iter().cycle();
    while !rest.is_empty() {
        let size = 1 + usize::from(*sizes.next().unwrap_or(&255));
        let (chunk, more) = rest.split_at(size.min(rest.len()));
        write_chunk_header(chunk.len(), &mut wire);
        wire.extend_from_slice(chunk);
        wire.extend_from_slice(b"\r\n");
        rest = more;
    }
    if trailers {
        wire.extend_from_slice(b"0;ext=1\r\nX-Trailer: t\r\n\r\n");
    } else {
        wire.extend_from_slice(LAST_CHUNK);
    }
    wire.extend_from_slice(NEXT);

    // Decode from reads of arbitrary sizes.
    let mut decoder = ChunkedDecoder::new();
    let mut buf = BytesMut::new();
    let mut reads = read_sizes.iter().cycle();
    let mut fed = 0;
    let mut got = Vec::with_capacity(body.len());
    loop {
        match decoder.decode(&mut buf) {
            Ok(Decoded::Data(d)) => got.extend_from_slice(&d),
            Ok(Decoded::End) => break,
            Ok(Decoded::NeedMore) => {
                assert!(
                    fed < wire.len(),
                    "the decoder wants more than the whole body"
                );
                let n = (1 + usize::from(*reads.next().unwrap_or(&255))).min(wire.len() - fed);
                buf.extend_from_slice(&wire[fed..fed + n]);
                fed += n;
            }
            Err(e) => panic!("{e} decoding {:?}", String::from_utf8_lossy(&wire)),
        }
    }
    assert_eq!(got, body, "the body came back changed");
    let mut behind = buf.to_vec();
    behind.extend_from_slice(&wire[fed..]);
    assert_eq!(behind, NEXT, "the bytes behind the body");
    Ok(())
}
