//! The static plugin's `ipam` keys and the per-attachment address requests.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;

use cniwasm_plugin_sdk::cniwasm_types::{Dns, Route, version_at_least};
use cniwasm_plugin_sdk::{CniError, Invocation, PluginConfig, codes};

/// One address of the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticAddress {
    /// Address with prefix length, host bits kept (`10.1.2.5/24`).
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
}

/// The static plugin's options, with the per-attachment requests applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaticConfig {
    pub addresses: Vec<StaticAddress>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

#[derive(Deserialize)]
struct RawIpam {
    #[serde(default)]
    addresses: Vec<RawAddress>,
    #[serde(default)]
    routes: Vec<Route>,
    #[serde(default)]
    dns: Dns,
}

#[derive(Deserialize)]
struct RawAddress {
    address: String,
    gateway: Option<String>,
}

impl StaticConfig {
    /// Reads `ipam` and applies the requests in the reference plugin's order:
    /// `CNI_ARGS` `IP` adds to the configured addresses (and `GATEWAY` sets
    /// the gateway of those containing it), then `args.cni.ips` and after it
    /// `runtimeConfig.ips` each replace the whole list. Errors carry code 7.
    pub fn parse(config: &PluginConfig, inv: &Invocation) -> Result<Self, CniError> {
        let Some(ipam) = config.raw.get("ipam").filter(|ipam| !ipam.is_null()) else {
            return Err(invalid(
                "missing \"ipam\" in network configuration: add the static IPAM section",
            ));
        };
        let raw: RawIpam = serde_json::from_value(ipam.clone())
            .map_err(|error| invalid(format!("invalid \"ipam\" for plugin static: {error}")))?;

        let mut addresses = raw
            .addresses
            .iter()
            .map(configured_address)
            .collect::<Result<Vec<_>, _>>()?;
        addresses.extend(cni_args_addresses(inv)?);
        apply_cni_args_gateways(&mut addresses, inv)?;

        for (origin, value) in [
            ("args.cni.ips", config.cni_args_value("ips")),
            ("runtimeConfig.ips", config.runtime_config.get("ips")),
        ] {
            if let Some(requested) = requested_addresses(origin, value)? {
                addresses = requested;
            }
        }

        check_family_counts(&addresses, &config.cni_version)?;
        validate_routes(&raw.routes)?;
        Ok(Self {
            addresses,
            routes: raw.routes,
            dns: raw.dns,
        })
    }
}

fn configured_address(entry: &RawAddress) -> Result<StaticAddress, CniError> {
    let address = parse_cidr("ipam.addresses", &entry.address)?;
    let gateway = match entry.gateway.as_deref() {
        None | Some("") => None,
        Some(text) => Some(text.parse::<IpAddr>().map_err(|_| {
            invalid(format!(
                "invalid gateway {text:?} for address {:?} in ipam.addresses: expected an IP address",
                entry.address
            ))
        })?),
    };
    Ok(StaticAddress { address, gateway })
}

/// Reads `CNI_ARGS` `IP`, a comma-separated list of addresses in CIDR form.
fn cni_args_addresses(inv: &Invocation) -> Result<Vec<StaticAddress>, CniError> {
    let Some(list) = inv.cni_arg("IP").filter(|list| !list.is_empty()) else {
        return Ok(Vec::new());
    };
    list.split(',')
        .map(|item| {
            Ok(StaticAddress {
                address: parse_cidr("CNI_ARGS IP", item.trim())?,
                gateway: None,
            })
        })
        .collect()
}

/// Applies `CNI_ARGS` `GATEWAY` (comma-separated) to every address whose
/// subnet contains the gateway. A later gateway of the same subnet wins.
fn apply_cni_args_gateways(
    addresses: &mut [StaticAddress],
    inv: &Invocation,
) -> Result<(), CniError> {
    let Some(list) = inv.cni_arg("GATEWAY").filter(|list| !list.is_empty()) else {
        return Ok(());
    };
    for item in list.split(',') {
        let text = item.trim();
        let gateway: IpAddr = text.parse().map_err(|_| {
            invalid(format!(
                "invalid gateway address {text:?} in CNI_ARGS GATEWAY: expected an IP address"
            ))
        })?;
        for address in addresses.iter_mut() {
            if address.address.contains(&gateway) {
                address.gateway = Some(gateway);
            }
        }
    }
    Ok(())
}

