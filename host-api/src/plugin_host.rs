//! The host side of the `cniwasm:host` WIT package: every import a plugin
//! calls lands here, is authorised at one dispatch point, logged, and carried
//! out through the [`Kernel`] traits.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ipnet::IpNet;
use wasmtime::component::{HasSelf, Linker};

use crate::kernel::{Kernel, KernelError, KernelErrorKind, Namespace, Owner};

wasmtime::component::bindgen!({
    world: "cni-plugin",
    path: "wit",
    imports: { default: trappable },
});

pub use cniwasm::host::types::{CniError as WitCniError, HostError, Netns};

/// The IPAM command a plugin delegates through the `ipam` interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpamCommand {
    Add,
    Del,
    Check,
}

impl IpamCommand {
    pub fn as_str(&self) -> &'static str {
        match self {
            IpamCommand::Add => "ADD",
            IpamCommand::Del => "DEL",
            IpamCommand::Check => "CHECK",
        }
    }
}

/// Runs the IPAM plugin named by the configuration's `ipam.type`, with the
/// same invocation and configuration as the delegating plugin. The runtime
/// implements it, since it knows how to find and sandbox plugins.
pub trait IpamDelegate: Send + Sync {
    /// Returns the result JSON for ADD, `None` for DEL and CHECK.
    fn run_ipam(&self, command: IpamCommand) -> Result<Option<String>, cniwasm_types::CniError>;
}

/// Host links created during one chain operation, so that the runtime can
/// remove them when the operation fails and is rolled back.
pub type CreatedLinks = Arc<Mutex<Vec<String>>>;

/// What the host needs to serve one plugin invocation.
pub struct HostContext {
    kernel: Arc<Mutex<Kernel>>,
    owner: Owner,
    plugin: String,
    delegate: Arc<dyn IpamDelegate>,
    created_links: CreatedLinks,
    host_calls: u64,
}

/// Parameters of [`HostContext::new`].
pub struct HostContextOptions {
    pub kernel: Arc<Mutex<Kernel>>,
    pub owner: Owner,
    /// The plugin's type, for logs.
    pub plugin: String,
    pub delegate: Arc<dyn IpamDelegate>,
    /// Where bridges this invocation creates are recorded.
    pub created_links: CreatedLinks,
}

impl HostContext {
    pub fn new(options: HostContextOptions) -> Self {
        Self {
            kernel: options.kernel,
            owner: options.owner,
            plugin: options.plugin,
            delegate: options.delegate,
            created_links: options.created_links,
            host_calls: 0,
        }
    }

    /// The number of host calls the plugin made so far.
    pub fn host_calls(&self) -> u64 {
        self.host_calls
    }

    /// Runs one host operation: the single dispatch point where every call is
    /// counted and logged before it reaches the kernel.
    fn dispatch<T>(
        &mut self,
        operation: &str,
        target: &str,
        run: impl FnOnce(&mut Kernel, &Owner) -> Result<T, HostError>,
    ) -> wasmtime::Result<Result<T, HostError>> {
        self.host_calls += 1;
        let started = Instant::now();

        // TODO: check the node's policy here; until then every call within
        // the ownership rules of the host API itself is allowed.
        let outcome = {
            let mut kernel = self
                .kernel
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            run(&mut kernel, &self.owner)
        };

        let micros = started.elapsed().as_micros() as u64;
        match &outcome {
            Ok(_) => tracing::debug!(plugin = %self.plugin, operation, target, micros, "host call"),
            Err(error) => {
                tracing::debug!(plugin = %self.plugin, operation, target, micros, ?error, "host call failed")
            }
        }
        Ok(outcome)
    }
}

/// Adds the `cniwasm:host` imports to a linker whose store data contains a
/// [`HostContext`].
pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut HostContext,
) -> wasmtime::Result<()> {
    CniPlugin::add_to_linker::<T, HasSelf<HostContext>>(linker, get)
}

fn namespace(ns: Netns) -> Namespace {
    match ns {
        Netns::Host => Namespace::Host,
        Netns::Container => Namespace::Container,
    }
}

impl From<KernelError> for HostError {
    fn from(error: KernelError) -> Self {
        let message = error.to_string();
        match error.kind {
            KernelErrorKind::NotFound => HostError::NotFound(message),
            KernelErrorKind::Exists => HostError::AlreadyExists(message),
            KernelErrorKind::Invalid => HostError::Invalid(message),
            KernelErrorKind::Failed => HostError::Failed(message),
        }
    }
}

fn parse_net(text: &str, what: &str) -> Result<IpNet, HostError> {
    text.parse().map_err(|_| {
        HostError::Invalid(format!(
            "invalid {what} {text:?}: expected an address with prefix length such as 10.244.10.2/24"
        ))
    })
}

fn parse_ip(text: &str, what: &str) -> Result<IpAddr, HostError> {
    text.parse()
        .map_err(|_| HostError::Invalid(format!("invalid {what} {text:?}: expected an IP address")))
}

/// Tells whether `name` is a valid Linux interface name: 1 to 15 bytes, not
/// `.` or `..`, without `/`, `:` or whitespace.
fn check_ifname(name: &str) -> Result<(), HostError> {
    let valid = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if valid {
        Ok(())
    } else {
        Err(HostError::Invalid(format!(
            "invalid interface name {name:?}: expected 1 to 15 bytes without '/', ':' or whitespace"
        )))
    }
}

/// Picks a host veth name as the reference plugins do: `veth` and 8 random
/// hex digits.
fn random_veth_name() -> Result<String, HostError> {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).map_err(|error| {
        HostError::Failed(format!(
            "failed to read random bytes for a veth name: {error}"
        ))
    })?;
    Ok(format!("veth{}", hex::encode(bytes)))
}

mod convert;
mod imports;
