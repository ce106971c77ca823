//! Privileged tests of the Linux kernel implementations against a real kernel.
//!
//! Each test runs on a fresh thread that first moves into a new network
//! namespace of its own (`unshare(CLONE_NEWNET)`), so its netlink sockets,
//! `/proc/sys/net` files and iptables and nft child processes act on a throwaway
//! "host" namespace. The "container" is a named namespace (`ip netns add`)
//! that a guard deletes when the test ends, also when it fails. No traffic
//! leaves these namespaces.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use cniwasm_host_api::kernel::{
    BridgeSpec, Firewall, HostVethSpec, KernelErrorKind, LinkSettings, Namespace, Netlink,
    NftMatch, NftNat, NftPortMapSpec, NftSelector, NftValue, Owner, PortMapSpec, PortMapping,
    Protocol, RouteSpec, SpoofCheck, SpoofCheckSpec, Sysctl, VethSpec,
};
use cniwasm_host_api::linux::{
    FirewallOptions, IptablesFirewall, LinuxNetlink, NftNatRules, NftSpoofCheck, ProcSysctl,
    open_kernel,
};
use ipnet::IpNet;
use serde_json::Value;

static NEXT_NETNS: AtomicUsize = AtomicUsize::new(0);

/// A named network namespace that is deleted on drop.
struct NamedNetns {
    name: String,
}

impl NamedNetns {
    fn create() -> Self {
        let n = NEXT_NETNS.fetch_add(1, Ordering::SeqCst);
        let name = format!("cwt-{}-{n}", std::process::id());
        run("ip", &["netns", "add", &name]);
        Self { name }
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let status = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
        if !matches!(status, Ok(status) if status.success()) {
            eprintln!(
                "failed to delete network namespace {}: {status:?}",
                self.name
            );
        }
    }
}

