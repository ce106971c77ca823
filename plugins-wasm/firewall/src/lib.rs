//! firewall: a chained plugin that lets the container's forwarded traffic
//! through the host's filter table, as the reference firewall plugin's
//! iptables backend does. The host builds the rules from the addresses of
//! `prevResult` and the admin chain's name; the plugin passes the result on.

use serde::Deserialize;

use cniwasm_plugin_sdk::cniwasm_types;
use cniwasm_plugin_sdk::filter::{self, ForwardSpec};
use cniwasm_plugin_sdk::{
    AddOutput, CniError, HostResultExt, Invocation, Plugin, PluginConfig, codes,
};

/// The admin chain of the reference plugin when `iptablesAdminChainName`
/// is absent.
pub const DEFAULT_ADMIN_CHAIN: &str = "CNI-ADMIN";

/// The firewall plugin.
pub struct Firewall;

impl Plugin for Firewall {
    /// Returns 0.4.0 to 1.1.0. The reference plugin stops at 1.0.0, and
    /// 1.1.0 adds only STATUS and GC, which succeed here.
    fn supported_versions() -> Vec<String> {
        ["0.4.0", "1.0.0", "1.1.0"].map(String::from).to_vec()
    }

    fn add(_inv: &Invocation, config: &PluginConfig) -> Result<AddOutput, CniError> {
        let options = FirewallConfig::parse(config)?;
        let prev = config
            .prev_result
            .as_ref()
            .ok_or_else(missing_prev_result)?;

        let spec = options.spec(prev);
        if !spec.addresses.is_empty() {
            filter::add_forward_rules(&spec).context(&format!(
                "failed to add forward rules for {}",
                spec.addresses.join(", ")
            ))?;
        }
        Ok(AddOutput::Result(prev.clone()))
    }

    /// Removes the accept rules of the result's addresses. Without a
    /// `prevResult` there is nothing to remove, as in the reference plugin.
    fn del(_inv: &Invocation, config: &PluginConfig) -> Result<(), CniError> {
        FirewallConfig::parse(config)?;
        let Some(prev) = config.prev_result.as_ref() else {
            return Ok(());
        };

        let addresses = result_addresses(prev);
        if addresses.is_empty() {
            return Ok(());
        }
        filter::remove_forward_rules(&addresses).context(&format!(
            "failed to remove forward rules for {}",
            addresses.join(", ")
        ))
    }

    fn check(_inv: &Invocation, config: &PluginConfig) -> Result<(), CniError> {
        let options = FirewallConfig::parse(config)?;
        let prev = config
            .prev_result
            .as_ref()
            .ok_or_else(missing_prev_result)?;

        let spec = options.spec(prev);
        if spec.addresses.is_empty() {
            return Ok(());
        }
        filter::check_forward_rules(&spec).context(&format!(
            "forward rules for {} do not match the configuration",
            spec.addresses.join(", ")
        ))
    }
}

cniwasm_plugin_sdk::export_plugin!(Firewall);

fn missing_prev_result() -> CniError {
    CniError::new(
        codes::INVALID_NETWORK_CONFIG,
        "missing prevResult from earlier plugin: chain firewall after a plugin that assigns addresses, such as bridge or ptp",
    )
}

/// Returns the addresses of every IP entry of the result, in CIDR form, as the
/// reference plugin takes them (whatever interface they name).
pub fn result_addresses(prev: &cniwasm_types::Result) -> Vec<String> {
    prev.ips.iter().map(|ip| ip.address.clone()).collect()
}

/// The plugin's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallConfig {
    pub admin_chain: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawOptions {
    backend: Option<String>,
    iptables_admin_chain_name: Option<String>,
    ingress_policy: Option<String>,
}

