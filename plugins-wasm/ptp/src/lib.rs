//! ptp: gives a container a veth pair of its own, routed through a gateway
//! address on the host end, with addresses from the IPAM plugin named in
//! `ipam.type`, following the reference plugin's order of steps.

mod check;
mod config;
mod routing;

use cniwasm_plugin_sdk::cniwasm_types::{self, Interface};
use cniwasm_plugin_sdk::link::{self, LinkSettings, VethPair, VethSpec};
use cniwasm_plugin_sdk::{
    AddOutput, CniError, HostError, HostResultExt, Invocation, Netns, Plugin, PluginConfig,
    address, codes, delegate_ipam_add, delegate_ipam_check, delegate_ipam_del, describe_host_error,
    logging, nat, route, sysctl,
};

use crate::config::PtpConfig;
use crate::routing::{
    CONTAINER_INTERFACE, PointToPoint, connected_route, gateway_routes, ipam_routes,
    point_to_points,
};

/// The ptp plugin.
pub struct Ptp;

impl Plugin for Ptp {
    fn add(inv: &Invocation, config: &PluginConfig) -> Result<AddOutput, CniError> {
        let options = PtpConfig::parse_with_ipam(config)?;

        let mut undo = Undo::default();
        match attach(inv, config, &options, &mut undo) {
            Ok(result) => Ok(AddOutput::Result(result)),
            Err(error) => {
                undo.run();
                Err(error)
            }
        }
    }

    /// Releases the addresses, deletes the container end (the host end and
    /// its address and route go with it) and removes the masquerade rules.
    /// The rules are removed even when the namespace is gone, unlike in the
    /// reference plugin, because the host finds them by attachment.
    fn del(inv: &Invocation, config: &PluginConfig) -> Result<(), CniError> {
        let options = PtpConfig::parse(config)?;

        if config.ipam_type().is_some() {
            delegate_ipam_del()?;
        }
        if inv.netns.is_some() {
            match link::delete(Netns::Container, &inv.ifname) {
                Ok(_) | Err(HostError::NotFound(_)) => {}
                Err(error) => {
                    return Err(error).context(&format!(
                        "failed to delete {:?} in the container",
                        inv.ifname
                    ));
                }
            }
        }
        if options.ip_masq {
            nat::remove_masquerade().context("failed to remove masquerade rules")?;
        }
        Ok(())
    }

    fn check(inv: &Invocation, config: &PluginConfig) -> Result<(), CniError> {
        let options = PtpConfig::parse_with_ipam(config)?;
        delegate_ipam_check()?;
        let Some(prev) = config.prev_result.as_ref() else {
            return Err(CniError::new(
                codes::INVALID_NETWORK_CONFIG,
                "required prevResult missing: CHECK needs the result of ADD",
            ));
        };
        check::check_attachment(inv, &options, prev)
    }
}

cniwasm_plugin_sdk::export_plugin!(Ptp);

/// The completed ADD steps that a failure must undo, in reverse order.
#[derive(Default)]
struct Undo {
    ipam_allocated: bool,
    container_link: Option<String>,
    masquerade: bool,
}

