//! IPAM delegation: a plugin's `ipam` import runs the plugin named by
//! `ipam.type` in a sandbox of its own, with the network's state directory
//! locked for the whole call and preopened as its only file access.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cniwasm_host_api::kernel::{Kernel, Owner};
use cniwasm_host_api::plugin_host::{
    CreatedLinks, HostContext, HostContextOptions, IpamCommand, IpamDelegate, cniwasm::host::types,
};
use cniwasm_types::{CniError, codes};
use serde_json::Value;

use crate::admission::admit;
use crate::chain::PluginLocator;
use crate::engine::PluginEngine;
use crate::sandbox::{self, Command, PluginCall};
use cniwasm_host_api::audit::{AuditContext, AuditLog};
use cniwasm_host_api::policy::{PluginPolicy, Policy};

/// Everything the IPAM plugin inherits from the plugin that delegates to it.
pub(crate) struct IpamRunner {
    pub engine: Arc<PluginEngine>,
    pub locator: PluginLocator,
    pub kernel: Arc<Mutex<Kernel>>,
    pub owner: Owner,
    pub invocation: types::Invocation,
    /// The delegating plugin's configuration, passed on unchanged.
    pub config: String,
    /// The IPAM state root used when the configuration sets no `ipam.dataDir`.
    pub default_data_dir: PathBuf,
    pub policy: Arc<Policy>,
    pub audit: AuditLog,
    /// The delegating plugin's audit context; plugin, digest and command
    /// are replaced with the IPAM plugin's.
    pub audit_context: AuditContext,
    pub created_links: CreatedLinks,
}

impl IpamDelegate for IpamRunner {
    fn run_ipam(&self, command: IpamCommand) -> Result<Option<String>, CniError> {
        let ipam = ipam_section(&self.config)?;
        let plugin = self
            .locator
            .load(&self.engine, &ipam.plugin_type)
            .map_err(|error| error.to_cni_error())?;
        let command = match command {
            IpamCommand::Add => Command::Add,
            IpamCommand::Del => Command::Del,
            IpamCommand::Check => Command::Check,
            IpamCommand::Status => Command::Status,
        };

        let policy = Arc::new(self.policy.for_plugin(&ipam.plugin_type).clone());
        let mut audit_context = self.audit_context.clone();
        audit_context.plugin = ipam.plugin_type.clone();
        audit_context.digest = format!("sha256:{}", plugin.digest);
        audit_context.command = command.as_str().to_string();
        admit(
            &self.engine,
            &ipam.plugin_type,
            &plugin,
            &policy,
            (&self.audit, &audit_context),
        )
        .map_err(|error| error.to_cni_error())?;

        // The policy may withhold the state directory; the plugin then has no
        // file access at all.
        let state = match policy.ipam_state {
            true => Some(self.open_state(&ipam, command)?),
            false => None,
        };

        let call = PluginCall {
            plugin: &plugin,
            plugin_type: &ipam.plugin_type,
            command,
            invocation: &self.invocation,
            config: &self.config,
            state_dir: state.as_ref().map(StateDirectory::path),
            limits: &policy.limits,
            audit: &self.audit,
            audit_context: &audit_context,
        };
        let host = self.host_context(&ipam, &policy, &audit_context, state.as_ref())?;

        let outcome = sandbox::call_plugin(&self.engine, call, host);
        drop(state);
        outcome.map_err(|error| error.to_cni_error())
    }
}

impl IpamRunner {
    /// Builds the IPAM plugin's host side, which reads `state` for the
    /// `ipam-store` interface.
    fn host_context(
        &self,
        ipam: &IpamSection,
        policy: &Arc<PluginPolicy>,
        audit_context: &AuditContext,
        state: Option<&StateDirectory>,
    ) -> Result<HostContext, CniError> {
        let host = HostContext::new(HostContextOptions {
            kernel: self.kernel.clone(),
            owner: self.owner.clone(),
            plugin: ipam.plugin_type.clone(),
            delegate: Arc::new(NoNestedIpam),
            created_links: self.created_links.clone(),
            policy: policy.clone(),
            audit: self.audit.clone(),
            audit_context: audit_context.clone(),
        });
        match state {
            Some(state) => Ok(host.with_ipam_state_dir(state.path.clone(), state.clone_dir()?)),
            None => Ok(host),
        }
    }

