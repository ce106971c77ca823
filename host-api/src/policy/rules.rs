//! The rule sections of a plugin's policy and how each request is matched.

use std::net::IpAddr;

use glob::{MatchOptions, Pattern};
use ipnet::IpNet;

use super::{
    Decision, Mode, PluginPolicy, PolicyError, PortRange, RawFilterRules, RawLinkRules,
    RawMasqueradeRules, RawPortRules, RawRange, RawResolvConfRules, RawSubnetRules, RawSysctlRules,
    Request, Side, field_error,
};

#[derive(Debug, Clone, PartialEq)]
pub struct LinkRules {
    pub mode: Mode,
    /// Name patterns for links in the container namespace.
    pub container_names: Vec<Pattern>,
    /// Name patterns for host links the plugin changes or puts addresses and
    /// routes on; `None` leaves them to the ownership rules alone.
    pub host_names: Option<Vec<Pattern>>,
    /// Name patterns for bridges the plugin may create or attach to.
    pub bridges: Vec<Pattern>,
    /// Inclusive MTU range in bytes.
    pub mtu: Option<(u32, u32)>,
    /// Inclusive transmit queue length range in packets.
    pub tx_queue_len: Option<(u32, u32)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SubnetRules {
    pub mode: Mode,
    pub container: Vec<IpNet>,
    pub host: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SysctlRules {
    pub mode: Mode,
    /// Key patterns in slash form, such as `net/ipv4/conf/*/arp_notify`.
    pub container: Vec<Pattern>,
    pub host: Vec<Pattern>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PortRules {
    pub mode: Mode,
    pub host_ports: Vec<PortRange>,
    /// Host addresses a mapping may match; `0.0.0.0` or `::` allows mappings
    /// on every local address.
    pub host_ips: Vec<IpAddr>,
    pub protocols: Vec<String>,
    /// Name patterns of external chains the mappings may jump to for
    /// marking, such as `KUBE-MARK-MASQ`.
    pub mark_chains: Vec<Pattern>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MasqueradeRules {
    pub mode: Mode,
    pub sources: Vec<IpNet>,
}

/// The `filter` section: forwarding rules of the firewall plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterRules {
    pub mode: Mode,
    /// Subnets the addresses with accept rules must fall in.
    pub addresses: Vec<IpNet>,
    /// Name patterns of admin chains `CNI-FORWARD` may jump to.
    pub admin_chains: Vec<Pattern>,
}

/// The files `dns.read-resolv-conf` may read under an entry without a
/// `resolvConf` section: the node's own resolver configuration, which glibc
/// reads from `/etc/resolv.conf` and systemd-resolved writes under
/// `/run/systemd/resolve` (`resolv.conf`, `stub-resolv.conf`). Anything
/// else, such as a per-network file, must be listed in the policy.
pub const DEFAULT_RESOLV_CONF_PATHS: &[&str] = &["/etc/resolv.conf", "/run/systemd/resolve/*"];

/// The `resolvConf` section: files a plugin may have the host read.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvConfRules {
    pub mode: Mode,
    /// Absolute path patterns; `*` does not match `/`.
    pub paths: Vec<Pattern>,
}

fn patterns(
    values: Vec<String>,
    field: &str,
    normalize: fn(&str) -> String,
) -> Result<Vec<Pattern>, PolicyError> {
    values
        .iter()
        .enumerate()
        .map(|(index, value)| {
            Pattern::new(&normalize(value)).map_err(|error| {
                field_error(
                    &format!("{field}[{index}]"),
                    format!("invalid pattern {value:?}: {error}"),
                )
            })
        })
        .collect()
}

fn subnets(values: Vec<String>, field: &str) -> Result<Vec<IpNet>, PolicyError> {
    values
        .iter()
        .enumerate()
        .map(|(index, value)| {
            value.parse::<IpNet>().map_err(|_| {
                field_error(
                    &format!("{field}[{index}]"),
                    format!("invalid subnet {value:?}: expected CIDR such as 10.244.0.0/16"),
                )
            })
        })
        .collect()
}

/// Validates an inclusive `{"min", "max"}` range.
fn range(raw: Option<RawRange>, field: &str) -> Result<Option<(u32, u32)>, PolicyError> {
    match raw {
        Some(range) if range.min > range.max => Err(field_error(field, "min is above max")),
        Some(range) => Ok(Some((range.min, range.max))),
        None => Ok(None),
    }
}

/// Converts a dot-form sysctl key to slash form; slash-form keys pass unchanged.
pub fn sysctl_slash_form(key: &str) -> String {
    if key.contains('/') {
        key.to_string()
    } else {
        key.replace('.', "/")
    }
}

impl LinkRules {
    pub(super) fn validate(
        raw: RawLinkRules,
        mode: Mode,
        field: &str,
    ) -> Result<Self, PolicyError> {
        let mtu = range(raw.mtu, &format!("{field}.mtu"))?;
        let tx_queue_len = range(raw.tx_queue_len, &format!("{field}.txQueueLen"))?;
        Ok(Self {
            mode: raw.mode.unwrap_or(mode),
            container_names: patterns(
                raw.container_names,
                &format!("{field}.containerNames"),
                str::to_string,
            )?,
            host_names: raw
                .host_names
                .map(|names| patterns(names, &format!("{field}.hostNames"), str::to_string))
                .transpose()?,
            bridges: patterns(raw.bridges, &format!("{field}.bridges"), str::to_string)?,
            mtu,
            tx_queue_len,
        })
    }

    fn check_mtu(&self, mtu: Option<u32>) -> Option<Decision> {
        self.check_range(self.mtu, mtu, "links.mtu", "MTU")
    }

    fn check_tx_queue_len(&self, length: Option<u32>) -> Option<Decision> {
        let quantity = "transmit queue length";
        self.check_range(self.tx_queue_len, length, "links.txQueueLen", quantity)
    }

    fn check_range(
        &self,
        allowed: Option<(u32, u32)>,
        value: Option<u32>,
        rule: &str,
        quantity: &str,
    ) -> Option<Decision> {
        let (min, max) = allowed?;
        let value = value?;
        (!(min..=max).contains(&value)).then(|| {
            Decision::violation(
                self.mode,
                rule,
                format!("{quantity} {value} is outside the allowed range {min}-{max}"),
            )
        })
    }

    fn check_host_name(&self, name: &str) -> Option<Decision> {
        self.host_names
            .as_ref()
            .and_then(|patterns| self.check_name(patterns, "links.hostNames", name))
    }

    fn check_name(&self, patterns: &[Pattern], rule: &str, name: &str) -> Option<Decision> {
        (!patterns.iter().any(|pattern| pattern.matches(name))).then(|| {
            Decision::violation(
                self.mode,
                rule,
                format!("link name {name:?} matches no allowed pattern"),
            )
        })
    }
}

impl SubnetRules {
    pub(super) fn validate(
        raw: RawSubnetRules,
        mode: Mode,
        field: &str,
    ) -> Result<Self, PolicyError> {
        Ok(Self {
            mode: raw.mode.unwrap_or(mode),
            container: subnets(raw.container, &format!("{field}.container"))?,
            host: subnets(raw.host, &format!("{field}.host"))?,
        })
    }

    fn check(&self, section: &str, side: Side, network: IpNet) -> Option<Decision> {
        let (allowed, side_name) = match side {
            Side::Container => (&self.container, "container"),
            Side::Host => (&self.host, "host"),
        };
        (!allowed.iter().any(|subnet| subnet.contains(&network))).then(|| {
            Decision::violation(
                self.mode,
                &format!("{section}.{side_name}"),
                format!("{network} is outside the allowed {side_name} subnets"),
            )
        })
    }
}

impl SysctlRules {
    pub(super) fn validate(
        raw: RawSysctlRules,
        mode: Mode,
        field: &str,
    ) -> Result<Self, PolicyError> {
        Ok(Self {
            mode: raw.mode.unwrap_or(mode),
            container: patterns(
                raw.container,
                &format!("{field}.container"),
                sysctl_slash_form,
            )?,
            host: patterns(raw.host, &format!("{field}.host"), sysctl_slash_form)?,
        })
    }
}

impl PortRules {
    pub(super) fn validate(
        raw: RawPortRules,
        mode: Mode,
        field: &str,
    ) -> Result<Self, PolicyError> {
        let host_ports = raw
            .host_ports
            .iter()
            .enumerate()
            .map(|(index, text)| {
                PortRange::parse(text)
                    .map_err(|reason| field_error(&format!("{field}.hostPorts[{index}]"), reason))
            })
            .collect::<Result<_, _>>()?;
        let host_ips = raw
            .host_ips
            .iter()
            .enumerate()
            .map(|(index, text)| {
                text.parse::<IpAddr>().map_err(|_| {
                    field_error(
                        &format!("{field}.hostIPs[{index}]"),
                        format!("invalid IP address {text:?}"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        for (index, protocol) in raw.protocols.iter().enumerate() {
            if !["tcp", "udp", "sctp"].contains(&protocol.as_str()) {
                return Err(field_error(
                    &format!("{field}.protocols[{index}]"),
                    format!("{protocol:?} is not tcp, udp or sctp"),
                ));
            }
        }
        Ok(Self {
            mode: raw.mode.unwrap_or(mode),
            host_ports,
            host_ips,
            protocols: raw.protocols,
            mark_chains: patterns(
                raw.mark_chains,
                &format!("{field}.markChains"),
                str::to_string,
            )?,
        })
    }

    fn check(&self, host_port: u16, host_ip: Option<IpAddr>, protocol: &str) -> Option<Decision> {
        if !self
            .host_ports
            .iter()
            .any(|range| range.contains(host_port))
        {
            let reason = format!("host port {host_port} is outside the allowed host ports");
            return Some(Decision::violation(
                self.mode,
                "portMappings.hostPorts",
                reason,
            ));
        }
        let ip_allowed = match host_ip {
            Some(ip) => self.host_ips.contains(&ip),
            None => self.host_ips.iter().any(IpAddr::is_unspecified),
        };
        if !ip_allowed {
            let shown = host_ip.map_or("any local address".to_string(), |ip| ip.to_string());
            return Some(Decision::violation(
                self.mode,
                "portMappings.hostIPs",
                format!("host IP {shown} is not allowed"),
            ));
        }
        (!self.protocols.iter().any(|allowed| allowed == protocol)).then(|| {
            Decision::violation(
                self.mode,
                "portMappings.protocols",
                format!("protocol {protocol} is not allowed"),
            )
        })
    }
}

impl PortRules {
    fn check_mark_chain(&self, name: &str) -> Option<Decision> {
        let allowed = self.mark_chains.iter().any(|pattern| pattern.matches(name));
        (!allowed).then(|| {
            Decision::violation(
                self.mode,
                "portMappings.markChains",
                format!("mark chain {name:?} matches no allowed pattern"),
            )
        })
    }
}

impl MasqueradeRules {
    pub(super) fn validate(
        raw: RawMasqueradeRules,
        mode: Mode,
        field: &str,
    ) -> Result<Self, PolicyError> {
        Ok(Self {
            mode: raw.mode.unwrap_or(mode),
            sources: subnets(raw.sources, &format!("{field}.sources"))?,
        })
    }
}

impl FilterRules {
    pub(super) fn validate(
        raw: RawFilterRules,
        mode: Mode,
        field: &str,
    ) -> Result<Self, PolicyError> {
        Ok(Self {
            mode: raw.mode.unwrap_or(mode),
            addresses: subnets(raw.addresses, &format!("{field}.addresses"))?,
            admin_chains: patterns(
                raw.admin_chains,
                &format!("{field}.adminChains"),
                str::to_string,
            )?,
        })
    }

    fn check_address(&self, address: IpAddr) -> Option<Decision> {
        let allowed = self
            .addresses
            .iter()
            .any(|subnet| subnet.contains(&address));
        (!allowed).then(|| {
            Decision::violation(
                self.mode,
                "filter.addresses",
                format!("address {address} is outside the allowed subnets"),
            )
        })
    }

    fn check_admin_chain(&self, name: &str) -> Option<Decision> {
        let allowed = self
            .admin_chains
            .iter()
            .any(|pattern| pattern.matches(name));
        (!allowed).then(|| {
            Decision::violation(
                self.mode,
                "filter.adminChains",
                format!("admin chain {name:?} matches no allowed pattern"),
            )
        })
    }
}

impl ResolvConfRules {
    pub(super) fn validate(
        raw: RawResolvConfRules,
        mode: Mode,
        field: &str,
    ) -> Result<Self, PolicyError> {
        let field = format!("{field}.paths");
        if let Some(index) = raw.paths.iter().position(|path| !path.starts_with('/')) {
            return Err(field_error(
                &format!("{field}[{index}]"),
                format!(
                    "{:?} is not an absolute path: start it with /",
                    raw.paths[index]
                ),
            ));
        }
        Ok(Self {
            mode: raw.mode.unwrap_or(mode),
            paths: patterns(raw.paths, &field, str::to_string)?,
        })
    }

    /// Builds the rules of an entry without a `resolvConf` section.
    pub fn defaults(mode: Mode) -> Self {
        let paths = DEFAULT_RESOLV_CONF_PATHS
            .iter()
            .map(|path| Pattern::new(path).expect("the default patterns are valid"))
            .collect();
        Self { mode, paths }
    }

    /// Checks the named path and, when it exists, the file it leads to, so
    /// an allowed name cannot be a link to a file the policy does not allow.
    fn check(&self, path: &str, target: Option<&str>) -> Option<Decision> {
        let options = MatchOptions {
            require_literal_separator: true,
            ..MatchOptions::new()
        };
        let allowed = |file: &str| {
            self.paths
                .iter()
                .any(|pattern| pattern.matches_with(file, options))
        };

        let reason = if !allowed(path) {
            format!("resolv.conf path {path:?} matches no allowed pattern")
        } else {
            let target = target.filter(|target| !allowed(target))?;
            format!(
                "resolv.conf path {path:?} leads to {target:?}, which matches no allowed pattern"
            )
        };
        Some(Decision::violation(self.mode, "resolvConf.paths", reason))
    }
}

/// Matches a request against the section it belongs to; an absent section
/// allows it, except `resolvConf`, whose absence allows only the defaults.
pub(super) fn check(policy: &PluginPolicy, request: &Request<'_>) -> Decision {
    let violation = match request {
        Request::EnsureBridge { name, mtu } => policy.links.as_ref().and_then(|rules| {
            rules
                .check_name(&rules.bridges, "links.bridges", name)
                .or_else(|| rules.check_mtu(*mtu))
        }),
        Request::VlanGateway { bridge, link, mtu } => policy.links.as_ref().and_then(|rules| {
            rules
                .check_name(&rules.bridges, "links.bridges", bridge)
                .or_else(|| rules.check_host_name(link))
                .or_else(|| rules.check_mtu(*mtu))
        }),
        Request::CreateVeth {
            container_name,
            mtu,
        } => policy.links.as_ref().and_then(|rules| {
            rules
                .check_name(
                    &rules.container_names,
                    "links.containerNames",
                    container_name,
                )
                .or_else(|| rules.check_mtu(*mtu))
        }),
        Request::ConfigureLink {
            side,
            name,
            mtu,
            tx_queue_len,
        } => policy.links.as_ref().and_then(|rules| {
            let name_violation = match side {
                Side::Container => {
                    rules.check_name(&rules.container_names, "links.containerNames", name)
                }
                Side::Host => rules.check_host_name(name),
            };
            name_violation
                .or_else(|| rules.check_mtu(*mtu))
                .or_else(|| rules.check_tx_queue_len(*tx_queue_len))
        }),
        Request::PortVlans { name } | Request::SpoofCheck { link: name } => policy
            .links
            .as_ref()
            .and_then(|rules| rules.check_host_name(name)),
        Request::DeleteLink {
            side: Side::Container,
            name,
        } => policy.links.as_ref().and_then(|rules| {
            rules.check_name(&rules.container_names, "links.containerNames", name)
        }),
        Request::Address {
            side,
            link,
            address,
        } => {
            let host_name = match side {
                Side::Host => policy
                    .links
                    .as_ref()
                    .and_then(|rules| rules.check_host_name(link)),
                Side::Container => None,
            };
            host_name.or_else(|| {
                policy
                    .addresses
                    .as_ref()
                    .and_then(|rules| rules.check("addresses", *side, *address))
            })
        }
        Request::Route { side, dst } => policy
            .routes
            .as_ref()
            .and_then(|rules| rules.check("routes", *side, *dst)),
        Request::Sysctl {
            side,
            key,
            write: true,
        } => policy.sysctls.as_ref().and_then(|rules| {
            let (allowed, side_name) = match side {
                Side::Container => (&rules.container, "container"),
                Side::Host => (&rules.host, "host"),
            };
            (!allowed.iter().any(|pattern| pattern.matches(key))).then(|| {
                Decision::violation(
                    rules.mode,
                    &format!("sysctls.{side_name}"),
                    format!("sysctl {key} is not allowed"),
                )
            })
        }),
        Request::PortMapping {
            host_port,
            host_ip,
            protocol,
        }
        | Request::NftPortMapping {
            host_port,
            host_ip,
            protocol,
        } => policy
            .port_mappings
            .as_ref()
            .and_then(|rules| rules.check(*host_port, *host_ip, protocol)),
        Request::Masquerade {
            source: Some(source),
        }
        | Request::NftMasquerade { source } => policy.masquerade.as_ref().and_then(|rules| {
            (!rules.sources.iter().any(|subnet| subnet.contains(source))).then(|| {
                Decision::violation(
                    rules.mode,
                    "masquerade.sources",
                    format!("source {source} is outside the allowed subnets"),
                )
            })
        }),
        Request::MarkChain { name } => policy
            .port_mappings
            .as_ref()
            .and_then(|rules| rules.check_mark_chain(name)),
        Request::ForwardAddress { address } => policy
            .filter
            .as_ref()
            .and_then(|rules| rules.check_address(*address)),
        Request::AdminChain { name } => policy
            .filter
            .as_ref()
            .and_then(|rules| rules.check_admin_chain(name)),
        Request::ResolvConf { path, target } => match &policy.resolv_conf {
            Some(rules) => rules.check(path, *target),
            None => ResolvConfRules::defaults(policy.mode).check(path, *target),
        },
        _ => None,
    };
    violation.unwrap_or_else(|| Decision::allow(request.interface()))
}
