//! spin-forever: ADD loops forever, so tests can check the runtime's deadline. For tests only.

use std::hint::black_box;

use cniwasm_plugin_sdk::{AddOutput, CniError, Invocation, Plugin, PluginConfig};

pub struct SpinForever;

impl Plugin for SpinForever {
    fn add(_inv: &Invocation, _config: &PluginConfig) -> Result<AddOutput, CniError> {
        // black_box hides the counter from the optimizer, which could
        // otherwise drop a loop without visible effects.
        let mut counter: u64 = 0;
        loop {
            counter = black_box(counter.wrapping_add(1));
        }
    }

    fn del(_inv: &Invocation, _config: &PluginConfig) -> Result<(), CniError> {
        Ok(())
    }

    fn check(_inv: &Invocation, _config: &PluginConfig) -> Result<(), CniError> {
        Ok(())
    }
}

cniwasm_plugin_sdk::export_plugin!(SpinForever);
