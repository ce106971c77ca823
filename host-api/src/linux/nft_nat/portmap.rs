//! Port mappings in tables `ip cni_hostport` and `ip6 cni_hostport`.
//!
//! Chain `prerouting` (DNAT hook of routed traffic) and chain `output`
//! (locally sent traffic) each contain one entry rule, rewritten on every
//! ADD: the plugin's conditions, then a jump to `hostports_all` for traffic
//! to a local address. `hostports_all` jumps to `hostip_hostports`, which
//! the reference keeps empty for upgrades, and to `hostports`, which
//! contains one DNAT rule per mapping. Chain `masquerading`, created with
//! SNAT, contains the hairpin and localhost masquerade rules.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Value, json};

use super::{DSTNAT_PRIORITY, SRCNAT_PRIORITY, condition, owned_rules, prefix};
use crate::kernel::{KernelError, KernelErrorKind, Namespace, NftPortMapSpec, Owner, PortMapping};
use crate::linux::nft::{NftProgram, failed, matching, payload, rule_deletion};

const TABLE: &str = "cni_hostport";
const TABLE_COMMENT: &str = "CNI portmap plugin";
const HOSTPORTS: &str = "hostports";
const HOSTIP_HOSTPORTS: &str = "hostip_hostports";
const HOSTPORTS_ALL: &str = "hostports_all";
const PREROUTING: &str = "prerouting";
const OUTPUT: &str = "output";
const MASQUERADING: &str = "masquerading";

/// The chains whose rules carry container ids, and so are removed on DEL.
const OWNED_CHAINS: [&str; 3] = [HOSTPORTS, HOSTIP_HOSTPORTS, MASQUERADING];

/// Returns the nftables family of `address`'s table.
fn family(address: IpAddr) -> &'static str {
    match address {
        IpAddr::V4(_) => "ip",
        IpAddr::V6(_) => "ip6",
    }
}

/// The commands of one family's table, which all name it.
struct Table {
    family: &'static str,
}

impl Table {
    fn chain(&self, name: &str) -> Value {
        json!({"family": self.family, "table": TABLE, "name": name})
    }

    fn base_chain(&self, name: &str, hook: &str, priority: i32) -> Value {
        json!({"family": self.family, "table": TABLE, "name": name,
            "type": "nat", "hook": hook, "prio": priority, "policy": "accept"})
    }

    fn rule(&self, chain: &str, expr: Vec<Value>, comment: Option<&str>) -> Value {
        let mut rule = json!({"family": self.family, "table": TABLE, "chain": chain, "expr": expr});
        if let Some(comment) = comment {
            rule["comment"] = json!(comment);
        }
        json!({"add": {"rule": rule}})
    }

    /// Returns the commands that declare a chain and empty it.
    fn fresh_chain(&self, chain: Value) -> [Value; 2] {
        let name = chain["name"].clone();
        let flush =
            json!({"flush": {"chain": {"family": self.family, "table": TABLE, "name": name}}});
        [json!({"add": {"chain": chain}}), flush]
    }
}

/// Builds the transaction of one family's ADD, in the reference's order.
pub(super) fn add_commands(owner: &Owner, spec: &NftPortMapSpec) -> Vec<Value> {
    let table = Table {
        family: family(spec.container_address.addr()),
    };
    let mut commands = vec![
        json!({"add": {"table": {"family": table.family, "name": TABLE, "comment": TABLE_COMMENT}}}),
        json!({"add": {"chain": table.chain(HOSTPORTS)}}),
        json!({"add": {"chain": table.chain(HOSTIP_HOSTPORTS)}}),
    ];
    let jump = |target: &str| json!({"jump": {"target": target}});
    commands.extend(table.fresh_chain(table.chain(HOSTPORTS_ALL)));
    commands.push(table.rule(HOSTPORTS_ALL, vec![jump(HOSTIP_HOSTPORTS)], None));
    commands.push(table.rule(HOSTPORTS_ALL, vec![jump(HOSTPORTS)], None));

    // Only traffic to a local address is a host port: without the fib
    // match, traffic that passes through to another host would be mapped.
    let mut entry: Vec<Value> = spec.conditions.iter().map(condition).collect();
    let fib = json!({"fib": {"result": "type", "flags": ["daddr"]}});
    entry.push(matching(fib, "==", json!("local")));
    entry.push(jump(HOSTPORTS_ALL));
    for (name, hook) in [(PREROUTING, "prerouting"), (OUTPUT, "output")] {
        commands.extend(table.fresh_chain(table.base_chain(name, hook, DSTNAT_PRIORITY)));
        commands.push(table.rule(name, entry.clone(), None));
    }

    if spec.snat {
        let chain = table.base_chain(MASQUERADING, "postrouting", SRCNAT_PRIORITY);
        commands.push(json!({"add": {"chain": chain}}));
    }
    let comment = Some(owner.container_id.as_str());
    for mapping in &spec.mappings {
        let expr = dnat_expr(table.family, spec.container_address.addr(), mapping);
        commands.push(table.rule(HOSTPORTS, expr, comment));
    }
    if spec.snat {
        for expr in masquerade_exprs(table.family, spec) {
            commands.push(table.rule(MASQUERADING, expr, comment));
        }
    }
    commands
}

