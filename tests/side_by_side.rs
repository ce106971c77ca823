//! The same configuration list through the reference plugins (run by the
//! exec protocol as libcni runs them) and through cniwasm, each in its own
//! host namespace: results agree field by field except MAC addresses, the
//! host veth name and the sandbox path, and the NAT rules are identical.

use cniwasm_integration_tests::reference::ReferenceRun;
use cniwasm_integration_tests::{Netns, Scenario, container_id, repo_root, require_root};
use serde_json::{Map, Value, json};

const CAP_ARGS: &str = r#"{"portMappings":[{"hostPort":9090,"containerPort":80,"protocol":"tcp","hostIP":"127.0.0.1"}]}"#;

/// Blanks what legitimately differs between two runs.
fn normalize(result: &Value) -> Value {
    let mut result = result.clone();
    if let Some(interfaces) = result["interfaces"].as_array_mut() {
        for interface in interfaces.iter_mut() {
            interface["mac"] = json!("<mac>");
            if interface.get("sandbox").is_some() {
                interface["sandbox"] = json!("<netns>");
            }
        }
        if let Some(veth) = interfaces.get_mut(1) {
            veth["name"] = json!("<veth>");
        }
    }
    result
}

/// Runs the seed list with `cni_version` both ways and compares.
fn compare(cni_version: &str) {
    let text = std::fs::read_to_string(repo_root().join("examples/mynet.conflist")).unwrap();
    let mut list: Value = serde_json::from_str(&text).unwrap();
    list["cniVersion"] = json!(cni_version);
    compare_list(list, CAP_ARGS, ReferenceDel::Succeeds);
}

/// Runs `list` (named `mynet`) with `cap_args` through cniwasm and the
/// reference plugins, and compares results, NAT rules and container routes
/// of both families, and the bridge's and container's global addresses.
/// After DEL, no rule of the container may be left in cniwasm's namespace.
fn compare_list(list: Value, cap_args: &str, reference_del: ReferenceDel) {
    compare_list_with(list, cap_args, reference_del, Hooks::default());
}

/// Checks cniwasm's IPv4 NAT rules after ADD.
type RuleCheck<'a> = &'a dyn Fn(&[String]);

/// One side of a comparison after ADD: its host namespace and ADD result.
struct Added<'a> {
    host: &'a Netns,
    result: &'a Value,
}

/// Compares more state after ADD: cniwasm's side first, then the reference's.
type AddedCheck<'a> = &'a dyn Fn(Added<'_>, Added<'_>);

/// Checks cniwasm's host namespace after its DEL, and then both after the
/// reference's DEL succeeded, cniwasm's first.
type DeletedCheck<'a> = &'a dyn Fn(&Netns, Option<&Netns>);

/// Steps a comparison runs in addition to its own.
#[derive(Default)]
struct Hooks<'a> {
    /// Runs in each host namespace before ADD.
    prepare_host: Option<&'a dyn Fn(&Netns)>,
    check_rules: Option<RuleCheck<'a>>,
    compare_added: Option<AddedCheck<'a>>,
    check_deleted: Option<DeletedCheck<'a>>,
}

/// [`compare_list`] with `hooks`.
fn compare_list_with(list: Value, cap_args: &str, reference_del: ReferenceDel, hooks: Hooks) {
    let cni_version = list["cniVersion"].as_str().unwrap().to_string();
    let capability_args: Map<String, Value> = serde_json::from_str(cap_args).unwrap();

    // cniwasm in one host namespace.
    let ours = Scenario::new();
    if let Some(prepare) = hooks.prepare_host {
        prepare(&ours.host);
    }
    ours.write_config("10-mynet.conflist", &list.to_string());
    let our_container = Netns::create("cwc");
    let our_netns = our_container.path().to_str().unwrap().to_string();
    let output = ours.cniwasm(&["add", "mynet", &our_netns], &[("CAP_ARGS", cap_args)]);
    output.assert_success();
    let our_result = output.json();

    // The reference plugins in another, with the same container id so that
    // chain names and rule comments must match exactly.
    let theirs = Scenario::new();
    if let Some(prepare) = hooks.prepare_host {
        prepare(&theirs.host);
    }
    let their_container = Netns::create("cwr");
    let their_netns = their_container.path().to_str().unwrap().to_string();
    let mut reference_list = list.clone();
    reference_list["plugins"][0]["ipam"]["dataDir"] = json!(theirs.ipam_dir());
    let id = container_id(&our_netns);
    let reference = ReferenceRun {
        host: &theirs.host,
        list: &reference_list,
        container_id: &id,
        netns_path: &their_netns,
        ifname: "eth0",
        capability_args: &capability_args,
        plugin_dir: cniwasm_integration_tests::reference::REFERENCE_PLUGIN_DIR,
        extra_env: &[],
    };
    let their_result = reference.add().expect("reference ADD");

    assert_eq!(
        normalize(&our_result),
        normalize(&their_result),
        "results differ for {cni_version}"
    );
    assert_same_kernel_state(
        [&ours.host, &our_container],
        [&theirs.host, &their_container],
        &cni_version,
    );
    if let Some(check) = hooks.check_rules {
        check(&ours.host.nat_rules());
    }
    if let Some(compare) = hooks.compare_added {
        let our_side = Added {
            host: &ours.host,
            result: &our_result,
        };
        let their_side = Added {
            host: &theirs.host,
            result: &their_result,
        };
        compare(our_side, their_side);
    }

    ours.cniwasm(&["del", "mynet", &our_netns], &[("CAP_ARGS", cap_args)])
        .assert_success();
    if let Some(check) = hooks.check_deleted {
        check(&ours.host, None);
    }
    for rules in [ours.host.nat_rules(), ours.host.nat6_rules()] {
        assert!(
            !rules.iter().any(|rule| rule.contains(&id)),
            "rules of {id} left after DEL: {rules:#?}"
        );
    }
    let their_del = reference.del(Some(&their_result));
    if reference_del == ReferenceDel::FailsOnSecondAddress {
        let error = their_del.expect_err("the reference DEL now succeeds: compare its state");
        assert!(error.contains("CHAIN_DEL failed"), "{error}");
        return;
    }
    their_del.expect("reference DEL");
    if let Some(check) = hooks.check_deleted {
        check(&ours.host, Some(&theirs.host));
    }
    assert_eq!(
        ours.host.nat_rules(),
        theirs.host.nat_rules(),
        "NAT rules after DEL differ for {cni_version}"
    );
    assert_eq!(
        ours.host.nat6_rules(),
        theirs.host.nat6_rules(),
        "IPv6 NAT rules after DEL differ for {cni_version}"
    );
    assert_eq!(
        ours.host.link_names().len(),
        theirs.host.link_names().len(),
        "host links after DEL differ"
    );
}

