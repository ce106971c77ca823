//! One `Host` trait implementation per WIT interface. Each method parses its
//! arguments into kernel types, describes the request for policy and audit,
//! names its ownership rule, and goes through [`HostContext::dispatch`].

use serde_json::json;

use super::cniwasm::host::{
    address, dns, filter, ipam, ipam_store, link, log, nat, route, spoof_check, state, sysctl,
    types,
};
use super::convert::{
    port_map_from_wit, port_vlans_from_wit, route_from_wit, route_to_wit, spoof_check_from_wit,
};
use super::{
    Call, HostContext, HostError, IpamCommand, Netns, WitCniError, check_ifname, namespace,
    parse_net, random_veth_name,
};
use crate::kernel::{self, Namespace};
use crate::policy::{Request, Side};

type HostResult<T> = wasmtime::Result<Result<T, HostError>>;

fn side(ns: Netns) -> Side {
    match ns {
        Netns::Host => Side::Host,
        Netns::Container => Side::Container,
    }
}

fn ns_name(ns: Netns) -> &'static str {
    match ns {
        Netns::Host => "host",
        Netns::Container => "container",
    }
}

impl types::Host for HostContext {}

impl link::Host for HostContext {
    fn ensure_bridge(&mut self, spec: link::BridgeSpec) -> HostResult<link::LinkInfo> {
        if let Err(error) = check_ifname(&spec.name) {
            return Ok(Err(error));
        }
        let name = spec.name.clone();
        let call = Call {
            operation: "link.ensure-bridge",
            arguments: json!({"name": spec.name, "mtu": spec.mtu, "promisc": spec.promisc, "vlanFiltering": spec.vlan_filtering}),
            requests: vec![Request::EnsureBridge {
                name: &name,
                mtu: spec.mtu,
            }],
        };
        let created_links = self.created_links.clone();

        self.dispatch(
            call,
            |kernel, rules| rules.bridge(kernel, &spec.name),
            |kernel, _| {
                let existed = kernel
                    .netlink
                    .get_link(Namespace::Host, &spec.name)?
                    .is_some();
                let spec = kernel::BridgeSpec {
                    name: spec.name.clone(),
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
            },
        )
    }

    fn ensure_vlan_gateway(&mut self, spec: link::VlanGatewaySpec) -> HostResult<link::LinkInfo> {
        self.serve_vlan_gateway(spec)
    }

    fn create_veth(&mut self, spec: link::VethSpec) -> HostResult<link::VethPair> {
        if let Err(error) = check_ifname(&spec.container_name) {
            return Ok(Err(error));
        }
        let name = spec.container_name.clone();
        let call = Call {
            operation: "link.create-veth",
            arguments: json!({"containerName": spec.container_name, "mtu": spec.mtu, "containerMac": spec.container_mac}),
            requests: vec![Request::CreateVeth {
                container_name: &name,
                mtu: spec.mtu,
            }],
        };
        let created_links = self.created_links.clone();

        self.dispatch(
            call,
            |_, _| None,
            |kernel, _| {
                let spec = kernel::VethSpec {
                    host_name: random_veth_name()?,
                    container_name: spec.container_name.clone(),
                    mtu: spec.mtu,
                    container_mac: spec.container_mac.clone(),
                };
                let (host, container) = kernel.netlink.create_veth(&spec)?;
                created_links
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .push(host.name.clone());
                Ok(link::VethPair {
                    host: host.into(),
                    container: container.into(),
                })
            },
        )
    }

    fn configure(
        &mut self,
        ns: Netns,
        name: String,
        settings: link::LinkSettings,
    ) -> HostResult<link::LinkInfo> {
        let call = Call {
            operation: "link.configure",
            arguments: json!({"netns": ns_name(ns), "name": name, "up": settings.up, "mtu": settings.mtu,
                "mac": settings.mac, "master": settings.master, "hairpin": settings.hairpin, "isolated": settings.isolated, "promisc": settings.promisc,
                "allmulti": settings.allmulti, "txQueueLen": settings.tx_queue_len}),
            requests: vec![Request::ConfigureLink {
                side: side(ns),
                name: &name,
                mtu: settings.mtu,
                tx_queue_len: settings.tx_queue_len,
            }],
        };
        let master = settings.master.clone();

        self.dispatch(
            call,
            |kernel, rules| {
                if ns != Netns::Host {
                    return None;
                }
                rules
                    .host_link(kernel, &name)
                    .or_else(|| master.as_deref().and_then(|m| rules.host_link(kernel, m)))
            },
            |kernel, _| {
                let info = kernel
                    .netlink
                    .configure_link(namespace(ns), &name, &settings.into())?;
                Ok(info.into())
            },
        )
    }

    fn set_port_vlans(&mut self, name: String, vlans: link::PortVlans) -> HostResult<()> {
        let parsed = match port_vlans_from_wit(&vlans) {
            Ok(parsed) => parsed,
            Err(error) => return Ok(Err(error)),
        };
        let entries: Vec<_> = parsed
            .vlans
            .iter()
            .map(|v| json!({"minId": v.min_id, "maxId": v.max_id, "pvid": v.pvid, "untagged": v.untagged}))
            .collect();
        let call = Call {
            operation: "link.set-port-vlans",
            arguments: json!({"name": name, "removeDefault": parsed.remove_default, "vlans": entries}),
            requests: vec![Request::PortVlans { name: &name }],
        };

        self.dispatch(
            call,
            |kernel, rules| rules.bridge_port(kernel, &name),
            |kernel, _| Ok(kernel.netlink.set_port_vlans(&name, &parsed)?),
        )
    }

    fn get(&mut self, ns: Netns, name: String) -> HostResult<Option<link::LinkInfo>> {
        let call = Call {
            operation: "link.get",
            arguments: json!({"netns": ns_name(ns), "name": name}),
            requests: vec![Request::GetLink {
                side: side(ns),
                name: &name,
            }],
        };
        self.dispatch(
            call,
            |_, _| None,
            |kernel, _| {
                Ok(kernel
                    .netlink
                    .get_link(namespace(ns), &name)?
                    .map(Into::into))
            },
        )
    }

    fn delete(&mut self, ns: Netns, name: String) -> HostResult<bool> {
        let call = Call {
            operation: "link.delete",
            arguments: json!({"netns": ns_name(ns), "name": name}),
            requests: vec![Request::DeleteLink {
                side: side(ns),
                name: &name,
            }],
        };
        self.dispatch(
            call,
            |_, rules| {
                (ns == Netns::Host)
                    .then(|| rules.delete_host_link(&name))
                    .flatten()
            },
            |kernel, _| {
                let ns = namespace(ns);
                if ns == Namespace::Container && !kernel.netlink.has_container() {
                    return Ok(false);
                }
                Ok(kernel.netlink.delete_link(ns, &name)?)
            },
        )
    }
}

impl HostContext {
    fn address_call(
        &mut self,
        operation: &'static str,
        ns: Netns,
        ifname: String,
        cidr: String,
    ) -> HostResult<()> {
        let address = match parse_net(&cidr, "address") {
            Ok(address) => address,
            Err(error) => return Ok(Err(error)),
        };
        let call = Call {
            operation,
            arguments: json!({"netns": ns_name(ns), "link": ifname, "address": cidr}),
            requests: vec![Request::Address {
                side: side(ns),
                link: &ifname,
                address,
            }],
        };

        self.dispatch(
            call,
            |kernel, rules| {
                (ns == Netns::Host)
                    .then(|| rules.host_link(kernel, &ifname))
                    .flatten()
            },
            |kernel, _| match operation {
                "address.add" => Ok(kernel
                    .netlink
                    .add_address(namespace(ns), &ifname, address)?),
                _ => Ok(kernel
                    .netlink
                    .delete_address(namespace(ns), &ifname, address)?),
            },
        )
    }
}

impl address::Host for HostContext {
    fn add(&mut self, ns: Netns, ifname: String, cidr: String) -> HostResult<()> {
        self.address_call("address.add", ns, ifname, cidr)
    }

