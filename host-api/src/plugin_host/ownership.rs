//! Ownership rules, which hold under every policy and in every mode.
//! The container namespace belongs to the attachment. In the host namespace
//! a plugin may change only the links this chain operation created and the
//! bridges its policy allows, never `lo` or another interface, and only the
//! host sysctls of those links plus IP forwarding, and set bridge-port
//! VLANs only on a port it created. The VLAN gateway `<bridge>.<vlan>` of
//! an allowed bridge counts as part of that bridge. NAT rules may only point
//! at addresses of the attachment's own interface, and so may forwarding
//! rules, whose admin chain must not be a built-in chain or target. A MAC
//! spoof check may guard only a host veth this chain operation created, and
//! allow only the MAC of the attachment's interface in the container.

use std::net::IpAddr;

use ipnet::IpNet;

use super::convert::VLAN_IDS;
use crate::kernel::{Kernel, Namespace, Owner, SpoofCheckSpec};
use crate::policy::{Decision, PluginPolicy};

pub(super) struct Ownership<'a> {
    /// Host links created by this chain operation.
    pub created: &'a [String],
    pub policy: &'a PluginPolicy,
}

/// Host sysctls any attachment may set: IP forwarding, which bridges with a
/// gateway need.
const SHARED_HOST_SYSCTLS: &[&str] = &["net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"];

/// Names an admin chain may not take: the filter table's built-in chains,
/// the standard targets, and the chain that jumps to it.
const RESERVED_CHAINS: &[&str] = &[
    "INPUT",
    "FORWARD",
    "OUTPUT",
    "ACCEPT",
    "DROP",
    "RETURN",
    "QUEUE",
    "REJECT",
    "CNI-FORWARD",
];