/// How the reference plugins' DEL ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ReferenceDel {
    Succeeds,
    /// The reference bridge (1.1.1) removes its masquerade chain once per
    /// address, and fails on a family's second address: that address's
    /// POSTROUTING jump still uses the chain (`CHAIN_DEL failed`).
    FailsOnSecondAddress,
}

/// Compares the kernel state that ADD leaves in (host, container) pairs:
/// NAT rules of both families, container routes of both families, and the
/// global addresses of the bridge and of the container interface.
fn assert_same_kernel_state(ours: [&Netns; 2], theirs: [&Netns; 2], cni_version: &str) {
    let [our_host, our_container] = ours;
    let [their_host, their_container] = theirs;
    assert_eq!(
        our_host.nat_rules(),
        their_host.nat_rules(),
        "NAT rules differ for {cni_version}"
    );
    assert_eq!(
        our_host.nat6_rules(),
        their_host.nat6_rules(),
        "IPv6 NAT rules differ for {cni_version}"
    );
    for family in ["-4", "-6"] {
        assert_eq!(
            our_container.ip_json(&[family, "route", "show"]),
            their_container.ip_json(&[family, "route", "show"]),
            "container routes ({family}) differ for {cni_version}"
        );
    }
    assert_eq!(
        our_host.global_addresses("mynet"),
        their_host.global_addresses("mynet"),
        "bridge addresses differ for {cni_version}"
    );
    assert_eq!(
        our_container.global_addresses("eth0"),
        their_container.global_addresses("eth0"),
        "container addresses differ for {cni_version}"
    );
}

#[test]
fn seed_matches_reference_0_3_0() {
    if require_root() {
        compare("0.3.0");
    }
}

#[test]
fn seed_matches_reference_0_3_1() {
    if require_root() {
        compare("0.3.1");
    }
}

#[test]
fn seed_matches_reference_0_4_0() {
    if require_root() {
        compare("0.4.0");
    }
}

#[test]
fn seed_matches_reference_1_0_0() {
    if require_root() {
        compare("1.0.0");
    }
}

