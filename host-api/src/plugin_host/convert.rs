//! Conversions between the WIT types and the kernel trait types.

use std::net::IpAddr;

use ipnet::IpNet;

use super::cniwasm::host::{link, nat, nft_nat, route};
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
pub(super) const VLAN_IDS: std::ops::RangeInclusive<u16> = 1..=4094;

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

    let mappings = mappings_from_wit(&spec.mappings)?;

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

/// Checks and converts port mappings: ports 1 to 65535 and a valid host
/// IP, where an unspecified one (`0.0.0.0`, `::`) matches any address.
fn mappings_from_wit(mappings: &[nat::PortMapping]) -> Result<Vec<kernel::PortMapping>, HostError> {
    let mut converted = Vec::with_capacity(mappings.len());
    for mapping in mappings {
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
        converted.push(kernel::PortMapping {
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
    Ok(converted)
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

/// Checks and converts the spec of an `nft-nat` port-mapping call. Each
/// host IP must have the container address's family, because the rules
/// go into that family's table.
pub(super) fn nft_port_map_from_wit(
    spec: &nft_nat::NftPortMapSpec,
) -> Result<kernel::NftPortMapSpec, HostError> {
    let container_address = parse_net(&spec.container_address, "container address")?;
    let ipv4 = container_address.addr().is_ipv4();
    let mappings = mappings_from_wit(&spec.mappings)?;

    let foreign = mappings
        .iter()
        .find(|mapping| mapping.host_ip.is_some_and(|ip| ip.is_ipv4() != ipv4));
    if let Some(mapping) = foreign {
        let host_ip = mapping.host_ip.map(|ip| ip.to_string()).unwrap_or_default();
        return Err(HostError::Invalid(format!(
            "invalid host IP {host_ip} of port mapping {}: its family differs from the container address {container_address}; give each family's mappings in a call with that family's address",
            mapping.host_port
        )));
    }

    Ok(kernel::NftPortMapSpec {
        container_address,
        mappings,
        snat: spec.snat,
        masq_all: spec.masq_all,
        conditions: nft_conditions(&spec.conditions, ipv4)?,
    })
}

/// Characters that end or nest an nftables statement (`;`, newlines,
/// braces), quote or escape text, or refer to variables (`$`), sets (`@`)
/// and comments (`#`). None of the accepted matches needs them.
const NFT_SPECIAL_CHARACTERS: &[char] = &[
    ';', '\n', '\r', '{', '}', '[', ']', '(', ')', '"', '\'', '`', '\\', '#', '$', '@', '|', '&',
];

/// Words that start a statement or verdict. A condition with one of them
/// would change what the entry rule does, such as jumping to another chain.
const NFT_STATEMENT_WORDS: &[&str] = &[
    "jump",
    "goto",
    "return",
    "accept",
    "drop",
    "queue",
    "continue",
    "reject",
    "dnat",
    "snat",
    "masquerade",
    "redirect",
    "counter",
    "log",
    "limit",
    "notrack",
    "set",
    "ct",
    "comment",
];

/// The payload protocols and fields a condition may match on.
const NFT_ADDRESS_PROTOCOLS: &[&str] = &["ip", "ip6"];
const NFT_ADDRESS_FIELDS: &[&str] = &["saddr", "daddr"];
const NFT_PORT_PROTOCOLS: &[&str] = &["tcp", "udp", "sctp", "th"];
const NFT_PORT_FIELDS: &[&str] = &["sport", "dport"];
/// The `meta` keys a condition may match on.
const NFT_META_KEYS: &[&str] = &["iifname", "oifname", "mark"];

/// The kind of value a match takes.
#[derive(Debug, Clone, Copy)]
enum NftValueKind {
    Address,
    Port,
    Name,
    Mark,
}

/// Checks and converts nftables conditions (`conditionsV4` or
/// `conditionsV6`) into matches. The tokens are joined with spaces and
/// split again, so `["ip daddr", "!= 10.96.0.0/12"]` and
/// `["ip", "daddr", "!=", "10.96.0.0/12"]` are the same condition.
fn nft_conditions(tokens: &[String], ipv4: bool) -> Result<Vec<kernel::NftMatch>, HostError> {
    let text = tokens.join(" ");
    let invalid = |value: &str, reason: &str| {
        HostError::Invalid(format!(
            "invalid nftables port-mapping condition {value:?} in {tokens:?}: {reason}"
        ))
    };
    if let Some(special) = text.chars().find(|c| NFT_SPECIAL_CHARACTERS.contains(c)) {
        return Err(invalid(
            &special.to_string(),
            "conditions may only contain matches, without ';', newlines, braces, brackets, quotes, '#', '$' or '@'",
        ));
    }

    let words: Vec<&str> = text.split_ascii_whitespace().collect();
    if let Some(word) = words.iter().find(|word| NFT_STATEMENT_WORDS.contains(word)) {
        return Err(invalid(
            word,
            "conditions may only add matches, not a statement or verdict such as jump or goto",
        ));
    }

    let mut matches = Vec::new();
    let mut rest = words.as_slice();
    while !rest.is_empty() {
        let (parsed, used) =
            nft_match(rest, ipv4).map_err(|(value, reason)| invalid(&value, &reason))?;
        matches.push(parsed);
        rest = &rest[used..];
    }
    Ok(matches)
}

/// A rejected word of a condition and the reason.
type NftWordError = (String, String);

/// Parses one match, `SELECTOR [==|!=] VALUE`, from the start of `words`,
/// and returns it with the number of words it used.
fn nft_match(words: &[&str], ipv4: bool) -> Result<(kernel::NftMatch, usize), NftWordError> {
    let (selector, kind, mut used) = nft_selector(words, ipv4)?;
    let (negated, operator_words) = match words.get(used) {
        Some(&("!=" | "ne")) => (true, 1),
        Some(&("==" | "eq")) => (false, 1),
        _ => (false, 0),
    };
    used += operator_words;

    let Some(value) = words.get(used) else {
        let selector_text = words[..used].join(" ");
        return Err((
            selector_text,
            "a match needs a value after its selector".into(),
        ));
    };
    let value = nft_value(value, kind, ipv4)?;
    let parsed = kernel::NftMatch {
        selector,
        negated,
        value,
    };
    Ok((parsed, used + 1))
}

/// Returns the `&'static` entry of `list` equal to `word`.
fn known(list: &[&'static str], word: &str) -> Option<&'static str> {
    list.iter().copied().find(|entry| *entry == word)
}

/// Parses the selector at the start of `words`: its kind of value and the
/// number of words it used.
fn nft_selector(
    words: &[&str],
    ipv4: bool,
) -> Result<(kernel::NftSelector, NftValueKind, usize), NftWordError> {
    let first = words[0];
    let second = words.get(1).copied().unwrap_or_default();
    let payload = |protocol, field| kernel::NftSelector::Payload { protocol, field };

    if let Some(protocol) = known(NFT_ADDRESS_PROTOCOLS, first) {
        let Some(field) = known(NFT_ADDRESS_FIELDS, second) else {
            return Err((
                format!("{first} {second}"),
                "expected saddr or daddr after ip or ip6".into(),
            ));
        };
        if (protocol == "ip") != ipv4 {
            let family = if ipv4 {
                "conditionsV4 match ip"
            } else {
                "conditionsV6 match ip6"
            };
            return Err((
                first.to_string(),
                format!("the table of this family only sees its own packets: {family}"),
            ));
        }
        return Ok((payload(protocol, field), NftValueKind::Address, 2));
    }
    if let Some(protocol) = known(NFT_PORT_PROTOCOLS, first) {
        let Some(field) = known(NFT_PORT_FIELDS, second) else {
            return Err((
                format!("{first} {second}"),
                "expected sport or dport after the protocol".into(),
            ));
        };
        return Ok((payload(protocol, field), NftValueKind::Port, 2));
    }

    let (key, used) = match first {
        "meta" => (second, 2),
        _ => (first, 1),
    };
    let Some(key) = known(NFT_META_KEYS, key) else {
        return Err((
            key.to_string(),
            "unsupported selector: use ip/ip6 saddr/daddr, tcp/udp/sctp/th sport/dport, iifname, oifname or mark".into(),
        ));
    };
    let kind = match key {
        "mark" => NftValueKind::Mark,
        _ => NftValueKind::Name,
    };
    Ok((kernel::NftSelector::Meta { key }, kind, used))
}

/// Parses the value of a match of `kind`.
fn nft_value(word: &str, kind: NftValueKind, ipv4: bool) -> Result<kernel::NftValue, NftWordError> {
    let error = |reason: &str| Err((word.to_string(), reason.to_string()));
    match kind {
        NftValueKind::Address => {
            let net = match word.parse::<IpNet>() {
                Ok(net) => net,
                Err(_) => match word.parse::<IpAddr>() {
                    Ok(address) => IpNet::from(address),
                    Err(_) => {
                        return error("expected an address or a network such as 10.96.0.0/12");
                    }
                },
            };
            if net.addr().is_ipv4() != ipv4 {
                return error("the address is of the other family than the table");
            }
            match net.prefix_len() == net.max_prefix_len() {
                true => Ok(kernel::NftValue::Address(net.addr())),
                false => Ok(kernel::NftValue::Prefix(net.trunc())),
            }
        }
        NftValueKind::Port => {
            let port = |text: &str| text.parse::<u16>().ok().map(u32::from);
            let parsed = match word.split_once('-') {
                Some((first, last)) => port(first)
                    .zip(port(last))
                    .filter(|(first, last)| first <= last)
                    .map(|(first, last)| kernel::NftValue::Range(first, last)),
                None => port(word).map(kernel::NftValue::Number),
            };
            parsed.map_or_else(
                || error("expected a port or a range such as 30000-32767"),
                Ok,
            )
        }
        NftValueKind::Mark => {
            let parsed = match word.strip_prefix("0x") {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => word.parse::<u32>().ok(),
            };
            parsed.map_or_else(
                || error("expected a 32-bit mark such as 0x4000"),
                |mark| Ok(kernel::NftValue::Number(mark)),
            )
        }
        NftValueKind::Name => {
            let name = word.strip_suffix('*').unwrap_or(word);
            let valid = !name.is_empty()
                && word.len() <= 15
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            match valid {
                true => Ok(kernel::NftValue::Name(word.to_string())),
                false => error(
                    "expected an interface name of at most 15 letters, digits, '-', '_' or '.', with an optional trailing '*'",
                ),
            }
        }
    }
}

/// Checks and converts the addresses of `nft-nat.add-masquerade`.
pub(super) fn masquerade_sources(addresses: &[String]) -> Result<Vec<IpNet>, HostError> {
    if addresses.is_empty() {
        return Err(HostError::Invalid(
            "nft-nat.add-masquerade needs at least one address in CIDR form, such as 10.244.10.2/24".into(),
        ));
    }
    addresses
        .iter()
        .map(|text| parse_net(text, "masquerade source"))
        .collect()
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

    fn nft_spec(
        address: &str,
        host_ip: Option<&str>,
        conditions: &[&str],
    ) -> nft_nat::NftPortMapSpec {
        nft_nat::NftPortMapSpec {
            container_address: address.into(),
            mappings: vec![nat::PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: nat::Protocol::Tcp,
                host_ip: host_ip.map(str::to_string),
            }],
            snat: true,
            masq_all: false,
            conditions: conditions.iter().map(|token| token.to_string()).collect(),
        }
    }

    #[test]
    fn nft_conditions_accepted() {
        let spec = nft_spec(
            "10.0.0.2/24",
            Some("0.0.0.0"),
            &[
                "ip daddr",
                "!=",
                "10.96.0.7/12",
                "iifname",
                "eth*",
                "meta",
                "mark",
                "==",
                "0x4000",
                "tcp",
                "sport",
                "30000-32767",
                "ip",
                "saddr",
                "192.0.2.1/32",
            ],
        );

        let parsed = nft_port_map_from_wit(&spec).unwrap();

        assert_eq!(
            parsed.mappings[0].host_ip, None,
            "0.0.0.0 matches any address"
        );
        let expected = [
            kernel::NftMatch {
                selector: kernel::NftSelector::Payload {
                    protocol: "ip",
                    field: "daddr",
                },
                negated: true,
                value: kernel::NftValue::Prefix("10.96.0.0/12".parse().unwrap()),
            },
            kernel::NftMatch {
                selector: kernel::NftSelector::Meta { key: "iifname" },
                negated: false,
                value: kernel::NftValue::Name("eth*".into()),
            },
            kernel::NftMatch {
                selector: kernel::NftSelector::Meta { key: "mark" },
                negated: false,
                value: kernel::NftValue::Number(0x4000),
            },
            kernel::NftMatch {
                selector: kernel::NftSelector::Payload {
                    protocol: "tcp",
                    field: "sport",
                },
                negated: false,
                value: kernel::NftValue::Range(30000, 32767),
            },
            kernel::NftMatch {
                selector: kernel::NftSelector::Payload {
                    protocol: "ip",
                    field: "saddr",
                },
                negated: false,
                value: kernel::NftValue::Address("192.0.2.1".parse().unwrap()),
            },
        ];
        assert_eq!(parsed.conditions, expected);
        let v6 = nft_port_map_from_wit(&nft_spec(
            "2001:db8::2/64",
            None,
            &["ip6", "saddr", "fd00::/8"],
        ));
        assert!(v6.is_ok(), "{v6:?}");
    }

    /// Each rejection names the value, so that the operator can find it
    /// in `conditionsV4` or `conditionsV6`.
    #[test]
    fn nft_conditions_rejected() {
        let cases: &[(&[&str], &str)] = &[
            (&["ip", "daddr", "10.0.0.1;", "flush", "ruleset"], "\";\""),
            (&["ip daddr 10.0.0.1\nadd rule ip nat x drop"], "\"\\n\""),
            (&["ip", "daddr", "{", "10.0.0.1", "}"], "\"{\""),
            (&["iifname", "\"eth0\""], "\"\\\"\""),
            (&["ip", "daddr", "10.0.0.1", "jump", "other"], "\"jump\""),
            (&["goto", "KUBE-SERVICES"], "\"goto\""),
            (&["ip", "daddr", "10.0.0.1", "accept"], "\"accept\""),
            (&["ip", "daddr", "@allowed"], "\"@\""),
            (&["ip", "daddr", "$net"], "\"$\""),
            (&["ip", "daddr", "nonsense"], "\"nonsense\""),
            (&["ip6", "daddr", "::1"], "\"ip6\""),
            (&["ip", "daddr", "::1"], "\"::1\""),
            (&["ip", "protocol", "tcp"], "\"ip protocol\""),
            (&["tcp", "dport", "70000"], "\"70000\""),
            (&["tcp", "dport", "90-80"], "\"90-80\""),
            (&["iifname", "a-name-over-15-bytes"], "a-name-over-15-bytes"),
            (&["mark", "0xZZ"], "\"0xZZ\""),
            (&["ip", "daddr", "!="], "\"ip daddr !=\""),
            (&["fib", "daddr", "type", "local"], "\"fib\""),
            (&["-d", "10.0.0.1"], "\"-d\""),
        ];
        for (tokens, needle) in cases {
            let error = nft_port_map_from_wit(&nft_spec("10.0.0.2/24", None, tokens)).unwrap_err();
            assert!(
                matches!(&error, HostError::Invalid(message) if message.contains(needle) && message.contains("condition")),
                "{tokens:?}: {error:?}"
            );
        }
    }

    #[test]
    fn nft_host_ip_family_checked() {
        let error =
            nft_port_map_from_wit(&nft_spec("10.0.0.2/24", Some("2001:db8::1"), &[])).unwrap_err();
        assert!(
            matches!(&error, HostError::Invalid(message) if message.contains("2001:db8::1")),
            "{error:?}"
        );
        let any = nft_port_map_from_wit(&nft_spec("10.0.0.2/24", Some("::"), &[])).unwrap();
        assert_eq!(any.mappings[0].host_ip, None);
    }

    #[test]
    fn masquerade_sources_checked() {
        let sources = masquerade_sources(&["10.0.0.2/24".into(), "2001:db8::2/64".into()]).unwrap();
        assert_eq!(sources.len(), 2);
        assert!(masquerade_sources(&[]).is_err());
        let error = masquerade_sources(&["10.0.0.2; drop".into()]).unwrap_err();
        assert!(
            matches!(&error, HostError::Invalid(message) if message.contains("10.0.0.2; drop")),
            "{error:?}"
        );
    }
}
