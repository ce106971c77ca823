//! Policy, limits and audit against plugins written to misbehave: each runs
//! after a working bridge + host-local, must fail with a CNI error naming the
//! plugin and the limit or rule, leave the host namespace as it was, and be
//! recorded in the audit log.

use std::path::PathBuf;

use cniwasm_integration_tests::{CliOutput, Netns, Scenario, plugin_dir, repo_root, require_root};
use serde_json::{Value, json};

/// Directory of the test-only misbehaving plugins.
fn misbehaving_dir() -> PathBuf {
    let dir = repo_root().join("plugins-wasm/out-test");
    assert!(
        dir.join("panic.wasm").is_file(),
        "misbehaving plugins not built in {}: run `make build` first",
        dir.display()
    );
    dir
}

fn cni_path() -> String {
    format!("{}:{}", plugin_dir().display(), misbehaving_dir().display())
}

/// bridge + host-local, then the plugin `last`.
fn chain(last: &str) -> String {
    chain_with(json!({"type": last}))
}

/// bridge + host-local, then the plugin configuration `last`.
fn chain_with(last: Value) -> String {
    json!({
        "cniVersion": "0.4.0",
        "name": "polnet",
        "plugins": [
            {"type": "bridge", "bridge": "polbr", "isGateway": true, "ipMasq": true,
             "ipam": {"type": "host-local", "subnet": "10.244.30.0/24", "routes": [{"dst": "0.0.0.0/0"}]}},
            last
        ]
    })
    .to_string()
}

/// A policy that confines the misbehaving plugins, in `mode`, writing its
/// audit log into the scenario's directory.
fn policy(scenario: &Scenario, mode: &str) -> PathBuf {
    let audit_log = scenario.dir.path().join("audit.log");
    let text = json!({
        "mode": mode,
        "auditLog": audit_log,
        "defaults": {
            "portMappings": {"hostPorts": ["1024-65535"], "hostIPs": ["0.0.0.0", "127.0.0.1"], "protocols": ["tcp", "udp"]},
            "limits": {"memoryBytes": 67108864, "deadlineMs": 1000, "maxHostCalls": 100, "maxResultBytes": 1048576}
        },
        "plugins": {
            "huge-result": {"limits": {"memoryBytes": 1073741824, "deadlineMs": 10000, "maxHostCalls": 100, "maxResultBytes": 1048576}},
            "extra-import": {"imports": ["log", "nat"]}
        }
    });
    let path = scenario.dir.path().join("policy.json");
    std::fs::write(&path, text.to_string()).unwrap();
    path
}

struct Case {
    scenario: Scenario,
    container: Netns,
    host_links: Vec<String>,
    nat_rules: Vec<String>,
    policy: PathBuf,
}

impl Case {
    fn new(plugin: &str, mode: &str) -> Self {
        Self::with_list(&chain(plugin), mode)
    }

    fn with_list(list: &str, mode: &str) -> Self {
        let scenario = Scenario::new();
        scenario.write_config("10-polnet.conflist", list);
        let policy = policy(&scenario, mode);
        let container = Netns::create("cwc");
        let host_links = scenario.host.link_names();
        let nat_rules = scenario.host.nat_rules();
        Self {
            scenario,
            container,
            host_links,
            nat_rules,
            policy,
        }
    }

    fn run(&self, command: &str) -> CliOutput {
        let cni_path = cni_path();
        let policy = self.policy.display().to_string();
        self.scenario.cniwasm(
            &[command, "polnet", self.container.path().to_str().unwrap()],
            &[("CNI_PATH", &cni_path), ("CNIWASM_POLICY", &policy)],
        )
    }

    /// The audit log's records.
    fn audit(&self) -> Vec<Value> {
        let text =
            std::fs::read_to_string(self.scenario.dir.path().join("audit.log")).unwrap_or_default();
        text.lines()
            .map(|line| serde_json::from_str(line).expect("every audit line is JSON"))
            .collect()
    }

