//! The seam between the host API and the kernel: one small trait per
//! subsystem. The host API checks policy and ownership, then calls these; the
//! Linux implementations live in [`crate::linux`], and a recording fake in
//! `crate::testing` (feature `testing`).

mod error;
mod owner;

pub use error::{KernelError, KernelErrorKind};
pub use owner::Owner;

use ipnet::IpNet;
use std::net::IpAddr;

/// The namespace an operation runs in. `Container` is the namespace at
/// `CNI_NETNS`, which the kernel implementation opened when it was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Namespace {
    Host,
    Container,
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Namespace::Host => f.write_str("host netns"),
            Namespace::Container => f.write_str("container netns"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub name: String,
    pub index: u32,
    /// rtnetlink kind (`bridge`, `veth`, ...); empty when the link has none.
    pub kind: String,
    /// Lower-case, colon-separated hex.
    pub mac: String,
    pub mtu: u32,
    pub up: bool,
    /// Lower-case operational state: `up`, `down`, `unknown`, `lowerlayerdown`, ...
    pub oper_state: String,
    /// Name of the bridge this link is a port of, if any.
    pub master: Option<String>,
    pub promisc: bool,
    /// IFF_ALLMULTI: the link receives all multicast frames.
    pub allmulti: bool,
    /// Transmit queue length in packets.
    pub tx_queue_len: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSpec {
    pub name: String,
    /// MTU in bytes, for a bridge that does not exist yet.
    pub mtu: Option<u32>,
    pub promisc: bool,
    pub vlan_filtering: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethSpec {
    /// Name of the end in the host namespace.
    pub host_name: String,
    /// Name of the end created directly in the container namespace.
    pub container_name: String,
    /// MTU in bytes for both ends.
    pub mtu: Option<u32>,
    /// MAC of the container end, colon-separated hex.
    pub container_mac: Option<String>,
}

/// A veth pair with both ends in the host namespace, such as the link that
/// carries a bridge's gateway address on one VLAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostVethSpec {
    pub name: String,
    pub peer_name: String,
    /// MTU in bytes for both ends.
    pub mtu: Option<u32>,
}

/// Changes to a link; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkSettings {
    pub up: Option<bool>,
    pub mtu: Option<u32>,
    pub mac: Option<String>,
    /// Bridge to enslave the link to, in the same namespace.
    pub master: Option<String>,
    pub hairpin: Option<bool>,
    /// Bridge-port isolated flag.
    pub isolated: Option<bool>,
    pub promisc: Option<bool>,
    pub allmulti: Option<bool>,
    /// Transmit queue length in packets.
    pub tx_queue_len: Option<u32>,
}

/// One VLAN ID, or a range of them, on a bridge port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortVlan {
    /// First VLAN ID, 1 to 4094.
    pub min_id: u16,
    /// Last VLAN ID; equal to `min_id` for a single VLAN.
    pub max_id: u16,
    /// Untagged ingress frames join this VLAN (a single VLAN only).
    pub pvid: bool,
    /// Egress frames of these VLANs leave untagged.
    pub untagged: bool,
}

/// The VLAN membership to give a bridge port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortVlans {
    /// Remove the kernel's default VLAN 1 from the port before adding.
    pub remove_default: bool,
    pub vlans: Vec<PortVlan>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub dst: IpNet,
    pub gateway: Option<IpAddr>,
    pub device: Option<String>,
    pub metric: Option<u32>,
    /// Preferred source address (RTA_PREFSRC).
    pub source: Option<IpAddr>,
}

/// Links, addresses and routes over rtnetlink.
pub trait Netlink {
    /// Creates the bridge in the host namespace unless it exists, and sets it
    /// up. Fails with `Exists` when a link of that name is not a bridge.
    fn ensure_bridge(&mut self, spec: &BridgeSpec) -> Result<LinkInfo, KernelError>;

    /// Creates a veth pair whose container end is created directly in the
    /// container namespace. Returns (host end, container end).
    fn create_veth(&mut self, spec: &VethSpec) -> Result<(LinkInfo, LinkInfo), KernelError>;

