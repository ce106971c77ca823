//! Pure address and route logic of the bridge plugin: filling in gateways
//! and default routes, choosing route gateways, and comparing addresses.

pub use cniwasm_plugin_sdk::container::container_routes;
use std::net::IpAddr;

use ipnet::IpNet;

use cniwasm_plugin_sdk::cniwasm_types::{self, Route};
use cniwasm_plugin_sdk::route::RouteSpec;
use cniwasm_plugin_sdk::{CniError, codes};

use crate::config::BridgeConfig;

/// Index of the container interface in the result: bridge, host veth,
/// container veth.
pub const CONTAINER_INTERFACE: u32 = 2;

/// Gateway addresses to put on the bridge, in CIDR form (`10.1.2.1/24`).
pub type BridgeGateways = Vec<IpNet>;

/// Points every IP at the container interface and, when the bridge is a
/// gateway, fills in a missing gateway as network address + 1. When the
/// bridge is the default gateway, it adds a default route per family unless
/// IPAM returned one with a gateway. Returns the gateway addresses for the
/// bridge.
pub fn apply_gateways(
    result: &mut cniwasm_types::Result,
    options: &BridgeConfig,
) -> Result<BridgeGateways, CniError> {
    if result.ips.is_empty() {
        return Err(CniError::new(
            codes::INTERNAL,
            "IPAM plugin returned missing IP config",
        ));
    }

    let mut gateways = BridgeGateways::new();
    let mut default_route_done = [false, false];
    for index in 0..result.ips.len() {
        let address = parse_cidr(&result.ips[index].address)?;
        let family = usize::from(address.addr().is_ipv6());
        let ip = &mut result.ips[index];
        ip.interface = Some(CONTAINER_INTERFACE);
        if ip.gateway.is_empty() && options.is_gateway {
            ip.gateway = next_ip(address.network()).to_string();
        }
        let gateway = ip.gateway.clone();

        if options.is_default_gateway && !default_route_done[family] {
            let default_dst = default_destination(address.addr().is_ipv6());
            let has_default = result
                .routes
                .iter()
                .any(|route| !route.gw.is_empty() && same_network(&route.dst, default_dst));
            if !has_default {
                result.routes.push(Route {
                    dst: default_dst.to_string(),
                    gw: gateway.clone(),
                    ..Default::default()
                });
            }
            default_route_done[family] = true;
        }

        if options.is_gateway {
            let gateway_ip: IpAddr = gateway.parse().map_err(|_| {
                CniError::new(
                    codes::INTERNAL,
                    format!("invalid gateway {gateway:?} from IPAM: expected an IP address"),
                )
            })?;
            let on_bridge = IpNet::new(gateway_ip, address.prefix_len())
                .map_err(|error| CniError::new(codes::INTERNAL, error.to_string()))?;
            gateways.push(on_bridge);
        }
    }
    Ok(gateways)
}

/// The steps that put a requested address on the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeAddressPlan {
    /// The bridge has the address already.
    Present,
    /// Delete these addresses (only with `forceAddress`), then add `requested`.
    Add { delete: Vec<String> },
}

/// Decides how to put `requested` on a bridge that has `existing` addresses
/// (CIDR form). A different IPv4 address, or an IPv6 address whose subnet
/// overlaps, conflicts; disjoint IPv6 subnets can coexist.
pub fn plan_bridge_address(
    bridge: &str,
    existing: &[String],
    requested: IpNet,
    force_address: bool,
) -> Result<BridgeAddressPlan, CniError> {
    let mut delete = Vec::new();
    for text in existing {
        let Ok(current) = text.parse::<IpNet>() else {
            continue;
        };
        if current == requested {
            return Ok(BridgeAddressPlan::Present);
        }
        if current.addr().is_ipv4() != requested.addr().is_ipv4() {
            continue;
        }
        let conflicts = requested.addr().is_ipv4()
            || current.contains(&requested.addr())
            || requested.contains(&current.addr());
        if !conflicts {
            continue;
        }
        if !force_address {
            return Err(CniError::new(
                codes::INTERNAL,
                format!("{bridge:?} already has an IP address different from {requested}"),
            ));
        }
        delete.push(text.clone());
    }
    Ok(BridgeAddressPlan::Add { delete })
}

