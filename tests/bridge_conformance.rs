//! Bridge and portmap conformance on the real kernel, after the checklists
//! of the reference plugins' test suites (cni-spec.md 7.2 and 7.4). The
//! tests cover every CNI version end to end, addresses already on the
//! bridge, promiscuous mode and requested MACs, portmap CHECK, traffic and
//! parallel DELs, and the options cniwasm rejects. Where the reference plugins (Debian's
//! containernetworking-plugins in /usr/lib/cni) support a case, they run the
//! same input in a host namespace of their own and must agree.

use cniwasm_integration_tests::reference::{REFERENCE_PLUGIN_DIR, ReferenceRun};
use cniwasm_integration_tests::{
    CliOutput, HttpServer, Netns, Scenario, cniwasm_binary, container_id, http_get,
    normalize_result, plugin_dir, require_root, shared_compile_cache,
};
use serde_json::{Map, Value, json};

const NETWORK: &str = "confnet";
const BRIDGE: &str = "cfbr0";
const GATEWAY: &str = "10.244.40.1";

/// The versions the reference plugins in /usr/lib/cni accept (1.1.1 stops
/// at 1.0.0).
const REFERENCE_VERSIONS: [&str; 6] = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// Returns a bridge + host-local list on 10.244.40.0/24 with a default route, the
/// bridge options overridden by `bridge`, and `more` plugins after it.
fn bridge_list(version: &str, bridge: Value, more: &[Value]) -> Value {
    let mut plugin = json!({
        "type": "bridge", "bridge": BRIDGE, "isGateway": true,
        "ipam": {"type": "host-local", "subnet": "10.244.40.0/24",
                 "routes": [{"dst": "0.0.0.0/0"}]}
    });
    for (key, value) in bridge.as_object().expect("bridge options are an object") {
        plugin[key] = value.clone();
    }
    let mut plugins = vec![plugin];
    plugins.extend_from_slice(more);
    json!({"cniVersion": version, "name": NETWORK, "plugins": plugins})
}

fn portmap() -> Value {
    json!({"type": "portmap", "capabilities": {"portMappings": true}})
}

/// Creates a scenario whose configuration directory contains `list`.
fn scenario_with(list: &Value) -> Scenario {
    let scenario = Scenario::new();
    scenario.write_config("10-conf.conflist", &list.to_string());
    scenario
}

fn add(scenario: &Scenario, container: &Netns, env: &[(&str, &str)]) -> CliOutput {
    scenario.cniwasm(&["add", NETWORK, container.path().to_str().unwrap()], env)
}

fn del(scenario: &Scenario, container: &Netns, env: &[(&str, &str)]) {
    scenario
        .cniwasm(&["del", NETWORK, container.path().to_str().unwrap()], env)
        .assert_success();
}

/// `ip -j -d link show NAME` in `netns`: one link object.
fn link(netns: &Netns, name: &str) -> Value {
    netns.ip_json(&["-d", "link", "show", name])[0].clone()
}

