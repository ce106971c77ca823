//! The node's plugin policy: what each plugin may ask the host to do, and
//! its resource limits. Parsing and matching only, with no I/O, so every rule
//! is testable on its own; the host calls [`PluginPolicy::check`] at its one
//! dispatch point.
//!
//! Within a plugin's entry, an absent section places no restriction beyond
//! the host's ownership rules, and a present section allows only what it
//! lists. `imports` restricts which host interfaces the plugin may import at
//! all, so `"imports": ["log"]` denies every kernel change.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

/// The host interfaces of the `cniwasm:host` package a policy can grant.
pub const HOST_INTERFACES: &[&str] = &[
    "link",
    "address",
    "route",
    "sysctl",
    "nat",
    "filter",
    "spoof-check",
    "nft-nat",
    "ipam",
    "ipam-store",
    "dns",
    "state",
    "log",
];

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("invalid policy: {0}")]
    Json(String),
    #[error("invalid policy field {field}: {reason}")]
    Field { field: String, reason: String },
}

/// The treatment of a request that breaks a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Reject the request and record `deny`.
    #[default]
    Enforce,
    /// Allow the request and record `would-deny`.
    Audit,
}

/// The outcome of a policy check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
    WouldDeny,
}

impl Verdict {
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::WouldDeny => "would-deny",
        }
    }
}

/// A verdict and the rule that decided it, such as `portMappings.hostPorts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub rule: String,
    /// The reason for a denial; empty when allowed.
    pub reason: String,
}

impl Decision {
    pub fn allow(rule: impl Into<String>) -> Self {
        Self {
            verdict: Verdict::Allow,
            rule: rule.into(),
            reason: String::new(),
        }
    }

    fn violation(mode: Mode, rule: &str, reason: String) -> Self {
        let verdict = match mode {
            Mode::Enforce => Verdict::Deny,
            Mode::Audit => Verdict::WouldDeny,
        };
        Self {
            verdict,
            rule: rule.to_string(),
            reason,
        }
    }

    /// Builds the decision for an ownership violation, denied in every mode.
    pub fn ownership(rule: &str, reason: String) -> Self {
        Self {
            verdict: Verdict::Deny,
            rule: format!("ownership.{rule}"),
            reason,
        }
    }
}

/// Resource limits of one plugin call.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Limits {
    /// Maximum linear memory, in bytes.
    pub memory_bytes: u64,
    /// Wall-clock time the plugin may run wasm code, in milliseconds.
    pub deadline_ms: u64,
    /// Maximum number of host calls in one plugin call.
    pub max_host_calls: u64,
    /// Maximum size of an ADD result, in bytes.
    pub max_result_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        // NOTE: these are generous guesses for reference-like plugins, which
        // use a few MiB, milliseconds and tens of host calls; not measured bounds.
        Self {
            memory_bytes: 128 << 20,
            deadline_ms: 30_000,
            max_host_calls: 1_000,
            max_result_bytes: 1 << 20,
        }
    }
}

impl Limits {
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }
}

