//! Port mappings and masquerade as nftables rules, applied with
//! `nft -j -f -` in the namespace of the calling thread, the host's. The
//! layouts are the reference plugins' nftables backends; see
//! [`crate::kernel::NftNat`].

mod masquerade;
mod portmap;

use ipnet::IpNet;
use serde_json::{Value, json};

use super::nft::{NftProgram, matching, payload};
use crate::kernel::{KernelError, NftMatch, NftNat, NftPortMapSpec, NftSelector, NftValue, Owner};

/// The feature that needs `nft`, named in the message when it is missing.
const PURPOSE: &str = "the nftables backends of portmap and of the bridge's ipMasq";

/// [`NftNat`] over the `nft` program.
#[derive(Debug, Clone)]
pub struct NftNatRules {
    nft: NftProgram,
}

impl Default for NftNatRules {
    fn default() -> Self {
        Self {
            nft: NftProgram::from_path(PURPOSE),
        }
    }
}

impl NftNatRules {
    /// Builds rules that run `program` in place of `nft`, looked up in
    /// `PATH` unless it contains a `/`.
    pub fn with_program(program: impl Into<String>) -> Self {
        Self {
            nft: NftProgram::new(program, PURPOSE),
        }
    }
}

impl NftNat for NftNatRules {
    fn add_port_mappings(
        &mut self,
        owner: &Owner,
        spec: &NftPortMapSpec,
    ) -> Result<(), KernelError> {
        portmap::add(&self.nft, owner, spec)
    }

    fn check_port_mappings(
        &mut self,
        owner: &Owner,
        spec: &NftPortMapSpec,
    ) -> Result<(), KernelError> {
        portmap::check(&self.nft, owner, spec)
    }

    fn remove_port_mappings(&mut self, owner: &Owner) -> Result<(), KernelError> {
        portmap::remove(&self.nft, owner)
    }

    fn add_masquerade(&mut self, owner: &Owner, addresses: &[IpNet]) -> Result<(), KernelError> {
        masquerade::add(&self.nft, owner, addresses)
    }

    fn remove_masquerade(&mut self, owner: &Owner) -> Result<(), KernelError> {
        masquerade::remove(&self.nft, owner)
    }
}

/// The nat base chain priorities of the reference: `dstnat` is -100 and
/// `srcnat` 100 in the ip, ip6 and inet families (nft(8), CHAINS).
const DSTNAT_PRIORITY: i32 = -100;
const SRCNAT_PRIORITY: i32 = 100;

/// Returns the JSON value of a network, `ADDR/LEN`, with the host bits
/// cleared as nft prints it.
fn prefix(net: IpNet) -> Value {
    json!({"prefix": {"addr": net.network().to_string(), "len": net.prefix_len()}})
}

/// Returns the match of one checked condition.
fn condition(condition: &NftMatch) -> Value {
    let left = match &condition.selector {
        NftSelector::Payload { protocol, field } => payload(protocol, field),
        NftSelector::Meta { key } => json!({"meta": {"key": key}}),
    };
    let right = match &condition.value {
        NftValue::Address(address) => json!(address.to_string()),
        NftValue::Prefix(net) => prefix(*net),
        NftValue::Number(number) => json!(number),
        NftValue::Range(first, last) => json!({"range": [first, last]}),
        NftValue::Name(name) => json!(name),
    };
    let op = match condition.negated {
        true => "!=",
        false => "==",
    };
    matching(left, op, right)
}

/// Returns the listed rules of `chain` in `listing` whose comment passes
/// `owned`.
fn owned_rules<'a>(
    listing: &'a Value,
    chain: &str,
    owned: impl Fn(&str) -> bool,
) -> Result<Vec<&'a Value>, String> {
    let rules = super::nft::listed_objects(listing)?
        .iter()
        .filter_map(|object| object.get("rule"))
        .filter(|rule| rule["chain"] == chain)
        .filter(|rule| rule["comment"].as_str().is_some_and(&owned))
        .collect();
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_become_matches() {
        let cases = [
            (
                NftMatch {
                    selector: NftSelector::Payload {
                        protocol: "ip",
                        field: "daddr",
                    },
                    negated: true,
                    value: NftValue::Prefix("10.96.0.7/12".parse().unwrap()),
                },
                json!({"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                    "right": {"prefix": {"addr": "10.96.0.0", "len": 12}}}}),
            ),
            (
                NftMatch {
                    selector: NftSelector::Meta { key: "iifname" },
                    negated: false,
                    value: NftValue::Name("eth*".into()),
                },
                json!({"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "eth*"}}),
            ),
            (
                NftMatch {
                    selector: NftSelector::Payload {
                        protocol: "th",
                        field: "sport",
                    },
                    negated: false,
                    value: NftValue::Range(1024, 65535),
                },
                json!({"match": {"op": "==", "left": {"payload": {"protocol": "th", "field": "sport"}},
                    "right": {"range": [1024, 65535]}}}),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(condition(&input), expected, "{input:?}");
        }
    }

    #[test]
    fn missing_program_named() {
        let mut rules = NftNatRules::with_program("/nonexistent/nft");
        let owner = Owner {
            network: "n".into(),
            container_id: "c".into(),
            ifname: "eth0".into(),
        };
        // A removal from a table that does not exist needs no nft process,
        // so the add is what must name the missing program. The program
        // does not exist, so the call changes nothing on this machine.
        let addresses = ["10.250.0.2/24".parse().unwrap()];
        let error = rules.add_masquerade(&owner, &addresses).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("install nftables"), "{message}");
        assert!(message.contains("portmap"), "{message}");
    }
}