    fn del(&mut self, ns: Netns, ifname: String, cidr: String) -> HostResult<()> {
        self.address_call("address.del", ns, ifname, cidr)
    }

    fn list(&mut self, ns: Netns, ifname: String) -> HostResult<Vec<String>> {
        let call = Call {
            operation: "address.list",
            arguments: json!({"netns": ns_name(ns), "link": ifname}),
            requests: vec![Request::ListAddresses {
                side: side(ns),
                link: &ifname,
            }],
        };
        self.dispatch(
            call,
            |_, _| None,
            |kernel, _| {
                let mut addresses = kernel.netlink.list_addresses(namespace(ns), &ifname)?;
                addresses.sort_by_key(|address| address.addr().is_ipv6());
                Ok(addresses.iter().map(ToString::to_string).collect())
            },
        )
    }
}

impl HostContext {
    fn route_call(
        &mut self,
        operation: &'static str,
        ns: Netns,
        spec: route::RouteSpec,
    ) -> HostResult<()> {
        let parsed = match route_from_wit(&spec) {
            Ok(parsed) => parsed,
            Err(error) => return Ok(Err(error)),
        };
        let call = Call {
            operation,
            arguments: json!({"netns": ns_name(ns), "dst": spec.dst, "gw": spec.gw, "dev": spec.dev, "metric": spec.metric, "src": spec.src}),
            requests: vec![Request::Route {
                side: side(ns),
                dst: parsed.dst,
            }],
        };

        self.dispatch(
            call,
            |kernel, rules| match (ns, &parsed.device) {
                (Netns::Container, _) => None,
                (Netns::Host, Some(device)) => rules.host_link(kernel, device),
                (Netns::Host, None) => Some(crate::policy::Decision::ownership(
                    "hostRoutes",
                    "a host route must name an output device the attachment may change".into(),
                )),
            },
            |kernel, _| match operation {
                "route.add" => Ok(kernel.netlink.add_route(namespace(ns), &parsed)?),
                _ => Ok(kernel.netlink.delete_route(namespace(ns), &parsed)?),
            },
        )
    }
}

impl route::Host for HostContext {
    fn add(&mut self, ns: Netns, spec: route::RouteSpec) -> HostResult<()> {
        self.route_call("route.add", ns, spec)
    }

