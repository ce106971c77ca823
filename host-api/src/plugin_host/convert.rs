//! Conversions between the WIT types and the kernel trait types.

use super::cniwasm::host::{link, nat, route};
use super::{HostError, check_ifname, parse_ip, parse_net};
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
        mark_chain: spec.mark_chain.as_deref().map(mark_chain).transpose()?,
        conditions: conditions(&spec.conditions)?,
    })
}

/// Maximum length of a chain name that iptables accepts, in bytes.
const MAX_CHAIN_NAME: usize = 28;

/// Checks the name of an external mark chain: an iptables chain name that
/// is neither built in nor one of the `CNI-` chains the host manages, which
/// a plugin could otherwise make other attachments' traffic jump into.
fn mark_chain(name: &str) -> Result<String, HostError> {
    let builtin = ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING", "FORWARD"];
    let plain = !name.is_empty()
        && name.len() <= MAX_CHAIN_NAME
        && !name.starts_with(['-', '!'])
        && is_plain_token(name);
    if !plain || builtin.contains(&name) || name.starts_with("CNI-") {
        return Err(HostError::Invalid(format!(
            "invalid mark chain {name:?}: name an existing nat chain of at most {MAX_CHAIN_NAME} visible characters that is not built in and does not start with CNI-"
        )));
    }
    Ok(name.to_string())
}

/// Tells whether `text` is visible ASCII without quotes or backslashes, so
/// that an `iptables-restore` line keeps it as one token.
fn is_plain_token(text: &str) -> bool {
    text.chars()
        .all(|c| c.is_ascii_graphic() && !"\"'\\".contains(c))
}

/// Options that would turn a match condition into another command, table
/// or target. iptables would reject most of them on a rule line anyway, but
/// a target would change what the entry rule does.
const REJECTED_CONDITION_OPTIONS: &[&str] = &[
    "-j",
    "--jump",
    "-g",
    "--goto",
    "-t",
    "--table",
    "-A",
    "--append",
    "-I",
    "--insert",
    "-D",
    "--delete",
    "-R",
    "--replace",
    "-N",
    "--new-chain",
    "-X",
    "--delete-chain",
    "-F",
    "--flush",
    "-Z",
    "--zero",
    "-P",
    "--policy",
    "-E",
    "--rename-chain",
    "-L",
    "--list",
    "-S",
    "--list-rules",
    "-C",
    "--check",
];

/// Checks the match tokens of the entry rules. Each token goes into an
/// `iptables-restore` line separated by spaces, so whitespace, quotes and
/// backslashes, which would split or join tokens differently, are rejected.
fn conditions(tokens: &[String]) -> Result<Vec<String>, HostError> {
    for token in tokens {
        let plain = !token.is_empty() && is_plain_token(token);
        if !plain {
            return Err(HostError::Invalid(format!(
                "invalid port-mapping condition {token:?}: give one iptables match argument per element, without spaces, quotes or backslashes"
            )));
        }
        if REJECTED_CONDITION_OPTIONS.contains(&token.as_str()) {
            return Err(HostError::Invalid(format!(
                "invalid port-mapping condition {token:?}: conditions may only add matches, not a command, table or target"
            )));
        }
    }
    Ok(tokens.to_vec())
}

/// Checks and converts the arguments of `spoof-check.add`. The link name
/// goes into an nftables string match, where `*` is a wildcard and `\`
/// an escape, so names with either (or a quote) are rejected on top of
/// what Linux rejects. The MAC is returned in lower case, as `ip link` and
/// nft print it.
pub(super) fn spoof_check_from_wit(
    host_link: &str,
    mac: &str,
) -> Result<kernel::SpoofCheckSpec, HostError> {
    check_ifname(host_link)?;
    if host_link.contains(['*', '\\', '"']) {
        return Err(HostError::Invalid(format!(
            "invalid spoof-check link {host_link:?}: expected a host veth name without '*', '\\' or '\"'"
        )));
    }
    Ok(kernel::SpoofCheckSpec {
        host_link: host_link.to_string(),
        mac: unicast_mac(mac)?,
    })
}