/// Tells whether `routes` (as the host lists them) contain `expected`: same
/// destination network and, when `expected` names one, same gateway.
pub fn route_present(routes: &[RouteSpec], expected: &Route) -> bool {
    routes.iter().any(|route| {
        let gw_matches = expected.gw.is_empty()
            || route
                .gw
                .as_deref()
                .is_some_and(|gw| same_ip(gw, &expected.gw));
        gw_matches && same_network(&route.dst, &expected.dst)
    })
}

pub fn parse_cidr(text: &str) -> Result<IpNet, CniError> {
    text.parse().map_err(|_| {
        CniError::new(
            codes::INTERNAL,
            format!("invalid address {text:?}: expected CIDR such as 10.1.2.2/24"),
        )
    })
}

fn default_destination(ipv6: bool) -> &'static str {
    if ipv6 { "::/0" } else { "0.0.0.0/0" }
}

fn same_network(a: &str, b: &str) -> bool {
    match (a.parse::<IpNet>(), b.parse::<IpNet>()) {
        (Ok(a), Ok(b)) => a.trunc() == b.trunc(),
        _ => a == b,
    }
}

fn same_ip(a: &str, b: &str) -> bool {
    match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn next_ip(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4((u32::from(v4).wrapping_add(1)).into()),
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6).wrapping_add(1)).into()),
    }
}

#[cfg(test)]
mod tests {
    use cniwasm_types::IpConfig;

    use super::*;

    fn options(is_gateway: bool, is_default_gateway: bool) -> BridgeConfig {
        BridgeConfig {
            bridge: "cni0".into(),
            is_gateway: is_gateway || is_default_gateway,
            is_default_gateway,
            ip_masq: false,
            ip_masq_backend: Default::default(),
            mtu: None,
            hairpin_mode: false,
            promisc_mode: false,
            port_isolation: false,
            enable_dad: false,
            force_address: false,
            mac: None,
            disable_container_interface: false,
            mac_spoof_check: false,
            vlan: Default::default(),
        }
    }

