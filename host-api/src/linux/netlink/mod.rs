//! [`Netlink`] over rtnetlink, with one connection per network namespace.

mod background;
mod links;
mod routes;

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::Handle;
use tokio::runtime::Runtime;

use super::kind_from_errno;
use super::netns::{NetnsHandles, with_namespace};
use crate::kernel::{
    BridgeSpec, HostVethSpec, KernelError, KernelErrorKind, LinkInfo, LinkSettings, Namespace,
    Netlink, PortVlans, RouteSpec, VethSpec,
};

/// One rtnetlink connection and the namespace its socket was created in.
struct Connection {
    handle: Handle,
    ns: Namespace,
}

impl Connection {
    fn error(&self, operation: impl Into<String>, err: rtnetlink::Error) -> KernelError {
        let kind = errno(&err).map_or(KernelErrorKind::Failed, kind_from_errno);
        let reason = match &err {
            rtnetlink::Error::NetlinkError(message) => message.to_io().to_string(),
            other => other.to_string(),
        };
        KernelError::new(kind, self.ns, operation, reason)
    }

    fn invalid(&self, operation: impl Into<String>, reason: String) -> KernelError {
        KernelError::new(KernelErrorKind::Invalid, self.ns, operation, reason)
    }
}

/// Returns the positive errno of a netlink error reply, if the error is one.
fn errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(message) => Some(message.raw_code().abs()),
        _ => None,
    }
}

/// Links, addresses and routes in the host and container namespaces. The
/// methods are synchronous: each runs its requests to completion on a
/// current-thread tokio runtime that the struct owns.
pub struct LinuxNetlink {
    runtime: Runtime,
    namespaces: Arc<NetnsHandles>,
    host: Connection,
    container: Option<Connection>,
    background: background::BackgroundDeletes,
}

impl LinuxNetlink {
    /// Opens the calling thread's namespace as the host and, if the path is
    /// given and exists, the container namespace at `container_netns`.
    pub fn open(container_netns: Option<&Path>) -> Result<Self, KernelError> {
        Self::with_handles(Arc::new(NetnsHandles::open(container_netns)?))
    }

    /// Connects to the namespaces of `namespaces`, which a [`super::ProcSysctl`]
    /// may share.
    pub fn with_handles(namespaces: Arc<NetnsHandles>) -> Result<Self, KernelError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|err| {
                KernelError::new(
                    KernelErrorKind::Failed,
                    Namespace::Host,
                    "start the netlink runtime",
                    err,
                )
            })?;

        let host = connect(&runtime, &namespaces, Namespace::Host)?;
        let container = match namespaces.has_container() {
            true => Some(connect(&runtime, &namespaces, Namespace::Container)?),
            false => None,
        };

        Ok(Self {
            runtime,
            namespaces,
            host,
            container,
            background: Default::default(),
        })
    }

    fn connection(&self, ns: Namespace, operation: &str) -> Result<&Connection, KernelError> {
        match ns {
            Namespace::Host => Ok(&self.host),
            Namespace::Container => self
                .container
                .as_ref()
                .ok_or_else(|| self.namespaces.container_missing(operation)),
        }
    }

    /// Looks up a link's index, failing with `NotFound` when it is absent.
    fn link_index(
        &self,
        conn: &Connection,
        name: &str,
        operation: &str,
    ) -> Result<u32, KernelError> {
        let message = self
            .runtime
            .block_on(links::require_link(conn, name, operation))?;
        Ok(message.header.index)
    }
}

/// Creates a netlink socket inside `ns` and spawns its connection task.
fn connect(
    runtime: &Runtime,
    namespaces: &NetnsHandles,
    ns: Namespace,
) -> Result<Connection, KernelError> {
    let operation = "open a netlink connection";
    let fd = namespaces.fd(ns, operation)?;
    let failed =
        |err: std::io::Error| KernelError::new(KernelErrorKind::Failed, ns, operation, err);

    // The socket registers with the runtime's reactor, so it needs the
    // runtime as context. It joins the namespace the thread is in right now.
    let _context = runtime.enter();
    let (connection, handle, _) = with_namespace(fd, rtnetlink::new_connection)
        .map_err(failed)?
        .map_err(failed)?;
    runtime.spawn(connection);

    Ok(Connection { handle, ns })
}

