//! The cniwasm host API: the WIT package plugins target (`wit/host.wit`) and
//! its native implementation.

pub mod audit;
pub mod kernel;
pub mod linux;
pub mod plugin_host;
pub mod policy;
#[cfg(feature = "testing")]
pub mod testing;
