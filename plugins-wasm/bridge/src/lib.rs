//! bridge: attaches a container to a Linux bridge in the host namespace
//! through a veth pair, with addresses from the IPAM plugin named in
//! `ipam.type`, following the reference plugin's order of steps.

mod addressing;
mod check;
mod config;
mod gateway;
mod vlan;

use std::time::Duration;

use cniwasm_plugin_sdk::cniwasm_types::{self, Interface};
use cniwasm_plugin_sdk::link::{self, BridgeSpec, LinkInfo, LinkSettings, VethPair, VethSpec};
use cniwasm_plugin_sdk::{
    AddOutput, CniError, HostResultExt, Invocation, Netns, Plugin, PluginConfig, address, codes,
    delegate_ipam_add, delegate_ipam_check, delegate_ipam_del, delegate_ipam_status,
    describe_host_error, logging, nat, nft_nat, route, spoof_check, sysctl,
};

use crate::addressing::{BridgeGateways, apply_gateways, container_routes};
use crate::config::{BridgeConfig, MasqueradeBackend};

/// The bridge plugin.
pub struct Bridge;

impl Plugin for Bridge {
    fn add(inv: &Invocation, config: &PluginConfig) -> Result<AddOutput, CniError> {
        let options = BridgeConfig::parse(config, inv)?;
        options.validate_for_add(config)?;
        let bridge = ensure_bridge(&options)?;

        let pair = link::create_veth(&VethSpec {
            container_name: inv.ifname.clone(),
            mtu: options.mtu,
            container_mac: options.mac.clone(),
        })
        .context(&format!(
            "failed to create veth {:?} in the container",
            inv.ifname
        ))?;

        let mut undo = Undo {
            container_link: Some(inv.ifname.clone()),
            ..Undo::default()
        };
        let attachment = Attachment {
            inv,
            config,
            options: &options,
            bridge: &bridge,
            pair: &pair,
        };
        match attachment.complete(&mut undo) {
            Ok(result) => Ok(AddOutput::Result(result)),
            Err(error) => {
                undo.run();
                Err(error)
            }
        }
    }

    fn del(inv: &Invocation, config: &PluginConfig) -> Result<(), CniError> {
        let options = BridgeConfig::parse(config, inv)?;

        // The host veth disappears with its peer; the bridge stays. A missing
        // namespace or link means the container side is gone already.
        if inv.netns.is_some() {
            match link::delete(Netns::Container, &inv.ifname) {
                Ok(_) | Err(cniwasm_plugin_sdk::HostError::NotFound(_)) => {}
                Err(error) => {
                    return Err(error).context(&format!(
                        "failed to delete {:?} in the container",
                        inv.ifname
                    ));
                }
            }
        }

        if config.ipam_type().is_some() {
            delegate_ipam_del()?;
        }
        // The reference plugin logs a failed removal and goes on. Unlike the
        // reference, this runs without a namespace too, so a DEL after the
        // container is gone still removes the chains.
        if options.mac_spoof_check
            && let Err(error) = spoof_check::remove()
        {
            logging::warn(&format!(
                "failed to remove the macspoofchk rules of {:?}: {}",
                inv.ifname,
                describe_host_error(&error)
            ));
        }
        if options.ip_masq {
            remove_masquerade_both(options.ip_masq_backend)?;
        }
        Ok(())
    }

    /// Like the reference plugin (v1.1.1), CHECK does not look at the
    /// macspoofchk rules.
    fn check(inv: &Invocation, config: &PluginConfig) -> Result<(), CniError> {
        let options = BridgeConfig::parse(config, inv)?;
        if config.ipam_type().is_some() {
            delegate_ipam_check()?;
        }
        let Some(prev) = config.prev_result.as_ref() else {
            return Err(CniError::new(
                codes::INVALID_NETWORK_CONFIG,
                "required prevResult missing: CHECK needs the result of ADD",
            ));
        };
        check::check_attachment(inv, &options, prev)
    }

    /// The bridge itself is always ready, as in the reference plugin, which
    /// passes STATUS on to its IPAM plugin and returns that plugin's error.
    fn status(_inv: &Invocation, config: &PluginConfig) -> Result<(), CniError> {
        match config.ipam_type() {
            Some(_) => delegate_ipam_status(),
            None => Ok(()),
        }
    }
}

cniwasm_plugin_sdk::export_plugin!(Bridge);

/// The completed ADD steps that a failure must undo, in reverse order.
#[derive(Default)]
struct Undo {
    container_link: Option<String>,
    spoof_check: bool,
    ipam_allocated: bool,
    /// The backend of the masquerade rules added, if any.
    masquerade: Option<MasqueradeBackend>,
}