impl Ownership<'_> {
    fn bridge_allowed(&self, name: &str) -> bool {
        match &self.policy.links {
            Some(rules) => rules.bridges.iter().any(|pattern| pattern.matches(name)),
            None => true,
        }
    }

    /// Checks a bridge to create or reuse: a name taken by a link that is not a
    /// bridge (such as `lo` or `eth0`) is not the plugin's to claim.
    pub fn bridge(&self, kernel: &mut Kernel, name: &str) -> Option<Decision> {
        match kernel.netlink.get_link(Namespace::Host, name) {
            Ok(Some(info)) if info.kind != "bridge" => Some(Decision::ownership(
                "hostLinks",
                format!(
                    "host link {name:?} exists and is not a bridge; choose another bridge name"
                ),
            )),
            _ => None,
        }
    }

    /// Checks a host link to configure, or to add addresses and routes on.
    pub fn host_link(&self, kernel: &mut Kernel, name: &str) -> Option<Decision> {
        if name == "lo" {
            return Some(Decision::ownership(
                "hostLinks",
                "the host's lo belongs to no attachment".into(),
            ));
        }
        if self.created.iter().any(|created| created == name) {
            return None;
        }

        match kernel.netlink.get_link(Namespace::Host, name) {
            Ok(Some(info)) if info.kind == "bridge" && self.bridge_allowed(name) => None,
            Ok(Some(info)) if info.kind == "veth" && self.is_vlan_gateway(kernel, name) => None,
            Ok(Some(_)) => Some(Decision::ownership(
                "hostLinks",
                format!(
                    "host link {name:?} was not created for this attachment and is not an allowed bridge"
                ),
            )),
            // An absent link fails in the kernel with a clear not-found error.
            _ => None,
        }
    }

    /// Tells whether `name` has the form `<bridge>.<vlan>` of a VLAN
    /// gateway (see [`Ownership::vlan_gateway`]): an existing bridge that
    /// the policy allows, a dot, and a VLAN ID from 1 to 4094 without
    /// leading zeros. Such a link carries the gateway addresses of every
    /// attachment on that VLAN, as the bridge does without VLANs, so the
    /// attachments that reuse it may add addresses and set its sysctls.
    fn is_vlan_gateway(&self, kernel: &mut Kernel, name: &str) -> bool {
        let Some((bridge, vlan)) = name.rsplit_once('.') else {
            return false;
        };
        let valid_vlan = vlan
            .parse::<u16>()
            .is_ok_and(|id| VLAN_IDS.contains(&id) && id.to_string() == vlan);
        if !valid_vlan || !self.bridge_allowed(bridge) {
            return false;
        }
        matches!(
            kernel.netlink.get_link(Namespace::Host, bridge),
            Ok(Some(info)) if info.kind == "bridge"
        )
    }

    /// Checks a VLAN gateway to create or reuse: its bridge must not be a
    /// link of another kind, and an existing link named `link` must be a
    /// veth, because reusing it puts gateway addresses on it.
    pub fn vlan_gateway(&self, kernel: &mut Kernel, bridge: &str, link: &str) -> Option<Decision> {
        if let Some(denied) = self.bridge(kernel, bridge) {
            return Some(denied);
        }
        match kernel.netlink.get_link(Namespace::Host, link) {
            Ok(Some(info)) if info.kind != "veth" => Some(Decision::ownership(
                "hostLinks",
                format!(
                    "host link {link:?} exists and is a {:?} link, not the veth of a VLAN gateway; rename or remove it",
                    info.kind
                ),
            )),
            _ => None,
        }
    }

    /// Checks a bridge port whose VLANs are to be set: only a link this
    /// chain operation created, such as the attachment's host veth, and
    /// already a port of a bridge. A port of another container, or a
    /// bridge itself, carries VLANs other attachments rely on.
    pub fn bridge_port(&self, kernel: &mut Kernel, name: &str) -> Option<Decision> {
        let created = self.created.iter().any(|created| created == name);
        if !created {
            return Some(Decision::ownership(
                "hostLinks",
                format!("host link {name:?} was not created for this attachment"),
            ));
        }

        match kernel.netlink.get_link(Namespace::Host, name) {
            Ok(Some(info)) if info.kind == "bridge" || info.master.is_none() => {
                Some(Decision::ownership(
                    "hostLinks",
                    format!(
                        "host link {name:?} is not a bridge port; enslave it to the bridge before setting its VLANs"
                    ),
                ))
            }
            // An absent link fails in the kernel with a clear not-found error.
            _ => None,
        }
    }

    /// Checks a host link to delete: only one this chain operation created, since
    /// bridges are shared by every container on them.
    pub fn delete_host_link(&self, name: &str) -> Option<Decision> {
        (!self.created.iter().any(|created| created == name)).then(|| {
            Decision::ownership(
                "hostLinks",
                format!("host link {name:?} was not created for this attachment"),
            )
        })
    }

    /// Checks a host sysctl to set: IP forwarding, or a per-interface key
    /// (`net/ipv4/conf/<link>/...`) of a link the plugin may change.
    pub fn host_sysctl(&self, kernel: &mut Kernel, key: &str) -> Option<Decision> {
        if SHARED_HOST_SYSCTLS.contains(&key) {
            return None;
        }

        let parts: Vec<&str> = key.split('/').collect();
        let per_link = parts.len() == 5
            && parts[0] == "net"
            && matches!(parts[1], "ipv4" | "ipv6")
            && parts[2] == "conf";
        if per_link && !matches!(parts[3], "all" | "default") {
            return self.host_link(kernel, parts[3]);
        }
        Some(Decision::ownership(
            "hostSysctls",
            format!("host sysctl {key} is shared by the whole node"),
        ))
    }

    /// Checks an address that NAT rules point at: it must be configured on the
    /// attachment's interface in the container.
    pub fn container_address(
        &self,
        kernel: &mut Kernel,
        owner: &Owner,
        address: IpNet,
    ) -> Option<Decision> {
        let configured = kernel
            .netlink
            .list_addresses(Namespace::Container, &owner.ifname);
        match configured {
            Ok(addresses)
                if addresses
                    .iter()
                    .any(|configured| configured.addr() == address.addr()) =>
            {
                None
            }
            _ => Some(Decision::ownership(
                "containerAddress",
                format!(
                    "{} is not an address of {} in this container",
                    address.addr(),
                    owner.ifname
                ),
            )),
        }
    }

    /// Checks the addresses of forwarding rules to add or check: each must be
    /// configured on the attachment's interface in the container.
    pub fn forward_addresses(
        &self,
        kernel: &mut Kernel,
        owner: &Owner,
        addresses: &[IpAddr],
    ) -> Option<Decision> {
        addresses
            .iter()
            .find_map(|address| self.container_address(kernel, owner, IpNet::from(*address)))
    }

    /// Checks the addresses of forwarding rules to remove: each must be in
    /// the `prevResult` the runtime passed, since a DEL may run after the
    /// container is gone. Without one, they must be configured in the
    /// container as for an add.
    pub fn removed_forward_addresses(
        &self,
        kernel: &mut Kernel,
        owner: &Owner,
        addresses: &[IpAddr],
        result_addresses: Option<&[IpAddr]>,
    ) -> Option<Decision> {
        let Some(known) = result_addresses else {
            return self.forward_addresses(kernel, owner, addresses);
        };
        let foreign = addresses.iter().find(|address| !known.contains(address))?;
        Some(Decision::ownership(
            "forwardAddresses",
            format!("{foreign} is not an address of this attachment's previous result"),
        ))
    }

    /// Checks an admin chain name: built-in chains and targets are shared by
    /// the whole node.
    pub fn admin_chain(&self, name: &str) -> Option<Decision> {
        RESERVED_CHAINS.contains(&name).then(|| {
            Decision::ownership(
                "filterChains",
                format!("{name} is a built-in chain or target, not an admin chain"),
            )
        })
    }

    /// Checks a MAC spoof check to install. Its link must be a veth this
    /// chain operation created, because a check on a bridge or another
    /// container's port would drop that traffic. Its MAC must be the MAC of
    /// the attachment's interface in the container, so that a plugin cannot
    /// let its container send as another.
    pub fn spoof_check(
        &self,
        kernel: &mut Kernel,
        owner: &Owner,
        spec: &SpoofCheckSpec,
    ) -> Option<Decision> {
        let link = &spec.host_link;
        if !self.created.iter().any(|created| created == link) {
            return Some(Decision::ownership(
                "spoofCheck",
                format!("host link {link:?} was not created for this attachment"),
            ));
        }
        if let Ok(Some(info)) = kernel.netlink.get_link(Namespace::Host, link)
            && info.kind != "veth"
        {
            return Some(Decision::ownership(
                "spoofCheck",
                format!(
                    "host link {link:?} is a {} and not a veth: a spoof check guards a container's host veth",
                    info.kind
                ),
            ));
        }

        let ifname = &owner.ifname;
        match kernel.netlink.get_link(Namespace::Container, ifname) {
            Ok(Some(info)) if info.mac == spec.mac => None,
            Ok(Some(info)) => Some(Decision::ownership(
                "spoofCheck",
                format!(
                    "MAC {} is not the MAC of {ifname} in this container, {}",
                    spec.mac, info.mac
                ),
            )),
            _ => Some(Decision::ownership(
                "spoofCheck",
                format!("{ifname} does not exist in this container, so its MAC is unknown"),
            )),
        }
    }
}
