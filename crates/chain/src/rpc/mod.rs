pub mod client;
pub(crate) mod json;
pub mod server;
