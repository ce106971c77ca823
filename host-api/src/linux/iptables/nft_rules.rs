//! The NAT rules of [`super::rules`] as nf_tables expressions, built the
//! way iptables-nft 1.8 builds them, so that `iptables-save` prints a rule
//! added here exactly as one added by `iptables-restore`.
//!
//! iptables-nft translates the address, protocol, port and mark matches to
//! native expressions and keeps the other matches and targets as xtables
//! `match` and `target` expressions, whose data is the kernel's xtables
//! structure for that extension (linux/netfilter/xt_*.h). Every rule gets a
//! `counter` before its verdict or target. The order below was read from
//! `nft --debug=netlink list table ip nat` after iptables-restore 1.8.9
//! added the rules: protocol, source, destination, then the matches in the
//! order of the rule, the counter, and the verdict or target.
//!
//! Only the rule text that [`super::rules`] generates is understood. Any
//! other word, such as a caller's condition, makes [`encode`] return `None`,
//! and the rule then goes through iptables-restore.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use super::rules::{Family, Rule};

/// One nf_tables expression of a rule. Registers are left out, because
/// iptables-nft loads into register 1 and gives verdicts in register 0, and
/// the netlink encoding in `nftables` does the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expr {
    Meta {
        key: u32,
    },
    Payload {
        base: u32,
        offset: u32,
        len: u32,
    },
    Bitwise {
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    Cmp {
        op: u32,
        data: Vec<u8>,
    },
    /// An xtables match: name, revision and the extension's structure.
    Match {
        name: String,
        rev: u32,
        info: Vec<u8>,
    },
    Target {
        name: String,
        rev: u32,
        info: Vec<u8>,
    },
    Verdict {
        code: i32,
        chain: Option<String>,
    },
    Counter,
    /// A dumped expression of another kind, by name.
    Other(String),
}

/// A rule as nf_tables expressions, with the layer 4 protocol that the
/// kernel's xtables matches are checked against (NFTA_RULE_COMPAT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EncodedRule {
    pub expressions: Vec<Expr>,
    pub protocol: u8,
}

// Values from linux/netfilter/nf_tables.h, linux/netfilter.h and in.h.
pub(crate) const NFT_META_MARK: u32 = 3;
pub(crate) const NFT_META_L4PROTO: u32 = 16;
pub(crate) const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
pub(crate) const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
pub(crate) const NFT_CMP_EQ: u32 = 0;
pub(crate) const NFT_CMP_NEQ: u32 = 1;
pub(crate) const NF_ACCEPT: i32 = 1;
pub(crate) const NFT_JUMP: i32 = -3;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// The size of each xtables structure, rounded up to 8 bytes as XT_ALIGN
/// does on x86_64 and aarch64.
const XT_COMMENT_LEN: usize = 256;
/// struct xt_multiport_v1: flags, count, ports[15], pflags[15], invert.
const XT_MULTIPORT_V1_LEN: usize = 48;
const XT_MULTIPORT_DESTINATION: u8 = 1;
/// struct nf_nat_range2: flags, min and max address (16 bytes each), then
/// min, max and base port; 42 bytes, aligned to 48.
const NF_NAT_RANGE2_LEN: usize = 48;
const NF_NAT_RANGE_MAP_IPS: u32 = 1;
const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 2;
/// struct nf_nat_ipv4_multi_range_compat with one range: 20 bytes, aligned
/// to 24. Its `rangesize` is 1 and the range is empty.
const NF_NAT_IPV4_MULTI_RANGE_LEN: usize = 24;
/// struct nf_nat_range, which ip6tables' MASQUERADE revision 0 takes.
const NF_NAT_RANGE_LEN: usize = 40;
/// XT_ADDRTYPE_LOCAL, 1 << RTN_LOCAL, in `dest` of struct
/// xt_addrtype_info_v1.
const XT_ADDRTYPE_LOCAL: u16 = 1 << 2;

