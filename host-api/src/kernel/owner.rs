use sha2::{Digest, Sha512};

/// The attachment that owns the links and rules a plugin creates. The host
/// computes it from the invocation; a plugin cannot choose it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
}

impl Owner {
    /// `prefix` followed by the hex SHA-512 of network name and container id
    /// concatenated, cut to `length` characters, as the reference plugins
    /// name their per-container chains.
    fn hashed_name(&self, prefix: &str, length: usize) -> String {
        let digest = Sha512::digest(format!("{}{}", self.network, self.container_id));
        let mut name = format!("{prefix}{}", hex::encode(digest));
        name.truncate(length);
        name
    }

    /// The masquerade chain: `CNI-` and 24 hex digits.
    pub fn masquerade_chain(&self) -> String {
        self.hashed_name("CNI-", 28)
    }

    /// The port-mapping DNAT chain: `CNI-DN-` and 21 hex digits.
    pub fn dnat_chain(&self) -> String {
        self.hashed_name("CNI-DN-", 28)
    }

    /// The rule comment of the reference plugins: `name: "<net>" id: "<id>"`.
    pub fn comment(&self) -> String {
        format!("name: {:?} id: {:?}", self.network, self.container_id)
    }

    /// Returns the id of the attachment's MAC spoof check,
    /// `<container id>-<ifname>`, as the reference bridge plugin (v1.1.1)
    /// forms it. The chain names and the rule comment contain it as is,
    /// without a hash and without the network name.
    pub fn spoof_check_id(&self) -> String {
        format!("{}-{}", self.container_id, self.ifname)
    }

    /// Returns the hash that starts the comment of each of the owner's
    /// nftables masquerade rules: 16 hex digits of the SHA-512 of the
    /// network name, `-`, and 16 of `<ifname>:<container id>`, as the
    /// reference's `hashForInstance` forms it.
    pub fn masquerade_rule_hash(&self) -> String {
        let instance = format!("{}:{}", self.ifname, self.container_id);
        format!("{}-{}", short_hash(&self.network), short_hash(&instance))
    }

    /// Returns the comment of the owner's nftables masquerade rules: the
    /// hash, then network, ifname and container id without double quotes,
    /// cut to 128 bytes, the longest comment the reference writes.
    pub fn masquerade_rule_comment(&self) -> String {
        let plain = |text: &str| text.replace('"', "");
        let mut comment = format!(
            "{}, net: {}, if: {}, id: {}",
            self.masquerade_rule_hash(),
            plain(&self.network),
            plain(&self.ifname),
            plain(&self.container_id)
        );
        let mut end = comment.len().min(MAX_RULE_COMMENT);
        while !comment.is_char_boundary(end) {
            end -= 1;
        }
        comment.truncate(end);
        comment
    }
}

/// The maximum length of a rule comment the reference plugins write, in
/// bytes (knftables' `CommentLengthMax`).
const MAX_RULE_COMMENT: usize = 128;

/// Returns the first 16 hex digits of the SHA-512 of `text`.
fn short_hash(text: &str) -> String {
    let mut hash = hex::encode(Sha512::digest(text));
    hash.truncate(16);
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(network: &str, container_id: &str) -> Owner {
        Owner {
            network: network.into(),
            container_id: container_id.into(),
            ifname: "eth0".into(),
        }
    }

    #[test]
    fn chain_names_match_reference_vectors() {
        let owner = owner("mynet", "abc");
        assert_eq!(owner.dnat_chain(), "CNI-DN-e88f49d94512ff752ebe6");
        assert_eq!(owner.masquerade_chain(), "CNI-e88f49d94512ff752ebe6070");
    }

    #[test]
    fn seed_chain_names_match_reference() {
        let owner = owner("mynet", "cnitool-3b469ed4466ecfd8f00d");
        assert_eq!(owner.dnat_chain(), "CNI-DN-b232a5a313c3780addde4");
        assert_eq!(owner.masquerade_chain(), "CNI-b232a5a313c3780addde4038");
    }

    #[test]
    fn spoof_check_id_joins_id_and_ifname() {
        assert_eq!(owner("mynet", "abc").spoof_check_id(), "abc-eth0");
    }

    /// Vectors from the reference's `ipmasq_nftables_linux_test.go`.
    #[test]
    fn masquerade_comment_matches_reference() {
        let owner = |network: &str, ifname: &str, id: &str| Owner {
            network: network.into(),
            container_id: id.into(),
            ifname: ifname.into(),
        };
        assert_eq!(
            owner("unit-test", "eth0", "one").masquerade_rule_comment(),
            "6fd94d501e58f0aa-287fc69eff0574a2, net: unit-test, if: eth0, id: one"
        );
        assert_eq!(
            owner("alternate", "net1", "three").masquerade_rule_hash(),
            "82783ef24bdc7036-acb19d111858e348"
        );
        let long = owner("n\"et", "eth0", &"x".repeat(200)).masquerade_rule_comment();
        assert_eq!(long.len(), 128);
        assert!(long.contains("net: net, if"), "{long}");
    }

    #[test]
    fn comment_quotes_like_go() {
        assert_eq!(
            owner("mynet", "abc").comment(),
            r#"name: "mynet" id: "abc""#
        );
    }
}