/// Runs `body` on a new thread in a new network namespace with `lo` up, and
/// a fresh named namespace as the container. Without root it panics, unless
/// CNIWASM_SKIP_PRIVILEGED=1 is set, and then it prints that it skipped.
fn privileged(test: &str, body: impl FnOnce(&NamedNetns) + Send + 'static) {
    if !rustix::process::geteuid().is_root() {
        if std::env::var("CNIWASM_SKIP_PRIVILEGED").as_deref() == Ok("1") {
            // Written to stderr directly, because the test harness captures
            // eprintln! output of passing tests and the skip must show.
            let message =
                format!("SKIPPED {test}: needs root, and CNIWASM_SKIP_PRIVILEGED=1 is set\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr(), message.as_bytes());
            return;
        }
        panic!("{test} needs root; run as root or set CNIWASM_SKIP_PRIVILEGED=1 to skip it");
    }

    let thread = std::thread::spawn(move || {
        // SAFETY: unshare(CLONE_NEWNET) changes only the calling thread's
        // network namespace, and this thread has opened no sockets yet.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        run("ip", &["link", "set", "lo", "up"]);

        let container = NamedNetns::create();
        body(&container);
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// Runs a command in the calling thread's namespace and returns its stdout.
fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Runs `iptables-restore --noflush` with `script` in the calling thread's
/// namespace.
fn restore(script: &str) {
    let mut child = Command::new("iptables-restore")
        .arg("--noflush")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, script.as_bytes()).unwrap();
    drop(stdin);
    assert!(
        child.wait().unwrap().success(),
        "iptables-restore failed: {script}"
    );
}

fn ip_json(args: &[&str]) -> Value {
    let mut all = vec!["-j"];
    all.extend_from_slice(args);
    serde_json::from_str(&run("ip", &all)).unwrap()
}

/// `ip -j -d link show dev NAME`, in the container namespace when given.
fn link_json(netns: Option<&NamedNetns>, name: &str) -> Value {
    let mut args = vec![];
    if let Some(netns) = netns {
        args.extend(["-n", netns.name.as_str()]);
    }
    args.extend(["-d", "link", "show", "dev", name]);
    ip_json(&args)[0].clone()
}

fn has_flag(link: &Value, flag: &str) -> bool {
    link["flags"].as_array().unwrap().iter().any(|f| f == flag)
}

/// Returns the chain declarations and rules of `iptables-save -t nat`,
/// without the built-in chains.
fn nat_lines(save: &str) -> Vec<String> {
    run(save, &["-t", "nat"])
        .lines()
        .filter(|line| line.starts_with("-A ") || line.starts_with(":CNI-"))
        .map(str::to_string)
        .collect()
}

fn seed_owner() -> Owner {
    Owner {
        network: "mynet".into(),
        container_id: "cnitool-3b469ed4466ecfd8f00d".into(),
        ifname: "eth0".into(),
    }
}

fn seed_port_map() -> PortMapSpec {
    PortMapSpec {
        container_address: "10.244.10.72/24".parse().unwrap(),
        mappings: vec![PortMapping {
            host_port: 9090,
            container_port: 80,
            protocol: Protocol::Tcp,
            host_ip: Some("127.0.0.1".parse().unwrap()),
        }],
        snat: true,
        masq_all: false,
        mark_bit: 13,
        mark_chain: None,
        conditions: Vec::new(),
    }
}

fn veth_spec(host_name: &str) -> VethSpec {
    VethSpec {
        host_name: host_name.into(),
        container_name: "eth0".into(),
        mtu: Some(1400),
        container_mac: Some("0a:58:0a:f4:0a:48".into()),
    }
}

fn bridge_spec(name: &str) -> BridgeSpec {
    BridgeSpec {
        name: name.into(),
        mtu: Some(1400),
        promisc: true,
        // NOTE: vlan_filtering stays off because kernels without
        // CONFIG_BRIDGE_VLAN_FILTERING (the CI kernel among them) reject it.
        vlan_filtering: false,
    }
}

const SEED_NAT: &[&str] = &[
    ":CNI-DN-b232a5a313c3780addde4 - [0:0]",
    ":CNI-HOSTPORT-DNAT - [0:0]",
    ":CNI-HOSTPORT-MASQ - [0:0]",
    ":CNI-HOSTPORT-SETMARK - [0:0]",
    ":CNI-b232a5a313c3780addde4038 - [0:0]",
    "-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
    "-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
    r#"-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ"#,
    r#"-A POSTROUTING -s 10.244.10.72/32 -m comment --comment "name: \"mynet\" id: \"cnitool-3b469ed4466ecfd8f00d\"" -j CNI-b232a5a313c3780addde4038"#,
    "-A CNI-DN-b232a5a313c3780addde4 -s 10.244.10.0/24 -d 127.0.0.1/32 -p tcp -m tcp --dport 9090 -j CNI-HOSTPORT-SETMARK",
    "-A CNI-DN-b232a5a313c3780addde4 -s 127.0.0.1/32 -d 127.0.0.1/32 -p tcp -m tcp --dport 9090 -j CNI-HOSTPORT-SETMARK",
    "-A CNI-DN-b232a5a313c3780addde4 -d 127.0.0.1/32 -p tcp -m tcp --dport 9090 -j DNAT --to-destination 10.244.10.72:80",
    r#"-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"mynet\" id: \"cnitool-3b469ed4466ecfd8f00d\"" -m multiport --dports 9090 -j CNI-DN-b232a5a313c3780addde4"#,
    "-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE",
    r#"-A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000"#,
    r#"-A CNI-b232a5a313c3780addde4038 -d 10.244.10.0/24 -m comment --comment "name: \"mynet\" id: \"cnitool-3b469ed4466ecfd8f00d\"" -j ACCEPT"#,
    r#"-A CNI-b232a5a313c3780addde4038 ! -d 224.0.0.0/4 -m comment --comment "name: \"mynet\" id: \"cnitool-3b469ed4466ecfd8f00d\"" -j MASQUERADE"#,
];

#[test]
fn bridge_create_reuse_and_conflict() {
    privileged("bridge_create_reuse_and_conflict", |_| {
        let mut netlink = LinuxNetlink::open(None).unwrap();

        let created = netlink.ensure_bridge(&bridge_spec("cwbr0")).unwrap();
        assert_eq!(created.kind, "bridge");
        assert_eq!(created.mtu, 1400);
        assert!(created.up);
        assert!(created.promisc);
        let link = link_json(None, "cwbr0");
        assert_eq!(link["linkinfo"]["info_kind"], "bridge");
        assert_eq!(link["linkinfo"]["info_data"]["vlan_filtering"], 0);
        assert_eq!(link["mtu"], 1400);
        assert!(has_flag(&link, "UP"));
        assert!(has_flag(&link, "PROMISC"));

        let reused = netlink.ensure_bridge(&bridge_spec("cwbr0")).unwrap();
        assert_eq!(reused.index, created.index);

        run(
            "ip",
            &[
                "link", "add", "cwveth9", "type", "veth", "peer", "name", "cwveth10",
            ],
        );
        let err = netlink.ensure_bridge(&bridge_spec("cwveth9")).unwrap_err();
        assert_eq!(err.kind, KernelErrorKind::Exists, "{err}");
        assert!(err.to_string().contains("cwveth9"), "{err}");
    });
}

#[test]
fn veth_peer_created_in_container() {
    privileged("veth_peer_created_in_container", |container| {
        let mut netlink = LinuxNetlink::open(Some(&container.path())).unwrap();
        assert!(netlink.has_container());

        let (host_end, container_end) = netlink.create_veth(&veth_spec("cwveth0")).unwrap();

        assert_eq!(host_end.name, "cwveth0");
        assert_eq!(host_end.kind, "veth");
        assert_eq!(host_end.mtu, 1400);
        assert_eq!(container_end.name, "eth0");
        assert_eq!(container_end.mac, "0a:58:0a:f4:0a:48");
        let host_link = link_json(None, "cwveth0");
        assert_eq!(host_link["mtu"], 1400);
        let peer = link_json(Some(container), "eth0");
        assert_eq!(peer["mtu"], 1400);
        assert_eq!(peer["address"], "0a:58:0a:f4:0a:48");
        assert_eq!(peer["linkinfo"]["info_kind"], "veth");
        let host_side_eth0 = Command::new("ip")
            .args(["link", "show", "dev", "eth0"])
            .output()
            .unwrap();
        assert!(
            !host_side_eth0.status.success(),
            "eth0 must not exist in the host namespace"
        );

        let err = netlink.create_veth(&veth_spec("cwveth1")).unwrap_err();
        assert_eq!(err.kind, KernelErrorKind::Exists, "{err}");
        assert_eq!(err.namespace, Namespace::Container);
    });
}

#[test]
fn veth_port_flags() {
    privileged("veth_port_flags", |container| {
        let mut netlink = LinuxNetlink::open(Some(&container.path())).unwrap();
        netlink.ensure_bridge(&bridge_spec("cwbr1")).unwrap();
        netlink.create_veth(&veth_spec("cwveth2")).unwrap();

        let settings = LinkSettings {
            up: Some(true),
            mac: Some("0a:58:0a:f4:0a:99".into()),
            master: Some("cwbr1".into()),
            hairpin: Some(true),
            isolated: Some(true),
            ..LinkSettings::default()
        };
        let port = netlink
            .configure_link(Namespace::Host, "cwveth2", &settings)
            .unwrap();

        assert_eq!(port.master.as_deref(), Some("cwbr1"));
        assert!(port.up);
        let link = link_json(None, "cwveth2");
        assert_eq!(link["master"], "cwbr1");
        assert_eq!(link["address"], "0a:58:0a:f4:0a:99");
        assert_eq!(port.mac, "0a:58:0a:f4:0a:99");
        assert!(has_flag(&link, "UP"));
        assert_eq!(link["linkinfo"]["info_slave_kind"], "bridge");
        assert_eq!(link["linkinfo"]["info_slave_data"]["hairpin"], true);
        assert_eq!(link["linkinfo"]["info_slave_data"]["isolated"], true);

        let down = LinkSettings {
            up: Some(false),
            hairpin: Some(false),
            isolated: Some(false),
            ..LinkSettings::default()
        };
        let port = netlink
            .configure_link(Namespace::Host, "cwveth2", &down)
            .unwrap();
        assert!(!port.up);
        let link = link_json(None, "cwveth2");
        assert_eq!(link["linkinfo"]["info_slave_data"]["hairpin"], false);
        assert_eq!(link["linkinfo"]["info_slave_data"]["isolated"], false);

        let missing = LinkSettings {
            master: Some("cwnobridge".into()),
            ..LinkSettings::default()
        };
        let err = netlink
            .configure_link(Namespace::Host, "cwveth2", &missing)
            .unwrap_err();
        assert_eq!(err.kind, KernelErrorKind::NotFound, "{err}");
    });
}

#[test]
fn allmulti_and_tx_queue_len() {
    privileged("allmulti_and_tx_queue_len", |container| {
        let mut netlink = LinuxNetlink::open(Some(&container.path())).unwrap();
        netlink.create_veth(&veth_spec("cwveth9")).unwrap();

        let tuned = LinkSettings {
            allmulti: Some(true),
            tx_queue_len: Some(2345),
            ..LinkSettings::default()
        };
        let info = netlink
            .configure_link(Namespace::Container, "eth0", &tuned)
            .unwrap();
        assert!(info.allmulti);
        assert_eq!(info.tx_queue_len, 2345);
        let link = link_json(Some(container), "eth0");
        assert!(has_flag(&link, "ALLMULTI"), "{link}");
        assert_eq!(link["txqlen"], 2345);

        let reverted = LinkSettings {
            allmulti: Some(false),
            tx_queue_len: Some(1000),
            ..LinkSettings::default()
        };
        netlink
            .configure_link(Namespace::Container, "eth0", &reverted)
            .unwrap();
        let info = netlink.get_link(Namespace::Container, "eth0").unwrap();
        let info = info.expect("eth0 exists");
        assert!(!info.allmulti);
        assert_eq!(info.tx_queue_len, 1000);
        let link = link_json(Some(container), "eth0");
        assert!(!has_flag(&link, "ALLMULTI"), "{link}");
        assert_eq!(link["txqlen"], 1000);
    });
}

#[test]
fn container_addresses_and_routes() {
    privileged("container_addresses_and_routes", |container| {
        let mut netlink = LinuxNetlink::open(Some(&container.path())).unwrap();
        netlink.create_veth(&veth_spec("cwveth3")).unwrap();
        let up = LinkSettings {
            up: Some(true),
            ..LinkSettings::default()
        };
        netlink
            .configure_link(Namespace::Container, "eth0", &up)
            .unwrap();

        let address: IpNet = "10.244.10.72/24".parse().unwrap();
        netlink
            .add_address(Namespace::Container, "eth0", address)
            .unwrap();
        netlink
            .add_address(Namespace::Container, "eth0", address)
            .unwrap();
        let addresses = netlink
            .list_addresses(Namespace::Container, "eth0")
            .unwrap();
        assert!(addresses.contains(&address), "{addresses:?}");
        let shown = ip_json(&["-n", &container.name, "-4", "addr", "show", "dev", "eth0"]);
        assert_eq!(shown[0]["addr_info"][0]["local"], "10.244.10.72");
        assert_eq!(shown[0]["addr_info"][0]["prefixlen"], 24);

        let default_route = RouteSpec {
            dst: "0.0.0.0/0".parse().unwrap(),
            gateway: Some("10.244.10.1".parse().unwrap()),
            device: Some("eth0".into()),
            metric: None,
            source: None,
        };
        netlink
            .add_route(Namespace::Container, &default_route)
            .unwrap();
        netlink
            .add_route(Namespace::Container, &default_route)
            .unwrap();
        let routes = netlink.list_routes(Namespace::Container, "eth0").unwrap();
        assert!(
            routes
                .iter()
                .any(|route| route.dst == default_route.dst
                    && route.gateway == default_route.gateway),
            "{routes:?}"
        );
        let shown = ip_json(&["-n", &container.name, "route", "show", "default"]);
        assert_eq!(shown[0]["gateway"], "10.244.10.1");
        assert_eq!(shown[0]["dev"], "eth0");

        let conflicting = RouteSpec {
            gateway: Some("10.244.10.2".parse().unwrap()),
            ..default_route.clone()
        };
        let err = netlink
            .add_route(Namespace::Container, &conflicting)
            .unwrap_err();
        assert_eq!(err.kind, KernelErrorKind::Exists, "{err}");

        netlink
            .delete_route(Namespace::Container, &default_route)
            .unwrap();
        let shown = ip_json(&["-n", &container.name, "route", "show", "default"]);
        assert_eq!(shown.as_array().unwrap().len(), 0, "{shown}");
        let err = netlink
            .delete_route(Namespace::Container, &default_route)
            .unwrap_err();
        assert_eq!(err.kind, KernelErrorKind::NotFound, "{err}");

        let with_metric = RouteSpec {
            dst: "10.1.0.0/16".parse().unwrap(),
            metric: Some(100),
            source: None,
            ..default_route.clone()
        };
        netlink
            .add_route(Namespace::Container, &with_metric)
            .unwrap();
        let by_destination = RouteSpec {
            dst: with_metric.dst,
            gateway: None,
            device: None,
            metric: None,
            source: None,
        };
        netlink
            .delete_route(Namespace::Container, &by_destination)
            .unwrap();
        let routes = netlink.list_routes(Namespace::Container, "eth0").unwrap();
        assert!(
            !routes.iter().any(|route| route.dst == with_metric.dst),
            "{routes:?}"
        );

        netlink
            .delete_address(Namespace::Container, "eth0", address)
            .unwrap();
        netlink
            .delete_address(Namespace::Container, "eth0", address)
            .unwrap();
        let addresses = netlink
            .list_addresses(Namespace::Container, "eth0")
            .unwrap();
        assert!(!addresses.contains(&address), "{addresses:?}");
    });
}

#[test]
fn ipv6_address_and_route() {
    privileged("ipv6_address_and_route", |container| {
        let mut netlink = LinuxNetlink::open(Some(&container.path())).unwrap();
        netlink.create_veth(&veth_spec("cwveth4")).unwrap();
        let up = LinkSettings {
            up: Some(true),
            ..LinkSettings::default()
        };
        netlink
            .configure_link(Namespace::Container, "eth0", &up)
            .unwrap();

        let address: IpNet = "fd00:10::5/64".parse().unwrap();
        netlink
            .add_address(Namespace::Container, "eth0", address)
            .unwrap();
        let route = RouteSpec {
            dst: "fd00:20::/64".parse().unwrap(),
            gateway: None,
            device: Some("eth0".into()),
            metric: Some(100),
            source: None,
        };
        netlink.add_route(Namespace::Container, &route).unwrap();

        let addresses = netlink
            .list_addresses(Namespace::Container, "eth0")
            .unwrap();
        assert!(addresses.contains(&address), "{addresses:?}");
        let routes = netlink.list_routes(Namespace::Container, "eth0").unwrap();
        assert!(routes.contains(&route), "{routes:?}");
    });
}

#[test]
fn delete_link_removes_pair() {
    privileged("delete_link_removes_pair", |container| {
        let mut netlink = LinuxNetlink::open(Some(&container.path())).unwrap();
        netlink.create_veth(&veth_spec("cwveth5")).unwrap();

        assert!(netlink.delete_link(Namespace::Container, "eth0").unwrap());

        assert_eq!(
            netlink.get_link(Namespace::Container, "eth0").unwrap(),
            None
        );
        assert_eq!(netlink.get_link(Namespace::Host, "cwveth5").unwrap(), None);
        assert!(!netlink.delete_link(Namespace::Container, "eth0").unwrap());
    });
}

#[test]
fn host_veth_pair_stays_in_host() {
    privileged("host_veth_pair_stays_in_host", |container| {
        let mut netlink = LinuxNetlink::open(Some(&container.path())).unwrap();
        let spec = HostVethSpec {
            name: "cwbr1.100".into(),
            peer_name: "cwveth11".into(),
            mtu: Some(1400),
        };

        let (end, peer) = netlink.create_host_veth(&spec).unwrap();

        assert_eq!(
            (end.name.as_str(), end.kind.as_str()),
            ("cwbr1.100", "veth")
        );
        assert_eq!(
            (peer.name.as_str(), peer.kind.as_str()),
            ("cwveth11", "veth")
        );
        assert_eq!((end.mtu, peer.mtu), (1400, 1400));
        assert_eq!(link_json(None, "cwbr1.100")["link"], "cwveth11");
        assert_eq!(link_names(Some(container)), ["lo"]);
        let again = netlink.create_host_veth(&spec).unwrap_err();
        assert_eq!(again.kind, KernelErrorKind::Exists, "{again}");

        assert!(netlink.delete_link(Namespace::Host, "cwbr1.100").unwrap());
        netlink.settle().unwrap();
        assert_eq!(netlink.get_link(Namespace::Host, "cwveth11").unwrap(), None);
    });
}

/// Lists the link names that `ip link` shows, in `netns` when given.
fn link_names(netns: Option<&NamedNetns>) -> Vec<String> {
    let mut args = vec![];
    if let Some(netns) = netns {
        args.extend(["-n", netns.name.as_str()]);
    }
    args.extend(["link", "show"]);
    let links = ip_json(&args);
    let names = links.as_array().unwrap().iter();
    names
        .map(|link| link["ifname"].as_str().unwrap().to_string())
        .collect()
}

/// The deletion runs on a thread of its own. Settling, or dropping the
/// netlink, waits for it, as `ip link` from outside the process shows.
#[test]
fn background_delete_waits_on_settle() {
    privileged("background_delete_waits_on_settle", |container| {
        let mut netlink = LinuxNetlink::open(Some(&container.path())).unwrap();
        netlink.create_veth(&veth_spec("cwveth6")).unwrap();
        assert!(netlink.delete_link(Namespace::Container, "eth0").unwrap());
        netlink.settle().unwrap();
        assert!(!link_names(Some(container)).contains(&"eth0".to_string()));
        assert!(!link_names(None).contains(&"cwveth6".to_string()));

        netlink.create_veth(&veth_spec("cwveth7")).unwrap();
        assert!(netlink.delete_link(Namespace::Host, "cwveth7").unwrap());
        drop(netlink);
        assert!(!link_names(Some(container)).contains(&"eth0".to_string()));
        assert!(!link_names(None).contains(&"cwveth7".to_string()));
    });
}

#[test]
fn missing_container_netns_is_not_found() {
    privileged("missing_container_netns_is_not_found", |_| {
        let path = PathBuf::from("/run/netns/cwt-does-not-exist");
        let mut netlink = LinuxNetlink::open(Some(&path)).unwrap();
        assert!(!netlink.has_container());

        let err = netlink.get_link(Namespace::Container, "eth0").unwrap_err();
        assert_eq!(err.kind, KernelErrorKind::NotFound);
        assert!(
            err.to_string().contains("/run/netns/cwt-does-not-exist"),
            "{err}"
        );
        let err = netlink.create_veth(&veth_spec("cwveth6")).unwrap_err();
        assert_eq!(err.kind, KernelErrorKind::NotFound);

        // The host side still works, as a DEL after the netns is gone needs.
        assert!(netlink.get_link(Namespace::Host, "lo").unwrap().is_some());
    });
}

#[test]
fn route_device_follows_host_routes() {
    privileged("route_device_follows_host_routes", |_| {
        let mut netlink = LinuxNetlink::open(None).unwrap();
        netlink.ensure_bridge(&bridge_spec("cwbr2")).unwrap();
        netlink
            .add_address(Namespace::Host, "cwbr2", "10.244.10.1/24".parse().unwrap())
            .unwrap();

        let device = netlink
            .route_device("10.244.10.72".parse().unwrap())
            .unwrap();
        assert_eq!(device.as_deref(), Some("cwbr2"));
        let unreachable: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(netlink.route_device(unreachable).unwrap(), None);
    });
}

#[test]
fn sysctl_in_both_namespaces() {
    privileged("sysctl_in_both_namespaces", |container| {
        let mut sysctl = ProcSysctl::open(Some(&container.path())).unwrap();

        sysctl
            .set(Namespace::Host, "net/ipv4/ip_forward", "1")
            .unwrap();
        sysctl
            .set(Namespace::Container, "net.ipv4.ip_forward", "0")
            .unwrap();

        assert_eq!(
            sysctl.get(Namespace::Host, "net.ipv4.ip_forward").unwrap(),
            "1"
        );
        assert_eq!(
            sysctl
                .get(Namespace::Container, "net/ipv4/ip_forward")
                .unwrap(),
            "0"
        );
        let seen_host = run("cat", &["/proc/sys/net/ipv4/ip_forward"]);
        assert_eq!(seen_host.trim(), "1");
        let seen_container = run(
            "ip",
            &[
                "netns",
                "exec",
                &container.name,
                "cat",
                "/proc/sys/net/ipv4/ip_forward",
            ],
        );
        assert_eq!(seen_container.trim(), "0");

        let err = sysctl.get(Namespace::Host, "kernel/hostname").unwrap_err();
        assert_eq!(err.kind, KernelErrorKind::Invalid);
        let err = sysctl
            .get(Namespace::Container, "net/ipv4/conf/nope0/forwarding")
            .unwrap_err();
        assert_eq!(err.kind, KernelErrorKind::NotFound, "{err}");
    });
}

#[test]
fn seed_rules_match_reference() {
    privileged("seed_rules_match_reference", |_| {
        let mut kernel = open_kernel(None).unwrap();
        kernel.netlink.ensure_bridge(&bridge_spec("cwbr3")).unwrap();
        let gateway: IpNet = "10.244.10.1/24".parse().unwrap();
        kernel
            .netlink
            .add_address(Namespace::Host, "cwbr3", gateway)
            .unwrap();
        let owner = seed_owner();
        let address: IpNet = "10.244.10.72/24".parse().unwrap();

        kernel.firewall.add_masquerade(&owner, address).unwrap();
        kernel
            .firewall
            .add_port_mappings(&owner, &seed_port_map())
            .unwrap();

        let mut saved = nat_lines("iptables-save");
        let mut expected: Vec<String> = SEED_NAT.iter().map(|line| line.to_string()).collect();
        saved.sort();
        expected.sort();
        assert_eq!(saved, expected);
        let localnet = kernel
            .sysctl
            .get(Namespace::Host, "net/ipv4/conf/cwbr3/route_localnet")
            .unwrap();
        assert_eq!(localnet, "1");
        kernel
            .firewall
            .check_port_mappings(&owner, &seed_port_map())
            .unwrap();
        kernel.firewall.check_masquerade(&owner, address).unwrap();
    });
}

#[test]
fn port_mappings_lifecycle() {
    privileged("port_mappings_lifecycle", |_| {
        let mut firewall = IptablesFirewall::new(FirewallOptions::default());
        let owner = seed_owner();
        let other = Owner {
            container_id: "other".into(),
            ..seed_owner()
        };
        let mut other_spec = seed_port_map();
        other_spec.mappings[0].host_port = 9191;

        firewall
            .add_port_mappings(&owner, &seed_port_map())
            .unwrap();
        firewall.add_port_mappings(&other, &other_spec).unwrap();
        let first = nat_lines("iptables-save");
        firewall
            .add_port_mappings(&owner, &seed_port_map())
            .unwrap();
        let mut again = nat_lines("iptables-save");
        let mut first_sorted = first.clone();
        first_sorted.sort();
        again.sort();
        assert_eq!(again, first_sorted, "re-adding must not duplicate rules");

        let dnat_rule = SEED_NAT[11].trim_start_matches("-A ");
        run(
            "iptables",
            &[
                &["-t", "nat", "-D"],
                dnat_rule.split(' ').collect::<Vec<_>>().as_slice(),
            ]
            .concat(),
        );
        let err = firewall
            .check_port_mappings(&owner, &seed_port_map())
            .unwrap_err();
        assert_eq!(err.kind, KernelErrorKind::NotFound, "{err}");
        assert!(
            err.to_string().contains("--to-destination 10.244.10.72:80"),
            "{err}"
        );

        firewall.remove_port_mappings(&owner).unwrap();
        firewall.remove_port_mappings(&owner).unwrap();
        firewall.settle().unwrap();
        let after = nat_lines("iptables-save");
        assert!(
            !after.iter().any(|line| line.contains(&owner.dnat_chain())),
            "{after:#?}"
        );
        for shared in [
            "CNI-HOSTPORT-DNAT",
            "CNI-HOSTPORT-SETMARK",
            "CNI-HOSTPORT-MASQ",
        ] {
            assert!(
                after.contains(&format!(":{shared} - [0:0]")),
                "{shared} removed: {after:#?}"
            );
        }
        assert!(
            after.iter().any(|line| line.contains(&other.dnat_chain())),
            "{after:#?}"
        );
        firewall.check_port_mappings(&other, &other_spec).unwrap();
    });
}

#[test]
fn ipv6_port_mappings() {
    privileged("ipv6_port_mappings", |_| {
        let mut firewall = IptablesFirewall::new(FirewallOptions::default());
        let owner = seed_owner();
        let spec = PortMapSpec {
            container_address: "fd00:10::5/64".parse().unwrap(),
            mappings: vec![PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: Protocol::Udp,
                host_ip: None,
            }],
            snat: true,
            masq_all: false,
            mark_bit: 13,
            mark_chain: None,
            conditions: Vec::new(),
        };

        firewall.add_port_mappings(&owner, &spec).unwrap();

        let saved = nat_lines("ip6tables-save");
        let dnat = format!(
            "-A {} -p udp -m udp --dport 8080 -j DNAT --to-destination [fd00:10::5]:80",
            owner.dnat_chain()
        );
        assert!(saved.contains(&dnat), "{saved:#?}");
        assert!(
            nat_lines("iptables-save").is_empty(),
            "IPv4 table must stay untouched"
        );
        firewall.check_port_mappings(&owner, &spec).unwrap();

        firewall.remove_port_mappings(&owner).unwrap();
        firewall.settle().unwrap();
        let saved = nat_lines("ip6tables-save");
        assert!(
            !saved.iter().any(|line| line.contains(&owner.dnat_chain())),
            "{saved:#?}"
        );
    });
}

#[test]
fn masquerade_lifecycle_both_families() {
    privileged("masquerade_lifecycle_both_families", |_| {
        let mut firewall = IptablesFirewall::new(FirewallOptions::default());
        let owner = seed_owner();
        let v4: IpNet = "10.244.10.72/24".parse().unwrap();
        let v6: IpNet = "fd00:10::5/64".parse().unwrap();

        firewall.add_masquerade(&owner, v4).unwrap();
        firewall.add_masquerade(&owner, v4).unwrap();
        firewall.add_masquerade(&owner, v6).unwrap();

        let saved = nat_lines("iptables-save");
        assert_eq!(
            saved.iter().filter(|line| line.starts_with("-A ")).count(),
            3,
            "{saved:#?}"
        );
        let saved6 = nat_lines("ip6tables-save");
        let multicast = format!(
            "-A {} ! -d ff00::/8 -m comment --comment {:?} -j MASQUERADE",
            owner.masquerade_chain(),
            owner.comment()
        );
        assert!(saved6.contains(&multicast), "{saved6:#?}");
        firewall.check_masquerade(&owner, v6).unwrap();

        firewall.remove_masquerade(&owner).unwrap();
        firewall.settle().unwrap();

        assert!(nat_lines("iptables-save").is_empty());
        assert!(nat_lines("ip6tables-save").is_empty());
        let err = firewall.check_masquerade(&owner, v4).unwrap_err();
        assert_eq!(err.kind, KernelErrorKind::NotFound, "{err}");
        firewall.remove_masquerade(&owner).unwrap();
        firewall.settle().unwrap();
    });
}

/// With an external mark chain and conditions, the rules go in, a check
/// finds them although iptables prints the conditions in its own form, a
/// second ADD replaces them without duplicates, and removal leaves the
/// node's mark chain alone.
#[test]
fn port_mappings_with_mark_chain_and_conditions() {
    privileged("port_mappings_with_mark_chain_and_conditions", |_| {
        run("iptables", &["-t", "nat", "-N", "KUBE-MARK-MASQ"]);
        let mut firewall = IptablesFirewall::new(FirewallOptions::default());
        let owner = seed_owner();
        let spec = PortMapSpec {
            mark_chain: Some("KUBE-MARK-MASQ".into()),
            // iptables saves these as `-s 1.2.3.4/32 ! -d 10.99.0.0/16`.
            conditions: ["!", "-d", "10.99.0.0/16", "-s", "1.2.3.4"]
                .map(String::from)
                .to_vec(),
            ..seed_port_map()
        };

        firewall.add_port_mappings(&owner, &spec).unwrap();
        firewall.check_port_mappings(&owner, &spec).unwrap();
        let first = nat_lines("iptables-save");
        firewall.add_port_mappings(&owner, &spec).unwrap();
        assert_eq!(nat_lines("iptables-save"), first);

        let entry = first
            .iter()
            .find(|line| line.starts_with("-A CNI-HOSTPORT-DNAT"))
            .unwrap();
        assert!(
            entry.starts_with("-A CNI-HOSTPORT-DNAT -s 1.2.3.4/32 ! -d 10.99.0.0/16 -p tcp"),
            "{entry}"
        );
        let marks = first
            .iter()
            .filter(|line| line.ends_with("-j KUBE-MARK-MASQ"));
        assert_eq!(marks.count(), 2, "{first:#?}");
        assert!(
            !first
                .iter()
                .any(|line| line.contains("CNI-HOSTPORT-SETMARK"))
        );

        let other_protocol = PortMapSpec {
            mappings: vec![PortMapping {
                protocol: Protocol::Udp,
                ..spec.mappings[0].clone()
            }],
            ..spec.clone()
        };
        let error = firewall
            .check_port_mappings(&owner, &other_protocol)
            .unwrap_err();
        assert_eq!(error.kind, KernelErrorKind::NotFound, "{error}");

        // A condition changed by hand fails the check.
        let changed = entry.replacen("10.99.0.0/16", "10.98.0.0/16", 1);
        let script = format!(
            "*nat\n{}\n{changed}\nCOMMIT\n",
            entry.replacen("-A", "-D", 1)
        );
        restore(&script);
        let error = firewall.check_port_mappings(&owner, &spec).unwrap_err();
        assert_eq!(error.kind, KernelErrorKind::NotFound, "{error}");
        assert!(error.to_string().contains("10.99.0.0/16"), "{error}");

        firewall.remove_port_mappings(&owner).unwrap();
        firewall.settle().unwrap();
        let left = nat_lines("iptables-save");
        assert!(!left.iter().any(|line| line.contains(&owner.dnat_chain())));
        run("iptables", &["-t", "nat", "-S", "KUBE-MARK-MASQ"]);
    });
}

/// Returns `nft -j list ruleset bridge` in the calling thread's namespace:
/// the objects without the `metainfo` entry.
fn bridge_ruleset() -> Vec<Value> {
    let listing: Value =
        serde_json::from_str(&run("nft", &["-j", "list", "ruleset", "bridge"])).unwrap();
    let objects = listing["nftables"].as_array().unwrap();
    objects
        .iter()
        .filter(|object| object.get("metainfo").is_none())
        .cloned()
        .collect()
}

/// A repeated add replaces the MAC and leaves one jump, and removal leaves
/// the shared table and base chain, also when repeated and when another
/// attachment's check stays.
#[test]
fn spoof_check_lifecycle() {
    privileged("spoof_check_lifecycle", |_| {
        let mut check = NftSpoofCheck::default();
        let owner = seed_owner();
        let other = Owner {
            container_id: "other".into(),
            ..seed_owner()
        };
        let spec = |host_link: &str, mac: &str| SpoofCheckSpec {
            host_link: host_link.into(),
            mac: mac.into(),
        };

        check
            .add_spoof_check(&owner, &spec("veth00000001", "0a:58:0a:f4:0a:02"))
            .unwrap();
        check
            .add_spoof_check(&owner, &spec("veth00000001", "0a:58:0a:f4:0a:03"))
            .unwrap();
        check
            .add_spoof_check(&other, &spec("veth00000002", "0a:58:0a:f4:0a:04"))
            .unwrap();

        let listed = run("nft", &["list", "table", "bridge", "nat"]);
        let id = owner.spoof_check_id();
        let jump = format!("iifname \"veth00000001\" jump cni-br-iface-{id}");
        assert_eq!(listed.matches(&jump).count(), 1, "{listed}");
        assert!(
            listed.contains("ether saddr 0a:58:0a:f4:0a:03 return"),
            "{listed}"
        );
        assert!(!listed.contains("0a:58:0a:f4:0a:02"), "{listed}");
        assert_eq!(listed.matches("drop comment").count(), 2, "{listed}");

        check.remove_spoof_check(&owner).unwrap();
        check.remove_spoof_check(&owner).unwrap();

        let listed = run("nft", &["list", "table", "bridge", "nat"]);
        assert!(!listed.contains(&id), "{listed}");
        assert!(
            listed.contains(&format!("cni-br-iface-{}", other.spoof_check_id())),
            "the other attachment's check was removed: {listed}"
        );
        check.remove_spoof_check(&other).unwrap();
        let left = bridge_ruleset();
        assert_eq!(left.len(), 2, "table and base chain: {left:#?}");
        assert_eq!(left[1]["chain"]["name"], "PREROUTING");
    });
}

/// Removal in a namespace without the table succeeds and creates nothing.
#[test]
fn spoof_check_removal_without_table() {
    privileged("spoof_check_removal_without_table", |_| {
        NftSpoofCheck::default()
            .remove_spoof_check(&seed_owner())
            .unwrap();
        assert_eq!(bridge_ruleset(), Vec::<Value>::new());
    });
}

/// Returns `nft list table FAMILY NAME` in the form of the reference's test
/// vectors, the dump of knftables' fake. That dump has one `add` line for
/// the table, each chain and each rule. Chains are sorted by name, rules
/// grouped by chain in chain-name order, and priorities are numbers.
fn nft_dump(family: &str, table: &str) -> Vec<String> {
    let listing = run("nft", &["list", "table", family, table]);
    let prefix = format!("{family} {table}");
    let mut table_line = format!("add table {prefix}");
    let mut chains: BTreeMap<String, String> = BTreeMap::new();
    let mut rules: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut chain: Option<String> = None;

    for line in listing.lines().map(str::trim) {
        if line.is_empty() || line.starts_with("table ") || line == "}" {
            chain = None;
        } else if let Some(name) = line
            .strip_prefix("chain ")
            .and_then(|l| l.strip_suffix(" {"))
        {
            chain = Some(name.to_string());
            chains.insert(name.to_string(), format!("add chain {prefix} {name}"));
        } else if let Some(spec) = object_spec(line) {
            match &chain {
                Some(name) => chains.get_mut(name).unwrap().push_str(&spec),
                None => table_line.push_str(&spec),
            }
        } else {
            let name = chain.clone().expect("a rule inside a chain");
            let line = format!("add rule {prefix} {name} {line}");
            rules.entry(name).or_default().push(line);
        }
    }

    let mut dump = vec![table_line];
    dump.extend(chains.into_values());
    dump.extend(rules.into_values().flatten());
    dump
}

/// Returns ` { ... ; }` for a table or chain property line of a listing:
/// a comment, or a base chain's type, hook and priority (without the
/// policy, which the reference's dump leaves out when it is accept).
fn object_spec(line: &str) -> Option<String> {
    if line.starts_with("comment ") {
        return Some(format!(" {{ {line} ; }}"));
    }
    let spec = line.strip_prefix("type ")?;
    let spec = spec.split(';').next().unwrap();
    let (head, priority) = spec.rsplit_once(" priority ").unwrap();
    let priority = match priority {
        "dstnat" => "-100",
        "srcnat" => "100",
        number => number,
    };
    Some(format!(" {{ type {head} priority {priority} ; }}"))
}

/// Turns a test vector of the reference into the lines [`nft_dump`]
/// returns here. nft prints an implicit `==` without the operator, and
/// nft 1.0.6 neither reads nor prints table and chain comments in JSON, so
/// those go when the listing has no table comment.
fn expected_dump(vector: &str, listed: &[String]) -> Vec<String> {
    let keeps_comments = listed[0].contains("comment");
    vector
        .trim()
        .lines()
        .map(|line| line.trim().replace(" == ", " ").replace("  ", " "))
        .map(
            |line| match (keeps_comments, line.split_once(" { comment ")) {
                (false, Some((head, _))) if !line.starts_with("add rule") => head.to_string(),
                _ => line,
            },
        )
        .collect()
}

fn nft_owner(container_id: &str) -> Owner {
    Owner {
        network: "test".into(),
        container_id: container_id.into(),
        ifname: "eth0".into(),
    }
}

fn nft_mapping(
    host_port: u16,
    container_port: u16,
    udp: bool,
    host_ip: Option<&str>,
) -> PortMapping {
    PortMapping {
        host_port,
        container_port,
        protocol: if udp { Protocol::Udp } else { Protocol::Tcp },
        host_ip: host_ip.map(|ip| ip.parse().unwrap()),
    }
}

/// Returns the match `PROTOCOL daddr != NET`, standing for the reference
/// vector's placeholder conditions `a b` and `c d`, which nft would reject.
fn daddr_condition(protocol: &'static str, net: &str) -> NftMatch {
    NftMatch {
        selector: NftSelector::Payload {
            protocol,
            field: "daddr",
        },
        negated: true,
        value: NftValue::Prefix(net.parse().unwrap()),
    }
}

/// Returns the mappings of the reference's nftables test, split by family as the
/// portmap plugin splits them: a host IP of the other family drops a
/// mapping, and `0.0.0.0` and `::` match any address of their own family.
fn reference_spec(ipv4: bool, snat: bool) -> NftPortMapSpec {
    let mut mappings = vec![
        nft_mapping(8080, 80, false, None),
        nft_mapping(8081, 80, false, None),
        nft_mapping(8080, 81, true, None),
        nft_mapping(8082, 82, true, None),
    ];
    let (address, condition) = match ipv4 {
        true => {
            mappings.push(nft_mapping(8083, 83, false, Some("192.168.0.2")));
            mappings.push(nft_mapping(8084, 84, false, None));
            ("10.0.0.2/24", daddr_condition("ip", "192.0.2.0/24"))
        }
        false => {
            mappings.push(nft_mapping(8085, 85, false, Some("2001:db8:a::1")));
            mappings.push(nft_mapping(8086, 86, false, None));
            ("2001:db8::2/64", daddr_condition("ip6", "2001:db8:ff::/48"))
        }
    };
    NftPortMapSpec {
        container_address: address.parse().unwrap(),
        mappings,
        snat,
        masq_all: false,
        conditions: vec![condition],
    }
}

/// The IPv4 dump after ADD with SNAT, from the reference's
/// `portmap_nftables_test.go` (containernetworking/plugins after v1.9.1,
/// commit 3d27709f), with the placeholder conditions `a b` replaced.
/// The reference plugins installed under /usr/lib/cni are v1.1.1, which
/// has no nftables backend, so this replaces a side-by-side run.
const REFERENCE_V4_ADD: &str = r#"
add table ip cni_hostport { comment "CNI portmap plugin" ; }
add chain ip cni_hostport hostip_hostports
add chain ip cni_hostport hostports
add chain ip cni_hostport hostports_all
add chain ip cni_hostport masquerading { type nat hook postrouting priority 100 ; }
add chain ip cni_hostport output { type nat hook output priority -100 ; }
add chain ip cni_hostport prerouting { type nat hook prerouting priority -100 ; }
add rule ip cni_hostport hostports tcp dport 8080 dnat to 10.0.0.2:80 comment "icee6giejonei6so"
add rule ip cni_hostport hostports tcp dport 8081 dnat to 10.0.0.2:80 comment "icee6giejonei6so"
add rule ip cni_hostport hostports udp dport 8080 dnat to 10.0.0.2:81 comment "icee6giejonei6so"
add rule ip cni_hostport hostports udp dport 8082 dnat to 10.0.0.2:82 comment "icee6giejonei6so"
add rule ip cni_hostport hostports ip daddr 192.168.0.2 tcp dport 8083 dnat to 10.0.0.2:83 comment "icee6giejonei6so"
add rule ip cni_hostport hostports tcp dport 8084 dnat to 10.0.0.2:84 comment "icee6giejonei6so"
add rule ip cni_hostport hostports_all jump hostip_hostports
add rule ip cni_hostport hostports_all jump hostports
add rule ip cni_hostport masquerading ip saddr 10.0.0.2 ip daddr 10.0.0.2 masquerade comment "icee6giejonei6so"
add rule ip cni_hostport masquerading ip saddr 127.0.0.1 ip daddr 10.0.0.2 masquerade comment "icee6giejonei6so"
add rule ip cni_hostport output ip daddr != 192.0.2.0/24 fib daddr type local jump hostports_all
add rule ip cni_hostport prerouting ip daddr != 192.0.2.0/24 fib daddr type local jump hostports_all
"#;

/// The IPv6 dump after ADD without SNAT, from the same test.
const REFERENCE_V6_ADD: &str = r#"
add table ip6 cni_hostport { comment "CNI portmap plugin" ; }
add chain ip6 cni_hostport hostip_hostports
add chain ip6 cni_hostport hostports
add chain ip6 cni_hostport hostports_all
add chain ip6 cni_hostport output { type nat hook output priority -100 ; }
add chain ip6 cni_hostport prerouting { type nat hook prerouting priority -100 ; }
add rule ip6 cni_hostport hostports tcp dport 8080 dnat to [2001:db8::2]:80 comment "icee6giejonei6so"
add rule ip6 cni_hostport hostports tcp dport 8081 dnat to [2001:db8::2]:80 comment "icee6giejonei6so"
add rule ip6 cni_hostport hostports udp dport 8080 dnat to [2001:db8::2]:81 comment "icee6giejonei6so"
add rule ip6 cni_hostport hostports udp dport 8082 dnat to [2001:db8::2]:82 comment "icee6giejonei6so"
add rule ip6 cni_hostport hostports ip6 daddr 2001:db8:a::1 tcp dport 8085 dnat to [2001:db8::2]:85 comment "icee6giejonei6so"
add rule ip6 cni_hostport hostports tcp dport 8086 dnat to [2001:db8::2]:86 comment "icee6giejonei6so"
add rule ip6 cni_hostport hostports_all jump hostip_hostports
add rule ip6 cni_hostport hostports_all jump hostports
add rule ip6 cni_hostport output ip6 daddr != 2001:db8:ff::/48 fib daddr type local jump hostports_all
add rule ip6 cni_hostport prerouting ip6 daddr != 2001:db8:ff::/48 fib daddr type local jump hostports_all
"#;

/// The IPv4 dump after DEL: the skeleton alone.
const REFERENCE_V4_DEL: &str = r#"
add table ip cni_hostport { comment "CNI portmap plugin" ; }
add chain ip cni_hostport hostip_hostports
add chain ip cni_hostport hostports
add chain ip cni_hostport hostports_all
add chain ip cni_hostport masquerading { type nat hook postrouting priority 100 ; }
add chain ip cni_hostport output { type nat hook output priority -100 ; }
add chain ip cni_hostport prerouting { type nat hook prerouting priority -100 ; }
add rule ip cni_hostport hostports_all jump hostip_hostports
add rule ip cni_hostport hostports_all jump hostports
add rule ip cni_hostport output ip daddr != 192.0.2.0/24 fib daddr type local jump hostports_all
add rule ip cni_hostport prerouting ip daddr != 192.0.2.0/24 fib daddr type local jump hostports_all
"#;

const REFERENCE_V6_DEL: &str = r#"
add table ip6 cni_hostport { comment "CNI portmap plugin" ; }
add chain ip6 cni_hostport hostip_hostports
add chain ip6 cni_hostport hostports
add chain ip6 cni_hostport hostports_all
add chain ip6 cni_hostport output { type nat hook output priority -100 ; }
add chain ip6 cni_hostport prerouting { type nat hook prerouting priority -100 ; }
add rule ip6 cni_hostport hostports_all jump hostip_hostports
add rule ip6 cni_hostport hostports_all jump hostports
add rule ip6 cni_hostport output ip6 daddr != 2001:db8:ff::/48 fib daddr type local jump hostports_all
add rule ip6 cni_hostport prerouting ip6 daddr != 2001:db8:ff::/48 fib daddr type local jump hostports_all
"#;

/// ADD of IPv4 with SNAT and IPv6 without gives the reference's tables,
/// and DEL leaves only their skeletons, also when repeated.
#[test]
fn nft_port_mappings_match_reference() {
    privileged("nft_port_mappings_match_reference", |_| {
        let mut nat = NftNatRules::default();
        let owner = nft_owner("icee6giejonei6so");

        nat.add_port_mappings(&owner, &reference_spec(true, true))
            .unwrap();
        nat.add_port_mappings(&owner, &reference_spec(false, false))
            .unwrap();

        for (family, vector) in [("ip", REFERENCE_V4_ADD), ("ip6", REFERENCE_V6_ADD)] {
            let listed = nft_dump(family, "cni_hostport");
            assert_eq!(listed, expected_dump(vector, &listed), "{family}");
        }

        nat.remove_port_mappings(&owner).unwrap();
        nat.remove_port_mappings(&owner).unwrap();

        for (family, vector) in [("ip", REFERENCE_V4_DEL), ("ip6", REFERENCE_V6_DEL)] {
            let listed = nft_dump(family, "cni_hostport");
            assert_eq!(listed, expected_dump(vector, &listed), "{family}");
        }
    });
}

/// CHECK in the order of the reference's "has working CHECK" test, plus a
/// masquerade rule deleted by hand.
#[test]
fn nft_port_mapping_check_lifecycle() {
    privileged("nft_port_mapping_check_lifecycle", |_| {
        let mut nat = NftNatRules::default();
        let owner = nft_owner("icee6giejonei6so");
        let (v4, v6) = (reference_spec(true, false), reference_spec(false, false));
        let check =
            |nat: &mut NftNatRules, spec: &NftPortMapSpec| nat.check_port_mappings(&owner, spec);

        let missing = check(&mut nat, &v4).unwrap_err();
        assert_eq!(missing.kind, KernelErrorKind::NotFound, "{missing}");
        assert!(
            missing
                .to_string()
                .contains("missing hostport rules in \"hostports\" chain"),
            "{missing}"
        );
        assert!(check(&mut nat, &v6).is_err());

        nat.add_port_mappings(&owner, &v4).unwrap();
        nat.add_port_mappings(&owner, &v6).unwrap();
        check(&mut nat, &v4).unwrap();
        check(&mut nat, &v6).unwrap();

        let (v4_snat, v6_snat) = (reference_spec(true, true), reference_spec(false, true));
        let no_snat = check(&mut nat, &v4_snat).unwrap_err();
        assert!(
            no_snat.to_string().contains("\"masquerading\""),
            "{no_snat}"
        );
        assert!(check(&mut nat, &v6_snat).is_err());

        nat.add_port_mappings(&owner, &v4_snat).unwrap();
        nat.add_port_mappings(&owner, &v6_snat).unwrap();
        check(&mut nat, &v4_snat).unwrap();
        check(&mut nat, &v6_snat).unwrap();

        let listing = run(
            "nft",
            &["-a", "list", "chain", "ip", "cni_hostport", "masquerading"],
        );
        let localhost = listing
            .lines()
            .find(|line| line.contains("ip saddr 127.0.0.1"))
            .unwrap_or_else(|| panic!("no localhost rule: {listing}"));
        let handle = localhost.rsplit("handle ").next().unwrap().trim();
        run(
            "nft",
            &[
                "delete",
                "rule",
                "ip",
                "cni_hostport",
                "masquerading",
                "handle",
                handle,
            ],
        );
        let deleted = check(&mut nat, &v4_snat).unwrap_err();
        assert!(
            deleted.to_string().contains("\"masquerading\""),
            "{deleted}"
        );
        check(&mut nat, &v6_snat).unwrap();

        nat.remove_port_mappings(&owner).unwrap();
        assert!(check(&mut nat, &v4).is_err());
        assert!(check(&mut nat, &v6).is_err());
    });
}

/// With `masqAll`, one masquerade rule matches any source, in each family,
/// as in the reference's MasqAll tests.
#[test]
fn nft_port_mappings_masq_all() {
    privileged("nft_port_mappings_masq_all", |_| {
        let mut nat = NftNatRules::default();
        let owner = nft_owner("icee6giejonei6so");
        for (address, family, any) in [
            (
                "10.0.0.2/24",
                "ip",
                "ip saddr 0.0.0.0/0 ip daddr 10.0.0.2 masquerade",
            ),
            (
                "2001:db8::2/64",
                "ip6",
                "ip6 saddr ::/0 ip6 daddr 2001:db8::2 masquerade",
            ),
        ] {
            let spec = NftPortMapSpec {
                container_address: address.parse().unwrap(),
                mappings: vec![nft_mapping(8080, 80, false, None)],
                snat: true,
                masq_all: true,
                conditions: Vec::new(),
            };

            nat.add_port_mappings(&owner, &spec).unwrap();

            let listed = nft_dump(family, "cni_hostport");
            let masquerading: Vec<&String> = listed
                .iter()
                .filter(|line| line.contains(" masquerading "))
                .collect();
            let expected = format!(
                "add rule {family} cni_hostport masquerading {any} comment \"icee6giejonei6so\""
            );
            assert_eq!(masquerading.len(), 2, "the chain and one rule: {listed:#?}");
            assert_eq!(masquerading[1], &expected);
            assert!(listed.contains(&format!(
                "add rule {family} cni_hostport prerouting fib daddr type local jump hostports_all"
            )));
            nat.check_port_mappings(&owner, &spec).unwrap();
        }
    });
}

/// The masquerade dump of the reference's `ipmasq_nftables_linux_test.go`
/// after its four attachments, and after a fifth reused the first's
/// address and the first was removed.
const REFERENCE_MASQUERADE: &str = r#"
add table inet cni_plugins_masquerade { comment "Masquerading for plugins from github.com/containernetworking/plugins" ; }
add chain inet cni_plugins_masquerade masq_checks { comment "Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet" ; }
add chain inet cni_plugins_masquerade postrouting { type nat hook postrouting priority 100 ; }
add rule inet cni_plugins_masquerade masq_checks ip saddr == 192.168.1.2 ip daddr != 192.168.1.0/24 masquerade comment "6fd94d501e58f0aa-d750b2c8f0f25d5f, net: unit-test, if: eth0, id: two"
add rule inet cni_plugins_masquerade masq_checks ip6 saddr == 2001:db8::2 ip6 daddr != 2001:db8::/64 masquerade comment "6fd94d501e58f0aa-d750b2c8f0f25d5f, net: unit-test, if: eth0, id: two"
add rule inet cni_plugins_masquerade masq_checks ip saddr == 192.168.99.5 ip daddr != 192.168.99.0/24 masquerade comment "6fd94d501e58f0aa-a4d4adb82b669cfe, net: unit-test, if: eth0, id: three"
add rule inet cni_plugins_masquerade masq_checks ip saddr == 10.0.0.5 ip daddr != 10.0.0.0/24 masquerade comment "82783ef24bdc7036-acb19d111858e348, net: alternate, if: net1, id: three"
add rule inet cni_plugins_masquerade masq_checks ip saddr == 10.0.0.6 ip daddr != 10.0.0.0/24 masquerade comment "82783ef24bdc7036-acb19d111858e348, net: alternate, if: net1, id: three"
add rule inet cni_plugins_masquerade masq_checks ip saddr == 10.0.1.7 ip daddr != 10.0.1.0/24 masquerade comment "82783ef24bdc7036-acb19d111858e348, net: alternate, if: net1, id: three"
add rule inet cni_plugins_masquerade masq_checks ip6 saddr == 2001:db8::5 ip6 daddr != 2001:db8::/64 masquerade comment "82783ef24bdc7036-acb19d111858e348, net: alternate, if: net1, id: three"
add rule inet cni_plugins_masquerade masq_checks ip6 saddr == 2001:db8::6 ip6 daddr != 2001:db8::/64 masquerade comment "82783ef24bdc7036-acb19d111858e348, net: alternate, if: net1, id: three"
add rule inet cni_plugins_masquerade masq_checks ip6 saddr == 2001:db8:1::7 ip6 daddr != 2001:db8:1::/64 masquerade comment "82783ef24bdc7036-acb19d111858e348, net: alternate, if: net1, id: three"
add rule inet cni_plugins_masquerade masq_checks ip saddr == 192.168.1.1 ip daddr != 192.168.1.0/24 masquerade comment "6fd94d501e58f0aa-e766de567ef6c543, net: unit-test, if: eth0, id: four"
add rule inet cni_plugins_masquerade postrouting ip daddr == 224.0.0.0/4  return
add rule inet cni_plugins_masquerade postrouting ip6 daddr == ff00::/8  return
add rule inet cni_plugins_masquerade postrouting goto masq_checks
"#;

/// The reference's masquerade test on the real kernel: a repeated ADD
/// replaces the attachment's rules, and DEL removes only its own, also
/// when another attachment has the same address.
#[test]
fn nft_masquerade_matches_reference() {
    privileged("nft_masquerade_matches_reference", |_| {
        let mut nat = NftNatRules::default();
        let owner = |network: &str, ifname: &str, id: &str| Owner {
            network: network.into(),
            container_id: id.into(),
            ifname: ifname.into(),
        };
        let nets =
            |texts: &[&str]| -> Vec<IpNet> { texts.iter().map(|t| t.parse().unwrap()).collect() };
        let attachments = [
            (owner("unit-test", "eth0", "one"), nets(&["192.168.1.1/24"])),
            (
                owner("unit-test", "eth0", "two"),
                nets(&["192.168.1.2/24", "2001:db8::2/64"]),
            ),
            (
                owner("unit-test", "eth0", "three"),
                nets(&["192.168.99.5/24"]),
            ),
            (
                owner("alternate", "net1", "three"),
                nets(&[
                    "10.0.0.5/24",
                    "10.0.0.6/24",
                    "10.0.1.7/24",
                    "2001:db8::5/64",
                    "2001:db8::6/64",
                    "2001:db8:1::7/64",
                ]),
            ),
        ];
        for (index, (owner, addresses)) in attachments.iter().enumerate() {
            nat.add_masquerade(owner, addresses).unwrap();
            // A repeated ADD replaces the rules instead of adding a second
            // set; done right away, it keeps the reference's rule order.
            if index == 1 {
                nat.add_masquerade(owner, addresses).unwrap();
            }
        }

        let four = owner("unit-test", "eth0", "four");
        nat.add_masquerade(&four, &nets(&["192.168.1.1/24"]))
            .unwrap();
        nat.remove_masquerade(&attachments[0].0).unwrap();
        nat.remove_masquerade(&attachments[0].0).unwrap();

        let listed = nft_dump("inet", "cni_plugins_masquerade");
        assert_eq!(listed, expected_dump(REFERENCE_MASQUERADE, &listed));

        for (owner, _) in &attachments[1..] {
            nat.remove_masquerade(owner).unwrap();
        }
        nat.remove_masquerade(&four).unwrap();
        let left = nft_dump("inet", "cni_plugins_masquerade");
        assert_eq!(
            left.len(),
            6,
            "table, two chains, three postrouting rules: {left:#?}"
        );
    });
}

/// Removal in a namespace without the tables succeeds and creates nothing.
#[test]
fn nft_nat_removal_without_tables() {
    privileged("nft_nat_removal_without_tables", |_| {
        let mut nat = NftNatRules::default();
        nat.remove_port_mappings(&seed_owner()).unwrap();
        nat.remove_masquerade(&seed_owner()).unwrap();
        let listing = run("nft", &["list", "ruleset"]);
        assert_eq!(listing.trim(), "", "{listing}");
    });
}
