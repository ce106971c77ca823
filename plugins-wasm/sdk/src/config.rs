//! The network configuration a plugin receives, parsed and validated.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use cniwasm_types::{CniError, Dns, codes, result_from_json};

/// A plugin's network configuration: the standard keys parsed, the whole
/// object kept in [`raw`](Self::raw) for the plugin's own keys.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    /// `cniVersion`; `0.1.0` when absent, as the reference library reads it.
    pub cni_version: String,
    /// `name`, the network name, validated like a container id.
    pub name: String,
    /// `type`, the plugin's name; empty when absent.
    pub plugin_type: String,
    /// `prevResult`, read in the configuration's version (a result that names
    /// its own `cniVersion` is read in that one).
    pub prev_result: Option<cniwasm_types::Result>,
    /// `runtimeConfig`; empty when absent.
    pub runtime_config: Map<String, Value>,
    /// `dns`; empty when absent.
    pub dns: Dns,
    /// The whole configuration object.
    pub raw: Map<String, Value>,
}

impl PluginConfig {
    /// Parses `text` and checks `name` and `cniVersion` against
    /// `supported_versions`.
    ///
    /// Errors: invalid JSON or `prevResult` (code 6), missing or invalid
    /// `name` or `dns` (code 7), unsupported `cniVersion` (code 1).
    pub fn parse(text: &str, supported_versions: &[String]) -> Result<Self, CniError> {
        let value: Value = serde_json::from_str(text).map_err(|error| {
            CniError::new(
                codes::DECODING_FAILURE,
                format!("failed to parse network configuration: {error}"),
            )
        })?;
        let Value::Object(raw) = value else {
            return Err(CniError::new(
                codes::DECODING_FAILURE,
                format!("invalid network configuration: expected a JSON object, found {value}"),
            ));
        };

        let name = match raw.get("name") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(name)) => name.clone(),
            Some(other) => {
                return Err(CniError::new(
                    codes::INVALID_NETWORK_CONFIG,
                    format!("invalid network name {other}: expected a string"),
                ));
            }
        };
        validate_network_name(&name)?;

        let cni_version = read_version(&raw)?;
        if !supported_versions.contains(&cni_version) {
            return Err(CniError::new(
                codes::INCOMPATIBLE_CNI_VERSION,
                "incompatible CNI versions",
            )
            .with_details(format!(
                "config is {cni_version:?}, plugin supports {supported_versions:?}"
            )));
        }

        let prev_result = match raw.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(value) => Some(result_from_json(value, &cni_version).map_err(|error| {
                CniError::new(
                    codes::DECODING_FAILURE,
                    format!("failed to parse prevResult: {error}"),
                )
            })?),
        };

        let runtime_config = match raw.get("runtimeConfig") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => map.clone(),
            Some(other) => return Err(invalid_config("runtimeConfig", other, "an object")),
        };
        let dns = match raw.get("dns") {
            None | Some(Value::Null) => Dns::default(),
            Some(value) => serde_json::from_value(value.clone()).map_err(|error| {
                CniError::new(
                    codes::INVALID_NETWORK_CONFIG,
                    format!("invalid \"dns\" in network configuration: {error}"),
                )
            })?,
        };
        let plugin_type = raw
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();

        Ok(Self {
            cni_version,
            name,
            plugin_type,
            prev_result,
            runtime_config,
            dns,
            raw,
        })
    }

    /// Deserialises the whole configuration into the plugin's own options
    /// type. Errors name the plugin type and carry code 7.
    pub fn options<T: DeserializeOwned>(&self) -> Result<T, CniError> {
        serde_json::from_value(Value::Object(self.raw.clone())).map_err(|error| {
            CniError::new(
                codes::INVALID_NETWORK_CONFIG,
                format!(
                    "invalid network configuration for plugin {:?}: {error}",
                    self.plugin_type
                ),
            )
        })
    }

    /// Returns `ipam.type`, or `None` when the configuration has no IPAM
    /// section or an empty type.
    pub fn ipam_type(&self) -> Option<&str> {
        self.raw
            .get("ipam")
            .and_then(|ipam| ipam.get("type"))
            .and_then(Value::as_str)
            .filter(|kind| !kind.is_empty())
    }

    /// Returns `args.cni.<key>`, the structured per-attachment arguments.
    pub fn cni_args_value(&self, key: &str) -> Option<&Value> {
        self.raw.get("args")?.get("cni")?.get(key)
    }
}

/// Checks a network name: non-empty, a letter or digit first, then letters,
/// digits, `_`, `.` or `-`. Errors carry code 7.
pub fn validate_network_name(name: &str) -> Result<(), CniError> {
    if name.is_empty() {
        return Err(CniError::new(
            codes::INVALID_NETWORK_CONFIG,
            "missing network name",
        ));
    }

    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(CniError::new(
            codes::INVALID_NETWORK_CONFIG,
            format!(
                "invalid network name {name:?}: use letters, digits, '_', '.' or '-', starting with a letter or digit"
            ),
        ))
    }
}