    /// Host-call records of `plugin` with `decision` and a rule starting with `rule`.
    fn audited(&self, plugin: &str, decision: &str, rule: &str) -> Vec<Value> {
        self.audit()
            .into_iter()
            .filter(|r| {
                r["kind"] == "host-call" && r["plugin"] == plugin && r["decision"] == decision
            })
            .filter(|r| r["rule"].as_str().unwrap_or("").starts_with(rule))
            .collect()
    }

    fn assert_rolled_back(&self) {
        assert_eq!(
            self.scenario.host.nat_rules(),
            self.nat_rules,
            "NAT rules left behind"
        );
        self.scenario
            .assert_nothing_left("polnet", &self.host_links, &self.container);
    }
}

/// Asserts a failed ADD with `code` whose message names the plugin and contains `needle`.
fn assert_failure(output: &CliOutput, code: u64, plugin: &str, needle: &str) {
    assert!(!output.status.success(), "ADD succeeded: {}", output.stdout);
    let error = output.json();
    assert_eq!(error["code"].as_u64(), Some(code), "{error}");
    let text = format!(
        "{} {}",
        error["msg"].as_str().unwrap_or(""),
        error["details"].as_str().unwrap_or("")
    );
    assert!(
        text.contains(plugin),
        "error does not name {plugin}: {text}"
    );
    assert!(
        text.contains(needle),
        "error does not contain {needle:?}: {text}"
    );
}

#[test]
fn endless_loop_hits_deadline() {
    if !require_root() {
        return;
    }
    let case = Case::new("spin-forever", "enforce");
    assert_failure(&case.run("add"), 102, "spin-forever", "deadlineMs");
    case.assert_rolled_back();
    assert!(
        case.audit()
            .iter()
            .any(|r| r["plugin"] == "spin-forever" && r["outcome"] == "deadline")
    );
}

#[test]
fn memory_growth_hits_limit() {
    if !require_root() {
        return;
    }
    let case = Case::new("grow-memory", "enforce");
    assert_failure(&case.run("add"), 101, "grow-memory", "memoryBytes");
    case.assert_rolled_back();
    assert!(
        case.audit()
            .iter()
            .any(|r| r["plugin"] == "grow-memory" && r["outcome"] == "memory")
    );
}

#[test]
fn huge_result_rejected() {
    if !require_root() {
        return;
    }
    let case = Case::new("huge-result", "enforce");
    assert_failure(&case.run("add"), 103, "huge-result", "maxResultBytes");
    case.assert_rolled_back();
}

#[test]
fn panic_is_reported() {
    if !require_root() {
        return;
    }
    let case = Case::new("panic", "enforce");
    assert_failure(&case.run("add"), 101, "panic", "panicked on purpose");
    case.assert_rolled_back();
}

#[test]
fn invalid_result_json_rejected() {
    if !require_root() {
        return;
    }
    let case = Case::new("bad-json", "enforce");
    assert_failure(&case.run("add"), 103, "bad-json", "invalid result JSON");
    case.assert_rolled_back();
}

#[test]
fn files_and_sockets_unreachable() {
    if !require_root() {
        return;
    }
    let case = Case::new("open-files", "enforce");
    // The plugin returns 198 when every attempt failed, 199 on an escape.
    assert_failure(&case.run("add"), 198, "open-files", "passwd");
    case.assert_rolled_back();
}

#[test]
fn host_link_named_lo_denied() {
    if !require_root() {
        return;
    }
    let case = Case::new("host-link-lo", "enforce");
    assert_failure(&case.run("add"), 100, "host-link-lo", "not a bridge");
    case.assert_rolled_back();
    assert!(
        !case
            .audited("host-link-lo", "deny", "ownership.hostLinks")
            .is_empty(),
        "{:#?}",
        case.audit()
    );
}

#[test]
fn foreign_link_deletion_denied() {
    if !require_root() {
        return;
    }
    let case = Case::new("delete-foreign-link", "enforce");
    assert_failure(&case.run("add"), 100, "delete-foreign-link", "lo");
    case.assert_rolled_back();
    assert!(
        !case
            .audited("delete-foreign-link", "deny", "ownership.hostLinks")
            .is_empty()
    );
}

