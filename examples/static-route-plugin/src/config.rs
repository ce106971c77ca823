//! The plugin's options, `routes` and `sysctls`, read from the network
//! configuration and validated before any host call.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Map, Value};

use cniwasm_plugin_sdk::{CniError, PluginConfig, codes};

/// One entry of `routes`: a destination reached through a gateway on the
/// container interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticRoute {
    /// Network address with prefix length; host bits are rejected.
    pub dst: IpNet,
    /// Gateway of the same address family as `dst`.
    pub gw: IpAddr,
}

/// One entry of `sysctls`, with the key as the configuration spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlSetting {
    pub key: String,
    pub value: String,
}

/// The plugin's options, in configuration order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaticRouteConfig {
    pub routes: Vec<StaticRoute>,
    pub sysctls: Vec<SysctlSetting>,
}

impl StaticRouteConfig {
    /// Reads the optional `routes` and `sysctls`. Errors carry code 7 and
    /// name the field and its value.
    pub fn parse(config: &PluginConfig) -> Result<Self, CniError> {
        let routes = match config.raw.get("routes") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(entries)) => parse_routes(entries)?,
            Some(other) => {
                return Err(invalid(format!(
                    "invalid \"routes\" {other}: expected a list of {{\"dst\": CIDR, \"gw\": IP}}"
                )));
            }
        };

        let sysctls = match config.raw.get("sysctls") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(entries)) => parse_sysctls(entries)?,
            Some(other) => {
                return Err(invalid(format!(
                    "invalid \"sysctls\" {other}: expected an object of key and value strings"
                )));
            }
        };

        Ok(Self { routes, sysctls })
    }
}

fn parse_routes(entries: &[Value]) -> Result<Vec<StaticRoute>, CniError> {
    let mut routes: Vec<StaticRoute> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let route = parse_route(index, entry)?;

        // Two routes to one destination would fail in the kernel halfway
        // through ADD, so reject them before any change.
        if let Some(earlier) = routes.iter().position(|seen| seen.dst == route.dst) {
            return Err(invalid(format!(
                "invalid routes[{index}].dst \"{}\": routes[{earlier}] has the same destination",
                route.dst
            )));
        }
        routes.push(route);
    }
    Ok(routes)
}

fn parse_route(index: usize, entry: &Value) -> Result<StaticRoute, CniError> {
    let Value::Object(fields) = entry else {
        return Err(invalid(format!(
            "invalid routes[{index}] {entry}: expected {{\"dst\": CIDR, \"gw\": IP}}"
        )));
    };
    if let Some(unknown) = fields
        .keys()
        .find(|key| !matches!(key.as_str(), "dst" | "gw"))
    {
        return Err(invalid(format!(
            "invalid routes[{index}]: unknown key {unknown:?}, use \"dst\" and \"gw\""
        )));
    }

    let dst_text = required_string(fields, index, "dst")?;
    let dst: IpNet = dst_text.parse().map_err(|_| {
        invalid(format!(
            "invalid routes[{index}].dst {dst_text:?}: expected a CIDR such as 10.250.0.0/16"
        ))
    })?;
    if dst != dst.trunc() {
        return Err(invalid(format!(
            "invalid routes[{index}].dst {dst_text:?}: host bits are set, use {}",
            dst.trunc()
        )));
    }

    let gw_text = required_string(fields, index, "gw")?;
    let gw: IpAddr = gw_text.parse().map_err(|_| {
        invalid(format!(
            "invalid routes[{index}].gw {gw_text:?}: expected an IP address such as 10.244.20.1"
        ))
    })?;
    if gw.is_ipv4() != dst.addr().is_ipv4() {
        return Err(invalid(format!(
            "invalid routes[{index}].gw {gw_text:?}: its address family differs from dst {dst_text:?}"
        )));
    }

    Ok(StaticRoute { dst, gw })
}

fn required_string<'a>(
    fields: &'a Map<String, Value>,
    index: usize,
    key: &str,
) -> Result<&'a str, CniError> {
    match fields.get(key) {
        Some(Value::String(text)) => Ok(text),
        None | Some(Value::Null) => Err(invalid(format!("missing routes[{index}].{key}"))),
        Some(other) => Err(invalid(format!(
            "invalid routes[{index}].{key} {other}: expected a string"
        ))),
    }
}

fn parse_sysctls(entries: &Map<String, Value>) -> Result<Vec<SysctlSetting>, CniError> {
    let mut sysctls = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        // The host only grants keys under /proc/sys/net. Checking here names
        // the key before any route is added.
        let under_net = key.starts_with("net.") || key.starts_with("net/");
        if !under_net {
            return Err(invalid(format!(
                "invalid sysctls key {key:?}: only keys under net are allowed, such as net.ipv4.conf.eth0.arp_ignore"
            )));
        }

        let value = match value {
            Value::String(text) => text.clone(),
            Value::Number(number) => number.to_string(),
            other => {
                return Err(invalid(format!(
                    "invalid sysctls value {other} for {key:?}: expected a string or a number"
                )));
            }
        };
        if value.is_empty() || value.contains('\n') {
            return Err(invalid(format!(
                "invalid sysctls value {value:?} for {key:?}: expected one line of text"
            )));
        }

        sysctls.push(SysctlSetting {
            key: key.clone(),
            value,
        });
    }
    Ok(sysctls)
}

