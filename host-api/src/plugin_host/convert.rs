//! Conversions between the WIT types and the kernel trait types.

use super::cniwasm::host::{link, nat, route};
use super::{HostError, parse_ip, parse_net};
use crate::kernel;

impl From<kernel::LinkInfo> for link::LinkInfo {
    fn from(info: kernel::LinkInfo) -> Self {
        link::LinkInfo {
            name: info.name,
            index: info.index,
            kind: info.kind,
            mac: info.mac,
            mtu: info.mtu,
            up: info.up,
            oper_state: info.oper_state,
            master: info.master,
            promisc: info.promisc,
            allmulti: info.allmulti,
            tx_queue_len: info.tx_queue_len,
        }
    }
}

impl From<link::LinkSettings> for kernel::LinkSettings {
    fn from(settings: link::LinkSettings) -> Self {
        kernel::LinkSettings {
            up: settings.up,
            mtu: settings.mtu,
            mac: settings.mac,
            master: settings.master,
            hairpin: settings.hairpin,
            isolated: settings.isolated,
            promisc: settings.promisc,
            allmulti: settings.allmulti,
            tx_queue_len: settings.tx_queue_len,
        }
    }
}

/// The VLAN IDs a bridge port can carry: 0 and 4095 are reserved by
/// IEEE 802.1Q, and the kernel rejects them.
const VLAN_IDS: std::ops::RangeInclusive<u16> = 1..=4094;

/// Checks and converts port VLANs: IDs in 1..=4094, ranges in order, and at
/// most one PVID, on a single VLAN.
pub(super) fn port_vlans_from_wit(spec: &link::PortVlans) -> Result<kernel::PortVlans, HostError> {
    let mut pvids = 0;
    for vlan in &spec.vlans {
        let (min, max) = (vlan.min_id, vlan.max_id);
        if !VLAN_IDS.contains(&min) || !VLAN_IDS.contains(&max) || min > max {
            return Err(HostError::Invalid(format!(
                "invalid port VLAN range {min}-{max}: expected IDs from 1 to 4094, the first not above the last"
            )));
        }
        if vlan.pvid && min != max {
            return Err(HostError::Invalid(format!(
                "invalid port VLAN range {min}-{max} with pvid: the PVID must be a single VLAN"
            )));
        }
        pvids += usize::from(vlan.pvid);
    }
    if pvids > 1 {
        return Err(HostError::Invalid(format!(
            "{pvids} port VLAN entries set pvid: a port has one PVID"
        )));
    }

    let vlans = spec
        .vlans
        .iter()
        .map(|vlan| kernel::PortVlan {
            min_id: vlan.min_id,
            max_id: vlan.max_id,
            pvid: vlan.pvid,
            untagged: vlan.untagged,
        })
        .collect();
    Ok(kernel::PortVlans {
        remove_default: spec.remove_default,
        vlans,
    })
}

pub(super) fn route_from_wit(spec: &route::RouteSpec) -> Result<kernel::RouteSpec, HostError> {
    let gateway = spec
        .gw
        .as_deref()
        .map(|gw| parse_ip(gw, "route gateway"))
        .transpose()?;
    let source = spec
        .src
        .as_deref()
        .map(|src| parse_ip(src, "route source"))
        .transpose()?;
    Ok(kernel::RouteSpec {
        dst: parse_net(&spec.dst, "route destination")?,
        gateway,
        device: spec.dev.clone(),
        metric: spec.metric,
        source,
    })
}

pub(super) fn route_to_wit(spec: kernel::RouteSpec) -> route::RouteSpec {
    route::RouteSpec {
        dst: spec.dst.to_string(),
        gw: spec.gateway.map(|gw| gw.to_string()),
        dev: spec.device,
        metric: spec.metric,
        src: spec.source.map(|src| src.to_string()),
    }
}

pub(super) fn port_map_from_wit(spec: &nat::PortMapSpec) -> Result<kernel::PortMapSpec, HostError> {
    if spec.mark_bit > 31 {
        return Err(HostError::Invalid(format!(
            "invalid masquerade mark bit {}: expected 0 to 31",
            spec.mark_bit
        )));
    }

    let mut mappings = Vec::with_capacity(spec.mappings.len());
    for mapping in &spec.mappings {
        if mapping.host_port == 0 || mapping.container_port == 0 {
            return Err(HostError::Invalid(format!(
                "invalid port mapping {} -> {}: ports must be 1 to 65535",
                mapping.host_port, mapping.container_port
            )));
        }
        let host_ip = mapping
            .host_ip
            .as_deref()
            .map(|ip| parse_ip(ip, "host IP"))
            .transpose()?;
        mappings.push(kernel::PortMapping {
            host_port: mapping.host_port,
            container_port: mapping.container_port,
            protocol: match mapping.protocol {
                nat::Protocol::Tcp => kernel::Protocol::Tcp,
                nat::Protocol::Udp => kernel::Protocol::Udp,
                nat::Protocol::Sctp => kernel::Protocol::Sctp,
            },
            host_ip: host_ip.filter(|ip| !ip.is_unspecified()),
        });
    }

    Ok(kernel::PortMapSpec {
        container_address: parse_net(&spec.container_address, "container address")?,
        mappings,
        snat: spec.snat,
        masq_all: spec.masq_all,
        mark_bit: spec.mark_bit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vlan(min_id: u16, max_id: u16, pvid: bool) -> link::PortVlan {
        link::PortVlan {
            min_id,
            max_id,
            pvid,
            untagged: pvid,
        }
    }

    fn convert(vlans: Vec<link::PortVlan>) -> Result<kernel::PortVlans, HostError> {
        port_vlans_from_wit(&link::PortVlans {
            remove_default: true,
            vlans,
        })
    }

    #[test]
    fn port_vlans_accepted() {
        let spec = convert(vec![vlan(100, 100, true), vlan(200, 210, false)]).unwrap();
        assert!(spec.remove_default);
        assert_eq!(spec.vlans.len(), 2);
        assert_eq!((spec.vlans[1].min_id, spec.vlans[1].max_id), (200, 210));
        assert!(spec.vlans[0].pvid);
        assert!(spec.vlans[0].untagged);
    }

    #[test]
    fn port_vlans_rejected() {
        let cases = [
            vec![vlan(0, 0, false)],
            vec![vlan(4095, 4095, false)],
            vec![vlan(10, 9, false)],
            vec![vlan(10, 12, true)],
            vec![vlan(10, 10, true), vlan(11, 11, true)],
        ];
        for vlans in cases {
            let error = convert(vlans.clone()).unwrap_err();
            assert!(
                matches!(error, HostError::Invalid(_)),
                "{vlans:?}: {error:?}"
            );
        }
    }
}