#[test]
fn port_22_denied() {
    if !require_root() {
        return;
    }
    let case = Case::new("port-22", "enforce");
    assert_failure(&case.run("add"), 100, "port-22", "host port 22");
    case.assert_rolled_back();
    assert_eq!(
        case.audited("port-22", "deny", "portMappings.hostPorts")
            .len(),
        1
    );
}

/// A portmap that requests marking through a chain the policy does not list is
/// denied, and the ADD leaves nothing behind.
#[test]
fn unlisted_mark_chain_denied() {
    if !require_root() {
        return;
    }
    let portmap = json!({"type": "portmap", "capabilities": {"portMappings": true},
        "externalSetMarkChain": "KUBE-MARK-MASQ"});
    let mut case = Case::with_list(&chain_with(portmap), "enforce");
    case.scenario
        .host
        .exec_ok(&["iptables", "-t", "nat", "-N", "KUBE-MARK-MASQ"]);
    case.nat_rules = case.scenario.host.nat_rules();
    let cni_path = cni_path();
    let policy = case.policy.display().to_string();
    let cap_args = r#"{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}"#;

    let output = case.scenario.cniwasm(
        &["add", "polnet", case.container.path().to_str().unwrap()],
        &[
            ("CNI_PATH", &cni_path),
            ("CNIWASM_POLICY", &policy),
            ("CAP_ARGS", cap_args),
        ],
    );

    assert_failure(&output, 100, "portmap", "mark chain \"KUBE-MARK-MASQ\"");
    assert_eq!(
        case.audited("portmap", "deny", "portMappings.markChains")
            .len(),
        1
    );
    case.assert_rolled_back();
}

#[test]
fn dnat_to_foreign_address_denied() {
    if !require_root() {
        return;
    }
    let case = Case::new("foreign-dnat", "enforce");
    assert_failure(&case.run("add"), 100, "foreign-dnat", "10.99.99.99");
    case.assert_rolled_back();
    assert!(
        !case
            .audited("foreign-dnat", "deny", "ownership.containerAddress")
            .is_empty()
    );
}

#[test]
fn shared_host_sysctl_denied() {
    if !require_root() {
        return;
    }
    let case = Case::new("bad-sysctl", "enforce");
    // A value the plugin's write of 0 would change.
    case.scenario
        .host
        .exec_ok(&["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=2"]);

    assert_failure(&case.run("add"), 100, "bad-sysctl", "rp_filter");
    case.assert_rolled_back();
    assert!(
        !case
            .audited("bad-sysctl", "deny", "ownership.hostSysctls")
            .is_empty()
    );
    let rp_filter = case
        .scenario
        .host
        .exec_ok(&["cat", "/proc/sys/net/ipv4/conf/all/rp_filter"]);
    assert_eq!(rp_filter.trim(), "2", "the denied sysctl was written");
}

#[test]
fn ungranted_import_rejected_at_load() {
    if !require_root() {
        return;
    }
    let case = Case::new("extra-import", "enforce");
    assert_failure(&case.run("add"), 106, "extra-import", "imports");
    case.assert_rolled_back();
    let rejected = case
        .audit()
        .into_iter()
        .filter(|r| r["plugin"] == "extra-import" && r["outcome"] == "rejected")
        .count();
    assert_eq!(rejected, 1);
    // Rejected before anything ran: not even bridge made a host call.
    assert!(
        case.audit().iter().all(|r| r["kind"] != "host-call"),
        "host calls ran before the rejection"
    );
}

#[test]
fn audit_mode_lets_policy_violations_through() {
    if !require_root() {
        return;
    }
    let case = Case::new("port-22", "audit");
    case.run("add").assert_success();

    let would_deny = case.audited("port-22", "would-deny", "portMappings.hostPorts");
    assert_eq!(would_deny.len(), 1, "{:#?}", case.audit());
    assert!(
        case.scenario
            .host
            .nat_rules()
            .iter()
            .any(|rule| rule.contains("--dport 22 ")),
        "the mapping was not installed"
    );

    case.run("del").assert_success();
    let mut expected = case.host_links.clone();
    expected.push("polbr".to_string());
    assert_eq!(
        case.scenario.host.link_names(),
        expected,
        "DEL keeps only the shared bridge"
    );
    // The port 22 rules stay: removing them is the plugin's DEL's job, and
    // this misbehaving plugin's DEL does nothing.
    assert!(case.scenario.reservations("polnet").is_empty());
}

