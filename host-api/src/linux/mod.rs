//! Linux implementations of the kernel traits: links, addresses and routes
//! over rtnetlink, kernel parameters under `/proc/sys`, NAT and forwarding
//! rules through `iptables -S`, `iptables-save` and `iptables-restore`, and
//! MAC spoof checks and the nftables NAT backend through `nft -j`.

mod conntrack;
mod iptables;
mod netlink;
pub mod netns;
mod nft;
mod nft_nat;
mod spoof_check;
mod sysctl;

pub use iptables::{FirewallOptions, IptablesFilter, IptablesFirewall, LocalnetRouting};
pub use netlink::LinuxNetlink;
pub use nft_nat::NftNatRules;
pub use spoof_check::NftSpoofCheck;
pub use sysctl::ProcSysctl;

use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::kernel::{
    Kernel, KernelError, KernelErrorKind, LinkInfo, LinkSettings, Namespace, Netlink, RouteSpec,
    VethSpec,
};
use netns::NetnsHandles;

/// Maps an errno to the kind of kernel error callers branch on.
pub(crate) fn kind_from_errno(errno: i32) -> KernelErrorKind {
    match errno {
        libc::ENOENT | libc::ENODEV | libc::ESRCH => KernelErrorKind::NotFound,
        libc::EEXIST => KernelErrorKind::Exists,
        libc::EINVAL | libc::ERANGE => KernelErrorKind::Invalid,
        _ => KernelErrorKind::Failed,
    }
}

/// Opens the Linux kernel for one invocation. Rtnetlink and sysctl share one
/// pair of namespace handles. The firewall enables `route_localnet` on the
/// host's route device to a container, as the reference portmap plugin does
/// for SNAT of IPv4 port mappings.
pub fn open_kernel(container_netns: Option<&Path>) -> Result<Kernel, KernelError> {
    let namespaces = Arc::new(NetnsHandles::open(container_netns)?);
    let netlink = Arc::new(Mutex::new(LinuxNetlink::with_handles(namespaces.clone())?));

    let localnet = LocalnetRouting {
        netlink: netlink.clone(),
        sysctl: Box::new(ProcSysctl::with_handles(namespaces.clone())),
    };
    let firewall = IptablesFirewall::new(FirewallOptions {
        localnet: Some(localnet),
        ..FirewallOptions::default()
    });

    Ok(Kernel {
        netlink: Box::new(SharedNetlink(netlink)),
        sysctl: Box::new(ProcSysctl::with_handles(namespaces)),
        firewall: Box::new(firewall),
        filter: Box::new(IptablesFilter::default()),
        spoof_check: Box::new(NftSpoofCheck::default()),
        nft_nat: Box::new(NftNatRules::default()),
    })
}

/// A [`Netlink`] behind a mutex, so the firewall can look up route devices
/// over the same connections the host API uses.
struct SharedNetlink(Arc<Mutex<LinuxNetlink>>);

impl SharedNetlink {
    fn lock(&self) -> std::sync::MutexGuard<'_, LinuxNetlink> {
        // A panic while the lock was held leaves no half-written state in
        // LinuxNetlink itself, so a poisoned lock is still usable.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Netlink for SharedNetlink {
    fn ensure_bridge(&mut self, spec: &crate::kernel::BridgeSpec) -> Result<LinkInfo, KernelError> {
        self.lock().ensure_bridge(spec)
    }

    fn create_veth(&mut self, spec: &VethSpec) -> Result<(LinkInfo, LinkInfo), KernelError> {
        self.lock().create_veth(spec)
    }

    fn create_host_veth(
        &mut self,
        spec: &crate::kernel::HostVethSpec,
    ) -> Result<(LinkInfo, LinkInfo), KernelError> {
        self.lock().create_host_veth(spec)
    }

    fn get_link(&mut self, ns: Namespace, name: &str) -> Result<Option<LinkInfo>, KernelError> {
        self.lock().get_link(ns, name)
    }

    fn configure_link(
        &mut self,
        ns: Namespace,
        name: &str,
        settings: &LinkSettings,
    ) -> Result<LinkInfo, KernelError> {
        self.lock().configure_link(ns, name, settings)
    }

    fn set_port_vlans(
        &mut self,
        name: &str,
        vlans: &crate::kernel::PortVlans,
    ) -> Result<(), KernelError> {
        self.lock().set_port_vlans(name, vlans)
    }

    fn delete_link(&mut self, ns: Namespace, name: &str) -> Result<bool, KernelError> {
        self.lock().delete_link(ns, name)
    }

    fn add_address(
        &mut self,
        ns: Namespace,
        link: &str,
        address: ipnet::IpNet,
    ) -> Result<(), KernelError> {
        self.lock().add_address(ns, link, address)
    }

    fn delete_address(
        &mut self,
        ns: Namespace,
        link: &str,
        address: ipnet::IpNet,
    ) -> Result<(), KernelError> {
        self.lock().delete_address(ns, link, address)
    }

    fn list_addresses(
        &mut self,
        ns: Namespace,
        link: &str,
    ) -> Result<Vec<ipnet::IpNet>, KernelError> {
        self.lock().list_addresses(ns, link)
    }

    fn add_route(&mut self, ns: Namespace, route: &RouteSpec) -> Result<(), KernelError> {
        self.lock().add_route(ns, route)
    }

    fn delete_route(&mut self, ns: Namespace, route: &RouteSpec) -> Result<(), KernelError> {
        self.lock().delete_route(ns, route)
    }

    fn list_routes(&mut self, ns: Namespace, link: &str) -> Result<Vec<RouteSpec>, KernelError> {
        self.lock().list_routes(ns, link)
    }

    fn route_device(
        &mut self,
        destination: std::net::IpAddr,
    ) -> Result<Option<String>, KernelError> {
        self.lock().route_device(destination)
    }

    fn has_container(&self) -> bool {
        self.lock().has_container()
    }

    fn settle(&mut self) -> Result<(), KernelError> {
        self.lock().settle()
    }
}
