//! CHECK: compares the container link, addresses and routes with prevResult.

use cniwasm_plugin_sdk::cniwasm_types;
use cniwasm_plugin_sdk::link;
use cniwasm_plugin_sdk::{CniError, HostResultExt, Invocation, Netns, codes, nat, route};

use crate::config::PtpConfig;
use crate::routing::route_present;

/// Verifies that the container veth exists with the MAC of prevResult, that
/// it has every address of prevResult and every route of prevResult, and
/// with `ipMasq` that the masquerade rules are in place.
///
/// NOTE: the host API does not expose a veth's peer, so the host end is not
/// checked.
pub fn check_attachment(
    inv: &Invocation,
    options: &PtpConfig,
    prev: &cniwasm_types::Result,
) -> Result<(), CniError> {
    let name = &inv.ifname;
    let expected = prev
        .interfaces
        .iter()
        .position(|interface| interface.name == *name && interface.sandbox == inv.netns_path())
        .ok_or_else(|| {
            failed(format!(
                "interface {name:?} with sandbox {:?} not found in prevResult",
                inv.netns_path()
            ))
        })?;

    let info = link::get(Netns::Container, name)
        .context(&format!("failed to read link {name:?}"))?
        .ok_or_else(|| failed(format!("interface {name:?} not found in the container")))?;
    if info.kind != "veth" {
        return Err(failed(format!(
            "interface {name:?} in the container is a {:?} link, expected a veth",
            info.kind
        )));
    }
    let mac = &prev.interfaces[expected].mac;
    if !mac.is_empty() && !info.mac.eq_ignore_ascii_case(mac) {
        return Err(failed(format!(
            "interface {name:?} has MAC address {}, expected {mac}",
            info.mac
        )));
    }

    cniwasm_plugin_sdk::container::check_container_addresses(inv, prev, expected as u32)?;
    check_routes(inv, prev)?;
    if options.ip_masq {
        for ip in &prev.ips {
            nat::check_masquerade(&ip.address)
                .context(&format!("masquerade for {} is not in place", ip.address))?;
        }
    }
    Ok(())
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

fn failed(message: String) -> CniError {
    CniError::new(codes::INTERNAL, message)
}
