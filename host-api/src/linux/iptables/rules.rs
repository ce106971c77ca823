//! The text of the NAT rules, exactly as `iptables-save` prints them, so the
//! saved state can be compared line by line. The rules are those of the
//! reference CNI plugins (containernetworking/plugins v1.1.1): `portmap` for
//! port mappings and `bridge` with `ipMasq` for masquerading.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::kernel::{Owner, PortMapSpec};

pub(crate) const HOSTPORT_DNAT: &str = "CNI-HOSTPORT-DNAT";
pub(crate) const HOSTPORT_SETMARK: &str = "CNI-HOSTPORT-SETMARK";
pub(crate) const HOSTPORT_MASQ: &str = "CNI-HOSTPORT-MASQ";
pub(crate) const POSTROUTING: &str = "POSTROUTING";
const PREROUTING: &str = "PREROUTING";
/// The built-in chains of the nat table, which always exist.
pub(crate) const NAT_BUILTIN_CHAINS: [&str; 4] = [PREROUTING, "INPUT", "OUTPUT", POSTROUTING];

/// The kernel's limit of ports in one `multiport` match.
const MAX_MULTIPORT_PORTS: usize = 15;
/// The reference plugins cut comments to 256 bytes, ending them with `...`.
const MAX_COMMENT_LENGTH: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    V4,
    V6,
}

impl Family {
    pub(crate) fn of(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub(crate) fn save_command(self) -> &'static str {
        match self {
            Family::V4 => "iptables-save",
            Family::V6 => "ip6tables-save",
        }
    }

    /// Returns the index of the family in per-family arrays, IPv4 first.
    pub(crate) fn index(self) -> usize {
        match self {
            Family::V4 => 0,
            Family::V6 => 1,
        }
    }

    /// Returns the command that lists one chain with `-S`.
    pub(crate) fn list_command(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    pub(crate) fn restore_command(self) -> &'static str {
        match self {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        }
    }

    fn multicast(self) -> &'static str {
        match self {
            Family::V4 => "224.0.0.0/4",
            Family::V6 => "ff00::/8",
        }
    }
}

/// One rule: its chain and the text after `-A CHAIN ` in iptables-save output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub chain: String,
    pub spec: String,
}

impl Rule {
    pub(crate) fn new(chain: impl Into<String>, spec: impl Into<String>) -> Self {
        Self {
            chain: chain.into(),
            spec: spec.into(),
        }
    }

    /// Formats the rule as an `iptables-save` line.
    pub(crate) fn saved_line(&self) -> String {
        format!("-A {} {}", self.chain, self.spec)
    }

    /// Tells whether the rule jumps to `target`.
    pub(crate) fn jumps_to(&self, target: &str) -> bool {
        self.spec == format!("-j {target}") || self.spec.ends_with(&format!(" -j {target}"))
    }
}

/// The position a missing rule of a shared chain is added at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Position {
    Append,
    First,
}

/// The rules of one owner's port mappings in one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PortMapRules {
    /// Chains shared by all owners that these rules need.
    pub shared_chains: Vec<&'static str>,
    /// Rules of shared and built-in chains, added only when missing.
    pub shared_rules: Vec<(Rule, Position)>,
    /// The owner's `CNI-DN-` chain.
    pub dnat_chain: String,
    /// The rules of the owner's chain, in order.
    pub dnat_rules: Vec<Rule>,
    /// The owner's jumps from `CNI-HOSTPORT-DNAT` to its chain.
    pub entry_rules: Vec<Rule>,
}

impl PortMapRules {
    pub(crate) fn all_rules(&self) -> impl Iterator<Item = &Rule> {
        let shared = self.shared_rules.iter().map(|(rule, _)| rule);
        shared.chain(&self.dnat_rules).chain(&self.entry_rules)
    }