#[test]
fn audit_mode_still_enforces_ownership() {
    if !require_root() {
        return;
    }
    for plugin in [
        "host-link-lo",
        "delete-foreign-link",
        "foreign-dnat",
        "bad-sysctl",
    ] {
        let case = Case::new(plugin, "audit");
        let output = case.run("add");
        assert_failure(&output, 100, plugin, "");
        case.assert_rolled_back();
        assert!(
            !case.audited(plugin, "deny", "ownership.").is_empty(),
            "{plugin}: {:#?}",
            case.audit()
        );
    }
}

#[test]
fn digest_mismatch_refuses_plugin() {
    if !require_root() {
        return;
    }
    let case = Case::new("panic", "enforce");
    let pinned = json!({"plugins": {"bridge": {"digest": format!("sha256:{}", "0".repeat(64))}}});
    std::fs::write(&case.policy, pinned.to_string()).unwrap();

    assert_failure(&case.run("add"), 106, "bridge", "digest");
    case.assert_rolled_back();
}

#[test]
fn invalid_policy_runs_nothing() {
    if !require_root() {
        return;
    }
    let case = Case::new("panic", "enforce");
    std::fs::write(
        &case.policy,
        r#"{"plugins": {"bridge": {"portMappings": {"hostPorts": ["9-1"]}}}}"#,
    )
    .unwrap();

    let output = case.run("add");
    assert!(!output.status.success());
    assert_eq!(output.json()["code"], json!(107));
    assert!(
        output.json()["msg"]
            .as_str()
            .unwrap()
            .contains("plugins.bridge.portMappings.hostPorts[0]"),
        "{}",
        output.stdout
    );
    case.assert_rolled_back();
}

#[test]
fn concurrent_adds_write_whole_audit_lines() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    scenario.write_config(
        "10-polnet.conflist",
        &chain("portmap").replace(
            "\"type\":\"portmap\"",
            "\"type\":\"portmap\",\"capabilities\":{\"portMappings\":true}",
        ),
    );
    let policy = policy(&scenario, "enforce").display().to_string();
    let containers: Vec<Netns> = (0..8).map(|_| Netns::create("cwc")).collect();

    let cni_path = cni_path();
    std::thread::scope(|threads| {
        for container in &containers {
            let (scenario, policy, cni_path) = (&scenario, &policy, &cni_path);
            threads.spawn(move || {
                let netns = container.path();
                scenario
                    .cniwasm(
                        &["add", "polnet", netns.to_str().unwrap()],
                        &[("CNI_PATH", cni_path), ("CNIWASM_POLICY", policy)],
                    )
                    .assert_success();
            });
        }
    });

    let text = std::fs::read_to_string(scenario.dir.path().join("audit.log")).unwrap();
    let records: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("a torn audit line"))
        .collect();
    let summaries = records
        .iter()
        .filter(|r| r["kind"] == "plugin-call" && r["outcome"] == "ok")
        .count();
    assert_eq!(
        summaries,
        8 * 3,
        "bridge, host-local and portmap for each of 8 ADDs"
    );
    let mut reservations = scenario.reservations("polnet");
    reservations.dedup();
    assert_eq!(reservations.len(), 8);

    for container in &containers {
        let netns = container.path();
        scenario
            .cniwasm(
                &["del", "polnet", netns.to_str().unwrap()],
                &[("CNI_PATH", &cni_path), ("CNIWASM_POLICY", &policy)],
            )
            .assert_success();
    }
}

