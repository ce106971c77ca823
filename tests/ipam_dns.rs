//! host-local's `resolvConf`: the host reads the file for the sandboxed
//! plugin when the node policy allows its path, and the result's `dns`
//! matches the reference host-local's. Each test writes its own resolv.conf
//! into its temporary directory and runs in throwaway namespaces.

use std::path::{Path, PathBuf};

use cniwasm_integration_tests::reference::ReferenceRun;
use cniwasm_integration_tests::{
    CliOutput, Netns, Scenario, assert_cni_error, container_id, require_root,
};
use serde_json::{Value, json};

const NETWORK: &str = "dnsnet";

/// Comments, every keyword, repeated keywords, a line without a value and
/// an unknown keyword, as a hand-written file may have them.
const RESOLV_CONF: &str = "# written by the test\n; another comment\n\
    nameserver 192.0.2.53\nnameserver 2001:db8::53 # inline\nnameserver\n\
    domain first.example\ndomain cluster.example\n\
    search svc.cluster.example cluster.example\nsearch example.org\n\
    options ndots:5 timeout:2\noptions rotate\nsortlist 10.0.0.0/8\n";

fn list(resolv_conf: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "plugins": [{"type": "bridge", "bridge": "dnsbr",
            "ipam": {"type": "host-local", "subnet": "10.244.70.0/24",
                     "resolvConf": resolv_conf}}]
    })
}

/// Writes `content` to `name` in the scenario's directory.
fn write_file(scenario: &Scenario, name: &str, content: &str) -> PathBuf {
    let path = scenario.dir.path().join(name);
    std::fs::write(&path, content).unwrap();
    path
}

/// Writes a policy whose host-local entry allows reading `paths`, and
/// returns its path.
fn policy_allowing(scenario: &Scenario, paths: &[&str]) -> PathBuf {
    let policy = json!({"plugins": {"host-local": {"resolvConf": {"paths": paths}}}});
    write_file(scenario, "policy.json", &policy.to_string())
}

/// Runs ADD, or another command, with the policy file `policy`.
fn run(scenario: &Scenario, command: &str, container: &Netns, policy: &Path) -> CliOutput {
    let netns = container.path();
    scenario.cniwasm(
        &[command, NETWORK, netns.to_str().unwrap()],
        &[("CNIWASM_POLICY", policy.to_str().unwrap())],
    )
}

/// Compares the `dns` of cniwasm's bridge result, which carries its IPAM
/// plugin's, with the reference host-local's own result. The reference
/// bridge (1.1.1) cannot serve as the reference here: it replaces IPAM's
/// `dns` with the configuration's, which is empty.
#[test]
fn dns_matches_reference() {
    if !require_root() {
        return;
    }
    let ours = Scenario::new();
    let file = write_file(&ours, "resolv.conf", RESOLV_CONF);
    let policy = policy_allowing(&ours, &[file.to_str().unwrap()]);
    ours.write_config("10-dnsnet.conflist", &list(&file).to_string());
    let our_container = Netns::create("cwc");

    let output = run(&ours, "add", &our_container, &policy);
    output.assert_success();
    let our_dns = output.json()["dns"].clone();

    // The reference host-local as the only plugin of a list: it reads the
    // same `ipam` section from its configuration.
    let theirs = Scenario::new();
    let their_container = Netns::create("cwr");
    let their_netns = their_container.path().to_str().unwrap().to_string();
    let mut reference_list = list(&file);
    reference_list["plugins"][0]["type"] = json!("host-local");
    reference_list["plugins"][0]["ipam"]["dataDir"] = json!(theirs.ipam_dir());
    let id = container_id(&their_netns);
    let reference = ReferenceRun::plain(&theirs.host, &reference_list, &id, &their_netns);
    let their_result = reference.add().expect("reference host-local ADD");

    assert_eq!(
        our_dns, their_result["dns"],
        "dns differs from the reference"
    );
    let expected = json!({"nameservers": ["192.0.2.53", "2001:db8::53"],
        "domain": "cluster.example",
        "search": ["svc.cluster.example", "cluster.example", "example.org"],
        "options": ["ndots:5", "timeout:2", "rotate"]});
    assert_eq!(our_dns, expected);

    run(&ours, "del", &our_container, &policy).assert_success();
    assert!(ours.reservations(NETWORK).is_empty());
    reference.del(Some(&their_result)).expect("reference DEL");
}

#[test]
fn dns_path_denied_by_default() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    let file = write_file(&scenario, "resolv.conf", RESOLV_CONF);
    scenario.write_config("10-dnsnet.conflist", &list(&file).to_string());
    let container = Netns::create("cwc");
    let policy = write_file(&scenario, "policy.json", "{}");

    let output = run(&scenario, "add", &container, &policy);

    let error = assert_cni_error(&output, 100, &format!("failed to read resolvConf {file:?}"));
    let message = error["msg"].as_str().unwrap();
    assert!(message.contains("(rule resolvConf.paths)"), "{message}");
    assert!(message.contains("set ipam.resolvConf"), "{message}");
    assert!(
        scenario.reservations(NETWORK).is_empty(),
        "an address stayed reserved"
    );
    assert_eq!(container.link_names(), ["lo"], "the rollback left a link");
}

#[test]
fn dns_link_target_checked() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    let secret = write_file(&scenario, "secret.conf", "nameserver 192.0.2.99\n");
    std::fs::create_dir(scenario.dir.path().join("dns")).unwrap();
    let link = scenario.dir.path().join("dns/resolv.conf");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let allowed = format!("{}/dns/*", scenario.dir.path().display());
    let policy = policy_allowing(&scenario, &[&allowed]);
    scenario.write_config("10-dnsnet.conflist", &list(&link).to_string());
    let container = Netns::create("cwc");

    let output = run(&scenario, "add", &container, &policy);

    let error = assert_cni_error(&output, 100, "(rule resolvConf.paths)");
    let message = error["msg"].as_str().unwrap();
    assert!(
        message.contains(&format!("leads to {:?}", secret.display().to_string())),
        "{message}"
    );
    assert!(!message.contains("192.0.2.99"), "{message}");
    assert!(scenario.reservations(NETWORK).is_empty());
}
