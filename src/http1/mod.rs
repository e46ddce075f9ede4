//! The HTTP/1.1 wire, shared by the gateway's invocation path and the watchdog's http mode:
//! framing and parsing ([`codec`]), the RFC 9112 request rules ([`request_rules`]),
//! request-head planning and response-head rewriting on bytes ([`head`]), the headers a hop
//! adds and removes ([`headers`]), the per-upstream connection pool ([`pool`]), one upstream
//! exchange ([`exchange`]) and the bodies on the upstream leg ([`body`]).
//!
//! No gateway policy lives here (which replica, retries, holds, accounting: `dataplane`),
//! and it imports nothing of the crate but `model` and `sys`, so a change made here for the
//! gateway's speed is a change to the wire, visible as such to both users.

pub mod body;
pub mod codec;
pub(crate) mod exchange;
pub(crate) mod head;
pub mod headers;
pub mod pool;
pub(crate) mod request_rules;
