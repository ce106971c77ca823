//! The wasm firewall plugin side by side with the reference one
//! (`/usr/lib/cni/firewall`, iptables backend). A bridge + firewall list runs
//! through cniwasm and through the reference executables, each in its own
//! throwaway host namespace. The filter tables of both families must agree
//! after ADD and after DEL.

use cniwasm_integration_tests::reference::{REFERENCE_PLUGIN_DIR, ReferenceRun};
use cniwasm_integration_tests::{Netns, Scenario, assert_cni_error, container_id, require_root};
use serde_json::{Map, Value, json};

const NETWORK: &str = "fwnet";

/// Builds a list of a dual-stack bridge with host-local, then the firewall
/// with `firewall_options`.
fn list(bridge: &str, firewall_options: Value) -> Value {
    let mut firewall = json!({"type": "firewall", "backend": "iptables"});
    for (key, value) in firewall_options.as_object().expect("options are an object") {
        firewall[key] = value.clone();
    }
    json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": true,
             "ipam": {"type": "host-local",
                      "ranges": [[{"subnet": "10.244.80.0/24"}], [{"subnet": "fd00:80::/64"}]]}},
            firewall
        ]
    })
}

/// One container attached by cniwasm.
struct Ours {
    scenario: Scenario,
    container: Netns,
    netns: String,
}

impl Ours {
    fn add(list: &Value) -> (Self, Value) {
        let scenario = Scenario::new();
        scenario.write_config("10-fw.conflist", &list.to_string());
        let container = Netns::create("cwc");
        let netns = container.path().display().to_string();
        let output = scenario.cniwasm(&["add", NETWORK, &netns], &[]);
        output.assert_success();
        let ours = Self {
            scenario,
            container,
            netns,
        };
        (ours, output.json())
    }

    fn run(&self, command: &str) {
        let output = self.scenario.cniwasm(&[command, NETWORK, &self.netns], &[]);
        output.assert_success();
    }
}

/// The same attachment made by the reference plugins, with the container id
/// cniwasm derived.
struct Theirs {
    scenario: Scenario,
    container: Netns,
    netns: String,
    list: Value,
    id: String,
}

impl Theirs {
    fn add(list: &Value, id: String) -> (Self, Value) {
        let scenario = Scenario::new();
        let container = Netns::create("cwr");
        let netns = container.path().display().to_string();
        let mut list = list.clone();
        list["plugins"][0]["ipam"]["dataDir"] = json!(scenario.ipam_dir());
        let theirs = Self {
            scenario,
            container,
            netns,
            list,
            id,
        };
        let result = theirs.reference().add().expect("reference ADD");
        (theirs, result)
    }

    fn reference(&self) -> ReferenceRun<'_> {
        static NO_ARGS: std::sync::LazyLock<Map<String, Value>> =
            std::sync::LazyLock::new(Map::new);
        ReferenceRun {
            host: &self.scenario.host,
            list: &self.list,
            container_id: &self.id,
            netns_path: &self.netns,
            ifname: "eth0",
            capability_args: &NO_ARGS,
            plugin_dir: REFERENCE_PLUGIN_DIR,
            extra_env: &[],
        }
    }
}

/// Returns the rules of both filter tables that mention `needle`.
fn rules_with(netns: &Netns, needle: &str) -> Vec<String> {
    let rules = netns.filter_rules().into_iter();
    rules.filter(|rule| rule.contains(needle)).collect()
}

