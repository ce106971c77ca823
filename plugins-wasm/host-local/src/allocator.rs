//! Round-robin allocation of one address from a range set.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::range::{Range, RangeSet, describe_set, next_ip, range_for};
use crate::store::{Owner, Store};

/// An allocated address with its subnet's prefix length and the range's
/// gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub address: IpNet,
    pub gateway: IpAddr,
}

/// Allocates addresses of one range set, whose position in the configuration
/// is `set_index` (it names the `last_reserved_ip` file).
pub struct Allocator<'a> {
    pub set: &'a RangeSet,
    pub set_index: usize,
    pub store: &'a Store,
}

impl Allocator<'_> {
    /// Reserves `requested`, or else the next free address after the one
    /// reserved last. Fails when the attachment already owns an address of
    /// this set, or when the set is exhausted.
    pub fn allocate(&self, owner: &Owner, requested: Option<IpAddr>) -> Result<Allocation, String> {
        if let Some(address) = requested {
            return self.allocate_requested(owner, address);
        }

        for owned in self.store.addresses_of(owner)? {
            if range_for(self.set, owned).is_some() {
                return Err(format!(
                    "{owned} has been allocated to {}, duplicate allocation is not allowed",
                    owner.container_id
                ));
            }
        }

        let mut candidates = Candidates::new(self.set, self.store.last_reserved(self.set_index));
        while let Some((address, range)) = candidates.next_candidate() {
            if self.store.reserve(address, owner, self.set_index)? {
                return Ok(allocation(address, range));
            }
        }
        Err(format!(
            "no IP addresses available in range set: {}",
            describe_set(self.set)
        ))
    }

    fn allocate_requested(&self, owner: &Owner, address: IpAddr) -> Result<Allocation, String> {
        let Some((_, range)) = range_for(self.set, address) else {
            return Err(format!(
                "{address} not in range set {}",
                describe_set(self.set)
            ));
        };
        if address == range.gateway {
            return Err(format!("requested ip {address} is subnet's gateway"));
        }

        if !self.store.reserve(address, owner, self.set_index)? {
            return Err(format!(
                "requested IP address {address} is not available in range set {}",
                describe_set(self.set)
            ));
        }
        Ok(allocation(address, range))
    }
}

fn allocation(address: IpAddr, range: &Range) -> Allocation {
    Allocation {
        address: IpNet::new(address, range.subnet.prefix_len())
            .expect("a range's prefix length fits its family"),
        gateway: range.gateway,
    }
}

/// Candidate addresses of a range set, each visited once. The walk starts
/// just after `last` when that lies in the set, else at the first range's
/// start. It skips gateways, and past a range's end it moves on to the next
/// range, wrapping to the first.
struct Candidates<'a> {
    set: &'a RangeSet,
    range_index: usize,
    current: Option<IpAddr>,
    /// The first address returned, with its range; reaching it again ends
    /// the walk.
    first: Option<(usize, IpAddr)>,
}

impl<'a> Candidates<'a> {
    fn new(set: &'a RangeSet, last: Option<IpAddr>) -> Self {
        match last.and_then(|address| range_for(set, address).map(|(i, _)| (i, address))) {
            Some((range_index, address)) => Self {
                set,
                range_index,
                current: Some(address),
                first: None,
            },
            None => Self {
                set,
                range_index: 0,
                current: None,
                first: None,
            },
        }
    }

    fn next_candidate(&mut self) -> Option<(IpAddr, &'a Range)> {
        loop {
            let address = self.step();

            match self.first {
                None => self.first = Some((self.range_index, address)),
                Some(first) if first == (self.range_index, address) => return None,
                Some(_) => {}
            }

            let range = &self.set[self.range_index];
            if address != range.gateway {
                return Some((address, range));
            }
        }
    }

