//! Helpers for plugins that configure the container's interface from an
//! IPAM result, shared by the interface-creating plugins.

use crate::bindings::cniwasm::host::route::RouteSpec;
use crate::bindings::cniwasm::host::types::Netns;
use crate::{CniError, HostResultExt, Invocation, address, codes};

/// Builds the container routes of `result` on `ifname`: each route's own
/// gateway, else the gateway of the first IP of the same family, else a
/// device route. A route priority becomes the metric.
pub fn container_routes(result: &cniwasm_types::Result, ifname: &str) -> Vec<RouteSpec> {
    result
        .routes
        .iter()
        .map(|route| {
            let family_gateway = result
                .ips
                .iter()
                .find(|ip| ip.is_ipv6() == route.is_ipv6() && !ip.gateway.is_empty())
                .map(|ip| ip.gateway.clone());
            let gw = Some(route.gw.clone())
                .filter(|gw| !gw.is_empty())
                .or(family_gateway);
            RouteSpec {
                dst: route.dst.clone(),
                gw,
                dev: Some(ifname.to_string()),
                metric: (route.priority != 0).then_some(route.priority),
                src: None,
            }
        })
        .collect()
}

/// Checks that the container interface `CNI_IFNAME` has every address of
/// `prev` whose `interface` is `container_index`.
pub fn check_container_addresses(
    inv: &Invocation,
    prev: &cniwasm_types::Result,
    container_index: u32,
) -> Result<(), CniError> {
    let listed = address::list(Netns::Container, &inv.ifname)
        .context(&format!("failed to list the addresses of {:?}", inv.ifname))?;
    let present: Vec<String> = listed.iter().map(|text| normalize(text)).collect();

    for ip in prev
        .ips
        .iter()
        .filter(|ip| ip.interface == Some(container_index))
    {
        if !present.contains(&normalize(&ip.address)) {
            return Err(CniError::new(
                codes::INTERNAL,
                format!(
                    "failed to match address {} on interface {:?}",
                    ip.address, inv.ifname
                ),
            ));
        }
    }
    Ok(())
}

/// Writes an address in one canonical form, so `fd00::2/64` and
/// `fd00:0::2/64` compare equal; text that is not an address stays as it is.
fn normalize(text: &str) -> String {
    let Some((address, prefix)) = text.split_once('/') else {
        return text.to_string();
    };
    match address.parse::<std::net::IpAddr>() {
        Ok(parsed) => format!("{parsed}/{prefix}"),
        Err(_) => text.to_string(),
    }
}
