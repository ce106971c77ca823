//! [`ForwardFilter`] over `iptables -S` and `iptables-restore`, in the
//! filter table: the rules of the reference firewall plugin's iptables
//! backend (containernetworking/plugins v1.1.1), as `iptables-save` prints
//! them after that plugin's ADD.
//!
//! Each call takes the lock the nat rules use, lists only the chains it
//! needs (`FORWARD`, `CNI-FORWARD` and the admin chain; DEL lists
//! `CNI-FORWARD` alone), and applies its changes in one restore per family.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::rules::{Family, Rule};
use super::script::SavedTable;
use super::{DEFAULT_LOCK_PATH, command_error, lock_file, restore_text};
use crate::kernel::{ForwardFilter, ForwardSpec, KernelError, KernelErrorKind, Namespace};

/// The built-in chain the reference plugin jumps from.
const FORWARD: &str = "FORWARD";
/// The chain that contains the per-container accept rules.
pub(crate) const CNI_FORWARD: &str = "CNI-FORWARD";
/// Comments of the two jumps, as the reference plugin writes them.
const FORWARD_COMMENT: &str = "CNI firewall plugin rules";
const ADMIN_COMMENT: &str = "CNI firewall plugin admin overrides";

/// The chains, jumps and accept rules of one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ForwardRules {
    pub admin_chain: String,
    /// `FORWARD` to `CNI-FORWARD`, then `CNI-FORWARD` to the admin chain.
    /// Each is inserted first in its chain when missing.
    pub jumps: [Rule; 2],
    /// Per address: replies to the container, then traffic from it.
    pub accepts: Vec<Rule>,
}

/// Builds the rules for the addresses of `family` in `addresses`.
pub(crate) fn forward_rules(
    family: Family,
    admin_chain: &str,
    addresses: &[IpAddr],
) -> ForwardRules {
    let jump = |chain: &str, comment: &str, target: &str| {
        Rule::new(
            chain,
            format!("-m comment --comment \"{comment}\" -j {target}"),
        )
    };
    let accepts = addresses
        .iter()
        .filter(|address| Family::of(**address) == family)
        .flat_map(|address| accept_rules(*address))
        .collect();

    ForwardRules {
        admin_chain: admin_chain.to_string(),
        jumps: [
            jump(FORWARD, FORWARD_COMMENT, CNI_FORWARD),
            jump(CNI_FORWARD, ADMIN_COMMENT, admin_chain),
        ],
        accepts,
    }
}

