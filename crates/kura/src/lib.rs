//! kura's node: the pieces the `kura` binary wires together, as a library so that
//! integration tests can drive them directly.

pub mod audit;
pub mod drill;
pub mod export;
pub mod node;
pub mod reserves;
pub mod server;
pub mod signing;
pub mod solvency;
pub mod ticker;
pub mod trace;
