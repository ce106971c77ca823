//! The host side of the `cniwasm:host` WIT package: every import a plugin
//! calls lands here, is authorised at one dispatch point, logged, and carried
//! out through the [`Kernel`] traits.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ipnet::IpNet;
use wasmtime::component::{HasSelf, Linker};

use crate::audit::{AuditContext, AuditLog, HostCallRecord};
use crate::kernel::{Kernel, KernelError, KernelErrorKind, Namespace, Owner};
use crate::policy::{Decision, PluginPolicy, Request, Verdict};

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
    Status,
}

impl IpamCommand {
    pub fn as_str(&self) -> &'static str {
        match self {
            IpamCommand::Add => "ADD",
            IpamCommand::Del => "DEL",
            IpamCommand::Check => "CHECK",
            IpamCommand::Status => "STATUS",
        }
    }
}

/// Runs the IPAM plugin named by the configuration's `ipam.type`, with the
/// same invocation and configuration as the delegating plugin. The runtime
/// implements it, since it finds and sandboxes plugins.
pub trait IpamDelegate: Send + Sync {
    /// Returns the result JSON for ADD, `None` for DEL, CHECK and STATUS.
    fn run_ipam(&self, command: IpamCommand) -> Result<Option<String>, cniwasm_types::CniError>;
}

/// Host links created during one chain operation. They are the host links a
/// plugin may change, and the runtime removes them when a failed ADD is
/// rolled back.
pub type CreatedLinks = Arc<Mutex<Vec<String>>>;

/// What the host needs to serve one plugin invocation.
pub struct HostContext {
    /// `None` for an idle context, which serves no host call.
    kernel: Option<Arc<Mutex<Kernel>>>,
    owner: Owner,
    plugin: String,
    delegate: Arc<dyn IpamDelegate>,
    created_links: CreatedLinks,
    policy: Arc<PluginPolicy>,
    audit: AuditLog,
    audit_context: AuditContext,
    counters: CallCounters,
    /// The file behind the `state` interface; `None` serves no blob.
    state_path: Option<PathBuf>,
    /// The directory behind the `ipam-store` interface, for a plugin run
    /// as an IPAM delegate with its state directory.
    ipam_state_dir: Option<Arc<IpamStateDir>>,
    /// The addresses of the `prevResult` the runtime passed to this call,
    /// which forwarding rules may be removed for; `None` when it passed none.
    result_addresses: Option<Vec<IpAddr>>,
}

/// Parameters of [`HostContext::new`].
pub struct HostContextOptions {
    pub kernel: Arc<Mutex<Kernel>>,
    pub owner: Owner,
    /// The plugin's type, for logs.
    pub plugin: String,
    pub delegate: Arc<dyn IpamDelegate>,
    /// The record of links this chain operation creates.
    pub created_links: CreatedLinks,
    /// The plugin's entry of the node's policy.
    pub policy: Arc<PluginPolicy>,
    pub audit: AuditLog,
    pub audit_context: AuditContext,
}

/// How many host calls a plugin made, and how many the policy rejected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallCounters {
    pub host_calls: u64,
    pub denials: u64,
    pub would_denials: u64,
}

/// One host request, as the dispatch point records and checks it.
struct Call<'a> {
    operation: &'static str,
    arguments: serde_json::Value,
    /// What the policy checks; a deny of any of them decides.
    requests: Vec<Request<'a>>,
}

impl HostContext {
    pub fn new(options: HostContextOptions) -> Self {
        Self {
            kernel: Some(options.kernel),
            owner: options.owner,
            plugin: options.plugin,
            delegate: options.delegate,
            created_links: options.created_links,
            policy: options.policy,
            audit: options.audit,
            audit_context: options.audit_context,
            counters: CallCounters::default(),
            state_path: None,
            ipam_state_dir: None,
            result_addresses: None,
        }
    }

    /// Records the addresses of the `prevResult` the runtime passed to the
    /// plugin: the attachment's addresses as the runtime recorded them, which
    /// a DEL may remove forwarding rules for once the container is gone.
    pub fn with_result_addresses(mut self, addresses: Vec<IpAddr>) -> Self {
        self.result_addresses = Some(addresses);
        self
    }

    /// Serves the `state` interface from the file at `path`, which the
    /// caller derives from the plugin's type and the attachment.
    pub fn with_state(mut self, path: PathBuf) -> Self {
        self.state_path = Some(path);
        self
    }

    /// Serves the `ipam-store` interface from `dir`, the IPAM state
    /// directory at host path `path`, which the caller has locked for as
    /// long as this context lives.
    pub fn with_ipam_state_dir(mut self, path: PathBuf, dir: cap_std::fs::Dir) -> Self {
        self.ipam_state_dir = Some(Arc::new(IpamStateDir { path, dir }));
        self
    }

    /// Builds a host side that denies every request: for exports such as
    /// `supported-versions` that need an instance but no kernel.
    pub fn idle() -> Self {
        struct Refuse;
        impl IpamDelegate for Refuse {
            fn run_ipam(
                &self,
                _command: IpamCommand,
            ) -> Result<Option<String>, cniwasm_types::CniError> {
                Err(cniwasm_types::CniError::new(
                    cniwasm_types::codes::INTERNAL,
                    "IPAM is not available here",
                ))
            }
        }
        let policy = PluginPolicy {
            imports: Some(Default::default()),
            ..PluginPolicy::default()
        };
        Self {
            kernel: None,
            owner: Owner {
                network: String::new(),
                container_id: String::new(),
                ifname: String::new(),
            },
            plugin: String::new(),
            delegate: Arc::new(Refuse),
            created_links: CreatedLinks::default(),
            policy: Arc::new(policy),
            audit: AuditLog::disabled(),
            audit_context: AuditContext::default(),
            counters: CallCounters::default(),
            state_path: None,
            ipam_state_dir: None,
            result_addresses: None,
        }
    }

