//! panic: ADD panics with a fixed message, so tests can check how the runtime reports a trap. For tests only.

use cniwasm_plugin_sdk::{AddOutput, CniError, Invocation, Plugin, PluginConfig};

pub struct Panic;

impl Plugin for Panic {
    fn add(_inv: &Invocation, _config: &PluginConfig) -> Result<AddOutput, CniError> {
        panic!("misbehaving plugin panicked on purpose");
    }

    fn del(_inv: &Invocation, _config: &PluginConfig) -> Result<(), CniError> {
        Ok(())
    }

    fn check(_inv: &Invocation, _config: &PluginConfig) -> Result<(), CniError> {
        Ok(())
    }
}

cniwasm_plugin_sdk::export_plugin!(Panic);