    /// Opens and locks the network's state directory. Every IPAM command
    /// needs it, so STATUS reports a directory it cannot use with code 50
    /// (plugin not available, which cannot serve ADD), not as an I/O failure.
    fn open_state(&self, ipam: &IpamSection, command: Command) -> Result<StateDirectory, CniError> {
        let data_dir = ipam
            .data_dir
            .clone()
            .unwrap_or_else(|| self.default_data_dir.clone());

        let opened = StateDirectory::open_locked(&data_dir.join(&self.owner.network));
        match (opened, command) {
            (Err(error), Command::Status) => Err(CniError::new(
                codes::PLUGIN_NOT_AVAILABLE,
                format!(
                    "IPAM plugin {:?} is not available: {}: make the directory writable, or set ipam.dataDir or CNIWASM_IPAM_DATA_DIR to a usable one",
                    ipam.plugin_type, error.msg
                ),
            )),
            (opened, _) => opened,
        }
    }
}

struct IpamSection {
    plugin_type: String,
    data_dir: Option<PathBuf>,
}

fn ipam_section(config: &str) -> Result<IpamSection, CniError> {
    let value: Value = serde_json::from_str(config).map_err(|error| {
        CniError::new(
            codes::DECODING_FAILURE,
            format!("invalid plugin configuration: {error}"),
        )
    })?;
    let missing = || {
        CniError::new(
            codes::INVALID_NETWORK_CONFIG,
            "missing \"ipam.type\": the plugin delegates to IPAM but its configuration names no IPAM plugin",
        )
    };

    let ipam = value.get("ipam").ok_or_else(missing)?;
    let plugin_type = ipam
        .get("type")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(missing)?;
    let data_dir = ipam
        .get("dataDir")
        .and_then(Value::as_str)
        .map(PathBuf::from);
    Ok(IpamSection {
        plugin_type: plugin_type.to_string(),
        data_dir,
    })
}

/// An IPAM plugin delegating once more is not supported: it would need a
/// second state directory and lock.
struct NoNestedIpam;

impl IpamDelegate for NoNestedIpam {
    fn run_ipam(&self, _command: IpamCommand) -> Result<Option<String>, CniError> {
        Err(CniError::new(
            codes::INVALID_NETWORK_CONFIG,
            "an IPAM plugin cannot delegate to another IPAM plugin",
        ))
    }
}

/// A network's IPAM state directory, exclusively locked until dropped. The
/// lock is `flock` on the `lock` file inside, which the reference host-local
/// plugin takes too, so both can share a directory safely.
struct StateDirectory {
    path: PathBuf,
    /// The open directory, which the host's `ipam-store` calls read.
    dir: cap_std::fs::Dir,
    _lock: std::fs::File,
}

impl StateDirectory {
    fn open_locked(path: &Path) -> Result<Self, CniError> {
        let io_error = |action: &str, error: std::io::Error| {
            CniError::new(
                codes::IO_FAILURE,
                format!(
                    "failed to {action} IPAM state directory {}: {error}",
                    path.display()
                ),
            )
        };

        std::fs::create_dir_all(path).map_err(|error| io_error("create", error))?;
        let dir = cap_std::fs::Dir::open_ambient_dir(path, cap_std::ambient_authority())
            .map_err(|error| io_error("open", error))?;
        let lock = dir
            .open_with(
                "lock",
                cap_std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true),
            )
            .map_err(|error| io_error("open the lock file of", error))?
            .into_std();
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|error| io_error("lock", error.into()))?;

        Ok(Self {
            path: path.to_path_buf(),
            dir,
            _lock: lock,
        })
    }

    /// Returns a second handle of the open directory for the plugin's host
    /// context. The context ends with the plugin call, before the lock is
    /// released.
    fn clone_dir(&self) -> Result<cap_std::fs::Dir, CniError> {
        self.dir.try_clone().map_err(|error| {
            CniError::new(
                codes::IO_FAILURE,
                format!(
                    "failed to open IPAM state directory {} a second time: {error}",
                    self.path.display()
                ),
            )
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}