    /// Creates a veth pair with both ends in the host namespace, both down.
    /// Returns (`name` end, `peer_name` end). Fails with `Exists` when
    /// either name is taken.
    fn create_host_veth(
        &mut self,
        spec: &HostVethSpec,
    ) -> Result<(LinkInfo, LinkInfo), KernelError>;

    fn get_link(&mut self, ns: Namespace, name: &str) -> Result<Option<LinkInfo>, KernelError>;

    fn configure_link(
        &mut self,
        ns: Namespace,
        name: &str,
        settings: &LinkSettings,
    ) -> Result<LinkInfo, KernelError>;

    /// Sets the VLANs of a bridge port in the host namespace: removes
    /// VLAN 1 first when asked, then adds each entry.
    fn set_port_vlans(&mut self, name: &str, vlans: &PortVlans) -> Result<(), KernelError>;

    /// Deletes a link; returns false when it did not exist. The deletion may
    /// still be running when this returns: [`Netlink::settle`] waits for it
    /// and reports its failure, and every other method waits for it first.
    fn delete_link(&mut self, ns: Namespace, name: &str) -> Result<bool, KernelError>;

    /// Adds an address; an address the link has already is not an error.
    fn add_address(&mut self, ns: Namespace, link: &str, address: IpNet)
    -> Result<(), KernelError>;

    /// Deletes an address; an absent address is not an error.
    fn delete_address(
        &mut self,
        ns: Namespace,
        link: &str,
        address: IpNet,
    ) -> Result<(), KernelError>;

    /// Lists every address of `link`, including IPv6 link-local ones.
    fn list_addresses(&mut self, ns: Namespace, link: &str) -> Result<Vec<IpNet>, KernelError>;

    /// Adds a route to the main table; an identical existing route is not an error.
    fn add_route(&mut self, ns: Namespace, route: &RouteSpec) -> Result<(), KernelError>;

    /// Deletes the first main-table route that matches, where an unset
    /// gateway, device or metric matches any. No match fails with `NotFound`.
    fn delete_route(&mut self, ns: Namespace, route: &RouteSpec) -> Result<(), KernelError>;

    /// Lists main-table routes whose output device is `link`.
    fn list_routes(&mut self, ns: Namespace, link: &str) -> Result<Vec<RouteSpec>, KernelError>;

    /// Returns the output device of the host's route to `destination`, as
    /// `ip route get` does.
    fn route_device(&mut self, destination: IpAddr) -> Result<Option<String>, KernelError>;

    /// Tells whether the container namespace is available (a path was given
    /// and it opened).
    fn has_container(&self) -> bool;

    /// Waits for work still running in the background, such as a link
    /// deletion, and returns the first failure not reported yet.
    fn settle(&mut self) -> Result<(), KernelError> {
        Ok(())
    }
}

/// Kernel parameters under /proc/sys/net.
pub trait Sysctl {
    /// Reads a key in slash form relative to /proc/sys (`net/ipv4/ip_forward`).
    fn get(&mut self, ns: Namespace, key: &str) -> Result<String, KernelError>;

    fn set(&mut self, ns: Namespace, key: &str, value: &str) -> Result<(), KernelError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
    /// `None` matches any local address, as `0.0.0.0` and `::` do.
    pub host_ip: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapSpec {
    /// The container address with its prefix length (`10.244.10.2/24`).
    pub container_address: IpNet,
    pub mappings: Vec<PortMapping>,
    pub snat: bool,
    pub masq_all: bool,
    /// Mark bit for masquerade requests, 0 to 31 (the reference default is 13).
    pub mark_bit: u8,
    /// An existing chain that marks for masquerade, used in place of
    /// `CNI-HOSTPORT-SETMARK` and the mark bit.
    pub mark_chain: Option<String>,
    /// Match arguments in front of the entry rules, one token each.
    pub conditions: Vec<String>,
}

/// NAT rules owned by one attachment. Chain names and comments derive from
/// the owner, as the reference plugins derive them, so DEL needs no saved state.
///
/// An implementation may defer removals until [`Firewall::settle`], so that
/// the removals of several plugins go into one commit. Every other method
/// applies the deferred removals first.
pub trait Firewall {
    /// Installs the port mappings of one family, replacing the owner's earlier
    /// rules of that family.
    fn add_port_mappings(&mut self, owner: &Owner, spec: &PortMapSpec) -> Result<(), KernelError>;