/// Encodes `rule` of `family`, or returns `None` when its text has a word
/// that is not one of those [`super::rules`] generates.
pub(crate) fn encode(family: Family, rule: &Rule) -> Option<EncodedRule> {
    let words = split_words(&rule.spec)?;
    let parsed = Parsed::read(&words)?;

    let mut expressions = Vec::new();
    if let Some(protocol) = parsed.protocol {
        expressions.push(Expr::Meta {
            key: NFT_META_L4PROTO,
        });
        expressions.push(cmp(NFT_CMP_EQ, vec![protocol]));
    }
    for (offset, address) in [
        (source_offset(family), parsed.source),
        (destination_offset(family), parsed.destination),
    ] {
        if let Some((net, negated)) = address {
            if family != Family::of(net.addr()) {
                return None;
            }
            expressions.extend(address_match(offset, net, negated));
        }
    }
    for found in &parsed.matches {
        expressions.extend(found.expressions(parsed.protocol)?);
    }

    expressions.push(Expr::Counter);
    expressions.push(parsed.target?.expression(family)?);
    Some(EncodedRule {
        expressions,
        protocol: parsed.protocol.unwrap_or(0),
    })
}

/// Tells whether a dumped rule has the expressions of `expected`. Counters
/// are left out, since the kernel dumps them with their current values.
pub(crate) fn same_rule(dumped: &[Expr], expected: &[Expr]) -> bool {
    let significant = |expressions: &[Expr]| -> Vec<Expr> {
        expressions
            .iter()
            .filter(|expression| **expression != Expr::Counter)
            .cloned()
            .collect()
    };
    significant(dumped) == significant(expected)
}

/// Splits a rule into words. A double-quoted word keeps the `\"` and `\\`
/// escapes that `quote` in [`super::rules`] writes. Returns `None` on an
/// unterminated quote.
fn split_words(spec: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut chars = spec.chars().peekable();
    while let Some(&next) = chars.peek() {
        if next == ' ' {
            chars.next();
            continue;
        }

        let mut word = String::new();
        if next == '"' {
            chars.next();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => word.push(chars.next()?),
                    other => word.push(other),
                }
            }
        } else {
            while let Some(&next) = chars.peek() {
                if next == ' ' {
                    break;
                }
                word.push(next);
                chars.next();
            }
        }
        words.push(word);
    }
    Some(words)
}

/// A rule's words sorted into what iptables-nft keeps apart: protocol and
/// addresses, the matches in order, and the target.
#[derive(Default)]
struct Parsed {
    protocol: Option<u8>,
    source: Option<(IpNet, bool)>,
    destination: Option<(IpNet, bool)>,
    matches: Vec<MatchSpec>,
    target: Option<TargetSpec>,
}

enum MatchSpec {
    DestinationPort(u16),
    Comment(String),
    Multiport(Vec<u16>),
    LocalDestination,
    Mark { value: u32, mask: u32 },
}

enum TargetSpec {
    Accept,
    Masquerade,
    Jump(String),
    Dnat(SocketAddr),
    SetMark { value: u32, mask: u32 },
}

impl Parsed {
    fn read(words: &[String]) -> Option<Self> {
        let mut parsed = Parsed::default();
        let mut words = words.iter().map(String::as_str);
        let mut negated = false;
        while let Some(word) = words.next() {
            match word {
                "!" => {
                    negated = true;
                    continue;
                }
                "-s" => parsed.source = Some((words.next()?.parse().ok()?, negated)),
                "-d" => parsed.destination = Some((words.next()?.parse().ok()?, negated)),
                _ if negated => return None,
                "-p" => parsed.protocol = Some(protocol_number(words.next()?)?),
                "-m" => parsed.read_match(words.next()?, &mut words)?,
                "-j" => parsed.target = Some(TargetSpec::read(words.next()?, &mut words)?),
                _ => return None,
            }
            negated = false;
        }
        Some(parsed)
    }