/// Runs a 1.0.0 list of bridge `mynet` with ipMasq and isGateway, host-local
/// with one range set per subnet and a default route per family, and
/// portmap mapping `host_port` to port 80; compares it with the reference.
fn compare_ranges(subnets: &[&str], host_port: u16, reference_del: ReferenceDel) {
    let ranges: Vec<Value> = subnets
        .iter()
        .map(|subnet| json!([{"subnet": subnet}]))
        .collect();
    let mut routes = Vec::new();
    if subnets.iter().any(|subnet| !subnet.contains(':')) {
        routes.push(json!({"dst": "0.0.0.0/0"}));
    }
    if subnets.iter().any(|subnet| subnet.contains(':')) {
        routes.push(json!({"dst": "::/0"}));
    }
    let list = json!({
        "cniVersion": "1.0.0",
        "name": "mynet",
        "plugins": [
            {"type": "bridge", "bridge": "mynet", "isGateway": true, "ipMasq": true,
             "ipam": {"type": "host-local", "ranges": ranges, "routes": routes}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    });
    let cap_args =
        json!({"portMappings": [{"hostPort": host_port, "containerPort": 80, "protocol": "tcp"}]});
    compare_list(list, &cap_args.to_string(), reference_del);
}

#[test]
fn dual_stack_matches_reference() {
    if require_root() {
        compare_ranges(
            &["10.244.80.0/24", "fd00:80::/64"],
            9092,
            ReferenceDel::Succeeds,
        );
    }
}

#[test]
fn ipv6_only_matches_reference() {
    if require_root() {
        compare_ranges(&["fd00:81::/64"], 9093, ReferenceDel::Succeeds);
    }
}

#[test]
fn two_v6_ranges_match_reference() {
    if require_root() {
        compare_ranges(
            &["10.244.82.0/24", "fd00:82::/64", "fd00:83::/64"],
            9094,
            ReferenceDel::FailsOnSecondAddress,
        );
    }
}

/// `externalSetMarkChain` and `conditionsV4` give the reference's rules:
/// hairpin and localhost traffic jumps to the node's mark chain, no mark or
/// masquerade chain of the plugin's own exists, and the conditions lead the
/// entry rule.
#[test]
fn external_mark_chain_and_conditions_match_reference() {
    if !require_root() {
        return;
    }
    let text = std::fs::read_to_string(repo_root().join("examples/mynet.conflist")).unwrap();
    let mut list: Value = serde_json::from_str(&text).unwrap();
    list["cniVersion"] = json!("1.0.0");
    list["plugins"][1]["externalSetMarkChain"] = json!("KUBE-MARK-MASQ");
    list["plugins"][1]["conditionsV4"] = json!(["!", "-d", "10.99.0.0/16"]);

    let prepare = |host: &Netns| {
        host.exec_ok(&["iptables", "-t", "nat", "-N", "KUBE-MARK-MASQ"]);
    };
    let check = |rules: &[String]| {
        let marks = rules
            .iter()
            .filter(|rule| rule.ends_with("-j KUBE-MARK-MASQ"));
        assert_eq!(marks.count(), 2, "{rules:#?}");
        assert!(
            !rules
                .iter()
                .any(|rule| rule.contains("CNI-HOSTPORT-SETMARK")),
            "{rules:#?}"
        );
        let entry = rules
            .iter()
            .find(|rule| rule.starts_with("-A CNI-HOSTPORT-DNAT"));
        let entry = entry.expect("an entry rule");
        assert!(
            entry.starts_with("-A CNI-HOSTPORT-DNAT ! -d 10.99.0.0/16 -p tcp"),
            "{entry}"
        );
    };
    let hooks = Hooks {
        prepare_host: Some(&prepare),
        check_rules: Some(&check),
        ..Hooks::default()
    };
    compare_list_with(list, CAP_ARGS, ReferenceDel::Succeeds, hooks);
}

/// Returns table `bridge nat` of `side`'s host with the host veth's name
/// and the container's MAC from its result replaced by placeholders, since
/// both are random in each run.
fn spoof_check_table(side: &Added<'_>) -> Vec<Value> {
    let veth = side.result["interfaces"][1]["name"].as_str().unwrap();
    let mac = side.result["interfaces"][2]["mac"].as_str().unwrap();
    let text = serde_json::to_string(&side.host.nft_table("bridge", "nat")).unwrap();
    let text = text
        .replace(&format!("\"{veth}\""), "\"<veth>\"")
        .replace(&format!("\"{mac}\""), "\"<mac>\"");
    serde_json::from_str(&text).unwrap()
}

/// `macspoofchk` gives the reference's nftables layout: the same table,
/// base chain, per-attachment chains (named after the container id and
/// ifname), rules and comments, for this container's veth and MAC. After
/// DEL cniwasm keeps only the shared table and base chain, as the
/// reference does.
#[test]
fn macspoofchk_matches_reference() {
    if !require_root() {
        return;
    }
    let text = std::fs::read_to_string(repo_root().join("examples/mynet.conflist")).unwrap();
    let mut list: Value = serde_json::from_str(&text).unwrap();
    list["cniVersion"] = json!("1.0.0");
    list["plugins"][0]["macspoofchk"] = json!(true);

    let compare = |ours: Added<'_>, theirs: Added<'_>| {
        let our_table = spoof_check_table(&ours);
        assert_eq!(
            our_table,
            spoof_check_table(&theirs),
            "bridge nat tables differ"
        );
        let rules = our_table
            .iter()
            .filter(|object| object.get("rule").is_some());
        assert_eq!(rules.count(), 4, "{our_table:#?}");
        let mac = ours.result["interfaces"][2]["mac"].as_str().unwrap();
        let listed = ours
            .host
            .exec_ok(&["nft", "list", "table", "bridge", "nat"]);
        assert!(
            listed.contains(&format!("ether saddr {mac} return")),
            "{listed}"
        );
    };
    let check_deleted = |ours: &Netns, theirs: Option<&Netns>| {
        let our_table = ours.nft_table("bridge", "nat");
        assert_eq!(
            our_table.len(),
            2,
            "only table and base chain stay: {our_table:#?}"
        );
        if let Some(theirs) = theirs {
            assert_eq!(our_table, theirs.nft_table("bridge", "nat"));
        }
    };
    let hooks = Hooks {
        compare_added: Some(&compare),
        check_deleted: Some(&check_deleted),
        ..Hooks::default()
    };
    compare_list_with(list, CAP_ARGS, ReferenceDel::Succeeds, hooks);
}
