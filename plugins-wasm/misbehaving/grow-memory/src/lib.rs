//! grow-memory: ADD allocates and touches memory in 1 MiB steps up to 4 GiB, so tests can check the runtime's memory limit. For tests only.

use std::hint::black_box;

use cniwasm_plugin_sdk::{AddOutput, CniError, Invocation, Plugin, PluginConfig};

/// Bytes allocated per step (1 MiB).
const STEP_BYTES: usize = 1 << 20;
/// 4096 steps of 1 MiB are 4 GiB, the whole wasm32 address space, so the
/// loop fails on any memory limit. The count is separate because 4 GiB does
/// not fit in a wasm32 `usize`.
const STEPS: u32 = 4096;
/// Size of a wasm page in bytes; writing one byte per page commits it.
const WASM_PAGE_BYTES: usize = 64 << 10;

pub struct GrowMemory;

impl Plugin for GrowMemory {
    fn add(_inv: &Invocation, config: &PluginConfig) -> Result<AddOutput, CniError> {
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        for _ in 0..STEPS {
            let mut block = vec![0u8; STEP_BYTES];
            for offset in (0..STEP_BYTES).step_by(WASM_PAGE_BYTES) {
                block[offset] = 1;
            }
            blocks.push(black_box(block));
        }

        // Unreachable in practice: wasm32 cannot hold 4 GiB of blocks.
        black_box(&blocks);
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
}

cniwasm_plugin_sdk::export_plugin!(GrowMemory);