#[test]
fn audit_command_filters_records() {
    if !require_root() {
        return;
    }
    let case = Case::new("port-22", "enforce");
    assert!(!case.run("add").status.success());
    let policy = case.policy.display().to_string();

    let denied = case
        .scenario
        .cniwasm(&["audit", "--policy", &policy, "--decision", "deny"], &[]);
    denied.assert_success();
    let lines: Vec<&str> = denied.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{}", denied.stdout);
    assert!(
        lines[0].contains("port-22") && lines[0].contains("rule=portMappings.hostPorts"),
        "{}",
        lines[0]
    );

    let bridge = case
        .scenario
        .cniwasm(&["audit", "--policy", &policy, "--plugin", "bridge"], &[]);
    bridge.assert_success();
    assert!(bridge.stdout.lines().count() > 5, "{}", bridge.stdout);
    assert!(
        bridge.stdout.lines().all(|line| line.contains(" bridge ")),
        "{}",
        bridge.stdout
    );

    let other = case.scenario.cniwasm(
        &[
            "audit",
            "--policy",
            &policy,
            "--container",
            "no-such-container",
        ],
        &[],
    );
    other.assert_success();
    assert!(other.stdout.trim().is_empty(), "{}", other.stdout);
}

#[test]
fn inspect_reports_imports_and_admission() {
    if !require_root() {
        return;
    }
    let case = Case::new("extra-import", "enforce");
    let policy = case.policy.display().to_string();
    let plugin = misbehaving_dir().join("extra-import.wasm");

    let output = case.scenario.cniwasm(
        &["inspect", plugin.to_str().unwrap(), "--policy", &policy],
        &[],
    );
    output.assert_success();
    assert!(
        output.stdout.contains("digest:      sha256:"),
        "{}",
        output.stdout
    );
    assert!(
        output
            .stdout
            .contains("host imports: link, address, route, sysctl, nat, ipam, log"),
        "{}",
        output.stdout
    );
    assert!(
        output.stdout.contains("rejected by policy"),
        "{}",
        output.stdout
    );

    let bridge = plugin_dir().join("bridge.wasm");
    let output = case.scenario.cniwasm(
        &["inspect", bridge.to_str().unwrap(), "--policy", &policy],
        &[],
    );
    assert!(
        output.stdout.contains("admission:   admitted"),
        "{}",
        output.stdout
    );
}

#[test]
fn host_call_limit_ends_plugin() {
    if !require_root() {
        return;
    }
    let case = Case::new("panic", "enforce");
    let audit_log = case.scenario.dir.path().join("audit.log");
    let tight = json!({
        "auditLog": audit_log,
        "plugins": {"bridge": {"limits": {"memoryBytes": 67108864, "deadlineMs": 5000, "maxHostCalls": 3, "maxResultBytes": 65536}}}
    });
    std::fs::write(&case.policy, tight.to_string()).unwrap();

    assert_failure(&case.run("add"), 101, "bridge", "limit of 3 host calls");
    case.assert_rolled_back();
    // The rollback's DEL, which removes the masquerade rules of both
    // backends, can reach the limit too, so only ADD's denials count.
    let denied_in_add: Vec<Value> = case
        .audited("bridge", "deny", "limits.maxHostCalls")
        .into_iter()
        .filter(|record| record["command"] == "ADD")
        .collect();
    assert_eq!(denied_in_add.len(), 1, "{:#?}", case.audit());
}

#[test]
fn withheld_state_directory_fails_ipam() {
    if !require_root() {
        return;
    }
    let case = Case::new("panic", "enforce");
    let withheld = json!({"plugins": {"host-local": {"ipamState": false}}});
    std::fs::write(&case.policy, withheld.to_string()).unwrap();

    let output = case.run("add");

    assert!(
        !output.status.success(),
        "host-local allocated without its state directory"
    );
    let message = output.json()["msg"].as_str().unwrap().to_string();
    assert!(
        message.contains("host-local") || message.contains("state"),
        "{message}"
    );
    case.assert_rolled_back();
    assert!(
        !case
            .scenario
            .ipam_dir()
            .join("polnet")
            .join("lock")
            .exists(),
        "the state directory was opened"
    );
}

