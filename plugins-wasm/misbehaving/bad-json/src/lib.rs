//! bad-json: ADD returns text that is not JSON, so tests can check that the runtime rejects it. For tests only.

use cniwasm_plugin_sdk::bindings::Guest;
use cniwasm_plugin_sdk::bindings::cniwasm::host::types::{CniError as WitCniError, Invocation};
use cniwasm_plugin_sdk::{Adapter, AddOutput, CniError, Plugin, PluginConfig};

/// A truncated result: an array that never closes.
const NOT_JSON: &str = r#"{"cniVersion": "0.3.0", "ips": ["#;

/// Handles every command except ADD, which the SDK would render as JSON.
struct Passthrough;

impl Plugin for Passthrough {
    fn add(
        _inv: &cniwasm_plugin_sdk::Invocation,
        config: &PluginConfig,
    ) -> Result<AddOutput, CniError> {
        Ok(AddOutput::Result(
            config.prev_result.clone().unwrap_or_default(),
        ))
    }

    fn del(_inv: &cniwasm_plugin_sdk::Invocation, _config: &PluginConfig) -> Result<(), CniError> {
        Ok(())
    }

    fn check(
        _inv: &cniwasm_plugin_sdk::Invocation,
        _config: &PluginConfig,
    ) -> Result<(), CniError> {
        Ok(())
    }
}

type Inner = Adapter<Passthrough>;

/// Implements the exports itself, because ADD's output bypasses the SDK's
/// rendering.
pub struct BadJson;

impl Guest for BadJson {
    fn supported_versions() -> Vec<String> {
        Inner::supported_versions()
    }

    fn add(_inv: Invocation, _config: String) -> Result<String, WitCniError> {
        Ok(NOT_JSON.to_string())
    }

    fn del(inv: Invocation, config: String) -> Result<(), WitCniError> {
        Inner::del(inv, config)
    }

    fn check(inv: Invocation, config: String) -> Result<(), WitCniError> {
        Inner::check(inv, config)
    }

    fn status(inv: Invocation, config: String) -> Result<(), WitCniError> {
        Inner::status(inv, config)
    }

    fn gc(inv: Invocation, config: String) -> Result<(), WitCniError> {
        Inner::gc(inv, config)
    }
}

cniwasm_plugin_sdk::bindings::export!(BadJson with_types_in cniwasm_plugin_sdk::bindings);
