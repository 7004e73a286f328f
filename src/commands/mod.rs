//! One module per command group; `main.rs` only parses and dispatches.

pub mod cluster;
pub mod credentials;
pub mod reconcile;