/// An inclusive range of ports, written `8080` or `30000-32767`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    fn parse(text: &str) -> Result<Self, String> {
        let parse_port = |part: &str| {
            part.trim()
                .parse::<u16>()
                .map_err(|_| format!("invalid port range {text:?}: expected PORT or FIRST-LAST"))
        };
        let (first, last) = match text.split_once('-') {
            Some((first, last)) => (parse_port(first)?, parse_port(last)?),
            None => (parse_port(text)?, parse_port(text)?),
        };
        if first > last {
            return Err(format!(
                "invalid port range {text:?}: the first port is above the last"
            ));
        }
        Ok(Self { first, last })
    }

    fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawLinkRules {
    mode: Option<Mode>,
    #[serde(default)]
    container_names: Vec<String>,
    host_names: Option<Vec<String>>,
    #[serde(default)]
    bridges: Vec<String>,
    mtu: Option<RawRange>,
    tx_queue_len: Option<RawRange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRange {
    min: u32,
    max: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSubnetRules {
    mode: Option<Mode>,
    #[serde(default)]
    container: Vec<String>,
    #[serde(default)]
    host: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSysctlRules {
    mode: Option<Mode>,
    #[serde(default)]
    container: Vec<String>,
    #[serde(default)]
    host: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawPortRules {
    mode: Option<Mode>,
    #[serde(default)]
    host_ports: Vec<String>,
    #[serde(default, rename = "hostIPs")]
    host_ips: Vec<String>,
    #[serde(default)]
    protocols: Vec<String>,
    #[serde(default)]
    mark_chains: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawMasqueradeRules {
    mode: Option<Mode>,
    #[serde(default)]
    sources: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawFilterRules {
    mode: Option<Mode>,
    #[serde(default)]
    addresses: Vec<String>,
    #[serde(default)]
    admin_chains: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawResolvConfRules {
    mode: Option<Mode>,
    #[serde(default)]
    paths: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawPluginPolicy {
    digest: Option<String>,
    mode: Option<Mode>,
    imports: Option<Vec<String>>,
    links: Option<RawLinkRules>,
    addresses: Option<RawSubnetRules>,
    routes: Option<RawSubnetRules>,
    sysctls: Option<RawSysctlRules>,
    port_mappings: Option<RawPortRules>,
    masquerade: Option<RawMasqueradeRules>,
    filter: Option<RawFilterRules>,
    resolv_conf: Option<RawResolvConfRules>,
    ipam_state: Option<bool>,
    #[serde(default)]
    limits: Limits,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawPolicy {
    mode: Option<Mode>,
    audit_log: Option<String>,
    allow_native_plugins: Option<bool>,
    defaults: Option<RawPluginPolicy>,
    #[serde(default)]
    plugins: BTreeMap<String, RawPluginPolicy>,
}

mod rules;

pub use rules::{
    DEFAULT_RESOLV_CONF_PATHS, FilterRules, LinkRules, MasqueradeRules, PortRules, ResolvConfRules,
    SubnetRules, SysctlRules, sysctl_slash_form,
};

/// One plugin's entry, validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginPolicy {
    /// `sha256:` and 64 lower-case hex digits of the `.wasm` file.
    pub digest: Option<String>,
    pub mode: Mode,
    /// Host interfaces the plugin may import; `None` grants all.
    pub imports: Option<BTreeSet<String>>,
    pub links: Option<LinkRules>,
    pub addresses: Option<SubnetRules>,
    pub routes: Option<SubnetRules>,
    pub sysctls: Option<SysctlRules>,
    pub port_mappings: Option<PortRules>,
    pub masquerade: Option<MasqueradeRules>,
    pub filter: Option<FilterRules>,
    /// Files `dns.read-resolv-conf` may read; `None` allows only
    /// [`DEFAULT_RESOLV_CONF_PATHS`].
    pub resolv_conf: Option<ResolvConfRules>,
    /// Whether the plugin, run as an IPAM delegate, gets its network's state directory.
    pub ipam_state: bool,
    pub limits: Limits,
}

/// The whole policy file, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub mode: Mode,
    /// Path of the audit log; `None` turns auditing off.
    pub audit_log: Option<std::path::PathBuf>,
    /// Whether a plugin type with no `.wasm` file may run as a native
    /// executable, outside the sandbox and this policy.
    pub allow_native_plugins: bool,
    defaults: PluginPolicy,
    plugins: BTreeMap<String, PluginPolicy>,
}

impl Default for Policy {
    /// The built-in policy used when no policy file exists: every plugin may
    /// import every host interface and gets the default limits, and the
    /// host's ownership rules still apply.
    fn default() -> Self {
        Self {
            mode: Mode::Enforce,
            audit_log: None,
            // Without a policy file cniwasm is a drop-in for cnitool, which
            // runs native plugins.
            allow_native_plugins: true,
            defaults: PluginPolicy {
                ipam_state: true,
                ..PluginPolicy::default()
            },
            plugins: BTreeMap::new(),
        }
    }
}

impl Policy {
    /// Parses and validates a policy file's content. Every error names the
    /// field, such as `plugins.bridge.portMappings.hostPorts[0]`.
    pub fn from_json(text: &str) -> Result<Self, PolicyError> {
        let raw: RawPolicy =
            serde_json::from_str(text).map_err(|error| PolicyError::Json(error.to_string()))?;
        let mode = raw.mode.unwrap_or_default();

        let defaults = match raw.defaults {
            Some(entry) => PluginPolicy::validate(entry, mode, "defaults")?,
            None => PluginPolicy {
                mode,
                ipam_state: true,
                ..PluginPolicy::default()
            },
        };
        let mut plugins = BTreeMap::new();
        for (name, entry) in raw.plugins {
            let field = format!("plugins.{name}");
            plugins.insert(name, PluginPolicy::validate(entry, mode, &field)?);
        }

        // A policy file in enforce mode keeps native plugins out unless it
        // allows them explicitly: they would run with no sandbox and no host checks.
        let allow_native_plugins = raw.allow_native_plugins.unwrap_or(mode == Mode::Audit);
        Ok(Self {
            mode,
            audit_log: raw.audit_log.map(Into::into),
            allow_native_plugins,
            defaults,
            plugins,
        })
    }

    /// Returns the entry for a plugin type, or the defaults when it has none.
    pub fn for_plugin(&self, plugin_type: &str) -> &PluginPolicy {
        self.plugins.get(plugin_type).unwrap_or(&self.defaults)
    }
}

fn field_error(field: &str, reason: impl Into<String>) -> PolicyError {
    PolicyError::Field {
        field: field.to_string(),
        reason: reason.into(),
    }
}

impl PluginPolicy {
    fn validate(raw: RawPluginPolicy, parent_mode: Mode, field: &str) -> Result<Self, PolicyError> {
        let mode = raw.mode.unwrap_or(parent_mode);

        if let Some(digest) = &raw.digest {
            let hex = digest.strip_prefix("sha256:").unwrap_or("");
            if hex.len() != 64
                || !hex
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            {
                return Err(field_error(
                    &format!("{field}.digest"),
                    format!("{digest:?} is not sha256: followed by 64 lower-case hex digits"),
                ));
            }
        }
        let imports = raw
            .imports
            .map(|imports| validate_imports(imports, field))
            .transpose()?;

        Ok(Self {
            digest: raw.digest,
            mode,
            imports,
            links: raw
                .links
                .map(|r| LinkRules::validate(r, mode, &format!("{field}.links")))
                .transpose()?,
            addresses: raw
                .addresses
                .map(|r| SubnetRules::validate(r, mode, &format!("{field}.addresses")))
                .transpose()?,
            routes: raw
                .routes
                .map(|r| SubnetRules::validate(r, mode, &format!("{field}.routes")))
                .transpose()?,
            sysctls: raw
                .sysctls
                .map(|r| SysctlRules::validate(r, mode, &format!("{field}.sysctls")))
                .transpose()?,
            port_mappings: raw
                .port_mappings
                .map(|r| PortRules::validate(r, mode, &format!("{field}.portMappings")))
                .transpose()?,
            masquerade: raw
                .masquerade
                .map(|r| MasqueradeRules::validate(r, mode, &format!("{field}.masquerade")))
                .transpose()?,
            filter: raw
                .filter
                .map(|r| FilterRules::validate(r, mode, &format!("{field}.filter")))
                .transpose()?,
            resolv_conf: raw
                .resolv_conf
                .map(|r| ResolvConfRules::validate(r, mode, &format!("{field}.resolvConf")))
                .transpose()?,
            ipam_state: raw.ipam_state.unwrap_or(true),
            limits: validate_limits(raw.limits, field)?,
        })
    }

    /// Tells whether the plugin may import host interface `name` (`link`,
    /// `nat`, ...).
    pub fn check_import(&self, name: &str) -> Decision {
        match &self.imports {
            Some(granted) if !granted.contains(name) => Decision {
                verdict: Verdict::Deny,
                rule: "imports".into(),
                reason: format!("the policy does not grant host interface {name:?}"),
            },
            _ => Decision::allow("imports"),
        }
    }

    /// Checks one host request against the plugin's rules.
    pub fn check(&self, request: &Request<'_>) -> Decision {
        let interface = request.interface();
        let import = self.check_import(interface);
        if import.verdict != Verdict::Allow {
            return import;
        }
        rules::check(self, request)
    }
}

fn validate_imports(imports: Vec<String>, field: &str) -> Result<BTreeSet<String>, PolicyError> {
    let mut granted = BTreeSet::new();
    for (index, name) in imports.into_iter().enumerate() {
        if !HOST_INTERFACES.contains(&name.as_str()) {
            return Err(field_error(
                &format!("{field}.imports[{index}]"),
                format!(
                    "unknown host interface {name:?}: expected one of {}",
                    HOST_INTERFACES.join(", ")
                ),
            ));
        }
        granted.insert(name);
    }
    Ok(granted)
}

fn validate_limits(limits: Limits, field: &str) -> Result<Limits, PolicyError> {
    let checks = [
        ("memoryBytes", limits.memory_bytes),
        ("deadlineMs", limits.deadline_ms),
        ("maxHostCalls", limits.max_host_calls),
        ("maxResultBytes", limits.max_result_bytes),
    ];
    for (name, value) in checks {
        if value == 0 {
            return Err(field_error(
                &format!("{field}.limits.{name}"),
                "must be above 0",
            ));
        }
    }
    if limits.memory_bytes > 4 << 30 {
        return Err(field_error(
            &format!("{field}.limits.memoryBytes"),
            "above 4 GiB, the most a 32-bit wasm memory can use",
        ));
    }
    Ok(limits)
}

/// The namespace a request targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Host,
    Container,
}

/// A host request, as far as policy looks at it.
#[derive(Debug, Clone, PartialEq)]
pub enum Request<'a> {
    EnsureBridge {
        name: &'a str,
        mtu: Option<u32>,
    },
    CreateVeth {
        container_name: &'a str,
        mtu: Option<u32>,
    },
    ConfigureLink {
        side: Side,
        name: &'a str,
        mtu: Option<u32>,
        /// Transmit queue length in packets.
        tx_queue_len: Option<u32>,
    },
    /// The link `link` (`<bridge>.<vlan>`) that carries the bridge's
    /// gateway addresses on one VLAN, and its veth peer on the bridge.
    VlanGateway {
        bridge: &'a str,
        link: &'a str,
        mtu: Option<u32>,
    },
    /// The VLANs of a bridge port in the host namespace.
    PortVlans {
        name: &'a str,
    },
    GetLink {
        side: Side,
        name: &'a str,
    },
    DeleteLink {
        side: Side,
        name: &'a str,
    },
    Address {
        side: Side,
        link: &'a str,
        address: IpNet,
    },
    ListAddresses {
        side: Side,
        link: &'a str,
    },
    Route {
        side: Side,
        dst: IpNet,
    },
    ListRoutes {
        side: Side,
    },
    Sysctl {
        side: Side,
        key: &'a str,
        write: bool,
    },
    PortMapping {
        host_port: u16,
        host_ip: Option<IpAddr>,
        protocol: &'a str,
    },
    Masquerade {
        source: Option<IpNet>,
    },
    /// An existing chain that port mappings jump to for marking.
    MarkChain {
        name: &'a str,
    },
    /// Removing the attachment's own port mappings.
    RemovePortMappings,
    /// Accept rules in `CNI-FORWARD` for one container address.
    ForwardAddress {
        address: IpAddr,
    },
    /// The admin chain `CNI-FORWARD` jumps to.
    AdminChain {
        name: &'a str,
    },
    /// A MAC spoof check on a host veth.
    SpoofCheck {
        link: &'a str,
    },
    /// Removing the attachment's own MAC spoof check.
    RemoveSpoofCheck,
    /// A port mapping of the nftables backend, checked against the same
    /// `portMappings` section as [`Request::PortMapping`].
    NftPortMapping {
        host_port: u16,
        host_ip: Option<IpAddr>,
        protocol: &'a str,
    },
    /// A masquerade source of the nftables backend, checked against the
    /// same `masquerade` section as [`Request::Masquerade`].
    NftMasquerade {
        source: IpNet,
    },
    /// Removing the attachment's own nftables port mappings or masquerade.
    RemoveNftNat,
    Ipam,
    /// Reading the files of the plugin's own IPAM state directory.
    IpamStore,
    /// Reading a resolv.conf: the path the plugin named, and the file it
    /// leads to after symbolic links when that exists.
    ResolvConf {
        path: &'a str,
        target: Option<&'a str>,
    },
    /// Reading or writing the plugin's blob for the attachment.
    State,
    Log,
}

impl Request<'_> {
    /// Returns the host interface the request belongs to.
    pub fn interface(&self) -> &'static str {
        match self {
            Request::EnsureBridge { .. }
            | Request::CreateVeth { .. }
            | Request::ConfigureLink { .. }
            | Request::PortVlans { .. }
            | Request::VlanGateway { .. }
            | Request::GetLink { .. }
            | Request::DeleteLink { .. } => "link",
            Request::Address { .. } | Request::ListAddresses { .. } => "address",
            Request::Route { .. } | Request::ListRoutes { .. } => "route",
            Request::Sysctl { .. } => "sysctl",
            Request::PortMapping { .. }
            | Request::Masquerade { .. }
            | Request::MarkChain { .. }
            | Request::RemovePortMappings => "nat",
            Request::ForwardAddress { .. } | Request::AdminChain { .. } => "filter",
            Request::SpoofCheck { .. } | Request::RemoveSpoofCheck => "spoof-check",
            Request::NftPortMapping { .. }
            | Request::NftMasquerade { .. }
            | Request::RemoveNftNat => "nft-nat",
            Request::Ipam => "ipam",
            Request::IpamStore => "ipam-store",
            Request::ResolvConf { .. } => "dns",
            Request::State => "state",
            Request::Log => "log",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{
        "mode": "enforce",
        "auditLog": "/var/log/cniwasm/audit.log",
        "plugins": {
            "bridge": {
                "digest": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "links": {"containerNames": ["eth*"], "hostNames": ["veth*", "mynet", "cni*"], "bridges": ["mynet", "cni*"], "mtu": {"min": 1280, "max": 9000}},
                "addresses": {"container": ["10.244.0.0/16"], "host": ["10.244.0.0/16"]},
                "sysctls": {"host": ["net.ipv4.ip_forward", "net/ipv4/conf/*/route_localnet"], "container": ["net/*"]},
                "masquerade": {"sources": ["10.244.0.0/16"]},
                "limits": {"memoryBytes": 33554432, "deadlineMs": 2000, "maxHostCalls": 64, "maxResultBytes": 65536}
            },
            "portmap": {
                "mode": "audit",
                "imports": ["nat", "log"],
                "portMappings": {"hostPorts": ["8000-9999"], "hostIPs": ["127.0.0.1", "0.0.0.0"], "protocols": ["tcp"]}
            }
        }
    }"#;

    fn policy() -> Policy {
        Policy::from_json(EXAMPLE).unwrap()
    }

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    #[test]
    fn parses_example() {
        let policy = policy();
        assert_eq!(
            policy.audit_log.as_deref(),
            Some(std::path::Path::new("/var/log/cniwasm/audit.log"))
        );
        let bridge = policy.for_plugin("bridge");
        assert_eq!(bridge.limits.max_host_calls, 64);
        assert_eq!(bridge.limits.deadline(), Duration::from_secs(2));
        assert_eq!(policy.for_plugin("portmap").mode, Mode::Audit);
    }

    #[test]
    fn unlisted_plugin_gets_defaults() {
        let policy = policy();
        let other = policy.for_plugin("loopback");
        assert_eq!(other.imports, None);
        assert_eq!(other.limits, Limits::default());
        assert!(other.ipam_state);
    }

    #[test]
    fn bridge_names_checked() {
        let bridge = policy().for_plugin("bridge").clone();
        assert_eq!(
            bridge
                .check(&Request::EnsureBridge {
                    name: "mynet",
                    mtu: None
                })
                .verdict,
            Verdict::Allow
        );
        assert_eq!(
            bridge
                .check(&Request::EnsureBridge {
                    name: "cni0",
                    mtu: Some(1500)
                })
                .verdict,
            Verdict::Allow
        );
        let denied = bridge.check(&Request::EnsureBridge {
            name: "docker0",
            mtu: None,
        });
        assert_eq!(denied.verdict, Verdict::Deny);
        assert_eq!(denied.rule, "links.bridges");
        assert!(denied.reason.contains("docker0"));
    }

    #[test]
    fn mtu_range_checked() {
        let bridge = policy().for_plugin("bridge").clone();
        let denied = bridge.check(&Request::CreateVeth {
            container_name: "eth0",
            mtu: Some(65000),
        });
        assert_eq!(denied.rule, "links.mtu");
        assert_eq!(denied.verdict, Verdict::Deny);
    }

    #[test]
    fn tx_queue_len_range_checked() {
        let text = r#"{"defaults": {"links": {"containerNames": ["eth*"],
            "txQueueLen": {"min": 100, "max": 5000}}}}"#;
        let policy = Policy::from_json(text).unwrap();
        let tuning = policy.for_plugin("tuning");
        let request = |length| Request::ConfigureLink {
            side: Side::Container,
            name: "eth0",
            mtu: None,
            tx_queue_len: Some(length),
        };
        assert_eq!(tuning.check(&request(2000)).verdict, Verdict::Allow);
        let denied = tuning.check(&request(100_000));
        assert_eq!(denied.verdict, Verdict::Deny);
        assert_eq!(denied.rule, "links.txQueueLen");
        assert!(denied.reason.contains("100000"), "{}", denied.reason);
    }

    #[test]
    fn host_names_checked() {
        let bridge = policy().for_plugin("bridge").clone();
        let veth = Request::ConfigureLink {
            side: Side::Host,
            name: "veth1234abcd",
            mtu: None,
            tx_queue_len: None,
        };
        assert_eq!(bridge.check(&veth).verdict, Verdict::Allow);
        let other = Request::Address {
            side: Side::Host,
            link: "docker0",
            address: net("10.244.1.1/24"),
        };
        assert_eq!(bridge.check(&other).rule, "links.hostNames");
    }

    #[test]
    fn container_names_checked() {
        let bridge = policy().for_plugin("bridge").clone();
        let request = Request::CreateVeth {
            container_name: "net1",
            mtu: None,
        };
        assert_eq!(bridge.check(&request).rule, "links.containerNames");
    }

    #[test]
    fn subnets_checked_per_side() {
        let bridge = policy().for_plugin("bridge").clone();
        let inside = Request::Address {
            side: Side::Container,
            link: "eth0",
            address: net("10.244.10.2/24"),
        };
        assert_eq!(bridge.check(&inside).verdict, Verdict::Allow);
        let outside = Request::Address {
            side: Side::Container,
            link: "eth0",
            address: net("192.168.1.2/24"),
        };
        let denied = bridge.check(&outside);
        assert_eq!(denied.verdict, Verdict::Deny);
        assert_eq!(denied.rule, "addresses.container");
    }

    #[test]
    fn sysctl_patterns_accept_dot_form() {
        let bridge = policy().for_plugin("bridge").clone();
        let forward = Request::Sysctl {
            side: Side::Host,
            key: "net/ipv4/ip_forward",
            write: true,
        };
        assert_eq!(bridge.check(&forward).verdict, Verdict::Allow);
        let localnet = Request::Sysctl {
            side: Side::Host,
            key: "net/ipv4/conf/mynet/route_localnet",
            write: true,
        };
        assert_eq!(bridge.check(&localnet).verdict, Verdict::Allow);
        let rp_filter = Request::Sysctl {
            side: Side::Host,
            key: "net/ipv4/conf/all/rp_filter",
            write: true,
        };
        assert_eq!(bridge.check(&rp_filter).rule, "sysctls.host");
        let read = Request::Sysctl {
            side: Side::Host,
            key: "net/ipv4/conf/all/rp_filter",
            write: false,
        };
        assert_eq!(bridge.check(&read).verdict, Verdict::Allow);
    }

    #[test]
    fn audit_mode_would_deny() {
        let portmap = policy().for_plugin("portmap").clone();
        let ssh = Request::PortMapping {
            host_port: 22,
            host_ip: None,
            protocol: "tcp",
        };
        let decision = portmap.check(&ssh);
        assert_eq!(decision.verdict, Verdict::WouldDeny);
        assert_eq!(decision.rule, "portMappings.hostPorts");
    }

    #[test]
    fn section_mode_overrides_entry_mode() {
        let policy = Policy::from_json(
            r#"{"mode": "enforce", "plugins": {"bridge": {
                "links": {"mode": "audit", "containerNames": ["eth*"], "bridges": ["mynet"]},
                "portMappings": {"hostPorts": ["8080"], "hostIPs": ["0.0.0.0"], "protocols": ["tcp"]}}}}"#,
        )
        .unwrap();
        let bridge = policy.for_plugin("bridge");

        let other_bridge = bridge.check(&Request::EnsureBridge {
            name: "docker0",
            mtu: None,
        });
        assert_eq!(other_bridge.verdict, Verdict::WouldDeny);
        let ssh = bridge.check(&Request::PortMapping {
            host_port: 22,
            host_ip: None,
            protocol: "tcp",
        });
        assert_eq!(ssh.verdict, Verdict::Deny);
    }

    #[test]
    fn port_rules_check_ip_and_protocol() {
        let portmap = policy().for_plugin("portmap").clone();
        let allowed = Request::PortMapping {
            host_port: 9090,
            host_ip: Some("127.0.0.1".parse().unwrap()),
            protocol: "tcp",
        };
        assert_eq!(portmap.check(&allowed).verdict, Verdict::Allow);
        let any_ip = Request::PortMapping {
            host_port: 9090,
            host_ip: None,
            protocol: "tcp",
        };
        assert_eq!(portmap.check(&any_ip).verdict, Verdict::Allow);
        let other_ip = Request::PortMapping {
            host_port: 9090,
            host_ip: Some("10.0.0.1".parse().unwrap()),
            protocol: "tcp",
        };
        assert_eq!(portmap.check(&other_ip).rule, "portMappings.hostIPs");
        let udp = Request::PortMapping {
            host_port: 9090,
            host_ip: None,
            protocol: "udp",
        };
        assert_eq!(portmap.check(&udp).rule, "portMappings.protocols");
    }

    #[test]
    fn imports_restrict_interfaces() {
        let portmap = policy().for_plugin("portmap").clone();
        let decision = portmap.check(&Request::EnsureBridge {
            name: "mynet",
            mtu: None,
        });
        assert_eq!(
            decision.verdict,
            Verdict::Deny,
            "imports are enforced even in audit mode"
        );
        assert_eq!(decision.rule, "imports");
        assert_eq!(portmap.check_import("nat").verdict, Verdict::Allow);
        assert_eq!(portmap.check_import("link").verdict, Verdict::Deny);
    }

    #[test]
    fn ipam_store_is_an_import() {
        let granted = r#"{"plugins": {"host-local": {"imports": ["ipam-store", "log"]}}}"#;
        let withheld = r#"{"plugins": {"host-local": {"imports": ["dns", "log"]}}}"#;
        let check = |text: &str| {
            Policy::from_json(text)
                .unwrap()
                .for_plugin("host-local")
                .check(&Request::IpamStore)
        };

        assert_eq!(check(granted).verdict, Verdict::Allow);
        let denied = check(withheld);
        assert_eq!(denied.verdict, Verdict::Deny);
        assert_eq!(denied.rule, "imports");
        assert!(
            denied.reason.contains("\"ipam-store\""),
            "{}",
            denied.reason
        );
    }

    /// A `portMappings` section lists the external mark chains allowed; with
    /// none listed, none is.
    #[test]
    fn mark_chains_checked() {
        let text = r#"{"plugins": {
            "portmap": {"portMappings": {"hostPorts": ["1-65535"], "markChains": ["KUBE-MARK-*"]}},
            "strict": {"portMappings": {"hostPorts": ["1-65535"]}}}}"#;
        let policy = Policy::from_json(text).unwrap();
        let check = |plugin: &str, name| {
            let decision = policy
                .for_plugin(plugin)
                .check(&Request::MarkChain { name });
            (decision.verdict, decision.rule)
        };

        assert_eq!(check("portmap", "KUBE-MARK-MASQ").0, Verdict::Allow);
        let other = check("portmap", "OTHER-MARK");
        assert_eq!(
            other,
            (Verdict::Deny, "portMappings.markChains".to_string())
        );
        assert_eq!(check("strict", "KUBE-MARK-MASQ").0, Verdict::Deny);
    }

    /// `spoof-check` is an import of its own, and the check's host veth
    /// goes through `links.hostNames` like every other host link.
    #[test]
    fn spoof_check_is_an_import() {
        let text = r#"{"plugins": {
            "bridge": {"imports": ["link", "spoof-check"], "links": {"hostNames": ["veth*"]}},
            "other": {"imports": ["link"]}}}"#;
        let policy = Policy::from_json(text).unwrap();
        let bridge = policy.for_plugin("bridge");

        let veth = Request::SpoofCheck {
            link: "veth0a1b2c3d",
        };
        assert_eq!(bridge.check(&veth).verdict, Verdict::Allow);
        let other_link = bridge.check(&Request::SpoofCheck { link: "eth0" });
        assert_eq!(other_link.verdict, Verdict::Deny);
        assert_eq!(other_link.rule, "links.hostNames");
        assert_eq!(
            bridge.check(&Request::RemoveSpoofCheck).verdict,
            Verdict::Allow
        );

        let denied = policy.for_plugin("other").check(&Request::RemoveSpoofCheck);
        assert_eq!(denied.verdict, Verdict::Deny);
        assert_eq!(denied.rule, "imports");
        assert!(
            denied.reason.contains("\"spoof-check\""),
            "{}",
            denied.reason
        );
    }

    #[test]
    fn filter_section_checked() {
        let text = r#"{"plugins": {"firewall": {"filter": {
            "addresses": ["10.244.0.0/16"], "adminChains": ["CNI-ADMIN", "ADMIN-*"]}}}}"#;
        let firewall = Policy::from_json(text)
            .unwrap()
            .for_plugin("firewall")
            .clone();
        let address = |text: &str| Request::ForwardAddress {
            address: text.parse().unwrap(),
        };

        assert_eq!(
            firewall.check(&address("10.244.3.4")).verdict,
            Verdict::Allow
        );
        let outside = firewall.check(&address("10.99.0.2"));
        assert_eq!(outside.verdict, Verdict::Deny);
        assert_eq!(outside.rule, "filter.addresses");
        let admin = |name| firewall.check(&Request::AdminChain { name }).verdict;
        assert_eq!(admin("ADMIN-1"), Verdict::Allow);
        assert_eq!(admin("INPUT"), Verdict::Deny);
    }

    #[test]
    fn resolv_conf_defaults() {
        let policy = Policy::from_json("{}").unwrap();
        let entry = policy.for_plugin("host-local");
        let read = |path, target| entry.check(&Request::ResolvConf { path, target });

        assert_eq!(read("/etc/resolv.conf", None).verdict, Verdict::Allow);
        let stub = Some("/run/systemd/resolve/stub-resolv.conf");
        assert_eq!(read("/etc/resolv.conf", stub).verdict, Verdict::Allow);
        let shadow = read("/etc/shadow", None);
        assert_eq!(shadow.verdict, Verdict::Deny);
        assert_eq!(shadow.rule, "resolvConf.paths");
        let link = read("/etc/resolv.conf", Some("/etc/shadow"));
        assert_eq!(link.verdict, Verdict::Deny);
        assert!(
            link.reason.contains("leads to \"/etc/shadow\""),
            "{}",
            link.reason
        );
        let nested = read("/run/systemd/resolve/netif/2", None);
        assert_eq!(nested.verdict, Verdict::Deny, "* crossed a /");
    }

    #[test]
    fn resolv_conf_section_replaces_defaults() {
        let text = r#"{"plugins": {"host-local": {"resolvConf": {"mode": "audit",
            "paths": ["/etc/cni/dns/*.conf"]}}}}"#;
        let entry = Policy::from_json(text)
            .unwrap()
            .for_plugin("host-local")
            .clone();
        let read = |path| entry.check(&Request::ResolvConf { path, target: None });

        assert_eq!(read("/etc/cni/dns/a.conf").verdict, Verdict::Allow);
        assert_eq!(read("/etc/resolv.conf").verdict, Verdict::WouldDeny);
        let error =
            Policy::from_json(r#"{"defaults": {"resolvConf": {"paths": ["etc/x"]}}}"#).unwrap_err();
        assert!(
            error.to_string().contains("defaults.resolvConf.paths[0]"),
            "{error}"
        );
    }

    #[test]
    fn masquerade_sources_checked() {
        let bridge = policy().for_plugin("bridge").clone();
        let inside = Request::Masquerade {
            source: Some(net("10.244.10.2/24")),
        };
        assert_eq!(bridge.check(&inside).verdict, Verdict::Allow);
        let outside = Request::Masquerade {
            source: Some(net("172.16.0.2/24")),
        };
        assert_eq!(bridge.check(&outside).rule, "masquerade.sources");
        assert_eq!(
            bridge.check(&Request::Masquerade { source: None }).verdict,
            Verdict::Allow
        );
    }

    #[test]
    fn invalid_fields_are_named() {
        let cases = [
            (
                r#"{"plugins": {"b": {"imports": ["links"]}}}"#,
                "plugins.b.imports[0]",
            ),
            (
                r#"{"plugins": {"b": {"digest": "sha256:abc"}}}"#,
                "plugins.b.digest",
            ),
            (
                r#"{"plugins": {"b": {"portMappings": {"hostPorts": ["9-1"]}}}}"#,
                "plugins.b.portMappings.hostPorts[0]",
            ),
            (
                r#"{"plugins": {"b": {"addresses": {"container": ["10.0.0.0/33"]}}}}"#,
                "plugins.b.addresses.container[0]",
            ),
            (
                r#"{"plugins": {"b": {"limits": {"deadlineMs": 0}}}}"#,
                "plugins.b.limits.deadlineMs",
            ),
            (
                r#"{"defaults": {"links": {"mtu": {"min": 9000, "max": 1500}}}}"#,
                "defaults.links.mtu",
            ),
            (
                r#"{"defaults": {"links": {"txQueueLen": {"min": 9000, "max": 1500}}}}"#,
                "defaults.links.txQueueLen",
            ),
        ];
        for (text, field) in cases {
            let error = Policy::from_json(text).unwrap_err();
            assert!(error.to_string().contains(field), "{text}: {error}");
        }
    }

    #[test]
    fn native_plugins_default_by_mode() {
        assert!(Policy::default().allow_native_plugins);
        assert!(!Policy::from_json("{}").unwrap().allow_native_plugins);
        assert!(
            Policy::from_json(r#"{"mode": "audit"}"#)
                .unwrap()
                .allow_native_plugins
        );
        assert!(
            Policy::from_json(r#"{"allowNativePlugins": true}"#)
                .unwrap()
                .allow_native_plugins
        );
    }

    #[test]
    fn unknown_keys_rejected() {
        let error = Policy::from_json(r#"{"plugins": {"b": {"link": {}}}}"#).unwrap_err();
        assert!(error.to_string().contains("link"), "{error}");
        assert!(Policy::from_json(r#"{"mode": "block"}"#).is_err());
    }
}
