//! The cniwasm runtime: runs the plugins of a CNI network configuration list
//! as sandboxed wasm components. ADD runs them in order, DEL in reverse, each
//! with the previous result as `prevResult` and its declared capability
//! arguments as `runtimeConfig`, like the reference library (libcni) does for
//! executable plugins.

mod admission;
pub mod cache;
mod chain;
pub mod command;
pub mod config;
pub mod engine;
mod error;
pub mod exec;
mod ipam;
mod kernel;
mod native;
pub mod sandbox;

pub use chain::{Attachment, Runtime, RuntimeOptions};
pub use error::Error;
pub use kernel::{KernelFactory, LinuxKernelFactory};
