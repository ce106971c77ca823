//! In-process timings of the wasm engine: compiling each plugin without a
//! cache, loading it from a warm compile cache, and instantiating and calling
//! one plugin that makes no host calls.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cniwasm_host_api::audit::{AuditContext, AuditLog};
use cniwasm_host_api::kernel::Owner;
use cniwasm_host_api::plugin_host::{
    CreatedLinks, HostContext, HostContextOptions, IpamCommand, IpamDelegate, cniwasm::host::types,
};
use cniwasm_host_api::policy::{Limits, PluginPolicy};
use cniwasm_runtime::engine::PluginEngine;
use cniwasm_runtime::sandbox::{self, Command, PluginCall};
use cniwasm_types::CniError;

/// Engine timings of one probe run.
pub struct ProbeTimes {
    /// Per plugin type: compile time without a compile cache.
    pub compile: Vec<(String, Duration)>,
    /// Loading loopback from the warm compile cache (read, hash, deserialize).
    pub cached_load: Vec<Duration>,
    /// A fresh store, instantiation and one DEL call of loopback.
    pub instantiate_call: Vec<Duration>,
}

/// Rejects delegation: the probed call never delegates.
struct NoIpam;

impl IpamDelegate for NoIpam {
    fn run_ipam(&self, _command: IpamCommand) -> Result<Option<String>, CniError> {
        Err(CniError::new(
            999,
            "the benchmark probe does not delegate IPAM",
        ))
    }
}

/// Measures the engine with the plugins in `plugin_dir`. The instantiate and
/// call probe runs loopback's DEL without a namespace, which returns before
/// any host call, so it times the sandbox alone.
pub fn run(plugin_dir: &Path, compile_cache: &Path, samples: usize) -> anyhow::Result<ProbeTimes> {
    let mut compile = Vec::new();
    let uncached = PluginEngine::new(None)?;
    for plugin in ["bridge", "host-local", "portmap", "loopback"] {
        let started = Instant::now();
        uncached.load(&plugin_dir.join(format!("{plugin}.wasm")))?;
        compile.push((plugin.to_string(), started.elapsed()));
    }

    let engine = PluginEngine::new(Some(compile_cache.to_path_buf()))?;
    let loopback_path = plugin_dir.join("loopback.wasm");
    engine.load(&loopback_path)?;
    let mut cached_load = Vec::new();
    for _ in 0..samples {
        let started = Instant::now();
        engine.load(&loopback_path)?;
        cached_load.push(started.elapsed());
    }

    let loopback = engine.load(&loopback_path)?;
    let kernel = Arc::new(Mutex::new(
        cniwasm_host_api::linux::open_kernel(None).context("failed to open the host kernel")?,
    ));
    let invocation = types::Invocation {
        container_id: "bench-probe".into(),
        ifname: "eth0".into(),
        netns: None,
        args: Vec::new(),
    };
    let config = r#"{"cniVersion":"1.0.0","name":"probe","type":"loopback"}"#;
    let limits = Limits::default();
    // The default policy entry grants every import, and a disabled audit log
    // writes nothing, as in a node without a policy file.
    let policy = Arc::new(PluginPolicy::default());
    let audit = AuditLog::disabled();
    let audit_context = AuditContext::default();

    let mut instantiate_call = Vec::new();
    for _ in 0..samples {
        let host = HostContext::new(HostContextOptions {
            kernel: kernel.clone(),
            owner: Owner {
                network: "probe".into(),
                container_id: "bench-probe".into(),
                ifname: "eth0".into(),
            },
            plugin: "loopback".into(),
            delegate: Arc::new(NoIpam),
            created_links: CreatedLinks::default(),
            policy: policy.clone(),
            audit: audit.clone(),
            audit_context: audit_context.clone(),
        });
        let call = PluginCall {
            plugin: &loopback,
            plugin_type: "loopback",
            command: Command::Del,
            invocation: &invocation,
            config,
            state_dir: None,
            limits: &limits,
            audit: &audit,
            audit_context: &audit_context,
        };

        let started = Instant::now();
        let outcome = sandbox::call_plugin(&engine, call, host);
        instantiate_call.push(started.elapsed());
        if let Err(error) = outcome {
            bail!("loopback DEL failed in the probe: {error}");
        }
    }

    Ok(ProbeTimes {
        compile,
        cached_load,
        instantiate_call,
    })
}
