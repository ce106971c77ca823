//! static: an IPAM plugin that returns the addresses, routes and DNS settings
//! written in its configuration (or requested per attachment). It keeps no
//! state, so DEL has nothing to release.

mod config;

use cniwasm_plugin_sdk::cniwasm_types::{self, IpConfig};
use cniwasm_plugin_sdk::{AddOutput, CniError, Invocation, Plugin, PluginConfig, codes};

use crate::config::{StaticAddress, StaticConfig};

/// The static IPAM plugin.
pub struct Static;

impl Plugin for Static {
    fn add(inv: &Invocation, config: &PluginConfig) -> Result<AddOutput, CniError> {
        let options = StaticConfig::parse(config, inv)?;
        Ok(AddOutput::Result(build_result(&options)))
    }

    /// Parses the configuration so that a broken one still fails, and
    /// succeeds otherwise: nothing was reserved.
    fn del(inv: &Invocation, config: &PluginConfig) -> Result<(), CniError> {
        StaticConfig::parse(config, inv).map(|_| ())
    }

    fn check(inv: &Invocation, config: &PluginConfig) -> Result<(), CniError> {
        let options = StaticConfig::parse(config, inv)?;
        let Some(prev) = config.prev_result.as_ref() else {
            return Err(CniError::new(
                codes::INVALID_NETWORK_CONFIG,
                "required prevResult missing: CHECK needs the result of ADD",
            ));
        };
        check_addresses(&options.addresses, prev, &inv.ifname)
    }
}

cniwasm_plugin_sdk::export_plugin!(Static);

/// Builds the IPAM result: every address with its gateway, then the
/// configured routes and DNS settings.
fn build_result(options: &StaticConfig) -> cniwasm_types::Result {
    let ips = options
        .addresses
        .iter()
        .map(|address| IpConfig {
            interface: None,
            address: address.address.to_string(),
            gateway: address
                .gateway
                .map(|gateway| gateway.to_string())
                .unwrap_or_default(),
        })
        .collect();

    cniwasm_types::Result {
        ips,
        routes: options.routes.clone(),
        dns: options.dns.clone(),
        ..Default::default()
    }
}

/// Checks that each configured address is in `prev` with the configured
/// gateway, when one is configured. An address missing from `prev` is not an
/// error, as in the reference plugin, whose CHECK compares only the addresses
/// it finds.
fn check_addresses(
    expected: &[StaticAddress],
    prev: &cniwasm_types::Result,
    ifname: &str,
) -> Result<(), CniError> {
    for address in expected {
        let found = prev.ips.iter().find(|ip| {
            ip.address
                .parse::<ipnet::IpNet>()
                .is_ok_and(|net| net.addr() == address.address.addr())
        });
        let (Some(found), Some(gateway)) = (found, address.gateway) else {
            continue;
        };
        if found.gateway.parse::<std::net::IpAddr>().ok() != Some(gateway) {
            return Err(CniError::new(
                codes::INTERNAL,
                format!(
                    "static: failed to match address {} with gateway {gateway} on interface {ifname:?}: prevResult has gateway {:?}",
                    address.address, found.gateway
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(text: &str, gateway: Option<&str>) -> StaticAddress {
        StaticAddress {
            address: text.parse().unwrap(),
            gateway: gateway.map(|gateway| gateway.parse().unwrap()),
        }
    }

    fn prev(address: &str, gateway: &str) -> cniwasm_types::Result {
        cniwasm_types::Result {
            ips: vec![IpConfig {
                interface: Some(2),
                address: address.into(),
                gateway: gateway.into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn result_keeps_host_bits_and_gateway() {
        let options = StaticConfig {
            addresses: vec![address("10.9.0.5/24", Some("10.9.0.1"))],
            ..Default::default()
        };
        let result = build_result(&options);
        assert_eq!(result.ips[0].address, "10.9.0.5/24");
        assert_eq!(result.ips[0].gateway, "10.9.0.1");
        assert_eq!(result.ips[0].interface, None);
    }

    #[test]
    fn check_accepts_matching_gateway() {
        let expected = [address("10.9.0.5/24", Some("10.9.0.1"))];
        assert!(check_addresses(&expected, &prev("10.9.0.5/24", "10.9.0.1"), "eth0").is_ok());
    }

    #[test]
    fn check_rejects_other_gateway() {
        let expected = [address("10.9.0.5/24", Some("10.9.0.1"))];
        let error =
            check_addresses(&expected, &prev("10.9.0.5/24", "10.9.0.254"), "eth0").unwrap_err();
        assert!(error.msg.contains("10.9.0.5/24"), "{}", error.msg);
    }

    #[test]
    fn check_ignores_gateway_when_unset() {
        let expected = [address("10.9.0.5/24", None)];
        assert!(check_addresses(&expected, &prev("10.9.0.5/24", "10.9.0.254"), "eth0").is_ok());
    }
}