/// Reads a list of CIDR addresses from `args.cni.ips` or `runtimeConfig.ips`.
/// Returns `None` when the list is absent or empty, so it replaces nothing.
fn requested_addresses(
    origin: &str,
    value: Option<&Value>,
) -> Result<Option<Vec<StaticAddress>>, CniError> {
    let Some(value) = value.filter(|value| !value.is_null()) else {
        return Ok(None);
    };
    let list: Vec<String> = serde_json::from_value(value.clone()).map_err(|_| {
        invalid(format!(
            "invalid {origin} {value}: expected a list of addresses in CIDR form"
        ))
    })?;
    if list.is_empty() {
        return Ok(None);
    }
    let addresses = list
        .iter()
        .map(|text| {
            Ok(StaticAddress {
                address: parse_cidr(origin, text)?,
                gateway: None,
            })
        })
        .collect::<Result<Vec<_>, CniError>>()?;
    Ok(Some(addresses))
}

/// Versions before 0.3.0 have one `ip4` and one `ip6` field in the result.
fn check_family_counts(addresses: &[StaticAddress], version: &str) -> Result<(), CniError> {
    let ipv4 = addresses
        .iter()
        .filter(|address| address.address.addr().is_ipv4())
        .count();
    let ipv6 = addresses.len() - ipv4;
    if (ipv4 > 1 || ipv6 > 1) && !version_at_least(version, "0.3.0") {
        return Err(invalid(format!(
            "CNI version {version} does not support more than 1 address per family: use cniVersion 0.3.0 or later"
        )));
    }
    Ok(())
}

fn validate_routes(routes: &[Route]) -> Result<(), CniError> {
    for route in routes {
        parse_cidr("ipam.routes dst", &route.dst)?;
        if !route.gw.is_empty() && route.gw.parse::<IpAddr>().is_err() {
            return Err(invalid(format!(
                "invalid gw {:?} of route {:?} in ipam.routes: expected an IP address",
                route.gw, route.dst
            )));
        }
    }
    Ok(())
}

fn parse_cidr(origin: &str, text: &str) -> Result<IpNet, CniError> {
    text.parse().map_err(|_| {
        invalid(format!(
            "invalid address {text:?} in {origin}: expected CIDR form such as 10.1.2.5/24"
        ))
    })
}