impl Undo {
    /// Undoes the recorded steps. Failures are only logged, because the
    /// error of the step that failed is the one the runtime needs.
    fn run(&self) {
        if self.masquerade
            && let Err(error) = nat::remove_masquerade()
        {
            logging::warn(&format!(
                "failed to remove masquerade after a failed ADD: {}",
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
        if self.ipam_allocated
            && let Err(error) = delegate_ipam_del()
        {
            logging::warn(&format!(
                "failed to release IPAM addresses after a failed ADD: {error}"
            ));
        }
    }
}

/// Runs the ADD steps in the reference plugin's order: IPAM, forwarding,
/// veth pair, container side, host side, masquerade.
fn attach(
    inv: &Invocation,
    config: &PluginConfig,
    options: &PtpConfig,
    undo: &mut Undo,
) -> Result<cniwasm_types::Result, CniError> {
    let mut result = delegate_ipam_add(config)?;
    undo.ipam_allocated = true;
    let links = point_to_points(&result)?;
    enable_forwarding(&links)?;

    let pair = link::create_veth(&VethSpec {
        container_name: inv.ifname.clone(),
        mtu: options.mtu,
        container_mac: None,
    })
    .context(&format!(
        "failed to create veth {:?} in the container",
        inv.ifname
    ))?;
    undo.container_link = Some(inv.ifname.clone());

    result.interfaces = interfaces(inv, &pair);
    for ip in &mut result.ips {
        ip.interface = Some(CONTAINER_INTERFACE);
    }
    configure_container(&inv.ifname, &result, &links)?;
    configure_host_veth(&pair.host.name, &links)?;

    if options.ip_masq {
        undo.masquerade = true;
        for link in &links {
            nat::add_masquerade(&link.address.to_string())
                .context(&format!("failed to set up masquerade for {}", link.address))?;
        }
    }

    // Keys in the plugin's own "dns" replace what IPAM returned.
    if !config.dns.is_empty() {
        result.dns = config.dns.clone();
    }
    Ok(result)
}

fn interfaces(inv: &Invocation, pair: &VethPair) -> Vec<Interface> {
    vec![
        Interface {
            name: pair.host.name.clone(),
            mac: pair.host.mac.clone(),
            ..Default::default()
        },
        Interface {
            name: inv.ifname.clone(),
            mac: pair.container.mac.clone(),
            sandbox: inv.netns_path().to_string(),
            ..Default::default()
        },
    ]
}

/// Adds the addresses, sets the link up, adds the IPAM routes, then swaps
/// each connected subnet route for routes through the gateway, whose
/// source is the container address.
fn configure_container(
    ifname: &str,
    result: &cniwasm_types::Result,
    links: &[PointToPoint],
) -> Result<(), CniError> {
    if links.iter().any(|link| link.address.addr().is_ipv6()) {
        for key in [
            "net/ipv6/conf/lo/disable_ipv6".to_string(),
            format!("net/ipv6/conf/{ifname}/disable_ipv6"),
        ] {
            sysctl::set(Netns::Container, &key, "0").context(&format!("failed to set {key}"))?;
        }
    }
    for link in links {
        address::add(Netns::Container, ifname, &link.address.to_string())
            .context(&format!("failed to add {} to {ifname:?}", link.address))?;
    }
    set_link_up(Netns::Container, ifname)?;

    for spec in ipam_routes(result, ifname) {
        add_route(Netns::Container, &spec)?;
    }
    for link in links {
        let connected = connected_route(link, ifname);
        route::del(Netns::Container, &connected).context(&format!(
            "failed to delete route to {} in the container",
            connected.dst
        ))?;
        for spec in gateway_routes(link, ifname) {
            add_route(Netns::Container, &spec)?;
        }
    }
    Ok(())
}

/// Sets the host veth up, gives it each gateway as a single address and
/// routes each container address through it. The host allows this because
/// the veth was created by this ADD.
fn configure_host_veth(name: &str, links: &[PointToPoint]) -> Result<(), CniError> {
    set_link_up(Netns::Host, name)?;
    for link in links {
        let gateway = link.host_address().to_string();
        address::add(Netns::Host, name, &gateway)
            .context(&format!("failed to add {gateway} to host veth {name:?}"))?;

        // NOTE: the reference plugin adds this route with host scope. The
        // host API gives every route without a gateway link scope.
        add_route(
            Netns::Host,
            &route::RouteSpec {
                dst: link.container_host_route().to_string(),
                gw: None,
                dev: Some(name.to_string()),
                metric: None,
                src: None,
            },
        )?;
    }
    Ok(())
}

fn enable_forwarding(links: &[PointToPoint]) -> Result<(), CniError> {
    for ipv6 in [false, true] {
        if !links
            .iter()
            .any(|link| link.address.addr().is_ipv6() == ipv6)
        {
            continue;
        }
        let key = if ipv6 {
            "net/ipv6/conf/all/forwarding"
        } else {
            "net/ipv4/ip_forward"
        };
        let current = sysctl::get(Netns::Host, key).context(&format!("failed to read {key}"))?;
        if current.trim() != "1" {
            sysctl::set(Netns::Host, key, "1")
                .context(&format!("failed to enable forwarding with {key}"))?;
        }
    }
    Ok(())
}

fn add_route(ns: Netns, spec: &route::RouteSpec) -> Result<(), CniError> {
    let place = match ns {
        Netns::Host => "the host",
        Netns::Container => "the container",
    };
    route::add(ns, spec).context(&format!("failed to add route to {} in {place}", spec.dst))
}

fn set_link_up(ns: Netns, name: &str) -> Result<(), CniError> {
    let settings = LinkSettings {
        up: Some(true),
        ..Default::default()
    };
    link::configure(ns, name, &settings).context(&format!("failed to set {name:?} up"))?;
    Ok(())
}
