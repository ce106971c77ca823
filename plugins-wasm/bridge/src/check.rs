//! CHECK: compares the links, addresses and routes with prevResult.

use cniwasm_plugin_sdk::cniwasm_types;
use cniwasm_plugin_sdk::link::{self, LinkInfo};
use cniwasm_plugin_sdk::{CniError, HostResultExt, Invocation, Netns, codes, route};

use crate::addressing::route_present;
use crate::config::BridgeConfig;

/// Verifies the bridge, the container veth, the host veth's bridge port, and
/// the container's addresses and routes against prevResult.
///
/// NOTE: the host API does not expose a veth's peer, so the host veth is only
/// checked for being a veth port of the bridge, not for being this
/// container's peer.
pub fn check_attachment(
    inv: &Invocation,
    options: &BridgeConfig,
    prev: &cniwasm_types::Result,
) -> Result<(), CniError> {
    check_bridge(options, prev)?;

    let container_index = prev
        .interfaces
        .iter()
        .position(|interface| interface.name == inv.ifname && interface.sandbox == inv.netns_path())
        .ok_or_else(|| {
            failed(format!(
                "interface {:?} with sandbox {:?} not found in prevResult",
                inv.ifname,
                inv.netns_path()
            ))
        })?;
    check_container_link(inv, &prev.interfaces[container_index])?;
    check_host_veth(options, prev)?;

    cniwasm_plugin_sdk::container::check_container_addresses(inv, prev, container_index as u32)?;
    check_routes(inv, prev)
}

fn check_bridge(options: &BridgeConfig, prev: &cniwasm_types::Result) -> Result<(), CniError> {
    let name = &options.bridge;
    let info = read_link(Netns::Host, name)?
        .ok_or_else(|| failed(format!("bridge {name:?} not found in the host namespace")))?;
    if info.kind != "bridge" {
        return Err(failed(format!(
            "{name:?} already exists but is not a bridge (kind {:?})",
            info.kind
        )));
    }

    let expected = prev
        .interfaces
        .iter()
        .find(|interface| interface.name == *name);
    if let Some(expected) = expected {
        check_mac(name, &info, &expected.mac)?;
    }
    if info.promisc != options.promisc_mode {
        return Err(failed(format!(
            "bridge {name:?} has promiscuous mode {}, but promiscMode is {}",
            info.promisc, options.promisc_mode
        )));
    }
    Ok(())
}

fn check_container_link(
    inv: &Invocation,
    expected: &cniwasm_types::Interface,
) -> Result<(), CniError> {
    let name = &inv.ifname;
    let info = read_link(Netns::Container, name)?
        .ok_or_else(|| failed(format!("interface {name:?} not found in the container")))?;
    if info.kind != "veth" {
        return Err(failed(format!(
            "interface {name:?} in the container is a {:?} link, expected a veth",
            info.kind
        )));
    }
    check_mac(name, &info, &expected.mac)
}

fn check_host_veth(options: &BridgeConfig, prev: &cniwasm_types::Result) -> Result<(), CniError> {
    for interface in &prev.interfaces {
        if !interface.sandbox.is_empty() || interface.name == options.bridge {
            continue;
        }
        let Some(info) = read_link(Netns::Host, &interface.name)? else {
            continue;
        };
        let on_bridge = info.master.as_deref() == Some(options.bridge.as_str());
        if info.kind == "veth" && on_bridge {
            return Ok(());
        }
    }
    Err(failed(format!(
        "CNI veth created for bridge {:?} was not found",
        options.bridge
    )))
}

fn check_routes(inv: &Invocation, prev: &cniwasm_types::Result) -> Result<(), CniError> {
    let listed = route::list(Netns::Container, &inv.ifname)
        .context(&format!("failed to list the routes of {:?}", inv.ifname))?;

    for expected in &prev.routes {
        if !route_present(&listed, expected) {
            return Err(failed(format!(
                "expected route {} via {:?} not found in the routing table of {:?}",
                expected.dst, expected.gw, inv.ifname
            )));
        }
    }
    Ok(())
}

fn check_mac(name: &str, info: &LinkInfo, expected: &str) -> Result<(), CniError> {
    if expected.is_empty() || info.mac.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(failed(format!(
            "interface {name:?} has MAC address {}, expected {expected}",
            info.mac
        )))
    }
}

fn read_link(ns: Netns, name: &str) -> Result<Option<LinkInfo>, CniError> {
    link::get(ns, name).context(&format!("failed to read link {name:?}"))
}

fn failed(message: String) -> CniError {
    CniError::new(codes::INTERNAL, message)
}