fn read_version(raw: &Map<String, Value>) -> Result<String, CniError> {
    match raw.get("cniVersion") {
        None | Some(Value::Null) => Ok("0.1.0".to_string()),
        Some(Value::String(text)) if text.is_empty() => Ok("0.1.0".to_string()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(other) => Err(CniError::new(
            codes::DECODING_FAILURE,
            format!("invalid cniVersion {other}: expected a string such as \"1.0.0\""),
        )),
    }
}

fn invalid_config(key: &str, value: &Value, expected: &str) -> CniError {
    CniError::new(
        codes::INVALID_NETWORK_CONFIG,
        format!("invalid {key:?} in network configuration: expected {expected}, found {value}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<String> {
        crate::ALL_VERSIONS.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn parse_bad_json_is_code_6() {
        let error = PluginConfig::parse("{\"name\":", &all()).unwrap_err();
        assert_eq!(error.code, 6);
        assert!(
            error
                .msg
                .starts_with("failed to parse network configuration")
        );
    }

    #[test]
    fn parse_non_object_is_code_6() {
        let error = PluginConfig::parse("[1]", &all()).unwrap_err();
        assert_eq!(error.code, 6);
    }

    #[test]
    fn parse_missing_name_is_code_7() {
        let error = PluginConfig::parse(r#"{"cniVersion":"1.0.0"}"#, &all()).unwrap_err();
        assert_eq!(error.code, 7);
        assert_eq!(error.msg, "missing network name");
    }

    #[test]
    fn parse_invalid_name_is_code_7() {
        for text in [
            r#"{"cniVersion":"1.0.0","name":"-net"}"#,
            r#"{"cniVersion":"1.0.0","name":"my net"}"#,
            r#"{"cniVersion":"1.0.0","name":5}"#,
        ] {
            let error = PluginConfig::parse(text, &all()).unwrap_err();
            assert_eq!(error.code, 7, "{text}");
        }
    }

    #[test]
    fn parse_unsupported_version_is_code_1() {
        let supported = vec!["1.0.0".to_string()];
        let error =
            PluginConfig::parse(r#"{"cniVersion":"0.4.0","name":"n"}"#, &supported).unwrap_err();
        assert_eq!(error.code, 1);
        assert_eq!(error.msg, "incompatible CNI versions");
        assert!(error.details.contains("\"0.4.0\""));
    }

    #[test]
    fn parse_missing_version_is_0_1_0() {
        let config = PluginConfig::parse(r#"{"name":"n"}"#, &all()).unwrap();
        assert_eq!(config.cni_version, "0.1.0");
    }

    #[test]
    fn parse_reads_standard_keys() {
        let text = r#"{"cniVersion":"0.4.0","name":"mynet","type":"bridge",
            "runtimeConfig":{"portMappings":[]},"dns":{"nameservers":["10.0.0.53"]},
            "ipam":{"type":"host-local"},"args":{"cni":{"ips":["10.1.2.3"]}},
            "prevResult":{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.1.2.3/24"}]}}"#;
        let config = PluginConfig::parse(text, &all()).unwrap();

        assert_eq!(config.name, "mynet");
        assert_eq!(config.plugin_type, "bridge");
        assert!(config.runtime_config.contains_key("portMappings"));
        assert_eq!(config.dns.nameservers, vec!["10.0.0.53"]);
        assert_eq!(config.ipam_type(), Some("host-local"));
        assert_eq!(
            config.cni_args_value("ips"),
            Some(&serde_json::json!(["10.1.2.3"]))
        );
        let prev = config.prev_result.unwrap();
        assert_eq!(prev.ips[0].address, "10.1.2.3/24");
    }

    #[test]
    fn parse_bad_prev_result_is_code_6() {
        let text = r#"{"cniVersion":"1.0.0","name":"n","prevResult":{"ips":"x"}}"#;
        let error = PluginConfig::parse(text, &all()).unwrap_err();
        assert_eq!(error.code, 6);
        assert!(error.msg.starts_with("failed to parse prevResult"));
    }

    #[test]
    fn options_error_names_plugin() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code, reason = "only the parse error matters")]
        struct Options {
            mtu: u32,
        }
        let text = r#"{"cniVersion":"1.0.0","name":"n","type":"bridge","mtu":"big"}"#;
        let config = PluginConfig::parse(text, &all()).unwrap();
        let error = config.options::<Options>().unwrap_err();
        assert_eq!(error.code, 7);
        assert!(error.msg.contains("\"bridge\""));
    }
}
