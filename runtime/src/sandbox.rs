//! One plugin call in a fresh wasmtime store: the WASI context that grants
//! nothing but an optional IPAM state directory, the limits, and the mapping
//! of traps to errors.

use std::path::Path;
use std::time::{Duration, Instant};

use cniwasm_host_api::plugin_host::{CniPlugin, HostContext, cniwasm::host::types};
use cniwasm_types::CniError;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

use crate::engine::{EPOCH_TICK, LoadedPlugin, PluginEngine};

/// Where an IPAM plugin finds its state directory.
pub const STATE_DIR_GUEST_PATH: &str = "/state";

pub use cniwasm_types::codes::cniwasm as codes;

/// Store data of one plugin call.
pub struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    pub host: HostContext,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
}

impl Command {
    pub fn as_str(&self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }
}

/// Resource limits of one plugin call.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Maximum linear memory in bytes.
    pub memory_bytes: usize,
    /// Wall-clock time the plugin may spend running wasm code.
    pub deadline: Duration,
    /// Bytes of the plugin's stderr kept for logs and error details.
    pub stderr_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // NOTE: these defaults are generous guesses for the reference-like
        // plugins (which use a few MiB and milliseconds), not measured bounds.
        Self {
            memory_bytes: 128 << 20,
            deadline: Duration::from_secs(30),
            stderr_bytes: 64 << 10,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin {plugin:?} returned error code {}: {error}", error.code)]
    Cni { plugin: String, error: CniError },
    #[error("failed to instantiate plugin {plugin:?}: {reason}")]
    Instantiate { plugin: String, reason: String },
    #[error("plugin {plugin:?} trapped during {command}: {reason}")]
    Trapped {
        plugin: String,
        command: &'static str,
        reason: String,
        stderr: String,
    },
    #[error("plugin {plugin:?} exceeded its deadline of {} ms during {command}", deadline.as_millis())]
    DeadlineExceeded {
        plugin: String,
        command: &'static str,
        deadline: Duration,
    },
    #[error("failed to open IPAM state directory {path}: {reason}")]
    StateDirectory { path: String, reason: String },
}

impl PluginError {
    pub fn to_cni_error(&self) -> CniError {
        match self {
            PluginError::Cni { error, .. } => error.clone(),
            PluginError::Instantiate { .. } => {
                CniError::new(codes::PLUGIN_LOAD_FAILED, self.to_string())
            }
            PluginError::Trapped { stderr, .. } => {
                CniError::new(codes::PLUGIN_TRAPPED, self.to_string()).with_details(stderr.trim())
            }
            PluginError::DeadlineExceeded { .. } => {
                CniError::new(codes::PLUGIN_DEADLINE_EXCEEDED, self.to_string())
            }
            PluginError::StateDirectory { .. } => {
                CniError::new(cniwasm_types::codes::IO_FAILURE, self.to_string())
            }
        }
    }
}

/// One command for one plugin.
pub struct PluginCall<'a> {
    pub plugin: &'a LoadedPlugin,
    pub plugin_type: &'a str,
    pub command: Command,
    pub invocation: &'a types::Invocation,
    /// The configuration JSON, with the runtime's keys injected.
    pub config: &'a str,
    /// Host directory preopened at [`STATE_DIR_GUEST_PATH`].
    pub state_dir: Option<&'a Path>,
    pub limits: &'a Limits,
}

/// Runs the call in a fresh store whose host side is `host`; returns the
/// result JSON of ADD.
pub fn call_plugin(
    engine: &PluginEngine,
    call: PluginCall<'_>,
    host: HostContext,
) -> Result<Option<String>, PluginError> {
    let started = Instant::now();
    let plugin = call.plugin_type.to_string();
    let stderr = MemoryOutputPipe::new(call.limits.stderr_bytes);

    let mut store = new_store(engine, &call, host, stderr.clone())?;
    let instance = CniPlugin::instantiate(&mut store, &call.plugin.component, engine.linker())
        .map_err(|error| PluginError::Instantiate {
            plugin: plugin.clone(),
            reason: format!("{error:#}"),
        })?;

    let outcome = match call.command {
        Command::Add => instance
            .call_add(&mut store, call.invocation, call.config)
            .map(|r| r.map(Some)),
        Command::Del => instance
            .call_del(&mut store, call.invocation, call.config)
            .map(|r| r.map(|()| None)),
        Command::Check => instance
            .call_check(&mut store, call.invocation, call.config)
            .map(|r| r.map(|()| None)),
        Command::Status => instance
            .call_status(&mut store, call.invocation, call.config)
            .map(|r| r.map(|()| None)),
        Command::Gc => instance
            .call_gc(&mut store, call.invocation, call.config)
            .map(|r| r.map(|()| None)),
    };

    let stderr_text = String::from_utf8_lossy(&stderr.contents()).into_owned();
    if !stderr_text.trim().is_empty() {
        tracing::debug!(plugin, stderr = %stderr_text.trim_end(), "plugin stderr");
    }
    tracing::debug!(
        plugin,
        command = call.command.as_str(),
        host_calls = store.data().host.host_calls(),
        micros = started.elapsed().as_micros() as u64,
        "plugin call finished"
    );

    match outcome {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(error)) => Err(PluginError::Cni {
            plugin,
            error: CniError::new(error.code, error.msg).with_details(error.details),
        }),
        Err(trap) => Err(classify_trap(trap, plugin, &call, stderr_text)),
    }
}

fn new_store(
    engine: &PluginEngine,
    call: &PluginCall<'_>,
    host: HostContext,
    stderr: MemoryOutputPipe,
) -> Result<Store<PluginState>, PluginError> {
    // Deny by default: no environment, arguments, stdin, sockets or files,
    // only the IPAM state directory when the host grants it.
    let mut wasi = WasiCtx::builder();
    wasi.stderr(stderr)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    if let Some(dir) = call.state_dir {
        wasi.preopened_dir(dir, STATE_DIR_GUEST_PATH, FsPerms::ReadWrite)
            .map_err(|error| PluginError::StateDirectory {
                path: dir.display().to_string(),
                reason: error.to_string(),
            })?;
    }

    let limits = StoreLimitsBuilder::new()
        .memory_size(call.limits.memory_bytes)
        .trap_on_grow_failure(true)
        .build();

    let state = PluginState {
        wasi: wasi.build(),
        table: ResourceTable::new(),
        limits,
        host,
    };
    let mut store = Store::new(engine.engine(), state);
    store.limiter(|state| &mut state.limits);

    let ticks = call
        .limits
        .deadline
        .as_millis()
        .div_ceil(EPOCH_TICK.as_millis())
        .max(1) as u64;
    store.set_epoch_deadline(ticks);
    store.epoch_deadline_trap();
    Ok(store)
}

fn classify_trap(
    error: wasmtime::Error,
    plugin: String,
    call: &PluginCall<'_>,
    stderr: String,
) -> PluginError {
    let command = call.command.as_str();
    if let Some(Trap::Interrupt) = error.downcast_ref::<Trap>() {
        return PluginError::DeadlineExceeded {
            plugin,
            command,
            deadline: call.limits.deadline,
        };
    }
    PluginError::Trapped {
        plugin,
        command,
        reason: format!("{error:#}"),
        stderr,
    }
}
