//! kura-bench: the benchmark harness of kura. Bench-only: nothing in the product depends
//! on this crate, and its peer order books (the `peers` feature) never reach the product.
//!
//! - [`workload`]: a deterministic, seeded port of exchange-core's benchmark order
//!   generator (single pair and the 10,000-symbol `medium` set), with its own matching
//!   model so every cancel, move and reduce names a resting order. Output is neutral of
//!   any engine ([`workload::GenCmd`]).
//! - [`latency`]: open-loop latency at a planned rate (no coordinated omission) and
//!   closed-loop throughput, with `std::time::Instant` and an HdrHistogram.
//! - [`peers`]: one trait over order books ([`peers::BookUnderTest`]) with adapters for
//!   kura-book and, with the `peers` feature, matchcore, lobster and orderbook-rs, and
//!   [`peers::book_only`], which runs one workload through all of them in one process and
//!   checks that they end with the same trades and books.
//! - [`rng`]: the small random number generator and integer math behind the workload.
//!
//! The library never prints; the example `book_only` prints its report as JSON.

#![forbid(unsafe_code)]

pub mod latency;
pub mod peers;
pub mod rng;
pub mod workload;
