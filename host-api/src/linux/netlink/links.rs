//! Link requests and the mapping of RTM_NEWLINK replies to [`LinkInfo`].

use futures::TryStreamExt;
use netlink_packet_route::link::{
    BridgeVlanInfoFlags, InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo,
    LinkMessage,
};
use rtnetlink::{LinkBridge, LinkBridgePort, LinkBridgeVlan, LinkUnspec, LinkVeth};
use std::os::fd::RawFd;

use super::{Connection, errno};
use crate::kernel::{
    BridgeSpec, HostVethSpec, KernelError, KernelErrorKind, LinkInfo, LinkSettings, PortVlan,
    VethSpec,
};

/// Looks a link up by name, returning `None` when the namespace has no such link.
pub(super) async fn find_link(
    conn: &Connection,
    name: &str,
) -> Result<Option<LinkMessage>, KernelError> {
    let mut replies = conn.handle.link().get().match_name(name).execute();
    match replies.try_next().await {
        Ok(message) => Ok(message),
        Err(err) if errno(&err) == Some(libc::ENODEV) => Ok(None),
        Err(err) => Err(conn.error(format!("get link {name}"), err)),
    }
}

/// Looks a link up by name and fails with `NotFound` when it is absent.
pub(super) async fn require_link(
    conn: &Connection,
    name: &str,
    operation: &str,
) -> Result<LinkMessage, KernelError> {
    match find_link(conn, name).await? {
        Some(message) => Ok(message),
        None => Err(KernelError::new(
            KernelErrorKind::NotFound,
            conn.ns,
            operation,
            format!("link {name} not found"),
        )),
    }
}

pub(super) async fn link_name(conn: &Connection, index: u32) -> Result<String, KernelError> {
    let mut replies = conn.handle.link().get().match_index(index).execute();
    let message = replies
        .try_next()
        .await
        .map_err(|err| conn.error(format!("get link with index {index}"), err))?;
    message.as_ref().and_then(name_of).ok_or_else(|| {
        KernelError::new(
            KernelErrorKind::NotFound,
            conn.ns,
            format!("get link with index {index}"),
            "the kernel returned no link name",
        )
    })
}

/// Reads a link by name and maps it, resolving its master's name.
pub(super) async fn read_link(
    conn: &Connection,
    name: &str,
) -> Result<Option<LinkInfo>, KernelError> {
    let Some(message) = find_link(conn, name).await? else {
        return Ok(None);
    };
    let master = match master_index(&message) {
        Some(index) => Some(link_name(conn, index).await?),
        None => None,
    };
    Ok(Some(to_link_info(&message, master)))
}

/// Reads a link that must exist, as after creating it.
pub(super) async fn read_existing_link(
    conn: &Connection,
    name: &str,
    operation: &str,
) -> Result<LinkInfo, KernelError> {
    read_link(conn, name).await?.ok_or_else(|| {
        KernelError::new(
            KernelErrorKind::NotFound,
            conn.ns,
            operation,
            format!("link {name} disappeared"),
        )
    })
}

pub(super) fn bridge_request(spec: &BridgeSpec) -> LinkMessage {
    // LinkBridge::new already sets the up flag.
    let mut builder = LinkBridge::new(&spec.name);
    // Kernels built without CONFIG_BRIDGE_VLAN_FILTERING reject the attribute
    // with EOPNOTSUPP even when it is 0, so it is sent only to turn it on.
    if spec.vlan_filtering {
        builder = builder.vlan_filtering(true);
    }
    if let Some(mtu) = spec.mtu {
        builder = builder.mtu(mtu);
    }
    if spec.promisc {
        builder = builder.promiscuous(true);
    }
    builder.build()
}

/// Builds one RTM_NEWLINK request for a veth pair whose peer is created in
/// the namespace `container_netns`, as `ip link add H type veth peer name C
/// netns NS` does. Creating the peer there avoids moving it afterwards, which
/// waits for an RCU grace period in the kernel.
pub(super) fn veth_request(spec: &VethSpec, container_netns: RawFd) -> Result<LinkMessage, String> {
    let mut peer = LinkUnspec::new_with_name(&spec.container_name).setns_by_fd(container_netns);
    if let Some(mtu) = spec.mtu {
        peer = peer.mtu(mtu);
    }
    if let Some(mac) = &spec.container_mac {
        peer = peer.address(parse_mac(mac)?);
    }

    let mut host = LinkVeth::new(&spec.host_name, &spec.container_name);
    if let Some(mtu) = spec.mtu {
        host = host.mtu(mtu);
    }
    let peer_info = InfoData::Veth(InfoVeth::Peer(peer.build()));
    Ok(host.set_info_data(peer_info).build())
}