    fn del(&mut self, ns: Netns, spec: route::RouteSpec) -> HostResult<()> {
        self.route_call("route.del", ns, spec)
    }

    fn list(&mut self, ns: Netns, dev: String) -> HostResult<Vec<route::RouteSpec>> {
        let call = Call {
            operation: "route.list",
            arguments: json!({"netns": ns_name(ns), "dev": dev}),
            requests: vec![Request::ListRoutes { side: side(ns) }],
        };
        self.dispatch(
            call,
            |_, _| None,
            |kernel, _| {
                Ok(kernel
                    .netlink
                    .list_routes(namespace(ns), &dev)?
                    .into_iter()
                    .map(route_to_wit)
                    .collect())
            },
        )
    }
}

impl sysctl::Host for HostContext {
    fn get(&mut self, ns: Netns, key: String) -> HostResult<String> {
        let key = crate::policy::sysctl_slash_form(&key);
        let call = Call {
            operation: "sysctl.get",
            arguments: json!({"netns": ns_name(ns), "key": key}),
            requests: vec![Request::Sysctl {
                side: side(ns),
                key: &key,
                write: false,
            }],
        };
        self.dispatch(
            call,
            |_, _| None,
            |kernel, _| Ok(kernel.sysctl.get(namespace(ns), &key)?),
        )
    }

    fn set(&mut self, ns: Netns, key: String, value: String) -> HostResult<()> {
        let key = crate::policy::sysctl_slash_form(&key);
        let call = Call {
            operation: "sysctl.set",
            arguments: json!({"netns": ns_name(ns), "key": key, "value": value}),
            requests: vec![Request::Sysctl {
                side: side(ns),
                key: &key,
                write: true,
            }],
        };
        self.dispatch(
            call,
            |kernel, rules| {
                (ns == Netns::Host)
                    .then(|| rules.host_sysctl(kernel, &key))
                    .flatten()
            },
            |kernel, _| Ok(kernel.sysctl.set(namespace(ns), &key, &value)?),
        )
    }
}

impl HostContext {
    fn port_mapping_call(
        &mut self,
        operation: &'static str,
        spec: nat::PortMapSpec,
    ) -> HostResult<()> {
        let parsed = match port_map_from_wit(&spec) {
            Ok(parsed) => parsed,
            Err(error) => return Ok(Err(error)),
        };
        let mappings = mappings_json(&parsed.mappings);
        let call = Call {
            operation,
            arguments: json!({"containerAddress": spec.container_address, "mappings": mappings, "snat": spec.snat,
                "masqAll": spec.masq_all, "markBit": spec.mark_bit, "markChain": spec.mark_chain,
                "conditions": spec.conditions}),
            requests: parsed
                .mappings
                .iter()
                .map(|m| Request::PortMapping {
                    host_port: m.host_port,
                    host_ip: m.host_ip,
                    protocol: m.protocol.as_str(),
                })
                .chain(
                    parsed
                        .mark_chain
                        .as_deref()
                        .map(|name| Request::MarkChain { name }),
                )
                .collect(),
        };
        let owner = self.owner.clone();
        let adding = operation == "nat.add-port-mappings";

        self.dispatch(
            call,
            |kernel, rules| {
                adding
                    .then(|| rules.container_address(kernel, &owner, parsed.container_address))
                    .flatten()
            },
            |kernel, owner| match adding {
                true => Ok(kernel.firewall.add_port_mappings(owner, &parsed)?),
                false => Ok(kernel.firewall.check_port_mappings(owner, &parsed)?),
            },
        )
    }