    fn step(&mut self) -> IpAddr {
        let range = &self.set[self.range_index];
        let next = match self.current {
            None => range.start,
            Some(current) if current == range.end => {
                self.range_index = (self.range_index + 1) % self.set.len();
                self.set[self.range_index].start
            }
            Some(current) => next_ip(current),
        };
        self.current = Some(next);
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::range::RangeSpec;

    fn set(specs: &[(&str, Option<&str>, Option<&str>)]) -> RangeSet {
        specs
            .iter()
            .map(|(subnet, start, end)| {
                Range::canonicalize(&RangeSpec {
                    subnet: subnet.parse().unwrap(),
                    start: start.map(|s| s.parse().unwrap()),
                    end: end.map(|s| s.parse().unwrap()),
                    gateway: None,
                })
                .unwrap()
            })
            .collect()
    }

    fn owner(id: &str) -> Owner {
        Owner {
            container_id: id.into(),
            ifname: "eth0".into(),
        }
    }

    fn allocate(allocator: &Allocator, id: &str) -> Result<String, String> {
        allocator
            .allocate(&owner(id), None)
            .map(|allocation| allocation.address.to_string())
    }

    #[test]
    fn fresh_subnet_gives_2_3_4() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let ranges = set(&[("10.1.2.0/24", None, None)]);
        let allocator = Allocator {
            set: &ranges,
            set_index: 0,
            store: &store,
        };

        assert_eq!(allocate(&allocator, "a").as_deref(), Ok("10.1.2.2/24"));
        assert_eq!(allocate(&allocator, "b").as_deref(), Ok("10.1.2.3/24"));
        assert_eq!(allocate(&allocator, "c").as_deref(), Ok("10.1.2.4/24"));
    }

    #[test]
    fn allocation_reports_gateway() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let ranges = set(&[("10.1.2.0/24", None, None)]);
        let allocator = Allocator {
            set: &ranges,
            set_index: 0,
            store: &store,
        };

