//! The tuning plugin's configuration keys and per-attachment arguments.

use serde::Deserialize;
use serde_json::{Map, Value};

use cniwasm_plugin_sdk::{CniError, Invocation, PluginConfig, codes};

/// One sysctl to write in the container namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctl {
    /// The key as configured, for messages.
    pub configured: String,
    /// The key in slash form under `net/`, with `IFNAME` replaced.
    pub key: String,
    pub value: String,
}

/// The tuning plugin's options, with the per-attachment overrides applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TuningConfig {
    /// In configuration order.
    pub sysctls: Vec<Sysctl>,
    /// Lower-case colon-separated MAC address for the interface.
    pub mac: Option<String>,
    /// Turns promiscuous mode on when true. False leaves the link as it is.
    pub promisc: bool,
    /// MTU in bytes, or `None` to leave the link as it is.
    pub mtu: Option<u32>,
    /// Sets or clears IFF_ALLMULTI; `None` leaves the link as it is.
    pub allmulti: Option<bool>,
    /// Transmit queue length in packets, or `None` to leave it as it is.
    pub tx_queue_len: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    sysctl: Map<String, Value>,
    #[serde(default)]
    mac: String,
    #[serde(default)]
    promisc: bool,
    #[serde(default)]
    mtu: u32,
    allmulti: Option<bool>,
    #[serde(rename = "txQLen")]
    tx_queue_len: Option<u32>,
}

/// The keys `args.cni` may override.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawArgs {
    sysctl: Option<Map<String, Value>>,
    mac: Option<String>,
    promisc: Option<bool>,
    mtu: Option<u32>,
    allmulti: Option<bool>,
    #[serde(rename = "txQLen")]
    tx_queue_len: Option<u32>,
}

impl TuningConfig {
    /// Reads the options. The MAC comes from, in rising precedence, `mac`,
    /// `CNI_ARGS` `MAC`, `runtimeConfig.mac` and `args.cni.mac`, and
    /// `args.cni` also overrides `sysctl` entries, `promisc`, `mtu`,
    /// `allmulti` and `txQLen`.
    ///
    /// Errors: code 7.
    pub fn parse(config: &PluginConfig, inv: &Invocation) -> Result<Self, CniError> {
        let raw: RawConfig = config.options()?;
        let args: RawArgs = match config.raw.get("args").and_then(|args| args.get("cni")) {
            None | Some(Value::Null) => RawArgs::default(),
            Some(value) => serde_json::from_value(value.clone()).map_err(|error| {
                invalid(format!("invalid \"args.cni\" for plugin tuning: {error}"))
            })?,
        };

        // NOTE: the SDK parses the configuration into a JSON map, which keeps
        // one value of a key given twice, so a duplicate sysctl key cannot be
        // rejected here as the reference plugin rejects it.
        let mut entries = raw.sysctl;
        entries.extend(args.sysctl.unwrap_or_default());
        let sysctls = entries
            .iter()
            .map(|(key, value)| sysctl(key, value, &inv.ifname))
            .collect::<Result<Vec<_>, _>>()?;

        let mac = [
            args.mac.as_deref(),
            config.runtime_config.get("mac").and_then(Value::as_str),
            inv.cni_arg("MAC"),
            Some(raw.mac.as_str()),
        ]
        .into_iter()
        .flatten()
        .find(|mac| !mac.is_empty())
        .map(normalize_mac)
        .transpose()?;

        let mtu = args.mtu.unwrap_or(raw.mtu);
        Ok(Self {
            sysctls,
            mac,
            promisc: args.promisc.unwrap_or(raw.promisc),
            mtu: (mtu != 0).then_some(mtu),
            allmulti: args.allmulti.or(raw.allmulti),
            tx_queue_len: args.tx_queue_len.or(raw.tx_queue_len),
        })
    }

    /// Tells whether any link attribute is to change.
    pub fn changes_link(&self) -> bool {
        self.mac.is_some()
            || self.promisc
            || self.mtu.is_some()
            || self.allmulti.is_some()
            || self.tx_queue_len.is_some()
    }
}

/// Turns a configured key into slash form (`net.ipv4.conf.IFNAME.arp_notify`
/// becomes `net/ipv4/conf/eth0/arp_notify`) and checks that it stays under
/// `net/` once `.` and `..` components are resolved.
fn sysctl(configured: &str, value: &Value, ifname: &str) -> Result<Sysctl, CniError> {
    let Some(value) = value.as_str() else {
        return Err(invalid(format!(
            "invalid value {value} of sysctl {configured:?}: expected a string such as \"1\""
        )));
    };
    let slashed = configured.replace('.', "/").replace("IFNAME", ifname);

    let mut parts: Vec<&str> = Vec::new();
    for part in slashed.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            _ => parts.push(part),
        }
    }
    if parts.len() < 2 || parts[0] != "net" {
        return Err(invalid(format!(
            "invalid net sysctl key {configured:?}: tuning sets only keys under net, such as net.ipv4.conf.IFNAME.arp_notify"
        )));
    }
    Ok(Sysctl {
        configured: configured.to_string(),
        key: parts.join("/"),
        value: value.to_string(),
    })
}

/// Accepts six octets separated by `:` or `-` and returns the lower-case
/// colon form that the host reports.
fn normalize_mac(text: &str) -> Result<String, CniError> {
    let octets: Vec<&str> = text.split([':', '-']).collect();
    let valid = octets.len() == 6
        && octets
            .iter()
            .all(|octet| octet.len() == 2 && octet.chars().all(|c| c.is_ascii_hexdigit()));
    if !valid {
        return Err(invalid(format!(
            "invalid MAC address {text:?}: expected six hex octets such as c2:11:22:33:44:55"
        )));
    }
    Ok(octets.join(":").to_ascii_lowercase())
}

