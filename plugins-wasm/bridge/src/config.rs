//! The bridge plugin's configuration keys.

use serde::Deserialize;
use serde_json::Value;

use cniwasm_plugin_sdk::{CniError, Invocation, PluginConfig, codes};

use crate::vlan::{RawTrunk, RawVlan, VlanConfig};

/// The bridge plugin's options, with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    /// Bridge name; `cni0` when absent.
    pub bridge: String,
    /// Put the gateway addresses on the bridge, or with a `vlan` on the
    /// link `<bridge>.<vlan>`. `is_default_gateway` implies it.
    pub is_gateway: bool,
    pub is_default_gateway: bool,
    pub ip_masq: bool,
    /// The rules that masquerade with `ipMasq` (`ipMasqBackend`).
    pub ip_masq_backend: MasqueradeBackend,
    /// MTU in bytes for a new bridge and both veth ends; `None` keeps the
    /// kernel default.
    pub mtu: Option<u32>,
    pub hairpin_mode: bool,
    pub promisc_mode: bool,
    /// Whether the host end gets the bridge-port isolated flag.
    pub port_isolation: bool,
    /// Whether the container end runs IPv6 duplicate address detection
    /// (`accept_dad` and `enhanced_dad` 1) instead of skipping it.
    pub enable_dad: bool,
    /// Replace a different IPv4 (or overlapping IPv6) address on the bridge
    /// instead of failing.
    pub force_address: bool,
    /// MAC for the container end, from `runtimeConfig.mac`, `args.cni.mac` or
    /// `CNI_ARGS` `MAC`, in that order of precedence.
    pub mac: Option<String>,
    /// Whether the container end stays down, which is valid only without IPAM.
    pub disable_container_interface: bool,
    /// Whether frames from the container with a source MAC other than its
    /// interface's are dropped on the bridge (`macspoofchk`).
    pub mac_spoof_check: bool,
    /// The host port's VLANs.
    pub vlan: VlanConfig,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    bridge: Option<String>,
    #[serde(default)]
    is_gateway: bool,
    #[serde(default)]
    is_default_gateway: bool,
    #[serde(default)]
    ip_masq: bool,
    #[serde(default)]
    mtu: u32,
    #[serde(default)]
    hairpin_mode: bool,
    #[serde(default)]
    promisc_mode: bool,
    #[serde(default)]
    force_address: bool,
    #[serde(default)]
    vlan: i64,
    #[serde(default)]
    vlan_trunk: Vec<RawTrunk>,
    #[serde(default)]
    macspoofchk: bool,
    #[serde(default)]
    disable_container_interface: bool,
    #[serde(default)]
    port_isolation: bool,
    #[serde(default, rename = "enabledad")]
    enable_dad: bool,
    /// False by default, as cni-spec.md 6.1 gives it: VLAN 1 is removed
    /// from a port that gets `vlan` or `vlanTrunk`.
    #[serde(default, rename = "preserveDefaultVlan")]
    preserve_default_vlan: bool,
    ip_masq_backend: Option<String>,
}

impl BridgeConfig {
    /// Reads the options. Errors carry code 7, or code 999 for `vlan` and
    /// `vlanTrunk`, as the reference's do.
    pub fn parse(config: &PluginConfig, inv: &Invocation) -> Result<Self, CniError> {
        let raw: RawConfig = config.options()?;

        if raw.hairpin_mode && raw.promisc_mode {
            return Err(CniError::new(
                codes::INVALID_NETWORK_CONFIG,
                "cannot set hairpinMode and promiscMode at the same time: choose one",
            ));
        }
        let vlan = VlanConfig::parse(&RawVlan {
            vlan: raw.vlan,
            trunk: &raw.vlan_trunk,
            preserve_default: raw.preserve_default_vlan,
        })?;
        let ip_masq_backend = masquerade_backend(raw.ip_masq_backend.as_deref())?;

        let name = raw.bridge.filter(|name| !name.is_empty());
        Ok(Self {
            bridge: name.unwrap_or_else(|| "cni0".to_string()),
            is_gateway: raw.is_gateway || raw.is_default_gateway,
            is_default_gateway: raw.is_default_gateway,
            ip_masq: raw.ip_masq,
            ip_masq_backend,
            mtu: (raw.mtu != 0).then_some(raw.mtu),
            hairpin_mode: raw.hairpin_mode,
            promisc_mode: raw.promisc_mode,
            port_isolation: raw.port_isolation,
            enable_dad: raw.enable_dad,
            force_address: raw.force_address,
            mac: requested_mac(config, inv),
            disable_container_interface: raw.disable_container_interface,
            mac_spoof_check: raw.macspoofchk,
            vlan,
        })
    }

