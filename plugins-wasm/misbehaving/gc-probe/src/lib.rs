//! gc-probe: passes the previous result through on ADD, and on GC fails on
//! purpose with a message holding the `cni.dev/valid-attachments` and
//! `cni.dev/attachments` values it received, so tests can see what the
//! runtime sent. For tests only.

use cniwasm_plugin_sdk::{AddOutput, CniError, Invocation, Plugin, PluginConfig};

pub struct GcProbe;

/// Plugin-specific code of the report.
const GC_REPORT: u32 = 196;

impl Plugin for GcProbe {
    fn add(_inv: &Invocation, config: &PluginConfig) -> Result<AddOutput, CniError> {
        Ok(AddOutput::Result(
            config.prev_result.clone().unwrap_or_default(),
        ))
    }

    fn del(_inv: &Invocation, _config: &PluginConfig) -> Result<(), CniError> {
        Ok(())
    }

    fn check(_inv: &Invocation, _config: &PluginConfig) -> Result<(), CniError> {
        Ok(())
    }

    fn gc(_inv: &Invocation, config: &PluginConfig) -> Result<(), CniError> {
        let report = serde_json::json!({
            "cni.dev/valid-attachments": config.raw.get("cni.dev/valid-attachments"),
            "cni.dev/attachments": config.raw.get("cni.dev/attachments"),
        });
        Err(CniError::new(GC_REPORT, report.to_string()))
    }
}

cniwasm_plugin_sdk::export_plugin!(GcProbe);
