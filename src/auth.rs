//! Basic auth (pending).