/// Builds one RTM_NEWLINK request for a veth pair with both ends in the
/// namespace of the connection, as `ip link add N mtu M type veth peer name
/// P mtu M` does.
pub(super) fn host_veth_request(spec: &HostVethSpec) -> LinkMessage {
    let mut peer = LinkUnspec::new_with_name(&spec.peer_name);
    let mut link = LinkVeth::new(&spec.name, &spec.peer_name);
    if let Some(mtu) = spec.mtu {
        peer = peer.mtu(mtu);
        link = link.mtu(mtu);
    }
    let peer_info = InfoData::Veth(InfoVeth::Peer(peer.build()));
    link.set_info_data(peer_info).build()
}

/// Builds the RTM_SETLINK request for every setting except hairpin and
/// isolated, which are bridge port options. Returns `None` when there is nothing to change.
pub(super) fn settings_request(
    index: u32,
    settings: &LinkSettings,
    master_index: Option<u32>,
) -> Result<Option<LinkMessage>, String> {
    let mut builder = LinkUnspec::new_with_index(index);
    let mut changed = false;

    if let Some(mtu) = settings.mtu {
        builder = builder.mtu(mtu);
        changed = true;
    }
    if let Some(mac) = &settings.mac {
        builder = builder.address(parse_mac(mac)?);
        changed = true;
    }
    if let Some(master) = master_index {
        builder = builder.controller(master);
        changed = true;
    }
    if let Some(promisc) = settings.promisc {
        builder = builder.promiscuous(promisc);
        changed = true;
    }
    if let Some(allmulti) = settings.allmulti {
        builder = builder.allmulticast(allmulti);
        changed = true;
    }
    if let Some(length) = settings.tx_queue_len {
        builder = builder.txqueuelen(length);
        changed = true;
    }
    if let Some(up) = settings.up {
        builder = if up { builder.up() } else { builder.down() };
        changed = true;
    }

    Ok(changed.then(|| builder.build()))
}

/// Builds the request that sets IFLA_BRPORT_MODE (hairpin) and
/// IFLA_BRPORT_ISOLATED on a bridge port, or `None` when neither is to
/// change. They travel as bridge port data in IFLA_LINKINFO, as `ip link set
/// DEV type bridge_slave hairpin on isolated on` sends them. The kernel
/// applies them through the bridge's slave_changelink, so the link must
/// already be a bridge port.
pub(super) fn port_request(index: u32, settings: &LinkSettings) -> Option<LinkMessage> {
    if settings.hairpin.is_none() && settings.isolated.is_none() {
        return None;
    }
    let mut builder = LinkBridgePort::new(index);
    if let Some(hairpin) = settings.hairpin {
        builder = builder.hairpin(hairpin);
    }
    if let Some(isolated) = settings.isolated {
        builder = builder.isolated(isolated);
    }
    Some(builder.build())
}

/// The VLAN the kernel gives every new port of a filtering bridge
/// (IFLA_BR_VLAN_DEFAULT_PVID, 1 unless the bridge was created otherwise).
const DEFAULT_VLAN: u16 = 1;

/// Builds the AF_BRIDGE RTM_DELLINK request that removes VLAN 1 from a port,
/// as `bridge vlan del dev PORT vid 1` sends it.
pub(super) fn default_vlan_removal(index: u32) -> LinkMessage {
    LinkBridgeVlan::new(index)
        .vlan(DEFAULT_VLAN, BridgeVlanInfoFlags::empty())
        .build()
}

/// Builds one AF_BRIDGE RTM_SETLINK request with an IFLA_BRIDGE_VLAN_INFO
/// entry per VLAN, and a RANGE_BEGIN/RANGE_END pair per range, inside
/// IFLA_AF_SPEC; the kernel applies them in order. `None` when there are none.
pub(super) fn port_vlans_request(index: u32, vlans: &[PortVlan]) -> Option<LinkMessage> {
    if vlans.is_empty() {
        return None;
    }
    let mut builder = LinkBridgeVlan::new(index);
    for vlan in vlans {
        let mut flags = BridgeVlanInfoFlags::empty();
        if vlan.pvid {
            flags |= BridgeVlanInfoFlags::Pvid;
        }
        if vlan.untagged {
            flags |= BridgeVlanInfoFlags::Untagged;
        }
        builder = match vlan.min_id == vlan.max_id {
            true => builder.vlan(vlan.min_id, flags),
            false => builder
                .vlan_range_start(vlan.min_id, flags)
                .vlan_range_end(vlan.max_id, flags),
        };
    }
    Some(builder.build())
}