impl Undo {
    /// Undoes the recorded steps; failures are logged, because the error of
    /// the step that failed is the one the runtime needs.
    fn run(&self) {
        if let Some(backend) = self.masquerade
            && let Err(error) = remove_masquerade(backend)
        {
            logging::warn(&format!(
                "failed to remove masquerade after a failed ADD: {}",
                describe_host_error(&error)
            ));
        }
        if self.ipam_allocated
            && let Err(error) = delegate_ipam_del()
        {
            logging::warn(&format!(
                "failed to release IPAM addresses after a failed ADD: {error}"
            ));
        }
        if self.spoof_check
            && let Err(error) = spoof_check::remove()
        {
            logging::warn(&format!(
                "failed to remove the macspoofchk rules after a failed ADD: {}",
                describe_host_error(&error)
            ));
        }
        if let Some(name) = &self.container_link
            && let Err(error) = link::delete(Netns::Container, name)
        {
            logging::warn(&format!(
                "failed to delete {name:?} after a failed ADD: {}",
                describe_host_error(&error)
            ));
        }
    }
}

fn ensure_bridge(options: &BridgeConfig) -> Result<LinkInfo, CniError> {
    let bridge = link::ensure_bridge(&BridgeSpec {
        name: options.bridge.clone(),
        mtu: options.mtu,
        promisc: options.promisc_mode,
        vlan_filtering: options.vlan.enabled(),
    })
    .context(&format!("failed to set up bridge {:?}", options.bridge))?;

    set_sysctl_best_effort(
        Netns::Host,
        &format!("net/ipv6/conf/{}/accept_ra", options.bridge),
        "0",
    );
    Ok(bridge)
}

/// The values every ADD step after veth creation needs.
struct Attachment<'a> {
    inv: &'a Invocation,
    config: &'a PluginConfig,
    options: &'a BridgeConfig,
    bridge: &'a LinkInfo,
    pair: &'a VethPair,
}

