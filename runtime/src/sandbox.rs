//! One plugin call in a fresh wasmtime store: the WASI context that grants
//! nothing but an optional IPAM state directory, the policy's limits, the
//! mapping of traps to errors, and the audit summary of the call.

use std::path::Path;
use std::time::{Duration, Instant};

use cniwasm_host_api::audit::{AuditContext, AuditLog, PluginCallRecord};
use cniwasm_host_api::plugin_host::{CniPlugin, HostContext, cniwasm::host::types};
use cniwasm_host_api::policy::Limits;
use cniwasm_types::CniError;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

use crate::engine::{EPOCH_TICK, LoadedPlugin, PluginEngine};

/// The guest path of an IPAM plugin's state directory.
pub const STATE_DIR_GUEST_PATH: &str = "/state";

/// Bytes of a plugin's stderr kept for logs and error details.
const STDERR_BYTES: usize = 64 << 10;

pub use cniwasm_types::codes::cniwasm as codes;

/// Store data of one plugin call.
pub struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
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

/// Caps linear memory and table growth, and records the peak memory size.
struct MemoryLimiter {
    max_bytes: usize,
    peak_bytes: usize,
    /// Set when a growth was refused, so the trap can name the limit.
    refused: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.refused = true;
            return Err(wasmtime::Error::msg(format!(
                "memory limit of {} bytes reached: the plugin asked for {desired}",
                self.max_bytes
            )));
        }
        self.peak_bytes = self.peak_bytes.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // 100 000 elements is far beyond what CNI plugins use (a few hundred).
        Ok(desired <= 100_000)
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
    #[error("plugin {plugin:?} exceeded its deadline of {} ms during {command} (limits.deadlineMs)", deadline.as_millis())]
    DeadlineExceeded {
        plugin: String,
        command: &'static str,
        deadline: Duration,
    },
    #[error(
        "plugin {plugin:?} exceeded its memory limit of {bytes} bytes during {command} (limits.memoryBytes)"
    )]
    MemoryExceeded {
        plugin: String,
        command: &'static str,
        bytes: u64,
    },
    #[error(
        "plugin {plugin:?} returned a result of {size} bytes, above its limit of {limit} bytes (limits.maxResultBytes)"
    )]
    ResultTooLarge {
        plugin: String,
        size: usize,
        limit: u64,
    },
    #[error("failed to open IPAM state directory {path}: {reason}")]
    StateDirectory { path: String, reason: String },
    /// Kernel work the plugin requested that finished after its call
    /// returned, such as a link deletion, failed.
    #[error("plugin {plugin:?} succeeded, but the kernel work it requested failed: {source}")]
    Kernel {
        plugin: String,
        source: cniwasm_host_api::kernel::KernelError,
    },
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
            PluginError::MemoryExceeded { .. } => {
                CniError::new(codes::PLUGIN_TRAPPED, self.to_string())
            }
            PluginError::ResultTooLarge { .. } => {
                CniError::new(codes::PLUGIN_INVALID_OUTPUT, self.to_string())
            }
            PluginError::StateDirectory { .. } => {
                CniError::new(cniwasm_types::codes::IO_FAILURE, self.to_string())
            }
            PluginError::Kernel { .. } => {
                CniError::new(cniwasm_types::codes::INTERNAL, self.to_string())
            }
        }
    }

    /// Names the audit outcome: `cni-error:<code>`, `trap`, `deadline` and so on.
    fn audit_outcome(&self) -> String {
        match self {
            PluginError::Cni { error, .. } => format!("cni-error:{}", error.code),
            PluginError::Instantiate { .. }
            | PluginError::StateDirectory { .. }
            | PluginError::Kernel { .. } => "failed".into(),
            PluginError::Trapped { .. } => "trap".into(),
            PluginError::DeadlineExceeded { .. } => "deadline".into(),
            PluginError::MemoryExceeded { .. } => "memory".into(),
            PluginError::ResultTooLarge { .. } => "result-too-large".into(),
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
    pub audit: &'a AuditLog,
    pub audit_context: &'a AuditContext,
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
    let stderr = MemoryOutputPipe::new(STDERR_BYTES);

    let mut store = new_store(engine, &call, host, stderr.clone())?;
    let outcome = {
        let _tokio = wasi_runtime().enter();
        run_export(engine, &call, &mut store)
    };

    let stderr_text = String::from_utf8_lossy(&stderr.contents()).into_owned();
    if !stderr_text.trim().is_empty() {
        tracing::debug!(plugin, stderr = %stderr_text.trim_end(), "plugin stderr");
    }

    let outcome = match outcome {
        Ok(Ok(result)) => check_result_size(&plugin, result, call.limits),
        Ok(Err(error)) => Err(PluginError::Cni {
            plugin: plugin.clone(),
            error: CniError::new(error.code, error.msg).with_details(error.details),
        }),
        Err(trap) => Err(classify_trap(
            trap,
            &store,
            plugin.clone(),
            &call,
            stderr_text,
        )),
    };

    record_summary(&call, &store, &outcome, started);
    outcome
}

/// Returns the tokio runtime that WASI calls run on. wasmtime-wasi runs
/// each call with `Handle::block_on`, which drives no timer on a
/// current-thread runtime, so a plugin's sleep (the bridge waits for its
/// port to come up) would never wake. One worker thread drives the timer.
/// Without a current runtime, wasmtime-wasi would build a multi-thread one
/// on first use that reads the cgroup CPU quota and starts a worker per
/// core, which strace showed at host-local's first file access in each ADD.
fn wasi_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::LazyLock<tokio::runtime::Runtime> = std::sync::LazyLock::new(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cniwasm-wasi")
            .enable_time()
            .build()
            .expect("a one-worker tokio runtime needs only a thread")
    });
    &RUNTIME
}

