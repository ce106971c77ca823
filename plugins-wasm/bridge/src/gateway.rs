//! The gateway side of an ADD with `isGateway`: the gateway addresses on
//! the bridge or on the VLAN gateway link, and IP forwarding.

use cniwasm_plugin_sdk::link::{self, LinkInfo, LinkSettings, VlanGatewaySpec};
use cniwasm_plugin_sdk::{CniError, HostResultExt, Netns, address, sysctl};

use crate::addressing::{BridgeAddressPlan, plan_bridge_address};
use crate::config::BridgeConfig;

/// Puts `gateway` on the host link `name` (the bridge or the VLAN gateway
/// link), replacing a conflicting address only with `force_address`.
pub fn ensure_address(
    name: &str,
    gateway: ipnet::IpNet,
    force_address: bool,
) -> Result<(), CniError> {
    let existing = address::list(Netns::Host, name)
        .context(&format!("failed to list the addresses of {name:?}"))?;

    let plan = plan_bridge_address(name, &existing, gateway, force_address)?;
    let BridgeAddressPlan::Add { delete } = plan else {
        return Ok(());
    };
    for old in delete {
        address::del(Netns::Host, name, &old)
            .context(&format!("failed to delete {old} from {name:?}"))?;
    }
    match address::add(Netns::Host, name, &gateway.to_string()) {
        Ok(()) | Err(cniwasm_plugin_sdk::HostError::AlreadyExists(_)) => Ok(()),
        Err(error) => Err(error).context(&format!("failed to add {gateway} to {name:?}")),
    }
}

/// Returns the link `<bridge>.<vlan>` that carries the gateway addresses of
/// the container's VLAN, which the host creates on first use as a veth
/// pair whose other end is an untagged port of that VLAN on the bridge.
/// Its MTU is the bridge's, as in the reference plugin (v1.1.1).
pub fn ensure_vlan_link(options: &BridgeConfig, bridge: &LinkInfo) -> Result<LinkInfo, CniError> {
    let spec = VlanGatewaySpec {
        bridge: options.bridge.clone(),
        vlan: options.vlan.vlan,
        mtu: Some(bridge.mtu),
        remove_default: !options.vlan.preserve_default,
    };
    link::ensure_vlan_gateway(&spec).context(&format!(
        "failed to set up the gateway link of VLAN {} on bridge {:?}",
        spec.vlan, spec.bridge
    ))
}

/// Sets the link's MAC to its own value after the addresses went on, as the
/// reference plugin does for whichever link carries the gateway. Unlike
/// the bridge's, a veth's MAC does not change with ports, so this only
/// marks the address as set rather than random.
pub fn pin_mac(gateway_link: &LinkInfo) -> Result<(), CniError> {
    let name = &gateway_link.name;
    let settings = LinkSettings {
        mac: Some(gateway_link.mac.clone()),
        ..Default::default()
    };
    link::configure(Netns::Host, name, &settings)
        .context(&format!("failed to set the MAC address of {name:?}"))?;
    Ok(())
}

pub fn enable_forwarding(ipv6: bool) -> Result<(), CniError> {
    let key = if ipv6 {
        "net/ipv6/conf/all/forwarding"
    } else {
        "net/ipv4/ip_forward"
    };
    let current = sysctl::get(Netns::Host, key).context(&format!("failed to read {key}"))?;
    if current.trim() == "1" {
        return Ok(());
    }
    sysctl::set(Netns::Host, key, "1").context(&format!("failed to enable forwarding with {key}"))
}
