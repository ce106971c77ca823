//! The `ipam` section of a host-local configuration.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;

use cniwasm_plugin_sdk::cniwasm_types::{Route, version_at_least};
use cniwasm_plugin_sdk::{CniError, Invocation, PluginConfig, codes};

use crate::range::{Range, RangeSet, RangeSpec, is_ipv6_set, validate_set, validate_sets};

/// The parsed and canonicalised IPAM configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct IpamConfig {
    /// Range sets in allocation order; each yields one address.
    pub range_sets: Vec<RangeSet>,
    /// Routes copied into the result.
    pub routes: Vec<Route>,
    /// Addresses requested for this attachment, without prefix length.
    pub requested: Vec<IpAddr>,
    /// Absolute path of the resolv.conf whose settings become the result's
    /// `dns`; an empty `resolvConf` counts as absent, as in the reference.
    pub resolv_conf: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRange {
    subnet: Option<String>,
    range_start: Option<String>,
    range_end: Option<String>,
    gateway: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawIpam {
    #[serde(flatten)]
    legacy: RawRange,
    #[serde(default)]
    ranges: Vec<Vec<RawRange>>,
    #[serde(default)]
    routes: Vec<Route>,
    /// The host opens `<dataDir>/<network>` and preopens it at `/state`.
    #[allow(dead_code, reason = "read by the host, accepted here")]
    data_dir: Option<String>,
    resolv_conf: Option<String>,
}

impl IpamConfig {
    /// Reads `ipam`, `runtimeConfig.ipRanges`, `runtimeConfig.ips`,
    /// `args.cni.ips` and the `IP` key of `CNI_ARGS`. Errors carry code 7.
    pub fn parse(config: &PluginConfig, inv: &Invocation) -> Result<Self, CniError> {
        let ipam_value = config.raw.get("ipam").cloned().unwrap_or(Value::Null);
        if !ipam_value.is_object() {
            return Err(invalid("missing \"ipam\" object in network configuration"));
        }
        let raw: RawIpam = serde_json::from_value(ipam_value)
            .map_err(|error| invalid(format!("invalid \"ipam\" configuration: {error}")))?;

        let mut raw_sets: Vec<Vec<RawRange>> = Vec::new();
        if let Some(runtime_ranges) = config.runtime_config.get("ipRanges") {
            let sets: Vec<Vec<RawRange>> = serde_json::from_value(runtime_ranges.clone())
                .map_err(|error| invalid(format!("invalid runtimeConfig.ipRanges: {error}")))?;
            raw_sets.extend(sets);
        }
        if raw.legacy.subnet.is_some() {
            raw_sets.push(vec![raw.legacy]);
        }
        raw_sets.extend(raw.ranges);
        if raw_sets.is_empty() {
            return Err(invalid(
                "missing \"subnet\" or \"ranges\" in ipam: add a subnet such as \"10.244.10.0/24\"",
            ));
        }

        let range_sets = canonicalize_sets(&raw_sets, &config.cni_version)?;
        let requested = requested_addresses(config, inv)?;
        Ok(Self {
            range_sets,
            routes: raw.routes,
            requested,
            resolv_conf: raw.resolv_conf.filter(|path| !path.is_empty()),
        })
    }
}

fn canonicalize_sets(raw_sets: &[Vec<RawRange>], version: &str) -> Result<Vec<RangeSet>, CniError> {
    let mut sets = Vec::new();
    for (set_index, raw_set) in raw_sets.iter().enumerate() {
        let mut set = RangeSet::new();
        for (range_index, raw) in raw_set.iter().enumerate() {
            let spec = parse_range(raw, set_index, range_index)?;
            let range = Range::canonicalize(&spec).map_err(invalid)?;
            set.push(range);
        }
        validate_set(&set).map_err(invalid)?;
        sets.push(set);
    }
    validate_sets(&sets).map_err(invalid)?;

    // Results before 0.3.0 hold one address per family.
    if !version_at_least(version, "0.3.0") {
        let v6_count = sets.iter().filter(|set| is_ipv6_set(set)).count();
        if v6_count > 1 || sets.len() - v6_count > 1 {
            return Err(invalid(format!(
                "CNI version {version} does not support more than 1 address per family: use one range set per family or cniVersion 0.3.0 or later"
            )));
        }
    }
    Ok(sets)
}

fn parse_range(
    raw: &RawRange,
    set_index: usize,
    range_index: usize,
) -> Result<RangeSpec, CniError> {
    let place = format!("range {range_index} of range set {set_index}");
    let Some(subnet_text) = raw.subnet.as_deref() else {
        return Err(invalid(format!(
            "missing \"subnet\" in ipam {place}: add a CIDR such as \"10.244.10.0/24\""
        )));
    };
    let subnet: IpNet = subnet_text.parse().map_err(|_| {
        invalid(format!(
            "invalid subnet {subnet_text:?} in ipam: expected CIDR such as 10.244.10.0/24"
        ))
    })?;

    let address = |key: &str, text: &Option<String>| -> Result<Option<IpAddr>, CniError> {
        let Some(text) = text.as_deref() else {
            return Ok(None);
        };
        let parsed: IpAddr = text.parse().map_err(|_| {
            invalid(format!(
                "invalid {key} {text:?} in ipam {place}: expected an IP address such as 10.244.10.1"
            ))
        })?;
        if parsed.is_ipv4() != subnet.addr().is_ipv4() {
            return Err(invalid(format!(
                "invalid {key} {text:?} in ipam {place}: not in the address family of subnet {subnet_text}"
            )));
        }
        Ok(Some(parsed))
    };

    Ok(RangeSpec {
        subnet,
        start: address("rangeStart", &raw.range_start)?,
        end: address("rangeEnd", &raw.range_end)?,
        gateway: address("gateway", &raw.gateway)?,
    })
}

/// Collects the requested addresses from `CNI_ARGS` `IP` (a comma-separated
/// list), `args.cni.ips` and `runtimeConfig.ips`, in that order. Entries may
/// carry a prefix length, which is dropped.
fn requested_addresses(config: &PluginConfig, inv: &Invocation) -> Result<Vec<IpAddr>, CniError> {
    let mut texts: Vec<String> = Vec::new();
    if let Some(list) = inv.cni_arg("IP") {
        texts.extend(list.split(',').map(|item| item.trim().to_string()));
    }
    for (origin, value) in [
        ("args.cni.ips", config.cni_args_value("ips")),
        ("runtimeConfig.ips", config.runtime_config.get("ips")),
    ] {
        let Some(value) = value else { continue };
        let list: Vec<String> = serde_json::from_value(value.clone()).map_err(|_| {
            invalid(format!(
                "invalid {origin} {value}: expected a list of IP addresses"
            ))
        })?;
        texts.extend(list);
    }

    let mut addresses = Vec::new();
    for text in texts.iter().filter(|text| !text.is_empty()) {
        let address = text
            .parse::<IpNet>()
            .map(|net| net.addr())
            .or_else(|_| text.parse::<IpAddr>())
            .map_err(|_| {
                invalid(format!(
                    "invalid requested IP {text:?}: expected an address such as 10.244.10.5 or 10.244.10.5/24"
                ))
            })?;
        if !addresses.contains(&address) {
            addresses.push(address);
        }
    }
    Ok(addresses)
}

fn invalid(message: impl Into<String>) -> CniError {
    CniError::new(codes::INVALID_NETWORK_CONFIG, message)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(value: Value) -> Result<IpamConfig, CniError> {
        parse_with(value, Invocation::default())
    }

    fn parse_with(value: Value, inv: Invocation) -> Result<IpamConfig, CniError> {
        let versions: Vec<String> = cniwasm_plugin_sdk::ALL_VERSIONS
            .iter()
            .map(|v| v.to_string())
            .collect();
        let config = PluginConfig::parse(&value.to_string(), &versions).unwrap();
        IpamConfig::parse(&config, &inv)
    }

    #[test]
    fn legacy_range_prepended() {
        let config = parse(json!({"cniVersion": "1.0.0", "name": "n", "ipam": {
            "type": "host-local", "subnet": "10.1.2.0/24", "rangeStart": "10.1.2.9",
            "ranges": [[{"subnet": "2001:db8:1::/64"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}}))
        .unwrap();

        assert_eq!(config.range_sets.len(), 2);
        assert_eq!(config.range_sets[0][0].start.to_string(), "10.1.2.9");
        assert_eq!(
            config.range_sets[1][0].subnet.to_string(),
            "2001:db8:1::/64"
        );
        assert_eq!(config.routes[0].dst, "0.0.0.0/0");
    }

    #[test]
    fn runtime_ip_ranges_come_first() {
        let config = parse(json!({"cniVersion": "1.0.0", "name": "n",
            "runtimeConfig": {"ipRanges": [[{"subnet": "10.9.0.0/16"}]]},
            "ipam": {"type": "host-local", "subnet": "10.1.2.0/24"}}))
        .unwrap();
        assert_eq!(config.range_sets[0][0].subnet.to_string(), "10.9.0.0/16");
        assert_eq!(config.range_sets[1][0].subnet.to_string(), "10.1.2.0/24");
    }

    #[test]
    fn resolv_conf_read() {
        let with = |path: &str| {
            parse(json!({"cniVersion": "1.0.0", "name": "n", "ipam": {
                "type": "host-local", "subnet": "10.1.2.0/24", "resolvConf": path}}))
            .unwrap()
            .resolv_conf
        };
        assert_eq!(
            with("/etc/resolv.conf").as_deref(),
            Some("/etc/resolv.conf")
        );
        assert_eq!(with(""), None);
    }

    #[test]
    fn missing_subnet_is_code_7() {
        let error = parse(json!({"cniVersion": "1.0.0", "name": "n",
            "ipam": {"type": "host-local"}}))
        .unwrap_err();
        assert_eq!(error.code, 7);
        assert!(error.msg.contains("\"subnet\""), "{}", error.msg);

        let error = parse(json!({"cniVersion": "1.0.0", "name": "n",
            "ipam": {"type": "host-local", "ranges": [[{"rangeStart": "10.1.2.3"}]]}}))
        .unwrap_err();
        assert_eq!(error.code, 7);
        assert!(error.msg.contains("missing \"subnet\""), "{}", error.msg);
    }

    #[test]
    fn invalid_subnet_named() {
        let error = parse(json!({"cniVersion": "1.0.0", "name": "n",
            "ipam": {"type": "host-local", "subnet": "10.244.10.0/33"}}))
        .unwrap_err();
        assert_eq!(
            error.msg,
            "invalid subnet \"10.244.10.0/33\" in ipam: expected CIDR such as 10.244.10.0/24"
        );
    }

    #[test]
    fn host_bits_is_code_7() {
        let error = parse(json!({"cniVersion": "1.0.0", "name": "n",
            "ipam": {"type": "host-local", "subnet": "10.1.2.5/24"}}))
        .unwrap_err();
        assert_eq!(error.code, 7);
        assert!(error.msg.starts_with("Network has host bits set"));
    }

    #[test]
    fn version_0_2_0_allows_one_per_family() {
        let two_v4 = json!({"cniVersion": "0.2.0", "name": "n", "ipam": {"type": "host-local",
            "ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "10.1.3.0/24"}]]}});
        assert!(parse(two_v4).is_err());

        let dual = json!({"cniVersion": "0.2.0", "name": "n", "ipam": {"type": "host-local",
            "ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "2001:db8::/64"}]]}});
        assert!(parse(dual).is_ok());
    }

    #[test]
    fn requested_from_all_sources() {
        let inv = Invocation {
            args: vec![("IP".into(), "10.1.2.7/24,10.1.2.8".into())],
            ..Default::default()
        };
        let config = parse_with(
            json!({"cniVersion": "1.0.0", "name": "n",
                "args": {"cni": {"ips": ["10.1.2.9"]}},
                "runtimeConfig": {"ips": ["2001:db8::5/64"]},
                "ipam": {"type": "host-local", "subnet": "10.1.2.0/24"}}),
            inv,
        )
        .unwrap();
        let texts: Vec<String> = config.requested.iter().map(ToString::to_string).collect();
        assert_eq!(texts, ["10.1.2.7", "10.1.2.8", "10.1.2.9", "2001:db8::5"]);
    }

    #[test]
    fn invalid_requested_ip_rejected() {
        let inv = Invocation {
            args: vec![("IP".into(), "10.1.2.300".into())],
            ..Default::default()
        };
        let error = parse_with(
            json!({"cniVersion": "1.0.0", "name": "n",
                "ipam": {"type": "host-local", "subnet": "10.1.2.0/24"}}),
            inv,
        )
        .unwrap_err();
        assert_eq!(error.code, 7);
        assert!(error.msg.contains("10.1.2.300"));
    }
}
