//! MAC spoof checks through the `nft` program (see [`super::nft`]).

use serde_json::{Value, json};

use super::nft::{NftProgram, failed, listed_objects, rule_deletion};
use crate::kernel::{KernelError, Owner, SpoofCheck, SpoofCheckSpec};

const FAMILY: &str = "bridge";
const TABLE: &str = "nat";
const BASE_CHAIN: &str = "PREROUTING";

/// Priority of the base chain, -300 (`dstnat` in the bridge family), as the
/// reference plugin gives it.
const BASE_CHAIN_PRIORITY: i32 = -300;

/// The nftables objects of one attachment's spoof check, named as the
/// reference bridge plugin (v1.1.1) names them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Names {
    /// `cni-br-iface-<id>`, which `PREROUTING` jumps to.
    iface_chain: String,
    /// `cni-br-iface-<id>-mac`, which contains the MAC match and the drop.
    mac_chain: String,
    /// `macspoofchk-<id>`, on every rule.
    comment: String,
}

impl Names {
    fn of(owner: &Owner) -> Self {
        let id = owner.spoof_check_id();
        let iface_chain = format!("cni-br-iface-{id}");
        Self {
            mac_chain: format!("{iface_chain}-mac"),
            iface_chain,
            comment: format!("macspoofchk-{id}"),
        }
    }
}

/// [`SpoofCheck`] over `nft -j -f -`, run in the namespace of the calling
/// thread, the host's.
#[derive(Debug, Clone)]
pub struct NftSpoofCheck {
    nft: NftProgram,
}

/// The feature that needs `nft`, named in the message when it is missing.
const PURPOSE: &str = "MAC spoof checks";

impl Default for NftSpoofCheck {
    fn default() -> Self {
        Self {
            nft: NftProgram::from_path(PURPOSE),
        }
    }
}

impl NftSpoofCheck {
    /// Builds a spoof check that runs `program` in place of `nft`, looked
    /// up in `PATH` unless it contains a `/`.
    pub fn with_program(program: impl Into<String>) -> Self {
        Self {
            nft: NftProgram::new(program, PURPOSE),
        }
    }
}

/// Returns the JSON object that names chain `name` of table `bridge nat`.
fn chain(name: &str) -> Value {
    json!({"family": FAMILY, "table": TABLE, "name": name})
}

/// Returns the command that appends a rule with `expr` and the
/// attachment's comment to `chain`.
fn rule(names: &Names, chain: &str, expr: Value) -> Value {
    json!({"add": {"rule": {"family": FAMILY, "table": TABLE, "chain": chain,
        "expr": expr, "comment": names.comment}}})
}

/// Returns the first transaction, which creates the table, the base chain
/// and the attachment's two chains unless they exist. The reference applies
/// these apart from the rules because a flush fails on a chain that does
/// not exist.
fn declarations(names: &Names) -> Vec<Value> {
    let base_chain = json!({"family": FAMILY, "table": TABLE, "name": BASE_CHAIN,
        "type": "filter", "hook": "prerouting", "prio": BASE_CHAIN_PRIORITY, "policy": "accept"});
    vec![
        json!({"add": {"table": {"family": FAMILY, "name": TABLE}}}),
        json!({"add": {"chain": base_chain}}),
        json!({"add": {"chain": chain(&names.iface_chain)}}),
        json!({"add": {"chain": chain(&names.mac_chain)}}),
    ]
}

