//! The operating system's services the rest of the crate uses: clocks and child processes,
//! and the LEB128 pieces of its binary formats.
//!
//! A leaf: it imports nothing else of the crate, and any module may use it. It holds the
//! crate's only `unsafe` code (in [`process`]), each block in one small function with its
//! safety argument.

pub mod clock;
pub mod leb128;
pub(crate) mod process;