impl Attachment<'_> {
    fn complete(&self, undo: &mut Undo) -> Result<cniwasm_types::Result, CniError> {
        self.attach_host_veth()?;
        // The reference plugin installs the check right after the veth, so
        // a container never sends through an unchecked port. A failed
        // install may leave the chains of its first nft transaction, so the
        // undo step is armed before it.
        if self.options.mac_spoof_check {
            undo.spoof_check = true;
            self.install_spoof_check()?;
        }

        let mut result = cniwasm_types::Result {
            interfaces: self.interfaces(),
            ..Default::default()
        };
        let enabled = !self.options.disable_container_interface;
        if self.config.ipam_type().is_some() {
            self.configure_addresses(&mut result, undo)?;
        } else if enabled {
            // Layer 2 only: no addresses, no routes.
            set_link_up(Netns::Container, &self.inv.ifname)?;
        }

        // A port whose peer stays down never becomes operational.
        if enabled {
            wait_for_port_up(&self.pair.host.name)?;
        }
        self.refresh_macs(&mut result);
        if !self.config.dns.is_empty() {
            result.dns = self.config.dns.clone();
        }
        Ok(result)
    }

    fn attach_host_veth(&self) -> Result<(), CniError> {
        let host = &self.pair.host.name;
        let settings = LinkSettings {
            master: Some(self.options.bridge.clone()),
            up: Some(true),
            ..Default::default()
        };
        link::configure(Netns::Host, host, &settings).context(&format!(
            "failed to connect {host:?} to bridge {:?}",
            self.options.bridge
        ))?;

        // Hairpin mode and isolation are bridge-port flags, so they are set
        // after enslaving.
        if self.options.hairpin_mode || self.options.port_isolation {
            let port = LinkSettings {
                hairpin: self.options.hairpin_mode.then_some(true),
                isolated: self.options.port_isolation.then_some(true),
                ..Default::default()
            };
            link::configure(Netns::Host, host, &port).context(&format!(
                "failed to set hairpin mode or isolation on bridge port {host:?}"
            ))?;
        }

        if let Some(vlans) = self.options.vlan.port_vlans() {
            link::set_port_vlans(host, &vlans)
                .context(&format!("failed to set up VLANs on bridge port {host:?}"))?;
        }

        set_sysctl_best_effort(Netns::Host, &format!("net/ipv6/conf/{host}/accept_ra"), "0");
        Ok(())
    }

    /// Drops frames that enter the bridge from the host veth with a source
    /// MAC other than the container interface's.
    fn install_spoof_check(&self) -> Result<(), CniError> {
        let host = &self.pair.host.name;
        let mac = &self.pair.container.mac;
        spoof_check::add(host, mac).context(&format!(
            "macspoofchk failed on host veth {host:?} for container MAC {mac}"
        ))
    }

    fn interfaces(&self) -> Vec<Interface> {
        vec![
            Interface {
                name: self.bridge.name.clone(),
                mac: self.bridge.mac.clone(),
                ..Default::default()
            },
            Interface {
                name: self.pair.host.name.clone(),
                mac: self.pair.host.mac.clone(),
                ..Default::default()
            },
            Interface {
                name: self.inv.ifname.clone(),
                mac: self.pair.container.mac.clone(),
                sandbox: self.inv.netns_path().to_string(),
                ..Default::default()
            },
        ]
    }

    fn configure_addresses(
        &self,
        result: &mut cniwasm_types::Result,
        undo: &mut Undo,
    ) -> Result<(), CniError> {
        let ipam = delegate_ipam_add(self.config)?;
        undo.ipam_allocated = true;
        result.ips = ipam.ips;
        result.routes = ipam.routes;
        result.dns = ipam.dns;

        let gateways = apply_gateways(result, self.options)?;
        configure_container(&self.inv.ifname, result, self.options.enable_dad)?;

        if self.options.is_gateway {
            self.add_gateways(result, &gateways)?;
        }

        if self.options.ip_masq {
            let backend = self.options.ip_masq_backend;
            undo.masquerade = Some(backend);
            add_masquerade(backend, result)?;
        }
        Ok(())
    }

    /// Puts the gateway addresses on the bridge, or with a `vlan` on the
    /// VLAN gateway link, and enables forwarding for their families.
    fn add_gateways(
        &self,
        result: &mut cniwasm_types::Result,
        gateways: &BridgeGateways,
    ) -> Result<(), CniError> {
        if self.options.vlan.vlan == 0 {
            for gateway in gateways {
                gateway::ensure_address(
                    &self.options.bridge,
                    *gateway,
                    self.options.force_address,
                )?;
            }
            self.pin_bridge_mac()?;
        } else {
            let link = gateway::ensure_vlan_link(self.options, self.bridge)?;
            for gateway in gateways {
                gateway::ensure_address(&link.name, *gateway, self.options.force_address)?;
            }
            // The reference pins the MAC of the link that got the
            // addresses only, so here the bridge's MAC follows its ports.
            gateway::pin_mac(&link)?;
            // Appended after the container interface, so the IPs keep
            // pointing at index 2, as in the reference's result.
            result.interfaces.push(Interface {
                name: link.name,
                mac: link.mac,
                ..Default::default()
            });
        }

        for ipv6 in [false, true] {
            if gateways
                .iter()
                .any(|gateway| gateway.addr().is_ipv6() == ipv6)
            {
                gateway::enable_forwarding(ipv6)?;
            }
        }
        Ok(())
    }

    /// Sets the bridge's MAC to the value it had before the host veth
    /// joined, as the reference plugin does. Without that, the kernel gives
    /// the bridge the lowest MAC of its ports, which changes as ports come
    /// and go and would equal this container's host veth.
    fn pin_bridge_mac(&self) -> Result<(), CniError> {
        let name = &self.options.bridge;
        let settings = LinkSettings {
            mac: Some(self.bridge.mac.clone()),
            ..Default::default()
        };
        link::configure(Netns::Host, name, &settings)
            .context(&format!("failed to set the MAC address of bridge {name:?}"))?;
        Ok(())
    }

    /// Reads the MACs again: the bridge's can change when a port joins.
    fn refresh_macs(&self, result: &mut cniwasm_types::Result) {
        for (index, name) in [(0, &self.options.bridge), (1, &self.pair.host.name)] {
            if let Ok(Some(info)) = link::get(Netns::Host, name) {
                result.interfaces[index].mac = info.mac;
            }
        }
    }
}

/// Masquerades traffic from the result's addresses. The nftables backend
/// takes them in one call, because each call replaces the attachment's
/// earlier rules, as the reference's does.
fn add_masquerade(
    backend: MasqueradeBackend,
    result: &cniwasm_types::Result,
) -> Result<(), CniError> {
    let addresses: Vec<String> = result.ips.iter().map(|ip| ip.address.clone()).collect();
    match backend {
        MasqueradeBackend::Iptables => {
            for address in &addresses {
                nat::add_masquerade(address)
                    .context(&format!("failed to set up masquerade for {address}"))?;
            }
            Ok(())
        }
        MasqueradeBackend::Nftables => nft_nat::add_masquerade(&addresses).context(&format!(
            "failed to set up nftables masquerade for {}",
            addresses.join(", ")
        )),
    }
}

