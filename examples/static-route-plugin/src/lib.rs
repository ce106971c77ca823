//! static-route: a chained cniwasm plugin that adds static routes through the
//! container interface (`CNI_IFNAME`) and sets sysctls in the container
//! namespace. It is an example of a third-party plugin built only on the
//! cniwasm SDK.

mod config;

use cniwasm_plugin_sdk::cniwasm_types::{self, Route};
use cniwasm_plugin_sdk::route::{self, RouteSpec};
use cniwasm_plugin_sdk::{
    AddOutput, CniError, HostError, HostResultExt, Invocation, Netns, Plugin, PluginConfig, codes,
    sysctl,
};

pub use config::{StaticRoute, StaticRouteConfig, SysctlSetting};

/// The static-route plugin.
pub struct StaticRoutePlugin;

impl Plugin for StaticRoutePlugin {
    fn add(inv: &Invocation, config: &PluginConfig) -> Result<AddOutput, CniError> {
        let prev = config.prev_result.as_ref().ok_or_else(not_chained)?;
        let options = StaticRouteConfig::parse(config)?;

        for static_route in &options.routes {
            route::add(Netns::Container, &route_spec(static_route, &inv.ifname)).context(
                &format!(
                    "failed to add route {}",
                    describe(static_route, &inv.ifname)
                ),
            )?;
        }
        for setting in &options.sysctls {
            sysctl::set(Netns::Container, &setting.key, &setting.value).context(&format!(
                "failed to set sysctl {} to {:?} in the container",
                setting.key, setting.value
            ))?;
        }

        Ok(AddOutput::Result(with_routes(prev, &options.routes)))
    }

    fn del(inv: &Invocation, config: &PluginConfig) -> Result<(), CniError> {
        // The routes and sysctls live in the container namespace, so they
        // are gone with it.
        if inv.netns.is_none() {
            return Ok(());
        }
        let options = StaticRouteConfig::parse(config)?;

        // NOTE: sysctls keep their values until the container namespace is
        // removed, because the plugin does not record the old ones.
        for static_route in &options.routes {
            match route::del(Netns::Container, &route_spec(static_route, &inv.ifname)) {
                // NotFound covers an absent route, interface or namespace.
                Ok(()) | Err(HostError::NotFound(_)) => {}
                Err(error) => {
                    return Err(error).context(&format!(
                        "failed to delete route {}",
                        describe(static_route, &inv.ifname)
                    ));
                }
            }
        }
        Ok(())
    }

    fn check(inv: &Invocation, config: &PluginConfig) -> Result<(), CniError> {
        config.prev_result.as_ref().ok_or_else(not_chained)?;
        let options = StaticRouteConfig::parse(config)?;

        let present = route::list(Netns::Container, &inv.ifname).context(&format!(
            "failed to list the routes of {:?} in the container",
            inv.ifname
        ))?;
        for static_route in &options.routes {
            if !present.iter().any(|spec| route_matches(spec, static_route)) {
                return Err(CniError::new(
                    codes::INTERNAL,
                    format!(
                        "route {} not found in the container",
                        describe(static_route, &inv.ifname)
                    ),
                ));
            }
        }

        for setting in &options.sysctls {
            let actual = sysctl::get(Netns::Container, &setting.key).context(&format!(
                "failed to read sysctl {} in the container",
                setting.key
            ))?;
            if !same_sysctl_value(&actual, &setting.value) {
                return Err(CniError::new(
                    codes::INTERNAL,
                    format!(
                        "sysctl {} in the container is {:?}, expected {:?}",
                        setting.key,
                        actual.trim(),
                        setting.value
                    ),
                ));
            }
        }
        Ok(())
    }
}

cniwasm_plugin_sdk::export_plugin!(StaticRoutePlugin);

fn not_chained() -> CniError {
    CniError::new(
        codes::INVALID_NETWORK_CONFIG,
        "static-route must be called as a chained plugin: prevResult is missing",
    )
}

/// Builds the host request for a route through `ifname`.
pub fn route_spec(static_route: &StaticRoute, ifname: &str) -> RouteSpec {
    RouteSpec {
        dst: static_route.dst.to_string(),
        gw: Some(static_route.gw.to_string()),
        dev: Some(ifname.to_string()),
        metric: None,
        src: None,
    }
}

fn describe(static_route: &StaticRoute, ifname: &str) -> String {
    format!("{} via {} dev {ifname}", static_route.dst, static_route.gw)
}