    /// Rejects what only ADD cares about, so that DEL and CHECK still run
    /// on a configuration that ADD refuses.
    pub fn validate_for_add(&self, config: &PluginConfig) -> Result<(), CniError> {
        if let Some(ipam) = config
            .ipam_type()
            .filter(|_| self.disable_container_interface)
        {
            return Err(CniError::new(
                codes::INVALID_NETWORK_CONFIG,
                format!(
                    "disableContainerInterface true leaves the container interface down, so IPAM {ipam:?} cannot configure it: remove ipam or disableContainerInterface"
                ),
            ));
        }
        Ok(())
    }
}

/// The rules that masquerade a container's traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MasqueradeBackend {
    /// A chain per container in the nat table, the reference's default.
    #[default]
    Iptables,
    /// Rules in table `inet cni_plugins_masquerade`.
    Nftables,
}

/// Reads `ipMasqBackend`: absent is iptables, the reference's default
/// where iptables is installed.
fn masquerade_backend(backend: Option<&str>) -> Result<MasqueradeBackend, CniError> {
    match backend {
        None | Some("iptables") => Ok(MasqueradeBackend::Iptables),
        Some("nftables") => Ok(MasqueradeBackend::Nftables),
        Some(other) => Err(CniError::new(
            codes::INVALID_NETWORK_CONFIG,
            format!(
                "invalid ipMasqBackend {other:?}: use \"iptables\" or \"nftables\", or remove the key"
            ),
        )),
    }
}