pub(super) fn name_of(message: &LinkMessage) -> Option<String> {
    message.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::IfName(name) => Some(name.clone()),
        _ => None,
    })
}

fn master_index(message: &LinkMessage) -> Option<u32> {
    message.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::Controller(index) if *index != 0 => Some(*index),
        _ => None,
    })
}

/// Maps an RTM_NEWLINK message, with `master` as the name of IFLA_MASTER's link.
pub(super) fn to_link_info(message: &LinkMessage, master: Option<String>) -> LinkInfo {
    let mut info = LinkInfo {
        name: String::new(),
        index: message.header.index,
        kind: String::new(),
        mac: String::new(),
        mtu: 0,
        up: message.header.flags.contains(LinkFlags::Up),
        oper_state: "unknown".to_string(),
        master,
        promisc: message.header.flags.contains(LinkFlags::Promisc),
        allmulti: message.header.flags.contains(LinkFlags::Allmulti),
        tx_queue_len: 0,
    };

    for attr in &message.attributes {
        match attr {
            LinkAttribute::IfName(name) => info.name = name.clone(),
            LinkAttribute::Mtu(mtu) => info.mtu = *mtu,
            LinkAttribute::TxQueueLen(length) => info.tx_queue_len = *length,
            LinkAttribute::Address(bytes) => info.mac = format_mac(bytes),
            LinkAttribute::OperState(state) => info.oper_state = state.to_string().to_lowercase(),
            LinkAttribute::LinkInfo(infos) => info.kind = kind_of(infos),
            _ => {}
        }
    }
    info
}

fn kind_of(infos: &[NlLinkInfo]) -> String {
    infos
        .iter()
        .find_map(|info| match info {
            NlLinkInfo::Kind(kind) => Some(kind.to_string()),
            _ => None,
        })
        .unwrap_or_default()
}

/// Parses colon-separated hex (`02:42:ac:11:00:02`) into six bytes.
pub(super) fn parse_mac(text: &str) -> Result<Vec<u8>, String> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|part| {
            if part.len() == 2 {
                u8::from_str_radix(part, 16).ok()
            } else {
                None
            }
        })
        .collect::<Option<_>>()
        .ok_or_else(|| {
            format!("invalid MAC address {text:?}: expected six colon-separated hex bytes")
        })?;

    if bytes.len() != 6 {
        return Err(format!(
            "invalid MAC address {text:?}: expected six colon-separated hex bytes"
        ));
    }
    Ok(bytes)
}