/// Builds the two accept rules of one address, matched as a host prefix.
fn accept_rules(address: IpAddr) -> [Rule; 2] {
    let prefix = match address {
        IpAddr::V4(ip) => format!("{ip}/32"),
        IpAddr::V6(ip) => format!("{ip}/128"),
    };
    [
        Rule::new(
            CNI_FORWARD,
            format!("-d {prefix} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
        ),
        Rule::new(CNI_FORWARD, format!("-s {prefix} -j ACCEPT")),
    ]
}

/// Builds the `*filter` restore script that adds what `state` lacks.
/// Declaring a chain that exists would flush it, so only missing chains are
/// declared.
pub(crate) fn add_script(state: &SavedTable, rules: &ForwardRules) -> Vec<String> {
    let mut lines = Vec::new();
    for chain in [CNI_FORWARD, rules.admin_chain.as_str()] {
        if !state.has_chain(chain) {
            lines.push(format!(":{chain} - [0:0]"));
        }
    }
    for jump in rules.jumps.iter().filter(|jump| !state.contains(jump)) {
        lines.push(format!("-I {} 1 {}", jump.chain, jump.spec));
    }
    for accept in rules.accepts.iter().filter(|rule| !state.contains(rule)) {
        lines.push(accept.saved_line());
    }
    lines
}

/// Builds the script that deletes the accept rules `state` holds.
pub(crate) fn remove_script(state: &SavedTable, rules: &ForwardRules) -> Vec<String> {
    let present = rules.accepts.iter().filter(|rule| state.contains(rule));
    present
        .map(|rule| format!("-D {} {}", rule.chain, rule.spec))
        .collect()
}

/// Describes the first chain, jump or accept rule that `state` lacks.
pub(crate) fn first_missing(state: &SavedTable, rules: &ForwardRules) -> Option<String> {
    for chain in [CNI_FORWARD, rules.admin_chain.as_str()] {
        if !state.has_chain(chain) {
            return Some(format!("chain {chain} not found in the filter table"));
        }
    }
    let mut all = rules.jumps.iter().chain(&rules.accepts);
    all.find(|rule| !state.contains(rule))
        .map(|rule| format!("rule not found: {}", rule.saved_line()))
}

/// Forwarding rules in the network namespace of the calling thread, which
/// the iptables child processes inherit.
pub struct IptablesFilter {
    /// The lock file the nat rules use too, so one restore of either table
    /// never runs between another process's read and restore.
    lock_path: PathBuf,
}

impl Default for IptablesFilter {
    fn default() -> Self {
        Self::new(PathBuf::from(DEFAULT_LOCK_PATH))
    }
}

impl IptablesFilter {
    pub fn new(lock_path: PathBuf) -> Self {
        Self { lock_path }
    }

    /// Reads the chains `chains` needs in each family that has an address
    /// and applies the script `plan` builds, under one lock.
    fn apply(
        &self,
        operation: &str,
        rules: impl Fn(Family) -> ForwardRules,
        chains: impl Fn(&ForwardRules) -> Vec<String>,
        plan: impl Fn(&SavedTable, &ForwardRules) -> Vec<String>,
    ) -> Result<(), KernelError> {
        let _lock = lock_file(&self.lock_path, operation)?;

        for family in [Family::V4, Family::V6] {
            let rules = rules(family);
            if rules.accepts.is_empty() {
                continue;
            }
            let state = read_chains(family, operation, &chains(&rules))?;
            let lines = plan(&state, &rules);
            if !lines.is_empty() {
                restore_text(family, operation, &render(&lines))?;
            }
        }
        Ok(())
    }
}

/// Returns the chains an add or check reads.
fn all_chains(rules: &ForwardRules) -> Vec<String> {
    vec![
        FORWARD.to_string(),
        CNI_FORWARD.to_string(),
        rules.admin_chain.clone(),
    ]
}

fn render(lines: &[String]) -> String {
    let mut text = String::from("*filter\n");
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    text.push_str("COMMIT\n");
    text
}

/// Lists `chains` of the filter table, one `iptables -t filter -S <chain>`
/// process each, all started before the first is awaited. A user chain that
/// does not exist is left out of the result.
fn read_chains(
    family: Family,
    operation: &str,
    chains: &[String],
) -> Result<SavedTable, KernelError> {
    let command = family.list_command();
    let mut children = Vec::with_capacity(chains.len());
    for chain in chains {
        let child = Command::new(command)
            .args(["-w", "-t", "filter", "-S", chain])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| command_error(operation, format!("run {command}: {err}")))?;
        children.push((chain, child));
    }

    let mut table = SavedTable::default();
    for (chain, child) in children {
        let output = child
            .wait_with_output()
            .map_err(|err| command_error(operation, format!("wait for {command}: {err}")))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() {
            table.add_listing(&String::from_utf8_lossy(&output.stdout));
        } else if !(chain != FORWARD && is_missing_filter_chain(&stderr)) {
            let reason = format!(
                "{command} -t filter -S {chain} failed with {}: {}",
                output.status,
                stderr.trim()
            );
            return Err(command_error(operation, reason));
        }
    }
    Ok(table)
}

/// Tells whether a failed `iptables -t filter -S <chain>` reports a chain
/// that does not exist: legacy iptables prints "No chain/target/match by that
/// name", iptables 1.8.9 over nf_tables calls the chain incompatible.
fn is_missing_filter_chain(stderr: &str) -> bool {
    stderr.contains("No chain/target/match by that name")
        || stderr.contains("in table `filter' is incompatible")
}

fn describe(addresses: &[IpAddr]) -> String {
    let listed: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    listed.join(", ")
}

impl ForwardFilter for IptablesFilter {
    fn add_forward_rules(&mut self, spec: &ForwardSpec) -> Result<(), KernelError> {
        let operation = format!("add forward rules for {}", describe(&spec.addresses));
        self.apply(
            &operation,
            |family| forward_rules(family, &spec.admin_chain, &spec.addresses),
            all_chains,
            add_script,
        )
    }

    fn check_forward_rules(&mut self, spec: &ForwardSpec) -> Result<(), KernelError> {
        let operation = format!("check forward rules for {}", describe(&spec.addresses));
        let _lock = lock_file(&self.lock_path, &operation)?;

        for family in [Family::V4, Family::V6] {
            let rules = forward_rules(family, &spec.admin_chain, &spec.addresses);
            if rules.accepts.is_empty() {
                continue;
            }
            let state = read_chains(family, &operation, &all_chains(&rules))?;
            if let Some(missing) = first_missing(&state, &rules) {
                let kind = KernelErrorKind::NotFound;
                return Err(KernelError::new(kind, Namespace::Host, operation, missing));
            }
        }
        Ok(())
    }

