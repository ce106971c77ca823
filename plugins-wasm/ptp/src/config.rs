//! The ptp plugin's configuration keys.

use serde::Deserialize;

use cniwasm_plugin_sdk::{CniError, PluginConfig, codes};

/// The ptp plugin's options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PtpConfig {
    /// Masquerade traffic from the container's addresses leaving their subnet.
    pub ip_masq: bool,
    /// MTU in bytes for both veth ends, or `None` for the kernel default.
    pub mtu: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    ip_masq: bool,
    #[serde(default)]
    mtu: u32,
}

impl PtpConfig {
    /// Reads the options. Errors carry code 7.
    pub fn parse(config: &PluginConfig) -> Result<Self, CniError> {
        let raw: RawConfig = config.options()?;
        Ok(Self {
            ip_masq: raw.ip_masq,
            mtu: (raw.mtu != 0).then_some(raw.mtu),
        })
    }

    /// Like [`parse`](Self::parse), and also requires an `ipam` section:
    /// ptp has no layer-2 mode, every container address needs a gateway.
    pub fn parse_with_ipam(config: &PluginConfig) -> Result<Self, CniError> {
        let options = Self::parse(config)?;
        if config.ipam_type().is_none() {
            return Err(CniError::new(
                codes::INVALID_NETWORK_CONFIG,
                "missing \"ipam\" with a \"type\" in network configuration: ptp needs an IPAM plugin such as host-local",
            ));
        }
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn config(value: Value) -> PluginConfig {
        let versions: Vec<String> = cniwasm_plugin_sdk::ALL_VERSIONS
            .iter()
            .map(|v| v.to_string())
            .collect();
        PluginConfig::parse(&value.to_string(), &versions).unwrap()
    }

    #[test]
    fn defaults() {
        let options =
            PtpConfig::parse(&config(json!({"cniVersion": "1.0.0", "name": "n"}))).unwrap();
        assert_eq!(options, PtpConfig::default());
    }

    #[test]
    fn reads_ip_masq_and_mtu() {
        let options = PtpConfig::parse(&config(
            json!({"cniVersion": "1.0.0", "name": "n", "ipMasq": true, "mtu": 1400}),
        ))
        .unwrap();
        assert!(options.ip_masq);
        assert_eq!(options.mtu, Some(1400));
    }

    #[test]
    fn bad_mtu_is_code_7() {
        let error = PtpConfig::parse(&config(
            json!({"cniVersion": "1.0.0", "name": "n", "mtu": "large"}),
        ))
        .unwrap_err();
        assert_eq!(error.code, 7);
    }

    #[test]
    fn ipam_required_for_add() {
        let error = PtpConfig::parse_with_ipam(&config(
            json!({"cniVersion": "1.0.0", "name": "n", "type": "ptp"}),
        ))
        .unwrap_err();
        assert_eq!(error.code, 7);
        assert!(error.msg.contains("\"ipam\""));
    }
}
