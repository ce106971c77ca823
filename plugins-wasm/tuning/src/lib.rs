//! tuning: a chained plugin that writes sysctls in the container namespace
//! and changes the MAC address, MTU, promiscuous and all-multicast modes and
//! transmit queue length of the container interface `CNI_IFNAME`, passing
//! prevResult through.

mod config;

use cniwasm_plugin_sdk::cniwasm_types;
use cniwasm_plugin_sdk::link::{self, LinkInfo, LinkSettings};
use cniwasm_plugin_sdk::{
    AddOutput, CniError, HostResultExt, Invocation, Netns, Plugin, PluginConfig, codes, sysctl,
};

use crate::config::TuningConfig;

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

        // TODO: the reference plugin saves the original MAC, MTU,
        // promiscuous and all-multicast modes and queue length to a file before changing them, and DEL restores
        // them. This plugin has no files, so restoring needs state that the
        // host keeps per attachment. Until the host API offers that, a link
        // that outlives the chain keeps the tuned values after DEL.
        if options.changes_link() {
            apply_link_settings(&inv.ifname, &options)?;
        }
        if let Some(mac) = &options.mac {
            set_result_mac(&mut result, &inv.ifname, mac);
        }
        Ok(AddOutput::Result(result))
    }

    /// Parses the configuration so that a broken one still fails, and
    /// otherwise does nothing: see the TODO in ADD about restoring.
    fn del(inv: &Invocation, config: &PluginConfig) -> Result<(), CniError> {
        TuningConfig::parse(config, inv).map(|_| ())
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

    fn link_info() -> LinkInfo {
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
