//! Address ranges and range sets, canonicalised with the reference defaults.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// A pool of addresses inside one subnet, `start` to `end` inclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub subnet: IpNet,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: IpAddr,
}

/// A range as written in the configuration, before defaults apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSpec {
    pub subnet: IpNet,
    pub start: Option<IpAddr>,
    pub end: Option<IpAddr>,
    pub gateway: Option<IpAddr>,
}

/// Ranges tried in order for one address of the result.
pub type RangeSet = Vec<Range>;

impl Range {
    /// Applies the defaults: gateway and start at network + 1, end at the
    /// last address (IPv6) or the one before the broadcast address (IPv4).
    /// Rejects subnets with fewer than 4 addresses and subnets with host bits,
    /// with the reference plugin's messages.
    pub fn canonicalize(spec: &RangeSpec) -> Result<Range, String> {
        let subnet = spec.subnet;
        if subnet.prefix_len() + 2 > subnet.max_prefix_len() {
            return Err(format!("Network {subnet} too small to allocate from"));
        }
        if subnet.addr() != subnet.network() {
            return Err(format!(
                "Network has host bits set. For a subnet mask of length {} the network address is {}",
                subnet.prefix_len(),
                subnet.network()
            ));
        }

        let first = next_ip(subnet.network());
        let gateway = spec.gateway.unwrap_or(first);
        let start = spec.start.unwrap_or(first);
        let end = spec.end.unwrap_or_else(|| last_usable(&subnet));
        for (key, address) in [("rangeStart", start), ("rangeEnd", end)] {
            if !subnet.contains(&address) {
                return Err(format!(
                    "{key} {address} not in network {subnet}: choose an address inside the subnet"
                ));
            }
        }
        if to_u128(start) > to_u128(end) {
            return Err(format!(
                "rangeStart {start} is after rangeEnd {end}: swap them or widen the range"
            ));
        }

        Ok(Range {
            subnet,
            start,
            end,
            gateway,
        })
    }

    /// Tells whether `address` lies between start and end of this range.
    pub fn contains(&self, address: IpAddr) -> bool {
        same_family(address, self.start)
            && to_u128(self.start) <= to_u128(address)
            && to_u128(address) <= to_u128(self.end)
    }

    fn overlaps(&self, other: &Range) -> bool {
        same_family(self.start, other.start)
            && (self.contains(other.start)
                || self.contains(other.end)
                || other.contains(self.start)
                || other.contains(self.end))
    }

    /// Formats as the reference does: `<start>-<end>`.
    pub fn describe(&self) -> String {
        format!("{}-{}", self.start, self.end)
    }
}

/// Checks one range set: non-empty, one address family, no overlaps.
pub fn validate_set(set: &RangeSet) -> Result<(), String> {
    let Some(first) = set.first() else {
        return Err("empty range set".to_string());
    };
    if set
        .iter()
        .any(|range| !same_family(range.start, first.start))
    {
        return Err("mixed address families".to_string());
    }
    for (i, a) in set.iter().enumerate() {
        for b in &set[i + 1..] {
            if a.overlaps(b) {
                return Err(format!(
                    "subnets {} and {} overlap",
                    a.describe(),
                    b.describe()
                ));
            }
        }
    }
    Ok(())
}

/// Checks that no two range sets overlap.
pub fn validate_sets(sets: &[RangeSet]) -> Result<(), String> {
    for (i, a) in sets.iter().enumerate() {
        for (j, b) in sets.iter().enumerate().skip(i + 1) {
            let overlap = a.iter().any(|ra| b.iter().any(|rb| ra.overlaps(rb)));
            if overlap {
                return Err(format!("range set {i} overlaps with {j}"));
            }
        }
    }
    Ok(())
}

/// Returns the range of `set` containing `address`.
pub fn range_for(set: &RangeSet, address: IpAddr) -> Option<(usize, &Range)> {
    set.iter()
        .enumerate()
        .find(|(_, range)| range.contains(address))
}

/// Formats a set as the reference does: ranges joined by commas.
pub fn describe_set(set: &RangeSet) -> String {
    let parts: Vec<String> = set.iter().map(Range::describe).collect();
    parts.join(",")
}

pub fn is_ipv6_set(set: &RangeSet) -> bool {
    set.first().is_some_and(|range| range.start.is_ipv6())
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

fn to_u128(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Returns the address after `address`, wrapping at the end of its family.
pub fn next_ip(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4).wrapping_add(1))),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6).wrapping_add(1))),
    }
}

fn last_usable(subnet: &IpNet) -> IpAddr {
    match subnet.broadcast() {
        IpAddr::V4(broadcast) => IpAddr::V4(Ipv4Addr::from(u32::from(broadcast) - 1)),
        last @ IpAddr::V6(_) => last,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(subnet: &str) -> RangeSpec {
        RangeSpec {
            subnet: subnet.parse().unwrap(),
            ..Default::default()
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn v4_defaults() {
        let range = Range::canonicalize(&spec("10.1.2.0/24")).unwrap();
        assert_eq!(range.start, ip("10.1.2.1"));
        assert_eq!(range.end, ip("10.1.2.254"));
        assert_eq!(range.gateway, ip("10.1.2.1"));
    }

    #[test]
    fn v6_end_is_last_address() {
        let range = Range::canonicalize(&spec("2001:db8:1::/64")).unwrap();
        assert_eq!(range.start, ip("2001:db8:1::1"));
        assert_eq!(range.end, ip("2001:db8:1::ffff:ffff:ffff:ffff"));
    }

    #[test]
    fn tiny_subnets_rejected() {
        for subnet in [
            "10.1.2.0/31",
            "10.1.2.0/32",
            "2001:db8::/127",
            "2001:db8::/128",
        ] {
            let error = Range::canonicalize(&spec(subnet)).unwrap_err();
            assert!(
                error.contains("too small to allocate from"),
                "{subnet}: {error}"
            );
        }
    }

    #[test]
    fn host_bits_rejected() {
        let error = Range::canonicalize(&spec("10.1.2.3/24")).unwrap_err();
        assert_eq!(
            error,
            "Network has host bits set. For a subnet mask of length 24 the network address is 10.1.2.0"
        );
    }

    #[test]
    fn start_outside_subnet_rejected() {
        let mut bad = spec("10.1.2.0/24");
        bad.start = Some(ip("10.1.3.5"));
        let error = Range::canonicalize(&bad).unwrap_err();
        assert!(error.starts_with("rangeStart 10.1.3.5 not in network 10.1.2.0/24"));
    }

    #[test]
    fn set_overlap_rejected() {
        let a = Range::canonicalize(&spec("10.1.0.0/16")).unwrap();
        let b = Range::canonicalize(&spec("10.1.2.0/24")).unwrap();
        let error = validate_set(&vec![a.clone(), b.clone()]).unwrap_err();
        assert!(error.starts_with("subnets 10.1.0.1-10.1.255.254 and"));
        assert_eq!(
            validate_sets(&[vec![a], vec![b]]).unwrap_err(),
            "range set 0 overlaps with 1"
        );
    }

    #[test]
    fn mixed_families_rejected() {
        let a = Range::canonicalize(&spec("10.1.2.0/24")).unwrap();
        let b = Range::canonicalize(&spec("2001:db8::/64")).unwrap();
        assert_eq!(
            validate_set(&vec![a, b]).unwrap_err(),
            "mixed address families"
        );
    }
}
