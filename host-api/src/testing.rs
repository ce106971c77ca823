//! A recording fake of the kernel traits, for unit tests.
//!
//! [`RecordingKernel::new`] returns a [`Kernel`] whose parts share one
//! in-memory model, and a [`Recorder`] through which a test reads the calls
//! made, inspects or seeds the model, and scripts failures.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use ipnet::IpNet;

use crate::kernel::{
    BridgeSpec, Firewall, ForwardFilter, ForwardSpec, HostVethSpec, Kernel, KernelError,
    KernelErrorKind, LinkInfo, LinkSettings, Namespace, Netlink, NftNat, NftPortMapSpec, Owner,
    PortMapSpec, PortVlans, RouteSpec, SpoofCheck, SpoofCheckSpec, Sysctl, VethSpec,
};

/// One call to the fake kernel, with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelCall {
    EnsureBridge {
        spec: BridgeSpec,
    },
    CreateVeth {
        spec: VethSpec,
    },
    CreateHostVeth {
        spec: HostVethSpec,
    },
    GetLink {
        ns: Namespace,
        name: String,
    },
    ConfigureLink {
        ns: Namespace,
        name: String,
        settings: LinkSettings,
    },
    SetPortVlans {
        name: String,
        vlans: PortVlans,
    },
    DeleteLink {
        ns: Namespace,
        name: String,
    },
    AddAddress {
        ns: Namespace,
        link: String,
        address: IpNet,
    },
    DeleteAddress {
        ns: Namespace,
        link: String,
        address: IpNet,
    },
    ListAddresses {
        ns: Namespace,
        link: String,
    },
    AddRoute {
        ns: Namespace,
        route: RouteSpec,
    },
    DeleteRoute {
        ns: Namespace,
        route: RouteSpec,
    },
    ListRoutes {
        ns: Namespace,
        link: String,
    },
    RouteDevice {
        destination: IpAddr,
    },
    SysctlGet {
        ns: Namespace,
        key: String,
    },
    SysctlSet {
        ns: Namespace,
        key: String,
        value: String,
    },
    AddPortMappings {
        owner: Owner,
        spec: PortMapSpec,
    },
    CheckPortMappings {
        owner: Owner,
        spec: PortMapSpec,
    },
    RemovePortMappings {
        owner: Owner,
    },
    AddMasquerade {
        owner: Owner,
        address: IpNet,
    },
    CheckMasquerade {
        owner: Owner,
        address: IpNet,
    },
    RemoveMasquerade {
        owner: Owner,
    },
    AddForwardRules {
        spec: ForwardSpec,
    },
    CheckForwardRules {
        spec: ForwardSpec,
    },
    RemoveForwardRules {
        addresses: Vec<IpAddr>,
    },
    AddSpoofCheck {
        owner: Owner,
        spec: SpoofCheckSpec,
    },
    RemoveSpoofCheck {
        owner: Owner,
    },
    AddNftPortMappings {
        owner: Owner,
        spec: NftPortMapSpec,
    },
    CheckNftPortMappings {
        owner: Owner,
        spec: NftPortMapSpec,
    },
    RemoveNftPortMappings {
        owner: Owner,
    },
    AddNftMasquerade {
        owner: Owner,
        addresses: Vec<IpNet>,
    },
    RemoveNftMasquerade {
        owner: Owner,
    },
}

/// The kind of a [`KernelCall`], to script failures by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallKind {
    EnsureBridge,
    CreateVeth,
    CreateHostVeth,
    GetLink,
    ConfigureLink,
    SetPortVlans,
    DeleteLink,
    AddAddress,
    DeleteAddress,
    ListAddresses,
    AddRoute,
    DeleteRoute,
    ListRoutes,
    RouteDevice,
    SysctlGet,
    SysctlSet,
    AddPortMappings,
    CheckPortMappings,
    RemovePortMappings,
    AddMasquerade,
    CheckMasquerade,
    RemoveMasquerade,
    AddForwardRules,
    CheckForwardRules,
    RemoveForwardRules,
    AddSpoofCheck,
    RemoveSpoofCheck,
    AddNftPortMappings,
    CheckNftPortMappings,
    RemoveNftPortMappings,
    AddNftMasquerade,
    RemoveNftMasquerade,
}

impl KernelCall {
    pub fn kind(&self) -> CallKind {
        match self {
            KernelCall::EnsureBridge { .. } => CallKind::EnsureBridge,
            KernelCall::CreateVeth { .. } => CallKind::CreateVeth,
            KernelCall::CreateHostVeth { .. } => CallKind::CreateHostVeth,
            KernelCall::GetLink { .. } => CallKind::GetLink,
            KernelCall::ConfigureLink { .. } => CallKind::ConfigureLink,
            KernelCall::SetPortVlans { .. } => CallKind::SetPortVlans,
            KernelCall::DeleteLink { .. } => CallKind::DeleteLink,
            KernelCall::AddAddress { .. } => CallKind::AddAddress,
            KernelCall::DeleteAddress { .. } => CallKind::DeleteAddress,
            KernelCall::ListAddresses { .. } => CallKind::ListAddresses,
            KernelCall::AddRoute { .. } => CallKind::AddRoute,
            KernelCall::DeleteRoute { .. } => CallKind::DeleteRoute,
            KernelCall::ListRoutes { .. } => CallKind::ListRoutes,
            KernelCall::RouteDevice { .. } => CallKind::RouteDevice,
            KernelCall::SysctlGet { .. } => CallKind::SysctlGet,
            KernelCall::SysctlSet { .. } => CallKind::SysctlSet,
            KernelCall::AddPortMappings { .. } => CallKind::AddPortMappings,
            KernelCall::CheckPortMappings { .. } => CallKind::CheckPortMappings,
            KernelCall::RemovePortMappings { .. } => CallKind::RemovePortMappings,
            KernelCall::AddMasquerade { .. } => CallKind::AddMasquerade,
            KernelCall::CheckMasquerade { .. } => CallKind::CheckMasquerade,
            KernelCall::RemoveMasquerade { .. } => CallKind::RemoveMasquerade,
            KernelCall::AddForwardRules { .. } => CallKind::AddForwardRules,
            KernelCall::CheckForwardRules { .. } => CallKind::CheckForwardRules,
            KernelCall::RemoveForwardRules { .. } => CallKind::RemoveForwardRules,
            KernelCall::AddSpoofCheck { .. } => CallKind::AddSpoofCheck,
            KernelCall::RemoveSpoofCheck { .. } => CallKind::RemoveSpoofCheck,
            KernelCall::AddNftPortMappings { .. } => CallKind::AddNftPortMappings,
            KernelCall::CheckNftPortMappings { .. } => CallKind::CheckNftPortMappings,
            KernelCall::RemoveNftPortMappings { .. } => CallKind::RemoveNftPortMappings,
            KernelCall::AddNftMasquerade { .. } => CallKind::AddNftMasquerade,
            KernelCall::RemoveNftMasquerade { .. } => CallKind::RemoveNftMasquerade,
        }
    }

