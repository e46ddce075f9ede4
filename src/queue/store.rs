//! What the async queue asks of a store: keep accepted calls durably, hand each out to one
//! dispatcher at a time (a lease, for as long as the call runs), and move it on: done,
//! retried later, or buried in the dead-letter list (which can be replayed or dropped).
//!
//! Invariants every store keeps:
//! - [`CallStore::enqueue`] returns only once the call survives a crash of the gateway (and,
//!   for the embedded store, a power cut): the 202 is sent after it.
//! - A call taken ([`CallStore::take`]) is not handed out again while its lease lives, however
//!   long it runs; a lease ends with [`CallStore::ack`], [`CallStore::retry`] or
//!   [`CallStore::bury`], or with the process (then the call is handed out again: delivery is
//!   at least once).
//! - Calls of one function are handed out in arrival order among those due.

use async_trait::async_trait;
use serde::Serialize;
use thiserror::Error;

use crate::queue::call::{EncodedCall, QueuedCall};

#[derive(Debug, Error)]
pub enum StoreError {
    /// The store is at its bound (`--max-async-queue`): 429.
    #[error("the async queue is full ({0} calls waiting)")]
    Full(u64),
    /// The call's record is larger than the store takes (413; the limit in bytes).
    #[error("the call is larger than the async queue takes ({0} bytes at most)")]
    TooLarge(usize),
    /// No such dead letter (404).
    #[error("no dead letter {0}")]
    NotFound(u64),
    /// The store failed (500): the call was not accepted, or its state did not change.
    #[error("async queue store: {0}")]
    Backend(String),
}

/// A call handed to a dispatcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// The store's id for the call (its order of arrival).
    pub id: u64,
    pub call: QueuedCall,
    /// Deliveries made before this one.
    pub attempts: u32,
}

/// A call that ran out of attempts (`GET /system/async/dead-letters`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub id: u64,
    pub call_id: String,
    pub function: String,
    pub attempts: u32,
    pub arrived_unix_ms: u64,
    pub failed_unix_ms: u64,
    /// The last attempt's status (0: it never got an HTTP answer).
    pub status: u16,
    pub reason: String,
}

/// One function's backlog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    pub function: String,
    /// Calls accepted and not yet done or buried (those being delivered included).
    pub queued: u64,
    /// Of those, the ones being delivered now.
    pub leased: u64,
    /// Arrival of the oldest (unix milliseconds).
    pub oldest_unix_ms: u64,
    /// When the earliest waiting call is due (unix milliseconds; None: all are leased).
    pub next_due_unix_ms: Option<u64>,
}

#[async_trait]
pub trait CallStore: Send + Sync + 'static {
    /// Stores `call` durably and returns its id.
    async fn enqueue(&self, call: EncodedCall) -> Result<u64, StoreError>;
    /// Leases up to `max` calls of `function` due at `now_unix_ms`, oldest first.
    async fn take(
        &self,
        function: &str,
        max: usize,
        now_unix_ms: u64,
    ) -> Result<Vec<Taken>, StoreError>;
    /// The call is done: forget it.
    async fn ack(&self, id: u64) -> Result<(), StoreError>;
    /// Ends the lease; the call is due again at `at_unix_ms`, after `attempts` deliveries.
    async fn retry(&self, id: u64, attempts: u32, at_unix_ms: u64) -> Result<(), StoreError>;
    /// Moves the call to the dead-letter list.
    async fn bury(
        &self,
        id: u64,
        attempts: u32,
        status: u16,
        reason: &str,
        now_unix_ms: u64,
    ) -> Result<(), StoreError>;
    /// The dead letters, of one function or of all, oldest first.
    async fn dead_letters(&self, function: Option<&str>) -> Result<Vec<DeadLetter>, StoreError>;
    /// Puts a dead letter back in its function's queue, due now, with no attempt counted.
    async fn replay(&self, id: u64) -> Result<(), StoreError>;
    /// Drops a dead letter.
    async fn discard(&self, id: u64) -> Result<(), StoreError>;
    /// Every function with calls queued.
    fn backlog(&self) -> Vec<Backlog>;
    /// How many dead letters each function has now (functions with none left out).
    fn dead_counts(&self) -> Vec<(String, u64)>;
}
