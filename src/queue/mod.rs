//! Async invocations (`/async-function/{name}`): calls accepted with 202 once durably
//! stored, then delivered at least once through the data plane, with retries, dead letters
//! and callbacks.
//!
//! - [`call`]: one stored call and its record format.
//!
//! Layer: above `dataplane`, `metrics` and `client`, below `control` (whose scaler counts the
//! backlog as demand) and `api` (which enqueues).

pub mod call;

pub use call::QueuedCall;