    fn remove_forward_rules(&mut self, addresses: &[IpAddr]) -> Result<(), KernelError> {
        let operation = format!("remove forward rules for {}", describe(addresses));
        // The admin chain is not read: DEL removes accept rules only.
        self.apply(
            &operation,
            |family| forward_rules(family, CNI_FORWARD, addresses),
            |_| vec![CNI_FORWARD.to_string()],
            remove_script,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn lines(rules: &ForwardRules) -> Vec<String> {
        let all = rules.jumps.iter().chain(&rules.accepts);
        all.map(Rule::saved_line).collect()
    }

    /// Builds the saved state after the reference plugin's ADD of `rules`.
    fn saved_after(rules: &ForwardRules) -> SavedTable {
        let mut table = SavedTable::default();
        table.add_listing("-P FORWARD ACCEPT\n");
        table.add_listing(&format!("-N {CNI_FORWARD}\n-N {}\n", rules.admin_chain));
        table.add_listing(&lines(rules).join("\n"));
        table
    }

    /// The rules of `iptables-save -t filter` after the reference firewall's
    /// ADD of 10.99.0.2/24 and fd99::2/64 with the default admin chain.
    #[test]
    fn rules_match_reference() {
        let addresses = [ip("10.99.0.2"), ip("fd99::2")];

        let v4 = forward_rules(Family::V4, "CNI-ADMIN", &addresses);
        let v6 = forward_rules(Family::V6, "CNI-ADMIN", &addresses);

        assert_eq!(
            lines(&v4),
            [
                r#"-A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD"#,
                r#"-A CNI-FORWARD -m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN"#,
                "-A CNI-FORWARD -d 10.99.0.2/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                "-A CNI-FORWARD -s 10.99.0.2/32 -j ACCEPT",
            ]
        );
        assert_eq!(
            lines(&v6)[2..],
            [
                "-A CNI-FORWARD -d fd99::2/128 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                "-A CNI-FORWARD -s fd99::2/128 -j ACCEPT",
            ]
        );
    }

    #[test]
    fn family_without_address_has_no_accepts() {
        let rules = forward_rules(Family::V6, "CNI-ADMIN", &[ip("10.99.0.2")]);
        assert!(rules.accepts.is_empty());
    }

    #[test]
    fn first_add_declares_and_inserts() {
        let rules = forward_rules(Family::V4, "MYADMIN", &[ip("10.99.0.2")]);
        let mut empty = SavedTable::default();
        empty.add_listing("-P FORWARD ACCEPT\n");

        let script = render(&add_script(&empty, &rules));

        assert_eq!(
            script,
            "*filter\n:CNI-FORWARD - [0:0]\n:MYADMIN - [0:0]\n\
             -I FORWARD 1 -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD\n\
             -I CNI-FORWARD 1 -m comment --comment \"CNI firewall plugin admin overrides\" -j MYADMIN\n\
             -A CNI-FORWARD -d 10.99.0.2/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
             -A CNI-FORWARD -s 10.99.0.2/32 -j ACCEPT\nCOMMIT\n"
        );
    }

    #[test]
    fn second_container_adds_accepts_only() {
        let first = forward_rules(Family::V4, "CNI-ADMIN", &[ip("10.99.0.2")]);
        let second = forward_rules(Family::V4, "CNI-ADMIN", &[ip("10.99.0.3")]);

        let script = add_script(&saved_after(&first), &second);

        assert_eq!(
            script,
            [
                second.accepts[0].saved_line(),
                second.accepts[1].saved_line()
            ]
        );
        assert!(add_script(&saved_after(&first), &first).is_empty());
    }

    #[test]
    fn remove_deletes_present_accepts() {
        let rules = forward_rules(Family::V4, "CNI-ADMIN", &[ip("10.99.0.2")]);

        let script = remove_script(&saved_after(&rules), &rules);

        assert_eq!(
            script,
            [
                "-D CNI-FORWARD -d 10.99.0.2/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                "-D CNI-FORWARD -s 10.99.0.2/32 -j ACCEPT",
            ]
        );
        assert!(remove_script(&SavedTable::default(), &rules).is_empty());
    }

    #[test]
    fn check_names_missing_piece() {
        let rules = forward_rules(Family::V4, "CNI-ADMIN", &[ip("10.99.0.2")]);
        let mut state = saved_after(&rules);
        assert_eq!(first_missing(&state, &rules), None);

        let other = forward_rules(Family::V4, "CNI-ADMIN", &[ip("10.99.0.3")]);
        let missing = first_missing(&state, &other).unwrap();
        assert!(missing.contains("-d 10.99.0.3/32"), "{missing}");

        state = SavedTable::default();
        let missing = first_missing(&state, &rules).unwrap();
        assert_eq!(missing, "chain CNI-FORWARD not found in the filter table");
    }

    #[test]
    fn missing_chain_messages() {
        assert!(is_missing_filter_chain(
            "iptables v1.8.9 (nf_tables): chain `NOPE' in table `filter' is incompatible, use 'nft' tool."
        ));
        assert!(is_missing_filter_chain(
            "iptables: No chain/target/match by that name."
        ));
        assert!(!is_missing_filter_chain("iptables: Permission denied"));
    }
}