/// host-local imports `ipam-store` for its reservation scan, so an entry
/// that lists host-local's imports without it rejects the plugin before it
/// runs, naming the interface.
#[test]
fn host_local_needs_ipam_store_import() {
    if !require_root() {
        return;
    }
    let case = Case::new("panic", "enforce");
    let audit_log = case.scenario.dir.path().join("audit.log");
    let without = json!({"auditLog": audit_log,
        "plugins": {"host-local": {"imports": ["dns", "log"]}}});
    std::fs::write(&case.policy, without.to_string()).unwrap();

    let output = case.run("add");

    assert_failure(&output, 106, "host-local", "\"ipam-store\"");
    assert_failure(&output, 106, "host-local", "(rule imports)");
    case.assert_rolled_back();
    // The rollback's DEL delegates to host-local again and is rejected too.
    let records: Vec<Value> = case
        .audit()
        .into_iter()
        .filter(|r| r["plugin"] == "host-local")
        .collect();
    assert!(
        !records.is_empty(),
        "host-local's rejection was not audited"
    );
    assert!(
        records.iter().all(|r| r["outcome"] == "rejected"),
        "host-local ran: {records:#?}"
    );
    assert!(
        case.scenario.reservations("polnet").is_empty(),
        "host-local allocated although it was rejected"
    );
}

#[test]
fn seed_chain_runs_under_example_policy() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    let conflist = std::fs::read_to_string(repo_root().join("examples/mynet.conflist")).unwrap();
    scenario.write_config("10-mynet.conflist", &conflist);
    let audit_log = scenario.dir.path().join("audit.log");
    let policy_text =
        std::fs::read_to_string(repo_root().join("examples/policies/seed-policy.json"))
            .unwrap()
            .replace("/var/log/cniwasm/audit.log", audit_log.to_str().unwrap());
    let policy = scenario.dir.path().join("policy.json");
    std::fs::write(&policy, policy_text).unwrap();
    let container = Netns::create("cwc");
    let netns = container.path().display().to_string();
    let env = [
        ("CNIWASM_POLICY", policy.to_str().unwrap()),
        (
            "CAP_ARGS",
            r#"{"portMappings":[{"hostPort":9090,"containerPort":80,"protocol":"tcp","hostIP":"127.0.0.1"}]}"#,
        ),
    ];

    scenario
        .cniwasm(&["add", "mynet", &netns], &env)
        .assert_success();
    scenario
        .cniwasm(&["del", "mynet", &netns], &env)
        .assert_success();

    let records: Vec<Value> = std::fs::read_to_string(&audit_log)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let not_allowed: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "host-call" && r["decision"] != "allow")
        .collect();
    assert!(
        not_allowed.is_empty(),
        "the example policy rejects the seed chain: {not_allowed:#?}"
    );
    let plugins: std::collections::BTreeSet<&str> = records
        .iter()
        .filter(|r| r["kind"] == "plugin-call")
        .filter_map(|r| r["plugin"].as_str())
        .collect();
    assert_eq!(
        plugins.into_iter().collect::<Vec<_>>(),
        vec!["bridge", "host-local", "portmap"]
    );
}

/// A bridge entry whose `imports` leave out `spoof-check` rejects the
/// bridge before it runs, on a network with `macspoofchk`, and the ADD
/// leaves no link, reservation or nftables chain behind. Granting the
/// import lets the same ADD through.
#[test]
fn ungranted_spoof_check_import_rejected() {
    if !require_root() {
        return;
    }
    let list = json!({"cniVersion": "1.0.0", "name": "polnet", "plugins": [
        {"type": "bridge", "bridge": "polbr", "macspoofchk": true,
         "ipam": {"type": "host-local", "subnet": "10.244.30.0/24"}}]});
    let case = Case::with_list(&list.to_string(), "enforce");
    let audit_log = case.scenario.dir.path().join("audit.log");
    let mut imports = vec![
        "link", "address", "route", "sysctl", "nat", "nft-nat", "ipam", "log",
    ];
    let without = json!({"auditLog": audit_log, "plugins": {"bridge": {"imports": imports}}});
    std::fs::write(&case.policy, without.to_string()).unwrap();

    let output = case.run("add");

    assert_failure(&output, 106, "bridge", "\"spoof-check\"");
    assert_failure(&output, 106, "bridge", "(rule imports)");
    case.assert_rolled_back();
    assert_eq!(
        case.scenario.host.nft_table("bridge", "nat"),
        Vec::<Value>::new()
    );
    assert!(
        case.audit().iter().all(|r| r["kind"] != "host-call"),
        "host calls ran before the rejection"
    );

    imports.push("spoof-check");
    let granted = json!({"auditLog": audit_log, "plugins": {"bridge": {"imports": imports}}});
    std::fs::write(&case.policy, granted.to_string()).unwrap();
    case.run("add").assert_success();
    let added = case.audited("bridge", "allow", "");
    assert!(
        added.iter().any(|r| r["operation"] == "spoof-check.add"),
        "{added:#?}"
    );
    case.run("del").assert_success();
}