    fn masquerade_call(&mut self, operation: &'static str, address: String) -> HostResult<()> {
        let parsed = match parse_net(&address, "masquerade source") {
            Ok(parsed) => parsed,
            Err(error) => return Ok(Err(error)),
        };
        let call = Call {
            operation,
            arguments: json!({"address": address}),
            requests: vec![Request::Masquerade {
                source: Some(parsed),
            }],
        };
        let owner = self.owner.clone();
        let adding = operation == "nat.add-masquerade";

        self.dispatch(
            call,
            |kernel, rules| {
                adding
                    .then(|| rules.container_address(kernel, &owner, parsed))
                    .flatten()
            },
            |kernel, owner| match adding {
                true => Ok(kernel.firewall.add_masquerade(owner, parsed)?),
                false => Ok(kernel.firewall.check_masquerade(owner, parsed)?),
            },
        )
    }
}

/// Returns the audit record's view of port mappings.
pub(super) fn mappings_json(mappings: &[kernel::PortMapping]) -> Vec<serde_json::Value> {
    mappings
        .iter()
        .map(|m| json!({"hostPort": m.host_port, "containerPort": m.container_port, "protocol": m.protocol.as_str(), "hostIP": m.host_ip}))
        .collect()
}

impl nat::Host for HostContext {
    fn add_port_mappings(&mut self, spec: nat::PortMapSpec) -> HostResult<()> {
        self.port_mapping_call("nat.add-port-mappings", spec)
    }

    fn check_port_mappings(&mut self, spec: nat::PortMapSpec) -> HostResult<()> {
        self.port_mapping_call("nat.check-port-mappings", spec)
    }

    fn remove_port_mappings(&mut self) -> HostResult<()> {
        let call = Call {
            operation: "nat.remove-port-mappings",
            arguments: json!({"chain": self.owner.dnat_chain()}),
            requests: vec![Request::RemovePortMappings],
        };
        self.dispatch(
            call,
            |_, _| None,
            |kernel, owner| Ok(kernel.firewall.remove_port_mappings(owner)?),
        )
    }

    fn add_masquerade(&mut self, address: String) -> HostResult<()> {
        self.masquerade_call("nat.add-masquerade", address)
    }

    fn check_masquerade(&mut self, address: String) -> HostResult<()> {
        self.masquerade_call("nat.check-masquerade", address)
    }

    fn remove_masquerade(&mut self) -> HostResult<()> {
        let call = Call {
            operation: "nat.remove-masquerade",
            arguments: json!({"chain": self.owner.masquerade_chain()}),
            requests: vec![Request::Masquerade { source: None }],
        };
        self.dispatch(
            call,
            |_, _| None,
            |kernel, owner| Ok(kernel.firewall.remove_masquerade(owner)?),
        )
    }
}

/// The maximum chain name length in bytes: iptables 1.8.9 rejects a longer
/// name as "too long (must be under 29 chars)".
const MAX_CHAIN_NAME: usize = 28;

/// Checks that `name` can be written into a restore script as one chain
/// name: 1 to 28 printable ASCII bytes without quotes, not an option.
fn check_chain_name(name: &str) -> Result<(), HostError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_CHAIN_NAME
        && !name.starts_with(['-', '!'])
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '\'');
    match valid {
        true => Ok(()),
        false => Err(HostError::Invalid(format!(
            "invalid admin chain name {name:?}: expected 1 to {MAX_CHAIN_NAME} printable ASCII characters without quotes, not starting with '-' or '!'"
        ))),
    }
}

/// The `filter` operation of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ForwardOperation {
    Add,
    Check,
    Remove,
}

