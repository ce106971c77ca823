//! Pure address and route plans of the ptp plugin.
//!
//! Each container address routes through its gateway over the veth: the
//! kernel's connected route of the subnet is replaced by a link route to the
//! gateway alone and a route to the subnet via the gateway. On the host side
//! the gateway is a single-address (/32 or /128) address on the host veth,
//! with a route to the container address through that veth.

pub use cniwasm_plugin_sdk::container::container_routes as ipam_routes;
use std::net::IpAddr;

use ipnet::IpNet;

use cniwasm_plugin_sdk::cniwasm_types::{self, Route};
use cniwasm_plugin_sdk::route::RouteSpec;
use cniwasm_plugin_sdk::{CniError, codes};

/// Index of the container interface in the result: host veth, container veth.
pub const CONTAINER_INTERFACE: u32 = 1;

/// One container address and the gateway it routes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PointToPoint {
    pub address: IpNet,
    pub gateway: IpAddr,
}

impl PointToPoint {
    /// The gateway as a single address, as it sits on the host veth.
    pub fn host_address(&self) -> IpNet {
        IpNet::from(self.gateway)
    }

    /// The container address as a single address, the host route's destination.
    pub fn container_host_route(&self) -> IpNet {
        IpNet::from(self.address.addr())
    }
}

/// Reads each address of the IPAM result with its gateway. An address
/// without a gateway is an error, because ptp has no other way to reach it.
pub fn point_to_points(result: &cniwasm_types::Result) -> Result<Vec<PointToPoint>, CniError> {
    if result.ips.is_empty() {
        return Err(CniError::new(
            codes::INTERNAL,
            "IPAM plugin returned missing IP config",
        ));
    }

    result
        .ips
        .iter()
        .map(|ip| {
            let address: IpNet = ip.address.parse().map_err(|_| {
                internal(format!(
                    "invalid address {:?} from IPAM: expected CIDR such as 10.1.2.2/24",
                    ip.address
                ))
            })?;
            let gateway: IpAddr = ip.gateway.parse().map_err(|_| {
                internal(format!(
                    "missing or invalid gateway {:?} for {} from IPAM: ptp routes through the gateway, so set one in the IPAM configuration",
                    ip.gateway, ip.address
                ))
            })?;
            Ok(PointToPoint { address, gateway })
        })
        .collect()
}

/// The connected route the kernel adds with the address, to delete.
pub fn connected_route(link: &PointToPoint, ifname: &str) -> RouteSpec {
    RouteSpec {
        dst: link.address.trunc().to_string(),
        gw: None,
        dev: Some(ifname.to_string()),
        metric: None,
        src: None,
    }
}

/// Builds the link route to the gateway, then the subnet route via the
/// gateway, both with the container address as source, as the reference sets.
pub fn gateway_routes(link: &PointToPoint, ifname: &str) -> [RouteSpec; 2] {
    let source = link.address.addr().to_string();
    [
        RouteSpec {
            dst: link.host_address().to_string(),
            gw: None,
            dev: Some(ifname.to_string()),
            metric: None,
            src: Some(source.clone()),
        },
        RouteSpec {
            dst: link.address.trunc().to_string(),
            gw: Some(link.gateway.to_string()),
            dev: Some(ifname.to_string()),
            metric: None,
            src: Some(source),
        },
    ]
}

/// Tells whether `routes` (as the host lists them) contain `expected`: same
/// destination network and, when `expected` names one, same gateway.
pub fn route_present(routes: &[RouteSpec], expected: &Route) -> bool {
    routes.iter().any(|route| {
        let gw_matches = expected.gw.is_empty()
            || route.gw.as_deref().and_then(|gw| gw.parse::<IpAddr>().ok())
                == expected.gw.parse::<IpAddr>().ok();
        let dst_matches = match (route.dst.parse::<IpNet>(), expected.dst.parse::<IpNet>()) {
            (Ok(listed), Ok(wanted)) => listed.trunc() == wanted.trunc(),
            _ => route.dst == expected.dst,
        };
        gw_matches && dst_matches
    })
}

fn internal(message: String) -> CniError {
    CniError::new(codes::INTERNAL, message)
}

#[cfg(test)]
mod tests {
    use cniwasm_plugin_sdk::cniwasm_types::IpConfig;

    use super::*;

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
        let error = point_to_points(&ipam_result(&[])).unwrap_err();
        assert_eq!(error.msg, "IPAM plugin returned missing IP config");
    }

    #[test]
    fn missing_gateway_rejected() {
        let error = point_to_points(&ipam_result(&[("10.1.2.5/24", "")])).unwrap_err();
        assert_eq!(error.code, 999);
        assert!(error.msg.contains("10.1.2.5/24"), "{}", error.msg);
    }

    #[test]
    fn host_side_uses_single_addresses() {
        let links = point_to_points(&ipam_result(&[
            ("10.1.2.5/24", "10.1.2.1"),
            ("fd00::5/64", "fd00::1"),
        ]))
        .unwrap();
        assert_eq!(links[0].host_address().to_string(), "10.1.2.1/32");
        assert_eq!(links[0].container_host_route().to_string(), "10.1.2.5/32");
        assert_eq!(links[1].host_address().to_string(), "fd00::1/128");
    }

    #[test]
    fn container_routes_go_through_gateway() {
        let link = point_to_points(&ipam_result(&[("10.1.2.5/24", "10.1.2.1")])).unwrap()[0];
        assert_eq!(connected_route(&link, "eth0").dst, "10.1.2.0/24");

        let [to_gateway, to_subnet] = gateway_routes(&link, "eth0");
        assert_eq!(to_gateway.dst, "10.1.2.1/32");
        assert_eq!(to_gateway.gw, None);
        assert_eq!(to_subnet.dst, "10.1.2.0/24");
        assert_eq!(to_subnet.gw.as_deref(), Some("10.1.2.1"));
        assert_eq!(to_subnet.dev.as_deref(), Some("eth0"));
        assert_eq!(to_gateway.src.as_deref(), Some("10.1.2.5"));
        assert_eq!(to_subnet.src.as_deref(), Some("10.1.2.5"));
    }

    #[test]
    fn ipam_route_takes_family_gateway() {
        let mut result = ipam_result(&[("10.1.2.5/24", "10.1.2.1")]);
        result.routes = vec![
            Route {
                dst: "0.0.0.0/0".into(),
                ..Default::default()
            },
            Route {
                dst: "192.168.0.0/16".into(),
                gw: "10.1.2.254".into(),
                priority: 50,
                ..Default::default()
            },
        ];
        let routes = ipam_routes(&result, "eth0");
        assert_eq!(routes[0].gw.as_deref(), Some("10.1.2.1"));
        assert_eq!(routes[1].gw.as_deref(), Some("10.1.2.254"));
        assert_eq!(routes[1].metric, Some(50));
    }

    #[test]
    fn route_matching() {
        let listed = [RouteSpec {
            dst: "0.0.0.0/0".into(),
            gw: Some("10.1.2.1".into()),
            dev: Some("eth0".into()),
            metric: None,
            src: None,
        }];
        let mut expected = Route {
            dst: "0.0.0.0/0".into(),
            gw: "10.1.2.1".into(),
            ..Default::default()
        };
        assert!(route_present(&listed, &expected));
        expected.gw = "10.1.2.9".into();
        assert!(!route_present(&listed, &expected));
    }
}
