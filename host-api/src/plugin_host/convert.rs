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