/// `[ip daddr HOST] PROTO dport PORT dnat to CONTAINER:PORT`.
fn dnat_expr(family: &str, container: IpAddr, mapping: &PortMapping) -> Vec<Value> {
    let mut expr = Vec::new();
    if let Some(host_ip) = mapping.host_ip {
        let daddr = payload(family, "daddr");
        expr.push(matching(daddr, "==", json!(host_ip.to_string())));
    }
    let dport = payload(mapping.protocol.as_str(), "dport");
    expr.push(matching(dport, "==", json!(mapping.host_port)));
    expr.push(json!({"dnat": {"addr": container.to_string(), "port": mapping.container_port}}));
    expr
}

/// Returns the masquerade rules: hairpin traffic from the container (or
/// from anywhere with `masqAll`) to itself, and for IPv4 without `masqAll`
/// traffic from 127.0.0.1, which `route_localnet` lets reach the container.
fn masquerade_exprs(family: &str, spec: &NftPortMapSpec) -> Vec<Vec<Value>> {
    let container = spec.container_address.addr();
    let source = match (spec.masq_all, container) {
        (false, _) => json!(container.to_string()),
        (true, IpAddr::V4(_)) => prefix(IpNet::V4(Default::default())),
        (true, IpAddr::V6(_)) => prefix(IpNet::V6(Default::default())),
    };
    let rule = |source: Value| {
        vec![
            matching(payload(family, "saddr"), "==", source),
            matching(payload(family, "daddr"), "==", json!(container.to_string())),
            json!({"masquerade": null}),
        ]
    };
    let mut exprs = vec![rule(source)];
    if container.is_ipv4() && !spec.masq_all {
        exprs.push(rule(json!("127.0.0.1")));
    }
    exprs
}

pub(super) fn add(
    nft: &NftProgram,
    owner: &Owner,
    spec: &NftPortMapSpec,
) -> Result<(), KernelError> {
    let operation = format!(
        "add nftables port mappings to {} for container {:?}",
        spec.container_address.addr(),
        owner.container_id
    );
    check_comment_length(&operation, &owner.container_id)?;
    nft.apply(&operation, add_commands(owner, spec))
}

/// The longest rule comment nft accepts, in bytes: nft 1.0.6 rejects a
/// longer one with "comment too long, 128 characters maximum allowed".
const MAX_COMMENT_BYTES: usize = 128;

/// Fails with `Invalid` when the container id, which the reference layout
/// uses as the comment of every rule, is too long for a comment. The check
/// spares the nft process, and its message names what to do instead.
fn check_comment_length(operation: &str, container_id: &str) -> Result<(), KernelError> {
    if container_id.len() <= MAX_COMMENT_BYTES {
        return Ok(());
    }
    let reason = format!(
        "the container id has {} bytes, but nftables rule comments hold at most {MAX_COMMENT_BYTES}: use a shorter container id, or the iptables backend",
        container_id.len()
    );
    Err(KernelError::new(
        KernelErrorKind::Invalid,
        Namespace::Host,
        operation,
        reason,
    ))
}

/// Returns the number of rules each chain needs for `spec`: one per
/// mapping in `hostports`, and with SNAT one or two in `masquerading`.
pub(super) fn needed_rules(spec: &NftPortMapSpec) -> Vec<(&'static str, usize)> {
    let mut needed = Vec::new();
    if !spec.mappings.is_empty() {
        needed.push((HOSTPORTS, spec.mappings.len()));
    }
    if spec.snat {
        let localhost = spec.container_address.addr().is_ipv4() && !spec.masq_all;
        needed.push((MASQUERADING, 1 + usize::from(localhost)));
    }
    needed
}

/// Counts the rules commented with the container id, as the reference's
/// CHECK does, and fails with the reference's message.
pub(super) fn check_listing(
    owner: &Owner,
    spec: &NftPortMapSpec,
    listing: &Value,
) -> Result<(), (KernelErrorKind, String)> {
    let id = owner.container_id.as_str();
    for (chain, needed) in needed_rules(spec) {
        let found = owned_rules(listing, chain, |comment| comment == id)
            .map_err(|reason| (KernelErrorKind::Failed, reason))?
            .len();
        if found < needed {
            let reason = format!(
                "missing hostport rules in {chain:?} chain: {found} of {needed} rules with comment {id:?}"
            );
            return Err((KernelErrorKind::NotFound, reason));
        }
    }
    Ok(())
}

