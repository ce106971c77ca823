//! The ADD result in every spec version.
//!
//! [`Result`] is the 1.x form, which carries every field of the older ones.
//! [`result_from_json`] reads any version into it and [`result_to_json`]
//! renders it in a requested version, with the rules of the reference
//! library's converters (`pkg/types/internal/convert.go`).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::version::{Version, VersionError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResultError {
    #[error(transparent)]
    Version(#[from] VersionError),
    #[error("failed to parse CNI result of version {version}: {reason}")]
    Parse { version: String, reason: String },
    #[error("no converter for CNI result version {from} to {to}")]
    NoConverter { from: String, to: String },
    #[error("cannot convert: no valid IP addresses")]
    NoIpAddresses,
    #[error("CNI version {0} does not support more than 1 address per family")]
    TooManyAddresses(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mtu: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    #[serde(
        rename = "socketPath",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub socket_path: String,
    #[serde(rename = "pciID", default, skip_serializing_if = "String::is_empty")]
    pub pci_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Index into the result's interfaces; IPAM plugins leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<u32>,
    /// Address with prefix length, such as `10.244.10.2/24`.
    pub address: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gateway: String,
}

impl IpConfig {
    pub fn is_ipv6(&self) -> bool {
        self.address.contains(':')
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gw: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mtu: u32,
    #[serde(rename = "advmss", default, skip_serializing_if = "is_zero")]
    pub adv_mss: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u32>,
}

impl Route {
    pub fn is_ipv6(&self) -> bool {
        self.dst.contains(':')
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self == &Dns::default()
    }
}

/// An ADD result in the 1.x form. `cni_version` records the version it was
/// read from or is meant for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Result {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// Always printed, even empty, as the reference Go types do.
    #[serde(default)]
    pub dns: Dns,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// The result layout of a group of versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// 0.1.0 and 0.2.0: `ip4`/`ip6` objects, no interfaces.
    V020,
    /// 0.3.0, 0.3.1 and 0.4.0: `ips[].version`.
    V040,
    /// 1.0.0 and 1.1.0.
    V100,
}

fn family_of(version: &str) -> std::result::Result<Family, ResultError> {
    let parsed = Version::parse(version)?;
    match (parsed.major, parsed.minor) {
        (0, 1) | (0, 2) => Ok(Family::V020),
        (0, 3) | (0, 4) => Ok(Family::V040),
        (1, 0) | (1, 1) => Ok(Family::V100),
        _ => Err(ResultError::NoConverter {
            from: "1.0.0".into(),
            to: version.into(),
        }),
    }
}

/// Reads a result of any supported version. A result without `cniVersion`
/// is read as `fallback_version`, as the reference library does.
pub fn result_from_json(
    value: &Value,
    fallback_version: &str,
) -> std::result::Result<Result, ResultError> {
    let version = match value.get("cniVersion").and_then(Value::as_str) {
        Some(text) if !text.is_empty() => text.to_string(),
        _ => fallback_version.to_string(),
    };
    let parse_error = |reason: String| ResultError::Parse {
        version: version.clone(),
        reason,
    };

    let mut result = match family_of(&version)? {
        Family::V100 | Family::V040 => {
            let mut copy = value.clone();
            if let Some(ips) = copy.get_mut("ips").and_then(Value::as_array_mut) {
                for ip in ips.iter_mut().filter_map(Value::as_object_mut) {
                    ip.remove("version");
                }
            }
            serde_json::from_value::<Result>(copy).map_err(|e| parse_error(e.to_string()))?
        }
        Family::V020 => from_020(value).map_err(parse_error)?,
    };
    result.cni_version = version;
    Ok(result)
}

fn from_020(value: &Value) -> std::result::Result<Result, String> {
    #[derive(Deserialize)]
    struct Ip020 {
        ip: String,
        #[serde(default)]
        gateway: String,
        #[serde(default)]
        routes: Vec<Route>,
    }
    #[derive(Deserialize)]
    struct Result020 {
        #[serde(default)]
        ip4: Option<Ip020>,
        #[serde(default)]
        ip6: Option<Ip020>,
        #[serde(default)]
        dns: Dns,
    }

    let old: Result020 = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    let mut result = Result {
        dns: old.dns,
        ..Result::default()
    };
    for ip in [old.ip4, old.ip6].into_iter().flatten() {
        result.ips.push(IpConfig {
            interface: None,
            address: ip.ip,
            gateway: ip.gateway,
        });
        result.routes.extend(ip.routes);
    }
    Ok(result)
}

/// Renders the result in `version`'s layout.
pub fn result_to_json(result: &Result, version: &str) -> std::result::Result<Value, ResultError> {
    match family_of(version)? {
        Family::V100 => {
            let mut copy = result.clone();
            copy.cni_version = version.to_string();
            Ok(serde_json::to_value(copy).expect("a result always serialises"))
        }
        Family::V040 => Ok(to_040(result, version)),
        Family::V020 => to_020(result, version),
    }
}

fn to_040(result: &Result, version: &str) -> Value {
    let interfaces: Vec<Value> = result
        .interfaces
        .iter()
        .map(|interface| {
            let mut object = serde_json::Map::new();
            object.insert("name".into(), json!(interface.name));
            if !interface.mac.is_empty() {
                object.insert("mac".into(), json!(interface.mac));
            }
            if !interface.sandbox.is_empty() {
                object.insert("sandbox".into(), json!(interface.sandbox));
            }
            Value::Object(object)
        })
        .collect();
    let ips: Vec<Value> = result
        .ips
        .iter()
        .map(|ip| {
            let mut object = serde_json::Map::new();
            object.insert(
                "version".into(),
                json!(if ip.is_ipv6() { "6" } else { "4" }),
            );
            if let Some(index) = ip.interface {
                object.insert("interface".into(), json!(index));
            }
            object.insert("address".into(), json!(ip.address));
            if !ip.gateway.is_empty() {
                object.insert("gateway".into(), json!(ip.gateway));
            }
            Value::Object(object)
        })
        .collect();

    let mut object = serde_json::Map::new();
    object.insert("cniVersion".into(), json!(version));
    if !interfaces.is_empty() {
        object.insert("interfaces".into(), Value::Array(interfaces));
    }
    if !ips.is_empty() {
        object.insert("ips".into(), Value::Array(ips));
    }
    if !result.routes.is_empty() {
        object.insert(
            "routes".into(),
            serde_json::to_value(&result.routes).expect("routes serialise"),
        );
    }
    object.insert(
        "dns".into(),
        serde_json::to_value(&result.dns).expect("dns serialises"),
    );
    Value::Object(object)
}

fn to_020(result: &Result, version: &str) -> std::result::Result<Value, ResultError> {
    let mut object = serde_json::Map::new();
    object.insert("cniVersion".into(), json!(version));

    let mut found_any = false;
    for (key, ipv6) in [("ip4", false), ("ip6", true)] {
        let mut same_family = result.ips.iter().filter(|ip| ip.is_ipv6() == ipv6);
        let Some(first) = same_family.next() else {
            continue;
        };
        if same_family.next().is_some() {
            return Err(ResultError::TooManyAddresses(version.to_string()));
        }
        found_any = true;

        let mut ip = serde_json::Map::new();
        ip.insert("ip".into(), json!(first.address));
        if !first.gateway.is_empty() {
            ip.insert("gateway".into(), json!(first.gateway));
        }
        let routes: Vec<Value> = result
            .routes
            .iter()
            .filter(|route| route.is_ipv6() == ipv6)
            .map(|route| {
                let mut entry = serde_json::Map::new();
                entry.insert("dst".into(), json!(route.dst));
                if !route.gw.is_empty() {
                    entry.insert("gw".into(), json!(route.gw));
                }
                Value::Object(entry)
            })
            .collect();
        if !routes.is_empty() {
            ip.insert("routes".into(), Value::Array(routes));
        }
        object.insert(key.into(), Value::Object(ip));
    }
    if !found_any {
        return Err(ResultError::NoIpAddresses);
    }

    object.insert(
        "dns".into(),
        serde_json::to_value(&result.dns).expect("dns serialises"),
    );
    Ok(Value::Object(object))
}

/// Prints JSON indented by 4 spaces, as the reference plugins and libcni do.
pub fn print_json(value: &Value) -> String {
    use serde::Serialize as _;

    let mut buffer = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut buffer, formatter);
    value
        .serialize(&mut serializer)
        .expect("a JSON value always serialises");
    String::from_utf8(buffer).expect("serde_json writes UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bridge_result() -> Result {
        Result {
            cni_version: "1.0.0".into(),
            interfaces: vec![
                Interface {
                    name: "mynet".into(),
                    mac: "0e:66:1b:2e:72:37".into(),
                    ..Default::default()
                },
                Interface {
                    name: "veth9a85d6e1".into(),
                    mac: "36:70:37:eb:98:71".into(),
                    ..Default::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: "76:d0:8d:11:59:fb".into(),
                    sandbox: "/var/run/netns/x".into(),
                    ..Default::default()
                },
            ],
            ips: vec![IpConfig {
                interface: Some(2),
                address: "10.244.10.2/24".into(),
                gateway: "10.244.10.1".into(),
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".into(),
                ..Default::default()
            }],
            dns: Dns::default(),
        }
    }

    #[test]
    fn renders_0_3_0_like_reference() {
        let json = result_to_json(&bridge_result(), "0.3.0").unwrap();
        let expected = json!({
            "cniVersion": "0.3.0",
            "interfaces": [
                {"name": "mynet", "mac": "0e:66:1b:2e:72:37"},
                {"name": "veth9a85d6e1", "mac": "36:70:37:eb:98:71"},
                {"name": "eth0", "mac": "76:d0:8d:11:59:fb", "sandbox": "/var/run/netns/x"}
            ],
            "ips": [{"version": "4", "interface": 2, "address": "10.244.10.2/24", "gateway": "10.244.10.1"}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {}
        });
        assert_eq!(json, expected);
    }

    #[test]
    fn field_order_matches_reference() {
        let text = print_json(&result_to_json(&bridge_result(), "0.3.0").unwrap());
        let ips_line = text.find("\"version\"").unwrap();
        assert!(ips_line < text.find("\"interface\": 2").unwrap());
        assert!(text.starts_with("{\n    \"cniVersion\": \"0.3.0\",\n    \"interfaces\""));
    }

    #[test]
    fn renders_1_0_0_without_version_field() {
        let json = result_to_json(&bridge_result(), "1.0.0").unwrap();
        assert_eq!(json["ips"][0].get("version"), None);
        assert_eq!(json["ips"][0]["interface"], json!(2));
        assert_eq!(json["dns"], json!({}));
    }

    #[test]
    fn round_trips_040() {
        let json = result_to_json(&bridge_result(), "0.4.0").unwrap();
        let back = result_from_json(&json, "0.4.0").unwrap();
        assert_eq!(back.ips, bridge_result().ips);
        assert_eq!(back.interfaces, bridge_result().interfaces);
        assert_eq!(back.cni_version, "0.4.0");
    }

    #[test]
    fn renders_0_2_0_ip4() {
        let json = result_to_json(&bridge_result(), "0.2.0").unwrap();
        assert_eq!(json["ip4"]["ip"], json!("10.244.10.2/24"));
        assert_eq!(json["ip4"]["routes"][0]["dst"], json!("0.0.0.0/0"));
        assert_eq!(json.get("interfaces"), None);
    }

    #[test]
    fn rejects_0_2_0_with_two_v4() {
        let mut result = bridge_result();
        result.ips.push(IpConfig {
            interface: None,
            address: "10.0.0.2/24".into(),
            gateway: String::new(),
        });
        assert_eq!(
            result_to_json(&result, "0.2.0"),
            Err(ResultError::TooManyAddresses("0.2.0".into()))
        );
    }

    #[test]
    fn rejects_0_2_0_without_ips() {
        assert_eq!(
            result_to_json(&Result::default(), "0.1.0"),
            Err(ResultError::NoIpAddresses)
        );
    }

    #[test]
    fn reads_0_2_0_into_ips() {
        let old = json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.1.0.5/16", "gateway": "10.1.0.1",
            "routes": [{"dst": "0.0.0.0/0"}]}});
        let result = result_from_json(&old, "0.2.0").unwrap();
        assert_eq!(result.ips[0].address, "10.1.0.5/16");
        assert_eq!(result.routes[0].dst, "0.0.0.0/0");
    }

    #[test]
    fn missing_version_uses_fallback() {
        let result = result_from_json(&json!({"ips": []}), "0.3.1").unwrap();
        assert_eq!(result.cni_version, "0.3.1");
    }
}
