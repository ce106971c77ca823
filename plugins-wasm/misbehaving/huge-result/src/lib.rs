//! huge-result: ADD returns prevResult with a `dns.search` list of about 64 MiB, so tests can check the runtime's output limit. For tests only.

use std::fmt::Write;

use cniwasm_plugin_sdk::bindings::Guest;
use cniwasm_plugin_sdk::bindings::cniwasm::host::types::{CniError as WitCniError, Invocation};
use cniwasm_plugin_sdk::{Adapter, AddOutput, CniError, Plugin, PluginConfig};

/// Size of the search list in bytes (64 MiB).
const TARGET_BYTES: usize = 64 << 20;
/// One list entry as printed, `"s0000000.example.invalid", `: 28 bytes.
const ENTRY_BYTES: usize = 28;
/// Stands in for the search list in the rendered prevResult.
const PLACEHOLDER: &str = "cniwasm-huge-result-placeholder";

/// Renders prevResult with [`PLACEHOLDER`] as its only search domain.
struct WithPlaceholder;

impl Plugin for WithPlaceholder {
    fn add(
        _inv: &cniwasm_plugin_sdk::Invocation,
        config: &PluginConfig,
    ) -> Result<AddOutput, CniError> {
        let mut result = config.prev_result.clone().unwrap_or_default();
        result.dns.search = vec![PLACEHOLDER.to_string()];
        Ok(AddOutput::Result(result))
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

type Inner = Adapter<WithPlaceholder>;

/// Implements the exports itself, so ADD can write the 64 MiB output once
/// into a buffer of its exact size. Rendering it as a `serde_json::Value`
/// would need several copies, which could hit the runtime's memory limit
/// (128 MiB by default) before its output limit.
pub struct HugeResult;

impl Guest for HugeResult {
    fn supported_versions() -> Vec<String> {
        Inner::supported_versions()
    }

    fn add(inv: Invocation, config: String) -> Result<String, WitCniError> {
        let rendered = Inner::add(inv, config)?;
        let quoted = format!("\"{PLACEHOLDER}\"");
        let Some(position) = rendered.find(&quoted) else {
            // Versions whose layout has no `dns` (none today) stay small.
            return Ok(rendered);
        };

        let (prefix, rest) = rendered.split_at(position);
        let suffix = &rest[quoted.len()..];
        let count = TARGET_BYTES / ENTRY_BYTES;
        // The last entry has no trailing ", ".
        let list_bytes = count * ENTRY_BYTES - 2;

        let mut output = String::with_capacity(prefix.len() + list_bytes + suffix.len());
        output.push_str(prefix);
        for index in 0..count {
            let separator = if index + 1 < count { ", " } else { "" };
            write!(output, "\"s{index:07}.example.invalid\"{separator}")
                .expect("writing to a String cannot fail");
        }
        output.push_str(suffix);
        Ok(output)
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

cniwasm_plugin_sdk::bindings::export!(HugeResult with_types_in cniwasm_plugin_sdk::bindings);
