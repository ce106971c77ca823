//! portmap: a chained plugin that forwards host ports to the container's
//! addresses. It reads `runtimeConfig.portMappings`; the host builds and owns
//! the NAT rules, keyed by network and container id.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;

use cniwasm_plugin_sdk::cniwasm_types;
use cniwasm_plugin_sdk::nat::{self, PortMapSpec, PortMapping, Protocol};
use cniwasm_plugin_sdk::nft_nat::{self, NftPortMapSpec};
use cniwasm_plugin_sdk::{
    AddOutput, CniError, HostResultExt, Invocation, Plugin, PluginConfig, codes,
    describe_host_error, logging,
};

/// The portmap plugin.
pub struct Portmap;

impl Plugin for Portmap {
    fn add(inv: &Invocation, config: &PluginConfig) -> Result<AddOutput, CniError> {
        let Some(prev) = config.prev_result.as_ref() else {
            return Err(not_chained());
        };
        let options = PortmapConfig::parse(config)?;

        let specs = family_specs(&options, prev, &inv.ifname);
        match options.backend {
            Backend::Iptables => add_iptables(&specs)?,
            Backend::Nftables => add_nftables(&specs)?,
        }
        Ok(AddOutput::Result(prev.clone()))
    }

    fn del(_inv: &Invocation, config: &PluginConfig) -> Result<(), CniError> {
        let options = PortmapConfig::parse(config)?;
        match options.backend {
            // The host finds the rules by owner, so DEL needs neither the
            // mappings nor prevResult.
            Backend::Iptables => {
                nat::remove_port_mappings().context("failed to remove port mappings")
            }
            // The reference's nftables DEL does nothing without mappings.
            Backend::Nftables if options.mappings.is_empty() => Ok(()),
            Backend::Nftables => nft_nat::remove_port_mappings()
                .context("failed to remove the nftables port mappings"),
        }
    }

    fn check(inv: &Invocation, config: &PluginConfig) -> Result<(), CniError> {
        let Some(prev) = config.prev_result.as_ref() else {
            return Err(not_chained());
        };
        let options = PortmapConfig::parse(config)?;

        for spec in family_specs(&options, prev, &inv.ifname) {
            let message = format!(
                "port mappings for {} do not match the configuration",
                spec.container_address
            );
            match options.backend {
                Backend::Iptables => nat::check_port_mappings(&spec).context(&message)?,
                Backend::Nftables => {
                    nft_nat::check_port_mappings(&nft_spec(spec)).context(&message)?
                }
            }
        }
        Ok(())
    }
}

fn add_iptables(specs: &[PortMapSpec]) -> Result<(), CniError> {
    for spec in specs {
        nat::add_port_mappings(spec).context(&format!(
            "failed to add port mappings for {}",
            spec.container_address
        ))?;
    }
    Ok(())
}

/// Adds each family's mappings. Each family's rules go in as one atomic
/// transaction. When a later family fails, the earlier families' rules are
/// removed, so a failed ADD leaves none of the container's rules.
fn add_nftables(specs: &[PortMapSpec]) -> Result<(), CniError> {
    for spec in specs {
        let added = nft_nat::add_port_mappings(&nft_spec(spec.clone())).context(&format!(
            "failed to add nftables port mappings for {}",
            spec.container_address
        ));
        let Err(error) = added else {
            continue;
        };
        if let Err(undo) = nft_nat::remove_port_mappings() {
            logging::warn(&format!(
                "failed to remove nftables port mappings after a failed ADD: {}",
                describe_host_error(&undo)
            ));
        }
        return Err(error);
    }
    Ok(())
}

/// Returns the nftables form of one family's request: the same mappings,
/// SNAT and conditions, without the iptables mark options.
fn nft_spec(spec: PortMapSpec) -> NftPortMapSpec {
    NftPortMapSpec {
        container_address: spec.container_address,
        mappings: spec.mappings,
        snat: spec.snat,
        masq_all: spec.masq_all,
        conditions: spec.conditions,
    }
}