    fn check_port_mappings(&mut self, owner: &Owner, spec: &PortMapSpec)
    -> Result<(), KernelError>;

    /// Removes the owner's port mappings in both families, now or at the
    /// next [`Firewall::settle`].
    fn remove_port_mappings(&mut self, owner: &Owner) -> Result<(), KernelError>;

    /// Masquerades traffic from `address` leaving its subnet, except multicast.
    fn add_masquerade(&mut self, owner: &Owner, address: IpNet) -> Result<(), KernelError>;

    fn check_masquerade(&mut self, owner: &Owner, address: IpNet) -> Result<(), KernelError>;

    /// Removes the owner's masquerade rules in both families, now or at the
    /// next [`Firewall::settle`].
    fn remove_masquerade(&mut self, owner: &Owner) -> Result<(), KernelError>;

    /// Applies the deferred removals and returns the first failure not
    /// reported yet.
    fn settle(&mut self) -> Result<(), KernelError> {
        Ok(())
    }
}

/// The forwarding rules of one attachment in the filter table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardSpec {
    /// The container's addresses, of either family.
    pub addresses: Vec<IpAddr>,
    /// The admin chain `CNI-FORWARD` jumps to first.
    pub admin_chain: String,
}

/// Accept rules in the filter table's `CNI-FORWARD` chain, as the reference
/// firewall plugin's iptables backend keeps them. The rules carry no owner
/// comment, so the host API checks that each address belongs to the
/// attachment before it calls these.
pub trait ForwardFilter {
    /// Creates the missing chains and jumps, and appends the missing accept
    /// rules, in each family that has an address.
    fn add_forward_rules(&mut self, spec: &ForwardSpec) -> Result<(), KernelError>;

    /// Fails with `NotFound` naming the first chain, jump or rule missing.
    fn check_forward_rules(&mut self, spec: &ForwardSpec) -> Result<(), KernelError>;

    /// Deletes the accept rules of `addresses`; the chains and jumps stay,
    /// since other containers share them.
    fn remove_forward_rules(&mut self, addresses: &[IpAddr]) -> Result<(), KernelError>;
}

/// The MAC spoof check of one attachment's host veth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoofCheckSpec {
    /// The host end of the veth pair, a bridge port: frames that enter the
    /// bridge through it are checked.
    pub host_link: String,
    /// The only source MAC allowed, lower-case colon-separated hex.
    pub mac: String,
}

/// MAC spoof checks in the nftables `bridge` family, in the layout of the
/// reference bridge plugin's `macspoofchk` (containernetworking/plugins
/// v1.1.1, `pkg/link/spoofcheck.go`). Table `nat` has base chain
/// `PREROUTING`, shared by all attachments. Per attachment, a rule there
/// jumps to chain `cni-br-iface-<id>`, which jumps to
/// `cni-br-iface-<id>-mac`, which returns frames from the allowed MAC and
/// drops the rest. Names and the rule comment derive from
/// [`Owner::spoof_check_id`], so DEL needs no saved state.
pub trait SpoofCheck {
    /// Installs the owner's spoof check, replacing its earlier rules, the
    /// jump from `PREROUTING` included. The table and base chain are
    /// created when missing.
    fn add_spoof_check(&mut self, owner: &Owner, spec: &SpoofCheckSpec) -> Result<(), KernelError>;

    /// Removes the owner's jumps from `PREROUTING` and its two chains, and
    /// keeps the shared table and base chain. Succeeds when none exist.
    fn remove_spoof_check(&mut self, owner: &Owner) -> Result<(), KernelError>;
}

/// The left side of one match of an nftables port-mapping condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NftSelector {
    /// A header field such as `ip saddr` or `tcp dport`.
    Payload {
        protocol: &'static str,
        field: &'static str,
    },
    /// A packet property such as `iifname` or `mark`.
    Meta { key: &'static str },
}

/// The right side of one match of an nftables port-mapping condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NftValue {
    Address(IpAddr),
    /// A network with a prefix length shorter than the address's.
    Prefix(IpNet),
    Number(u32),
    /// An inclusive range, such as ports `8000-8999`.
    Range(u32, u32),
    /// An interface name, where a trailing `*` matches any suffix.
    Name(String),
}

