//! One `Host` trait implementation per WIT interface. Each method parses its
//! arguments into kernel types and goes through [`HostContext::dispatch`].

use super::cniwasm::host::{address, ipam, link, log, nat, route, sysctl, types};
use super::convert::{port_map_from_wit, route_from_wit, route_to_wit};
use super::{
    HostContext, HostError, IpamCommand, Netns, WitCniError, check_ifname, namespace, parse_net,
    random_veth_name,
};
use crate::kernel::{self, Namespace};

type HostResult<T> = wasmtime::Result<Result<T, HostError>>;

impl types::Host for HostContext {}

impl link::Host for HostContext {
    fn ensure_bridge(&mut self, spec: link::BridgeSpec) -> HostResult<link::LinkInfo> {
        if let Err(error) = check_ifname(&spec.name) {
            return Ok(Err(error));
        }
        let target = spec.name.clone();
        let created_links = self.created_links.clone();
        self.dispatch("link.ensure-bridge", &target, |kernel, _| {
            let existed = kernel
                .netlink
                .get_link(Namespace::Host, &spec.name)?
                .is_some();
            let spec = kernel::BridgeSpec {
                name: spec.name,
                mtu: spec.mtu,
                promisc: spec.promisc,
                vlan_filtering: spec.vlan_filtering,
            };
            let info = kernel.netlink.ensure_bridge(&spec)?;
            if !existed {
                created_links
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .push(spec.name);
            }
            Ok(info.into())
        })
    }

    fn create_veth(&mut self, spec: link::VethSpec) -> HostResult<link::VethPair> {
        if let Err(error) = check_ifname(&spec.container_name) {
            return Ok(Err(error));
        }
        let target = spec.container_name.clone();
        self.dispatch("link.create-veth", &target, |kernel, _| {
            let spec = kernel::VethSpec {
                host_name: random_veth_name()?,
                container_name: spec.container_name,
                mtu: spec.mtu,
                container_mac: spec.container_mac,
            };
            let (host, container) = kernel.netlink.create_veth(&spec)?;
            Ok(link::VethPair {
                host: host.into(),
                container: container.into(),
            })
        })
    }

    fn configure(
        &mut self,
        ns: Netns,
        name: String,
        settings: link::LinkSettings,
    ) -> HostResult<link::LinkInfo> {
        self.dispatch("link.configure", &name, |kernel, _| {
            let info = kernel
                .netlink
                .configure_link(namespace(ns), &name, &settings.into())?;
            Ok(info.into())
        })
    }

    fn get(&mut self, ns: Netns, name: String) -> HostResult<Option<link::LinkInfo>> {
        self.dispatch("link.get", &name, |kernel, _| {
            Ok(kernel
                .netlink
                .get_link(namespace(ns), &name)?
                .map(Into::into))
        })
    }

    fn delete(&mut self, ns: Netns, name: String) -> HostResult<bool> {
        self.dispatch("link.delete", &name, |kernel, _| {
            let ns = namespace(ns);
            if ns == Namespace::Container && !kernel.netlink.has_container() {
                return Ok(false);
            }
            Ok(kernel.netlink.delete_link(ns, &name)?)
        })
    }
}

impl address::Host for HostContext {
    fn add(&mut self, ns: Netns, ifname: String, cidr: String) -> HostResult<()> {
        let target = format!("{cidr} on {ifname}");
        self.dispatch("address.add", &target, |kernel, _| {
            let address = parse_net(&cidr, "address")?;
            Ok(kernel
                .netlink
                .add_address(namespace(ns), &ifname, address)?)
        })
    }

    fn del(&mut self, ns: Netns, ifname: String, cidr: String) -> HostResult<()> {
        let target = format!("{cidr} on {ifname}");
        self.dispatch("address.del", &target, |kernel, _| {
            let address = parse_net(&cidr, "address")?;
            Ok(kernel
                .netlink
                .delete_address(namespace(ns), &ifname, address)?)
        })
    }

    fn list(&mut self, ns: Netns, ifname: String) -> HostResult<Vec<String>> {
        self.dispatch("address.list", &ifname, |kernel, _| {
            let mut addresses = kernel.netlink.list_addresses(namespace(ns), &ifname)?;
            addresses.sort_by_key(|address| address.addr().is_ipv6());
            Ok(addresses.iter().map(ToString::to_string).collect())
        })
    }
}

impl route::Host for HostContext {
    fn add(&mut self, ns: Netns, spec: route::RouteSpec) -> HostResult<()> {
        let target = spec.dst.clone();
        self.dispatch("route.add", &target, |kernel, _| {
            Ok(kernel
                .netlink
                .add_route(namespace(ns), &route_from_wit(&spec)?)?)
        })
    }