fn remove_masquerade(backend: MasqueradeBackend) -> Result<(), cniwasm_plugin_sdk::HostError> {
    match backend {
        MasqueradeBackend::Iptables => nat::remove_masquerade(),
        MasqueradeBackend::Nftables => nft_nat::remove_masquerade(),
    }
}

/// Removes the masquerade rules of both backends, as the reference's DEL
/// does, because the container may have been added with the other
/// backend. A failure of the configured backend fails DEL. The other
/// backend's is logged, because its program may not be installed, which
/// the reference also forgives.
fn remove_masquerade_both(configured: MasqueradeBackend) -> Result<(), CniError> {
    for backend in [MasqueradeBackend::Iptables, MasqueradeBackend::Nftables] {
        let Err(error) = remove_masquerade(backend) else {
            continue;
        };
        if backend == configured {
            return Err(error).context("failed to remove masquerade rules");
        }
        logging::warn(&format!(
            "failed to remove {backend:?} masquerade rules of another ipMasqBackend: {}",
            describe_host_error(&error)
        ));
    }
    Ok(())
}

/// Configures the container end: sysctls, addresses, link up, routes.
/// `enable_dad` keeps IPv6 duplicate address detection on, in the enhanced
/// variant that tolerates looped-back probes (RFC 7527). Without it,
/// detection is off as in the reference plugin, so addresses work at once.
fn configure_container(
    ifname: &str,
    result: &cniwasm_types::Result,
    enable_dad: bool,
) -> Result<(), CniError> {
    set_sysctl_best_effort(
        Netns::Container,
        &format!("net/ipv4/conf/{ifname}/arp_notify"),
        "1",
    );
    let accept_dad = format!("net/ipv6/conf/{ifname}/accept_dad");
    if enable_dad {
        let enhanced = format!("net/ipv6/conf/{ifname}/enhanced_dad");
        set_sysctl_best_effort(Netns::Container, &enhanced, "1");
        set_sysctl_best_effort(Netns::Container, &accept_dad, "1");
    } else {
        set_sysctl_best_effort(Netns::Container, &accept_dad, "0");
    }
    if result.ips.iter().any(|ip| ip.is_ipv6()) {
        set_sysctl_best_effort(Netns::Container, "net/ipv6/conf/lo/disable_ipv6", "0");
        set_sysctl_best_effort(
            Netns::Container,
            &format!("net/ipv6/conf/{ifname}/disable_ipv6"),
            "0",
        );
        set_sysctl_best_effort(
            Netns::Container,
            &format!("net/ipv6/conf/{ifname}/keep_addr_on_down"),
            "1",
        );
    }

    for ip in &result.ips {
        address::add(Netns::Container, ifname, &ip.address)
            .context(&format!("failed to add {} to {ifname:?}", ip.address))?;
    }
    set_link_up(Netns::Container, ifname)?;

    for spec in container_routes(result, ifname) {
        route::add(Netns::Container, &spec).context(&format!(
            "failed to add route to {} in the container",
            spec.dst
        ))?;
    }
    Ok(())
}

/// Waits until the host veth's operational state is `up`, polling after 0,
/// 50, 500, 1000 and 1000 ms, as the reference plugin does.
fn wait_for_port_up(name: &str) -> Result<(), CniError> {
    let mut state = String::new();
    for delay_ms in [0, 50, 500, 1000, 1000] {
        std::thread::sleep(Duration::from_millis(delay_ms));
        let info = link::get(Netns::Host, name).context(&format!("failed to read {name:?}"))?;
        state = info
            .map(|info| info.oper_state)
            .unwrap_or_else(|| "absent".to_string());
        if state == "up" {
            return Ok(());
        }
    }
    Err(CniError::new(
        codes::INTERNAL,
        format!("bridge port in error state: {state}"),
    ))
}

fn set_link_up(ns: Netns, name: &str) -> Result<(), CniError> {
    let settings = LinkSettings {
        up: Some(true),
        ..Default::default()
    };
    link::configure(ns, name, &settings).context(&format!("failed to set {name:?} up"))?;
    Ok(())
}

/// Sets a sysctl whose failure the reference plugin ignores, such as
/// `accept_ra` on a kernel without IPv6; the failure is logged.
fn set_sysctl_best_effort(ns: Netns, key: &str, value: &str) {
    if let Err(error) = sysctl::set(ns, key, value) {
        logging::debug(&format!(
            "ignoring failure to set {key}={value}: {}",
            describe_host_error(&error)
        ));
    }
}