/// One checked match of an nftables port-mapping condition, such as
/// `ip daddr != 10.96.0.0/12`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftMatch {
    pub selector: NftSelector,
    /// `!=` rather than `==`.
    pub negated: bool,
    pub value: NftValue,
}

/// The port mappings of one address family, for the nftables backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftPortMapSpec {
    /// The container address with its prefix length (`10.244.10.2/24`).
    pub container_address: IpNet,
    /// Mappings whose host IP, when set, has the container address's family.
    pub mappings: Vec<PortMapping>,
    /// Masquerade hairpin traffic and, for IPv4, traffic from 127.0.0.1.
    pub snat: bool,
    /// Masquerade traffic from any source to the container, not only its
    /// own hairpin traffic.
    pub masq_all: bool,
    /// Matches put in front of the entry rules in `prerouting` and `output`.
    pub conditions: Vec<NftMatch>,
}

/// Port mappings and masquerade as nftables rules, in the layouts of the
/// reference plugins' nftables backends (containernetworking/plugins,
/// `plugins/meta/portmap/portmap_nftables.go` and
/// `pkg/ip/ipmasq_nftables_linux.go`, v1.9.1 and the later fix that makes
/// `masqAll` match any source).
///
/// Port mappings live in tables `ip cni_hostport` and `ip6 cni_hostport`,
/// shared by all attachments, and each rule of an attachment carries its
/// container id as comment. Masquerade lives in table `inet
/// cni_plugins_masquerade`, with comments derived from
/// [`Owner::masquerade_rule_hash`]. So DEL needs no saved state.
pub trait NftNat {
    /// Installs the port mappings of one family: creates the tables and
    /// chains when missing, rewrites the shared entry rules, and appends
    /// the owner's rules, as the reference does, without removing earlier
    /// ones.
    fn add_port_mappings(
        &mut self,
        owner: &Owner,
        spec: &NftPortMapSpec,
    ) -> Result<(), KernelError>;

    /// Fails with `NotFound` naming the chain when fewer rules carry the
    /// owner's comment than the spec needs.
    fn check_port_mappings(
        &mut self,
        owner: &Owner,
        spec: &NftPortMapSpec,
    ) -> Result<(), KernelError>;

    /// Removes the rules commented with the owner's container id in both
    /// families, and keeps the shared tables and chains. Succeeds when
    /// there are none.
    fn remove_port_mappings(&mut self, owner: &Owner) -> Result<(), KernelError>;

    /// Masquerades traffic from each address to destinations outside its
    /// subnet, except multicast, replacing the owner's earlier rules.
    fn add_masquerade(&mut self, owner: &Owner, addresses: &[IpNet]) -> Result<(), KernelError>;

    /// Removes the owner's masquerade rules. Succeeds when there are none.
    fn remove_masquerade(&mut self, owner: &Owner) -> Result<(), KernelError>;
}

/// The kernel behind the host API: one implementation per subsystem. The
/// parts are `Send` because wasmtime store data must be.
pub struct Kernel {
    pub netlink: Box<dyn Netlink + Send>,
    pub sysctl: Box<dyn Sysctl + Send>,
    pub firewall: Box<dyn Firewall + Send>,
    pub filter: Box<dyn ForwardFilter + Send>,
    pub spoof_check: Box<dyn SpoofCheck + Send>,
    pub nft_nat: Box<dyn NftNat + Send>,
}

impl Kernel {
    /// Waits for the background work of every subsystem and returns the
    /// first failure. The NAT removals go first, so that their commit runs
    /// while a link deletion still waits in the kernel. Both mostly wait:
    /// on a 2-core VM an `iptables-restore` that deletes rules took 8 to
    /// 19 ms (one that adds them, 3.5 ms), and a veth deletion 17 to 26 ms.
    pub fn settle(&mut self) -> Result<(), KernelError> {
        let nat = self.firewall.settle();
        let links = self.netlink.settle();
        match (nat, links) {
            (Err(error), Err(also)) => {
                tracing::error!(error = %also, "a link deletion failed after a NAT removal failed");
                Err(error)
            }
            (nat, links) => nat.and(links),
        }
    }
}