impl ForwardOperation {
    fn name(self) -> &'static str {
        match self {
            ForwardOperation::Add => "filter.add-forward-rules",
            ForwardOperation::Check => "filter.check-forward-rules",
            ForwardOperation::Remove => "filter.remove-forward-rules",
        }
    }
}

impl HostContext {
    /// Serves one `filter` call. `admin_chain` is `None` for a removal,
    /// which touches accept rules only.
    fn forward_call(
        &mut self,
        operation: ForwardOperation,
        addresses: Vec<String>,
        admin_chain: Option<String>,
    ) -> HostResult<()> {
        let parsed = addresses
            .iter()
            .map(|text| parse_net(text, "container address").map(|net| net.addr()))
            .collect::<Result<Vec<_>, _>>();
        let checked = admin_chain.as_deref().map(check_chain_name).transpose();
        let parsed = match (parsed, checked) {
            (Ok(parsed), Ok(_)) => parsed,
            (Err(error), _) | (_, Err(error)) => return Ok(Err(error)),
        };

        let mut requests: Vec<Request<'_>> = parsed
            .iter()
            .map(|address| Request::ForwardAddress { address: *address })
            .collect();
        requests.extend(
            admin_chain
                .as_deref()
                .map(|name| Request::AdminChain { name }),
        );
        let call = Call {
            operation: operation.name(),
            arguments: json!({"addresses": addresses, "adminChain": admin_chain}),
            requests,
        };
        let owner = self.owner.clone();
        let known = self.result_addresses.clone();

        self.dispatch(
            call,
            |kernel, rules| match (operation, admin_chain.as_deref()) {
                (ForwardOperation::Remove, _) | (_, None) => {
                    rules.removed_forward_addresses(kernel, &owner, &parsed, known.as_deref())
                }
                (_, Some(chain)) => rules
                    .admin_chain(chain)
                    .or_else(|| rules.forward_addresses(kernel, &owner, &parsed)),
            },
            |kernel, _| {
                let spec = kernel::ForwardSpec {
                    addresses: parsed.clone(),
                    admin_chain: admin_chain.clone().unwrap_or_default(),
                };
                match operation {
                    ForwardOperation::Add => Ok(kernel.filter.add_forward_rules(&spec)?),
                    ForwardOperation::Check => Ok(kernel.filter.check_forward_rules(&spec)?),
                    ForwardOperation::Remove => {
                        Ok(kernel.filter.remove_forward_rules(&spec.addresses)?)
                    }
                }
            },
        )
    }
}

impl filter::Host for HostContext {
    fn add_forward_rules(&mut self, spec: filter::ForwardSpec) -> HostResult<()> {
        let operation = ForwardOperation::Add;
        self.forward_call(operation, spec.addresses, Some(spec.admin_chain))
    }

    fn check_forward_rules(&mut self, spec: filter::ForwardSpec) -> HostResult<()> {
        let operation = ForwardOperation::Check;
        self.forward_call(operation, spec.addresses, Some(spec.admin_chain))
    }

    fn remove_forward_rules(&mut self, addresses: Vec<String>) -> HostResult<()> {
        self.forward_call(ForwardOperation::Remove, addresses, None)
    }
}

impl spoof_check::Host for HostContext {
    fn add(&mut self, host_link: String, mac: String) -> HostResult<()> {
        let spec = match spoof_check_from_wit(&host_link, &mac) {
            Ok(spec) => spec,
            Err(error) => return Ok(Err(error)),
        };
        let call = Call {
            operation: "spoof-check.add",
            arguments: json!({"hostLink": spec.host_link, "mac": spec.mac, "id": self.owner.spoof_check_id()}),
            requests: vec![Request::SpoofCheck {
                link: &spec.host_link,
            }],
        };
        let owner = self.owner.clone();

        self.dispatch(
            call,
            |kernel, rules| rules.spoof_check(kernel, &owner, &spec),
            |kernel, owner| {
                // nft accepts a rule for an interface name that does not
                // exist, so a missing veth is reported here.
                if kernel
                    .netlink
                    .get_link(Namespace::Host, &spec.host_link)?
                    .is_none()
                {
                    return Err(HostError::NotFound(format!(
                        "host link {:?} not found",
                        spec.host_link
                    )));
                }
                Ok(kernel.spoof_check.add_spoof_check(owner, &spec)?)
            },
        )
    }

