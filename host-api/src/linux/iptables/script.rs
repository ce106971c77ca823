//! Parsing the saved or listed nat chains and building the one
//! `iptables-restore --noflush` script that moves them to the wanted state.

use std::collections::BTreeSet;

use super::rules::{HOSTPORT_DNAT, POSTROUTING, PortMapRules, Position, Rule};

/// The chains and rules of the nat table as `iptables -S` or `iptables-save`
/// printed them. A table read chain by chain contains only the chains that
/// were listed, so a call must list every chain it queries.
#[derive(Debug, Default, Clone)]
pub(crate) struct SavedTable {
    chains: BTreeSet<String>,
    rules: Vec<Rule>,
}

impl SavedTable {
    /// Adds the output of `iptables -t nat -S <chain>`: a `-P` line for a
    /// built-in chain or an `-N` line for a user chain, then one `-A` line
    /// per rule in the format of `iptables-save`.
    pub(crate) fn add_listing(&mut self, output: &str) {
        for line in output.lines() {
            let declaration = line
                .strip_prefix("-P ")
                .or_else(|| line.strip_prefix("-N "));
            if let Some(declaration) = declaration {
                if let Some(chain) = declaration.split_whitespace().next() {
                    self.chains.insert(chain.to_string());
                }
            } else if let Some((chain, spec)) = line
                .strip_prefix("-A ")
                .and_then(|rule| rule.split_once(' '))
            {
                self.rules.push(Rule::new(chain, spec));
            }
        }
    }

    /// Parses the `*nat` section of `iptables-save` output.
    pub(crate) fn parse(output: &str) -> Self {
        let mut table = SavedTable::default();
        let mut in_nat = false;

        for line in output.lines() {
            if let Some(name) = line.strip_prefix('*') {
                in_nat = name.trim() == "nat";
            } else if !in_nat {
                continue;
            } else if let Some(declaration) = line.strip_prefix(':') {
                if let Some(chain) = declaration.split_whitespace().next() {
                    table.chains.insert(chain.to_string());
                }
            } else if let Some((chain, spec)) = line
                .strip_prefix("-A ")
                .and_then(|rule| rule.split_once(' '))
            {
                table.rules.push(Rule::new(chain, spec));
            }
        }
        table
    }

    pub(crate) fn has_chain(&self, chain: &str) -> bool {
        self.chains.contains(chain)
    }

    pub(crate) fn rule_count(&self, chain: &str) -> usize {
        self.rules.iter().filter(|rule| rule.chain == chain).count()
    }

    pub(crate) fn contains(&self, rule: &Rule) -> bool {
        self.rules.contains(rule)
    }

    /// Returns the rules of `chain` that jump to `target`, once per occurrence.
    fn jumps(&self, chain: &str, target: &str) -> Vec<&Rule> {
        let jumps = self.rules.iter().filter(|rule| rule.chain == chain);
        jumps.filter(|rule| rule.jumps_to(target)).collect()
    }
}

/// An `iptables-restore --noflush` script for the nat table. Chain
/// declarations come first. With `--noflush`, declaring an existing chain
/// flushes it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct RestoreScript {
    declarations: Vec<String>,
    commands: Vec<String>,
}

impl RestoreScript {
    fn declare_chain(&mut self, chain: &str) {
        self.declarations.push(format!(":{chain} - [0:0]"));
    }

    fn delete(&mut self, rule: &Rule) {
        self.commands
            .push(format!("-D {} {}", rule.chain, rule.spec));
    }

    fn add(&mut self, rule: &Rule, position: Position) {
        match position {
            Position::Append => self.commands.push(rule.saved_line()),
            Position::First => self
                .commands
                .push(format!("-I {} 1 {}", rule.chain, rule.spec)),
        }
    }

    fn flush_and_delete_chain(&mut self, chain: &str) {
        self.commands.push(format!("-F {chain}"));
        self.commands.push(format!("-X {chain}"));
    }

    /// Appends the declarations and commands of `other`, which then commit
    /// together with these.
    pub(crate) fn append(&mut self, other: RestoreScript) {
        self.declarations.extend(other.declarations);
        self.commands.extend(other.commands);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.declarations.is_empty() && self.commands.is_empty()
    }