/// Calls the `supported-versions` export in a store whose host side has no
/// kernel behind it: the export makes no host calls.
pub fn supported_versions(
    engine: &PluginEngine,
    plugin: &LoadedPlugin,
) -> Result<Vec<String>, PluginError> {
    let instantiate_error = |error: wasmtime::Error| PluginError::Instantiate {
        plugin: plugin.path.display().to_string(),
        reason: format!("{error:#}"),
    };
    let host = HostContext::idle();
    let limiter = MemoryLimiter {
        max_bytes: 64 << 20,
        peak_bytes: 0,
        refused: false,
    };
    let state = PluginState {
        wasi: WasiCtx::builder().build(),
        table: ResourceTable::new(),
        limiter,
        host,
    };
    let mut store = Store::new(engine.engine(), state);
    store.limiter(|state| &mut state.limiter);
    store.set_epoch_deadline(1_000);

    let instance = CniPlugin::instantiate(&mut store, &plugin.component, engine.linker())
        .map_err(instantiate_error)?;
    instance
        .call_supported_versions(&mut store)
        .map_err(instantiate_error)
}

fn run_export(
    engine: &PluginEngine,
    call: &PluginCall<'_>,
    store: &mut Store<PluginState>,
) -> wasmtime::Result<Result<Option<String>, types::CniError>> {
    let instance = CniPlugin::instantiate(&mut *store, &call.plugin.component, engine.linker())?;
    let (invocation, config) = (call.invocation, call.config);
    match call.command {
        Command::Add => instance
            .call_add(store, invocation, config)
            .map(|r| r.map(Some)),
        Command::Del => instance
            .call_del(store, invocation, config)
            .map(|r| r.map(|()| None)),
        Command::Check => instance
            .call_check(store, invocation, config)
            .map(|r| r.map(|()| None)),
        Command::Status => instance
            .call_status(store, invocation, config)
            .map(|r| r.map(|()| None)),
        Command::Gc => instance
            .call_gc(store, invocation, config)
            .map(|r| r.map(|()| None)),
    }
}

fn check_result_size(
    plugin: &str,
    result: Option<String>,
    limits: &Limits,
) -> Result<Option<String>, PluginError> {
    match &result {
        Some(text) if text.len() as u64 > limits.max_result_bytes => {
            Err(PluginError::ResultTooLarge {
                plugin: plugin.to_string(),
                size: text.len(),
                limit: limits.max_result_bytes,
            })
        }
        _ => Ok(result),
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
    // Filesystem calls then run on this thread instead of a blocking-pool
    // round trip each; host-local's state directory is the only file access.
    wasi.allow_blocking_current_thread(true);
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

    let limiter = MemoryLimiter {
        max_bytes: usize::try_from(call.limits.memory_bytes).unwrap_or(usize::MAX),
        peak_bytes: 0,
        refused: false,
    };
    let state = PluginState {
        wasi: wasi.build(),
        table: ResourceTable::new(),
        limiter,
        host,
    };
    let mut store = Store::new(engine.engine(), state);
    store.limiter(|state| &mut state.limiter);

    let ticks = call
        .limits
        .deadline()
        .as_millis()
        .div_ceil(EPOCH_TICK.as_millis())
        .max(1) as u64;
    store.set_epoch_deadline(ticks);
    store.epoch_deadline_trap();
    Ok(store)
}

fn classify_trap(
    error: wasmtime::Error,
    store: &Store<PluginState>,
    plugin: String,
    call: &PluginCall<'_>,
    stderr: String,
) -> PluginError {
    let command = call.command.as_str();
    if let Some(Trap::Interrupt) = error.downcast_ref::<Trap>() {
        return PluginError::DeadlineExceeded {
            plugin,
            command,
            deadline: call.limits.deadline(),
        };
    }
    if store.data().limiter.refused {
        return PluginError::MemoryExceeded {
            plugin,
            command,
            bytes: call.limits.memory_bytes,
        };
    }
    PluginError::Trapped {
        plugin,
        command,
        reason: format!("{error:#}"),
        stderr,
    }
}

fn record_summary(
    call: &PluginCall<'_>,
    store: &Store<PluginState>,
    outcome: &Result<Option<String>, PluginError>,
    started: Instant,
) {
    let state = store.data();
    let counters = state.host.counters();
    let (outcome, message) = match outcome {
        Ok(_) => ("ok".to_string(), String::new()),
        Err(error) => (error.audit_outcome(), error.to_string()),
    };
    let record = PluginCallRecord {
        outcome,
        message,
        wall_time_us: started.elapsed().as_micros() as u64,
        peak_memory_bytes: state.limiter.peak_bytes as u64,
        host_calls: counters.host_calls,
        denials: counters.denials,
        would_denials: counters.would_denials,
    };
    tracing::debug!(
        plugin = call.plugin_type,
        command = call.command.as_str(),
        outcome = %record.outcome,
        host_calls = record.host_calls,
        micros = record.wall_time_us,
        peak_memory = record.peak_memory_bytes,
        "plugin call finished"
    );
    call.audit.plugin_call(call.audit_context, &record);
}