    fn ipam_result(addresses: &[(&str, &str)]) -> cniwasm_types::Result {
        cniwasm_types::Result {
            ips: addresses
                .iter()
                .map(|(address, gateway)| IpConfig {
                    interface: None,
                    address: address.to_string(),
                    gateway: gateway.to_string(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn empty_ipam_result_rejected() {
        let error = apply_gateways(&mut ipam_result(&[]), &options(true, false)).unwrap_err();
        assert_eq!(error.msg, "IPAM plugin returned missing IP config");
    }

    #[test]
    fn gateway_defaults_to_network_plus_one() {
        let mut result = ipam_result(&[("10.1.2.7/24", ""), ("2001:db8::7/64", "")]);

        let gateways = apply_gateways(&mut result, &options(true, false)).unwrap();

        assert_eq!(result.ips[0].gateway, "10.1.2.1");
        assert_eq!(result.ips[1].gateway, "2001:db8::1");
        assert!(result.ips.iter().all(|ip| ip.interface == Some(2)));
        let texts: Vec<String> = gateways.iter().map(ToString::to_string).collect();
        assert_eq!(texts, ["10.1.2.1/24", "2001:db8::1/64"]);
        assert!(result.routes.is_empty());
    }

    #[test]
    fn no_gateway_without_is_gateway() {
        let mut result = ipam_result(&[("10.1.2.7/24", "")]);
        let gateways = apply_gateways(&mut result, &options(false, false)).unwrap();
        assert_eq!(result.ips[0].gateway, "");
        assert!(gateways.is_empty());
        assert_eq!(result.ips[0].interface, Some(2));
    }

    #[test]
    fn default_route_added_once_per_family() {
        let mut result = ipam_result(&[
            ("10.1.2.7/24", "10.1.2.254"),
            ("10.1.3.7/24", ""),
            ("2001:db8::7/64", ""),
        ]);

        apply_gateways(&mut result, &options(false, true)).unwrap();

        let routes: Vec<(String, String)> = result
            .routes
            .iter()
            .map(|route| (route.dst.clone(), route.gw.clone()))
            .collect();
        assert_eq!(
            routes,
            [
                ("0.0.0.0/0".to_string(), "10.1.2.254".to_string()),
                ("::/0".to_string(), "2001:db8::1".to_string())
            ]
        );
    }

    #[test]
    fn ipam_default_route_with_gw_kept() {
        let mut result = ipam_result(&[("10.1.2.7/24", "")]);
        result.routes.push(Route {
            dst: "0.0.0.0/0".into(),
            gw: "10.1.2.99".into(),
            ..Default::default()
        });

        apply_gateways(&mut result, &options(false, true)).unwrap();

        assert_eq!(result.routes.len(), 1);
        assert_eq!(result.routes[0].gw, "10.1.2.99");
    }

    #[test]
    fn ipam_default_route_without_gw_not_enough() {
        let mut result = ipam_result(&[("10.1.2.7/24", "")]);
        result.routes.push(Route {
            dst: "0.0.0.0/0".into(),
            ..Default::default()
        });

        apply_gateways(&mut result, &options(false, true)).unwrap();

        assert_eq!(result.routes.len(), 2);
        assert_eq!(result.routes[1].gw, "10.1.2.1");
    }

    #[test]
    fn container_route_gateway_choice() {
        let mut result = ipam_result(&[("10.1.2.7/24", "10.1.2.1"), ("2001:db8::7/64", "")]);
        result.routes = vec![
            Route {
                dst: "0.0.0.0/0".into(),
                ..Default::default()
            },
            Route {
                dst: "192.168.0.0/16".into(),
                gw: "10.1.2.9".into(),
                priority: 100,
                ..Default::default()
            },
            Route {
                dst: "::/0".into(),
                ..Default::default()
            },
        ];

        let specs = container_routes(&result, "eth0");

        assert_eq!(specs[0].gw.as_deref(), Some("10.1.2.1"));
        assert_eq!(specs[1].gw.as_deref(), Some("10.1.2.9"));
        assert_eq!(specs[1].metric, Some(100));
        assert_eq!(specs[2].gw, None);
        assert_eq!(specs[2].dev.as_deref(), Some("eth0"));
    }

    #[test]
    fn bridge_address_present() {
        let requested: IpNet = "10.1.2.1/24".parse().unwrap();
        let plan = plan_bridge_address("cni0", &["10.1.2.1/24".into()], requested, false).unwrap();
        assert_eq!(plan, BridgeAddressPlan::Present);
    }

    #[test]
    fn bridge_other_v4_conflicts() {
        let requested: IpNet = "10.1.2.3/16".parse().unwrap();
        let existing = vec!["10.0.0.1/8".to_string()];

        let error = plan_bridge_address("cni0", &existing, requested, false).unwrap_err();
        assert!(
            error
                .msg
                .starts_with("\"cni0\" already has an IP address different from 10.1.2.3/16")
        );

        let plan = plan_bridge_address("cni0", &existing, requested, true).unwrap();
        assert_eq!(
            plan,
            BridgeAddressPlan::Add {
                delete: vec!["10.0.0.1/8".into()]
            }
        );
    }

    #[test]
    fn bridge_v6_overlap_rules() {
        let requested: IpNet = "2001:db8:1::1/64".parse().unwrap();
        let overlapping = vec!["2001:db8:1::5/48".to_string(), "fe80::1/64".to_string()];
        assert!(plan_bridge_address("cni0", &overlapping, requested, false).is_err());

        let disjoint = vec!["2001:db9::1/64".to_string(), "fe80::1/64".to_string()];
        let plan = plan_bridge_address("cni0", &disjoint, requested, false).unwrap();
        assert_eq!(plan, BridgeAddressPlan::Add { delete: vec![] });
    }

    #[test]
    fn route_matching() {
        let listed = vec![RouteSpec {
            dst: "0.0.0.0/0".into(),
            gw: Some("10.1.2.1".into()),
            dev: Some("eth0".into()),
            metric: None,
            src: None,
        }];
        let default = Route {
            dst: "0.0.0.0/0".into(),
            gw: "10.1.2.1".into(),
            ..Default::default()
        };
        let wrong_gw = Route {
            gw: "10.1.2.2".into(),
            ..default.clone()
        };
        assert!(route_present(&listed, &default));
        assert!(!route_present(&listed, &wrong_gw));
    }
}