    fn remove(&mut self) -> HostResult<()> {
        let call = Call {
            operation: "spoof-check.remove",
            arguments: json!({"id": self.owner.spoof_check_id()}),
            requests: vec![Request::RemoveSpoofCheck],
        };
        self.dispatch(
            call,
            |_, _| None,
            |kernel, owner| Ok(kernel.spoof_check.remove_spoof_check(owner)?),
        )
    }
}

impl HostContext {
    /// Delegates to the IPAM plugin after the import check, with one audit
    /// record for the delegation itself.
    fn delegate_ipam(
        &mut self,
        command: IpamCommand,
    ) -> wasmtime::Result<Result<Option<String>, WitCniError>> {
        let call = Call {
            operation: "ipam.delegate",
            arguments: json!({"command": command.as_str()}),
            requests: vec![Request::Ipam],
        };
        let delegate = self.delegate.clone();

        let outcome = self.dispatch(call, |_, _| None, |_, _| Ok(()))?;
        if let Err(error) = outcome {
            return Ok(Err(WitCniError {
                code: cniwasm_types::codes::cniwasm::HOST_DENIED,
                msg: super::describe_error(&error),
                details: String::new(),
            }));
        }

        tracing::debug!(plugin = %self.plugin, command = command.as_str(), "delegating to IPAM plugin");
        Ok(delegate.run_ipam(command).map_err(|error| WitCniError {
            code: error.code,
            msg: error.msg,
            details: error.details,
        }))
    }
}

impl ipam::Host for HostContext {
    fn add(&mut self) -> wasmtime::Result<Result<String, WitCniError>> {
        Ok(self
            .delegate_ipam(IpamCommand::Add)?
            .map(Option::unwrap_or_default))
    }

    fn del(&mut self) -> wasmtime::Result<Result<(), WitCniError>> {
        Ok(self.delegate_ipam(IpamCommand::Del)?.map(drop))
    }

    fn check(&mut self) -> wasmtime::Result<Result<(), WitCniError>> {
        Ok(self.delegate_ipam(IpamCommand::Check)?.map(drop))
    }

    fn status(&mut self) -> wasmtime::Result<Result<(), WitCniError>> {
        Ok(self.delegate_ipam(IpamCommand::Status)?.map(drop))
    }
}

impl ipam_store::Host for HostContext {
    fn read_files(&mut self) -> HostResult<ipam_store::StoreFiles> {
        let call = Call {
            operation: "ipam-store.read-files",
            arguments: json!({}),
            requests: vec![Request::IpamStore],
        };
        let state = self.ipam_state_dir.clone();

        self.dispatch(
            call,
            |_, _| None,
            |_, _| super::ipam_store::read_files(state.as_deref()),
        )
    }
}

impl dns::Host for HostContext {
    fn read_resolv_conf(&mut self, path: String) -> HostResult<String> {
        if let Err(error) = super::resolv::check_path(&path) {
            return Ok(Err(error));
        }
        // The policy checks the file a link leads to as well, and the host
        // reads that file, so a link changed after the check redirects nothing.
        let target = super::resolv::target(&path);
        let call = Call {
            operation: "dns.read-resolv-conf",
            arguments: json!({"path": path, "target": target}),
            requests: vec![Request::ResolvConf {
                path: &path,
                target: target.as_deref(),
            }],
        };
        let file = std::path::PathBuf::from(target.as_deref().unwrap_or(&path));

        self.dispatch(call, |_, _| None, |_, _| super::resolv::read(&file))
    }
}

impl state::Host for HostContext {
    fn get(&mut self) -> HostResult<Option<String>> {
        let call = Call {
            operation: "state.get",
            arguments: json!({}),
            requests: vec![Request::State],
        };
        let path = self.state_path.clone();
        self.dispatch(
            call,
            |_, _| None,
            |_, _| match &path {
                Some(path) => super::state::read(path),
                None => Ok(None),
            },
        )
    }

    fn put(&mut self, data: String) -> HostResult<()> {
        let call = Call {
            operation: "state.put",
            arguments: json!({"bytes": data.len()}),
            requests: vec![Request::State],
        };
        let path = self.state_path.clone();
        self.dispatch(
            call,
            |_, _| None,
            |_, _| match &path {
                Some(path) => super::state::write(path, &data),
                None => Err(HostError::Denied(
                    "this call has no attachment to keep plugin state for (IPAM delegate, GC or STATUS)"
                        .into(),
                )),
            },
        )
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
