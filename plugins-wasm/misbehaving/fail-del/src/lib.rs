//! fail-del: passes the previous result through on ADD, and fails DEL while
//! its configuration sets `"failDel": true`, so tests can check that DEL
//! goes on past a failing plugin and can be retried. For tests only.

use cniwasm_plugin_sdk::{AddOutput, CniError, Invocation, Plugin, PluginConfig};

pub struct FailDel;

/// Plugin-specific code of the scripted DEL failure.
const DEL_FAILED: u32 = 197;

impl Plugin for FailDel {
    fn add(_inv: &Invocation, config: &PluginConfig) -> Result<AddOutput, CniError> {
        Ok(AddOutput::Result(
            config.prev_result.clone().unwrap_or_default(),
        ))
    }

    fn del(_inv: &Invocation, config: &PluginConfig) -> Result<(), CniError> {
        if config.raw.get("failDel").and_then(|value| value.as_bool()) == Some(true) {
            return Err(CniError::new(
                DEL_FAILED,
                "DEL failed on purpose: failDel is set",
            ));
        }
        Ok(())
    }

    fn check(_inv: &Invocation, _config: &PluginConfig) -> Result<(), CniError> {
        Ok(())
    }
}

cniwasm_plugin_sdk::export_plugin!(FailDel);
