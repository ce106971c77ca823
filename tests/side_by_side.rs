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
    compare_list(list, CAP_ARGS);
}

/// Runs `list` (named `mynet`) with `cap_args` through cniwasm and the
/// reference plugins, and compares results, NAT rules of both families and
/// container routes.
fn compare_list(list: Value, cap_args: &str) {
    let cni_version = list["cniVersion"].as_str().unwrap().to_string();
    let capability_args: Map<String, Value> = serde_json::from_str(cap_args).unwrap();

    // cniwasm in one host namespace.
    let ours = Scenario::new();
    ours.write_config("10-mynet.conflist", &list.to_string());
    let our_container = Netns::create("cwc");
    let our_netns = our_container.path().to_str().unwrap().to_string();
    let output = ours.cniwasm(&["add", "mynet", &our_netns], &[("CAP_ARGS", cap_args)]);
    output.assert_success();
    let our_result = output.json();

    // The reference plugins in another, with the same container id so that
    // chain names and rule comments must match exactly.
    let theirs = Scenario::new();
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
    assert_eq!(
        ours.host.nat_rules(),
        theirs.host.nat_rules(),
        "NAT rules differ for {cni_version}"
    );
    assert_eq!(
        our_container.ip_json(&["route", "show"]),
        their_container.ip_json(&["route", "show"]),
        "container routes differ for {cni_version}"
    );

    ours.cniwasm(&["del", "mynet", &our_netns], &[("CAP_ARGS", cap_args)])
        .assert_success();
    reference.del(Some(&their_result)).expect("reference DEL");
    assert_eq!(
        ours.host.nat_rules(),
        theirs.host.nat_rules(),
        "NAT rules after DEL differ for {cni_version}"
    );
    assert_eq!(
        ours.host.link_names().len(),
        theirs.host.link_names().len(),
        "host links after DEL differ"
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

#[test]
fn dual_stack_matches_reference() {
    if !require_root() {
        return;
    }
    let list = json!({
        "cniVersion": "1.0.0",
        "name": "mynet",
        "plugins": [
            {"type": "bridge", "bridge": "mynet", "isGateway": true, "ipMasq": true,
             "ipam": {"type": "host-local",
                      "ranges": [[{"subnet": "10.244.80.0/24"}], [{"subnet": "fd00:80::/64"}]],
                      "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    });
    compare_list(
        list,
        r#"{"portMappings":[{"hostPort":9092,"containerPort":80,"protocol":"tcp"}]}"#,
    );
}
