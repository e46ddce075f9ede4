//! The scrape side of the metrics: `/metrics` ([`exposition`]), the wire counters
//! ([`wire`]) and the per-second series the UI charts ([`series`]), each read from the data
//! plane's and the wire's atomics when asked, never on the request path.

pub mod exposition;
pub mod series;
pub(crate) mod wire;