impl FirewallConfig {
    /// Reads `backend` (only `iptables`), `iptablesAdminChainName` (default
    /// `CNI-ADMIN`) and `ingressPolicy` (only `none`).
    pub fn parse(config: &PluginConfig) -> Result<Self, CniError> {
        let raw: RawOptions = config.options()?;

        check_choice(&Choice {
            key: "backend",
            value: raw.backend.as_deref(),
            accepted: &["", "iptables"],
            unsupported: "firewalld",
            fix: "set backend to \"iptables\" or remove it",
        })?;
        check_choice(&Choice {
            key: "ingressPolicy",
            value: raw.ingress_policy.as_deref(),
            accepted: &["", "none"],
            unsupported: "same-bridge",
            fix: "set ingressPolicy to \"none\" or remove it",
        })?;

        let admin_chain = raw
            .iptables_admin_chain_name
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| DEFAULT_ADMIN_CHAIN.to_string());
        Ok(Self { admin_chain })
    }

    /// Builds the host request for the result's addresses.
    pub fn spec(&self, prev: &cniwasm_types::Result) -> ForwardSpec {
        ForwardSpec {
            addresses: result_addresses(prev),
            admin_chain: self.admin_chain.clone(),
        }
    }
}

/// A string option of the reference plugin and the values this plugin
/// takes.
struct Choice<'a> {
    key: &'a str,
    /// `None` when the option is absent.
    value: Option<&'a str>,
    accepted: &'a [&'a str],
    /// The value the reference plugin takes but this plugin cannot serve.
    unsupported: &'a str,
    /// The remedy the error message names.
    fix: &'a str,
}

/// Accepts an absent or accepted value. The unsupported one fails with
/// code 2, any other with code 7.
fn check_choice(choice: &Choice<'_>) -> Result<(), CniError> {
    let Some(value) = choice.value else {
        return Ok(());
    };
    if choice.accepted.contains(&value) {
        return Ok(());
    }

    let key = choice.key;
    let fix = choice.fix;
    if value == choice.unsupported {
        let message = format!(
            "{key} {value:?} is not supported by this firewall plugin, whose host builds iptables rules only: {fix}"
        );
        return Err(CniError::new(codes::UNSUPPORTED_FIELD, message));
    }
    let message = format!("invalid {key} {value:?}: {fix}");
    Err(CniError::new(codes::INVALID_NETWORK_CONFIG, message))
}

#[cfg(test)]
mod tests {
    use cniwasm_types::IpConfig;
    use serde_json::{Value, json};

    use super::*;

    fn parse(options: Value) -> Result<FirewallConfig, CniError> {
        let mut value = json!({"cniVersion": "1.0.0", "name": "n", "type": "firewall"});
        for (key, option) in options.as_object().unwrap() {
            value[key] = option.clone();
        }
        let versions = Firewall::supported_versions();
        FirewallConfig::parse(&PluginConfig::parse(&value.to_string(), &versions).unwrap())
    }

    #[test]
    fn admin_chain_default() {
        assert_eq!(parse(json!({})).unwrap().admin_chain, "CNI-ADMIN");
        let named = parse(json!({"iptablesAdminChainName": "MYADMIN"})).unwrap();
        assert_eq!(named.admin_chain, "MYADMIN");
    }

    #[test]
    fn unsupported_options_rejected() {
        let cases = [
            (json!({"backend": "firewalld"}), 2, "firewalld"),
            (json!({"backend": "pf"}), 7, "\"pf\""),
            (json!({"ingressPolicy": "same-bridge"}), 2, "same-bridge"),
            (json!({"ingressPolicy": "bogus"}), 7, "\"bogus\""),
        ];
        for (options, code, needle) in cases {
            let error = parse(options.clone()).unwrap_err();
            assert_eq!(error.code, code, "{options}");
            assert!(error.msg.contains(needle), "{options}: {}", error.msg);
        }
        assert!(parse(json!({"backend": "iptables", "ingressPolicy": "none"})).is_ok());
    }

    #[test]
    fn spec_takes_every_address() {
        let prev = cniwasm_types::Result {
            ips: ["10.99.0.2/24", "fd99::2/64"]
                .map(|address| IpConfig {
                    interface: Some(2),
                    address: address.into(),
                    gateway: String::new(),
                })
                .to_vec(),
            ..Default::default()
        };

        let spec = parse(json!({})).unwrap().spec(&prev);

        assert_eq!(spec.addresses, ["10.99.0.2/24", "fd99::2/64"]);
        assert_eq!(spec.admin_chain, "CNI-ADMIN");
    }
}
