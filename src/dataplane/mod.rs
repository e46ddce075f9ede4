//! The invocation hot path: route lookup, hold for capacity, p2c pick, pooled forward.
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
