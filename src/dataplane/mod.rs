//! The invocation path's policy: the route table ([`table`]), replicas and their drain
//! handshake ([`replica`]), p2c balancing ([`balance`]), hold for capacity, the send/retry
//! loop and accounting ([`forward`]), the gateway's response body ([`response`]), and the
//! client connection loop that serves invocations on bytes ([`conn`]). The HTTP/1.1 wire
//! itself (codec, pool, exchange, bodies) is `http1`; nothing here knows the API above it.
//!
//! Invariants: no lock is taken and no `.await` holds a guard; state is read from `ArcSwap`
//! snapshots published by the control plane; demand and latency are counted in atomics.

pub mod balance;
pub(crate) mod conn;
pub mod forward;
pub mod replica;
pub mod response;
pub mod table;

pub use replica::Replica;
pub use table::{FunctionHandle, FunctionState, Routes};