pub(super) fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::AddressFamily;
    use netlink_packet_route::link::{
        AfSpecBridge, InfoBridgePort, InfoKind, InfoPortData, InfoPortKind, State,
    };

    #[test]
    fn mac_round_trips() {
        let bytes = parse_mac("02:42:AC:11:00:02").unwrap();
        assert_eq!(bytes, vec![0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
        assert_eq!(format_mac(&bytes), "02:42:ac:11:00:02");
    }

    #[test]
    fn mac_rejects_bad_text() {
        for text in [
            "",
            "02:42",
            "02:42:ac:11:00:02:03",
            "0g:42:ac:11:00:02",
            "2:42:ac:11:00:02",
        ] {
            assert!(parse_mac(text).is_err(), "{text:?} parsed");
        }
    }

    #[test]
    fn link_info_maps_attributes() {
        let mut message = LinkMessage::default();
        message.header.index = 7;
        message.header.flags = LinkFlags::Up | LinkFlags::Promisc | LinkFlags::Allmulti;
        message.attributes = vec![
            LinkAttribute::IfName("cni0".into()),
            LinkAttribute::Mtu(1400),
            LinkAttribute::TxQueueLen(500),
            LinkAttribute::Address(vec![0x0a, 0x58, 0x0a, 0xf4, 0x0a, 0x01]),
            LinkAttribute::OperState(State::LowerLayerDown),
            LinkAttribute::LinkInfo(vec![NlLinkInfo::Kind(InfoKind::Bridge)]),
        ];

        let info = to_link_info(&message, Some("br0".into()));

        assert_eq!(info.name, "cni0");
        assert_eq!(info.index, 7);
        assert_eq!(info.kind, "bridge");
        assert_eq!(info.mac, "0a:58:0a:f4:0a:01");
        assert_eq!(info.mtu, 1400);
        assert!(info.up);
        assert!(info.promisc);
        assert!(info.allmulti);
        assert_eq!(info.tx_queue_len, 500);
        assert_eq!(info.oper_state, "lowerlayerdown");
        assert_eq!(info.master.as_deref(), Some("br0"));
    }

    #[test]
    fn host_veth_request_names_both_ends() {
        let spec = HostVethSpec {
            name: "br0.100".into(),
            peer_name: "veth0a1b2c3d".into(),
            mtu: Some(1400),
        };

        let message = host_veth_request(&spec);

        let attributes = &message.attributes;
        assert!(attributes.contains(&LinkAttribute::IfName("br0.100".into())));
        assert!(attributes.contains(&LinkAttribute::Mtu(1400)));
        let peer = attributes
            .iter()
            .find_map(|attribute| match attribute {
                LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|info| match info {
                    NlLinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))) => Some(peer),
                    _ => None,
                }),
                _ => None,
            })
            .expect("the request carries the peer");
        let peer_attributes = &peer.attributes;
        assert!(peer_attributes.contains(&LinkAttribute::IfName("veth0a1b2c3d".into())));
        assert!(peer_attributes.contains(&LinkAttribute::Mtu(1400)));
        let moved = peer_attributes
            .iter()
            .any(|attribute| matches!(attribute, LinkAttribute::NetNsFd(_)));
        assert!(!moved, "the peer stays in the host namespace");
    }

    #[test]
    fn port_request_carries_only_port_flags() {
        assert!(port_request(3, &LinkSettings::default()).is_none());
        let mtu_only = LinkSettings {
            mtu: Some(1400),
            ..LinkSettings::default()
        };
        assert!(port_request(3, &mtu_only).is_none());

        let isolated = LinkSettings {
            isolated: Some(true),
            ..LinkSettings::default()
        };
        let message = port_request(3, &isolated).unwrap();
        let expected = LinkAttribute::LinkInfo(vec![
            NlLinkInfo::PortKind(InfoPortKind::Bridge),
            NlLinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::Isolated(
                true,
            )])),
        ]);
        assert!(message.attributes.contains(&expected), "{message:?}");
    }

    /// Returns the IFLA_BRIDGE_VLAN_INFO entries of an AF_BRIDGE request.
    fn vlan_infos(message: &LinkMessage) -> Vec<(u16, BridgeVlanInfoFlags)> {
        message
            .attributes
            .iter()
            .filter_map(|attr| match attr {
                LinkAttribute::AfSpecBridge(specs) => Some(specs),
                _ => None,
            })
            .flatten()
            .filter_map(|spec| match spec {
                AfSpecBridge::VlanInfo(info) => Some((info.vid, info.flags)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn port_vlans_request_entries() {
        assert!(port_vlans_request(4, &[]).is_none());
        let vlans = [
            PortVlan {
                min_id: 100,
                max_id: 100,
                pvid: true,
                untagged: true,
            },
            PortVlan {
                min_id: 200,
                max_id: 210,
                pvid: false,
                untagged: false,
            },
        ];
        let message = port_vlans_request(4, &vlans).unwrap();

        assert_eq!(message.header.index, 4);
        assert_eq!(message.header.interface_family, AddressFamily::Bridge);
        let infos = vlan_infos(&message);
        let tagged = BridgeVlanInfoFlags::Pvid | BridgeVlanInfoFlags::Untagged;
        assert_eq!(
            infos,
            [
                (100, tagged),
                (200, BridgeVlanInfoFlags::RangeBegin),
                (210, BridgeVlanInfoFlags::RangeEnd)
            ]
        );
    }

    #[test]
    fn default_vlan_removal_names_vlan_1() {
        let message = default_vlan_removal(4);
        assert_eq!(message.header.interface_family, AddressFamily::Bridge);
        assert_eq!(vlan_infos(&message), [(1, BridgeVlanInfoFlags::empty())]);
    }

    #[test]
    fn settings_request_is_none_without_changes() {
        let request = settings_request(3, &LinkSettings::default(), None).unwrap();
        assert!(request.is_none());
    }

    #[test]
    fn settings_request_carries_master_and_flags() {
        let settings = LinkSettings {
            up: Some(true),
            promisc: Some(false),
            allmulti: Some(true),
            tx_queue_len: Some(2000),
            ..LinkSettings::default()
        };
        let message = settings_request(3, &settings, Some(9)).unwrap().unwrap();

        assert_eq!(message.header.index, 3);
        assert!(message.header.flags.contains(LinkFlags::Up));
        assert!(!message.header.flags.contains(LinkFlags::Promisc));
        assert!(message.header.flags.contains(LinkFlags::Allmulti));
        assert!(
            message
                .header
                .change_mask
                .contains(LinkFlags::Up | LinkFlags::Promisc | LinkFlags::Allmulti)
        );
        assert!(message.attributes.contains(&LinkAttribute::Controller(9)));
        assert!(
            message
                .attributes
                .contains(&LinkAttribute::TxQueueLen(2000))
        );
    }
}