/// bridge + host-local and portmap with the nftables backend, mapping
/// host port `host_port`.
fn nft_portmap_case(host_port: u16) -> (Case, String) {
    let portmap = json!({"type": "portmap", "backend": "nftables",
        "capabilities": {"portMappings": true}});
    let case = Case::with_list(&chain_with(portmap), "enforce");
    let cap_args =
        json!({"portMappings": [{"hostPort": host_port, "containerPort": 80, "protocol": "tcp"}]});
    (case, cap_args.to_string())
}

fn run_with_cap_args(case: &Case, command: &str, cap_args: &str) -> CliOutput {
    let cni_path = cni_path();
    let policy = case.policy.display().to_string();
    case.scenario.cniwasm(
        &[command, "polnet", case.container.path().to_str().unwrap()],
        &[
            ("CNI_PATH", &cni_path),
            ("CNIWASM_POLICY", &policy),
            ("CAP_ARGS", cap_args),
        ],
    )
}

/// The policy's `portMappings.hostPorts` (1024-65535 here) applies to the
/// nftables backend as to iptables: host port 80 is denied, the ADD rolls
/// back, and no nftables rule of the container is left. Port 8080 passes.
#[test]
fn nft_port_limits_enforced() {
    if !require_root() {
        return;
    }
    let (case, cap_args) = nft_portmap_case(80);

    let output = run_with_cap_args(&case, "add", &cap_args);

    assert_failure(&output, 100, "portmap", "host port 80");
    case.assert_rolled_back();
    let denied = case.audited("portmap", "deny", "portMappings.hostPorts");
    assert_eq!(denied.len(), 1, "{denied:#?}");
    assert_eq!(denied[0]["operation"], "nft-nat.add-port-mappings");
    let ruleset = case.scenario.host.exec_ok(&["nft", "list", "ruleset"]);
    assert!(!ruleset.contains("dport 80 dnat"), "{ruleset}");

    let (allowed, cap_args) = nft_portmap_case(8080);
    run_with_cap_args(&allowed, "add", &cap_args).assert_success();
    let added = allowed.audited("portmap", "allow", "");
    assert!(
        added
            .iter()
            .any(|r| r["operation"] == "nft-nat.add-port-mappings"),
        "{added:#?}"
    );
    run_with_cap_args(&allowed, "del", &cap_args).assert_success();
}

/// A portmap entry whose `imports` leave out `nft-nat` rejects portmap
/// before it runs, whatever its backend, and the ADD rolls back.
#[test]
fn ungranted_nft_nat_import_rejected() {
    if !require_root() {
        return;
    }
    let (case, cap_args) = nft_portmap_case(8080);
    let audit_log = case.scenario.dir.path().join("audit.log");
    let policy =
        json!({"auditLog": audit_log, "plugins": {"portmap": {"imports": ["nat", "log"]}}});
    std::fs::write(&case.policy, policy.to_string()).unwrap();

    let output = run_with_cap_args(&case, "add", &cap_args);

    assert_failure(&output, 106, "portmap", "\"nft-nat\"");
    case.assert_rolled_back();
    assert!(
        case.audit()
            .iter()
            .all(|r| !(r["kind"] == "host-call" && r["plugin"] == "portmap")),
        "portmap made host calls before the rejection"
    );
}