    pub(crate) fn render(&self) -> String {
        let mut text = String::from("*nat\n");
        for line in self.declarations.iter().chain(&self.commands) {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str("COMMIT\n");
        text
    }
}

/// Replaces the owner's port-mapping rules: creates the shared chains and
/// rules that are missing, flushes the owner's chain by declaring it, drops
/// its old entry rules and adds the new ones.
pub(crate) fn add_port_mappings_script(state: &SavedTable, rules: &PortMapRules) -> RestoreScript {
    if rules.dnat_rules.is_empty() {
        return remove_port_mappings_script(state, &rules.dnat_chain);
    }
    let mut script = RestoreScript::default();

    // Declaring an existing shared chain would flush the other owners' rules.
    for chain in &rules.shared_chains {
        if !state.has_chain(chain) {
            script.declare_chain(chain);
        }
    }
    script.declare_chain(&rules.dnat_chain);

    for old_entry in state.jumps(HOSTPORT_DNAT, &rules.dnat_chain) {
        script.delete(old_entry);
    }
    for (rule, position) in &rules.shared_rules {
        if !state.contains(rule) {
            script.add(rule, *position);
        }
    }
    for rule in rules.dnat_rules.iter().chain(&rules.entry_rules) {
        script.add(rule, Position::Append);
    }
    script
}

/// Deletes the owner's entry rules and chain but keeps the shared chains.
pub(crate) fn remove_port_mappings_script(state: &SavedTable, dnat_chain: &str) -> RestoreScript {
    let mut script = RestoreScript::default();
    for entry in state.jumps(HOSTPORT_DNAT, dnat_chain) {
        script.delete(entry);
    }
    if state.has_chain(dnat_chain) {
        script.flush_and_delete_chain(dnat_chain);
    }
    script
}

/// Adds the masquerade rules that are missing. The owner's chain is not
/// flushed, because an owner with two addresses of a family shares it.
pub(crate) fn add_masquerade_script(
    state: &SavedTable,
    chain: &str,
    rules: &[Rule],
) -> RestoreScript {
    let mut script = RestoreScript::default();
    if !state.has_chain(chain) {
        script.declare_chain(chain);
    }
    for rule in rules {
        if !state.contains(rule) {
            script.add(rule, Position::Append);
        }
    }
    script
}

/// Adds the port mappings of an owner whose chain does not exist yet, on a
/// node that has every shared rule: checks each shared rule not in
/// `verified` with `-C`, creates the owner's chain with `-N`, and appends
/// its rules and entry rules. The whole script fails, and changes nothing,
/// when a checked rule is missing or the owner's chain exists. `None` when
/// there is nothing to map.
pub(crate) fn new_port_mappings_script(
    rules: &PortMapRules,
    verified: &[&Rule],
) -> Option<RestoreScript> {
    if rules.dnat_rules.is_empty() {
        return None;
    }
    let mut script = RestoreScript::default();
    for (rule, _) in &rules.shared_rules {
        if verified.contains(&rule) {
            continue;
        }
        script
            .commands
            .push(format!("-C {} {}", rule.chain, rule.spec));
    }
    script.commands.push(format!("-N {}", rules.dnat_chain));
    for rule in rules.dnat_rules.iter().chain(&rules.entry_rules) {
        script.add(rule, Position::Append);
    }
    Some(script)
}

/// Creates `chain` with `-N` and appends `rules`. The whole script fails,
/// and changes nothing, when the chain exists already.
pub(crate) fn new_chain_script(chain: &str, rules: &[Rule]) -> RestoreScript {
    let mut script = RestoreScript::default();
    script.commands.push(format!("-N {chain}"));
    for rule in rules {
        script.add(rule, Position::Append);
    }
    script
}

/// Deletes the POSTROUTING jumps to the owner's masquerade chain and the chain.
pub(crate) fn remove_masquerade_script(state: &SavedTable, chain: &str) -> RestoreScript {
    let mut script = RestoreScript::default();
    for jump in state.jumps(POSTROUTING, chain) {
        script.delete(jump);
    }
    if state.has_chain(chain) {
        script.flush_and_delete_chain(chain);
    }
    script
}

/// Returns the first rule that the saved state lacks.
pub(crate) fn first_missing<'a>(
    state: &SavedTable,
    mut rules: impl Iterator<Item = &'a Rule>,
) -> Option<&'a Rule> {
    rules.find(|rule| !state.contains(rule))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{Owner, PortMapSpec, PortMapping, Protocol};
    use crate::linux::iptables::rules::{NAT_BUILTIN_CHAINS, masquerade_rules, port_map_rules};

    const EMPTY_NAT: &str = "# Generated by iptables-save v1.8.9 (nf_tables)
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
COMMIT
";

    fn owner(container_id: &str) -> Owner {
        Owner {
            network: "mynet".into(),
            container_id: container_id.into(),
            ifname: "eth0".into(),
        }
    }

    fn spec() -> PortMapSpec {
        PortMapSpec {
            container_address: "10.244.10.72/24".parse().unwrap(),
            mappings: vec![PortMapping {
                host_port: 9090,
                container_port: 80,
                protocol: Protocol::Tcp,
                host_ip: None,
            }],
            snat: true,
            masq_all: false,
            mark_bit: 13,
            mark_chain: None,
            conditions: Vec::new(),
        }
    }

    /// Builds the saved state of an empty nat table after `rules` were added.
    fn saved_after(rules: &PortMapRules) -> SavedTable {
        let mut text = EMPTY_NAT.replace("COMMIT\n", "");
        for chain in rules
            .shared_chains
            .iter()
            .copied()
            .chain([rules.dnat_chain.as_str()])
        {
            text.push_str(&format!(":{chain} - [0:0]\n"));
        }
        for rule in rules.all_rules() {
            text.push_str(&rule.saved_line());
            text.push('\n');
        }
        text.push_str("COMMIT\n");
        SavedTable::parse(&text)
    }

    #[test]
    fn parse_reads_nat_only() {
        let output = "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -j DROP\nCOMMIT\n*nat\n:CNI-X - [0:0]\n-A CNI-X -j ACCEPT\nCOMMIT\n";
        let table = SavedTable::parse(output);
        assert!(table.has_chain("CNI-X"));
        assert!(!table.has_chain("FORWARD"));
        assert!(table.contains(&Rule::new("CNI-X", "-j ACCEPT")));
        assert!(!table.contains(&Rule::new("FORWARD", "-j DROP")));
    }

    #[test]
    fn listing_reads_declarations_and_rules() {
        let mut table = SavedTable::default();
        table.add_listing("-P POSTROUTING ACCEPT\n-A POSTROUTING -s 10.0.0.2/32 -m comment --comment \"name: a b\" -j CNI-X\n");
        table.add_listing("-N CNI-X\n-A CNI-X -j ACCEPT\n");

        assert!(table.has_chain("POSTROUTING"));
        assert!(table.has_chain("CNI-X"));
        assert!(!table.has_chain("CNI-Y"));
        let jump = Rule::new(
            "POSTROUTING",
            "-s 10.0.0.2/32 -m comment --comment \"name: a b\" -j CNI-X",
        );
        assert!(table.contains(&jump));
        assert!(table.contains(&Rule::new("CNI-X", "-j ACCEPT")));
        assert_eq!(table.jumps(POSTROUTING, "CNI-X"), vec![&jump]);
    }

    #[test]
    fn listing_matches_save_for_same_rules() {
        let rules = port_map_rules(&owner("a"), &spec()).unwrap();
        let saved = saved_after(&rules);

        let mut listed = SavedTable::default();
        for chain in rules.chains() {
            let mut text = String::new();
            if NAT_BUILTIN_CHAINS.contains(&chain) {
                text.push_str(&format!("-P {chain} ACCEPT\n"));
            } else {
                text.push_str(&format!("-N {chain}\n"));
            }
            for rule in rules.all_rules().filter(|rule| rule.chain == chain) {
                text.push_str(&rule.saved_line());
                text.push('\n');
            }
            listed.add_listing(&text);
        }

        assert_eq!(
            add_port_mappings_script(&listed, &rules),
            add_port_mappings_script(&saved, &rules)
        );
        assert_eq!(
            remove_port_mappings_script(&listed, &rules.dnat_chain),
            remove_port_mappings_script(&saved, &rules.dnat_chain)
        );
    }

    #[test]
    fn first_add_declares_shared_chains() {
        let rules = port_map_rules(&owner("a"), &spec()).unwrap();
        let script = add_port_mappings_script(&SavedTable::parse(EMPTY_NAT), &rules).render();

        assert!(script.starts_with("*nat\n:CNI-HOSTPORT-DNAT - [0:0]\n:CNI-HOSTPORT-SETMARK - [0:0]\n:CNI-HOSTPORT-MASQ - [0:0]\n"), "{script}");
        assert!(
            script.contains(&format!(":{} - [0:0]\n", rules.dnat_chain)),
            "{script}"
        );
        assert!(script.contains("\n-I POSTROUTING 1 -m comment"), "{script}");
        assert!(script.contains("\n-A PREROUTING -m addrtype"), "{script}");
        assert!(script.ends_with("COMMIT\n"), "{script}");
    }

    #[test]
    fn re_add_keeps_shared_and_replaces_entries() {
        let rules = port_map_rules(&owner("a"), &spec()).unwrap();
        let state = saved_after(&rules);
        let script = add_port_mappings_script(&state, &rules).render();

        assert!(!script.contains(":CNI-HOSTPORT-"), "{script}");
        assert!(!script.contains("PREROUTING"), "{script}");
        assert!(!script.contains("POSTROUTING"), "{script}");
        // The own chain is declared again to flush it.
        assert!(
            script.contains(&format!(":{} - [0:0]\n", rules.dnat_chain)),
            "{script}"
        );
        let entry = &rules.entry_rules[0];
        assert!(
            script.contains(&format!("-D {} {}\n", entry.chain, entry.spec)),
            "{script}"
        );
        assert!(
            script.contains(&format!("{}\n", entry.saved_line())),
            "{script}"
        );
    }

    #[test]
    fn remove_leaves_shared_chains() {
        let rules = port_map_rules(&owner("a"), &spec()).unwrap();
        let state = saved_after(&rules);
        let script = remove_port_mappings_script(&state, &rules.dnat_chain).render();

        let chain = &rules.dnat_chain;
        let expected = format!(
            "*nat\n-D {} {}\n-F {chain}\n-X {chain}\nCOMMIT\n",
            rules.entry_rules[0].chain, rules.entry_rules[0].spec
        );
        assert_eq!(script, expected);
    }

    #[test]
    fn remove_absent_is_empty() {
        let script = remove_port_mappings_script(&SavedTable::parse(EMPTY_NAT), "CNI-DN-x");
        assert!(script.is_empty());
        let script = remove_masquerade_script(&SavedTable::parse(EMPTY_NAT), "CNI-x");
        assert!(script.is_empty());
    }

    #[test]
    fn remove_masquerade_deletes_jumps() {
        let owner = owner("a");
        let rules = masquerade_rules(&owner, "10.244.10.72/24".parse().unwrap());
        let chain = owner.masquerade_chain();
        let state_text = format!(
            "*nat\n:POSTROUTING ACCEPT [0:0]\n:{chain} - [0:0]\n{}\n{}\n{}\nCOMMIT\n",
            rules[2].saved_line(),
            rules[0].saved_line(),
            rules[1].saved_line()
        );
        let script = remove_masquerade_script(&SavedTable::parse(&state_text), &chain).render();
        assert_eq!(
            script,
            format!(
                "*nat\n-D POSTROUTING {}\n-F {chain}\n-X {chain}\nCOMMIT\n",
                rules[2].spec
            )
        );
    }

    #[test]
    fn masquerade_add_skips_present_rules() {
        let owner = owner("a");
        let rules = masquerade_rules(&owner, "10.244.10.72/24".parse().unwrap());
        let chain = owner.masquerade_chain();
        let state_text = format!(
            "*nat\n:{chain} - [0:0]\n{}\nCOMMIT\n",
            rules[0].saved_line()
        );

        let script =
            add_masquerade_script(&SavedTable::parse(&state_text), &chain, &rules).render();

        assert_eq!(
            script,
            format!(
                "*nat\n{}\n{}\nCOMMIT\n",
                rules[1].saved_line(),
                rules[2].saved_line()
            )
        );
    }

    #[test]
    fn first_missing_names_rule() {
        let rules = port_map_rules(&owner("a"), &spec()).unwrap();
        let missing = first_missing(&SavedTable::parse(EMPTY_NAT), rules.all_rules());
        assert_eq!(missing, Some(&rules.shared_rules[0].0));
        assert_eq!(first_missing(&saved_after(&rules), rules.all_rules()), None);
    }
}