    /// Reads the options of match `name`: each match here takes exactly
    /// one option.
    fn read_match<'a>(
        &mut self,
        name: &str,
        words: &mut impl Iterator<Item = &'a str>,
    ) -> Option<()> {
        let (option, value) = (words.next()?, words.next()?);
        let found = match (name, option) {
            ("tcp" | "udp", "--dport") => {
                if protocol_number(name)? != self.protocol? {
                    return None;
                }
                MatchSpec::DestinationPort(value.parse().ok()?)
            }
            ("comment", "--comment") => MatchSpec::Comment(value.to_string()),
            ("multiport", "--dports") => MatchSpec::Multiport(
                value
                    .split(',')
                    .map(|port| port.parse().ok())
                    .collect::<Option<_>>()?,
            ),
            ("addrtype", "--dst-type") if value == "LOCAL" => MatchSpec::LocalDestination,
            ("mark", "--mark") => {
                let (value, mask) = mark_pair(value)?;
                MatchSpec::Mark { value, mask }
            }
            _ => return None,
        };
        self.matches.push(found);
        Some(())
    }
}

impl MatchSpec {
    fn expressions(&self, protocol: Option<u8>) -> Option<Vec<Expr>> {
        let expressions = match self {
            MatchSpec::DestinationPort(port) => vec![
                Expr::Payload {
                    base: NFT_PAYLOAD_TRANSPORT_HEADER,
                    offset: 2,
                    len: 2,
                },
                cmp(NFT_CMP_EQ, port.to_be_bytes().to_vec()),
            ],
            MatchSpec::Comment(text) => {
                // The structure ends with a NUL, so 255 bytes of text fit.
                if text.len() >= XT_COMMENT_LEN || text.contains('\0') {
                    return None;
                }
                let mut info = text.as_bytes().to_vec();
                info.resize(XT_COMMENT_LEN, 0);
                xt_match("comment", 0, info)
            }
            MatchSpec::Multiport(ports) => {
                protocol?;
                if ports.is_empty() || ports.len() > 15 {
                    return None;
                }
                let mut info = vec![0u8; XT_MULTIPORT_V1_LEN];
                info[0] = XT_MULTIPORT_DESTINATION;
                info[1] = ports.len() as u8;
                for (index, port) in ports.iter().enumerate() {
                    info[2 + 2 * index..4 + 2 * index].copy_from_slice(&port.to_ne_bytes());
                }
                xt_match("multiport", 1, info)
            }
            MatchSpec::LocalDestination => {
                let mut info = vec![0u8; 8];
                info[2..4].copy_from_slice(&XT_ADDRTYPE_LOCAL.to_ne_bytes());
                xt_match("addrtype", 1, info)
            }
            MatchSpec::Mark { value, mask } => vec![
                Expr::Meta { key: NFT_META_MARK },
                Expr::Bitwise {
                    mask: mask.to_ne_bytes().to_vec(),
                    xor: vec![0; 4],
                },
                cmp(NFT_CMP_EQ, value.to_ne_bytes().to_vec()),
            ],
        };
        Some(expressions)
    }
}

impl TargetSpec {
    fn read<'a>(target: &str, words: &mut impl Iterator<Item = &'a str>) -> Option<Self> {
        let spec = match target {
            "ACCEPT" => TargetSpec::Accept,
            "MASQUERADE" => TargetSpec::Masquerade,
            "DNAT" => {
                if words.next()? != "--to-destination" {
                    return None;
                }
                TargetSpec::Dnat(words.next()?.parse().ok()?)
            }
            "MARK" => {
                if words.next()? != "--set-xmark" {
                    return None;
                }
                let (value, mask) = mark_pair(words.next()?)?;
                TargetSpec::SetMark { value, mask }
            }
            // Targets that take no option and are no chain name.
            "DROP" | "RETURN" | "SNAT" | "REJECT" | "LOG" => return None,
            chain => TargetSpec::Jump(chain.to_string()),
        };
        Some(spec)
    }

    fn expression(&self, family: Family) -> Option<Expr> {
        let expression = match self {
            TargetSpec::Accept => Expr::Verdict {
                code: NF_ACCEPT,
                chain: None,
            },
            TargetSpec::Jump(chain) => Expr::Verdict {
                code: NFT_JUMP,
                chain: Some(chain.clone()),
            },
            TargetSpec::Masquerade => {
                let info = match family {
                    Family::V4 => {
                        let mut info = vec![0u8; NF_NAT_IPV4_MULTI_RANGE_LEN];
                        info[..4].copy_from_slice(&1u32.to_ne_bytes());
                        info
                    }
                    Family::V6 => vec![0u8; NF_NAT_RANGE_LEN],
                };
                xt_target("MASQUERADE", 0, info)
            }
            TargetSpec::Dnat(destination) => {
                if family != Family::of(destination.ip()) {
                    return None;
                }
                xt_target("DNAT", 2, nat_range2(*destination))
            }
            TargetSpec::SetMark { value, mask } => {
                let mut info = value.to_ne_bytes().to_vec();
                info.extend(mask.to_ne_bytes());
                xt_target("MARK", 2, info)
            }
        };
        Some(expression)
    }
}