    /// Returns every chain that adding, checking or removing these rules
    /// reads: the shared chains, the chains of all rules and the owner's
    /// chain, each once.
    pub(crate) fn chains(&self) -> Vec<&str> {
        let mut chains: Vec<&str> = self.shared_chains.clone();
        chains.push(HOSTPORT_DNAT);
        chains.push(&self.dnat_chain);
        chains.extend(self.all_rules().map(|rule| rule.chain.as_str()));
        let mut seen = std::collections::BTreeSet::new();
        chains.retain(|chain| seen.insert(*chain));
        chains
    }
}

/// Generates the port-mapping rules of `owner` for the family of the
/// container address. Mappings whose host IP is of the other family are left
/// out, as the reference plugin leaves them out of this family's chain.
pub(crate) fn port_map_rules(owner: &Owner, spec: &PortMapSpec) -> Result<PortMapRules, String> {
    if spec.mark_bit > 31 {
        return Err(format!(
            "invalid mark bit {}: expected 0 to 31",
            spec.mark_bit
        ));
    }
    let family = Family::of(spec.container_address.addr());
    let mappings: Vec<_> = spec
        .mappings
        .iter()
        .filter(|mapping| mapping.host_ip.is_none_or(|ip| Family::of(ip) == family))
        .collect();

    let dnat_chain = owner.dnat_chain();
    let mut dnat_rules = Vec::new();
    for mapping in &mappings {
        dnat_rules.extend(mapping_rules(&dnat_chain, spec, mapping));
    }

    let mut by_protocol: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for mapping in &mappings {
        let ports = by_protocol.entry(mapping.protocol.as_str()).or_default();
        ports.push(mapping.host_port.to_string());
    }
    let comment = quote(&trim_comment(&format!("dnat {}", owner.comment())));
    let conditions: String = spec
        .conditions
        .iter()
        .map(|token| format!("{token} "))
        .collect();
    let mut entry_rules = Vec::new();
    for (protocol, ports) in &by_protocol {
        for group in ports.chunks(MAX_MULTIPORT_PORTS) {
            let spec = format!(
                "{conditions}-p {protocol} -m comment --comment {comment} -m multiport --dports {} -j {dnat_chain}",
                group.join(",")
            );
            entry_rules.push(Rule::new(HOSTPORT_DNAT, spec));
        }
    }

    let (shared_chains, shared_rules) = shared_port_map_rules(spec);
    Ok(PortMapRules {
        shared_chains,
        shared_rules,
        dnat_chain,
        dnat_rules,
        entry_rules,
    })
}

/// Generates the rules in the owner's chain for one mapping. With SNAT they
/// mark hairpin traffic from the container subnet and, for IPv4 only because
/// IPv6 does not route `::1`, traffic from localhost. The DNAT rule comes last.
fn mapping_rules(
    chain: &str,
    spec: &PortMapSpec,
    mapping: &crate::kernel::PortMapping,
) -> Vec<Rule> {
    let protocol = mapping.protocol.as_str();
    let port_match = format!("-p {protocol} -m {protocol} --dport {}", mapping.host_port);
    // `0.0.0.0` and `::` mean any local address, as no `-d` does.
    let destination = mapping
        .host_ip
        .filter(|ip| !ip.is_unspecified())
        .map(|ip| format!("-d {} ", host_prefix(ip)))
        .unwrap_or_default();
    let mut rules = Vec::new();
    let mark_chain = spec.mark_chain.as_deref().unwrap_or(HOSTPORT_SETMARK);

    if spec.snat {
        // iptables-save leaves out a source of 0.0.0.0/0, which masqAll uses.
        let source = match spec.masq_all {
            true => String::new(),
            false => format!("-s {} ", spec.container_address.trunc()),
        };
        let hairpin = format!("{source}{destination}{port_match} -j {mark_chain}");
        rules.push(Rule::new(chain, hairpin));

        let ipv4 = spec.container_address.addr().is_ipv4();
        if ipv4 && !spec.masq_all {
            let localhost = format!("-s 127.0.0.1/32 {destination}{port_match} -j {mark_chain}");
            rules.push(Rule::new(chain, localhost));
        }
    }

    let target = match spec.container_address.addr() {
        IpAddr::V4(ip) => format!("{ip}:{}", mapping.container_port),
        IpAddr::V6(ip) => format!("[{ip}]:{}", mapping.container_port),
    };
    let dnat = format!("{destination}{port_match} -j DNAT --to-destination {target}");
    rules.push(Rule::new(chain, dnat));
    rules
}

