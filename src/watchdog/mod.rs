//! The watchdog (pending).