        let allocation = allocator.allocate(&owner("a"), None).unwrap();
        assert_eq!(allocation.gateway.to_string(), "10.1.2.1");
    }

    #[test]
    fn slash_29_exhausts_after_6() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let ranges = set(&[("192.168.1.0/29", None, None)]);
        let allocator = Allocator {
            set: &ranges,
            set_index: 0,
            store: &store,
        };

        let got: Vec<String> = (0..5)
            .map(|i| allocate(&allocator, &format!("c{i}")).unwrap())
            .collect();
        assert_eq!(
            got,
            [
                "192.168.1.2/29",
                "192.168.1.3/29",
                "192.168.1.4/29",
                "192.168.1.5/29",
                "192.168.1.6/29"
            ]
        );
        assert_eq!(
            allocate(&allocator, "c5"),
            Err("no IP addresses available in range set: 192.168.1.1-192.168.1.6".into())
        );
    }

    #[test]
    fn released_address_not_reused_until_wrap() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let ranges = set(&[("192.168.1.0/29", None, None)]);
        let allocator = Allocator {
            set: &ranges,
            set_index: 0,
            store: &store,
        };

        assert_eq!(allocate(&allocator, "a").as_deref(), Ok("192.168.1.2/29"));
        store.release(&owner("a")).unwrap();
        assert_eq!(allocate(&allocator, "b").as_deref(), Ok("192.168.1.3/29"));
        for id in ["c", "d", "e"] {
            allocate(&allocator, id).unwrap();
        }
        assert_eq!(allocate(&allocator, "f").as_deref(), Ok("192.168.1.2/29"));
    }

    #[test]
    fn resumes_after_last_reserved() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("last_reserved_ip.0"), "192.168.1.4").unwrap();
        let store = Store::new(dir.path());
        let ranges = set(&[("192.168.1.0/29", None, None)]);
        let allocator = Allocator {
            set: &ranges,
            set_index: 0,
            store: &store,
        };

        assert_eq!(allocate(&allocator, "a").as_deref(), Ok("192.168.1.5/29"));
    }

    #[test]
    fn last_reserved_outside_set_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("last_reserved_ip.0"), "10.9.9.9").unwrap();
        let store = Store::new(dir.path());
        let ranges = set(&[("192.168.1.0/29", None, None)]);
        let allocator = Allocator {
            set: &ranges,
            set_index: 0,
            store: &store,
        };

        assert_eq!(allocate(&allocator, "a").as_deref(), Ok("192.168.1.2/29"));
    }

    #[test]
    fn last_reserved_at_end_wraps() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("last_reserved_ip.0"), "192.168.1.6").unwrap();
        let store = Store::new(dir.path());
        let ranges = set(&[("192.168.1.0/29", None, None)]);
        let allocator = Allocator {
            set: &ranges,
            set_index: 0,
            store: &store,
        };

        assert_eq!(allocate(&allocator, "a").as_deref(), Ok("192.168.1.2/29"));
    }

    #[test]
    fn advances_to_next_range() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let ranges = set(&[
            ("192.168.1.0/24", Some("192.168.1.10"), Some("192.168.1.11")),
            ("192.168.2.0/24", None, None),
        ]);
        let allocator = Allocator {
            set: &ranges,
            set_index: 0,
            store: &store,
        };

        let got: Vec<String> = (0..3)
            .map(|i| allocate(&allocator, &format!("c{i}")).unwrap())
            .collect();
        assert_eq!(
            got,
            ["192.168.1.10/24", "192.168.1.11/24", "192.168.2.2/24"]
        );
    }

    #[test]
    fn multi_range_exhaustion_terminates() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let ranges = set(&[
            ("192.168.1.0/24", Some("192.168.1.10"), Some("192.168.1.11")),
            ("192.168.2.0/24", Some("192.168.2.10"), Some("192.168.2.10")),
        ]);
        let allocator = Allocator {
            set: &ranges,
            set_index: 0,
            store: &store,
        };
        for id in ["a", "b", "c"] {
            allocate(&allocator, id).unwrap();
        }
        store.release(&owner("a")).unwrap();
        std::fs::write(dir.path().join("last_reserved_ip.0"), "192.168.1.11").unwrap();

        assert_eq!(allocate(&allocator, "d").as_deref(), Ok("192.168.1.10/24"));
        assert_eq!(
            allocate(&allocator, "e"),
            Err("no IP addresses available in range set: 192.168.1.10-192.168.1.11,192.168.2.10-192.168.2.10".into())
        );
    }

    #[test]
    fn gateway_inside_range_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let mut ranges = set(&[("10.1.2.0/24", Some("10.1.2.10"), Some("10.1.2.12"))]);
        ranges[0].gateway = "10.1.2.11".parse().unwrap();
        let allocator = Allocator {
            set: &ranges,
            set_index: 0,
            store: &store,
        };

        assert_eq!(allocate(&allocator, "a").as_deref(), Ok("10.1.2.10/24"));
        assert_eq!(allocate(&allocator, "b").as_deref(), Ok("10.1.2.12/24"));
        assert!(allocate(&allocator, "c").is_err());
    }

    #[test]
    fn duplicate_allocation_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let ranges = set(&[("10.1.2.0/24", None, None)]);
        let allocator = Allocator {
            set: &ranges,
            set_index: 0,
            store: &store,
        };

        allocate(&allocator, "a").unwrap();
        assert_eq!(
            allocate(&allocator, "a"),
            Err("10.1.2.2 has been allocated to a, duplicate allocation is not allowed".into())
        );
    }

    #[test]
    fn requested_address_reserved() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let ranges = set(&[("192.168.1.0/29", None, None)]);
        let allocator = Allocator {
            set: &ranges,
            set_index: 0,
            store: &store,
        };
        let requested = Some("192.168.1.5".parse().unwrap());

        let first = allocator.allocate(&owner("a"), requested).unwrap();
        assert_eq!(first.address.to_string(), "192.168.1.5/29");
        assert_eq!(
            allocator.allocate(&owner("b"), requested),
            Err("requested IP address 192.168.1.5 is not available in range set 192.168.1.1-192.168.1.6".into())
        );
    }

    #[test]
    fn requested_gateway_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let ranges = set(&[("192.168.1.0/29", None, None)]);
        let allocator = Allocator {
            set: &ranges,
            set_index: 0,
            store: &store,
        };

        let error = allocator
            .allocate(&owner("a"), Some("192.168.1.1".parse().unwrap()))
            .unwrap_err();
        assert_eq!(error, "requested ip 192.168.1.1 is subnet's gateway");
    }

    #[test]
    fn v6_allocation_starts_at_2() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let ranges = set(&[("2001:db8:1::/64", None, None)]);
        let allocator = Allocator {
            set: &ranges,
            set_index: 1,
            store: &store,
        };

        assert_eq!(allocate(&allocator, "a").as_deref(), Ok("2001:db8:1::2/64"));
        let last = std::fs::read_to_string(dir.path().join("last_reserved_ip.1")).unwrap();
        assert_eq!(last, "2001:db8:1::2");
    }
}