/// Generates the shared chains and their rules: local-destination jumps into
/// `CNI-HOSTPORT-DNAT` and, with SNAT, the mark and masquerade chains. An
/// external mark chain replaces the latter two, and its owner masquerades.
fn shared_port_map_rules(spec: &PortMapSpec) -> (Vec<&'static str>, Vec<(Rule, Position)>) {
    let local_jump = format!("-m addrtype --dst-type LOCAL -j {HOSTPORT_DNAT}");
    let mut chains = vec![HOSTPORT_DNAT];
    let mut rules = vec![
        (Rule::new(PREROUTING, &local_jump), Position::Append),
        (Rule::new("OUTPUT", &local_jump), Position::Append),
    ];
    if !spec.snat || spec.mark_chain.is_some() {
        return (chains, rules);
    }

    let mark = 1u32 << spec.mark_bit;
    let mark = format!("{mark:#x}/{mark:#x}");
    chains.extend([HOSTPORT_SETMARK, HOSTPORT_MASQ]);
    rules.extend([
        (
            Rule::new(
                HOSTPORT_SETMARK,
                format!(
                    "-m comment --comment {} -j MARK --set-xmark {mark}",
                    quote("CNI portfwd masquerade mark")
                ),
            ),
            Position::Append,
        ),
        (
            Rule::new(
                HOSTPORT_MASQ,
                format!("-m mark --mark {mark} -j MASQUERADE"),
            ),
            Position::Append,
        ),
        (
            Rule::new(
                POSTROUTING,
                format!(
                    "-m comment --comment {} -j {HOSTPORT_MASQ}",
                    quote("CNI portfwd requiring masquerade")
                ),
            ),
            Position::First,
        ),
    ]);
    (chains, rules)
}

/// Generates the masquerade rules of `owner` for `address`. The owner's chain
/// accepts traffic to the own subnet and masquerades all else except
/// multicast, and a POSTROUTING rule sends traffic from the address there.
pub(crate) fn masquerade_rules(owner: &Owner, address: IpNet) -> Vec<Rule> {
    let family = Family::of(address.addr());
    let chain = owner.masquerade_chain();
    let comment = quote(&trim_comment(&owner.comment()));

    vec![
        Rule::new(
            &chain,
            format!(
                "-d {} -m comment --comment {comment} -j ACCEPT",
                address.trunc()
            ),
        ),
        Rule::new(
            &chain,
            format!(
                "! -d {} -m comment --comment {comment} -j MASQUERADE",
                family.multicast()
            ),
        ),
        Rule::new(
            POSTROUTING,
            format!(
                "-s {} -m comment --comment {comment} -j {chain}",
                host_prefix(address.addr())
            ),
        ),
    ]
}

fn host_prefix(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(ip) => format!("{ip}/32"),
        IpAddr::V6(ip) => format!("{ip}/128"),
    }
}

