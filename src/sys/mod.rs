//! The operating system's services the rest of the crate uses: clocks and child processes.
//!
//! A leaf: it imports nothing else of the crate, and any module may use it. It holds the
//! crate's only `unsafe` code (in [`process`]), each block in one small function with its
//! safety argument.

pub mod clock;
pub(crate) mod process;