/// struct nf_nat_range2 that maps to one address and one port.
fn nat_range2(destination: SocketAddr) -> Vec<u8> {
    let mut info = vec![0u8; NF_NAT_RANGE2_LEN];
    let flags = NF_NAT_RANGE_MAP_IPS | NF_NAT_RANGE_PROTO_SPECIFIED;
    info[..4].copy_from_slice(&flags.to_ne_bytes());

    let address = match destination.ip() {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    info[4..4 + address.len()].copy_from_slice(&address);
    info[20..20 + address.len()].copy_from_slice(&address);

    let port = destination.port().to_be_bytes();
    info[36..38].copy_from_slice(&port);
    info[38..40].copy_from_slice(&port);
    info
}

/// Builds an address match as iptables-nft 1.8 does. A prefix that ends on
/// a byte boundary loads only its bytes, and any other loads the whole
/// address and masks it.
fn address_match(offset: u32, net: IpNet, negated: bool) -> Vec<Expr> {
    let op = if negated { NFT_CMP_NEQ } else { NFT_CMP_EQ };
    let address = match net.trunc().addr() {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    let prefix = usize::from(net.prefix_len());
    if prefix % 8 == 0 {
        let bytes = prefix / 8;
        return vec![
            Expr::Payload {
                base: NFT_PAYLOAD_NETWORK_HEADER,
                offset,
                len: bytes as u32,
            },
            cmp(op, address[..bytes].to_vec()),
        ];
    }

    let mask = match net.netmask() {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    vec![
        Expr::Payload {
            base: NFT_PAYLOAD_NETWORK_HEADER,
            offset,
            len: address.len() as u32,
        },
        Expr::Bitwise {
            xor: vec![0; mask.len()],
            mask,
        },
        cmp(op, address),
    ]
}

/// Offsets of the source and destination address in the IPv4 and IPv6
/// headers.
fn source_offset(family: Family) -> u32 {
    match family {
        Family::V4 => 12,
        Family::V6 => 8,
    }
}

fn destination_offset(family: Family) -> u32 {
    match family {
        Family::V4 => 16,
        Family::V6 => 24,
    }
}

fn protocol_number(name: &str) -> Option<u8> {
    match name {
        "tcp" => Some(IPPROTO_TCP),
        "udp" => Some(IPPROTO_UDP),
        _ => None,
    }
}

/// Reads `0x2000/0x2000` as value and mask.
fn mark_pair(text: &str) -> Option<(u32, u32)> {
    let (value, mask) = text.split_once('/')?;
    let hex = |text: &str| u32::from_str_radix(text.strip_prefix("0x")?, 16).ok();
    Some((hex(value)?, hex(mask)?))
}

fn cmp(op: u32, data: Vec<u8>) -> Expr {
    Expr::Cmp { op, data }
}

fn xt_match(name: &str, rev: u32, info: Vec<u8>) -> Vec<Expr> {
    vec![Expr::Match {
        name: name.to_string(),
        rev,
        info,
    }]
}

fn xt_target(name: &str, rev: u32, info: Vec<u8>) -> Expr {
    Expr::Target {
        name: name.to_string(),
        rev,
        info,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(family: Family, spec: &str) -> Vec<Expr> {
        encode(family, &Rule::new("X", spec))
            .expect("rule encodes")
            .expressions
    }

    #[test]
    fn quoted_words_keep_escapes() {
        let words = split_words(r#"-m comment --comment "name: \"a b\" \\" -j X"#).unwrap();
        assert_eq!(
            words,
            ["-m", "comment", "--comment", r#"name: "a b" \"#, "-j", "X"]
        );
        assert_eq!(split_words(r#"-m comment --comment "open"#), None);
    }

    #[test]
    fn dnat_chain_rule_orders_protocol_addresses_port() {
        let expressions = encoded(
            Family::V4,
            "-s 10.244.0.0/16 -d 127.0.0.1/32 -p tcp -m tcp --dport 9090 -j CNI-HOSTPORT-SETMARK",
        );
        assert_eq!(
            expressions,
            vec![
                Expr::Meta {
                    key: NFT_META_L4PROTO
                },
                cmp(NFT_CMP_EQ, vec![6]),
                Expr::Payload {
                    base: NFT_PAYLOAD_NETWORK_HEADER,
                    offset: 12,
                    len: 2
                },
                cmp(NFT_CMP_EQ, vec![10, 244]),
                Expr::Payload {
                    base: NFT_PAYLOAD_NETWORK_HEADER,
                    offset: 16,
                    len: 4
                },
                cmp(NFT_CMP_EQ, vec![127, 0, 0, 1]),
                Expr::Payload {
                    base: NFT_PAYLOAD_TRANSPORT_HEADER,
                    offset: 2,
                    len: 2
                },
                cmp(NFT_CMP_EQ, vec![0x23, 0x82]),
                Expr::Counter,
                Expr::Verdict {
                    code: NFT_JUMP,
                    chain: Some("CNI-HOSTPORT-SETMARK".into())
                },
            ]
        );
    }

    #[test]
    fn unaligned_prefix_is_masked() {
        let expressions = encoded(
            Family::V4,
            r#"! -d 224.0.0.0/4 -m comment --comment "c" -j MASQUERADE"#,
        );
        assert_eq!(
            expressions[..3],
            [
                Expr::Payload {
                    base: NFT_PAYLOAD_NETWORK_HEADER,
                    offset: 16,
                    len: 4
                },
                Expr::Bitwise {
                    mask: vec![0xf0, 0, 0, 0],
                    xor: vec![0; 4]
                },
                cmp(NFT_CMP_NEQ, vec![224, 0, 0, 0]),
            ]
        );
        let Expr::Match { name, info, .. } = &expressions[3] else {
            panic!("comment match expected: {expressions:?}");
        };
        assert_eq!((name.as_str(), info.len(), info[0]), ("comment", 256, b'c'));
    }

    #[test]
    fn dnat_target_maps_address_and_port() {
        let expressions = encoded(
            Family::V6,
            "-d ::1/128 -p tcp -m tcp --dport 8080 -j DNAT --to-destination [fd00:10::5]:80",
        );
        let Some(Expr::Target { name, rev, info }) = expressions.last() else {
            panic!("target expected: {expressions:?}");
        };
        assert_eq!((name.as_str(), *rev, info.len()), ("DNAT", 2, 48));
        assert_eq!(info[4], 0xfd);
        assert_eq!(info[20], 0xfd);
        assert_eq!(&info[36..40], &[0, 80, 0, 80]);
    }

    #[test]
    fn unknown_words_are_not_encoded() {
        for spec in [
            "-s 1.2.3.4/32 -i eth0 -j ACCEPT",
            "-p sctp -m sctp --dport 80 -j ACCEPT",
            "-m comment --comment x",
            "-j DROP",
            "! -p tcp -j ACCEPT",
            "-s 10.0.0.0/8 -j DNAT --to-destination [fd00::1]:80",
        ] {
            assert_eq!(encode(Family::V4, &Rule::new("X", spec)), None, "{spec}");
        }
    }
}
