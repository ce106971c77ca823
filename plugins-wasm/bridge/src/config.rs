//! The bridge plugin's configuration keys.

use serde::Deserialize;
use serde_json::Value;

use cniwasm_plugin_sdk::{CniError, Invocation, PluginConfig, codes};

/// The bridge plugin's options, with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    /// Bridge name; `cni0` when absent.
    pub bridge: String,
    /// Put the gateway address on the bridge; implied by `is_default_gateway`.
    pub is_gateway: bool,
    pub is_default_gateway: bool,
    pub ip_masq: bool,
    /// MTU in bytes for a new bridge and both veth ends; `None` keeps the
    /// kernel default.
    pub mtu: Option<u32>,
    pub hairpin_mode: bool,
    pub promisc_mode: bool,
    /// Replace a different IPv4 (or overlapping IPv6) address on the bridge
    /// instead of failing.
    pub force_address: bool,
    /// MAC for the container end, from `runtimeConfig.mac`, `args.cni.mac` or
    /// `CNI_ARGS` `MAC`, in that order of precedence.
    pub mac: Option<String>,
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
    vlan_trunk: Vec<Value>,
    #[serde(default)]
    macspoofchk: bool,
}

impl BridgeConfig {
    /// Reads the options. Errors carry code 7, or code 2 for keys of the
    /// reference plugin that this one does not implement.
    pub fn parse(config: &PluginConfig, inv: &Invocation) -> Result<Self, CniError> {
        let raw: RawConfig = config.options()?;

        if raw.hairpin_mode && raw.promisc_mode {
            return Err(CniError::new(
                codes::INVALID_NETWORK_CONFIG,
                "cannot set hairpinMode and promiscMode at the same time: choose one",
            ));
        }
        // TODO: the host API has no bridge-port VLAN or MAC spoof-check
        // calls yet, so these keys are rejected instead of ignored.
        if raw.vlan != 0 || !raw.vlan_trunk.is_empty() {
            return Err(unsupported(format!(
                "vlan {} / vlanTrunk {:?} are not supported by this bridge plugin: remove them",
                raw.vlan, raw.vlan_trunk
            )));
        }
        if raw.macspoofchk {
            return Err(unsupported(
                "macspoofchk true is not supported by this bridge plugin: remove it",
            ));
        }

        let name = raw.bridge.filter(|name| !name.is_empty());
        Ok(Self {
            bridge: name.unwrap_or_else(|| "cni0".to_string()),
            is_gateway: raw.is_gateway || raw.is_default_gateway,
            is_default_gateway: raw.is_default_gateway,
            ip_masq: raw.ip_masq,
            mtu: (raw.mtu != 0).then_some(raw.mtu),
            hairpin_mode: raw.hairpin_mode,
            promisc_mode: raw.promisc_mode,
            force_address: raw.force_address,
            mac: requested_mac(config, inv),
        })
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

fn unsupported(message: impl Into<String>) -> CniError {
    CniError::new(codes::UNSUPPORTED_FIELD, message)
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
    fn vlan_rejected_as_unsupported() {
        let error = parse(
            json!({"cniVersion": "1.0.0", "name": "n", "vlan": 100}),
            &Invocation::default(),
        )
        .unwrap_err();
        assert_eq!(error.code, 2);
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
