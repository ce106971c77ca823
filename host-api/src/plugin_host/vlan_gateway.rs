//! `link.ensure-vlan-gateway`: the link that carries a bridge's gateway
//! addresses on one VLAN. The reference bridge plugin (v1.1.1) builds it for
//! `vlan` with `isGateway` as a veth pair in the host namespace: the end
//! `<bridge>.<vlan>` gets the addresses, the other end is a bridge port
//! whose PVID is the VLAN.

use serde_json::json;

use super::cniwasm::host::link;
use super::convert::VLAN_IDS;
use super::{Call, HostContext, HostError, check_ifname, random_veth_name};
use crate::kernel::{HostVethSpec, Kernel, LinkInfo, LinkSettings, Namespace, PortVlan, PortVlans};
use crate::policy::Request;

/// The longest Linux interface name, in bytes (IFNAMSIZ less the NUL).
const MAX_IFNAME_BYTES: usize = 15;

/// A checked `vlan-gateway-spec`.
struct VlanGateway {
    bridge: String,
    vlan: u16,
    /// `<bridge>.<vlan>`, the end that gets the addresses.
    name: String,
    /// MTU in bytes for both ends.
    mtu: Option<u32>,
    remove_default: bool,
}

impl VlanGateway {
    fn from_wit(spec: &link::VlanGatewaySpec) -> Result<Self, HostError> {
        check_ifname(&spec.bridge)?;
        let (bridge, vlan) = (&spec.bridge, spec.vlan);
        if !VLAN_IDS.contains(&vlan) {
            return Err(HostError::Invalid(format!(
                "invalid VLAN ID {vlan} for a gateway of bridge {bridge:?}: expected 1 to 4094"
            )));
        }

        let name = format!("{bridge}.{vlan}");
        if name.len() > MAX_IFNAME_BYTES {
            let room = MAX_IFNAME_BYTES - (name.len() - bridge.len());
            return Err(HostError::Invalid(format!(
                "VLAN gateway link name {name:?} is {} bytes, longer than the {MAX_IFNAME_BYTES} bytes Linux allows: use a bridge name of at most {room} bytes for VLAN {vlan}",
                name.len()
            )));
        }
        Ok(Self {
            bridge: bridge.clone(),
            vlan,
            name,
            mtu: spec.mtu,
            remove_default: spec.remove_default,
        })
    }
}

impl HostContext {
    /// Serves `link.ensure-vlan-gateway`: reuses `<bridge>.<vlan>` when it
    /// exists, and otherwise creates the pair and records its named end as
    /// created, so that a failed chain ADD removes it.
    pub(super) fn serve_vlan_gateway(
        &mut self,
        spec: link::VlanGatewaySpec,
    ) -> wasmtime::Result<Result<link::LinkInfo, HostError>> {
        let gateway = match VlanGateway::from_wit(&spec) {
            Ok(gateway) => gateway,
            Err(error) => return Ok(Err(error)),
        };
        let call = Call {
            operation: "link.ensure-vlan-gateway",
            arguments: json!({"bridge": spec.bridge, "vlan": spec.vlan, "mtu": spec.mtu, "removeDefault": spec.remove_default}),
            requests: vec![Request::VlanGateway {
                bridge: &gateway.bridge,
                link: &gateway.name,
                mtu: gateway.mtu,
            }],
        };
        let created_links = self.created_links.clone();

        self.dispatch(
            call,
            |kernel, rules| rules.vlan_gateway(kernel, &gateway.bridge, &gateway.name),
            |kernel, _| {
                if let Some(existing) = kernel.netlink.get_link(Namespace::Host, &gateway.name)? {
                    return Ok(existing.into());
                }
                let info = match create_vlan_gateway(kernel, &gateway) {
                    Ok(info) => info,
                    Err(HostError::AlreadyExists(message)) => {
                        // Another ADD on the VLAN created the pair since the
                        // lookup above, and it is shared, so it is reused.
                        let existing = kernel.netlink.get_link(Namespace::Host, &gateway.name)?;
                        return existing
                            .map(Into::into)
                            .ok_or(HostError::AlreadyExists(message));
                    }
                    Err(error) => return Err(error),
                };
                created_links
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .push(gateway.name.clone());
                Ok(info.into())
            },
        )
    }
}

/// Creates the pair and sets it up, or leaves nothing behind when a step
/// fails.
fn create_vlan_gateway(kernel: &mut Kernel, gateway: &VlanGateway) -> Result<LinkInfo, HostError> {
    let bridge = &gateway.bridge;
    let is_bridge = kernel
        .netlink
        .get_link(Namespace::Host, bridge)?
        .is_some_and(|info| info.kind == "bridge");
    if !is_bridge {
        return Err(HostError::NotFound(format!(
            "bridge {bridge:?} not found in the host namespace: create it with link.ensure-bridge before its VLAN gateway"
        )));
    }

    let spec = HostVethSpec {
        name: gateway.name.clone(),
        peer_name: random_veth_name()?,
        mtu: gateway.mtu,
    };
    kernel.netlink.create_host_veth(&spec)?;

    match attach_vlan_gateway(kernel, gateway, &spec.peer_name) {
        Ok(info) => Ok(info),
        Err(error) => {
            // Deleting one end of a veth pair deletes both.
            let undo = kernel
                .netlink
                .delete_link(Namespace::Host, &gateway.name)
                .and_then(|_| kernel.netlink.settle());
            if let Err(undo_error) = undo {
                tracing::warn!(error = %undo_error, link = %gateway.name, "failed to delete a VLAN gateway pair whose setup failed");
            }
            Err(error.into())
        }
    }
}

/// Makes `peer` a bridge port whose PVID is the gateway's VLAN, untagged,
/// and sets both ends up.
fn attach_vlan_gateway(
    kernel: &mut Kernel,
    gateway: &VlanGateway,
    peer: &str,
) -> Result<LinkInfo, crate::kernel::KernelError> {
    let port = LinkSettings {
        master: Some(gateway.bridge.clone()),
        up: Some(true),
        ..LinkSettings::default()
    };
    kernel
        .netlink
        .configure_link(Namespace::Host, peer, &port)?;

    let vlans = PortVlans {
        remove_default: gateway.remove_default,
        vlans: vec![PortVlan {
            min_id: gateway.vlan,
            max_id: gateway.vlan,
            pvid: true,
            untagged: true,
        }],
    };
    kernel.netlink.set_port_vlans(peer, &vlans)?;

    let up = LinkSettings {
        up: Some(true),
        ..LinkSettings::default()
    };
    kernel
        .netlink
        .configure_link(Namespace::Host, &gateway.name, &up)
}

#[cfg(all(test, feature = "testing"))]
mod tests;