impl Netlink for LinuxNetlink {
    fn ensure_bridge(&mut self, spec: &BridgeSpec) -> Result<LinkInfo, KernelError> {
        self.background.wait();
        let operation = format!("create bridge {}", spec.name);
        let conn = &self.host;

        self.runtime.block_on(async {
            if links::find_link(conn, &spec.name).await?.is_none() {
                let created = conn
                    .handle
                    .link()
                    .add(links::bridge_request(spec))
                    .execute()
                    .await;
                match created {
                    Ok(()) => {}
                    // Another invocation created it meanwhile.
                    Err(err) if errno(&err) == Some(libc::EEXIST) => {}
                    Err(err) => return Err(conn.error(&operation, err)),
                }
            }

            let existing = links::read_existing_link(conn, &spec.name, &operation).await?;
            if existing.kind != "bridge" {
                let reason = format!(
                    "link {} exists with kind {:?}, not bridge",
                    spec.name, existing.kind
                );
                return Err(KernelError::new(
                    KernelErrorKind::Exists,
                    conn.ns,
                    operation,
                    reason,
                ));
            }

            // Set up (and promiscuous when requested) also a bridge that
            // existed before, as the reference bridge plugin does.
            let settings = LinkSettings {
                up: Some(true),
                promisc: spec.promisc.then_some(true),
                ..LinkSettings::default()
            };
            let request = links::settings_request(existing.index, &settings, None)
                .map_err(|reason| conn.invalid(&operation, reason))?;
            if let Some(request) = request {
                let set = conn.handle.link().set(request).execute().await;
                set.map_err(|err| conn.error(&operation, err))?;
            }
            links::read_existing_link(conn, &spec.name, &operation).await
        })
    }

    fn create_veth(&mut self, spec: &VethSpec) -> Result<(LinkInfo, LinkInfo), KernelError> {
        self.background.wait();
        let operation = format!(
            "create veth {} with peer {} placed in the container",
            spec.host_name, spec.container_name
        );
        let container = self.connection(Namespace::Container, &operation)?;
        let container_fd = self.namespaces.fd(Namespace::Container, &operation)?;
        let host = &self.host;

        self.runtime.block_on(async {
            if links::find_link(container, &spec.container_name)
                .await?
                .is_some()
            {
                let reason = format!("link {} already exists", spec.container_name);
                return Err(KernelError::new(
                    KernelErrorKind::Exists,
                    container.ns,
                    operation,
                    reason,
                ));
            }

            let request = links::veth_request(spec, container_fd.as_raw_fd())
                .map_err(|reason| host.invalid(&operation, reason))?;
            let created = host.handle.link().add(request).execute().await;
            created.map_err(|err| host.error(&operation, err))?;

            let host_end = links::read_existing_link(host, &spec.host_name, &operation).await?;
            let container_end =
                links::read_existing_link(container, &spec.container_name, &operation).await?;
            Ok((host_end, container_end))
        })
    }

    fn create_host_veth(
        &mut self,
        spec: &HostVethSpec,
    ) -> Result<(LinkInfo, LinkInfo), KernelError> {
        self.background.wait();
        let operation = format!("create veth {} with peer {}", spec.name, spec.peer_name);
        let host = &self.host;

        self.runtime.block_on(async {
            let created = host
                .handle
                .link()
                .add(links::host_veth_request(spec))
                .execute()
                .await;
            created.map_err(|err| host.error(&operation, err))?;

            let end = links::read_existing_link(host, &spec.name, &operation).await?;
            let peer = links::read_existing_link(host, &spec.peer_name, &operation).await?;
            Ok((end, peer))
        })
    }

    fn get_link(&mut self, ns: Namespace, name: &str) -> Result<Option<LinkInfo>, KernelError> {
        self.background.wait();
        let conn = self.connection(ns, &format!("get link {name}"))?;
        self.runtime.block_on(links::read_link(conn, name))
    }