cniwasm_plugin_sdk::export_plugin!(Portmap);

fn not_chained() -> CniError {
    CniError::new(
        codes::INVALID_NETWORK_CONFIG,
        "must be called as chained plugin",
    )
}

/// One entry of `runtimeConfig.portMappings`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
    /// `None` for any local address (absent, empty, `0.0.0.0` or `::`
    /// count as any, but the last two only for their own family).
    pub host_ip: Option<IpAddr>,
}

/// The rules that carry the mappings (`backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Iptables,
    Nftables,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Iptables => "iptables",
            Backend::Nftables => "nftables",
        }
    }
}

/// The plugin's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortmapConfig {
    pub backend: Backend,
    pub mappings: Vec<Mapping>,
    pub snat: bool,
    pub masq_all: bool,
    pub mark_bit: u8,
    /// `externalSetMarkChain`: a chain to jump to for marking in place of
    /// the host's own.
    pub mark_chain: Option<String>,
    pub conditions_v4: Vec<String>,
    pub conditions_v6: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawOptions {
    snat: Option<bool>,
    masq_all: Option<bool>,
    mark_masq_bit: Option<i64>,
    backend: Option<String>,
    external_set_mark_chain: Option<String>,
    #[serde(default, rename = "conditionsV4")]
    conditions_v4: Vec<String>,
    #[serde(default, rename = "conditionsV6")]
    conditions_v6: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMapping {
    host_port: i64,
    container_port: i64,
    #[serde(default)]
    protocol: String,
    #[serde(default, rename = "hostIP")]
    host_ip: Option<String>,
}

impl PortmapConfig {
    /// Reads `backend` (default iptables), `snat` (default true),
    /// `masqAll` (default false), `markMasqBit` (default 13, 0 to 31),
    /// `externalSetMarkChain`, `conditionsV4`, `conditionsV6` and the
    /// mappings. Errors carry code 7.
    pub fn parse(config: &PluginConfig) -> Result<Self, CniError> {
        let raw: RawOptions = config.options()?;
        let backend = raw.backend()?;
        let mark_bit = raw.mark_masq_bit.unwrap_or(13);
        if !(0..=31).contains(&mark_bit) {
            return Err(invalid(format!(
                "invalid markMasqBit {mark_bit}: use a bit number between 0 and 31"
            )));
        }

        let mappings = match config.runtime_config.get("portMappings") {
            None | Some(Value::Null) => Vec::new(),
            Some(value) => parse_mappings(value)?,
        };
        Ok(Self {
            backend,
            mappings,
            snat: raw.snat.unwrap_or(true),
            masq_all: raw.masq_all.unwrap_or(false),
            mark_bit: mark_bit as u8,
            mark_chain: raw
                .external_set_mark_chain
                .filter(|chain| !chain.is_empty()),
            conditions_v4: raw.conditions_v4,
            conditions_v6: raw.conditions_v6,
        })
    }
}

impl RawOptions {
    /// Returns the backend, and rejects options of the other backend, as
    /// the reference's `ensureBackend` does with the same message.
    fn backend(&self) -> Result<Backend, CniError> {
        let external_chain = self
            .external_set_mark_chain
            .as_deref()
            .filter(|chain| !chain.is_empty());
        if let (Some(chain), Some(bit)) = (external_chain, self.mark_masq_bit) {
            return Err(invalid(format!(
                "externalSetMarkChain {chain:?} and markMasqBit {bit} exclude each other: remove one"
            )));
        }
        let backend = match self.backend.as_deref() {
            None | Some("iptables") => Backend::Iptables,
            Some("nftables") => Backend::Nftables,
            Some(other) => {
                return Err(invalid(format!(
                    "invalid backend {other:?}: use \"iptables\" or \"nftables\", or remove the key"
                )));
            }
        };

        let mut specific: Vec<(Backend, &str)> = Vec::new();
        if external_chain.is_some() {
            specific.push((Backend::Iptables, "externalSetMarkChain"));
        }
        for (key, conditions) in [
            ("conditionsV4", &self.conditions_v4),
            ("conditionsV6", &self.conditions_v6),
        ] {
            if let Some(owner) = conditions_backend(conditions) {
                specific.push((owner, key));
            }
        }
        let wrong: Vec<&str> = specific
            .iter()
            .filter(|(owner, _)| *owner != backend)
            .map(|(_, key)| *key)
            .collect();
        if !wrong.is_empty() {
            let other = match backend {
                Backend::Iptables => Backend::Nftables,
                Backend::Nftables => Backend::Iptables,
            };
            return Err(invalid(format!(
                "{} backend was requested but configuration contains {}-specific options [{}]: set backend to {:?} or remove them",
                backend.name(),
                other.name(),
                wrong.join(" "),
                other.name()
            )));
        }
        Ok(backend)
    }
}

/// Returns the backend whose syntax `conditions` use, by the reference's
/// rule: a first token that starts with `-` or `!` is an
/// iptables match, any other an nftables one. No conditions, or an empty
/// first token, belong to neither.
fn conditions_backend(conditions: &[String]) -> Option<Backend> {
    let first = conditions.first().filter(|first| !first.is_empty())?;
    match first.starts_with(['-', '!']) {
        true => Some(Backend::Iptables),
        false => Some(Backend::Nftables),
    }
}

fn parse_mappings(value: &Value) -> Result<Vec<Mapping>, CniError> {
    let raw: Vec<RawMapping> = serde_json::from_value(value.clone())
        .map_err(|error| {
            invalid(format!(
                "invalid runtimeConfig.portMappings (the portMappings capability argument, CAP_ARGS for cniwasm): {error}; \
                 expected a list such as [{{\"hostPort\": 8080, \"containerPort\": 80, \"protocol\": \"tcp\"}}] with integer ports"
            ))
        })?;
    raw.iter().map(validate_mapping).collect()
}

/// Checks one mapping; the container port is checked first, as the
/// reference plugin does.
fn validate_mapping(raw: &RawMapping) -> Result<Mapping, CniError> {
    let container_port = u16::try_from(raw.container_port)
        .ok()
        .filter(|port| *port != 0)
        .ok_or_else(|| {
            invalid(format!(
                "Invalid container port number: {}",
                raw.container_port
            ))
        })?;
    let host_port = u16::try_from(raw.host_port)
        .ok()
        .filter(|port| *port != 0)
        .ok_or_else(|| invalid(format!("Invalid host port number: {}", raw.host_port)))?;

    let protocol = match raw.protocol.to_ascii_lowercase().as_str() {
        "" | "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "sctp" => Protocol::Sctp,
        other => {
            return Err(invalid(format!(
                "invalid protocol {other:?} in port mapping: use tcp, udp or sctp"
            )));
        }
    };
    let host_ip = match raw.host_ip.as_deref() {
        None | Some("") => None,
        Some(text) => Some(text.parse::<IpAddr>().map_err(|_| {
            invalid(format!(
                "invalid hostIP {text:?} in port mapping: expected an IP address such as 192.0.2.10"
            ))
        })?),
    };

    Ok(Mapping {
        host_port,
        container_port,
        protocol,
        host_ip,
    })
}

fn invalid(message: impl Into<String>) -> CniError {
    CniError::new(codes::INVALID_NETWORK_CONFIG, message)
}

/// Picks the first IPv4 and the first IPv6 address of the container: an
/// address whose `interface` index names `ifname` with a non-empty sandbox,
/// or an address without an index.
pub fn container_addresses(prev: &cniwasm_types::Result, ifname: &str) -> Vec<IpNet> {
    let mut chosen: Vec<IpNet> = Vec::new();
    for ip in &prev.ips {
        let on_container = match ip.interface {
            None => true,
            Some(index) => prev
                .interfaces
                .get(index as usize)
                .is_some_and(|interface| interface.name == ifname && !interface.sandbox.is_empty()),
        };
        let Ok(address) = ip.address.parse::<IpNet>() else {
            continue;
        };
        let family_taken = chosen
            .iter()
            .any(|taken| taken.addr().is_ipv4() == address.addr().is_ipv4());
        if on_container && !family_taken {
            chosen.push(address);
        }
    }
    chosen
}

/// Builds one host request per container address family that has mappings;
/// a mapping whose `hostIP` is of the other family is left out.
pub fn family_specs(
    options: &PortmapConfig,
    prev: &cniwasm_types::Result,
    ifname: &str,
) -> Vec<PortMapSpec> {
    let mut specs = Vec::new();
    for address in container_addresses(prev, ifname) {
        let ipv4 = address.addr().is_ipv4();
        let mappings: Vec<PortMapping> = options
            .mappings
            .iter()
            .filter(|mapping| mapping.host_ip.is_none_or(|host| host.is_ipv4() == ipv4))
            .map(|mapping| PortMapping {
                host_port: mapping.host_port,
                container_port: mapping.container_port,
                protocol: mapping.protocol,
                host_ip: mapping.host_ip.map(|host| host.to_string()),
            })
            .collect();
        if mappings.is_empty() {
            continue;
        }

        specs.push(PortMapSpec {
            container_address: address.to_string(),
            mappings,
            snat: options.snat,
            masq_all: options.masq_all,
            mark_bit: options.mark_bit,
            mark_chain: options.mark_chain.clone(),
            conditions: match ipv4 {
                true => options.conditions_v4.clone(),
                false => options.conditions_v6.clone(),
            },
        });
    }
    specs
}

#[cfg(test)]
mod tests {
    use cniwasm_types::{Interface, IpConfig};
    use serde_json::json;

    use super::*;

    fn config(value: Value) -> PluginConfig {
        let versions: Vec<String> = cniwasm_plugin_sdk::ALL_VERSIONS
            .iter()
            .map(|v| v.to_string())
            .collect();
        PluginConfig::parse(&value.to_string(), &versions).unwrap()
    }

    fn with_mappings(mappings: Value) -> Result<PortmapConfig, CniError> {
        PortmapConfig::parse(&config(json!({"cniVersion": "1.0.0", "name": "n",
            "type": "portmap", "runtimeConfig": {"portMappings": mappings}})))
    }

    fn chained_result() -> cniwasm_types::Result {
        cniwasm_types::Result {
            interfaces: vec![
                Interface {
                    name: "cni0".into(),
                    ..Default::default()
                },
                Interface {
                    name: "eth0".into(),
                    sandbox: "/run/netns/a".into(),
                    ..Default::default()
                },
            ],
            ips: vec![
                IpConfig {
                    interface: Some(0),
                    address: "10.244.10.1/24".into(),
                    gateway: String::new(),
                },
                IpConfig {
                    interface: Some(1),
                    address: "10.244.10.7/24".into(),
                    gateway: String::new(),
                },
                IpConfig {
                    interface: Some(1),
                    address: "10.244.11.7/24".into(),
                    gateway: String::new(),
                },
                IpConfig {
                    interface: None,
                    address: "2001:db8::7/64".into(),
                    gateway: String::new(),
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn defaults() {
        let options = with_mappings(json!([])).unwrap();
        assert!(options.snat);
        assert!(!options.masq_all);
        assert_eq!(options.mark_bit, 13);
    }

    #[test]
    fn port_validation_messages() {
        let cases = [
            (
                json!([{"hostPort": 8080, "containerPort": 0}]),
                "Invalid container port number: 0",
            ),
            (
                json!([{"hostPort": 8080, "containerPort": -1}]),
                "Invalid container port number: -1",
            ),
            (
                json!([{"hostPort": 8080, "containerPort": 70000}]),
                "Invalid container port number: 70000",
            ),
            (
                json!([{"hostPort": 0, "containerPort": 80}]),
                "Invalid host port number: 0",
            ),
            (
                json!([{"hostPort": 65536, "containerPort": 80}]),
                "Invalid host port number: 65536",
            ),
            (
                json!([{"hostPort": 0, "containerPort": 0}]),
                "Invalid container port number: 0",
            ),
        ];
        for (mappings, message) in cases {
            let error = with_mappings(mappings).unwrap_err();
            assert_eq!(error.code, 7);
            assert_eq!(error.msg, message);
        }
    }

    #[test]
    fn protocol_and_host_ip_parsed() {
        let options = with_mappings(json!([
            {"hostPort": 53, "containerPort": 53, "protocol": "UDP", "hostIP": "127.0.0.1"},
            {"hostPort": 80, "containerPort": 8080}
        ]))
        .unwrap();
        assert_eq!(options.mappings[0].protocol, Protocol::Udp);
        assert_eq!(
            options.mappings[0].host_ip,
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(options.mappings[1].protocol, Protocol::Tcp);
        assert_eq!(options.mappings[1].host_ip, None);
    }

    #[test]
    fn bad_protocol_rejected() {
        let error = with_mappings(json!([{"hostPort": 1, "containerPort": 1, "protocol": "icmp"}]))
            .unwrap_err();
        assert_eq!(error.code, 7);
        assert!(error.msg.contains("\"icmp\""));
    }

    #[test]
    fn mark_bit_range() {
        for (bit, ok) in [(0, true), (31, true), (32, false), (-1, false)] {
            let parsed = PortmapConfig::parse(&config(json!({"cniVersion": "1.0.0",
                "name": "n", "markMasqBit": bit})));
            assert_eq!(parsed.is_ok(), ok, "bit {bit}");
        }
    }

    /// Options of the other backend are rejected with the reference's
    /// message, and so are unknown backends.
    #[test]
    fn backend_options_checked() {
        let cases = [
            (json!({"backend": "pf"}), "invalid backend \"pf\""),
            (
                json!({"externalSetMarkChain": "X", "markMasqBit": 5}),
                "markMasqBit",
            ),
            (
                json!({"conditionsV4": ["ip", "saddr", "1.2.3.4"]}),
                "iptables backend was requested but configuration contains nftables-specific options [conditionsV4]",
            ),
            (
                json!({"backend": "nftables", "externalSetMarkChain": "KUBE-MARK-MASQ",
                    "conditionsV6": ["!", "-d", "fd00::/8"]}),
                "nftables backend was requested but configuration contains iptables-specific options [externalSetMarkChain conditionsV6]",
            ),
        ];
        for (mut value, needle) in cases {
            value["cniVersion"] = json!("1.0.0");
            value["name"] = json!("n");
            let error = PortmapConfig::parse(&config(value.clone())).unwrap_err();
            assert_eq!(error.code, 7, "{value}");
            assert!(error.msg.contains(needle), "{value}: {}", error.msg);
        }

        let accepted = json!({"cniVersion": "1.0.0", "name": "n", "backend": "iptables",
            "externalSetMarkChain": "", "conditionsV4": []});
        let parsed = PortmapConfig::parse(&config(accepted)).unwrap();
        assert_eq!(parsed.mark_chain, None);
        assert_eq!(parsed.backend, Backend::Iptables);

        let nftables = json!({"cniVersion": "1.0.0", "name": "n", "backend": "nftables",
            "conditionsV4": ["ip", "daddr", "!=", "10.96.0.0/12"], "conditionsV6": [""]});
        let parsed = PortmapConfig::parse(&config(nftables)).unwrap();
        assert_eq!(parsed.backend, Backend::Nftables);
        assert_eq!(parsed.conditions_v4, ["ip", "daddr", "!=", "10.96.0.0/12"]);
    }

    #[test]
    fn nft_spec_keeps_mappings_and_conditions() {
        let mut value = json!({"cniVersion": "1.0.0", "name": "n", "backend": "nftables",
            "masqAll": true, "conditionsV4": ["iifname", "eth0"],
            "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}});
        value["prevResult"] = serde_json::to_value(chained_result()).unwrap();
        let options = PortmapConfig::parse(&config(value)).unwrap();

        let specs = family_specs(&options, &chained_result(), "eth0");
        let spec = nft_spec(specs[0].clone());

        assert_eq!(spec.container_address, "10.244.10.7/24");
        assert_eq!(spec.mappings.len(), 1);
        assert!(spec.snat);
        assert!(spec.masq_all);
        assert_eq!(spec.conditions, ["iifname", "eth0"]);
    }

    /// Each family's spec carries that family's conditions, and both carry
    /// the external mark chain.
    #[test]
    fn mark_chain_and_conditions_passed_per_family() {
        let mut value = json!({"cniVersion": "1.0.0", "name": "n",
            "externalSetMarkChain": "KUBE-MARK-MASQ",
            "conditionsV4": ["!", "-d", "10.99.0.0/16"], "conditionsV6": ["-s", "fd00::/8"],
            "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}});
        value["prevResult"] = serde_json::to_value(chained_result()).unwrap();
        let config = config(value);
        let options = PortmapConfig::parse(&config).unwrap();

        let specs = family_specs(&options, &chained_result(), "eth0");

        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].mark_chain.as_deref(), Some("KUBE-MARK-MASQ"));
        assert_eq!(specs[0].conditions, ["!", "-d", "10.99.0.0/16"]);
        assert_eq!(specs[1].mark_chain.as_deref(), Some("KUBE-MARK-MASQ"));
        assert_eq!(specs[1].conditions, ["-s", "fd00::/8"]);
    }

    #[test]
    fn container_addresses_first_per_family() {
        let chosen = container_addresses(&chained_result(), "eth0");
        let texts: Vec<String> = chosen.iter().map(ToString::to_string).collect();
        assert_eq!(texts, ["10.244.10.7/24", "2001:db8::7/64"]);
    }

    #[test]
    fn host_side_interface_ignored() {
        let mut prev = chained_result();
        prev.interfaces[1].sandbox.clear();
        let chosen = container_addresses(&prev, "eth0");
        let texts: Vec<String> = chosen.iter().map(ToString::to_string).collect();
        assert_eq!(texts, ["2001:db8::7/64"]);
    }

    #[test]
    fn specs_split_by_host_ip_family() {
        let options = with_mappings(json!([
            {"hostPort": 8080, "containerPort": 80, "hostIP": "0.0.0.0"},
            {"hostPort": 8443, "containerPort": 443, "hostIP": "::"},
            {"hostPort": 9090, "containerPort": 90}
        ]))
        .unwrap();

        let specs = family_specs(&options, &chained_result(), "eth0");

        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].container_address, "10.244.10.7/24");
        let v4_ports: Vec<u16> = specs[0].mappings.iter().map(|m| m.host_port).collect();
        assert_eq!(v4_ports, [8080, 9090]);
        assert_eq!(specs[1].container_address, "2001:db8::7/64");
        let v6_ports: Vec<u16> = specs[1].mappings.iter().map(|m| m.host_port).collect();
        assert_eq!(v6_ports, [8443, 9090]);
        assert_eq!(specs[0].mark_bit, 13);
        assert!(specs[0].snat);
    }

    #[test]
    fn no_mappings_no_specs() {
        let options = with_mappings(json!([])).unwrap();
        assert!(family_specs(&options, &chained_result(), "eth0").is_empty());
    }
}