/// Returns `prev` with the routes appended to its `routes`, skipping any that
/// it already lists with the same destination and gateway.
pub fn with_routes(prev: &cniwasm_types::Result, routes: &[StaticRoute]) -> cniwasm_types::Result {
    let mut result = prev.clone();
    for static_route in routes {
        let dst = static_route.dst.to_string();
        let gw = static_route.gw.to_string();
        let listed = result
            .routes
            .iter()
            .any(|existing| existing.dst == dst && existing.gw == gw);
        if !listed {
            result.routes.push(Route {
                dst,
                gw,
                ..Default::default()
            });
        }
    }
    result
}

/// Tells whether a route listed by the host has the destination and gateway
/// of `static_route`. Both are compared as parsed addresses, so spelling
/// differences (`fd00::0` and `fd00::`) do not matter.
pub fn route_matches(spec: &RouteSpec, static_route: &StaticRoute) -> bool {
    let dst_matches = spec
        .dst
        .parse::<ipnet::IpNet>()
        .is_ok_and(|dst| dst == static_route.dst);
    let gw_matches = spec
        .gw
        .as_deref()
        .and_then(|gw| gw.parse::<std::net::IpAddr>().ok())
        .is_some_and(|gw| gw == static_route.gw);
    dst_matches && gw_matches
}

/// Compares a value read from /proc/sys with the configured one, field by
/// field, because the kernel separates fields of keys such as `tcp_rmem`
/// with tabs and ends the value with a newline.
pub fn same_sysctl_value(actual: &str, expected: &str) -> bool {
    actual.split_whitespace().eq(expected.split_whitespace())
}

#[cfg(test)]
mod tests {
    use cniwasm_types::{Interface, IpConfig};

    use super::*;

    fn static_route(dst: &str, gw: &str) -> StaticRoute {
        StaticRoute {
            dst: dst.parse().unwrap(),
            gw: gw.parse().unwrap(),
        }
    }

    fn prev_result() -> cniwasm_types::Result {
        cniwasm_types::Result {
            interfaces: vec![Interface {
                name: "eth0".into(),
                sandbox: "/var/run/netns/c".into(),
                ..Default::default()
            }],
            ips: vec![IpConfig {
                interface: Some(0),
                address: "10.244.20.2/24".into(),
                gateway: "10.244.20.1".into(),
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn route_spec_uses_container_interface() {
        let spec = route_spec(&static_route("10.250.0.0/16", "10.244.20.1"), "eth1");
        assert_eq!(spec.dst, "10.250.0.0/16");
        assert_eq!(spec.gw.as_deref(), Some("10.244.20.1"));
        assert_eq!(spec.dev.as_deref(), Some("eth1"));
        assert_eq!(spec.metric, None);
    }

    #[test]
    fn with_routes_appends_after_prev_routes() {
        let routes = [static_route("10.250.0.0/16", "10.244.20.1")];
        let result = with_routes(&prev_result(), &routes);

        assert_eq!(result.routes.len(), 2);
        assert_eq!(result.routes[0].dst, "0.0.0.0/0");
        assert_eq!(result.routes[1].dst, "10.250.0.0/16");
        assert_eq!(result.routes[1].gw, "10.244.20.1");
        assert_eq!(result.ips, prev_result().ips);
        assert_eq!(result.interfaces, prev_result().interfaces);
    }

    #[test]
    fn with_routes_skips_listed_route() {
        let routes = [static_route("10.250.0.0/16", "10.244.20.1")];
        let once = with_routes(&prev_result(), &routes);
        let twice = with_routes(&once, &routes);
        assert_eq!(twice.routes.len(), 2);
    }

    #[test]
    fn route_matches_compares_parsed_addresses() {
        let wanted = static_route("fd00:250::/48", "fd00:20::1");
        let listed = RouteSpec {
            dst: "fd00:250:0::/48".into(),
            gw: Some("fd00:20:0::1".into()),
            dev: Some("eth0".into()),
            metric: Some(1024),
            src: None,
        };
        assert!(route_matches(&listed, &wanted));

        let other_gateway = RouteSpec {
            gw: Some("fd00:20::2".into()),
            ..listed.clone()
        };
        assert!(!route_matches(&other_gateway, &wanted));

        let no_gateway = RouteSpec { gw: None, ..listed };
        assert!(!route_matches(&no_gateway, &wanted));
    }

    #[test]
    fn sysctl_values_compare_by_field() {
        assert!(same_sysctl_value("1\n", "1"));
        assert!(same_sysctl_value(
            "4096\t131072\t6291456\n",
            "4096 131072 6291456"
        ));
        assert!(!same_sysctl_value("0\n", "1"));
    }
}