#[test]
fn matches_reference() {
    if !require_root() {
        return;
    }
    let list = list("fwbr0", json!({}));
    let (ours, our_result) = Ours::add(&list);
    let (theirs, their_result) = Theirs::add(&list, container_id(&ours.netns));

    assert_eq!(our_result["ips"], their_result["ips"]);
    assert_eq!(our_result["ips"][0]["address"], "10.244.80.2/24");
    let ours_added = ours.scenario.host.filter_rules();
    assert_eq!(ours_added, theirs.scenario.host.filter_rules());
    for expected in [
        r#"-A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD"#,
        r#"-A CNI-FORWARD -m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN"#,
        "-A CNI-FORWARD -s 10.244.80.2/32 -j ACCEPT",
        "v6 -A CNI-FORWARD -d fd00:80::2/128 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    ] {
        assert!(
            ours_added.iter().any(|rule| rule == expected),
            "{expected} missing: {ours_added:#?}"
        );
    }

    ours.run("check");
    theirs
        .reference()
        .check(&their_result)
        .expect("reference CHECK");

    ours.run("del");
    theirs
        .reference()
        .del(Some(&their_result))
        .expect("reference DEL");
    let ours_deleted = ours.scenario.host.filter_rules();
    assert_eq!(ours_deleted, theirs.scenario.host.filter_rules());
    assert!(
        ours_deleted
            .iter()
            .any(|rule| rule.contains("-j CNI-ADMIN")),
        "{ours_deleted:#?}"
    );
    assert!(rules_with(&ours.scenario.host, "10.244.80.2").is_empty());
    assert!(rules_with(&ours.scenario.host, "fd00:80::2").is_empty());
    assert_eq!(ours.container.link_names(), ["lo"]);
    assert_eq!(theirs.container.link_names(), ["lo"]);
}

#[test]
fn admin_chain_matches_reference() {
    if !require_root() {
        return;
    }
    let list = list("fwbr1", json!({"iptablesAdminChainName": "FW-ADMIN"}));
    let (ours, _) = Ours::add(&list);
    let (theirs, _) = Theirs::add(&list, container_id(&ours.netns));

    let rules = ours.scenario.host.filter_rules();
    assert_eq!(rules, theirs.scenario.host.filter_rules());
    assert!(rules.contains(&":FW-ADMIN -".to_string()), "{rules:#?}");
    assert!(
        !rules.iter().any(|rule| rule.contains("CNI-ADMIN")),
        "{rules:#?}"
    );
    ours.run("del");
}

#[test]
fn del_keeps_other_container() {
    if !require_root() {
        return;
    }
    let (ours, _) = Ours::add(&list("fwbr2", json!({})));
    let second = Netns::create("cwc");
    let second_netns = second.path().display().to_string();
    let output = ours.scenario.cniwasm(&["add", NETWORK, &second_netns], &[]);
    output.assert_success();
    assert_eq!(output.json()["ips"][0]["address"], "10.244.80.3/24");

    ours.run("del");

    assert!(rules_with(&ours.scenario.host, "10.244.80.2/32").is_empty());
    assert_eq!(rules_with(&ours.scenario.host, "10.244.80.3/32").len(), 2);
    let host = &ours.scenario.host;
    host.exec_ok(&[
        "iptables",
        "-D",
        "CNI-FORWARD",
        "-s",
        "10.244.80.3/32",
        "-j",
        "ACCEPT",
    ]);
    let check = ours
        .scenario
        .cniwasm(&["check", NETWORK, &second_netns], &[]);
    assert_cni_error(&check, 999, "-s 10.244.80.3/32 -j ACCEPT");
}

#[test]
fn policy_limits_addresses() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    scenario.write_config("10-fw.conflist", &list("fwbr3", json!({})).to_string());
    let policy = scenario.dir.path().join("policy.json");
    let text = json!({"plugins": {"firewall": {"filter": {"addresses": ["10.244.81.0/24"]}}}});
    std::fs::write(&policy, text.to_string()).unwrap();
    let container = Netns::create("cwc");

    let output = scenario.cniwasm(
        &["add", NETWORK, container.path().to_str().unwrap()],
        &[("CNIWASM_POLICY", policy.to_str().unwrap())],
    );

    assert_cni_error(&output, 100, "filter.addresses");
    assert!(rules_with(&scenario.host, "10.244.80.2").is_empty());
    assert_eq!(container.link_names(), ["lo"]);
    assert!(scenario.reservations(NETWORK).is_empty());
}