/// Quotes a comment as iptables-save prints one that contains spaces.
// NOTE: iptables-save prints a comment without spaces or quotes bare. Every
// comment generated here contains spaces, so this always quotes.
fn quote(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

fn trim_comment(text: &str) -> String {
    if text.len() <= MAX_COMMENT_LENGTH {
        return text.to_string();
    }
    let mut end = MAX_COMMENT_LENGTH - 3;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{PortMapping, Protocol};

    fn seed_owner() -> Owner {
        Owner {
            network: "mynet".into(),
            container_id: "cnitool-3b469ed4466ecfd8f00d".into(),
            ifname: "eth0".into(),
        }
    }

    fn mapping(
        host_port: u16,
        container_port: u16,
        protocol: Protocol,
        host_ip: Option<&str>,
    ) -> PortMapping {
        PortMapping {
            host_port,
            container_port,
            protocol,
            host_ip: host_ip.map(|ip| ip.parse().unwrap()),
        }
    }

    fn seed_spec() -> PortMapSpec {
        PortMapSpec {
            container_address: "10.244.10.72/24".parse().unwrap(),
            mappings: vec![mapping(9090, 80, Protocol::Tcp, Some("127.0.0.1"))],
            snat: true,
            masq_all: false,
            mark_bit: 13,
            mark_chain: None,
            conditions: Vec::new(),
        }
    }

    fn lines<'a>(rules: impl IntoIterator<Item = &'a Rule>) -> Vec<String> {
        rules.into_iter().map(Rule::saved_line).collect()
    }

    #[test]
    fn seed_port_map_matches_reference() {
        let rules = port_map_rules(&seed_owner(), &seed_spec()).unwrap();

        assert_eq!(rules.dnat_chain, "CNI-DN-b232a5a313c3780addde4");
        assert_eq!(
            rules.shared_chains,
            [
                "CNI-HOSTPORT-DNAT",
                "CNI-HOSTPORT-SETMARK",
                "CNI-HOSTPORT-MASQ"
            ]
        );
        assert_eq!(
            lines(rules.shared_rules.iter().map(|(rule, _)| rule)),
            [
                "-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
                "-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
                r#"-A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000"#,
                "-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE",
                r#"-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ"#,
            ]
        );
        let positions: Vec<_> = rules
            .shared_rules
            .iter()
            .map(|(_, position)| *position)
            .collect();
        assert_eq!(
            positions,
            [
                Position::Append,
                Position::Append,
                Position::Append,
                Position::Append,
                Position::First
            ]
        );
        assert_eq!(
            lines(&rules.dnat_rules),
            [
                "-A CNI-DN-b232a5a313c3780addde4 -s 10.244.10.0/24 -d 127.0.0.1/32 -p tcp -m tcp --dport 9090 -j CNI-HOSTPORT-SETMARK",
                "-A CNI-DN-b232a5a313c3780addde4 -s 127.0.0.1/32 -d 127.0.0.1/32 -p tcp -m tcp --dport 9090 -j CNI-HOSTPORT-SETMARK",
                "-A CNI-DN-b232a5a313c3780addde4 -d 127.0.0.1/32 -p tcp -m tcp --dport 9090 -j DNAT --to-destination 10.244.10.72:80",
            ]
        );
        assert_eq!(
            lines(&rules.entry_rules),
            [
                r#"-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"mynet\" id: \"cnitool-3b469ed4466ecfd8f00d\"" -m multiport --dports 9090 -j CNI-DN-b232a5a313c3780addde4"#
            ]
        );
    }

    #[test]
    fn seed_masquerade_matches_reference() {
        let rules = masquerade_rules(&seed_owner(), "10.244.10.72/24".parse().unwrap());
        assert_eq!(
            lines(&rules),
            [
                r#"-A CNI-b232a5a313c3780addde4038 -d 10.244.10.0/24 -m comment --comment "name: \"mynet\" id: \"cnitool-3b469ed4466ecfd8f00d\"" -j ACCEPT"#,
                r#"-A CNI-b232a5a313c3780addde4038 ! -d 224.0.0.0/4 -m comment --comment "name: \"mynet\" id: \"cnitool-3b469ed4466ecfd8f00d\"" -j MASQUERADE"#,
                r#"-A POSTROUTING -s 10.244.10.72/32 -m comment --comment "name: \"mynet\" id: \"cnitool-3b469ed4466ecfd8f00d\"" -j CNI-b232a5a313c3780addde4038"#,
            ]
        );
    }

    #[test]
    fn masquerade_ipv6_uses_multicast_ff00() {
        let rules = masquerade_rules(&seed_owner(), "fd00:10::5/64".parse().unwrap());
        assert!(
            rules[0].spec.starts_with("-d fd00:10::/64 "),
            "{}",
            rules[0].spec
        );
        assert!(
            rules[1].spec.starts_with("! -d ff00::/8 "),
            "{}",
            rules[1].spec
        );
        assert!(
            rules[2].spec.starts_with("-s fd00:10::5/128 "),
            "{}",
            rules[2].spec
        );
    }

    #[test]
    fn entry_rules_group_by_protocol() {
        let mut spec = seed_spec();
        spec.snat = false;
        spec.mappings = (1..=17)
            .map(|port| mapping(8000 + port, 80, Protocol::Udp, None))
            .chain([
                mapping(9000, 80, Protocol::Tcp, None),
                mapping(9001, 81, Protocol::Sctp, None),
            ])
            .collect();

        let rules = port_map_rules(&seed_owner(), &spec).unwrap();
        let entries: Vec<&str> = rules
            .entry_rules
            .iter()
            .map(|rule| rule.spec.as_str())
            .collect();

        assert_eq!(entries.len(), 4, "{entries:#?}");
        // Sorted by protocol name as the reference sorts them.
        assert!(entries[0].starts_with("-p sctp "), "{}", entries[0]);
        assert!(entries[0].contains("--dports 9001 "), "{}", entries[0]);
        assert!(entries[1].starts_with("-p tcp "), "{}", entries[1]);
        assert!(entries[2].starts_with("-p udp "), "{}", entries[2]);
        let first_udp: Vec<String> = (8001..=8015).map(|port: u16| port.to_string()).collect();
        assert!(
            entries[2].contains(&format!("--dports {} ", first_udp.join(","))),
            "{}",
            entries[2]
        );
        assert!(entries[3].contains("--dports 8016,8017 "), "{}", entries[3]);
    }

    #[test]
    fn no_snat_has_only_dnat() {
        let mut spec = seed_spec();
        spec.snat = false;
        spec.mappings = vec![mapping(8080, 80, Protocol::Tcp, Some("0.0.0.0"))];

        let rules = port_map_rules(&seed_owner(), &spec).unwrap();

        assert_eq!(rules.shared_chains, ["CNI-HOSTPORT-DNAT"]);
        assert_eq!(rules.shared_rules.len(), 2);
        assert_eq!(
            lines(&rules.dnat_rules),
            [
                "-A CNI-DN-b232a5a313c3780addde4 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.244.10.72:80"
            ]
        );
    }

    #[test]
    fn masq_all_hairpins_from_anywhere() {
        let mut spec = seed_spec();
        spec.masq_all = true;
        spec.mappings = vec![mapping(8080, 80, Protocol::Udp, None)];

        let rules = port_map_rules(&seed_owner(), &spec).unwrap();

        assert_eq!(
            lines(&rules.dnat_rules),
            [
                "-A CNI-DN-b232a5a313c3780addde4 -p udp -m udp --dport 8080 -j CNI-HOSTPORT-SETMARK",
                "-A CNI-DN-b232a5a313c3780addde4 -p udp -m udp --dport 8080 -j DNAT --to-destination 10.244.10.72:80",
            ]
        );
    }

    #[test]
    fn ipv6_dnat_brackets_target() {
        let mut spec = seed_spec();
        spec.container_address = "fd00:10::5/64".parse().unwrap();
        spec.mappings = vec![
            mapping(8080, 80, Protocol::Tcp, Some("::1")),
            mapping(8081, 81, Protocol::Tcp, Some("127.0.0.1")),
            mapping(8082, 82, Protocol::Tcp, Some("::")),
        ];

        let rules = port_map_rules(&seed_owner(), &spec).unwrap();

        assert_eq!(
            lines(&rules.dnat_rules),
            [
                "-A CNI-DN-b232a5a313c3780addde4 -s fd00:10::/64 -d ::1/128 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK",
                "-A CNI-DN-b232a5a313c3780addde4 -d ::1/128 -p tcp -m tcp --dport 8080 -j DNAT --to-destination [fd00:10::5]:80",
                "-A CNI-DN-b232a5a313c3780addde4 -s fd00:10::/64 -p tcp -m tcp --dport 8082 -j CNI-HOSTPORT-SETMARK",
                "-A CNI-DN-b232a5a313c3780addde4 -p tcp -m tcp --dport 8082 -j DNAT --to-destination [fd00:10::5]:82",
            ]
        );
        assert!(rules.entry_rules[0].spec.contains("--dports 8080,8082 "));
    }

    #[test]
    fn mark_bit_out_of_range_rejected() {
        let mut spec = seed_spec();
        spec.mark_bit = 32;
        assert!(port_map_rules(&seed_owner(), &spec).is_err());
    }

    #[test]
    fn mark_bit_formats_as_hex() {
        let mut spec = seed_spec();
        spec.mark_bit = 0;
        let rules = port_map_rules(&seed_owner(), &spec).unwrap();
        assert!(rules.shared_rules[3].0.spec.contains("--mark 0x1/0x1 "));
    }

    #[test]
    fn long_comment_is_trimmed() {
        let comment = trim_comment(&"n".repeat(300));
        assert_eq!(comment.len(), MAX_COMMENT_LENGTH);
        assert!(comment.ends_with("..."));
        assert_eq!(trim_comment("short"), "short");
    }

    #[test]
    fn jump_detection_matches_target_only() {
        let rule = Rule::new(HOSTPORT_DNAT, "-p tcp -j CNI-DN-abc");
        assert!(rule.jumps_to("CNI-DN-abc"));
        assert!(!rule.jumps_to("CNI-DN-ab"));
        assert!(Rule::new("X", "-j Y").jumps_to("Y"));
    }

    /// The lines the reference portmap 1.1.1 saved for container "abc" with
    /// `externalSetMarkChain` and `conditionsV4`, as iptables-save wrote them.
    #[test]
    fn external_mark_chain_and_conditions_match_reference() {
        let owner = Owner {
            network: "mynet".into(),
            container_id: "abc".into(),
            ifname: "eth0".into(),
        };
        let spec = PortMapSpec {
            container_address: "10.244.10.7/24".parse().unwrap(),
            mark_chain: Some("KUBE-MARK-MASQ".into()),
            conditions: ["-s", "1.2.3.4/32", "!", "-d", "10.99.0.0/16"]
                .map(String::from)
                .to_vec(),
            ..seed_spec()
        };

        let rules = port_map_rules(&owner, &spec).unwrap();

        assert_eq!(rules.shared_chains, ["CNI-HOSTPORT-DNAT"]);
        assert_eq!(rules.shared_rules.len(), 2, "{:?}", rules.shared_rules);
        assert_eq!(
            lines(&rules.dnat_rules),
            [
                "-A CNI-DN-e88f49d94512ff752ebe6 -s 10.244.10.0/24 -d 127.0.0.1/32 -p tcp -m tcp --dport 9090 -j KUBE-MARK-MASQ",
                "-A CNI-DN-e88f49d94512ff752ebe6 -s 127.0.0.1/32 -d 127.0.0.1/32 -p tcp -m tcp --dport 9090 -j KUBE-MARK-MASQ",
                "-A CNI-DN-e88f49d94512ff752ebe6 -d 127.0.0.1/32 -p tcp -m tcp --dport 9090 -j DNAT --to-destination 10.244.10.7:80",
            ]
        );
        assert_eq!(
            lines(&rules.entry_rules),
            [
                r#"-A CNI-HOSTPORT-DNAT -s 1.2.3.4/32 ! -d 10.99.0.0/16 -p tcp -m comment --comment "dnat name: \"mynet\" id: \"abc\"" -m multiport --dports 9090 -j CNI-DN-e88f49d94512ff752ebe6"#
            ]
        );
    }
}