    pub fn counters(&self) -> CallCounters {
        self.counters
    }

    /// Returns the number of host calls the plugin made so far.
    pub fn host_calls(&self) -> u64 {
        self.counters.host_calls
    }

    /// Runs one host request through the single dispatch point: count it
    /// against the limit, apply the ownership rules and then the policy,
    /// record the decision, and only then reach the kernel.
    fn dispatch<T>(
        &mut self,
        call: Call<'_>,
        ownership: impl FnOnce(&mut Kernel, &Ownership<'_>) -> Option<Decision>,
        run: impl FnOnce(&mut Kernel, &Owner) -> Result<T, HostError>,
    ) -> wasmtime::Result<Result<T, HostError>> {
        self.count_call(&call)?;
        let started = Instant::now();
        let Some(kernel) = self.kernel.clone() else {
            return Ok(Err(HostError::Denied(
                "this call serves no host requests".into(),
            )));
        };
        let mut kernel = kernel
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());

        let created = self
            .created_links
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let rules = Ownership {
            created: &created,
            policy: &self.policy,
        };
        let decision =
            ownership(&mut kernel, &rules).unwrap_or_else(|| self.check_policy(&call.requests));

        let outcome = match decision.verdict {
            Verdict::Deny => {
                self.counters.denials += 1;
                Err(HostError::Denied(format!(
                    "{} (rule {})",
                    decision.reason, decision.rule
                )))
            }
            Verdict::WouldDeny => {
                self.counters.would_denials += 1;
                run(&mut kernel, &self.owner)
            }
            Verdict::Allow => run(&mut kernel, &self.owner),
        };
        drop(kernel);

        self.record(&call, &decision, &outcome, started);
        Ok(outcome)
    }

    /// Returns the strictest decision over `requests`: a deny, else a
    /// would-deny, else allow.
    fn check_policy(&self, requests: &[Request<'_>]) -> Decision {
        let decisions: Vec<Decision> = requests
            .iter()
            .map(|request| self.policy.check(request))
            .collect();
        for verdict in [Verdict::Deny, Verdict::WouldDeny] {
            if let Some(decision) = decisions
                .iter()
                .find(|decision| decision.verdict == verdict)
            {
                return decision.clone();
            }
        }
        decisions
            .into_iter()
            .next()
            .unwrap_or_else(|| Decision::allow("none"))
    }

    /// Counts a host call, and ends the plugin with a trap when it exceeds
    /// its limit.
    fn count_call(&mut self, call: &Call<'_>) -> wasmtime::Result<()> {
        self.counters.host_calls += 1;
        let limit = self.policy.limits.max_host_calls;
        if self.counters.host_calls <= limit {
            return Ok(());
        }

        let decision = Decision {
            verdict: Verdict::Deny,
            rule: "limits.maxHostCalls".into(),
            reason: format!(
                "plugin {:?} exceeded its limit of {limit} host calls",
                self.plugin
            ),
        };
        self.counters.denials += 1;
        let outcome: Result<(), HostError> = Err(HostError::Denied(decision.reason.clone()));
        self.record(call, &decision, &outcome, Instant::now());
        Err(wasmtime::Error::msg(decision.reason))
    }

    fn record<T>(
        &self,
        call: &Call<'_>,
        decision: &Decision,
        outcome: &Result<T, HostError>,
        started: Instant,
    ) {
        let duration_us = started.elapsed().as_micros() as u64;
        let outcome_text = match outcome {
            Ok(_) => "ok".to_string(),
            Err(error) => describe_error(error),
        };
        tracing::debug!(
            plugin = %self.plugin,
            operation = call.operation,
            arguments = %call.arguments,
            decision = decision.verdict.as_str(),
            rule = %decision.rule,
            outcome = %outcome_text,
            micros = duration_us,
            "host call"
        );
        if decision.verdict != Verdict::Allow {
            tracing::warn!(plugin = %self.plugin, operation = call.operation, rule = %decision.rule, reason = %decision.reason, "{}", decision.verdict.as_str());
        }

        let record = HostCallRecord {
            operation: call.operation,
            arguments: call.arguments.clone(),
            decision: decision.verdict.as_str(),
            rule: &decision.rule,
            outcome: outcome_text,
            duration_us,
        };
        self.audit.host_call(&self.audit_context, &record);
    }
}

/// Formats a host error as `<kind>: <message>` for logs and audit records.
pub fn describe_error(error: &HostError) -> String {
    match error {
        HostError::Denied(message) => format!("denied: {message}"),
        HostError::NotFound(message) => format!("not found: {message}"),
        HostError::AlreadyExists(message) => format!("already exists: {message}"),
        HostError::Invalid(message) => format!("invalid: {message}"),
        HostError::Failed(message) => format!("failed: {message}"),
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
mod ipam_store;
mod nft_nat;
mod ownership;
mod resolv;
mod state;
#[cfg(all(test, feature = "testing"))]
mod tests;
mod vlan_gateway;

pub use ipam_store::MAX_IPAM_STORE_FILE_BYTES;
pub use resolv::MAX_RESOLV_CONF_BYTES;
pub use state::{MAX_STATE_BYTES, remove_state};

use ipam_store::IpamStateDir;
use ownership::Ownership;
