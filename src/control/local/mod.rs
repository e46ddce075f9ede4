//! The local provider (pending).