fn invalid(message: String) -> CniError {
    CniError::new(codes::INVALID_NETWORK_CONFIG, message)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse_text(text: &str, inv: &Invocation) -> Result<TuningConfig, CniError> {
        let versions: Vec<String> = cniwasm_plugin_sdk::ALL_VERSIONS
            .iter()
            .map(|v| v.to_string())
            .collect();
        let config = PluginConfig::parse(text, &versions).unwrap();
        TuningConfig::parse(&config, inv)
    }

    fn parse(value: Value, inv: &Invocation) -> Result<TuningConfig, CniError> {
        parse_text(&value.to_string(), inv)
    }

    fn eth0() -> Invocation {
        Invocation {
            ifname: "eth0".into(),
            ..Default::default()
        }
    }

    #[test]
    fn sysctl_keys_become_slash_form() {
        let config = parse(
            json!({"cniVersion": "1.0.0", "name": "n", "sysctl": {
                "net.ipv4.conf.IFNAME.arp_notify": "1",
                "net/core/somaxconn": "512"}}),
            &eth0(),
        )
        .unwrap();
        assert_eq!(config.sysctls[0].key, "net/ipv4/conf/eth0/arp_notify");
        assert_eq!(config.sysctls[0].value, "1");
        assert_eq!(config.sysctls[1].key, "net/core/somaxconn");
    }

    #[test]
    fn sysctl_outside_net_rejected() {
        for key in ["kernel.hostname", "fs/net/x", "net"] {
            let error = parse(
                json!({"cniVersion": "1.0.0", "name": "n", "sysctl": {key: "x"}}),
                &eth0(),
            )
            .unwrap_err();
            assert_eq!(error.code, 7, "{key}");
            assert!(
                error.msg.contains("invalid net sysctl key"),
                "{}",
                error.msg
            );
        }
    }

    #[test]
    fn non_string_sysctl_value_rejected() {
        let error = parse(
            json!({"cniVersion": "1.0.0", "name": "n", "sysctl": {"net.core.somaxconn": 512}}),
            &eth0(),
        )
        .unwrap_err();
        assert_eq!(error.code, 7);
        assert!(error.msg.contains("net.core.somaxconn"), "{}", error.msg);
    }

    #[test]
    fn mac_precedence() {
        let inv = Invocation {
            ifname: "eth0".into(),
            args: vec![("MAC".into(), "c2:00:00:00:00:03".into())],
            ..Default::default()
        };
        let config_only = json!({"cniVersion": "1.0.0", "name": "n", "mac": "C2-00-00-00-00-04"});
        assert_eq!(
            parse(config_only.clone(), &eth0()).unwrap().mac.as_deref(),
            Some("c2:00:00:00:00:04")
        );
        assert_eq!(
            parse(config_only, &inv).unwrap().mac.as_deref(),
            Some("c2:00:00:00:00:03")
        );

        let runtime = json!({"cniVersion": "1.0.0", "name": "n",
            "runtimeConfig": {"mac": "c2:00:00:00:00:01"}});
        assert_eq!(
            parse(runtime, &inv).unwrap().mac.as_deref(),
            Some("c2:00:00:00:00:01")
        );

        let all = json!({"cniVersion": "1.0.0", "name": "n",
            "runtimeConfig": {"mac": "c2:00:00:00:00:01"},
            "args": {"cni": {"mac": "c2:00:00:00:00:02"}}});
        assert_eq!(
            parse(all, &inv).unwrap().mac.as_deref(),
            Some("c2:00:00:00:00:02")
        );
    }

    #[test]
    fn invalid_mac_rejected() {
        let error = parse(
            json!({"cniVersion": "1.0.0", "name": "n", "mac": "c2:00:00"}),
            &eth0(),
        )
        .unwrap_err();
        assert_eq!(error.code, 7);
        assert!(error.msg.contains("\"c2:00:00\""));
    }

    #[test]
    fn args_override_link_keys_and_sysctl() {
        let config = parse(
            json!({"cniVersion": "1.0.0", "name": "n", "mtu": 1400, "promisc": false,
                "allmulti": true, "txQLen": 2000,
                "sysctl": {"net.core.somaxconn": "512"},
                "args": {"cni": {"mtu": 1300, "promisc": true, "allmulti": false, "txQLen": 500,
                    "sysctl": {"net.core.somaxconn": "1024"}}}}),
            &eth0(),
        )
        .unwrap();
        assert_eq!(config.mtu, Some(1300));
        assert!(config.promisc);
        assert_eq!(config.allmulti, Some(false));
        assert_eq!(config.tx_queue_len, Some(500));
        assert_eq!(config.sysctls.len(), 1);
        assert_eq!(config.sysctls[0].value, "1024");
    }

    #[test]
    fn allmulti_and_tx_queue_len_read() {
        let config = parse(
            json!({"cniVersion": "1.0.0", "name": "n", "allmulti": false, "txQLen": 0}),
            &eth0(),
        )
        .unwrap();
        // Unlike `promisc` and `mtu`, false and 0 are values to apply.
        assert_eq!(config.allmulti, Some(false));
        assert_eq!(config.tx_queue_len, Some(0));
        assert!(config.changes_link());

        let negative = json!({"cniVersion": "1.0.0", "name": "n", "txQLen": -1});
        assert_eq!(parse(negative, &eth0()).unwrap_err().code, 7);
    }

    #[test]
    fn nothing_to_change_by_default() {
        let config = parse(json!({"cniVersion": "1.0.0", "name": "n"}), &eth0()).unwrap();
        assert!(!config.changes_link());
        assert!(config.sysctls.is_empty());
    }
}