    /// Returns the namespace the call acts in. Firewall and spoof-check
    /// calls and route lookups act in the host namespace.
    fn namespace(&self) -> Namespace {
        match self {
            KernelCall::CreateVeth { .. } => Namespace::Container,
            KernelCall::GetLink { ns, .. }
            | KernelCall::ConfigureLink { ns, .. }
            | KernelCall::DeleteLink { ns, .. }
            | KernelCall::AddAddress { ns, .. }
            | KernelCall::DeleteAddress { ns, .. }
            | KernelCall::ListAddresses { ns, .. }
            | KernelCall::AddRoute { ns, .. }
            | KernelCall::DeleteRoute { ns, .. }
            | KernelCall::ListRoutes { ns, .. }
            | KernelCall::SysctlGet { ns, .. }
            | KernelCall::SysctlSet { ns, .. } => *ns,
            _ => Namespace::Host,
        }
    }
}

/// A scripted failure: the `nth` call (counting from 1) of `call` fails with
/// `error`, without changing the model.
#[derive(Debug, Clone, Copy)]
struct ScriptedFailure {
    call: CallKind,
    nth: usize,
    error: KernelErrorKind,
}

/// One VLAN of a bridge port, as `bridge vlan show` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortVlanEntry {
    pub vid: u16,
    pub pvid: bool,
    pub untagged: bool,
}

/// The VLAN the kernel gives a port when it joins a bridge, with the PVID
/// and untagged flags (the bridge's default_pvid, 1).
const DEFAULT_PORT_VLAN: PortVlanEntry = PortVlanEntry {
    vid: 1,
    pvid: true,
    untagged: true,
};

/// The in-memory kernel state the fake keeps.
#[derive(Debug, Default)]
struct Model {
    has_container: bool,
    next_index: u32,
    /// Links per namespace, by name.
    links: HashMap<Namespace, BTreeMap<String, LinkInfo>>,
    addresses: HashMap<(Namespace, String), Vec<IpNet>>,
    routes: HashMap<Namespace, Vec<RouteSpec>>,
    sysctls: HashMap<(Namespace, String), String>,
    /// The other end of each veth pair with both ends in the host
    /// namespace, by name, so that deleting one end deletes both.
    host_peers: HashMap<String, String>,
    /// VLANs of host bridge ports, by port name and VLAN ID.
    port_vlans: HashMap<String, BTreeMap<u16, PortVlanEntry>>,
    port_mappings: HashMap<Owner, Vec<PortMapSpec>>,
    masquerades: HashMap<Owner, Vec<IpNet>>,
    /// Admin chains that exist, in creation order.
    admin_chains: Vec<String>,
    /// Addresses with accept rules in `CNI-FORWARD`.
    forward_accepts: Vec<IpAddr>,
    /// Installed MAC spoof checks, one per attachment.
    spoof_checks: HashMap<Owner, SpoofCheckSpec>,
    /// nftables port mappings in the order they were added. Like the
    /// reference's rules, a repeated add appends and removal goes by
    /// container id alone.
    nft_port_mappings: Vec<(Owner, NftPortMapSpec)>,
    /// nftables masquerade sources per attachment.
    nft_masquerades: HashMap<Owner, Vec<IpNet>>,
    failures: Vec<ScriptedFailure>,
    counts: HashMap<CallKind, usize>,
}

/// Shared state of one fake kernel and its recorder.
#[derive(Debug, Default)]
struct Shared {
    calls: Arc<Mutex<Vec<KernelCall>>>,
    model: Mutex<Model>,
}

/// The handle tests keep to read calls, inspect the model and script failures.
#[derive(Debug, Clone)]
pub struct Recorder {
    shared: Arc<Shared>,
}

/// A fake kernel that records calls. Its trait implementations share one model.
#[derive(Debug, Clone)]
pub struct RecordingKernel {
    shared: Arc<Shared>,
}

