//! Tests of the chain listing against real iptables. Each test runs on a new
//! thread that first moves into a new network namespace of its own
//! (`unshare(CLONE_NEWNET)`), so the iptables processes it starts act on a
//! throwaway nat table that the kernel frees when the thread ends.

use std::process::Command;

use super::*;

/// Runs `body` on a new thread in a new network namespace. Without root it
/// panics, unless CNIWASM_SKIP_PRIVILEGED=1 is set, and then it prints that
/// it skipped, as the privileged tests under host-api/tests do.
fn privileged(test: &str, body: impl FnOnce() + Send + 'static) {
    if !rustix::process::geteuid().is_root() {
        if std::env::var("CNIWASM_SKIP_PRIVILEGED").as_deref() == Ok("1") {
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
        body();
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// Runs `program` in the calling thread's namespace, feeding it `input`.
fn run_with_input(program: &str, args: &[&str], input: &str) -> String {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Returns the `-A` lines of `iptables-save -t nat` (or ip6tables-save).
fn saved_rules(family: Family) -> Vec<String> {
    let command = match family {
        Family::V4 => "iptables-save",
        Family::V6 => "ip6tables-save",
    };
    let output = run_with_input(command, &["-t", "nat"], "");
    let rules = output.lines().filter(|line| line.starts_with("-A "));
    rules.map(str::to_string).collect()
}

/// Maps TCP `host_port` to port 80 of `address`, with SNAT as in the seed chain.
fn port_map(address: &str, host_port: u16) -> PortMapSpec {
    PortMapSpec {
        container_address: address.parse().unwrap(),
        mappings: vec![crate::kernel::PortMapping {
            host_port,
            container_port: 80,
            protocol: crate::kernel::Protocol::Tcp,
            host_ip: None,
        }],
        snat: true,
        masq_all: false,
        mark_bit: 13,
        mark_chain: None,
        conditions: Vec::new(),
    }
}

/// Appends `count` POSTROUTING rules, as the masquerade jumps of that many
/// containers would.
fn fill_postrouting(count: usize) {
    let mut script = String::from("*nat\n");
    for index in 0..count {
        let (high, low) = (index / 250, index % 250 + 1);
        script.push_str(&format!(
            "-A POSTROUTING -s 10.250.{high}.{low}/32 -j ACCEPT\n"
        ));
    }
    script.push_str("COMMIT\n");
    run_with_input("iptables-restore", &["--noflush"], &script);
}

fn owner(container_id: &str) -> Owner {
    Owner {
        network: "mynet".into(),
        container_id: container_id.into(),
        ifname: "eth0".into(),
    }
}

#[test]
fn list_missing_chain_is_none() {
    privileged("list_missing_chain_is_none", || {
        for family in [Family::V4, Family::V6] {
            let listing = list_chain(family, "test", "CNI-MISSING").unwrap();
            assert_eq!(listing, None, "{family:?}");
        }
    });
}

#[test]
fn list_builtin_chain_in_fresh_table() {
    privileged("list_builtin_chain_in_fresh_table", || {
        for family in [Family::V4, Family::V6] {
            let table = list(family, "test", &[POSTROUTING, "CNI-MISSING"]).unwrap();
            assert!(table.has_chain(POSTROUTING), "{family:?}");
            assert!(!table.has_chain("CNI-MISSING"), "{family:?}");
        }
    });
}

#[test]
fn list_matches_save_lines() {
    privileged("list_matches_save_lines", || {
        let script = "*nat\n:CNI-LIST - [0:0]\n\
            -A POSTROUTING -s 10.0.0.2/32 -m comment --comment \"name: a \\\"b\\\"\" -j CNI-LIST\n\
            -A CNI-LIST ! -d 224.0.0.0/4 -j MASQUERADE\n\
            -A CNI-LIST -d 10.0.0.0/24 -p tcp -m tcp --dport 80 -j ACCEPT\n\
            COMMIT\n";
        run_with_input("iptables-restore", &["--noflush"], script);

        let table = list(Family::V4, "test", &[POSTROUTING, "CNI-LIST"]).unwrap();

        assert!(table.has_chain("CNI-LIST"));
        let saved = saved_rules(Family::V4);
        assert_eq!(saved.len(), 3, "{saved:#?}");
        for line in &saved {
            let (chain, spec) = line
                .strip_prefix("-A ")
                .and_then(|rule| rule.split_once(' '))
                .unwrap();
            assert!(table.contains(&Rule::new(chain, spec)), "{line}");
        }
    });
}

#[test]
fn masquerade_add_keeps_other_owner() {
    privileged("masquerade_add_keeps_other_owner", || {
        let mut firewall = IptablesFirewall::new(FirewallOptions::default());
        let first = owner("first");
        let second = owner("second");

        firewall
            .add_masquerade(&first, "10.244.10.2/24".parse().unwrap())
            .unwrap();
        let before = saved_rules(Family::V4);
        firewall
            .add_masquerade(&second, "10.244.10.3/24".parse().unwrap())
            .unwrap();
        firewall
            .add_masquerade(&second, "10.244.10.3/24".parse().unwrap())
            .unwrap();
        let after = saved_rules(Family::V4);

        assert_eq!(after.len(), 6, "{after:#?}");
        for line in &before {
            assert!(after.contains(line), "{line} lost: {after:#?}");
        }
        firewall.remove_masquerade(&second).unwrap();
        firewall.settle().unwrap();
        assert_eq!(saved_rules(Family::V4), before);
    });
}

#[test]
fn masquerade_second_address_shares_chain() {
    privileged("masquerade_second_address_shares_chain", || {
        let mut firewall = IptablesFirewall::new(FirewallOptions::default());
        let owner = owner("two-addresses");
        let first = "10.244.10.2/24".parse().unwrap();
        let second = "10.245.0.2/16".parse().unwrap();

        firewall.add_masquerade(&owner, first).unwrap();
        firewall.add_masquerade(&owner, second).unwrap();

        // The second address adds its ACCEPT and POSTROUTING rules to the
        // same chain, and its MASQUERADE rule equals the first one.
        let saved = saved_rules(Family::V4);
        assert_eq!(saved.len(), 5, "{saved:#?}");
        firewall.check_masquerade(&owner, first).unwrap();
        firewall.check_masquerade(&owner, second).unwrap();
        firewall.remove_masquerade(&owner).unwrap();
        firewall.settle().unwrap();
        assert!(saved_rules(Family::V4).is_empty());
    });
}

#[test]
fn port_mappings_listed_after_large_postrouting() {
    privileged("port_mappings_listed_after_large_postrouting", || {
        // One masquerade jump per simulated container, as bridge with ipMasq
        // leaves them, so the firewall switches to listing chain by chain.
        fill_postrouting(LIST_FROM_POSTROUTING_RULES);

        let mut firewall = IptablesFirewall::new(FirewallOptions::default());
        let owner = owner("listed");
        let address = "10.244.10.2/24".parse().unwrap();
        firewall.add_masquerade(&owner, address).unwrap();
        // A first ADD reads only the owner's chain, and a check reads
        // POSTROUTING too.
        firewall.check_masquerade(&owner, address).unwrap();
        let port_chains = 7;
        assert!(firewall.lists_each(Family::V4, &vec![POSTROUTING; port_chains]));
        assert!(!firewall.lists_each(Family::V6, &vec![POSTROUTING; port_chains]));

        let spec = port_map("10.244.10.2/24", 9090);
        firewall.add_port_mappings(&owner, &spec).unwrap();
        let first = saved_rules(Family::V4);
        firewall.add_port_mappings(&owner, &spec).unwrap();
        let mut again = saved_rules(Family::V4);
        let mut first_sorted = first.clone();
        first_sorted.sort();
        again.sort();
        assert_eq!(again, first_sorted, "re-adding must not duplicate rules");
        firewall.check_port_mappings(&owner, &spec).unwrap();

        // The port-mapping rules are the seed chain's 9, so the shared
        // chains were declared when missing and filled once.
        let added = first.len() - LIST_FROM_POSTROUTING_RULES - 3;
        assert_eq!(added, 9, "{first:#?}");

        firewall.remove_port_mappings(&owner).unwrap();
        firewall.check_port_mappings(&owner, &spec).unwrap_err();
        firewall.remove_masquerade(&owner).unwrap();
        firewall.settle().unwrap();
        // The 5 rules of the shared chains and built-in jumps stay.
        let left = saved_rules(Family::V4);
        assert_eq!(left.len(), LIST_FROM_POSTROUTING_RULES + 5, "{left:#?}");
    });
}

/// The script of a new owner's port mappings commits only where every
/// shared rule exists and the owner's chain does not, and otherwise fails
/// as a whole, so the table stays as it was.
#[test]
fn new_owner_script_all_or_nothing() {
    privileged("new_owner_script_all_or_nothing", || {
        let mut firewall = IptablesFirewall::new(FirewallOptions::default());
        let first = owner("first");
        let second = owner("second");
        let spec = port_map("10.244.10.3/24", 9091);
        let second_rules = rules::port_map_rules(&second, &spec).unwrap();
        let script = script::new_port_mappings_script(&second_rules, &[]).unwrap();

        // No shared chains yet: the script fails and adds nothing.
        restore(Family::V4, "test", &script).unwrap_err();
        assert!(saved_rules(Family::V4).is_empty());

        // The first owner's ADD creates the shared chains and rules.
        firewall
            .add_port_mappings(&first, &port_map("10.244.10.2/24", 9090))
            .unwrap();
        let shared_only = saved_rules(Family::V4);
        restore(Family::V4, "test", &script).unwrap();
        let after = saved_rules(Family::V4);
        // Two mark rules and a DNAT rule in the owner's chain, one jump.
        assert_eq!(after.len(), shared_only.len() + 4, "{after:#?}");
        firewall.check_port_mappings(&second, &spec).unwrap();

        // The owner's chain exists now: the script fails and changes nothing.
        restore(Family::V4, "test", &script).unwrap_err();
        assert_eq!(saved_rules(Family::V4), after);
    });
}

/// A new owner's port mappings on a node where a shared rule went missing
/// restore that rule and keep the other owners' rules.
#[test]
fn port_mappings_repair_shared_rule() {
    privileged("port_mappings_repair_shared_rule", || {
        let mut firewall = IptablesFirewall::new(FirewallOptions::default());
        let first = owner("first");
        firewall
            .add_port_mappings(&first, &port_map("10.244.10.2/24", 9090))
            .unwrap();
        let complete = saved_rules(Family::V4);
        let mark_rule = complete
            .iter()
            .find(|line| line.starts_with("-A CNI-HOSTPORT-SETMARK "))
            .unwrap()
            .clone();
        let deletion = format!("*nat\n{}\nCOMMIT\n", mark_rule.replacen("-A", "-D", 1));
        run_with_input("iptables-restore", &["--noflush"], &deletion);

        let second = owner("second");
        let spec = port_map("10.244.10.3/24", 9091);
        firewall.add_port_mappings(&second, &spec).unwrap();

        let after = saved_rules(Family::V4);
        for line in &complete {
            assert!(after.contains(line), "{line} missing: {after:#?}");
        }
        assert_eq!(after.len(), complete.len() + 4, "{after:#?}");
        firewall.check_port_mappings(&second, &spec).unwrap();
    });
}

/// With iptables-nft, a new owner's ADD skips the `-C` of the POSTROUTING
/// jump that nf_tables netlink found, and still repairs that jump when it
/// went missing.
#[test]
fn masquerade_jump_verified_over_netlink() {
    privileged("masquerade_jump_verified_over_netlink", || {
        assert!(
            nftables::iptables_uses_nf_tables(),
            "this test needs iptables with the nf_tables backend"
        );
        let mut firewall = IptablesFirewall::new(FirewallOptions::default());
        let spec = port_map("10.244.10.3/24", 9091);
        let second_rules = rules::port_map_rules(&owner("second"), &spec).unwrap();
        assert!(
            firewall
                .verified_masquerade_jump(Family::V4, &second_rules)
                .is_none()
        );

        firewall
            .add_port_mappings(&owner("first"), &port_map("10.244.10.2/24", 9090))
            .unwrap();
        let complete = saved_rules(Family::V4);
        let verified = firewall.verified_masquerade_jump(Family::V4, &second_rules);
        let verified = verified.expect("the first ADD created the POSTROUTING jump");
        assert_eq!(verified.chain, POSTROUTING);
        let script = script::new_port_mappings_script(&second_rules, &[verified]).unwrap();
        assert!(
            !script.render().contains("-C POSTROUTING"),
            "{}",
            script.render()
        );

        let jump = complete
            .iter()
            .find(|line| line.starts_with("-A POSTROUTING "))
            .unwrap();
        let deletion = format!("*nat\n{}\nCOMMIT\n", jump.replacen("-A", "-D", 1));
        run_with_input("iptables-restore", &["--noflush"], &deletion);
        assert!(
            firewall
                .verified_masquerade_jump(Family::V4, &second_rules)
                .is_none()
        );

        firewall.add_port_mappings(&owner("second"), &spec).unwrap();
        let after = saved_rules(Family::V4);
        assert!(after.contains(jump), "{jump} not repaired: {after:#?}");
        firewall
            .check_port_mappings(&owner("second"), &spec)
            .unwrap();
    });
}

/// Removals wait for settle, and then the port mappings and the masquerade
/// of one owner go together, while another owner's rules stay.
#[test]
fn removals_wait_for_settle() {
    privileged("removals_wait_for_settle", || {
        let mut firewall = IptablesFirewall::new(FirewallOptions::default());
        let leaving = owner("leaving");
        let staying = owner("staying");
        firewall
            .add_masquerade(&staying, "10.244.10.3/24".parse().unwrap())
            .unwrap();
        let before = saved_rules(Family::V4);
        firewall
            .add_masquerade(&leaving, "10.244.10.2/24".parse().unwrap())
            .unwrap();
        firewall
            .add_port_mappings(&leaving, &port_map("10.244.10.2/24", 9090))
            .unwrap();
        let added = saved_rules(Family::V4);

        firewall.remove_port_mappings(&leaving).unwrap();
        firewall.remove_masquerade(&leaving).unwrap();
        assert_eq!(saved_rules(Family::V4), added, "removed before settle");
        firewall.settle().unwrap();

        let left = saved_rules(Family::V4);
        for chain in [leaving.dnat_chain(), leaving.masquerade_chain()] {
            assert!(!left.iter().any(|line| line.contains(&chain)), "{left:#?}");
        }
        for line in &before {
            assert!(left.contains(line), "{line} lost: {left:#?}");
        }
        // The 5 rules of the shared port-mapping chains and their jumps stay.
        assert_eq!(left.len(), before.len() + 5, "{left:#?}");
    });
}

/// A check after a removal finds the removal done, and dropping the
/// firewall applies what no settle applied.
#[test]
fn removals_applied_by_next_call_and_drop() {
    privileged("removals_applied_by_next_call_and_drop", || {
        let address = "10.244.10.2/24".parse().unwrap();
        let checked = owner("checked");
        let dropped = owner("dropped");
        let mut firewall = IptablesFirewall::new(FirewallOptions::default());
        firewall.add_masquerade(&checked, address).unwrap();
        firewall.add_masquerade(&dropped, address).unwrap();

        firewall.remove_masquerade(&checked).unwrap();
        let error = firewall.check_masquerade(&checked, address).unwrap_err();
        assert_eq!(error.kind, KernelErrorKind::NotFound, "{error}");
        assert_eq!(saved_rules(Family::V4).len(), 3);

        firewall.remove_masquerade(&dropped).unwrap();
        assert_eq!(saved_rules(Family::V4).len(), 3);
        drop(firewall);
        assert!(saved_rules(Family::V4).is_empty());
    });
}

/// Adds the masquerade and the port mappings of `owner` in both families,
/// with addresses ending in `host`.
fn add_owner_rules(firewall: &mut IptablesFirewall, owner: &Owner, host: u8, host_port: u16) {
    let v4 = format!("10.244.10.{host}/24");
    let v6 = format!("fd00:10::{host}/64");
    for address in [&v4, &v6] {
        firewall
            .add_masquerade(owner, address.parse().unwrap())
            .unwrap();
        firewall
            .add_port_mappings(owner, &port_map(address, host_port))
            .unwrap();
    }
}

/// Returns the saved lines of `family` that do not name a chain of `owner`.
fn lines_without(family: Family, owner: &Owner) -> Vec<String> {
    let chains = [owner.dnat_chain(), owner.masquerade_chain()];
    let lines = saved_rules(family).into_iter();
    lines
        .filter(|line| !chains.iter().any(|chain| line.contains(chain.as_str())))
        .collect()
}

/// Fails the test unless `iptables` on PATH uses the nf_tables backend,
/// which the tests of the netlink path need.
fn require_nf_tables() {
    assert!(
        nftables::iptables_uses_nf_tables(),
        "iptables on PATH is not xtables-nft-multi: this test needs the nf_tables backend"
    );
}

/// Removing one owner over nf_tables netlink leaves exactly the other
/// owner's rules and the shared ones, in both families, in their order.
#[test]
fn nf_tables_removal_keeps_other_owner() {
    privileged("nf_tables_removal_keeps_other_owner", || {
        require_nf_tables();
        let mut firewall = IptablesFirewall::new(FirewallOptions::default());
        let leaving = owner("leaving");
        let staying = owner("staying");
        // The leaving owner's jumps come first, so deleting by handle must
        // pick them out from before the staying owner's.
        add_owner_rules(&mut firewall, &leaving, 2, 9090);
        add_owner_rules(&mut firewall, &staying, 3, 9091);
        let expected = [Family::V4, Family::V6].map(|family| lines_without(family, &leaving));
        // Masquerade: a jump and 2 rules. Port mappings: a jump and 3 rules
        // in IPv4, where SNAT marks hairpin traffic from 127.0.0.1 too, and
        // a jump and 2 rules in IPv6.
        for (family, owned) in [(Family::V4, 7), (Family::V6, 6)] {
            let all = saved_rules(family);
            let others = &expected[family.index()];
            assert_eq!(all.len(), others.len() + owned, "{family:?}: {all:#?}");
        }

        firewall.remove_port_mappings(&leaving).unwrap();
        firewall.remove_masquerade(&leaving).unwrap();
        firewall.settle().unwrap();

        assert_eq!(firewall.last_removal_path, Some(NatPath::NfTables));
        assert_eq!(saved_rules(Family::V4), expected[0]);
        assert_eq!(saved_rules(Family::V6), expected[1]);
        let save = run_with_input("iptables-save", &["-t", "nat"], "");
        assert!(!save.contains(&leaving.dnat_chain()), "{save}");
        assert!(!save.contains(&leaving.masquerade_chain()), "{save}");
    });
}

/// A removal of an owner with nothing installed succeeds over nf_tables
/// netlink, in a namespace without a nat table and in one with other
/// owners' rules, and so does a second removal of the same owner.
#[test]
fn nf_tables_removal_of_absent_owner() {
    privileged("nf_tables_removal_of_absent_owner", || {
        require_nf_tables();
        let mut firewall = IptablesFirewall::new(FirewallOptions::default());
        let absent = owner("absent");
        firewall.remove_port_mappings(&absent).unwrap();
        firewall.remove_masquerade(&absent).unwrap();
        firewall.settle().unwrap();
        assert_eq!(firewall.last_removal_path, Some(NatPath::NfTables));

        let staying = owner("staying");
        let leaving = owner("leaving");
        add_owner_rules(&mut firewall, &staying, 3, 9091);
        add_owner_rules(&mut firewall, &leaving, 2, 9090);
        let expected = [Family::V4, Family::V6].map(|family| lines_without(family, &leaving));

        for attempt in 1..=2 {
            firewall.last_removal_path = None;
            firewall.remove_port_mappings(&leaving).unwrap();
            firewall.remove_masquerade(&leaving).unwrap();
            firewall.settle().unwrap();
            assert_eq!(
                firewall.last_removal_path,
                Some(NatPath::NfTables),
                "removal {attempt}"
            );
            assert_eq!(saved_rules(Family::V4), expected[0], "removal {attempt}");
            assert_eq!(saved_rules(Family::V6), expected[1], "removal {attempt}");
        }
    });
}

/// With the legacy backend assumed, removals take the iptables-restore
/// path and leave the same rules as the nf_tables path.
#[test]
fn restore_fallback_removes_same_rules() {
    privileged("restore_fallback_removes_same_rules", || {
        let mut firewall = IptablesFirewall::new(FirewallOptions::default());
        firewall.nf_tables_backend = Some(false);
        let leaving = owner("leaving");
        let staying = owner("staying");
        add_owner_rules(&mut firewall, &leaving, 2, 9090);
        add_owner_rules(&mut firewall, &staying, 3, 9091);
        let expected = [Family::V4, Family::V6].map(|family| lines_without(family, &leaving));

        firewall.remove_port_mappings(&leaving).unwrap();
        firewall.remove_masquerade(&leaving).unwrap();
        firewall.settle().unwrap();

        assert_eq!(firewall.last_removal_path, Some(NatPath::Restore));
        assert_eq!(saved_rules(Family::V4), expected[0]);
        assert_eq!(saved_rules(Family::V6), expected[1]);
    });
}

/// A chain that another rule still jumps to cannot be deleted: the commit
/// fails as a whole, settle reports it with the operation, and the table
/// keeps every rule.
#[test]
fn nf_tables_commit_failure_reported() {
    privileged("nf_tables_commit_failure_reported", || {
        require_nf_tables();
        let mut firewall = IptablesFirewall::new(FirewallOptions::default());
        let leaving = owner("leaving");
        firewall
            .add_masquerade(&leaving, "10.244.10.2/24".parse().unwrap())
            .unwrap();
        let chain = leaving.masquerade_chain();
        // A user chain of another tool, since MASQUERADE in the owner's
        // chain may only be reached from POSTROUTING.
        let extra_jump = format!("*nat\n:OTHER-TOOL - [0:0]\n-A OTHER-TOOL -j {chain}\nCOMMIT\n");
        run_with_input("iptables-restore", &["--noflush"], &extra_jump);
        let before = saved_rules(Family::V4);

        firewall.remove_masquerade(&leaving).unwrap();
        let error = firewall.settle().unwrap_err();

        assert_eq!(firewall.last_removal_path, Some(NatPath::NfTables));
        let message = error.to_string();
        assert!(
            message
                .contains(r#"failed to remove masquerade of network "mynet" container "leaving""#),
            "{message}"
        );
        assert!(message.contains("nf_tables commit failed"), "{message}");
        assert!(
            message.contains(&format!("delete chain {chain}")),
            "{message}"
        );
        assert_eq!(saved_rules(Family::V4), before);
    });
}

/// Returns the rules of every kind cniwasm writes, in `family`: the
/// masquerade of one owner and the port mappings of two others, with SNAT,
/// a host IP, UDP and masquerading from anywhere.
fn rules_of_every_kind(family: Family) -> Vec<Rule> {
    let (address, host_ip) = match family {
        Family::V4 => ("10.244.10.7/24", "127.0.0.1"),
        Family::V6 => ("fd00:10::7/64", "::1"),
    };
    let mut spec = port_map(address, 9090);
    spec.mappings.push(crate::kernel::PortMapping {
        host_port: 5353,
        container_port: 53,
        protocol: crate::kernel::Protocol::Udp,
        host_ip: Some(host_ip.parse().unwrap()),
    });
    let mut masq_all = port_map(address, 8080);
    masq_all.masq_all = true;

    let mut all = rules::masquerade_rules(&owner("masq"), address.parse().unwrap());
    for (name, spec) in [("mapped", &spec), ("masq-all", &masq_all)] {
        let port_rules = rules::port_map_rules(&owner(name), spec).unwrap();
        all.extend(port_rules.all_rules().cloned());
    }
    all
}

/// Each rule that iptables-restore writes reads back over nf_tables netlink
/// as the expressions that `nft_rules::encode` builds from its text, in
/// both families. This pins the encoding to iptables-nft's own.
#[test]
fn encoded_rules_match_iptables_nft() {
    privileged("encoded_rules_match_iptables_nft", || {
        require_nf_tables();
        for family in [Family::V4, Family::V6] {
            let all = rules_of_every_kind(family);
            let mut script = String::from("*nat\n");
            let mut chains: Vec<&str> = Vec::new();
            for rule in &all {
                if !NAT_BUILTIN_CHAINS.contains(&rule.chain.as_str())
                    && !chains.contains(&rule.chain.as_str())
                {
                    chains.push(&rule.chain);
                    script.push_str(&format!("-N {}\n", rule.chain));
                }
            }
            for rule in &all {
                script.push_str(&format!("{}\n", rule.saved_line()));
            }
            script.push_str("COMMIT\n");
            restore_text(family, "test", &script).unwrap();

            let mut socket = NftSocket::open().unwrap();
            let mut by_chain: Vec<(&str, Vec<&Rule>)> = Vec::new();
            for rule in &all {
                match by_chain.iter_mut().find(|(chain, _)| *chain == rule.chain) {
                    Some((_, rules)) => rules.push(rule),
                    None => by_chain.push((&rule.chain, vec![rule])),
                }
            }
            for (chain, rules) in by_chain {
                let dumped = socket.rule_expressions(family, chain).unwrap();
                assert_eq!(dumped.len(), rules.len(), "{family:?} {chain}: {dumped:#?}");
                for (rule, expressions) in rules.iter().zip(&dumped) {
                    let encoded = nft_rules::encode(family, rule)
                        .unwrap_or_else(|| panic!("not encodable: {}", rule.saved_line()));
                    assert!(
                        nft_rules::same_rule(expressions, &encoded.expressions),
                        "{family:?} {}\n dumped: {expressions:#?}\n encoded: {:#?}",
                        rule.saved_line(),
                        encoded.expressions
                    );
                }
            }
        }
    });
}

/// A new owner's masquerade and port mappings go over nf_tables netlink
/// once the shared rules exist. iptables-save then prints exactly the lines
/// that iptables-restore would have written, so CHECK, which compares those
/// lines, passes. The removal leaves the first owner's rules.
#[test]
fn new_owner_added_over_nf_tables() {
    privileged("new_owner_added_over_nf_tables", || {
        require_nf_tables();
        let mut firewall = IptablesFirewall::new(FirewallOptions::default());
        add_owner_rules(&mut firewall, &owner("first"), 2, 9090);
        let before = [Family::V4, Family::V6].map(saved_rules);

        let second = owner("second");
        for (family, address) in [
            (Family::V4, "10.244.10.3/24"),
            (Family::V6, "fd00:10::3/64"),
        ] {
            let net: IpNet = address.parse().unwrap();
            firewall.add_masquerade(&second, net).unwrap();
            assert_eq!(
                firewall.last_add_path,
                Some(NatPath::NfTables),
                "{family:?}"
            );
            let spec = port_map(address, 9091);
            firewall.add_port_mappings(&second, &spec).unwrap();
            assert_eq!(
                firewall.last_add_path,
                Some(NatPath::NfTables),
                "{family:?}"
            );

            let saved = saved_rules(family);
            let port_rules = rules::port_map_rules(&second, &spec).unwrap();
            let added = rules::masquerade_rules(&second, net)
                .into_iter()
                .chain(port_rules.dnat_rules.iter().cloned())
                .chain(port_rules.entry_rules.iter().cloned());
            let mut expected = before[family.index()].clone();
            expected.extend(added.map(|rule| rule.saved_line()));
            let mut sorted_saved = saved.clone();
            sorted_saved.sort();
            expected.sort();
            assert_eq!(sorted_saved, expected, "{family:?}");

            firewall.check_masquerade(&second, net).unwrap();
            firewall.check_port_mappings(&second, &spec).unwrap();
        }

        firewall.remove_port_mappings(&second).unwrap();
        firewall.remove_masquerade(&second).unwrap();
        firewall.settle().unwrap();
        assert_eq!([Family::V4, Family::V6].map(saved_rules), before);
    });
}

/// An entry rule with a caller's conditions has words the encoder does not
/// know, so those port mappings go through iptables-restore, and a second
/// ADD of an owner whose chain exists falls back to it as well.
#[test]
fn nf_tables_add_falls_back_to_restore() {
    privileged("nf_tables_add_falls_back_to_restore", || {
        require_nf_tables();
        let mut firewall = IptablesFirewall::new(FirewallOptions::default());
        add_owner_rules(&mut firewall, &owner("first"), 2, 9090);

        let mut spec = port_map("10.244.10.4/24", 9092);
        spec.conditions = vec![
            "-m".into(),
            "addrtype".into(),
            "--src-type".into(),
            "LOCAL".into(),
        ];
        firewall
            .add_port_mappings(&owner("conditioned"), &spec)
            .unwrap();
        assert_eq!(firewall.last_add_path, Some(NatPath::Restore));
        firewall
            .check_port_mappings(&owner("conditioned"), &spec)
            .unwrap();

        let net: IpNet = "10.244.10.2/24".parse().unwrap();
        let before = saved_rules(Family::V4);
        firewall.add_masquerade(&owner("first"), net).unwrap();
        assert_eq!(firewall.last_add_path, Some(NatPath::Restore));
        assert_eq!(
            saved_rules(Family::V4),
            before,
            "a repeated ADD duplicated rules"
        );
    });
}

/// The jump check stops at the first jump it finds, and still finds a jump
/// behind 500 other rules and reports a missing one, and the firewall's
/// own socket keeps working after such checks.
#[test]
fn jump_found_anywhere_in_large_chain() {
    privileged("jump_found_anywhere_in_large_chain", || {
        require_nf_tables();
        fill_postrouting(500);
        let script = "*nat\n:CNI-LAST - [0:0]\n:CNI-FIRST - [0:0]\n-A POSTROUTING -j CNI-LAST\n-I POSTROUTING 1 -j CNI-FIRST\nCOMMIT\n";
        run_with_input("iptables-restore", &["--noflush"], script);

        let mut socket = NftSocket::open().unwrap();
        assert!(
            socket
                .has_jump(Family::V4, POSTROUTING, "CNI-FIRST")
                .unwrap()
        );
        assert!(
            socket
                .has_jump(Family::V4, POSTROUTING, "CNI-LAST")
                .unwrap()
        );
        assert!(
            !socket
                .has_jump(Family::V4, POSTROUTING, "CNI-NONE")
                .unwrap()
        );
        assert!(
            !socket
                .has_jump(Family::V6, POSTROUTING, "CNI-FIRST")
                .unwrap()
        );
        let rules = socket.rule_expressions(Family::V4, POSTROUTING).unwrap();
        assert_eq!(rules.len(), 502);
    });
}

/// The nf_tables netlink lookup distinguishes a missing table from an
/// existing one in any family. So listing a missing table needs no nft
/// process, and it succeeds even with an nft program that does not exist.
#[test]
fn table_lookup_spares_nft_process() {
    privileged("table_lookup_spares_nft_process", || {
        use netlink_packet_netfilter::NetfilterProtoFamily;

        let mut socket = NftSocket::open().unwrap();
        let inet = NetfilterProtoFamily::Inet;
        assert!(!socket.table_exists(inet, "cni_plugins_masquerade").unwrap());
        run_with_input(
            "nft",
            &["-f", "-"],
            "add table inet cni_plugins_masquerade\n",
        );
        assert!(socket.table_exists(inet, "cni_plugins_masquerade").unwrap());
        assert!(
            !socket
                .table_exists(NetfilterProtoFamily::IPv4, "cni_plugins_masquerade")
                .unwrap()
        );

        let missing_program = crate::linux::nft::NftProgram::new("/nonexistent/nft", "a test");
        let listing = missing_program
            .list_table("list a missing table", "inet", "cni_hostport_absent")
            .unwrap();
        assert_eq!(listing, serde_json::json!({ "nftables": [] }));
        let error = missing_program
            .list_table("list an existing table", "inet", "cni_plugins_masquerade")
            .unwrap_err();
        assert!(error.to_string().contains("/nonexistent/nft"), "{error}");
    });
}
