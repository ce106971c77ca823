//! tuning: a chained plugin that writes sysctls in the container namespace
//! and changes the MAC address, MTU, promiscuous and all-multicast modes and
//! transmit queue length of the container interface `CNI_IFNAME`, passing
//! prevResult through. DEL puts back the link attributes that ADD changed.

mod config;
mod restore;

use cniwasm_plugin_sdk::cniwasm_types;
use cniwasm_plugin_sdk::link::{self, LinkInfo, LinkSettings};
use cniwasm_plugin_sdk::{
    AddOutput, CniError, HostResultExt, Invocation, Netns, Plugin, PluginConfig, codes,
    describe_host_error, logging, state, sysctl,
};

use crate::config::TuningConfig;
use crate::restore::Original;

/// The tuning plugin.
pub struct Tuning;

impl Plugin for Tuning {
    fn add(inv: &Invocation, config: &PluginConfig) -> Result<AddOutput, CniError> {
        let options = TuningConfig::parse(config, inv)?;
        let mut result = require_prev_result(config)?.clone();

        for entry in &options.sysctls {
            sysctl::set(Netns::Container, &entry.key, &entry.value).context(&format!(
                "failed to set sysctl {:?} to {:?} in the container",
                entry.configured, entry.value
            ))?;
        }

        if options.changes_link() {
            save_original(&inv.ifname, &options)?;
            apply_link_settings(&inv.ifname, &options)?;
        }
        if let Some(mac) = &options.mac {
            set_result_mac(&mut result, &inv.ifname, mac);
        }
        Ok(AddOutput::Result(result))
    }

    /// Puts back the link attributes that ADD saved. As in the reference
    /// plugin, only a broken configuration fails DEL: a link that is gone
    /// or refuses a value is logged and skipped.
    fn del(inv: &Invocation, config: &PluginConfig) -> Result<(), CniError> {
        TuningConfig::parse(config, inv)?;
        if inv.netns.is_some() {
            restore_original(&inv.ifname);
        }
        Ok(())
    }

    fn check(inv: &Invocation, config: &PluginConfig) -> Result<(), CniError> {
        let options = TuningConfig::parse(config, inv)?;
        require_prev_result(config)?;

        for entry in &options.sysctls {
            let current = sysctl::get(Netns::Container, &entry.key)
                .context(&format!("failed to read sysctl {:?}", entry.configured))?;
            let current = current.trim_end_matches('\n');
            if current != entry.value {
                return Err(mismatch(format!(
                    "sysctl {:?} is {current:?} in the container, but tuning configured {:?}",
                    entry.configured, entry.value
                )));
            }
        }

        let info = link::get(Netns::Container, &inv.ifname)
            .context(&format!("failed to read link {:?}", inv.ifname))?
            .ok_or_else(|| {
                mismatch(format!(
                    "interface {:?} not found in the container",
                    inv.ifname
                ))
            })?;
        check_link(&info, &options)
    }
}

cniwasm_plugin_sdk::export_plugin!(Tuning);

fn require_prev_result(config: &PluginConfig) -> Result<&cniwasm_types::Result, CniError> {
    config.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            codes::INVALID_NETWORK_CONFIG,
            "required prevResult missing: tuning is a chained plugin, so list it after a plugin that creates the interface",
        )
    })
}

/// Saves the current values of the attributes that ADD changes, so that DEL
/// can put them back.
fn save_original(ifname: &str, options: &TuningConfig) -> Result<(), CniError> {
    let info = link::get(Netns::Container, ifname)
        .context(&format!("failed to read {ifname:?} in the container"))?
        .ok_or_else(|| {
            CniError::new(
                codes::INTERNAL,
                format!("interface {ifname:?} not found in the container: list tuning after the plugin that creates it"),
            )
        })?;

    let original = Original::of(&info, options);
    let text = serde_json::to_string(&original).expect("the saved settings serialise");
    state::put(&text).context(&format!(
        "failed to save the original settings of {ifname:?}"
    ))
}

/// Applies the settings that ADD saved, logging what fails.
fn restore_original(ifname: &str) {
    let text = match state::get() {
        Ok(Some(text)) => text,
        Ok(None) => return,
        Err(error) => {
            let reason = describe_host_error(&error);
            logging::warn(&format!(
                "failed to read the saved settings of {ifname:?}: {reason}"
            ));
            return;
        }
    };
    let original: Original = match serde_json::from_str(&text) {
        Ok(original) => original,
        Err(error) => {
            logging::warn(&format!(
                "ignoring invalid saved settings of {ifname:?}: {error}"
            ));
            return;
        }
    };

    if let Err(error) = link::configure(Netns::Container, ifname, &original.settings()) {
        let reason = describe_host_error(&error);
        logging::warn(&format!(
            "failed to restore the settings of {ifname:?}: {reason}"
        ));
    }
}

