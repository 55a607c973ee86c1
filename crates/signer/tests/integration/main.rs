//! Every integration test of `kura-signer`, in one binary (one link instead of one per
//! file); each module is one area and keeps its own tests.

mod cold;
mod common;
mod keyfile;
mod reserves;
mod signer;
mod xval;