fn flags(link: &Value) -> Vec<String> {
    link["flags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|flag| flag.as_str().map(str::to_string))
        .collect()
}

fn sorted_links(netns: &Netns) -> Vec<String> {
    let mut names = netns.link_names();
    names.sort();
    names
}

/// Asserts that the namespace contains lo, the bridge and `veths` links named
/// `veth` and 8 hex digits, each a port of the bridge. Returns their names.
fn assert_host_links(host: &Netns, veths: usize) -> Vec<String> {
    let names = sorted_links(host);
    let ports: Vec<String> = names
        .iter()
        .filter(|name| name.starts_with("veth") && name.len() == 12)
        .cloned()
        .collect();
    assert_eq!(names.len(), 2 + veths, "host links: {names:?}");
    assert!(names.contains(&"lo".to_string()), "host links: {names:?}");
    assert!(names.contains(&BRIDGE.to_string()), "host links: {names:?}");
    assert_eq!(ports.len(), veths, "host links: {names:?}");
    for port in &ports {
        assert_eq!(link(host, port)["master"], json!(BRIDGE), "{port}");
    }
    ports
}

/// One attachment driven through the reference plugins in a scenario of
/// its own, with the container id cniwasm derives for `our_container`.
struct Reference {
    scenario: Scenario,
    container: Netns,
    list: Value,
    id: String,
    netns: String,
    capability_args: Map<String, Value>,
}

impl Reference {
    fn new(list: &Value, our_container: &Netns, cap_args: &str) -> Self {
        let scenario = Scenario::new();
        let container = Netns::create("cwr");
        let mut list = list.clone();
        list["plugins"][0]["ipam"]["dataDir"] = json!(scenario.ipam_dir());
        Self {
            id: container_id(our_container.path().to_str().unwrap()),
            netns: container.path().display().to_string(),
            capability_args: serde_json::from_str(cap_args).expect("capability arguments"),
            scenario,
            container,
            list,
        }
    }

    fn run<'a>(&'a self, env: &'a [(&'a str, &'a str)]) -> ReferenceRun<'a> {
        ReferenceRun {
            host: &self.scenario.host,
            list: &self.list,
            container_id: &self.id,
            netns_path: &self.netns,
            ifname: "eth0",
            capability_args: &self.capability_args,
            plugin_dir: REFERENCE_PLUGIN_DIR,
            extra_env: env,
        }
    }
}

/// Asserts the result shape of `version`: the `ip4` object of 0.1.0 and
/// 0.2.0, or the interfaces and ips of later versions. Returns the host
/// veth's name when the result lists it.
fn assert_result_shape(version: &str, result: &Value, container: &Netns) -> Option<String> {
    assert_eq!(result["cniVersion"], json!(version), "{result}");
    if version == "0.1.0" || version == "0.2.0" {
        assert_eq!(result["ip4"]["ip"], json!("10.244.40.2/24"), "{result}");
        assert_eq!(result["ip4"]["gateway"], json!(GATEWAY), "{result}");
        assert!(result.get("interfaces").is_none(), "{result}");
        assert!(result.get("ips").is_none(), "{result}");
        return None;
    }
    let interfaces = result["interfaces"].as_array().expect("interfaces");
    assert_eq!(interfaces.len(), 3, "{result}");
    assert_eq!(interfaces[0]["name"], json!(BRIDGE));
    assert_eq!(interfaces[2]["name"], json!("eth0"));
    assert_eq!(interfaces[2]["sandbox"], json!(container.path()));
    for interface in interfaces {
        assert_eq!(interface["mac"].as_str().unwrap().len(), 17, "{interface}");
    }
    let ip = &result["ips"][0];
    assert_eq!(ip["address"], json!("10.244.40.2/24"), "{result}");
    assert_eq!(ip["gateway"], json!(GATEWAY));
    assert_eq!(ip["interface"], json!(2));
    assert_eq!(ip.get("version").is_some(), version.starts_with("0."));
    interfaces[1]["name"].as_str().map(str::to_string)
}

/// Asserts that the container end is a veth, up, with the first address
/// and a default route through the gateway.
fn assert_container_interface(container: &Netns) {
    let eth0 = link(container, "eth0");
    assert_eq!(eth0["linkinfo"]["info_kind"], json!("veth"), "{eth0}");
    assert!(flags(&eth0).contains(&"UP".to_string()), "{eth0}");
    assert_eq!(eth0["operstate"], json!("UP"), "{eth0}");
    assert_eq!(container.global_addresses("eth0"), ["10.244.40.2/24"]);
    let routes = container.ip_json(&["route", "show", "default"]);
    assert_eq!(routes[0]["gateway"], json!(GATEWAY), "{routes}");
    assert_eq!(routes[0]["dev"], json!("eth0"), "{routes}");
}

/// Runs ADD of two containers and DEL of both with `version`, checking the
/// result, the host's links, the bridge's ifindex and MAC, and the container
/// end. The first ADD runs through the reference plugins too when they
/// support `version`, and the results must agree.
fn bridge_end_to_end(version: &str) {
    let list = bridge_list(version, json!({}), &[]);
    let scenario = scenario_with(&list);
    let first = Netns::create("cwc");

    let result = add(&scenario, &first, &[]).assert_success().json();
    let listed_veth = assert_result_shape(version, &result, &first);
    let veths = assert_host_links(&scenario.host, 1);
    if let Some(listed) = listed_veth {
        assert_eq!(veths, [listed]);
    }
    let bridge = link(&scenario.host, BRIDGE);
    assert_ne!(
        link(&scenario.host, &veths[0])["address"],
        bridge["address"]
    );
    assert_eq!(scenario.host.global_addresses(BRIDGE), ["10.244.40.1/24"]);
    assert_container_interface(&first);

    let second = Netns::create("cwc");
    add(&scenario, &second, &[]).assert_success();
    assert_host_links(&scenario.host, 2);
    assert_eq!(link(&scenario.host, BRIDGE)["ifindex"], bridge["ifindex"]);
    assert_eq!(link(&scenario.host, BRIDGE)["address"], bridge["address"]);

    del(&scenario, &first, &[]);
    del(&scenario, &second, &[]);
    assert_eq!(sorted_links(&scenario.host), [BRIDGE, "lo"]);
    assert_eq!(first.link_names(), ["lo"]);
    assert!(scenario.reservations(NETWORK).is_empty());

    if REFERENCE_VERSIONS.contains(&version) {
        let reference = Reference::new(&list, &first, "{}");
        let run = reference.run(&[]);
        let theirs = run.add().expect("reference ADD");
        assert_eq!(
            normalize_result(&result),
            normalize_result(&theirs),
            "{version}"
        );
        assert_host_links(&reference.scenario.host, 1);
        run.del(Some(&theirs)).expect("reference DEL");
        assert_eq!(sorted_links(&reference.scenario.host), [BRIDGE, "lo"]);
    }
}

#[test]
fn bridge_version_0_1_0() {
    if require_root() {
        bridge_end_to_end("0.1.0");
    }
}

#[test]
fn bridge_version_0_2_0() {
    if require_root() {
        bridge_end_to_end("0.2.0");
    }
}

#[test]
fn bridge_version_0_3_0() {
    if require_root() {
        bridge_end_to_end("0.3.0");
    }
}

#[test]
fn bridge_version_0_3_1() {
    if require_root() {
        bridge_end_to_end("0.3.1");
    }
}

#[test]
fn bridge_version_0_4_0() {
    if require_root() {
        bridge_end_to_end("0.4.0");
    }
}

#[test]
fn bridge_version_1_0_0() {
    if require_root() {
        bridge_end_to_end("1.0.0");
    }
}

#[test]
fn bridge_version_1_1_0() {
    if require_root() {
        bridge_end_to_end("1.1.0");
    }
}

/// Creates bridge BRIDGE in `host`, up, with `address`.
fn existing_bridge(host: &Netns, address: &str) {
    host.exec_ok(&["ip", "link", "add", BRIDGE, "type", "bridge"]);
    host.exec_ok(&["ip", "addr", "add", address, "dev", BRIDGE]);
    host.exec_ok(&["ip", "link", "set", BRIDGE, "up"]);
}

/// Runs ADD of `list` on a bridge that already has `address`, with cniwasm
/// and with the reference plugins. Returns cniwasm's output and the
/// bridge's global addresses after it, and asserts that the reference
/// plugins reached the same outcome and addresses.
fn add_on_existing_bridge(list: &Value, address: &str) -> (CliOutput, Vec<String>) {
    let scenario = scenario_with(list);
    existing_bridge(&scenario.host, address);
    let container = Netns::create("cwc");
    let output = add(&scenario, &container, &[]);
    let addresses = scenario.host.global_addresses(BRIDGE);

    let reference = Reference::new(list, &container, "{}");
    existing_bridge(&reference.scenario.host, address);
    let run = reference.run(&[]);
    let theirs = run.add();
    assert_eq!(
        output.status.success(),
        theirs.is_ok(),
        "cniwasm: {} / reference: {theirs:?}",
        output.stdout
    );
    assert_eq!(addresses, reference.scenario.host.global_addresses(BRIDGE));
    if let Ok(result) = &theirs {
        run.del(Some(result)).expect("reference DEL");
    }
    if output.status.success() {
        del(&scenario, &container, &[]);
    } else {
        // A failed ADD keeps the bridge it did not create and leaves nothing else.
        assert_eq!(sorted_links(&scenario.host), [BRIDGE, "lo"]);
        assert!(scenario.reservations(NETWORK).is_empty());
    }
    (output, addresses)
}

/// Returns a 1.0.0 bridge list whose host-local range is `subnet`, without
/// routes.
fn subnet_list(subnet: &str, bridge: Value) -> Value {
    let mut list = bridge_list("1.0.0", bridge, &[]);
    list["plugins"][0]["ipam"] = json!({"type": "host-local", "subnet": subnet});
    list
}

/// Asserts that ADD on a bridge with `existing` fails for `subnet`, with a
/// message naming the bridge and `gateway`, and keeps `existing`.
fn assert_add_blocked(subnet: &str, gateway: &str, existing: &str) {
    let list = subnet_list(subnet, json!({}));
    let (output, addresses) = add_on_existing_bridge(&list, existing);

    assert!(!output.status.success(), "ADD succeeded: {}", output.stdout);
    let message = output.json()["msg"].as_str().unwrap().to_string();
    assert!(message.contains(BRIDGE), "{message}");
    assert!(message.contains(gateway), "{message}");
    assert_eq!(addresses, [existing]);
}

#[test]
fn other_address_blocks_add() {
    if require_root() {
        assert_add_blocked("10.1.0.0/16", "10.1.0.1/16", "10.0.0.1/8");
    }
}

#[test]
fn overlapping_ipv6_prefix_blocks_add() {
    if require_root() {
        assert_add_blocked("fd00:92::/64", "fd00:92::1/64", "fd00:92::1/48");
    }
}

#[test]
fn force_address_replaces_old() {
    if !require_root() {
        return;
    }
    let list = subnet_list("10.1.0.0/16", json!({"forceAddress": true}));
    let (output, addresses) = add_on_existing_bridge(&list, "10.0.0.1/8");

    output.assert_success();
    assert_eq!(addresses, ["10.1.0.1/16"]);
}

#[test]
fn disjoint_ipv6_prefix_coexists() {
    if !require_root() {
        return;
    }
    let list = subnet_list("fd00:91::/64", json!({}));
    let (output, addresses) = add_on_existing_bridge(&list, "fd00:90::1/64");

    output.assert_success();
    assert_eq!(addresses, ["fd00:90::1/64", "fd00:91::1/64"]);
}

#[test]
fn promisc_mode_on_bridge() {
    if !require_root() {
        return;
    }
    let list = bridge_list("1.0.0", json!({"promiscMode": true}), &[]);
    let scenario = scenario_with(&list);
    let container = Netns::create("cwc");

    add(&scenario, &container, &[]).assert_success();
    let bridge = link(&scenario.host, BRIDGE);
    assert!(flags(&bridge).contains(&"PROMISC".to_string()), "{bridge}");
    assert_eq!(bridge["promiscuity"], json!(1), "{bridge}");
    scenario
        .cniwasm(&["check", NETWORK, container.path().to_str().unwrap()], &[])
        .assert_success();

    let reference = Reference::new(&list, &container, "{}");
    let run = reference.run(&[]);
    let theirs = run.add().expect("reference ADD");
    assert_eq!(
        link(&reference.scenario.host, BRIDGE)["promiscuity"],
        bridge["promiscuity"]
    );
    run.del(Some(&theirs)).expect("reference DEL");
    del(&scenario, &container, &[]);
}

/// Two containers on ports with the isolated flag reach the gateway but not
/// each other. The reference bridge 1.1.1 has no `portIsolation`, so only
/// cniwasm runs here.
#[test]
fn port_isolation() {
    if !require_root() {
        return;
    }
    let list = bridge_list("1.0.0", json!({"portIsolation": true}), &[]);
    let scenario = scenario_with(&list);
    let containers = [Netns::create("cwc"), Netns::create("cwc")];

    let results: Vec<Value> = containers
        .iter()
        .map(|container| add(&scenario, container, &[]).assert_success().json())
        .collect();
    for port in assert_host_links(&scenario.host, 2) {
        let data = &link(&scenario.host, &port)["linkinfo"]["info_slave_data"];
        assert_eq!(data["isolated"], json!(true), "{port}: {data}");
    }
    let address = |result: &Value| {
        let cidr = result["ips"][0]["address"].as_str().unwrap().to_string();
        cidr.split('/').next().unwrap().to_string()
    };
    let ping = |from: &Netns, to: &str| {
        from.exec(&["busybox", "ping", "-c", "1", "-W", "1", to])
            .status
            .success()
    };
    assert!(ping(&containers[0], GATEWAY), "gateway unreachable");
    assert!(
        !ping(&containers[0], &address(&results[1])),
        "isolated ports reached each other"
    );

    for container in &containers {
        del(&scenario, container, &[]);
    }
    assert_eq!(sorted_links(&scenario.host), [BRIDGE, "lo"]);
}

/// Returns the container's `accept_dad` and `enhanced_dad` of eth0.
fn dad_sysctls(container: &Netns) -> [String; 2] {
    ["accept_dad", "enhanced_dad"].map(|key| {
        let path = format!("/proc/sys/net/ipv6/conf/eth0/{key}");
        container.exec_ok(&["cat", &path]).trim().to_string()
    })
}

/// `enabledad` turns on duplicate address detection in the container, as
/// the reference bridge does; without it detection is off. The container's
/// default `enhanced_dad` is 0 first, so that the plugins must set it.
#[test]
fn enabledad_matches_reference() {
    if !require_root() {
        return;
    }
    let disable_enhanced = "echo 0 > /proc/sys/net/ipv6/conf/default/enhanced_dad";
    for (enabled, expected) in [(true, ["1", "1"]), (false, ["0", "0"])] {
        let list = bridge_list("1.0.0", json!({"enabledad": enabled}), &[]);
        let scenario = scenario_with(&list);
        let container = Netns::create("cwc");
        container.exec_ok(&["sh", "-c", disable_enhanced]);
        let reference = Reference::new(&list, &container, "{}");
        reference.container.exec_ok(&["sh", "-c", disable_enhanced]);

        add(&scenario, &container, &[]).assert_success();
        let run = reference.run(&[]);
        let theirs = run.add().expect("reference ADD");

        assert_eq!(dad_sysctls(&container), expected, "enabledad {enabled}");
        assert_eq!(
            dad_sysctls(&reference.container),
            expected,
            "reference, enabledad {enabled}"
        );
        run.del(Some(&theirs)).expect("reference DEL");
        del(&scenario, &container, &[]);
    }
}

/// Runs ADD with a MAC requested through `bridge` options, `cni_args` and
/// `cap_args`. The container end and the result must carry `mac`, as with
/// the reference plugins.
fn assert_requested_mac(mac: &str, bridge: Value, cni_args: &str, cap_args: &str) {
    let list = bridge_list("1.0.0", bridge, &[]);
    let scenario = scenario_with(&list);
    let container = Netns::create("cwc");
    let env = [("CNI_ARGS", cni_args), ("CAP_ARGS", cap_args)];

    let result = add(&scenario, &container, &env).assert_success().json();
    assert_eq!(result["interfaces"][2]["mac"], json!(mac), "{result}");
    assert_eq!(link(&container, "eth0")["address"], json!(mac));

    let reference = Reference::new(&list, &container, cap_args);
    let reference_env = [("CNI_ARGS", cni_args)];
    let run = reference.run(&reference_env);
    let theirs = run.add().expect("reference ADD");
    assert_eq!(theirs["interfaces"][2]["mac"], json!(mac), "{theirs}");
    assert_eq!(link(&reference.container, "eth0")["address"], json!(mac));
    run.del(Some(&theirs)).expect("reference DEL");
    del(&scenario, &container, &env);
}

#[test]
fn mac_from_cni_args() {
    if require_root() {
        let mac = "c2:11:22:33:44:01";
        assert_requested_mac(mac, json!({}), &format!("IgnoreUnknown=1;MAC={mac}"), "{}");
    }
}

#[test]
fn mac_from_args_cni() {
    if require_root() {
        let mac = "c2:11:22:33:44:02";
        let bridge = json!({"args": {"cni": {"mac": mac}}});
        assert_requested_mac(mac, bridge, "IgnoreUnknown=1;MAC=c2:11:22:33:44:ff", "{}");
    }
}

#[test]
fn mac_from_runtime_config() {
    if require_root() {
        let mac = "c2:11:22:33:44:03";
        let bridge =
            json!({"capabilities": {"mac": true}, "args": {"cni": {"mac": "c2:11:22:33:44:fe"}}});
        let cap_args = json!({"mac": mac}).to_string();
        assert_requested_mac(mac, bridge, "", &cap_args);
    }
}

const MAPPINGS: &str =
    r#"{"portMappings":[{"hostPort":8081,"containerPort":80,"protocol":"tcp"}]}"#;

/// Creates in `dir` links named after the plugin types to the cniwasm
/// binary, which then runs as that plugin (exec mode), and returns `dir`.
fn exec_mode_links(dir: &std::path::Path) -> String {
    for plugin in ["bridge", "host-local", "portmap"] {
        std::os::unix::fs::symlink(cniwasm_binary(), dir.join(plugin)).unwrap();
    }
    dir.display().to_string()
}

/// Deletes the first nat rule in `host` that starts with `prefix` and ends
/// with `suffix`; returns the rule's arguments after `-A`, to add it again.
fn delete_nat_rule(host: &Netns, prefix: &str, suffix: &str) -> Vec<String> {
    let rules = host.nat_rules();
    let rule = rules
        .iter()
        .find(|rule| rule.starts_with(prefix) && rule.ends_with(suffix))
        .unwrap_or_else(|| panic!("no rule {prefix} ... {suffix} in {rules:#?}"));
    let arguments: Vec<String> = rule["-A ".len()..]
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let mut command = vec!["iptables", "-w", "-t", "nat", "-D"];
    command.extend(arguments.iter().map(String::as_str));
    host.exec_ok(&command);
    arguments
}

fn append_nat_rule(host: &Netns, arguments: &[String]) {
    let mut command = vec!["iptables", "-w", "-t", "nat", "-A"];
    command.extend(arguments.iter().map(String::as_str));
    host.exec_ok(&command);
}

/// Runs portmap CHECK through `plugin_dir` (exec-mode links or the
/// reference plugins) at each step of an attachment's life, and returns
/// each step's name and CHECK outcome.
fn portmap_check_steps(
    plugin_dir: &str,
    env: &[(&str, &str)],
) -> Vec<(&'static str, Result<(), String>)> {
    let scenario = Scenario::new();
    let container = Netns::create("cwc");
    let netns = container.path().display().to_string();
    let mut list = bridge_list("1.0.0", json!({}), &[portmap()]);
    list["plugins"][0]["ipam"]["dataDir"] = json!(scenario.ipam_dir());
    let only_portmap = json!({"cniVersion": "1.0.0", "name": NETWORK, "plugins": [portmap()]});
    let mappings: Map<String, Value> = serde_json::from_str(MAPPINGS).unwrap();
    let no_mappings = Map::new();
    let run = |list, capability_args| ReferenceRun {
        host: &scenario.host,
        list,
        container_id: "portmap-check",
        netns_path: &netns,
        ifname: "eth0",
        capability_args,
        plugin_dir,
        extra_env: env,
    };
    let check = |result: &Value| run(&only_portmap, &mappings).check(result);
    let mut steps = Vec::new();

    // The container has its address, but no port mapping exists yet.
    let bare = run(&list, &no_mappings)
        .add()
        .expect("ADD without mappings");
    steps.push(("before ADD", check(&bare)));
    run(&list, &no_mappings)
        .del(Some(&bare))
        .expect("DEL without mappings");

    let result = run(&list, &mappings).add().expect("ADD with mappings");
    steps.push(("after ADD", check(&result)));
    for (name, prefix, suffix) in [
        (
            "without SETMARK jump",
            "-A CNI-DN-",
            "-j CNI-HOSTPORT-SETMARK",
        ),
        (
            "without MASQ rule",
            "-A CNI-HOSTPORT-MASQ ",
            "-j MASQUERADE",
        ),
    ] {
        let rule = delete_nat_rule(&scenario.host, prefix, suffix);
        steps.push((name, check(&result)));
        append_nat_rule(&scenario.host, &rule);
        steps.push(("restored", check(&result)));
    }

    // DEL of portmap alone, so that the address stays in the container.
    run(&only_portmap, &mappings)
        .del(Some(&result))
        .expect("portmap DEL");
    steps.push(("after DEL", check(&result)));
    run(&list, &mappings).del(Some(&result)).expect("DEL");
    steps
}

#[test]
fn portmap_check_tracks_rules() {
    if !require_root() {
        return;
    }
    let plugins = plugin_dir().display().to_string();
    let compile_cache = shared_compile_cache().display().to_string();
    let env = [
        ("CNIWASM_PLUGIN_PATH", plugins.as_str()),
        ("CNIWASM_COMPILE_CACHE", compile_cache.as_str()),
    ];
    let links_dir = tempfile::tempdir().expect("a temporary directory");
    let links = exec_mode_links(links_dir.path());
    let ours = portmap_check_steps(&links, &env);
    let theirs = portmap_check_steps(REFERENCE_PLUGIN_DIR, &[]);

    let outcomes = |steps: &[(&str, Result<(), String>)]| -> Vec<(String, bool)> {
        steps
            .iter()
            .map(|(name, outcome)| (name.to_string(), outcome.is_ok()))
            .collect()
    };
    let expected: Vec<(String, bool)> = [
        ("before ADD", false),
        ("after ADD", true),
        ("without SETMARK jump", false),
        ("restored", true),
        ("without MASQ rule", false),
        ("restored", true),
        ("after DEL", false),
    ]
    .iter()
    .map(|(name, ok)| (name.to_string(), *ok))
    .collect();
    assert_eq!(outcomes(&ours), expected, "{ours:#?}");

    // The reference portmap (1.1.1) fails every CHECK of an IPv4-only
    // container: it also looks for the chain in ip6tables. Where rules are
    // missing, it must name the IPv4 check; elsewhere only that IPv6 lookup
    // may fail. It does not check the shared MASQ chain.
    for ((name, ok), (_, outcome)) in expected.iter().zip(&theirs) {
        let message = outcome.as_ref().expect_err("the reference CHECK passed");
        let failed_on = if *ok || name == "without MASQ rule" {
            "could not check ipv6 dnat"
        } else {
            "could not check ipv4 dnat"
        };
        assert!(message.contains(failed_on), "{name}: {message}");
    }
}

#[test]
fn portmap_host_address_and_hairpin() {
    if !require_root() {
        return;
    }
    let list = bridge_list("1.0.0", json!({"hairpinMode": true}), &[portmap()]);
    let scenario = scenario_with(&list);
    let container = Netns::create("cwc");
    let env = [("CAP_ARGS", MAPPINGS)];
    add(&scenario, &container, &env).assert_success();
    let _server = HttpServer::start(&container, 80, "mapped through the gateway");
    let url = format!("http://{GATEWAY}:8081/");

    // From the host namespace to its own bridge address, then from the
    // container back to itself through the mapping.
    assert_eq!(
        http_get(&scenario.host, &url).as_deref(),
        Some("mapped through the gateway")
    );
    assert_eq!(
        http_get(&container, &url).as_deref(),
        Some("mapped through the gateway")
    );

    del(&scenario, &container, &env);
    assert_eq!(http_get(&scenario.host, &url), None);
}

/// Returns the names of the nat chains in `rules`, from their `:NAME` declarations.
fn nat_chains(rules: &[String]) -> Vec<String> {
    rules
        .iter()
        .filter_map(|rule| rule.strip_prefix(':'))
        .filter_map(|declaration| declaration.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn parallel_dels_keep_shared_chains() {
    if !require_root() {
        return;
    }
    let list = bridge_list("1.0.0", json!({}), &[portmap()]);
    let scenario = scenario_with(&list);
    let containers: Vec<Netns> = (0..4).map(|_| Netns::create("cwc")).collect();
    let cap_args: Vec<String> = (0..containers.len())
        .map(|index| {
            json!({"portMappings": [{"hostPort": 8200 + index, "containerPort": 80, "protocol": "tcp"}]})
                .to_string()
        })
        .collect();
    for (container, caps) in containers.iter().zip(&cap_args) {
        add(&scenario, container, &[("CAP_ARGS", caps)]).assert_success();
    }
    let chains = nat_chains(&scenario.host.nat_rules());
    let per_container = chains.iter().filter(|chain| chain.starts_with("CNI-DN-"));
    assert_eq!(per_container.count(), containers.len(), "{chains:?}");

    std::thread::scope(|scope| {
        for (container, caps) in containers.iter().zip(&cap_args) {
            let scenario = &scenario;
            scope.spawn(move || del(scenario, container, &[("CAP_ARGS", caps)]));
        }
    });

    let rules = scenario.host.nat_rules();
    let chains = nat_chains(&rules);
    assert!(
        !chains.iter().any(|chain| chain.starts_with("CNI-DN-")),
        "{rules:#?}"
    );
    for shared in [
        "CNI-HOSTPORT-DNAT",
        "CNI-HOSTPORT-SETMARK",
        "CNI-HOSTPORT-MASQ",
    ] {
        assert!(
            chains.contains(&shared.to_string()),
            "{shared} missing: {rules:#?}"
        );
    }
    for entry in ["-A PREROUTING ", "-A OUTPUT ", "-A POSTROUTING "] {
        assert!(
            rules
                .iter()
                .any(|rule| rule.starts_with(entry) && rule.contains("-j CNI-HOSTPORT-")),
            "no {entry}jump to the shared chains: {rules:#?}"
        );
    }
    assert!(scenario.reservations(NETWORK).is_empty());
    assert_eq!(sorted_links(&scenario.host), [BRIDGE, "lo"]);
}

/// Asserts that ADD of `list` fails with `code` and a message naming
/// `key`, and leaves nothing behind.
fn assert_add_rejected(list: &Value, code: u64, key: &str) {
    let scenario = scenario_with(list);
    let container = Netns::create("cwc");

    let output = add(&scenario, &container, &[("CAP_ARGS", MAPPINGS)]);

    assert!(
        !output.status.success(),
        "{key}: ADD succeeded: {}",
        output.stdout
    );
    let error = output.json();
    assert_eq!(error["code"], json!(code), "{key}: {error}");
    assert!(
        error["msg"].as_str().unwrap().contains(key),
        "{key}: {error}"
    );
    assert_eq!(sorted_links(&scenario.host), ["lo"], "{key}");
    assert_eq!(container.link_names(), ["lo"], "{key}");
    assert!(scenario.reservations(NETWORK).is_empty(), "{key}");
    assert!(scenario.cache_files().is_empty(), "{key}");
    let rules = scenario.host.nat_rules();
    assert!(
        !rules.iter().any(|rule| rule.contains("CNI-DN-")),
        "{key}: {rules:#?}"
    );
}

/// Unknown backends, and options of the backend not chosen, fail ADD with
/// code 7 and leave nothing behind. The nftables backends themselves are
/// tested in portmap_nftables.rs.
#[test]
fn invalid_options_rejected() {
    if !require_root() {
        return;
    }
    let bridge_cases = [(
        json!({"ipMasq": true, "ipMasqBackend": "ebtables"}),
        "ipMasqBackend \"ebtables\"",
    )];
    for (options, key) in bridge_cases {
        assert_add_rejected(&bridge_list("1.0.0", options, &[portmap()]), 7, key);
    }
    let portmap_cases = [
        (json!({"backend": "pf"}), "backend \"pf\""),
        (
            json!({"conditionsV4": ["ip", "saddr", "10.0.0.0/8"]}),
            "nftables-specific options [conditionsV4]",
        ),
        (
            json!({"backend": "nftables", "externalSetMarkChain": "KUBE-MARK-MASQ"}),
            "iptables-specific options [externalSetMarkChain]",
        ),
    ];
    for (options, key) in portmap_cases {
        let mut plugin = portmap();
        for (name, value) in options.as_object().unwrap() {
            plugin[name] = value.clone();
        }
        assert_add_rejected(&bridge_list("1.0.0", json!({}), &[plugin]), 7, key);
    }

    let with_ipam = bridge_list("1.0.0", json!({"disableContainerInterface": true}), &[]);
    assert_add_rejected(&with_ipam, 7, "disableContainerInterface");
}

/// A mark chain that does not exist fails ADD with a message that names it,
/// and the ADD leaves nothing behind.
#[test]
fn missing_mark_chain_rejected() {
    if !require_root() {
        return;
    }
    let mut plugin = portmap();
    plugin["externalSetMarkChain"] = json!("KUBE-MARK-MASQ");
    let list = bridge_list("1.0.0", json!({}), &[plugin]);

    assert_add_rejected(&list, 999, "mark chain KUBE-MARK-MASQ does not exist");
}

#[test]
fn disabled_interface_stays_down() {
    if !require_root() {
        return;
    }
    let mut list = bridge_list("1.0.0", json!({"disableContainerInterface": true}), &[]);
    list["plugins"][0].as_object_mut().unwrap().remove("ipam");
    let scenario = scenario_with(&list);
    let container = Netns::create("cwc");

    let result = add(&scenario, &container, &[]).assert_success().json();
    assert_eq!(
        result["interfaces"].as_array().unwrap().len(),
        3,
        "{result}"
    );
    assert!(result.get("ips").is_none(), "{result}");
    let eth0 = link(&container, "eth0");
    assert_eq!(eth0["linkinfo"]["info_kind"], json!("veth"), "{eth0}");
    assert!(!flags(&eth0).contains(&"UP".to_string()), "{eth0}");
    assert_host_links(&scenario.host, 1);

    del(&scenario, &container, &[]);
    assert_eq!(sorted_links(&scenario.host), [BRIDGE, "lo"]);
    assert_eq!(container.link_names(), ["lo"]);
}