/// Applies every configured link attribute in one host call.
fn apply_link_settings(ifname: &str, options: &TuningConfig) -> Result<(), CniError> {
    let settings = LinkSettings {
        mtu: options.mtu,
        mac: options.mac.clone(),
        promisc: options.promisc.then_some(true),
        allmulti: options.allmulti,
        tx_queue_len: options.tx_queue_len,
        ..Default::default()
    };
    link::configure(Netns::Container, ifname, &settings)
        .context(&format!("failed to tune {ifname:?} in the container"))?;
    Ok(())
}

/// Sets the MAC of every interface named `ifname` in the result.
fn set_result_mac(result: &mut cniwasm_types::Result, ifname: &str, mac: &str) {
    for interface in &mut result.interfaces {
        if interface.name == ifname {
            interface.mac = mac.to_string();
        }
    }
}

/// Compares the configured link attributes with the link.
fn check_link(info: &LinkInfo, options: &TuningConfig) -> Result<(), CniError> {
    let name = &info.name;
    if let Some(mac) = &options.mac
        && !info.mac.eq_ignore_ascii_case(mac)
    {
        return Err(mismatch(format!(
            "interface {name:?} has MAC address {}, but tuning configured {mac}",
            info.mac
        )));
    }
    if options.promisc && !info.promisc {
        return Err(mismatch(format!(
            "interface {name:?} is not in promiscuous mode, but tuning configured promisc true"
        )));
    }
    if let Some(mtu) = options.mtu
        && info.mtu != mtu
    {
        return Err(mismatch(format!(
            "interface {name:?} has MTU {}, but tuning configured {mtu}",
            info.mtu
        )));
    }
    if let Some(allmulti) = options.allmulti
        && info.allmulti != allmulti
    {
        return Err(mismatch(format!(
            "interface {name:?} has allmulti {}, but tuning configured {allmulti}",
            info.allmulti
        )));
    }
    if let Some(length) = options.tx_queue_len
        && info.tx_queue_len != length
    {
        return Err(mismatch(format!(
            "interface {name:?} has transmit queue length {}, but tuning configured txQLen {length}",
            info.tx_queue_len
        )));
    }
    Ok(())
}

fn mismatch(message: String) -> CniError {
    CniError::new(codes::INTERNAL, message)
}

#[cfg(test)]
mod tests {
    use cniwasm_plugin_sdk::cniwasm_types::Interface;

    use super::*;

    pub(crate) fn link_info() -> LinkInfo {
        LinkInfo {
            name: "eth0".into(),
            index: 3,
            kind: "veth".into(),
            mac: "c2:00:00:00:00:01".into(),
            mtu: 1400,
            up: true,
            oper_state: "up".into(),
            master: None,
            promisc: true,
            allmulti: true,
            tx_queue_len: 1000,
        }
    }

    #[test]
    fn result_mac_updated_by_name() {
        let mut result = cniwasm_types::Result {
            interfaces: vec![
                Interface {
                    name: "veth1".into(),
                    mac: "aa:aa:aa:aa:aa:aa".into(),
                    ..Default::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: "bb:bb:bb:bb:bb:bb".into(),
                    sandbox: "/var/run/netns/c".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        set_result_mac(&mut result, "eth0", "c2:00:00:00:00:09");
        assert_eq!(result.interfaces[0].mac, "aa:aa:aa:aa:aa:aa");
        assert_eq!(result.interfaces[1].mac, "c2:00:00:00:00:09");
    }

    #[test]
    fn check_link_accepts_match() {
        let options = TuningConfig {
            mac: Some("c2:00:00:00:00:01".into()),
            promisc: true,
            mtu: Some(1400),
            allmulti: Some(true),
            tx_queue_len: Some(1000),
            ..Default::default()
        };
        assert!(check_link(&link_info(), &options).is_ok());
    }

    #[test]
    fn check_link_reports_each_mismatch() {
        let mut not_promisc = link_info();
        not_promisc.promisc = false;
        let cases = [
            (
                link_info(),
                TuningConfig {
                    mac: Some("c2:00:00:00:00:02".into()),
                    ..Default::default()
                },
                "MAC",
            ),
            (
                link_info(),
                TuningConfig {
                    mtu: Some(9000),
                    ..Default::default()
                },
                "MTU",
            ),
            (
                link_info(),
                TuningConfig {
                    allmulti: Some(false),
                    ..Default::default()
                },
                "allmulti",
            ),
            (
                link_info(),
                TuningConfig {
                    tx_queue_len: Some(2000),
                    ..Default::default()
                },
                "txQLen 2000",
            ),
            (
                not_promisc,
                TuningConfig {
                    promisc: true,
                    ..Default::default()
                },
                "promiscuous",
            ),
        ];
        for (info, options, expected) in cases {
            let message = check_link(&info, &options).unwrap_err().msg;
            assert!(message.contains(expected), "{expected}: {message}");
        }
    }
}