    fn configure_link(
        &mut self,
        ns: Namespace,
        name: &str,
        settings: &LinkSettings,
    ) -> Result<LinkInfo, KernelError> {
        self.background.wait();
        let operation = format!("configure link {name}");
        let conn = self.connection(ns, &operation)?;

        let index = self.link_index(conn, name, &operation)?;
        let master_index = match &settings.master {
            Some(master) => Some(self.link_index(conn, master, &operation)?),
            None => None,
        };

        self.runtime.block_on(async {
            let request = links::settings_request(index, settings, master_index)
                .map_err(|reason| conn.invalid(&operation, reason))?;
            if let Some(request) = request {
                let set = conn.handle.link().set(request).execute().await;
                set.map_err(|err| conn.error(&operation, err))?;
            }

            // Hairpin and isolated are options of the bridge port, so they
            // go after the master change above made the link a port.
            if let Some(request) = links::port_request(index, settings) {
                let set = conn.handle.link().set_port(request).execute().await;
                set.map_err(|err| conn.error(format!("{operation} (bridge port)"), err))?;
            }
            links::read_existing_link(conn, name, &operation).await
        })
    }

    // NOTE: kernels without CONFIG_BRIDGE_VLAN_FILTERING cannot run this,
    // so tests/bridge_vlan.rs runs it in a VM with Debian's 6.1 kernel.
    fn set_port_vlans(&mut self, name: &str, vlans: &PortVlans) -> Result<(), KernelError> {
        self.background.wait();
        let operation = format!("set VLANs of bridge port {name}");
        let conn = self.connection(Namespace::Host, &operation)?;
        let index = self.link_index(conn, name, &operation)?;

        self.runtime.block_on(async {
            // Removing first lets a later entry add VLAN 1 back with other
            // flags, such as the native VLAN of a trunk.
            if vlans.remove_default {
                let request = links::default_vlan_removal(index);
                let removed = conn.handle.link().del_with_message(request).execute().await;
                removed.map_err(|err| conn.error(format!("{operation} (remove VLAN 1)"), err))?;
            }
            if let Some(request) = links::port_vlans_request(index, &vlans.vlans) {
                let set = conn.handle.link().set(request).execute().await;
                set.map_err(|err| conn.error(&operation, err))?;
            }
            Ok(())
        })
    }

    /// Finds the link and leaves its deletion to a background thread;
    /// [`Netlink::settle`] and every other method wait for it.
    fn delete_link(&mut self, ns: Namespace, name: &str) -> Result<bool, KernelError> {
        self.background.wait();
        let operation = format!("delete link {name}");
        let conn = self.connection(ns, &operation)?;

        let Some(link) = self.runtime.block_on(links::find_link(conn, name))? else {
            return Ok(false);
        };
        let index = link.header.index;
        self.background
            .start(self.namespaces.clone(), ns, index, operation)?;
        Ok(true)
    }

    fn add_address(
        &mut self,
        ns: Namespace,
        link: &str,
        address: IpNet,
    ) -> Result<(), KernelError> {
        self.background.wait();
        let operation = format!("add address {address} to {link}");
        let conn = self.connection(ns, &operation)?;
        let index = self.link_index(conn, link, &operation)?;

        self.runtime.block_on(async {
            let request = conn
                .handle
                .address()
                .add(index, address.addr(), address.prefix_len());
            match request.execute().await {
                Ok(()) => Ok(()),
                Err(err) if errno(&err) == Some(libc::EEXIST) => Ok(()),
                Err(err) => Err(conn.error(operation, err)),
            }
        })
    }

    fn delete_address(
        &mut self,
        ns: Namespace,
        link: &str,
        address: IpNet,
    ) -> Result<(), KernelError> {
        self.background.wait();
        let operation = format!("delete address {address} from {link}");
        let conn = self.connection(ns, &operation)?;

        self.runtime.block_on(async {
            // A link that is gone has no addresses left to delete.
            let Some(link) = links::find_link(conn, link).await? else {
                return Ok(());
            };
            let message = routes::address_message(link.header.index, address);
            match conn.handle.address().del(message).execute().await {
                Ok(()) => Ok(()),
                Err(err) if errno(&err) == Some(libc::EADDRNOTAVAIL) => Ok(()),
                Err(err) => Err(conn.error(operation, err)),
            }
        })
    }

