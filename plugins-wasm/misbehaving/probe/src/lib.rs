//! probe: passes the previous result through on ADD, and lets tests see what
//! the runtime sends on the other commands. For tests only.
//!
//! * DEL and CHECK fail on purpose while `"reportDel": true` or
//!   `"reportCheck": true` is set, with a message containing the `prevResult`
//!   they received (`null` when there was none).
//! * STATUS fails with the `statusError` object (`code`, `msg`, `details`)
//!   when the configuration has one.
//! * It supports only 0.3.1 and later, so a list of an older version (or one
//!   without `cniVersion`, which means 0.1.0) names a version it lacks.
//! * ADD sleeps for `sleepMs` milliseconds first when the configuration sets
//!   it, through WASI's monotonic clock as any `std::thread::sleep` does.

use cniwasm_plugin_sdk::{AddOutput, CniError, Invocation, Plugin, PluginConfig};
use serde_json::Value;

pub struct Probe;

/// Plugin-specific code of the DEL and CHECK reports.
const PREV_RESULT_REPORT: u32 = 195;

/// Fails with the received `prevResult` when the configuration sets `key`.
fn report_prev_result(config: &PluginConfig, key: &str) -> Result<(), CniError> {
    if config.raw.get(key).and_then(Value::as_bool) != Some(true) {
        return Ok(());
    }
    let report = serde_json::json!({"prevResult": config.raw.get("prevResult")});
    Err(CniError::new(PREV_RESULT_REPORT, report.to_string()))
}

impl Plugin for Probe {
    fn supported_versions() -> Vec<String> {
        ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]
            .iter()
            .map(|version| version.to_string())
            .collect()
    }

    fn add(_inv: &Invocation, config: &PluginConfig) -> Result<AddOutput, CniError> {
        if let Some(delay) = config.raw.get("sleepMs").and_then(Value::as_u64) {
            std::thread::sleep(std::time::Duration::from_millis(delay));
        }
        Ok(AddOutput::Result(
            config.prev_result.clone().unwrap_or_default(),
        ))
    }

    fn del(_inv: &Invocation, config: &PluginConfig) -> Result<(), CniError> {
        report_prev_result(config, "reportDel")
    }

    fn check(_inv: &Invocation, config: &PluginConfig) -> Result<(), CniError> {
        report_prev_result(config, "reportCheck")
    }

    fn status(_inv: &Invocation, config: &PluginConfig) -> Result<(), CniError> {
        let Some(wanted) = config.raw.get("statusError") else {
            return Ok(());
        };
        let text = |key: &str| wanted.get(key).and_then(Value::as_str).unwrap_or_default();
        let code = wanted
            .get("code")
            .and_then(Value::as_u64)
            .and_then(|code| u32::try_from(code).ok())
            .unwrap_or(50);
        Err(CniError::new(code, text("msg")).with_details(text("details")))
    }
}

cniwasm_plugin_sdk::export_plugin!(Probe);