/// Parses a MAC address in colon-separated hex (`0a:58:0a:f4:0a:02`) and
/// rejects group addresses, which no frame carries as its source.
fn unicast_mac(text: &str) -> Result<String, HostError> {
    let octets: Vec<Option<u8>> = text
        .split(':')
        .map(|part| match part.len() {
            2 => u8::from_str_radix(part, 16).ok(),
            _ => None,
        })
        .collect();
    let parsed: Option<Vec<u8>> = octets.into_iter().collect();
    let Some(octets) = parsed.filter(|octets| octets.len() == 6) else {
        return Err(HostError::Invalid(format!(
            "invalid spoof-check MAC {text:?}: expected six colon-separated pairs of hex digits such as 0a:58:0a:f4:0a:02"
        )));
    };
    if octets[0] & 1 == 1 {
        return Err(HostError::Invalid(format!(
            "invalid spoof-check MAC {text:?}: a multicast or broadcast address is never a source; give the container interface's MAC"
        )));
    }
    Ok(text.to_ascii_lowercase())
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

    fn spec(mark_chain: Option<&str>, conditions: &[&str]) -> nat::PortMapSpec {
        nat::PortMapSpec {
            container_address: "10.244.10.7/24".into(),
            mappings: Vec::new(),
            snat: true,
            masq_all: false,
            mark_bit: 13,
            mark_chain: mark_chain.map(String::from),
            conditions: conditions.iter().map(|token| token.to_string()).collect(),
        }
    }

    #[test]
    fn mark_chain_names_checked() {
        let parsed = port_map_from_wit(&spec(Some("KUBE-MARK-MASQ"), &[])).unwrap();
        assert_eq!(parsed.mark_chain.as_deref(), Some("KUBE-MARK-MASQ"));

        let too_long = "M".repeat(MAX_CHAIN_NAME + 1);
        for name in [
            "",
            "CNI-HOSTPORT-SETMARK",
            "POSTROUTING",
            "-j",
            "A B",
            "A\nB",
            &too_long,
        ] {
            let error = port_map_from_wit(&spec(Some(name), &[])).unwrap_err();
            assert!(
                matches!(&error, HostError::Invalid(message) if message.contains("invalid mark chain")),
                "{name:?}: {error:?}"
            );
        }
    }

    #[test]
    fn conditions_checked() {
        let accepted = [
            "!",
            "-d",
            "10.99.0.0/16",
            "-m",
            "set",
            "--match-set",
            "allowed",
            "src",
        ];
        let parsed = port_map_from_wit(&spec(None, &accepted)).unwrap();
        assert_eq!(parsed.conditions, accepted);

        let rejected: [&[&str]; 5] = [
            &["-j", "ACCEPT"],
            &["--goto", "OTHER"],
            &["-s", "1.2.3.4 -j ACCEPT"],
            &["-s", "1.2.3.4\nCOMMIT"],
            &["-m", "comment", "--comment", "\"x\""],
        ];
        for tokens in rejected {
            let error = port_map_from_wit(&spec(None, tokens)).unwrap_err();
            assert!(
                matches!(&error, HostError::Invalid(message) if message.contains("condition")),
                "{tokens:?}: {error:?}"
            );
        }
    }

    #[test]
    fn spoof_check_arguments_accepted() {
        let spec = spoof_check_from_wit("veth0a1b2c3d", "0A:58:0a:F4:0a:02").unwrap();
        assert_eq!(spec.host_link, "veth0a1b2c3d");
        assert_eq!(spec.mac, "0a:58:0a:f4:0a:02");
    }

    #[test]
    fn spoof_check_arguments_rejected() {
        let cases = [
            ("veth*", "0a:58:0a:f4:0a:02", "veth*"),
            ("veth\"x", "0a:58:0a:f4:0a:02", "veth"),
            ("", "0a:58:0a:f4:0a:02", "interface name"),
            (
                "a-name-over-15-bytes",
                "0a:58:0a:f4:0a:02",
                "a-name-over-15-bytes",
            ),
            ("veth1", "0a:58:0a:f4:0a", "0a:58:0a:f4:0a"),
            ("veth1", "0a-58-0a-f4-0a-02", "0a-58-0a-f4-0a-02"),
            ("veth1", "0a:58:0a:f4:0a:2", "0a:58:0a:f4:0a:2"),
            ("veth1", "0a:58:0a:f4:0a:zz", "0a:58:0a:f4:0a:zz"),
            ("veth1", "ff:ff:ff:ff:ff:ff", "multicast"),
            ("veth1", "01:00:5e:00:00:01", "multicast"),
        ];
        for (link, mac, needle) in cases {
            let error = spoof_check_from_wit(link, mac).unwrap_err();
            assert!(
                matches!(&error, HostError::Invalid(message) if message.contains(needle)),
                "{link:?} {mac:?}: {error:?}"
            );
        }
    }
}