    fn del(&mut self, ns: Netns, spec: route::RouteSpec) -> HostResult<()> {
        let target = spec.dst.clone();
        self.dispatch("route.del", &target, |kernel, _| {
            Ok(kernel
                .netlink
                .delete_route(namespace(ns), &route_from_wit(&spec)?)?)
        })
    }

    fn list(&mut self, ns: Netns, dev: String) -> HostResult<Vec<route::RouteSpec>> {
        self.dispatch("route.list", &dev, |kernel, _| {
            let routes = kernel.netlink.list_routes(namespace(ns), &dev)?;
            Ok(routes.into_iter().map(route_to_wit).collect())
        })
    }
}

/// Converts a dot-form key (`net.ipv4.ip_forward`) to slash form. Slash-form
/// keys pass unchanged, since interface names in them may contain dots.
fn sysctl_key(key: &str) -> String {
    if key.contains('/') {
        key.to_string()
    } else {
        key.replace('.', "/")
    }
}

impl sysctl::Host for HostContext {
    fn get(&mut self, ns: Netns, key: String) -> HostResult<String> {
        let key = sysctl_key(&key);
        self.dispatch("sysctl.get", &key.clone(), |kernel, _| {
            Ok(kernel.sysctl.get(namespace(ns), &key)?)
        })
    }

    fn set(&mut self, ns: Netns, key: String, value: String) -> HostResult<()> {
        let key = sysctl_key(&key);
        let target = format!("{key}={value}");
        self.dispatch("sysctl.set", &target, |kernel, _| {
            Ok(kernel.sysctl.set(namespace(ns), &key, &value)?)
        })
    }
}

impl nat::Host for HostContext {
    fn add_port_mappings(&mut self, spec: nat::PortMapSpec) -> HostResult<()> {
        let target = spec.container_address.clone();
        self.dispatch("nat.add-port-mappings", &target, |kernel, owner| {
            Ok(kernel
                .firewall
                .add_port_mappings(owner, &port_map_from_wit(&spec)?)?)
        })
    }

    fn check_port_mappings(&mut self, spec: nat::PortMapSpec) -> HostResult<()> {
        let target = spec.container_address.clone();
        self.dispatch("nat.check-port-mappings", &target, |kernel, owner| {
            Ok(kernel
                .firewall
                .check_port_mappings(owner, &port_map_from_wit(&spec)?)?)
        })
    }

    fn remove_port_mappings(&mut self) -> HostResult<()> {
        let target = self.owner.dnat_chain();
        self.dispatch("nat.remove-port-mappings", &target, |kernel, owner| {
            Ok(kernel.firewall.remove_port_mappings(owner)?)
        })
    }

    fn add_masquerade(&mut self, address: String) -> HostResult<()> {
        self.dispatch("nat.add-masquerade", &address.clone(), |kernel, owner| {
            let address = parse_net(&address, "masquerade source")?;
            Ok(kernel.firewall.add_masquerade(owner, address)?)
        })
    }

    fn check_masquerade(&mut self, address: String) -> HostResult<()> {
        self.dispatch("nat.check-masquerade", &address.clone(), |kernel, owner| {
            let address = parse_net(&address, "masquerade source")?;
            Ok(kernel.firewall.check_masquerade(owner, address)?)
        })
    }

    fn remove_masquerade(&mut self) -> HostResult<()> {
        let target = self.owner.masquerade_chain();
        self.dispatch("nat.remove-masquerade", &target, |kernel, owner| {
            Ok(kernel.firewall.remove_masquerade(owner)?)
        })
    }
}

impl HostContext {
    fn delegate_ipam(&mut self, command: IpamCommand) -> Result<Option<String>, WitCniError> {
        self.host_calls += 1;
        tracing::debug!(plugin = %self.plugin, command = command.as_str(), "delegating to IPAM plugin");

        self.delegate
            .run_ipam(command)
            .map_err(|error| WitCniError {
                code: error.code,
                msg: error.msg,
                details: error.details,
            })
    }
}

impl ipam::Host for HostContext {
    fn add(&mut self) -> wasmtime::Result<Result<String, WitCniError>> {
        Ok(self
            .delegate_ipam(IpamCommand::Add)
            .map(Option::unwrap_or_default))
    }

    fn del(&mut self) -> wasmtime::Result<Result<(), WitCniError>> {
        Ok(self.delegate_ipam(IpamCommand::Del).map(drop))
    }

    fn check(&mut self) -> wasmtime::Result<Result<(), WitCniError>> {
        Ok(self.delegate_ipam(IpamCommand::Check).map(drop))
    }
}

impl log::Host for HostContext {
    fn emit(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let plugin = self.plugin.as_str();
        match level {
            log::Level::Trace => tracing::trace!(plugin, "{message}"),
            log::Level::Debug => tracing::debug!(plugin, "{message}"),
            log::Level::Info => tracing::info!(plugin, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, "{message}"),
            log::Level::Error => tracing::error!(plugin, "{message}"),
        }
        Ok(())
    }
}