/// Returns the rest of the second transaction, which follows the deletions
/// of earlier jumps. It empties the attachment's chains. Then it adds, in
/// the reference's order, the jump from `PREROUTING` for frames that enter
/// through the host veth, the jump to the MAC chain, a return for the
/// allowed source MAC and a drop for every other frame.
fn rules(names: &Names, spec: &SpoofCheckSpec) -> Vec<Value> {
    let from_port = json!({"match": {"op": "==", "left": {"meta": {"key": "iifname"}},
        "right": spec.host_link}});
    let from_mac = json!({"match": {"op": "==",
        "left": {"payload": {"protocol": "ether", "field": "saddr"}}, "right": spec.mac}});
    let jump = |target: &str| json!({"jump": {"target": target}});
    vec![
        json!({"flush": {"chain": chain(&names.iface_chain)}}),
        json!({"flush": {"chain": chain(&names.mac_chain)}}),
        rule(
            names,
            BASE_CHAIN,
            json!([from_port, jump(&names.iface_chain)]),
        ),
        rule(names, &names.iface_chain, json!([jump(&names.mac_chain)])),
        rule(names, &names.mac_chain, json!([from_mac, {"return": null}])),
        rule(names, &names.mac_chain, json!([{"drop": null}])),
    ]
}

fn in_table(object: &Value) -> bool {
    object["family"] == FAMILY && object["table"] == TABLE
}

/// Builds the commands that delete, by handle, each rule of `PREROUTING`
/// in `listing` that has the attachment's comment.
fn jump_removals(names: &Names, listing: &Value) -> Result<Vec<Value>, String> {
    let mut commands = Vec::new();
    for rule in listed_objects(listing)?
        .iter()
        .filter_map(|object| object.get("rule"))
    {
        if !in_table(rule) || rule["chain"] != BASE_CHAIN || rule["comment"] != names.comment {
            continue;
        }
        commands.push(rule_deletion(rule)?);
    }
    Ok(commands)
}

/// Builds the commands that remove the attachment's check as `listing`
/// shows it: the jumps from `PREROUTING`, then each of its chains that
/// exists. Returns no commands when none exist.
fn removals(names: &Names, listing: &Value) -> Result<Vec<Value>, String> {
    let mut commands = jump_removals(names, listing)?;
    let chains: Vec<&Value> = listed_objects(listing)?
        .iter()
        .filter_map(|object| object.get("chain"))
        .filter(|chain| in_table(chain))
        .collect();
    for name in [&names.iface_chain, &names.mac_chain] {
        if chains.iter().any(|chain| chain["name"] == name.as_str()) {
            commands.push(json!({"delete": {"chain": chain(name)}}));
        }
    }
    Ok(commands)
}

impl SpoofCheck for NftSpoofCheck {
    /// Applies the declarations, then in one transaction deletes the
    /// attachment's earlier jumps and puts in the rules, so that a repeated
    /// ADD leaves one jump where the reference would add a second.
    fn add_spoof_check(&mut self, owner: &Owner, spec: &SpoofCheckSpec) -> Result<(), KernelError> {
        let names = Names::of(owner);
        let operation = format!(
            "add the MAC spoof check for {} and {} (chain {})",
            spec.host_link, spec.mac, names.iface_chain
        );

        self.nft.apply(&operation, declarations(&names))?;
        let listing = self.nft.list_family(&operation, FAMILY)?;
        let mut commands =
            jump_removals(&names, &listing).map_err(|reason| failed(&operation, reason))?;
        commands.extend(rules(&names, spec));
        self.nft.apply(&operation, commands)
    }

