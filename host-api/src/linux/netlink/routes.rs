//! Address and route requests and the mapping of their replies.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::{AddressMessageBuilder, RouteMessageBuilder};

use super::Connection;
use super::links::name_of;
use crate::kernel::{KernelError, RouteSpec};

/// Builds the RTM_DELADDR message for `address` on link `index`.
pub(super) fn address_message(index: u32, address: IpNet) -> AddressMessage {
    match address {
        IpNet::V4(net) => AddressMessageBuilder::<Ipv4Addr>::new()
            .index(index)
            .address(net.addr(), net.prefix_len())
            .build(),
        IpNet::V6(net) => AddressMessageBuilder::<Ipv6Addr>::new()
            .index(index)
            .address(net.addr(), net.prefix_len())
            .build(),
    }
}

/// Returns the local address of an RTM_NEWADDR message with its prefix.
/// IFA_LOCAL is the local address on point-to-point links, where IFA_ADDRESS
/// is the peer, so it wins when both are present.
pub(super) fn address_of(message: &AddressMessage) -> Option<IpNet> {
    let mut local = None;
    let mut address = None;
    for attr in &message.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    IpNet::new(local.or(address)?, message.header.prefix_len).ok()
}

pub(super) async fn list_addresses(
    conn: &Connection,
    index: u32,
    operation: &str,
) -> Result<Vec<IpNet>, KernelError> {
    let replies = conn
        .handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    let messages: Vec<AddressMessage> = replies
        .try_collect()
        .await
        .map_err(|err| conn.error(operation, err))?;
    Ok(messages.iter().filter_map(address_of).collect())
}

/// Builds the RTM_NEWROUTE message for `route`. A route without a gateway
/// gets link scope, as `ip route add DST dev DEV` gives it.
pub(super) fn add_route_message(
    route: &RouteSpec,
    device_index: Option<u32>,
) -> Result<RouteMessage, String> {
    let mut builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(route.dst.addr(), route.dst.prefix_len())
        .map_err(|err| err.to_string())?
        .protocol(RouteProtocol::Boot);

    match route.gateway {
        Some(gateway) => builder = builder.gateway(gateway).map_err(|err| err.to_string())?,
        None => builder = builder.scope(RouteScope::Link),
    }
    if let Some(index) = device_index {
        builder = builder.output_interface(index);
    }
    if let Some(metric) = route.metric {
        builder = builder.priority(metric);
    }
    if let Some(source) = route.source {
        builder = builder
            .pref_source(source)
            .map_err(|err| format!("{err:?}"))?;
    }
    Ok(builder.build())
}

/// Builds the RTM_DELROUTE message for `route`. Protocol, type 0 and scope
/// "nowhere" act as wildcards in the kernel's match, as in `ip route del`.
pub(super) fn delete_route_message(
    route: &RouteSpec,
    device_index: Option<u32>,
) -> Result<RouteMessage, String> {
    let mut message = add_route_message(route, device_index)?;
    message.header.protocol = RouteProtocol::Unspec;
    message.header.scope = RouteScope::NoWhere;
    message.header.kind = RouteType::Unspec;
    Ok(message)
}

/// Dumps the main-table unicast routes of both families, with device names.
/// With `device_index`, only the routes out of that link are kept.
pub(super) async fn dump_routes(
    conn: &Connection,
    device_index: Option<u32>,
    operation: &str,
) -> Result<Vec<RouteSpec>, KernelError> {
    let names = link_names(conn, operation).await?;
    // AF_UNSPEC in a dump request returns the routes of every family.
    let request = RouteMessageBuilder::<IpAddr>::new().build();
    let messages: Vec<RouteMessage> = conn
        .handle
        .route()
        .get(request)
        .execute()
        .try_collect()
        .await
        .map_err(|err| conn.error(operation, err))?;

    let routes = messages
        .iter()
        .filter(|message| is_main_unicast(message))
        .filter(|message| device_index.is_none() || output_index(message) == device_index)
        .filter_map(|message| to_route_spec(message, &names))
        .collect();
    Ok(routes)
}

async fn link_names(
    conn: &Connection,
    operation: &str,
) -> Result<HashMap<u32, String>, KernelError> {
    let links: Vec<_> = conn
        .handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|err| conn.error(operation, err))?;
    Ok(links
        .iter()
        .filter_map(|link| Some((link.header.index, name_of(link)?)))
        .collect())
}

fn is_main_unicast(message: &RouteMessage) -> bool {
    let table = message
        .attributes
        .iter()
        .find_map(|attr| match attr {
            RouteAttribute::Table(table) => Some(*table),
            _ => None,
        })
        .unwrap_or(u32::from(message.header.table));
    table == u32::from(RouteHeader::RT_TABLE_MAIN) && message.header.kind == RouteType::Unicast
}