pub(super) fn check(
    nft: &NftProgram,
    owner: &Owner,
    spec: &NftPortMapSpec,
) -> Result<(), KernelError> {
    let family = family(spec.container_address.addr());
    let operation = format!(
        "check the nftables port mappings of container {:?} in table {family} {TABLE}",
        owner.container_id
    );
    let listing = nft.list_table(&operation, family, TABLE)?;
    check_listing(owner, spec, &listing)
        .map_err(|(kind, reason)| KernelError::new(kind, Namespace::Host, &operation, reason))
}

/// Builds the deletions of the rules commented with the container id in
/// `listing`, one family's table.
pub(super) fn removals(owner: &Owner, listing: &Value) -> Result<Vec<Value>, String> {
    let id = owner.container_id.as_str();
    let mut commands = Vec::new();
    for chain in OWNED_CHAINS {
        for rule in owned_rules(listing, chain, |comment| comment == id)? {
            commands.push(rule_deletion(rule)?);
        }
    }
    Ok(commands)
}

pub(super) fn remove(nft: &NftProgram, owner: &Owner) -> Result<(), KernelError> {
    let operation = format!(
        "remove the nftables port mappings of container {:?}",
        owner.container_id
    );
    let mut commands = Vec::new();
    for family in ["ip", "ip6"] {
        let listing = nft.list_table(&operation, family, TABLE)?;
        commands.extend(removals(owner, &listing).map_err(|reason| failed(&operation, reason))?);
    }

    if commands.is_empty() {
        return Ok(());
    }
    nft.apply(&operation, commands)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{NftMatch, NftSelector, NftValue, Protocol};

    fn owner() -> Owner {
        Owner {
            network: "test".into(),
            container_id: "icee6giejonei6so".into(),
            ifname: "eth0".into(),
        }
    }

    fn mapping(host_port: u16, container_port: u16, host_ip: Option<&str>) -> PortMapping {
        PortMapping {
            host_port,
            container_port,
            protocol: Protocol::Tcp,
            host_ip: host_ip.map(|ip| ip.parse().unwrap()),
        }
    }

    fn spec(address: &str, snat: bool, masq_all: bool) -> NftPortMapSpec {
        NftPortMapSpec {
            container_address: address.parse().unwrap(),
            mappings: vec![
                mapping(8080, 80, None),
                mapping(8083, 83, Some("192.168.0.2")),
            ],
            snat,
            masq_all,
            conditions: vec![NftMatch {
                selector: NftSelector::Payload {
                    protocol: "ip",
                    field: "saddr",
                },
                negated: true,
                value: NftValue::Prefix("192.0.2.0/24".parse().unwrap()),
            }],
        }
    }

    /// Returns the `add rule` commands of `chain`.
    fn rules_of<'a>(commands: &'a [Value], chain: &str) -> Vec<&'a Value> {
        commands
            .iter()
            .filter_map(|command| command["add"].get("rule"))
            .filter(|rule| rule["chain"] == chain)
            .collect()
    }

    #[test]
    fn add_commands_follow_reference_layout() {
        let commands = add_commands(&owner(), &spec("10.0.0.2/24", true, false));

        assert_eq!(
            commands[0],
            json!({"add": {"table": {"family": "ip", "name": "cni_hostport", "comment": "CNI portmap plugin"}}})
        );
        let prerouting = rules_of(&commands, "prerouting");
        assert_eq!(prerouting.len(), 1);
        let expr = prerouting[0]["expr"].as_array().unwrap();
        assert_eq!(expr.len(), 3, "condition, fib, jump: {expr:?}");
        assert_eq!(expr[0]["match"]["op"], "!=");
        assert_eq!(expr[1]["match"]["left"]["fib"]["result"], "type");
        assert_eq!(expr[2], json!({"jump": {"target": "hostports_all"}}));
        assert_eq!(
            rules_of(&commands, "output")[0]["expr"],
            prerouting[0]["expr"]
        );

        let hostports = rules_of(&commands, "hostports");
        assert_eq!(hostports.len(), 2);
        assert!(hostports.iter().all(|r| r["comment"] == "icee6giejonei6so"));
        assert_eq!(
            hostports[1]["expr"],
            json!([
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "192.168.0.2"}},
                {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 8083}},
                {"dnat": {"addr": "10.0.0.2", "port": 83}}
            ])
        );
        let masquerading = rules_of(&commands, "masquerading");
        assert_eq!(masquerading.len(), 2);
        assert_eq!(masquerading[1]["expr"][0]["match"]["right"], "127.0.0.1");
        let flushed: Vec<&Value> = commands
            .iter()
            .filter_map(|c| c.get("flush"))
            .map(|f| &f["chain"]["name"])
            .collect();
        assert_eq!(flushed, ["hostports_all", "prerouting", "output"]);
    }

    #[test]
    fn add_commands_without_snat_have_no_masquerading() {
        let commands = add_commands(&owner(), &spec("2001:db8::2/64", false, false));

        assert_eq!(commands[0]["add"]["table"]["family"], "ip6");
        let text = serde_json::to_string(&commands).unwrap();
        assert!(!text.contains("masquerading"), "{text}");
        assert!(text.contains(r#""addr":"2001:db8::2""#), "{text}");
    }

    #[test]
    fn masq_all_matches_any_source() {
        for (address, any) in [("10.0.0.2/24", "0.0.0.0"), ("2001:db8::2/64", "::")] {
            let commands = add_commands(&owner(), &spec(address, true, true));
            let masquerading = rules_of(&commands, "masquerading");
            assert_eq!(masquerading.len(), 1, "{address}");
            assert_eq!(
                masquerading[0]["expr"][0]["match"]["right"],
                json!({"prefix": {"addr": any, "len": 0}})
            );
        }
    }

    fn listed_rule(chain: &str, comment: &str, handle: u64) -> Value {
        json!({"rule": {"family": "ip", "table": "cni_hostport", "chain": chain,
            "handle": handle, "comment": comment, "expr": []}})
    }

    #[test]
    fn check_counts_rules_per_chain() {
        let listing = |rules: Vec<Value>| json!({ "nftables": rules });
        let id = "icee6giejonei6so";
        let full = listing(vec![
            listed_rule("hostports", id, 1),
            listed_rule("hostports", id, 2),
            listed_rule("masquerading", id, 3),
            listed_rule("masquerading", id, 4),
        ]);
        assert!(check_listing(&owner(), &spec("10.0.0.2/24", true, false), &full).is_ok());

        let one_masquerade = listing(vec![
            listed_rule("hostports", id, 1),
            listed_rule("hostports", id, 2),
            listed_rule("masquerading", id, 3),
            listed_rule("masquerading", "other", 4),
        ]);
        let (kind, reason) =
            check_listing(&owner(), &spec("10.0.0.2/24", true, false), &one_masquerade)
                .unwrap_err();
        assert_eq!(kind, KernelErrorKind::NotFound);
        assert!(
            reason.starts_with("missing hostport rules in \"masquerading\" chain"),
            "{reason}"
        );
        assert!(check_listing(&owner(), &spec("10.0.0.2/24", true, true), &one_masquerade).is_ok());
        assert!(
            check_listing(
                &owner(),
                &spec("10.0.0.2/24", false, false),
                &one_masquerade
            )
            .is_ok()
        );

        let (_, reason) = check_listing(
            &owner(),
            &spec("10.0.0.2/24", false, false),
            &listing(vec![]),
        )
        .unwrap_err();
        assert!(reason.contains("\"hostports\""), "{reason}");
    }

    #[test]
    fn removals_pick_owned_chains_and_comment() {
        let listing = json!({"nftables": [
            listed_rule("hostports", "icee6giejonei6so", 5),
            listed_rule("hostports", "other", 6),
            listed_rule("hostip_hostports", "icee6giejonei6so", 7),
            listed_rule("masquerading", "icee6giejonei6so", 8),
            listed_rule("prerouting", "icee6giejonei6so", 9),
            {"rule": {"family": "ip", "table": "cni_hostport", "chain": "hostports_all",
                "handle": 10, "expr": []}}
        ]});

        let commands = removals(&owner(), &listing).unwrap();

        let handles: Vec<&Value> = commands
            .iter()
            .map(|c| &c["delete"]["rule"]["handle"])
            .collect();
        assert_eq!(handles, [5, 7, 8]);
    }

    #[test]
    fn long_container_id_rejected_before_nft() {
        let program = NftProgram::new("/nonexistent/nft", "a test");
        let owner = Owner {
            network: "n".into(),
            container_id: "c".repeat(MAX_COMMENT_BYTES + 1),
            ifname: "eth0".into(),
        };
        let spec = NftPortMapSpec {
            container_address: "10.250.0.2/24".parse().unwrap(),
            mappings: Vec::new(),
            snat: true,
            masq_all: false,
            conditions: Vec::new(),
        };

        let error = add(&program, &owner, &spec).unwrap_err();

        assert_eq!(error.kind, KernelErrorKind::Invalid);
        assert!(error.reason.contains("129 bytes"), "{error}");
        assert!(error.reason.contains("iptables backend"), "{error}");
        assert!(check_comment_length("op", &"c".repeat(MAX_COMMENT_BYTES)).is_ok());
    }
}