fn invalid(message: String) -> CniError {
    CniError::new(codes::INVALID_NETWORK_CONFIG, message)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(options: Value) -> Result<StaticRouteConfig, CniError> {
        let mut raw = json!({"cniVersion": "0.4.0", "name": "n", "type": "static-route"});
        raw.as_object_mut()
            .unwrap()
            .extend(options.as_object().unwrap().clone());
        let versions: Vec<String> = cniwasm_plugin_sdk::ALL_VERSIONS
            .iter()
            .map(|version| version.to_string())
            .collect();
        let config = PluginConfig::parse(&raw.to_string(), &versions).unwrap();
        StaticRouteConfig::parse(&config)
    }

    fn parse_error(options: Value) -> CniError {
        let error = parse(options).unwrap_err();
        assert_eq!(error.code, 7, "{}", error.msg);
        error
    }

    #[test]
    fn reads_routes_and_sysctls_in_order() {
        let config = parse(json!({
            "routes": [
                {"dst": "10.250.0.0/16", "gw": "10.244.20.1"},
                {"dst": "fd00:250::/48", "gw": "fd00:20::1"}
            ],
            "sysctls": {
                "net.ipv4.conf.eth0.arp_ignore": "1",
                "net/ipv4/conf/eth0/arp_announce": 2
            }
        }))
        .unwrap();

        assert_eq!(config.routes.len(), 2);
        assert_eq!(config.routes[0].dst.to_string(), "10.250.0.0/16");
        assert_eq!(config.routes[0].gw.to_string(), "10.244.20.1");
        assert_eq!(config.routes[1].dst.to_string(), "fd00:250::/48");
        assert_eq!(config.sysctls.len(), 2);
        assert_eq!(config.sysctls[0].key, "net.ipv4.conf.eth0.arp_ignore");
        assert_eq!(config.sysctls[0].value, "1");
        assert_eq!(config.sysctls[1].key, "net/ipv4/conf/eth0/arp_announce");
        assert_eq!(config.sysctls[1].value, "2");
    }

    #[test]
    fn absent_and_null_options_are_empty() {
        assert_eq!(parse(json!({})).unwrap(), StaticRouteConfig::default());
        let config = parse(json!({"routes": null, "sysctls": null})).unwrap();
        assert_eq!(config, StaticRouteConfig::default());
    }

    #[test]
    fn routes_not_a_list_rejected() {
        let error = parse_error(json!({"routes": {"dst": "10.0.0.0/8"}}));
        assert!(error.msg.starts_with("invalid \"routes\""), "{}", error.msg);
    }

    #[test]
    fn bad_dst_named_with_value() {
        let error = parse_error(json!({"routes": [{"dst": "10.250.0.0/33", "gw": "10.0.0.1"}]}));
        assert!(
            error.msg.contains("routes[0].dst \"10.250.0.0/33\""),
            "{}",
            error.msg
        );
    }

    #[test]
    fn dst_with_host_bits_rejected() {
        let error = parse_error(json!({"routes": [{"dst": "10.250.1.0/16", "gw": "10.0.0.1"}]}));
        assert!(error.msg.contains("use 10.250.0.0/16"), "{}", error.msg);
    }

    #[test]
    fn bad_gw_named_with_value() {
        let error = parse_error(json!({"routes": [{"dst": "10.250.0.0/16", "gw": "gateway"}]}));
        assert!(
            error.msg.contains("routes[0].gw \"gateway\""),
            "{}",
            error.msg
        );
    }

    #[test]
    fn gw_of_other_family_rejected() {
        let error = parse_error(json!({"routes": [{"dst": "10.250.0.0/16", "gw": "fd00::1"}]}));
        assert!(error.msg.contains("address family"), "{}", error.msg);
    }

    #[test]
    fn missing_route_fields_rejected() {
        let error = parse_error(json!({"routes": [{"dst": "10.250.0.0/16"}]}));
        assert_eq!(error.msg, "missing routes[0].gw");
        let error = parse_error(json!({"routes": [{"gw": "10.0.0.1"}]}));
        assert_eq!(error.msg, "missing routes[0].dst");
    }

    #[test]
    fn unknown_route_key_rejected() {
        let error = parse_error(json!({
            "routes": [{"dst": "10.250.0.0/16", "gw": "10.0.0.1", "via": "10.0.0.2"}]
        }));
        assert!(error.msg.contains("unknown key \"via\""), "{}", error.msg);
    }

    #[test]
    fn route_not_an_object_rejected() {
        let error = parse_error(json!({"routes": ["10.250.0.0/16"]}));
        assert!(error.msg.starts_with("invalid routes[0]"), "{}", error.msg);
    }

    #[test]
    fn duplicate_destination_rejected() {
        let error = parse_error(json!({"routes": [
            {"dst": "10.250.0.0/16", "gw": "10.0.0.1"},
            {"dst": "10.250.0.0/16", "gw": "10.0.0.2"}
        ]}));
        assert!(
            error.msg.contains("routes[1].dst") && error.msg.contains("routes[0]"),
            "{}",
            error.msg
        );
    }

    #[test]
    fn sysctls_not_an_object_rejected() {
        let error = parse_error(json!({"sysctls": ["net.ipv4.ip_forward=1"]}));
        assert!(
            error.msg.starts_with("invalid \"sysctls\""),
            "{}",
            error.msg
        );
    }

    #[test]
    fn sysctl_outside_net_rejected() {
        let error = parse_error(json!({"sysctls": {"kernel.panic": "1"}}));
        assert!(error.msg.contains("\"kernel.panic\""), "{}", error.msg);
    }

    #[test]
    fn sysctl_value_must_be_text_or_number() {
        let error = parse_error(json!({"sysctls": {"net.ipv4.ip_forward": true}}));
        assert!(error.msg.contains("true"), "{}", error.msg);
        let error = parse_error(json!({"sysctls": {"net.ipv4.ip_forward": ""}}));
        assert!(error.msg.contains("one line"), "{}", error.msg);
    }
}