pub(super) fn output_index(message: &RouteMessage) -> Option<u32> {
    message.attributes.iter().find_map(|attr| match attr {
        RouteAttribute::Oif(index) => Some(*index),
        _ => None,
    })
}

/// Maps an RTM_NEWROUTE message. A message without RTA_DST is the default
/// route of its family.
pub(super) fn to_route_spec(
    message: &RouteMessage,
    names: &HashMap<u32, String>,
) -> Option<RouteSpec> {
    let unspecified = match message.header.address_family {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let mut route = RouteSpec {
        dst: IpNet::new(unspecified, 0).ok()?,
        gateway: None,
        device: output_index(message).and_then(|index| names.get(&index).cloned()),
        metric: None,
        source: None,
    };

    for attr in &message.attributes {
        match attr {
            RouteAttribute::Destination(dst) => {
                let dst = ip_of(dst)?;
                route.dst = IpNet::new(dst, message.header.destination_prefix_length).ok()?;
            }
            RouteAttribute::Gateway(gateway) => route.gateway = ip_of(gateway),
            RouteAttribute::Priority(metric) => route.metric = Some(*metric),
            RouteAttribute::PrefSource(source) => route.source = ip_of(source),
            _ => {}
        }
    }
    Some(route)
}

fn ip_of(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

/// Tells whether an existing route matches a requested one. Fields the
/// request leaves open (device, metric, source) match anything.
pub(super) fn route_matches(existing: &RouteSpec, requested: &RouteSpec) -> bool {
    existing.dst == requested.dst
        && existing.gateway == requested.gateway
        && (requested.device.is_none() || existing.device == requested.device)
        && (requested.metric.is_none() || existing.metric == requested.metric)
        && (requested.source.is_none() || existing.source == requested.source)
}

/// Builds the RTM_GETROUTE request of `ip route get DESTINATION`.
pub(super) fn route_get_message(destination: IpAddr) -> RouteMessage {
    let prefix_len = if destination.is_ipv4() { 32 } else { 128 };
    let mut message = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(destination, prefix_len)
        .expect("a host prefix length always fits its family")
        .build();
    // A lookup names no table, so the kernel applies the policy rules.
    message.header.table = RouteHeader::RT_TABLE_UNSPEC;
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> HashMap<u32, String> {
        HashMap::from([(4, "eth0".to_string())])
    }

    #[test]
    fn route_spec_maps_default_route() {
        let mut message = RouteMessage::default();
        message.header.address_family = AddressFamily::Inet;
        message.attributes = vec![
            RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(10, 0, 0, 1))),
            RouteAttribute::Oif(4),
            RouteAttribute::Priority(100),
        ];

        let route = to_route_spec(&message, &names()).unwrap();

        assert_eq!(route.dst, "0.0.0.0/0".parse::<IpNet>().unwrap());
        assert_eq!(route.gateway, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(route.device.as_deref(), Some("eth0"));
        assert_eq!(route.metric, Some(100));
    }

    #[test]
    fn route_spec_maps_ipv6_prefix() {
        let mut message = RouteMessage::default();
        message.header.address_family = AddressFamily::Inet6;
        message.header.destination_prefix_length = 64;
        message.attributes = vec![RouteAttribute::Destination(RouteAddress::Inet6(
            "fd00:1::".parse().unwrap(),
        ))];

        let route = to_route_spec(&message, &names()).unwrap();

        assert_eq!(route.dst, "fd00:1::/64".parse::<IpNet>().unwrap());
        assert_eq!(route.device, None);
    }

    #[test]
    fn route_match_ignores_open_fields() {
        let existing = RouteSpec {
            dst: "10.1.0.0/16".parse().unwrap(),
            gateway: Some("10.0.0.1".parse().unwrap()),
            device: Some("eth0".into()),
            metric: Some(0),
            source: None,
        };
        let mut requested = existing.clone();
        requested.device = None;
        requested.metric = None;
        assert!(route_matches(&existing, &requested));

        requested.gateway = Some("10.0.0.2".parse().unwrap());
        assert!(!route_matches(&existing, &requested));
    }

    #[test]
    fn address_prefers_local() {
        let mut message = AddressMessage::default();
        message.header.prefix_len = 24;
        message.attributes = vec![
            AddressAttribute::Address("10.0.0.9".parse().unwrap()),
            AddressAttribute::Local("10.0.0.2".parse().unwrap()),
        ];
        assert_eq!(address_of(&message), Some("10.0.0.2/24".parse().unwrap()));
    }
}