    fn remove_spoof_check(&mut self, owner: &Owner) -> Result<(), KernelError> {
        let names = Names::of(owner);
        let operation = format!("remove the MAC spoof check in chain {}", names.iface_chain);

        let listing = self.nft.list_family(&operation, FAMILY)?;
        let commands = removals(&names, &listing).map_err(|reason| failed(&operation, reason))?;

        if commands.is_empty() {
            return Ok(());
        }
        self.nft.apply(&operation, commands)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::KernelErrorKind;

    fn owner() -> Owner {
        Owner {
            network: "mynet".into(),
            container_id: "ctr1".into(),
            ifname: "eth0".into(),
        }
    }

    #[test]
    fn names_follow_reference() {
        let names = Names::of(&owner());
        assert_eq!(names.iface_chain, "cni-br-iface-ctr1-eth0");
        assert_eq!(names.mac_chain, "cni-br-iface-ctr1-eth0-mac");
        assert_eq!(names.comment, "macspoofchk-ctr1-eth0");
    }

    #[test]
    fn rules_match_then_drop() {
        let spec = SpoofCheckSpec {
            host_link: "veth0a1b2c3d".into(),
            mac: "0a:58:0a:f4:0a:02".into(),
        };
        let commands = rules(&Names::of(&owner()), &spec);

        assert_eq!(commands.len(), 6);
        assert_eq!(
            commands[0]["flush"]["chain"]["name"],
            "cni-br-iface-ctr1-eth0"
        );
        let entry = &commands[2]["add"]["rule"];
        assert_eq!(entry["chain"], "PREROUTING");
        assert_eq!(entry["expr"][0]["match"]["right"], "veth0a1b2c3d");
        assert_eq!(entry["expr"][1]["jump"]["target"], "cni-br-iface-ctr1-eth0");
        let allowed = &commands[4]["add"]["rule"];
        assert_eq!(allowed["expr"][0]["match"]["right"], "0a:58:0a:f4:0a:02");
        assert!(allowed["expr"][1].get("return").is_some());
        let drop = &commands[5]["add"]["rule"];
        assert_eq!(drop["chain"], "cni-br-iface-ctr1-eth0-mac");
        assert_eq!(drop["expr"], json!([{"drop": null}]));
        assert!(
            commands[2..]
                .iter()
                .all(|command| command["add"]["rule"]["comment"] == "macspoofchk-ctr1-eth0")
        );
    }

    #[test]
    fn removals_pick_own_rules_and_chains() {
        let listing = json!({"nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "bridge", "name": "nat", "handle": 1}},
            {"chain": {"family": "bridge", "table": "nat", "name": "PREROUTING", "handle": 1}},
            {"chain": {"family": "bridge", "table": "nat", "name": "cni-br-iface-ctr1-eth0", "handle": 2}},
            {"chain": {"family": "bridge", "table": "nat", "name": "cni-br-iface-ctr2-eth0", "handle": 3}},
            {"rule": {"family": "bridge", "table": "nat", "chain": "PREROUTING", "handle": 7,
                "comment": "macspoofchk-ctr1-eth0", "expr": []}},
            {"rule": {"family": "bridge", "table": "nat", "chain": "PREROUTING", "handle": 8,
                "comment": "macspoofchk-ctr2-eth0", "expr": []}},
            {"rule": {"family": "bridge", "table": "filter", "chain": "PREROUTING", "handle": 9,
                "comment": "macspoofchk-ctr1-eth0", "expr": []}}
        ]});

        let commands = removals(&Names::of(&owner()), &listing).unwrap();

        assert_eq!(
            commands,
            vec![
                json!({"delete": {"rule": {"family": "bridge", "table": "nat", "chain": "PREROUTING", "handle": 7}}}),
                json!({"delete": {"chain": {"family": "bridge", "table": "nat", "name": "cni-br-iface-ctr1-eth0"}}}),
            ],
            "the MAC chain is missing, and other attachments' objects stay"
        );
    }

    #[test]
    fn removals_of_empty_family_are_none() {
        let listing = json!({"nftables": [{"metainfo": {"version": "1.0.6"}}]});
        assert!(removals(&Names::of(&owner()), &listing).unwrap().is_empty());
        assert!(removals(&Names::of(&owner()), &json!({})).is_err());
    }

    #[test]
    fn missing_program_named_in_error() {
        let mut check = NftSpoofCheck::with_program("/nonexistent/nft");
        let spec = SpoofCheckSpec {
            host_link: "veth0a1b2c3d".into(),
            mac: "0a:58:0a:f4:0a:02".into(),
        };

        let error = check.add_spoof_check(&owner(), &spec).unwrap_err();

        assert_eq!(error.kind, KernelErrorKind::Failed);
        let message = error.to_string();
        assert!(message.contains("install nftables"), "{message}");
        assert!(message.contains("/nonexistent/nft"), "{message}");
        let error = check.remove_spoof_check(&owner()).unwrap_err();
        assert!(error.to_string().contains("install nftables"), "{error}");
    }
}
