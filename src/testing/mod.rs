//! Test support for hoist's own tests and benchmarks (cargo feature `testing`).
//!
//! Not part of the stable API: `proxy` is a fault-injecting HTTP/1.1 reverse proxy that sits
//! between a client and a real registry.

pub mod proxy;