    fn list_addresses(&mut self, ns: Namespace, link: &str) -> Result<Vec<IpNet>, KernelError> {
        self.background.wait();
        let operation = format!("list addresses of {link}");
        let conn = self.connection(ns, &operation)?;
        let index = self.link_index(conn, link, &operation)?;
        self.runtime
            .block_on(routes::list_addresses(conn, index, &operation))
    }

    fn add_route(&mut self, ns: Namespace, route: &RouteSpec) -> Result<(), KernelError> {
        self.background.wait();
        let operation = format!("add route {}", describe_route(route));
        let conn = self.connection(ns, &operation)?;
        let device_index = match &route.device {
            Some(device) => Some(self.link_index(conn, device, &operation)?),
            None => None,
        };
        let message = routes::add_route_message(route, device_index)
            .map_err(|reason| conn.invalid(&operation, reason))?;

        self.runtime.block_on(async {
            let err = match conn.handle.route().add(message).execute().await {
                Ok(()) => return Ok(()),
                Err(err) => err,
            };
            if errno(&err) != Some(libc::EEXIST) {
                return Err(conn.error(operation, err));
            }

            // EEXIST also comes for a different route to the same
            // destination and metric, which must stay an error.
            let existing = routes::dump_routes(conn, device_index, &operation).await?;
            if existing
                .iter()
                .any(|found| routes::route_matches(found, route))
            {
                return Ok(());
            }
            Err(conn.error(operation, err))
        })
    }

    fn delete_route(&mut self, ns: Namespace, route: &RouteSpec) -> Result<(), KernelError> {
        self.background.wait();
        let operation = format!("delete route {}", describe_route(route));
        let conn = self.connection(ns, &operation)?;
        let device_index = match &route.device {
            Some(device) => Some(self.link_index(conn, device, &operation)?),
            None => None,
        };
        let message = routes::delete_route_message(route, device_index)
            .map_err(|reason| conn.invalid(&operation, reason))?;

        // An absent route fails with ESRCH, which maps to NotFound.
        let deleted = self
            .runtime
            .block_on(conn.handle.route().del(message).execute());
        deleted.map_err(|err| conn.error(operation, err))
    }

    fn list_routes(&mut self, ns: Namespace, link: &str) -> Result<Vec<RouteSpec>, KernelError> {
        self.background.wait();
        let operation = format!("list routes of {link}");
        let conn = self.connection(ns, &operation)?;
        let index = self.link_index(conn, link, &operation)?;
        self.runtime
            .block_on(routes::dump_routes(conn, Some(index), &operation))
    }

    fn route_device(&mut self, destination: IpAddr) -> Result<Option<String>, KernelError> {
        self.background.wait();
        let operation = format!("get route to {destination}");
        let conn = &self.host;

        self.runtime.block_on(async {
            let request = routes::route_get_message(destination);
            let reply = conn.handle.route().get(request).execute().try_next().await;
            let message = match reply {
                Ok(message) => message,
                Err(err) if matches!(errno(&err), Some(libc::ENETUNREACH | libc::EHOSTUNREACH)) => {
                    return Ok(None);
                }
                Err(err) => return Err(conn.error(operation, err)),
            };

            match message.as_ref().and_then(routes::output_index) {
                Some(index) => Ok(Some(links::link_name(conn, index).await?)),
                None => Ok(None),
            }
        })
    }

    fn settle(&mut self) -> Result<(), KernelError> {
        self.background.settle()
    }

    fn has_container(&self) -> bool {
        self.container.is_some()
    }
}

/// Describes a route as `ip route` prints it: `10.1.0.0/16 via 10.0.0.1 dev eth0`.
fn describe_route(route: &RouteSpec) -> String {
    let mut text = route.dst.to_string();
    if let Some(gateway) = route.gateway {
        text.push_str(&format!(" via {gateway}"));
    }
    if let Some(device) = &route.device {
        text.push_str(&format!(" dev {device}"));
    }
    if let Some(metric) = route.metric {
        text.push_str(&format!(" metric {metric}"));
    }
    text
}