impl RecordingKernel {
    /// Builds a kernel with an available container namespace and an empty
    /// model, and the recorder that observes it.
    #[expect(
        clippy::new_ret_no_self,
        reason = "callers reach the fake only through the returned Kernel, and other crates call it new"
    )]
    pub fn new() -> (Kernel, Recorder) {
        let shared = Arc::new(Shared::default());
        {
            let mut model = lock(&shared.model);
            model.has_container = true;
            model.next_index = 2;
        }
        let fake = RecordingKernel {
            shared: shared.clone(),
        };
        let kernel = Kernel {
            netlink: Box::new(fake.clone()),
            sysctl: Box::new(fake.clone()),
            firewall: Box::new(fake.clone()),
            filter: Box::new(fake.clone()),
            spoof_check: Box::new(fake.clone()),
            nft_nat: Box::new(fake),
        };
        (kernel, Recorder { shared })
    }

    /// Records `call`, then fails it if a failure is scripted, else applies
    /// `step` to the model.
    fn record<R>(
        &self,
        call: KernelCall,
        step: impl FnOnce(&mut Model) -> Result<R, KernelError>,
    ) -> Result<R, KernelError> {
        let kind = call.kind();
        let ns = call.namespace();
        let description = format!("{call:?}");
        lock(&self.shared.calls).push(call);

        let mut model = lock(&self.shared.model);
        let count = model.counts.entry(kind).or_default();
        *count += 1;
        let count = *count;

        let scripted = model
            .failures
            .iter()
            .position(|f| f.call == kind && f.nth == count);
        if let Some(position) = scripted {
            let failure = model.failures.remove(position);
            return Err(KernelError::new(
                failure.error,
                ns,
                description,
                "scripted failure",
            ));
        }
        step(&mut model)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A failed assertion in another test thread must not hide this state.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Recorder {
    /// Returns a copy of the calls made so far, in order.
    pub fn calls(&self) -> Vec<KernelCall> {
        lock(&self.shared.calls).clone()
    }

    /// Returns the shared call log itself.
    pub fn call_log(&self) -> Arc<Mutex<Vec<KernelCall>>> {
        self.shared.calls.clone()
    }

    /// Returns the calls of one kind, in order.
    pub fn calls_of(&self, kind: CallKind) -> Vec<KernelCall> {
        let calls = lock(&self.shared.calls);
        calls
            .iter()
            .filter(|call| call.kind() == kind)
            .cloned()
            .collect()
    }

    /// Makes the `nth` call of `call` from now on, counting from 1 and
    /// including calls already made, fail with `error`.
    pub fn fail_call(&self, call: CallKind, nth: usize, error: KernelErrorKind) {
        let failure = ScriptedFailure { call, nth, error };
        lock(&self.shared.model).failures.push(failure);
    }

    /// Makes the container namespace unavailable, as when CNI_NETNS is gone:
    /// container operations then fail with `NotFound`.
    pub fn remove_container(&self) {
        lock(&self.shared.model).has_container = false;
    }

    /// Adds a link to the model, as if it existed before the test.
    pub fn add_link(&self, ns: Namespace, link: LinkInfo) {
        let mut model = lock(&self.shared.model);
        model
            .links
            .entry(ns)
            .or_default()
            .insert(link.name.clone(), link);
    }

    pub fn link(&self, ns: Namespace, name: &str) -> Option<LinkInfo> {
        let model = lock(&self.shared.model);
        model
            .links
            .get(&ns)
            .and_then(|links| links.get(name))
            .cloned()
    }

    /// Returns the VLANs of a host bridge port, by VLAN ID.
    pub fn port_vlans(&self, name: &str) -> Vec<PortVlanEntry> {
        let model = lock(&self.shared.model);
        model
            .port_vlans
            .get(name)
            .map(|vlans| vlans.values().copied().collect())
            .unwrap_or_default()
    }

    pub fn links(&self, ns: Namespace) -> Vec<LinkInfo> {
        let model = lock(&self.shared.model);
        model
            .links
            .get(&ns)
            .map(|links| links.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn addresses(&self, ns: Namespace, link: &str) -> Vec<IpNet> {
        let model = lock(&self.shared.model);
        model
            .addresses
            .get(&(ns, link.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    pub fn routes(&self, ns: Namespace) -> Vec<RouteSpec> {
        let model = lock(&self.shared.model);
        model.routes.get(&ns).cloned().unwrap_or_default()
    }

    /// Seeds a sysctl value. Reading a key that was never set fails with `NotFound`.
    pub fn set_sysctl(&self, ns: Namespace, key: &str, value: &str) {
        let mut model = lock(&self.shared.model);
        model
            .sysctls
            .insert((ns, key.to_string()), value.to_string());
    }

    pub fn sysctl(&self, ns: Namespace, key: &str) -> Option<String> {
        let model = lock(&self.shared.model);
        model.sysctls.get(&(ns, key.to_string())).cloned()
    }

    /// Returns the port mappings installed for `owner`, one spec per family.
    pub fn port_mappings(&self, owner: &Owner) -> Vec<PortMapSpec> {
        let model = lock(&self.shared.model);
        model.port_mappings.get(owner).cloned().unwrap_or_default()
    }

    pub fn masquerades(&self, owner: &Owner) -> Vec<IpNet> {
        let model = lock(&self.shared.model);
        model.masquerades.get(owner).cloned().unwrap_or_default()
    }

    /// Returns the addresses that have accept rules in `CNI-FORWARD`.
    pub fn forward_accepts(&self) -> Vec<IpAddr> {
        lock(&self.shared.model).forward_accepts.clone()
    }

    /// Returns the admin chains created so far.
    pub fn admin_chains(&self) -> Vec<String> {
        lock(&self.shared.model).admin_chains.clone()
    }

    /// Returns the nftables port mappings added for `owner` and not
    /// removed, in the order they were added.
    pub fn nft_port_mappings(&self, owner: &Owner) -> Vec<NftPortMapSpec> {
        let model = lock(&self.shared.model);
        model
            .nft_port_mappings
            .iter()
            .filter(|(added, _)| added == owner)
            .map(|(_, spec)| spec.clone())
            .collect()
    }

    /// Returns the nftables masquerade sources of `owner`.
    pub fn nft_masquerade(&self, owner: &Owner) -> Vec<IpNet> {
        let model = lock(&self.shared.model);
        model
            .nft_masquerades
            .get(owner)
            .cloned()
            .unwrap_or_default()
    }

    /// Returns the MAC spoof check installed for `owner`, if any.
    pub fn spoof_check(&self, owner: &Owner) -> Option<SpoofCheckSpec> {
        lock(&self.shared.model).spoof_checks.get(owner).cloned()
    }
}

fn not_found(ns: Namespace, operation: String, what: String) -> KernelError {
    KernelError::new(
        KernelErrorKind::NotFound,
        ns,
        operation,
        format!("{what} not found"),
    )
}

impl Model {
    fn check_namespace(&self, ns: Namespace, operation: &str) -> Result<(), KernelError> {
        if ns == Namespace::Container && !self.has_container {
            return Err(not_found(
                ns,
                operation.to_string(),
                "container netns".into(),
            ));
        }
        Ok(())
    }

    fn links_mut(&mut self, ns: Namespace) -> &mut BTreeMap<String, LinkInfo> {
        self.links.entry(ns).or_default()
    }

    fn find_link(&self, ns: Namespace, name: &str) -> Option<&LinkInfo> {
        self.links.get(&ns).and_then(|links| links.get(name))
    }

    fn require_link(
        &self,
        ns: Namespace,
        name: &str,
        operation: &str,
    ) -> Result<LinkInfo, KernelError> {
        self.check_namespace(ns, operation)?;
        self.find_link(ns, name)
            .cloned()
            .ok_or_else(|| not_found(ns, operation.to_string(), format!("link {name}")))
    }

    /// Removes a link with its addresses, routes and bridge-port VLANs.
    /// Returns false when it did not exist.
    fn remove_link(&mut self, ns: Namespace, name: &str) -> bool {
        let removed = self.links_mut(ns).remove(name).is_some();
        if ns == Namespace::Host {
            self.port_vlans.remove(name);
        }
        self.addresses.remove(&(ns, name.to_string()));
        let routes = self.routes.entry(ns).or_default();
        routes.retain(|route| route.device.as_deref() != Some(name));
        removed
    }

    fn new_link(&mut self, name: &str, kind: &str, mtu: Option<u32>) -> LinkInfo {
        let index = self.next_index;
        self.next_index += 1;
        LinkInfo {
            name: name.to_string(),
            index,
            kind: kind.to_string(),
            mac: format!("0a:58:00:00:{:02x}:{:02x}", index >> 8 & 0xff, index & 0xff),
            mtu: mtu.unwrap_or(1500),
            up: false,
            oper_state: "down".to_string(),
            master: None,
            promisc: false,
            allmulti: false,
            // The kernel's default for Ethernet-like links, in packets.
            tx_queue_len: 1000,
        }
    }
}

fn apply_settings(link: &mut LinkInfo, settings: &LinkSettings) {
    if let Some(up) = settings.up {
        link.up = up;
        link.oper_state = if up { "up" } else { "down" }.to_string();
    }
    if let Some(mtu) = settings.mtu {
        link.mtu = mtu;
    }
    if let Some(mac) = &settings.mac {
        link.mac = mac.to_lowercase();
    }
    if let Some(master) = &settings.master {
        link.master = Some(master.clone());
    }
    if let Some(promisc) = settings.promisc {
        link.promisc = promisc;
    }
    if let Some(allmulti) = settings.allmulti {
        link.allmulti = allmulti;
    }
    if let Some(length) = settings.tx_queue_len {
        link.tx_queue_len = length;
    }
}

impl Netlink for RecordingKernel {
    fn ensure_bridge(&mut self, spec: &BridgeSpec) -> Result<LinkInfo, KernelError> {
        let call = KernelCall::EnsureBridge { spec: spec.clone() };
        self.record(call, |model| {
            let operation = format!("create bridge {}", spec.name);
            if let Some(existing) = model.find_link(Namespace::Host, &spec.name) {
                if existing.kind != "bridge" {
                    let reason = format!("link {} is not a bridge", spec.name);
                    return Err(KernelError::new(
                        KernelErrorKind::Exists,
                        Namespace::Host,
                        operation,
                        reason,
                    ));
                }
            } else {
                let bridge = model.new_link(&spec.name, "bridge", spec.mtu);
                model
                    .links_mut(Namespace::Host)
                    .insert(spec.name.clone(), bridge);
            }

            let bridge = model
                .links_mut(Namespace::Host)
                .get_mut(&spec.name)
                .expect("inserted above");
            bridge.up = true;
            bridge.oper_state = "up".to_string();
            bridge.promisc |= spec.promisc;
            Ok(bridge.clone())
        })
    }

    fn create_veth(&mut self, spec: &VethSpec) -> Result<(LinkInfo, LinkInfo), KernelError> {
        let call = KernelCall::CreateVeth { spec: spec.clone() };
        self.record(call, |model| {
            let operation = format!(
                "create veth {} with peer {}",
                spec.host_name, spec.container_name
            );
            model.check_namespace(Namespace::Container, &operation)?;
            let taken = [
                (Namespace::Host, &spec.host_name),
                (Namespace::Container, &spec.container_name),
            ];
            for (ns, name) in taken {
                if model.find_link(ns, name).is_some() {
                    let reason = format!("link {name} already exists");
                    return Err(KernelError::new(
                        KernelErrorKind::Exists,
                        ns,
                        operation,
                        reason,
                    ));
                }
            }

            let host = model.new_link(&spec.host_name, "veth", spec.mtu);
            let mut container = model.new_link(&spec.container_name, "veth", spec.mtu);
            if let Some(mac) = &spec.container_mac {
                container.mac = mac.to_lowercase();
            }
            model
                .links_mut(Namespace::Host)
                .insert(host.name.clone(), host.clone());
            model
                .links_mut(Namespace::Container)
                .insert(container.name.clone(), container.clone());
            Ok((host, container))
        })
    }

    fn create_host_veth(
        &mut self,
        spec: &HostVethSpec,
    ) -> Result<(LinkInfo, LinkInfo), KernelError> {
        let call = KernelCall::CreateHostVeth { spec: spec.clone() };
        self.record(call, |model| {
            let operation = format!("create veth {} with peer {}", spec.name, spec.peer_name);
            for name in [&spec.name, &spec.peer_name] {
                if model.find_link(Namespace::Host, name).is_some() {
                    let reason = format!("link {name} already exists");
                    return Err(KernelError::new(
                        KernelErrorKind::Exists,
                        Namespace::Host,
                        operation,
                        reason,
                    ));
                }
            }

            let end = model.new_link(&spec.name, "veth", spec.mtu);
            let peer = model.new_link(&spec.peer_name, "veth", spec.mtu);
            for link in [&end, &peer] {
                model
                    .links_mut(Namespace::Host)
                    .insert(link.name.clone(), link.clone());
            }
            model.host_peers.insert(end.name.clone(), peer.name.clone());
            model.host_peers.insert(peer.name.clone(), end.name.clone());
            Ok((end, peer))
        })
    }

    fn get_link(&mut self, ns: Namespace, name: &str) -> Result<Option<LinkInfo>, KernelError> {
        let call = KernelCall::GetLink {
            ns,
            name: name.to_string(),
        };
        self.record(call, |model| {
            model.check_namespace(ns, &format!("get link {name}"))?;
            Ok(model.find_link(ns, name).cloned())
        })
    }

    fn configure_link(
        &mut self,
        ns: Namespace,
        name: &str,
        settings: &LinkSettings,
    ) -> Result<LinkInfo, KernelError> {
        let call = KernelCall::ConfigureLink {
            ns,
            name: name.to_string(),
            settings: settings.clone(),
        };
        self.record(call, |model| {
            let operation = format!("configure link {name}");
            model.require_link(ns, name, &operation)?;
            if let Some(master) = &settings.master {
                model.require_link(ns, master, &operation)?;
            }

            let link = model.links_mut(ns).get_mut(name).expect("checked above");
            apply_settings(link, settings);
            let link = link.clone();
            // A new bridge port gets VLAN 1, as the kernel gives it.
            if ns == Namespace::Host && settings.master.is_some() {
                let vlans = model.port_vlans.entry(name.to_string()).or_default();
                vlans
                    .entry(DEFAULT_PORT_VLAN.vid)
                    .or_insert(DEFAULT_PORT_VLAN);
            }
            Ok(link)
        })
    }

    fn set_port_vlans(&mut self, name: &str, vlans: &PortVlans) -> Result<(), KernelError> {
        let call = KernelCall::SetPortVlans {
            name: name.to_string(),
            vlans: vlans.clone(),
        };
        self.record(call, |model| {
            let operation = format!("set VLANs of bridge port {name}");
            model.require_link(Namespace::Host, name, &operation)?;
            let entries = model.port_vlans.entry(name.to_string()).or_default();

            if vlans.remove_default && entries.remove(&DEFAULT_PORT_VLAN.vid).is_none() {
                let reason = format!("{name} has no VLAN 1");
                return Err(KernelError::new(
                    KernelErrorKind::NotFound,
                    Namespace::Host,
                    operation,
                    reason,
                ));
            }
            for vlan in &vlans.vlans {
                // A port has one PVID: a new one takes the flag from the old.
                if vlan.pvid {
                    entries.values_mut().for_each(|entry| entry.pvid = false);
                }
                for vid in vlan.min_id..=vlan.max_id {
                    let entry = PortVlanEntry {
                        vid,
                        pvid: vlan.pvid,
                        untagged: vlan.untagged,
                    };
                    entries.insert(vid, entry);
                }
            }
            Ok(())
        })
    }

    fn delete_link(&mut self, ns: Namespace, name: &str) -> Result<bool, KernelError> {
        let call = KernelCall::DeleteLink {
            ns,
            name: name.to_string(),
        };
        self.record(call, |model| {
            model.check_namespace(ns, &format!("delete link {name}"))?;
            let removed = model.remove_link(ns, name);
            if ns == Namespace::Host
                && let Some(peer) = model.host_peers.remove(name)
            {
                model.host_peers.remove(&peer);
                model.remove_link(ns, &peer);
            }
            Ok(removed)
        })
    }

    fn add_address(
        &mut self,
        ns: Namespace,
        link: &str,
        address: IpNet,
    ) -> Result<(), KernelError> {
        let call = KernelCall::AddAddress {
            ns,
            link: link.to_string(),
            address,
        };
        self.record(call, |model| {
            model.require_link(ns, link, &format!("add address {address} to {link}"))?;
            let addresses = model.addresses.entry((ns, link.to_string())).or_default();
            if !addresses.contains(&address) {
                addresses.push(address);
            }
            Ok(())
        })
    }

    fn delete_address(
        &mut self,
        ns: Namespace,
        link: &str,
        address: IpNet,
    ) -> Result<(), KernelError> {
        let call = KernelCall::DeleteAddress {
            ns,
            link: link.to_string(),
            address,
        };
        self.record(call, |model| {
            model.check_namespace(ns, &format!("delete address {address} from {link}"))?;
            if let Some(addresses) = model.addresses.get_mut(&(ns, link.to_string())) {
                addresses.retain(|existing| *existing != address);
            }
            Ok(())
        })
    }

    fn list_addresses(&mut self, ns: Namespace, link: &str) -> Result<Vec<IpNet>, KernelError> {
        let call = KernelCall::ListAddresses {
            ns,
            link: link.to_string(),
        };
        self.record(call, |model| {
            model.require_link(ns, link, &format!("list addresses of {link}"))?;
            Ok(model
                .addresses
                .get(&(ns, link.to_string()))
                .cloned()
                .unwrap_or_default())
        })
    }

    fn add_route(&mut self, ns: Namespace, route: &RouteSpec) -> Result<(), KernelError> {
        let call = KernelCall::AddRoute {
            ns,
            route: route.clone(),
        };
        self.record(call, |model| {
            let operation = format!("add route {}", route.dst);
            model.check_namespace(ns, &operation)?;
            if let Some(device) = &route.device {
                model.require_link(ns, device, &operation)?;
            }

            let routes = model.routes.entry(ns).or_default();
            let same_key = routes
                .iter()
                .find(|r| r.dst == route.dst && r.metric == route.metric);
            match same_key {
                Some(existing) if existing == route => Ok(()),
                Some(_) => Err(KernelError::new(
                    KernelErrorKind::Exists,
                    ns,
                    operation,
                    "a different route exists",
                )),
                None => {
                    routes.push(route.clone());
                    Ok(())
                }
            }
        })
    }

    fn delete_route(&mut self, ns: Namespace, route: &RouteSpec) -> Result<(), KernelError> {
        let call = KernelCall::DeleteRoute {
            ns,
            route: route.clone(),
        };
        self.record(call, |model| {
            let operation = format!("delete route {}", route.dst);
            model.check_namespace(ns, &operation)?;
            let routes = model.routes.entry(ns).or_default();
            // Unset fields match any route, as in the kernel's RTM_DELROUTE.
            let matches = |existing: &RouteSpec| {
                existing.dst == route.dst
                    && (route.gateway.is_none() || existing.gateway == route.gateway)
                    && (route.device.is_none() || existing.device == route.device)
                    && (route.metric.is_none() || existing.metric == route.metric)
            };
            match routes.iter().position(matches) {
                Some(position) => {
                    routes.remove(position);
                    Ok(())
                }
                None => Err(not_found(ns, operation, format!("route {}", route.dst))),
            }
        })
    }

    fn list_routes(&mut self, ns: Namespace, link: &str) -> Result<Vec<RouteSpec>, KernelError> {
        let call = KernelCall::ListRoutes {
            ns,
            link: link.to_string(),
        };
        self.record(call, |model| {
            model.require_link(ns, link, &format!("list routes of {link}"))?;
            let routes = model.routes.get(&ns).cloned().unwrap_or_default();
            Ok(routes
                .into_iter()
                .filter(|route| route.device.as_deref() == Some(link))
                .collect())
        })
    }

    fn route_device(&mut self, destination: IpAddr) -> Result<Option<String>, KernelError> {
        let call = KernelCall::RouteDevice { destination };
        self.record(call, |model| {
            // The matching host route with the longest prefix wins, as in the kernel's lookup.
            let routes = model
                .routes
                .get(&Namespace::Host)
                .cloned()
                .unwrap_or_default();
            let best = routes
                .iter()
                .filter(|route| route.dst.contains(&destination))
                .max_by_key(|route| route.dst.prefix_len());
            Ok(best.and_then(|route| route.device.clone()))
        })
    }

    fn has_container(&self) -> bool {
        lock(&self.shared.model).has_container
    }
}

impl Sysctl for RecordingKernel {
    fn get(&mut self, ns: Namespace, key: &str) -> Result<String, KernelError> {
        let call = KernelCall::SysctlGet {
            ns,
            key: key.to_string(),
        };
        self.record(call, |model| {
            let operation = format!("read sysctl {key}");
            model.check_namespace(ns, &operation)?;
            let value = model.sysctls.get(&(ns, key.to_string())).cloned();
            value.ok_or_else(|| not_found(ns, operation, format!("sysctl {key}")))
        })
    }

    fn set(&mut self, ns: Namespace, key: &str, value: &str) -> Result<(), KernelError> {
        let call = KernelCall::SysctlSet {
            ns,
            key: key.to_string(),
            value: value.to_string(),
        };
        self.record(call, |model| {
            model.check_namespace(ns, &format!("set sysctl {key}"))?;
            model
                .sysctls
                .insert((ns, key.to_string()), value.to_string());
            Ok(())
        })
    }
}

fn same_family(left: IpNet, right: IpNet) -> bool {
    left.addr().is_ipv4() == right.addr().is_ipv4()
}

impl Firewall for RecordingKernel {
    fn add_port_mappings(&mut self, owner: &Owner, spec: &PortMapSpec) -> Result<(), KernelError> {
        let call = KernelCall::AddPortMappings {
            owner: owner.clone(),
            spec: spec.clone(),
        };
        self.record(call, |model| {
            // A new spec replaces the owner's earlier one of the same family.
            let specs = model.port_mappings.entry(owner.clone()).or_default();
            specs.retain(|old| !same_family(old.container_address, spec.container_address));
            specs.push(spec.clone());
            Ok(())
        })
    }

    fn check_port_mappings(
        &mut self,
        owner: &Owner,
        spec: &PortMapSpec,
    ) -> Result<(), KernelError> {
        let call = KernelCall::CheckPortMappings {
            owner: owner.clone(),
            spec: spec.clone(),
        };
        self.record(call, |model| {
            let installed = model
                .port_mappings
                .get(owner)
                .is_some_and(|specs| specs.contains(spec));
            match installed {
                true => Ok(()),
                false => Err(not_found(
                    Namespace::Host,
                    "check port mappings".into(),
                    "port mappings".into(),
                )),
            }
        })
    }

    fn remove_port_mappings(&mut self, owner: &Owner) -> Result<(), KernelError> {
        let call = KernelCall::RemovePortMappings {
            owner: owner.clone(),
        };
        self.record(call, |model| {
            model.port_mappings.remove(owner);
            Ok(())
        })
    }

    fn add_masquerade(&mut self, owner: &Owner, address: IpNet) -> Result<(), KernelError> {
        let call = KernelCall::AddMasquerade {
            owner: owner.clone(),
            address,
        };
        self.record(call, |model| {
            let addresses = model.masquerades.entry(owner.clone()).or_default();
            if !addresses.contains(&address) {
                addresses.push(address);
            }
            Ok(())
        })
    }

    fn check_masquerade(&mut self, owner: &Owner, address: IpNet) -> Result<(), KernelError> {
        let call = KernelCall::CheckMasquerade {
            owner: owner.clone(),
            address,
        };
        self.record(call, |model| {
            let installed = model
                .masquerades
                .get(owner)
                .is_some_and(|list| list.contains(&address));
            match installed {
                true => Ok(()),
                false => Err(not_found(
                    Namespace::Host,
                    "check masquerade".into(),
                    format!("masquerade for {address}"),
                )),
            }
        })
    }

    fn remove_masquerade(&mut self, owner: &Owner) -> Result<(), KernelError> {
        let call = KernelCall::RemoveMasquerade {
            owner: owner.clone(),
        };
        self.record(call, |model| {
            model.masquerades.remove(owner);
            Ok(())
        })
    }
}

impl ForwardFilter for RecordingKernel {
    fn add_forward_rules(&mut self, spec: &ForwardSpec) -> Result<(), KernelError> {
        let call = KernelCall::AddForwardRules { spec: spec.clone() };
        self.record(call, |model| {
            if !model.admin_chains.contains(&spec.admin_chain) {
                model.admin_chains.push(spec.admin_chain.clone());
            }
            for address in &spec.addresses {
                if !model.forward_accepts.contains(address) {
                    model.forward_accepts.push(*address);
                }
            }
            Ok(())
        })
    }

    fn check_forward_rules(&mut self, spec: &ForwardSpec) -> Result<(), KernelError> {
        let call = KernelCall::CheckForwardRules { spec: spec.clone() };
        self.record(call, |model| {
            let missing = spec
                .addresses
                .iter()
                .find(|address| !model.forward_accepts.contains(address));
            match (model.admin_chains.contains(&spec.admin_chain), missing) {
                (false, _) => Err(not_found(
                    Namespace::Host,
                    "check forward rules".into(),
                    format!("chain {}", spec.admin_chain),
                )),
                (true, Some(address)) => Err(not_found(
                    Namespace::Host,
                    "check forward rules".into(),
                    format!("accept rules for {address}"),
                )),
                (true, None) => Ok(()),
            }
        })
    }

    fn remove_forward_rules(&mut self, addresses: &[IpAddr]) -> Result<(), KernelError> {
        let call = KernelCall::RemoveForwardRules {
            addresses: addresses.to_vec(),
        };
        self.record(call, |model| {
            model
                .forward_accepts
                .retain(|address| !addresses.contains(address));
            Ok(())
        })
    }
}

impl SpoofCheck for RecordingKernel {
    fn add_spoof_check(&mut self, owner: &Owner, spec: &SpoofCheckSpec) -> Result<(), KernelError> {
        let call = KernelCall::AddSpoofCheck {
            owner: owner.clone(),
            spec: spec.clone(),
        };
        self.record(call, |model| {
            model.spoof_checks.insert(owner.clone(), spec.clone());
            Ok(())
        })
    }

    fn remove_spoof_check(&mut self, owner: &Owner) -> Result<(), KernelError> {
        let call = KernelCall::RemoveSpoofCheck {
            owner: owner.clone(),
        };
        self.record(call, |model| {
            model.spoof_checks.remove(owner);
            Ok(())
        })
    }
}

impl NftNat for RecordingKernel {
    fn add_port_mappings(
        &mut self,
        owner: &Owner,
        spec: &NftPortMapSpec,
    ) -> Result<(), KernelError> {
        let call = KernelCall::AddNftPortMappings {
            owner: owner.clone(),
            spec: spec.clone(),
        };
        self.record(call, |model| {
            model.nft_port_mappings.push((owner.clone(), spec.clone()));
            Ok(())
        })
    }

    /// Passes when an added spec of the owner, of the same family, has
    /// every mapping of `spec`, and SNAT when `spec` has it.
    fn check_port_mappings(
        &mut self,
        owner: &Owner,
        spec: &NftPortMapSpec,
    ) -> Result<(), KernelError> {
        let call = KernelCall::CheckNftPortMappings {
            owner: owner.clone(),
            spec: spec.clone(),
        };
        self.record(call, |model| {
            let covers = |added: &NftPortMapSpec| {
                same_family(added.container_address, spec.container_address)
                    && spec.mappings.iter().all(|m| added.mappings.contains(m))
                    && (added.snat || !spec.snat)
            };
            let installed = model
                .nft_port_mappings
                .iter()
                .any(|(added_owner, added)| added_owner == owner && covers(added));
            match installed {
                true => Ok(()),
                false => Err(not_found(
                    Namespace::Host,
                    "check nftables port mappings".into(),
                    "nftables port mappings".into(),
                )),
            }
        })
    }

    fn remove_port_mappings(&mut self, owner: &Owner) -> Result<(), KernelError> {
        let call = KernelCall::RemoveNftPortMappings {
            owner: owner.clone(),
        };
        self.record(call, |model| {
            let id = &owner.container_id;
            model
                .nft_port_mappings
                .retain(|(added, _)| &added.container_id != id);
            Ok(())
        })
    }

    fn add_masquerade(&mut self, owner: &Owner, addresses: &[IpNet]) -> Result<(), KernelError> {
        let call = KernelCall::AddNftMasquerade {
            owner: owner.clone(),
            addresses: addresses.to_vec(),
        };
        self.record(call, |model| {
            model
                .nft_masquerades
                .insert(owner.clone(), addresses.to_vec());
            Ok(())
        })
    }

    fn remove_masquerade(&mut self, owner: &Owner) -> Result<(), KernelError> {
        let call = KernelCall::RemoveNftMasquerade {
            owner: owner.clone(),
        };
        self.record(call, |model| {
            model.nft_masquerades.remove(owner);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn veth() -> VethSpec {
        VethSpec {
            host_name: "veth1".into(),
            container_name: "eth0".into(),
            mtu: Some(1400),
            container_mac: Some("0A:58:0A:F4:0A:48".into()),
        }
    }

    fn owner() -> Owner {
        Owner {
            network: "mynet".into(),
            container_id: "abc".into(),
            ifname: "eth0".into(),
        }
    }

    #[test]
    fn records_calls_in_order() {
        let (mut kernel, recorder) = RecordingKernel::new();

        kernel.netlink.create_veth(&veth()).unwrap();
        kernel
            .sysctl
            .set(Namespace::Host, "net/ipv4/ip_forward", "1")
            .unwrap();

        let calls = recorder.calls();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0], KernelCall::CreateVeth { spec: veth() });
        assert_eq!(
            calls[1],
            KernelCall::SysctlSet {
                ns: Namespace::Host,
                key: "net/ipv4/ip_forward".into(),
                value: "1".into(),
            }
        );
    }

    #[test]
    fn model_returns_created_links_and_addresses() {
        let (mut kernel, recorder) = RecordingKernel::new();
        let (_, container_end) = kernel.netlink.create_veth(&veth()).unwrap();
        let address: IpNet = "10.244.10.2/24".parse().unwrap();

        kernel
            .netlink
            .add_address(Namespace::Container, "eth0", address)
            .unwrap();
        kernel
            .netlink
            .add_address(Namespace::Container, "eth0", address)
            .unwrap();

        let found = kernel
            .netlink
            .get_link(Namespace::Container, "eth0")
            .unwrap();
        assert_eq!(found, Some(container_end.clone()));
        assert_eq!(container_end.mac, "0a:58:0a:f4:0a:48");
        assert_eq!(
            kernel
                .netlink
                .list_addresses(Namespace::Container, "eth0")
                .unwrap(),
            vec![address]
        );
        assert_eq!(
            recorder.addresses(Namespace::Container, "eth0"),
            vec![address]
        );
        assert_eq!(
            kernel.netlink.get_link(Namespace::Host, "eth0").unwrap(),
            None
        );
    }

    #[test]
    fn duplicate_veth_is_exists() {
        let (mut kernel, _) = RecordingKernel::new();
        kernel.netlink.create_veth(&veth()).unwrap();
        let err = kernel.netlink.create_veth(&veth()).unwrap_err();
        assert_eq!(err.kind, KernelErrorKind::Exists);
    }

    #[test]
    fn configure_sets_master_and_up() {
        let (mut kernel, _) = RecordingKernel::new();
        kernel.netlink.create_veth(&veth()).unwrap();
        let bridge = BridgeSpec {
            name: "cni0".into(),
            mtu: None,
            promisc: false,
            vlan_filtering: false,
        };
        kernel.netlink.ensure_bridge(&bridge).unwrap();
        let settings = LinkSettings {
            up: Some(true),
            master: Some("cni0".into()),
            ..LinkSettings::default()
        };

        let link = kernel
            .netlink
            .configure_link(Namespace::Host, "veth1", &settings)
            .unwrap();

        assert_eq!(link.master.as_deref(), Some("cni0"));
        assert!(link.up);
        let err = kernel
            .netlink
            .ensure_bridge(&BridgeSpec {
                name: "veth1".into(),
                ..bridge
            })
            .unwrap_err();
        assert_eq!(err.kind, KernelErrorKind::Exists);
    }

    #[test]
    fn scripted_failure_hits_nth_call() {
        let (mut kernel, recorder) = RecordingKernel::new();
        recorder.fail_call(CallKind::SysctlSet, 2, KernelErrorKind::Failed);

        kernel.sysctl.set(Namespace::Host, "net/a", "1").unwrap();
        let err = kernel
            .sysctl
            .set(Namespace::Host, "net/b", "1")
            .unwrap_err();
        kernel.sysctl.set(Namespace::Host, "net/c", "1").unwrap();

        assert_eq!(err.kind, KernelErrorKind::Failed);
        assert_eq!(recorder.sysctl(Namespace::Host, "net/b"), None);
        assert_eq!(
            recorder.sysctl(Namespace::Host, "net/c").as_deref(),
            Some("1")
        );
        assert_eq!(recorder.calls_of(CallKind::SysctlSet).len(), 3);
    }

    #[test]
    fn missing_container_fails_container_ops() {
        let (mut kernel, recorder) = RecordingKernel::new();
        recorder.remove_container();

        assert!(!kernel.netlink.has_container());
        let err = kernel.netlink.create_veth(&veth()).unwrap_err();
        assert_eq!(err.kind, KernelErrorKind::NotFound);
        let err = kernel
            .sysctl
            .get(Namespace::Container, "net/ipv4/ip_forward")
            .unwrap_err();
        assert_eq!(err.kind, KernelErrorKind::NotFound);
    }

    #[test]
    fn route_device_uses_longest_prefix() {
        let (mut kernel, recorder) = RecordingKernel::new();
        for name in ["eth0", "cni0"] {
            let link = LinkInfo {
                name: name.into(),
                index: 10,
                kind: String::new(),
                mac: String::new(),
                mtu: 1500,
                up: true,
                oper_state: "up".into(),
                master: None,
                promisc: false,
                allmulti: false,
                tx_queue_len: 1000,
            };
            recorder.add_link(Namespace::Host, link);
        }
        for (dst, device) in [("0.0.0.0/0", "eth0"), ("10.244.10.0/24", "cni0")] {
            let route = RouteSpec {
                dst: dst.parse().unwrap(),
                gateway: None,
                device: Some(device.into()),
                metric: None,
                source: None,
            };
            kernel.netlink.add_route(Namespace::Host, &route).unwrap();
        }

        let device = kernel
            .netlink
            .route_device("10.244.10.7".parse().unwrap())
            .unwrap();
        assert_eq!(device.as_deref(), Some("cni0"));
        let device = kernel
            .netlink
            .route_device("192.0.2.1".parse().unwrap())
            .unwrap();
        assert_eq!(device.as_deref(), Some("eth0"));
    }

    #[test]
    fn firewall_model_replaces_per_family() {
        let (mut kernel, recorder) = RecordingKernel::new();
        let spec = |address: &str| PortMapSpec {
            container_address: address.parse().unwrap(),
            mappings: vec![],
            snat: true,
            masq_all: false,
            mark_bit: 13,
            mark_chain: None,
            conditions: Vec::new(),
        };

        kernel
            .firewall
            .add_port_mappings(&owner(), &spec("10.0.0.2/24"))
            .unwrap();
        kernel
            .firewall
            .add_port_mappings(&owner(), &spec("fd00::2/64"))
            .unwrap();
        kernel
            .firewall
            .add_port_mappings(&owner(), &spec("10.0.0.3/24"))
            .unwrap();

        assert_eq!(
            recorder.port_mappings(&owner()),
            vec![spec("fd00::2/64"), spec("10.0.0.3/24")]
        );
        kernel
            .firewall
            .check_port_mappings(&owner(), &spec("10.0.0.3/24"))
            .unwrap();
        let err = kernel
            .firewall
            .check_port_mappings(&owner(), &spec("10.0.0.2/24"))
            .unwrap_err();
        assert_eq!(err.kind, KernelErrorKind::NotFound);
        kernel.firewall.remove_port_mappings(&owner()).unwrap();
        assert!(recorder.port_mappings(&owner()).is_empty());
    }

    #[test]
    fn masquerade_model_round_trips() {
        let (mut kernel, recorder) = RecordingKernel::new();
        let address: IpNet = "10.0.0.2/24".parse().unwrap();

        kernel.firewall.add_masquerade(&owner(), address).unwrap();
        kernel.firewall.check_masquerade(&owner(), address).unwrap();
        assert_eq!(recorder.masquerades(&owner()), vec![address]);

        kernel.firewall.remove_masquerade(&owner()).unwrap();
        let err = kernel
            .firewall
            .check_masquerade(&owner(), address)
            .unwrap_err();
        assert_eq!(err.kind, KernelErrorKind::NotFound);
    }

    #[test]
    fn forward_model_round_trips() {
        let (mut kernel, recorder) = RecordingKernel::new();
        let spec = ForwardSpec {
            addresses: vec!["10.0.0.2".parse().unwrap()],
            admin_chain: "CNI-ADMIN".into(),
        };

        kernel.filter.add_forward_rules(&spec).unwrap();
        kernel.filter.check_forward_rules(&spec).unwrap();
        assert_eq!(recorder.admin_chains(), ["CNI-ADMIN"]);

        kernel.filter.remove_forward_rules(&spec.addresses).unwrap();
        assert!(recorder.forward_accepts().is_empty());
        assert_eq!(recorder.admin_chains(), ["CNI-ADMIN"], "chains stay");
        let err = kernel.filter.check_forward_rules(&spec).unwrap_err();
        assert_eq!(err.kind, KernelErrorKind::NotFound);
    }

    #[test]
    fn spoof_check_model_replaces_and_removes() {
        let (mut kernel, recorder) = RecordingKernel::new();
        let spec = |mac: &str| SpoofCheckSpec {
            host_link: "veth1".into(),
            mac: mac.into(),
        };

        kernel
            .spoof_check
            .add_spoof_check(&owner(), &spec("0a:58:00:00:00:01"))
            .unwrap();
        kernel
            .spoof_check
            .add_spoof_check(&owner(), &spec("0a:58:00:00:00:02"))
            .unwrap();
        assert_eq!(
            recorder.spoof_check(&owner()),
            Some(spec("0a:58:00:00:00:02"))
        );

        kernel.spoof_check.remove_spoof_check(&owner()).unwrap();
        kernel.spoof_check.remove_spoof_check(&owner()).unwrap();
        assert_eq!(recorder.spoof_check(&owner()), None);
        assert_eq!(recorder.calls_of(CallKind::RemoveSpoofCheck).len(), 2);
    }
}
