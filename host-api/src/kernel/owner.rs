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

    #[test]
    fn comment_quotes_like_go() {
        assert_eq!(
            owner("mynet", "abc").comment(),
            r#"name: "mynet" id: "abc""#
        );
    }
}