fn invalid(message: impl Into<String>) -> CniError {
    CniError::new(codes::INVALID_NETWORK_CONFIG, message)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(value: Value, inv: &Invocation) -> Result<StaticConfig, CniError> {
        let versions: Vec<String> = cniwasm_plugin_sdk::ALL_VERSIONS
            .iter()
            .map(|v| v.to_string())
            .collect();
        let config = PluginConfig::parse(&value.to_string(), &versions).unwrap();
        StaticConfig::parse(&config, inv)
    }

    fn env(args: &[(&str, &str)]) -> Invocation {
        Invocation {
            args: args
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn texts(config: &StaticConfig) -> Vec<String> {
        config
            .addresses
            .iter()
            .map(|address| address.address.to_string())
            .collect()
    }

    #[test]
    fn reads_addresses_routes_dns() {
        let config = parse(
            json!({"cniVersion": "1.0.0", "name": "n", "ipam": {"type": "static",
                "addresses": [{"address": "10.10.0.5/24", "gateway": "10.10.0.1"},
                              {"address": "fd00::5/64"}],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.10.0.254"}],
                "dns": {"nameservers": ["10.10.0.53"], "domain": "example.com"}}}),
            &Invocation::default(),
        )
        .unwrap();
        assert_eq!(texts(&config), ["10.10.0.5/24", "fd00::5/64"]);
        assert_eq!(
            config.addresses[0].gateway,
            Some("10.10.0.1".parse().unwrap())
        );
        assert_eq!(config.addresses[1].gateway, None);
        assert_eq!(config.routes[1].gw, "10.10.0.254");
        assert_eq!(config.dns.domain, "example.com");
    }

    #[test]
    fn missing_ipam_is_code_7() {
        let error = parse(
            json!({"cniVersion": "1.0.0", "name": "n"}),
            &Invocation::default(),
        )
        .unwrap_err();
        assert_eq!(error.code, 7);
        assert!(error.msg.contains("\"ipam\""));
    }

    #[test]
    fn address_without_prefix_rejected() {
        let error = parse(
            json!({"cniVersion": "1.0.0", "name": "n", "ipam": {"type": "static",
                "addresses": [{"address": "10.10.0.5"}]}}),
            &Invocation::default(),
        )
        .unwrap_err();
        assert_eq!(error.code, 7);
        assert!(error.msg.contains("10.10.0.5"));
    }

    #[test]
    fn cni_args_ip_appends_and_gateway_applies() {
        let config = parse(
            json!({"cniVersion": "1.0.0", "name": "n", "ipam": {"type": "static",
                "addresses": [{"address": "10.10.0.5/24"}]}}),
            &env(&[
                ("IP", "10.20.0.5/24,fd00::9/64"),
                ("GATEWAY", "10.20.0.1,10.10.0.1"),
            ]),
        )
        .unwrap();
        assert_eq!(
            texts(&config),
            ["10.10.0.5/24", "10.20.0.5/24", "fd00::9/64"]
        );
        assert_eq!(
            config.addresses[0].gateway,
            Some("10.10.0.1".parse().unwrap())
        );
        assert_eq!(
            config.addresses[1].gateway,
            Some("10.20.0.1".parse().unwrap())
        );
        assert_eq!(config.addresses[2].gateway, None);
    }

    #[test]
    fn bad_cni_args_gateway_rejected() {
        let error = parse(
            json!({"cniVersion": "1.0.0", "name": "n", "ipam": {"type": "static"}}),
            &env(&[("IP", "10.20.0.5/24"), ("GATEWAY", "nope")]),
        )
        .unwrap_err();
        assert_eq!(error.code, 7);
        assert!(error.msg.contains("\"nope\""));
    }

    #[test]
    fn runtime_config_replaces_args_and_config() {
        let config = parse(
            json!({"cniVersion": "1.0.0", "name": "n",
                "ipam": {"type": "static", "addresses": [{"address": "10.10.0.5/24", "gateway": "10.10.0.1"}]},
                "args": {"cni": {"ips": ["10.30.0.5/24"]}},
                "runtimeConfig": {"ips": ["10.40.0.5/24"]}}),
            &Invocation::default(),
        )
        .unwrap();
        assert_eq!(texts(&config), ["10.40.0.5/24"]);
        assert_eq!(config.addresses[0].gateway, None);
    }

    #[test]
    fn args_cni_replaces_config() {
        let config = parse(
            json!({"cniVersion": "1.0.0", "name": "n",
                "ipam": {"type": "static", "addresses": [{"address": "10.10.0.5/24"}]},
                "args": {"cni": {"ips": ["10.30.0.5/24"]}}}),
            &Invocation::default(),
        )
        .unwrap();
        assert_eq!(texts(&config), ["10.30.0.5/24"]);
    }

    #[test]
    fn two_ipv4_rejected_before_0_3_0() {
        let ipam = json!({"type": "static",
            "addresses": [{"address": "10.10.0.5/24"}, {"address": "10.11.0.5/24"}]});
        let error = parse(
            json!({"cniVersion": "0.2.0", "name": "n", "ipam": ipam}),
            &Invocation::default(),
        )
        .unwrap_err();
        assert_eq!(error.code, 7);
        assert!(
            parse(
                json!({"cniVersion": "0.3.0", "name": "n", "ipam": ipam}),
                &Invocation::default()
            )
            .is_ok()
        );
    }

    #[test]
    fn bad_route_rejected() {
        let error = parse(
            json!({"cniVersion": "1.0.0", "name": "n", "ipam": {"type": "static",
                "routes": [{"dst": "default"}]}}),
            &Invocation::default(),
        )
        .unwrap_err();
        assert_eq!(error.code, 7);
    }
}
