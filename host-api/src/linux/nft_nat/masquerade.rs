//! Masquerade in table `inet cni_plugins_masquerade`, shared by all
//! attachments. Base chain `postrouting`, rewritten on every ADD, returns
//! multicast and goes to `masq_checks`, which contains one rule per
//! container address.

use ipnet::IpNet;
use serde_json::{Value, json};

use super::{SRCNAT_PRIORITY, owned_rules, prefix};
use crate::kernel::{KernelError, Owner};
use crate::linux::nft::{NftProgram, failed, matching, payload, rule_deletion};

const FAMILY: &str = "inet";
const TABLE: &str = "cni_plugins_masquerade";
const TABLE_COMMENT: &str = "Masquerading for plugins from github.com/containernetworking/plugins";
const CHECKS: &str = "masq_checks";
const CHECKS_COMMENT: &str =
    "Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet";
const POSTROUTING: &str = "postrouting";

fn chain(name: &str) -> Value {
    json!({"family": FAMILY, "table": TABLE, "name": name})
}

fn rule(chain: &str, expr: Vec<Value>, comment: Option<&str>) -> Value {
    let mut rule = json!({"family": FAMILY, "table": TABLE, "chain": chain, "expr": expr});
    if let Some(comment) = comment {
        rule["comment"] = json!(comment);
    }
    json!({"add": {"rule": rule}})
}

/// Builds the ADD transaction: the table and chains, the rewritten
/// `postrouting`, the deletions of `stale` rules and one rule per address.
pub(super) fn add_commands(owner: &Owner, addresses: &[IpNet], stale: Vec<Value>) -> Vec<Value> {
    let mut checks = chain(CHECKS);
    checks["comment"] = json!(CHECKS_COMMENT);
    let mut postrouting = chain(POSTROUTING);
    for (key, value) in [
        ("type", json!("nat")),
        ("hook", json!("postrouting")),
        ("prio", json!(SRCNAT_PRIORITY)),
        ("policy", json!("accept")),
    ] {
        postrouting[key] = value;
    }

    let multicast = |family: &str, net: &str| {
        let daddr = payload(family, "daddr");
        let net: IpNet = net.parse().expect("a constant network");
        vec![matching(daddr, "==", prefix(net)), json!({"return": null})]
    };
    let mut commands = vec![
        json!({"add": {"table": {"family": FAMILY, "name": TABLE, "comment": TABLE_COMMENT}}}),
        json!({"add": {"chain": checks}}),
        json!({"add": {"chain": postrouting}}),
        json!({"flush": {"chain": chain(POSTROUTING)}}),
        rule(POSTROUTING, multicast("ip", "224.0.0.0/4"), None),
        rule(POSTROUTING, multicast("ip6", "ff00::/8"), None),
        rule(POSTROUTING, vec![json!({"goto": {"target": CHECKS}})], None),
    ];
    commands.extend(stale);

    let comment = owner.masquerade_rule_comment();
    for address in addresses {
        let family = match address {
            IpNet::V4(_) => "ip",
            IpNet::V6(_) => "ip6",
        };
        let expr = vec![
            matching(
                payload(family, "saddr"),
                "==",
                json!(address.addr().to_string()),
            ),
            matching(payload(family, "daddr"), "!=", prefix(address.trunc())),
            json!({"masquerade": null}),
        ];
        commands.push(rule(CHECKS, expr, Some(&comment)));
    }
    commands
}

/// Builds the deletions of the owner's rules in `listing`: those whose
/// comment starts with its hash, as the reference finds them.
pub(super) fn removals(owner: &Owner, listing: &Value) -> Result<Vec<Value>, String> {
    let hash = owner.masquerade_rule_hash();
    owned_rules(listing, CHECKS, |comment| comment.starts_with(&hash))?
        .into_iter()
        .map(rule_deletion)
        .collect()
}

pub(super) fn add(nft: &NftProgram, owner: &Owner, addresses: &[IpNet]) -> Result<(), KernelError> {
    let listed: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    let operation = format!(
        "add nftables masquerade for {} (comment {:?})",
        listed.join(", "),
        owner.masquerade_rule_hash()
    );
    let listing = nft.list_table(&operation, FAMILY, TABLE)?;
    let stale = removals(owner, &listing).map_err(|reason| failed(&operation, reason))?;
    nft.apply(&operation, add_commands(owner, addresses, stale))
}

pub(super) fn remove(nft: &NftProgram, owner: &Owner) -> Result<(), KernelError> {
    let operation = format!(
        "remove the nftables masquerade rules with comment {:?}",
        owner.masquerade_rule_hash()
    );
    let listing = nft.list_table(&operation, FAMILY, TABLE)?;
    let commands = removals(owner, &listing).map_err(|reason| failed(&operation, reason))?;

    if commands.is_empty() {
        return Ok(());
    }
    nft.apply(&operation, commands)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(id: &str) -> Owner {
        Owner {
            network: "unit-test".into(),
            container_id: id.into(),
            ifname: "eth0".into(),
        }
    }

    #[test]
    fn add_commands_rewrite_postrouting_and_add_per_address() {
        let addresses = [
            "192.168.1.2/24".parse().unwrap(),
            "2001:db8::2/64".parse().unwrap(),
        ];
        let stale = vec![json!({"delete": {"rule": {"handle": 4}}})];

        let commands = add_commands(&owner("two"), &addresses, stale.clone());

        assert_eq!(
            commands[3],
            json!({"flush": {"chain": chain("postrouting")}})
        );
        assert_eq!(
            commands[4]["add"]["rule"]["expr"][0]["match"]["right"],
            json!({"prefix": {"addr": "224.0.0.0", "len": 4}})
        );
        assert_eq!(
            commands[6]["add"]["rule"]["expr"],
            json!([{"goto": {"target": "masq_checks"}}])
        );
        assert_eq!(commands[7], stale[0], "stale rules go before the new ones");
        let v6 = &commands[9]["add"]["rule"];
        assert_eq!(v6["chain"], "masq_checks");
        assert_eq!(
            v6["expr"][1],
            json!({"match": {"op": "!=", "left": {"payload": {"protocol": "ip6", "field": "daddr"}},
                "right": {"prefix": {"addr": "2001:db8::", "len": 64}}}})
        );
        assert_eq!(
            v6["comment"],
            "6fd94d501e58f0aa-d750b2c8f0f25d5f, net: unit-test, if: eth0, id: two"
        );
    }

    #[test]
    fn removals_match_hash_prefix() {
        let listed = |handle: u64, comment: &str| {
            json!({"rule": {"family": "inet", "table": TABLE, "chain": CHECKS,
                "handle": handle, "comment": comment, "expr": []}})
        };
        let listing = json!({"nftables": [
            listed(1, "6fd94d501e58f0aa-287fc69eff0574a2, net: unit-test, if: eth0, id: one"),
            listed(2, "6fd94d501e58f0aa-e766de567ef6c543, net: unit-test, if: eth0, id: four"),
            listed(3, "6fd94d501e58f0aa-287fc69eff0574a2, truncated"),
        ]});

        let commands = removals(&owner("one"), &listing).unwrap();

        let handles: Vec<&Value> = commands
            .iter()
            .map(|c| &c["delete"]["rule"]["handle"])
            .collect();
        assert_eq!(handles, [1, 3]);
    }
}
