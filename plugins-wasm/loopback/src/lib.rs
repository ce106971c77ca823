//! loopback: sets the container's `lo` interface up on ADD and down on DEL.
//! It ignores `CNI_IFNAME`, because the loopback interface is always `lo`.

use cniwasm_plugin_sdk::cniwasm_types::{self, Interface, IpConfig};
use cniwasm_plugin_sdk::link::{self, LinkSettings};
use cniwasm_plugin_sdk::{
    AddOutput, CniError, HostError, HostResultExt, Invocation, Netns, Plugin, PluginConfig,
    address, codes,
};

const LOOPBACK: &str = "lo";

/// The loopback plugin.
pub struct Loopback;

impl Plugin for Loopback {
    fn add(inv: &Invocation, config: &PluginConfig) -> Result<AddOutput, CniError> {
        link::configure(Netns::Container, LOOPBACK, &settings(true))
            .context("failed to set \"lo\" up in the container")?;

        if let Some(prev) = &config.prev_result {
            return Ok(AddOutput::Result(prev.clone()));
        }
        let addresses = address::list(Netns::Container, LOOPBACK)
            .context("failed to list the addresses of \"lo\" in the container")?;
        Ok(AddOutput::Result(loopback_result(
            &addresses,
            inv.netns_path(),
        )?))
    }

    fn del(inv: &Invocation, _config: &PluginConfig) -> Result<(), CniError> {
        if inv.netns.is_none() {
            return Ok(());
        }

        // A namespace or link that is gone leaves nothing to undo.
        match link::configure(Netns::Container, LOOPBACK, &settings(false)) {
            Ok(_) | Err(HostError::NotFound(_)) => Ok(()),
            Err(error) => Err(error).context("failed to set \"lo\" down in the container"),
        }
    }

    fn check(_inv: &Invocation, _config: &PluginConfig) -> Result<(), CniError> {
        let found = link::get(Netns::Container, LOOPBACK)
            .context("failed to read \"lo\" in the container")?;
        match found {
            Some(info) if info.up => Ok(()),
            Some(_) => Err(CniError::new(codes::INTERNAL, "loopback interface is down")),
            None => Err(CniError::new(
                codes::INTERNAL,
                "loopback interface \"lo\" not found in the container",
            )),
        }
    }
}

cniwasm_plugin_sdk::export_plugin!(Loopback);

fn settings(up: bool) -> LinkSettings {
    LinkSettings {
        up: Some(up),
        ..Default::default()
    }
}

/// Builds the result without prevResult: `lo` with its first IPv4 and first
/// IPv6 address. Every address must be a loopback address, so a namespace
/// whose `lo` was changed is reported instead of described.
pub fn loopback_result(
    addresses: &[String],
    netns: &str,
) -> Result<cniwasm_types::Result, CniError> {
    let mut result = cniwasm_types::Result {
        interfaces: vec![Interface {
            name: LOOPBACK.into(),
            mac: "00:00:00:00:00:00".into(),
            sandbox: netns.into(),
            ..Default::default()
        }],
        ..Default::default()
    };

    for cidr in addresses {
        let host_part = cidr.split('/').next().unwrap_or_default();
        let is_loopback = host_part
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
        if !is_loopback {
            return Err(CniError::new(
                codes::INTERNAL,
                format!("loopback interface found with non-loopback address {cidr:?}"),
            ));
        }

        let is_ipv6 = host_part.contains(':');
        if !result.ips.iter().any(|ip| ip.is_ipv6() == is_ipv6) {
            result.ips.push(IpConfig {
                interface: Some(0),
                address: cidr.clone(),
                gateway: String::new(),
            });
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_has_first_of_each_family() {
        let addresses = vec![
            "127.0.0.1/8".to_string(),
            "127.0.0.2/8".into(),
            "::1/128".into(),
        ];

        let result = loopback_result(&addresses, "/run/netns/a").unwrap();

        assert_eq!(result.interfaces[0].name, "lo");
        assert_eq!(result.interfaces[0].mac, "00:00:00:00:00:00");
        assert_eq!(result.interfaces[0].sandbox, "/run/netns/a");
        assert_eq!(result.ips.len(), 2);
        assert_eq!(result.ips[0].address, "127.0.0.1/8");
        assert_eq!(result.ips[0].interface, Some(0));
        assert_eq!(result.ips[1].address, "::1/128");
    }

    #[test]
    fn result_without_ipv6() {
        let result = loopback_result(&["127.0.0.1/8".to_string()], "/run/netns/a").unwrap();
        assert_eq!(result.ips.len(), 1);
    }

    #[test]
    fn non_loopback_address_rejected() {
        let error = loopback_result(&["10.0.0.1/8".to_string()], "/run/netns/a").unwrap_err();
        assert!(error.msg.contains("\"10.0.0.1/8\""));
    }

    #[test]
    fn result_renders_in_0_2_0() {
        let result = loopback_result(&["127.0.0.1/8".to_string()], "/n").unwrap();
        let json = cniwasm_types::result_to_json(&result, "0.2.0").unwrap();
        assert_eq!(json["ip4"]["ip"], "127.0.0.1/8");
    }
}