fn requested_mac(config: &PluginConfig, inv: &Invocation) -> Option<String> {
    let from_runtime = config.runtime_config.get("mac").and_then(Value::as_str);
    let from_args = config.cni_args_value("mac").and_then(Value::as_str);
    let from_env = inv.cni_arg("MAC");
    from_runtime
        .or(from_args)
        .or(from_env)
        .filter(|mac| !mac.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(value: Value, inv: &Invocation) -> Result<BridgeConfig, CniError> {
        let versions: Vec<String> = cniwasm_plugin_sdk::ALL_VERSIONS
            .iter()
            .map(|v| v.to_string())
            .collect();
        let config = PluginConfig::parse(&value.to_string(), &versions).unwrap();
        BridgeConfig::parse(&config, inv)
    }

    #[test]
    fn defaults() {
        let config = parse(
            json!({"cniVersion": "1.0.0", "name": "n"}),
            &Invocation::default(),
        )
        .unwrap();
        assert_eq!(config.bridge, "cni0");
        assert!(!config.is_gateway);
        assert_eq!(config.mtu, None);
        assert_eq!(config.mac, None);
        assert!(!config.force_address);
        assert!(!config.disable_container_interface);
    }

    #[test]
    fn default_gateway_implies_gateway() {
        let config = parse(
            json!({"cniVersion": "1.0.0", "name": "n", "bridge": "br9", "isDefaultGateway": true, "mtu": 1400}),
            &Invocation::default(),
        )
        .unwrap();
        assert_eq!(config.bridge, "br9");
        assert!(config.is_gateway);
        assert_eq!(config.mtu, Some(1400));
    }

    #[test]
    fn hairpin_with_promisc_rejected() {
        let error = parse(
            json!({"cniVersion": "1.0.0", "name": "n", "hairpinMode": true, "promiscMode": true}),
            &Invocation::default(),
        )
        .unwrap_err();
        assert_eq!(error.code, 7);
    }

    #[test]
    fn vlan_read() {
        let config = parse(
            json!({"cniVersion": "1.0.0", "name": "n", "vlan": 100, "preserveDefaultVlan": true,
                "vlanTrunk": [{"id": 101}]}),
            &Invocation::default(),
        )
        .unwrap();
        assert_eq!(config.vlan.vlan, 100);
        assert_eq!(config.vlan.trunk.len(), 1);
        assert!(config.vlan.preserve_default);
    }

    #[test]
    fn vlan_errors_keep_reference_code() {
        let error = with_keys(json!({"vlan": 4095})).unwrap_err();
        assert_eq!(error.code, 999);
        assert_eq!(
            error.msg,
            "invalid VLAN ID 4095 (must be between 0 and 4094)"
        );

        let error = with_keys(json!({"vlanTrunk": [{"id": 0}]})).unwrap_err();
        assert_eq!(error.code, 999);
        assert_eq!(with_keys(json!({"vlan": "abc"})).unwrap_err().code, 7);
    }

    #[test]
    fn vlan_gateway_accepted() {
        for gateway in ["isGateway", "isDefaultGateway"] {
            let config = with_keys(json!({"vlan": 100, gateway: true})).unwrap();
            assert!(config.is_gateway, "{gateway}");
            assert_eq!(config.vlan.vlan, 100, "{gateway}");
        }
        let trunk = with_keys(json!({"vlanTrunk": [{"id": 5}], "isGateway": true})).unwrap();
        assert!(trunk.is_gateway);
        assert_eq!(trunk.vlan.vlan, 0);
    }

    /// Parses a 1.0.0 configuration with `keys` and no CNI_ARGS.
    fn with_keys(keys: Value) -> Result<BridgeConfig, CniError> {
        let mut value = json!({"cniVersion": "1.0.0", "name": "n"});
        for (key, option) in keys.as_object().unwrap() {
            value[key] = option.clone();
        }
        parse(value, &Invocation::default())
    }

    #[test]
    fn port_isolation_read() {
        assert!(
            with_keys(json!({"portIsolation": true}))
                .unwrap()
                .port_isolation
        );
        assert!(!with_keys(json!({})).unwrap().port_isolation);
        let error = with_keys(json!({"portIsolation": "yes"})).unwrap_err();
        assert_eq!(error.code, 7);
    }

    #[test]
    fn macspoofchk_read() {
        assert!(
            with_keys(json!({"macspoofchk": true}))
                .unwrap()
                .mac_spoof_check
        );
        assert!(!with_keys(json!({})).unwrap().mac_spoof_check);
        let error = with_keys(json!({"macspoofchk": "yes"})).unwrap_err();
        assert_eq!(error.code, 7);
    }

    #[test]
    fn enabledad_read() {
        assert!(with_keys(json!({"enabledad": true})).unwrap().enable_dad);
        assert!(!with_keys(json!({})).unwrap().enable_dad);
    }

    #[test]
    fn masquerade_backend_values() {
        let with = |backend: &str| with_keys(json!({"ipMasq": true, "ipMasqBackend": backend}));
        assert_eq!(
            with("iptables").unwrap().ip_masq_backend,
            MasqueradeBackend::Iptables
        );
        assert_eq!(
            with("nftables").unwrap().ip_masq_backend,
            MasqueradeBackend::Nftables
        );
        assert_eq!(
            with_keys(json!({"ipMasq": true})).unwrap().ip_masq_backend,
            MasqueradeBackend::Iptables
        );

        let error = with("ebtables").unwrap_err();
        assert_eq!(error.code, 7);
        assert!(error.msg.contains("\"ebtables\""), "{}", error.msg);
    }

    #[test]
    fn preserve_default_vlan_defaults_false() {
        assert!(!with_keys(json!({})).unwrap().vlan.preserve_default);
        let error = with_keys(json!({"preserveDefaultVlan": "no"})).unwrap_err();
        assert_eq!(error.code, 7);
    }

    #[test]
    fn disabled_interface_rejects_ipam() {
        let value = json!({"cniVersion": "1.0.0", "name": "n", "disableContainerInterface": true,
            "ipam": {"type": "host-local"}});
        let versions = vec!["1.0.0".to_string()];
        let config = PluginConfig::parse(&value.to_string(), &versions).unwrap();
        let options = BridgeConfig::parse(&config, &Invocation::default()).unwrap();
        let error = options.validate_for_add(&config).unwrap_err();
        assert_eq!(error.code, 7);
        assert!(error.msg.contains("host-local"), "{}", error.msg);

        let layer2 = json!({"cniVersion": "1.0.0", "name": "n", "disableContainerInterface": true});
        let config = PluginConfig::parse(&layer2.to_string(), &versions).unwrap();
        let options = BridgeConfig::parse(&config, &Invocation::default()).unwrap();
        assert!(options.disable_container_interface);
        assert!(options.validate_for_add(&config).is_ok());
    }

    #[test]
    fn mac_precedence() {
        let inv = Invocation {
            args: vec![("MAC".into(), "c2:00:00:00:00:03".into())],
            ..Default::default()
        };
        let all = json!({"cniVersion": "1.0.0", "name": "n",
            "runtimeConfig": {"mac": "c2:00:00:00:00:01"},
            "args": {"cni": {"mac": "c2:00:00:00:00:02"}}});
        assert_eq!(
            parse(all, &inv).unwrap().mac.as_deref(),
            Some("c2:00:00:00:00:01")
        );

        let args_only = json!({"cniVersion": "1.0.0", "name": "n",
            "args": {"cni": {"mac": "c2:00:00:00:00:02"}}});
        assert_eq!(
            parse(args_only, &inv).unwrap().mac.as_deref(),
            Some("c2:00:00:00:00:02")
        );

        let env_only = json!({"cniVersion": "1.0.0", "name": "n"});
        assert_eq!(
            parse(env_only, &inv).unwrap().mac.as_deref(),
            Some("c2:00:00:00:00:03")
        );
    }
}
