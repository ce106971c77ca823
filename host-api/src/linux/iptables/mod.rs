//! [`Firewall`] over `iptables -S`, `iptables-save` and `iptables-restore`:
//! each call reads the nat chains it needs and applies all its changes in one
//! restore, instead of one iptables process per rule.
//!
//! Adding an owner's rules for the first time, the common case, takes one
//! restore and no read: the script asserts the shared rules it relies on
//! with `-C` and creates the owner's chain with `-N`. A missing shared rule
//! or an existing owner chain fails the whole script, which then changes
//! nothing, and the call reads the chains it needs, as every other call does.
//!
//! Removals wait until [`Firewall::settle`], or until the next other call,
//! and then go into one read and one restore per family. A DEL of the seed
//! chain removes the port mappings and the masquerade of one container, and
//! each restore that deletes rules costs 8 to 19 ms here, mostly waiting in
//! the kernel, so the two commits become one. When iptables uses the
//! nf_tables backend, the removals go over nf_tables netlink in-process
//! instead (see [`nftables`]), and the read and restore remain the fallback.
//!
//! A call that needs at most [`MAX_LISTED_CHAINS`] chains lists each with
//! `iptables -t nat -S <chain>`, so its cost does not grow with the rules of
//! every other container. The others save the whole table, unless an earlier
//! read in the same process found a large POSTROUTING chain.
//!
//! Timed over 20 runs each inside one namespace, with iptables 1.8.9
//! (nf_tables) on a 2-core VM: with the rules of 500 containers (about
//! 3,500), `iptables-save -t nat` took 37 ms and `iptables -t nat -S <chain>`
//! 4 to 9 ms. With one container, each took about 2 ms.

mod filter;
mod nft_rules;
mod nftables;
mod rules;
mod script;

pub use filter::IptablesFilter;
pub(crate) use nftables::NftSocket;

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use ipnet::IpNet;

use crate::kernel::{
    Firewall, KernelError, KernelErrorKind, Namespace, Netlink, Owner, PortMapSpec, Sysctl,
};
use nftables::{ChainRemoval, NftError};
use rules::{Family, HOSTPORT_DNAT, HOSTPORT_MASQ, NAT_BUILTIN_CHAINS, POSTROUTING, Rule};
use script::{RestoreScript, SavedTable};

/// The default lock file. iptables itself takes /run/xtables.lock around each
/// command, so this lock must be another file.
const DEFAULT_LOCK_PATH: &str = "/run/cniwasm/iptables.lock";

/// The maximum number of chains a call lists one by one. A call that reads
/// more saves the whole table instead, unless POSTROUTING was large (see
/// [`LIST_FROM_POSTROUTING_RULES`]). One `iptables -S` process costs about
/// as much as one `iptables-save` of a small table. Adding port mappings
/// reads 4 to 7 chains, and listing them one by one made ADD with 1 or 10
/// containers 3 to 6 ms slower in the benchmark.
const MAX_LISTED_CHAINS: usize = 2;

/// The number of chains that removals list one by one however large the
/// table is: the parent chains of the port mappings and the masquerade, and
/// the owner's chain of each.
const MAX_REMOVAL_CHAINS: usize = 4;

/// The number of POSTROUTING rules from which a call lists its chains one by
/// one however many it reads. POSTROUTING contains about one rule per
/// container with masquerading. In the benchmark, listing the 7 chains of a
/// port-mapping ADD cost 0 to 4 ms more than one save at 100 containers,
/// and about 20 ms less at 500. The crossover at 150 is an estimate.
const LIST_FROM_POSTROUTING_RULES: usize = 150;

/// Enables `route_localnet` on the host's route device to a container, so
/// that DNAT of traffic to 127.0.0.1 reaches it. The reference portmap
/// plugin does this for IPv4 port mappings with SNAT.
pub struct LocalnetRouting {
    /// The netlink that looks up the route device, shared with the host API.
    pub netlink: Arc<Mutex<dyn Netlink + Send>>,
    pub sysctl: Box<dyn Sysctl + Send>,
}

pub struct FirewallOptions {
    /// File that serializes the save-and-restore of concurrent cniwasm
    /// processes with an exclusive flock. Its directory is created if missing.
    pub lock_path: PathBuf,
    /// `None` leaves `route_localnet` alone, and then port mappings on
    /// 127.0.0.1 do not reach the container.
    pub localnet: Option<LocalnetRouting>,
}

impl Default for FirewallOptions {
    fn default() -> Self {
        Self {
            lock_path: PathBuf::from(DEFAULT_LOCK_PATH),
            localnet: None,
        }
    }
}

/// NAT rules in the network namespace of the calling thread, which the
/// iptables child processes inherit.
pub struct IptablesFirewall {
    options: FirewallOptions,
    /// The number of POSTROUTING rules the last read of that chain found,
    /// IPv4 first. It only chooses how later calls read the table, so a
    /// stale count costs time but never changes a script.
    postrouting_rules: [Cell<usize>; 2],
    /// Removals not applied yet, in the order they were asked for.
    pending: Vec<Removal>,
    /// The failure of applied removals that no settle has reported yet.
    failed: Option<KernelError>,
    /// Whether `iptables` uses the nf_tables backend, looked up at the first
    /// call that needs it.
    nf_tables_backend: Option<bool>,
    /// The socket of the in-process removals. It stays open, because
    /// closing it right after a commit that deleted chains waits for the
    /// kernel to free them.
    nft_socket: Option<NftSocket>,
    /// The path that applied the last pending removals.
    last_removal_path: Option<NatPath>,
    /// The path that added the last new owner chain.
    last_add_path: Option<NatPath>,
}

/// The way NAT rules were added or removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NatPath {
    /// In-process over nf_tables netlink.
    NfTables,
    /// With `iptables -S` and `iptables-restore`.
    Restore,
}

/// An owner's chain to remove with the rules that jump to it.
struct Removal {
    operation: String,
    kind: RemovalKind,
    chain: String,
}

enum RemovalKind {
    PortMappings,
    Masquerade,
}

impl Removal {
    /// Returns the shared chain that contains the jumps to the owner's chain.
    fn parent(&self) -> &'static str {
        match self.kind {
            RemovalKind::PortMappings => HOSTPORT_DNAT,
            RemovalKind::Masquerade => POSTROUTING,
        }
    }

    fn script(&self, state: &SavedTable) -> RestoreScript {
        match self.kind {
            RemovalKind::PortMappings => script::remove_port_mappings_script(state, &self.chain),
            RemovalKind::Masquerade => script::remove_masquerade_script(state, &self.chain),
        }
    }
}

impl IptablesFirewall {
    pub fn new(options: FirewallOptions) -> Self {
        Self {
            options,
            postrouting_rules: Default::default(),
            pending: Vec::new(),
            failed: None,
            nf_tables_backend: None,
            nft_socket: None,
            last_removal_path: None,
            last_add_path: None,
        }
    }

    /// Adds `removal` to the pending ones unless the same chain is pending
    /// already: a script that deletes a chain twice fails as a whole.
    fn defer(&mut self, removal: Removal) {
        if !self
            .pending
            .iter()
            .any(|other| other.chain == removal.chain)
        {
            self.pending.push(removal);
        }
    }

    /// Applies the pending removals over nf_tables netlink, or else in one
    /// read and one restore per family. A failure is kept for the next
    /// [`Firewall::settle`], since it belongs to an earlier call than the
    /// one that runs now.
    fn apply_pending(&mut self) {
        let removals = std::mem::take(&mut self.pending);
        if removals.is_empty() {
            return;
        }

        let operation = removals
            .iter()
            .map(|removal| removal.operation.as_str())
            .collect::<Vec<_>>()
            .join(" and ");
        let (path, applied) = match self.remove_with_nf_tables(&operation, &removals) {
            Ok(true) => (NatPath::NfTables, Ok(())),
            Err(error) => (NatPath::NfTables, Err(error)),
            Ok(false) => (
                NatPath::Restore,
                self.remove_with_restore(&operation, &removals),
            ),
        };

        self.last_removal_path = Some(path);
        if let Err(error) = applied {
            self.failed.get_or_insert(error);
        }
    }

    /// Applies `removals` over nf_tables netlink, one commit per family,
    /// IPv4 first. Returns false when iptables uses the legacy backend or a
    /// request before a commit failed, and then the caller applies them with
    /// iptables-restore. A family committed before that failure is read
    /// again there and has nothing left to remove.
    fn remove_with_nf_tables(
        &mut self,
        operation: &str,
        removals: &[Removal],
    ) -> Result<bool, KernelError> {
        if !self.uses_nf_tables() {
            return Ok(false);
        }

        let _lock = self.lock(operation)?;
        let started = std::time::Instant::now();
        let chains: Vec<ChainRemoval<'_>> = removals
            .iter()
            .map(|removal| ChainRemoval {
                parent: removal.parent(),
                chain: &removal.chain,
            })
            .collect();

        for family in [Family::V4, Family::V6] {
            let removed = self
                .nft_socket()
                .and_then(|socket| socket.remove_chains(family, &chains));
            match removed {
                Ok(messages) => tracing::debug!(?family, messages, "committed NAT removals"),
                Err(error) => {
                    // Replies to a failed request may still be queued.
                    self.nft_socket = None;
                    return match error {
                        NftError::BeforeCommit(reason) => {
                            tracing::debug!(%reason, operation, "nf_tables removal failed, using iptables-restore");
                            Ok(false)
                        }
                        NftError::Commit(_) => Err(command_error(operation, error.to_string())),
                    };
                }
            }
        }

        let micros = started.elapsed().as_micros();
        tracing::debug!(?chains, micros, "removed NAT chains over nf_tables netlink");
        Ok(true)
    }

    /// Tells whether `iptables` uses the nf_tables backend, looking it up at
    /// the first call.
    fn uses_nf_tables(&mut self) -> bool {
        *self
            .nf_tables_backend
            .get_or_insert_with(nftables::iptables_uses_nf_tables)
    }

    /// Returns the open socket of the calling thread's network namespace,
    /// opening it first when needed.
    fn nft_socket(&mut self) -> Result<&mut NftSocket, NftError> {
        if self
            .nft_socket
            .as_ref()
            .is_some_and(|socket| !socket.in_current_namespace())
        {
            self.nft_socket = None;
        }

        if self.nft_socket.is_none() {
            let socket = NftSocket::open().map_err(|error| {
                NftError::BeforeCommit(format!("open nf_tables netlink socket: {error}"))
            })?;
            self.nft_socket = Some(socket);
        }
        Ok(self.nft_socket.as_mut().expect("socket opened above"))
    }

    /// Applies `removals` in one read and one restore per family.
    fn remove_with_restore(
        &self,
        operation: &str,
        removals: &[Removal],
    ) -> Result<(), KernelError> {
        let mut chains: Vec<&str> = Vec::new();
        for removal in removals {
            for chain in [removal.parent(), removal.chain.as_str()] {
                if !chains.contains(&chain) {
                    chains.push(chain);
                }
            }
        }

        self.apply_both_families(operation, &chains, |state| {
            let mut combined = RestoreScript::default();
            for removal in removals {
                combined.append(removal.script(state));
            }
            combined
        })
    }

    /// Applies the script that `plan` builds for each family, IPv4 first. It
    /// takes one lock and reads both families at the same time, so a DEL
    /// waits for one read instead of two.
    fn apply_both_families(
        &self,
        operation: &str,
        chains: &[&str],
        plan: impl Fn(&SavedTable) -> RestoreScript,
    ) -> Result<(), KernelError> {
        let _lock = self.lock(operation)?;

        // A removal reads at most four chains, two of them the owner's
        // small ones. Listing them costs less than a save of a large table,
        // and with few rules both take about the same time.
        let (list_v4, list_v6) = (
            chains.len() <= MAX_REMOVAL_CHAINS || self.lists_each(Family::V4, chains),
            chains.len() <= MAX_REMOVAL_CHAINS || self.lists_each(Family::V6, chains),
        );
        let started = std::time::Instant::now();
        let (v4_state, v6_state) = std::thread::scope(|scope| {
            let v6 = scope.spawn(|| read_table(Family::V6, operation, chains, list_v6));
            let v4 = read_table(Family::V4, operation, chains, list_v4);
            let v6 = v6
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (v4, v6)
        });
        let micros = started.elapsed().as_micros();
        tracing::debug!(?chains, micros, "read nat chains of both families");
        for (family, state) in [(Family::V4, &v4_state), (Family::V6, &v6_state)] {
            if let Ok(state) = state {
                self.remember(family, chains, state);
            }
        }

        // The tables are independent, so listing the IPv6 chains before the
        // IPv4 restore reads the same state as listing them after.
        for (family, state) in [(Family::V4, v4_state), (Family::V6, v6_state)] {
            apply(family, operation, &plan(&state?))?;
        }
        Ok(())
    }

    /// Installs the rules of `rules` under the lock: in one restore for an
    /// owner seen for the first time, else from a read of the chains.
    fn install_port_mappings(
        &mut self,
        family: Family,
        operation: &str,
        rules: &rules::PortMapRules,
    ) -> Result<(), KernelError> {
        let _lock = self.lock(operation)?;
        let verified: Vec<&Rule> = self
            .verified_masquerade_jump(family, rules)
            .into_iter()
            .collect();
        if self.add_new_port_mappings_with_nf_tables(family, rules, &verified) {
            return Ok(());
        }
        if let Some(first_try) = script::new_port_mappings_script(rules, &verified) {
            match restore(family, operation, &first_try) {
                Ok(()) => return Ok(()),
                Err(error) => tracing::debug!(%error, "port mappings need a read of the table"),
            }
        }

        let state = self.read_nat(family, operation, &rules.chains())?;
        apply(
            family,
            operation,
            &script::add_port_mappings_script(&state, rules),
        )
    }

    /// Adds the port mappings of an owner whose chain does not exist yet
    /// over nf_tables netlink, as [`script::new_port_mappings_script`] does
    /// with iptables-restore, when every shared rule not in `verified` is
    /// found in the table. Returns false when this path does not apply, and
    /// then the caller goes through iptables-restore.
    fn add_new_port_mappings_with_nf_tables(
        &mut self,
        family: Family,
        rules: &rules::PortMapRules,
        verified: &[&Rule],
    ) -> bool {
        self.last_add_path = Some(NatPath::Restore);
        // A POSTROUTING jump that the dump did not find is missing, and then
        // the restore path creates it.
        let unverified: Vec<&Rule> = rules
            .shared_rules
            .iter()
            .map(|(rule, _)| rule)
            .filter(|rule| !verified.contains(rule))
            .collect();
        if rules.dnat_rules.is_empty() || unverified.iter().any(|rule| rule.chain == POSTROUTING) {
            return false;
        }

        let owner_rules: Vec<Rule> = rules
            .dnat_rules
            .iter()
            .chain(&rules.entry_rules)
            .cloned()
            .collect();
        self.new_chain_with_nf_tables(family, &rules.dnat_chain, &owner_rules, &unverified)
    }

    /// Creates `chain` and appends `rules` over nf_tables netlink in one
    /// commit, after finding each of `required` in the table. Returns false,
    /// having changed nothing, when iptables uses the legacy backend, a rule
    /// has words that [`nft_rules::encode`] does not know (such as a
    /// caller's conditions), a required rule is missing, `chain` exists, or
    /// the kernel refuses the commit. The caller then uses iptables-restore,
    /// which handles each of these cases and reports the errors.
    ///
    /// With the rules of 500 containers in the table, iptables-restore took
    /// 7.3 ms to add port mappings and 3.1 ms to add a masquerade, against
    /// 2.4 and 1.7 ms with one container, because it reads the table first.
    fn new_chain_with_nf_tables(
        &mut self,
        family: Family,
        chain: &str,
        rules: &[Rule],
        required: &[&Rule],
    ) -> bool {
        self.last_add_path = Some(NatPath::Restore);
        if !self.uses_nf_tables() {
            return false;
        }
        let started = std::time::Instant::now();
        let encode = |rule: &Rule| nft_rules::encode(family, rule);
        let (Some(encoded), Some(required)) = (
            rules.iter().map(encode).collect::<Option<Vec<_>>>(),
            required
                .iter()
                .map(|rule| encode(rule).map(|expected| (rule.chain.as_str(), expected)))
                .collect::<Option<Vec<_>>>(),
        ) else {
            tracing::debug!(chain, "rules left to iptables-restore: not encodable");
            return false;
        };

        let additions: Vec<(&str, &nft_rules::EncodedRule)> = rules
            .iter()
            .map(|rule| rule.chain.as_str())
            .zip(&encoded)
            .collect();
        let added = self
            .nft_socket()
            .map_err(|error| error.to_string())
            .and_then(|socket| {
                for (parent, expected) in &required {
                    let found = socket
                        .rule_expressions(family, parent)
                        .map_err(|error| format!("list rules of {parent}: {error}"))?
                        .iter()
                        .any(|dumped| nft_rules::same_rule(dumped, &expected.expressions));
                    if !found {
                        return Err(format!("a rule of {parent} is missing"));
                    }
                }
                socket
                    .add_chain_with_rules(family, chain, &additions)
                    .map_err(|error| error.to_string())
            });

        let micros = started.elapsed().as_micros();
        match added {
            Ok(()) => {
                tracing::debug!(chain, micros, "added NAT chain over nf_tables netlink");
                self.last_add_path = Some(NatPath::NfTables);
                true
            }
            Err(reason) => {
                // Replies to a failed request may still be queued.
                self.nft_socket = None;
                tracing::debug!(chain, %reason, micros, "NAT chain left to iptables-restore");
                false
            }
        }
    }

    /// Returns the shared POSTROUTING rule of `rules`, the jump to
    /// CNI-HOSTPORT-MASQ, when nf_tables netlink shows that POSTROUTING
    /// jumps there already. POSTROUTING contains a rule per masqueraded
    /// container, and asserting the jump with `-C` made `iptables-restore`
    /// read all of them: 10.9 ms of an ADD at 500 containers. The dump
    /// decodes only the verdicts, so any jump to that chain counts.
    fn verified_masquerade_jump<'r>(
        &mut self,
        family: Family,
        rules: &'r rules::PortMapRules,
    ) -> Option<&'r Rule> {
        let (jump, _) = rules
            .shared_rules
            .iter()
            .find(|(rule, _)| rule.chain == POSTROUTING && rule.jumps_to(HOSTPORT_MASQ))?;
        if !self.uses_nf_tables() {
            return None;
        }

        let found = self
            .nft_socket()
            .map_err(|error| error.to_string())
            .and_then(|socket| {
                socket
                    .has_jump(family, POSTROUTING, HOSTPORT_MASQ)
                    .map_err(|error| error.to_string())
            });
        match found {
            Ok(true) => Some(jump),
            Ok(false) => None,
            Err(reason) => {
                self.nft_socket = None;
                tracing::debug!(%reason, "POSTROUTING jump left to iptables-restore -C");
                None
            }
        }
    }

    /// Lists `chains` under the lock, so no restore runs halfway.
    fn read(
        &self,
        family: Family,
        operation: &str,
        chains: &[&str],
    ) -> Result<SavedTable, KernelError> {
        let _lock = self.lock(operation)?;
        self.read_nat(family, operation, chains)
    }

    /// Reads `chains` of the nat table as [`read_table`] does, listing them
    /// one by one when [`Self::lists_each`] returns true.
    fn read_nat(
        &self,
        family: Family,
        operation: &str,
        chains: &[&str],
    ) -> Result<SavedTable, KernelError> {
        let table = read_table(family, operation, chains, self.lists_each(family, chains))?;
        self.remember(family, chains, &table);
        Ok(table)
    }

    /// Tells whether to list `chains` one by one: when there are at most
    /// [`MAX_LISTED_CHAINS`], or when the last read of POSTROUTING in this
    /// family found at least [`LIST_FROM_POSTROUTING_RULES`] rules.
    fn lists_each(&self, family: Family, chains: &[&str]) -> bool {
        chains.len() <= MAX_LISTED_CHAINS
            || self.postrouting_rules[family.index()].get() >= LIST_FROM_POSTROUTING_RULES
    }

    /// Stores the number of POSTROUTING rules in `table` if `chains`
    /// includes POSTROUTING.
    fn remember(&self, family: Family, chains: &[&str], table: &SavedTable) {
        if !chains.contains(&POSTROUTING) {
            return;
        }
        let count = table.rule_count(POSTROUTING);
        self.postrouting_rules[family.index()].set(count);
    }

    fn lock(&self, operation: &str) -> Result<File, KernelError> {
        lock_file(&self.options.lock_path, operation)
    }

    /// Sets `route_localnet` on the host's route device to `container`.
    fn enable_localnet(&mut self, container: IpAddr) -> Result<(), KernelError> {
        let Some(localnet) = &mut self.options.localnet else {
            tracing::debug!(%container, "route_localnet left alone: no localnet routing configured");
            return Ok(());
        };

        let device = {
            let mut netlink = localnet
                .netlink
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            netlink.route_device(container)?
        };
        // The reference plugin also skips this when no route exists.
        let Some(device) = device else {
            tracing::warn!(%container, "route_localnet not set: no route to the container");
            return Ok(());
        };
        let key = format!("net/ipv4/conf/{device}/route_localnet");
        localnet.sysctl.set(Namespace::Host, &key, "1")
    }
}

/// Takes the exclusive flock on `path` that serializes the reads and
/// restores of concurrent cniwasm processes, for the nat and filter tables
/// alike.
fn lock_file(path: &Path, operation: &str) -> Result<File, KernelError> {
    let failed = |err: std::io::Error| {
        let reason = format!("lock {}: {err}", path.display());
        KernelError::new(KernelErrorKind::Failed, Namespace::Host, operation, reason)
    };

    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(failed)?;
    // An flock is released when the file closes, also if the process dies.
    file.lock().map_err(failed)?;
    Ok(file)
}

/// Reads `chains` of the nat table: with [`list`] when `list_each` is set,
/// else with one `iptables-save -t nat`.
fn read_table(
    family: Family,
    operation: &str,
    chains: &[&str],
    list_each: bool,
) -> Result<SavedTable, KernelError> {
    if list_each {
        list(family, operation, chains)
    } else {
        save(family, operation)
    }
}

/// Runs `iptables-save -t nat` (or ip6tables-save) and parses its output.
fn save(family: Family, operation: &str) -> Result<SavedTable, KernelError> {
    let command = family.save_command();
    let output = Command::new(command)
        .args(["-t", "nat"])
        .stdin(Stdio::null())
        .output()
        .map_err(|err| command_error(operation, format!("run {command}: {err}")))?;

    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let reason = format!(
            "{command} -t nat failed with {}: {}",
            output.status,
            stderr.trim()
        );
        return Err(command_error(operation, reason));
    }
    Ok(SavedTable::parse(&String::from_utf8_lossy(&output.stdout)))
}

/// Lists `chains` of the nat table, each with its own `iptables -t nat -S`
/// (or ip6tables) process, all at the same time. A user chain that does not
/// exist is left out of the result, as `iptables-save` would leave it out.
fn list(family: Family, operation: &str, chains: &[&str]) -> Result<SavedTable, KernelError> {
    let listings: Vec<_> = std::thread::scope(|scope| {
        // Threads inherit the network namespace of the thread that spawns
        // them, and so do the iptables processes they start.
        let handles: Vec<_> = chains
            .iter()
            .map(|chain| scope.spawn(move || list_chain(family, operation, chain)))
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });

    let mut table = SavedTable::default();
    for listing in listings {
        if let Some(output) = listing? {
            table.add_listing(&output);
        }
    }
    Ok(table)
}

/// Runs `iptables -t nat -S <chain>` and returns its output, or `None` when
/// the user chain `chain` does not exist.
fn list_chain(family: Family, operation: &str, chain: &str) -> Result<Option<String>, KernelError> {
    let command = family.list_command();
    let output = Command::new(command)
        .args(["-w", "-t", "nat", "-S", chain])
        .stdin(Stdio::null())
        .output()
        .map_err(|err| command_error(operation, format!("run {command}: {err}")))?;

    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        return Ok(Some(String::from_utf8_lossy(&output.stdout).into_owned()));
    }
    if output.status.code() == Some(1)
        && !NAT_BUILTIN_CHAINS.contains(&chain)
        && is_missing_chain_message(&stderr)
    {
        return Ok(None);
    }
    let reason = format!(
        "{command} -t nat -S {chain} failed with {}: {}",
        output.status,
        stderr.trim()
    );
    Err(command_error(operation, reason))
}

/// Tells whether `stderr` of a failed `iptables -S <chain>` reports that the
/// chain does not exist. iptables 1.8.9 legacy prints "No chain/target/match
/// by that name". iptables 1.8.9 nf_tables prints "chain `X' in table `nat'
/// is incompatible, use 'nft' tool" for a missing chain.
// NOTE: nf_tables prints the same message for a chain that exists but
// contains rules iptables cannot parse, and this takes it for a missing
// chain. Only cniwasm and the reference plugins write the CNI- chains, so such a
// chain would have to come from another tool.
fn is_missing_chain_message(stderr: &str) -> bool {
    stderr.contains("No chain/target/match by that name")
        || stderr.contains("in table `nat' is incompatible")
}

/// Fails with `NotFound` when the external mark chain `chain` is missing,
/// which a restore that jumps there would only report as a failed line.
fn require_mark_chain(family: Family, operation: &str, chain: &str) -> Result<(), KernelError> {
    if list_chain(family, operation, chain)?.is_some() {
        return Ok(());
    }
    let table = match family {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    };
    let reason = format!(
        "mark chain {chain} does not exist in the {table} nat table: create it, or remove externalSetMarkChain"
    );
    Err(KernelError::new(
        KernelErrorKind::NotFound,
        Namespace::Host,
        operation,
        reason,
    ))
}

/// Returns the first of `rules` that `iptables-restore` does not find with
/// `-C`. Entry rules with conditions need iptables itself to compare them,
/// because iptables-save prints conditions in its own order and form:
/// `-s 1.2.3.4` becomes `-s 1.2.3.4/32` and comes before `-p`.
fn first_failing_check<'r>(family: Family, operation: &str, rules: &'r [Rule]) -> Option<&'r Rule> {
    rules.iter().find(|rule| {
        let text = format!("*nat\n-C {} {}\nCOMMIT\n", rule.chain, rule.spec);
        match restore_text(family, operation, &text) {
            Ok(()) => false,
            Err(error) => {
                tracing::debug!(%error, "entry rule with conditions not found");
                true
            }
        }
    })
}

/// Restores `script` unless it is empty.
fn apply(family: Family, operation: &str, script: &RestoreScript) -> Result<(), KernelError> {
    match script.is_empty() {
        true => Ok(()),
        false => restore(family, operation, script),
    }
}

/// Runs `iptables-restore --noflush -w` (or ip6tables-restore) with `script`.
fn restore(family: Family, operation: &str, script: &RestoreScript) -> Result<(), KernelError> {
    restore_text(family, operation, &script.render())
}

/// Runs `iptables-restore --noflush -w` (or ip6tables-restore) with the
/// script `text`, which names its table.
fn restore_text(family: Family, operation: &str, text: &str) -> Result<(), KernelError> {
    let started = std::time::Instant::now();
    let command = family.restore_command();
    let mut child = Command::new(command)
        .args(["--noflush", "-w"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| command_error(operation, format!("run {command}: {err}")))?;

    // Dropping stdin after the write closes the pipe, so the child reads EOF.
    let written = match child.stdin.take() {
        Some(mut stdin) => stdin.write_all(text.as_bytes()),
        None => Ok(()),
    };
    let output = child
        .wait_with_output()
        .map_err(|err| command_error(operation, format!("wait for {command}: {err}")))?;

    if !output.status.success() || written.is_err() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let reason = format!(
            "{command} --noflush failed with {}: {}; script:\n{text}",
            output.status,
            stderr.trim()
        );
        return Err(command_error(operation, reason));
    }
    let micros = started.elapsed().as_micros();
    tracing::debug!(command, micros, script = %text, "applied iptables script");
    Ok(())
}

/// Returns the host ports of the UDP mappings that apply to `family`, each
/// once.
fn udp_host_ports(spec: &PortMapSpec, family: Family) -> Vec<u16> {
    let mut ports: Vec<u16> = spec
        .mappings
        .iter()
        .filter(|mapping| mapping.protocol == crate::kernel::Protocol::Udp)
        .filter(|mapping| mapping.host_ip.is_none_or(|ip| Family::of(ip) == family))
        .map(|mapping| mapping.host_port)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

fn command_error(operation: &str, reason: String) -> KernelError {
    KernelError::new(KernelErrorKind::Failed, Namespace::Host, operation, reason)
}

fn missing_rule_error(operation: &str, rule: &Rule) -> KernelError {
    KernelError::new(
        KernelErrorKind::NotFound,
        Namespace::Host,
        operation,
        format!("rule not found: {}", rule.saved_line()),
    )
}

fn describe(owner: &Owner) -> String {
    format!(
        "network {:?} container {:?}",
        owner.network, owner.container_id
    )
}

impl Firewall for IptablesFirewall {
    fn add_port_mappings(&mut self, owner: &Owner, spec: &PortMapSpec) -> Result<(), KernelError> {
        self.apply_pending();
        let operation = format!("add port mappings of {}", describe(owner));
        let rules = rules::port_map_rules(owner, spec).map_err(|reason| {
            KernelError::new(
                KernelErrorKind::Invalid,
                Namespace::Host,
                &operation,
                reason,
            )
        })?;
        let family = Family::of(spec.container_address.addr());

        // Set before the rules exist, so no connection to 127.0.0.1 is
        // translated while the device would still drop it.
        if spec.snat && family == Family::V4 && !rules.dnat_rules.is_empty() {
            self.enable_localnet(spec.container_address.addr())?;
        }

        if let Some(chain) = &spec.mark_chain {
            require_mark_chain(family, &operation, chain)?;
        }
        self.install_port_mappings(family, &operation, &rules)?;

        let udp_ports = udp_host_ports(spec, family);
        super::conntrack::flush_udp_ports(family == Family::V6, &udp_ports, &operation);
        Ok(())
    }

    fn check_port_mappings(
        &mut self,
        owner: &Owner,
        spec: &PortMapSpec,
    ) -> Result<(), KernelError> {
        self.apply_pending();
        let operation = format!("check port mappings of {}", describe(owner));
        let rules = rules::port_map_rules(owner, spec).map_err(|reason| {
            KernelError::new(
                KernelErrorKind::Invalid,
                Namespace::Host,
                &operation,
                reason,
            )
        })?;
        let family = Family::of(spec.container_address.addr());

        let state = self.read(family, &operation, &rules.chains())?;
        let missing = match spec.conditions.is_empty() {
            true => script::first_missing(&state, rules.all_rules()),
            false => {
                let exact = rules.shared_rules.iter().map(|(rule, _)| rule);
                match script::first_missing(&state, exact.chain(&rules.dnat_rules)) {
                    Some(rule) => Some(rule),
                    None => first_failing_check(family, &operation, &rules.entry_rules),
                }
            }
        };
        match missing {
            Some(rule) => Err(missing_rule_error(&operation, rule)),
            None => Ok(()),
        }
    }

    fn remove_port_mappings(&mut self, owner: &Owner) -> Result<(), KernelError> {
        self.defer(Removal {
            operation: format!("remove port mappings of {}", describe(owner)),
            kind: RemovalKind::PortMappings,
            chain: owner.dnat_chain(),
        });
        Ok(())
    }

    fn add_masquerade(&mut self, owner: &Owner, address: IpNet) -> Result<(), KernelError> {
        self.apply_pending();
        let operation = format!("add masquerade for {address} of {}", describe(owner));
        let chain = owner.masquerade_chain();
        let rules = rules::masquerade_rules(owner, address);

        let family = Family::of(address.addr());
        let _lock = self.lock(&operation)?;
        if self.new_chain_with_nf_tables(family, &chain, &rules, &[]) {
            return Ok(());
        }

        // Most calls come from an owner's first ADD, and then creating the
        // owner's chain with `-N` succeeds and needs no read of the table.
        // When the chain exists, `-N` fails the whole script, which changes
        // nothing, and the call reads the chains it needs.
        let first_try = script::new_chain_script(&chain, &rules);
        match restore(family, &operation, &first_try) {
            Ok(()) => return Ok(()),
            Err(error) => tracing::debug!(%error, "owner chain exists, reading its rules"),
        }
        let state = self.read_nat(family, &operation, &[POSTROUTING, &chain])?;

        apply(
            family,
            &operation,
            &script::add_masquerade_script(&state, &chain, &rules),
        )
    }

    fn check_masquerade(&mut self, owner: &Owner, address: IpNet) -> Result<(), KernelError> {
        self.apply_pending();
        let operation = format!("check masquerade for {address} of {}", describe(owner));
        let chain = owner.masquerade_chain();
        let rules = rules::masquerade_rules(owner, address);

        let family = Family::of(address.addr());
        let state = self.read(family, &operation, &[POSTROUTING, &chain])?;
        match script::first_missing(&state, rules.iter()) {
            Some(rule) => Err(missing_rule_error(&operation, rule)),
            None => Ok(()),
        }
    }

    fn remove_masquerade(&mut self, owner: &Owner) -> Result<(), KernelError> {
        self.defer(Removal {
            operation: format!("remove masquerade of {}", describe(owner)),
            kind: RemovalKind::Masquerade,
            chain: owner.masquerade_chain(),
        });
        Ok(())
    }

    fn settle(&mut self) -> Result<(), KernelError> {
        self.apply_pending();
        match self.failed.take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// Applies the removals no settle applied, so that a caller that never
/// settles still removes what it asked to.
impl Drop for IptablesFirewall {
    fn drop(&mut self) {
        if let Err(error) = self.settle() {
            tracing::error!(%error, "NAT removal failed");
        }
    }
}

#[cfg(test)]
mod privileged_tests;

#[cfg(test)]
mod tests {
    use super::*;

    /// A removal that fails after its call returned is reported by the next
    /// settle, once, with the operation it belonged to.
    #[test]
    fn deferred_failure_reported_by_settle() {
        let mut firewall = IptablesFirewall::new(FirewallOptions {
            // No directory can be created under /proc, so the lock fails
            // before any iptables process runs.
            lock_path: PathBuf::from("/proc/cniwasm-test/iptables.lock"),
            localnet: None,
        });
        let owner = Owner {
            network: "mynet".into(),
            container_id: "unlockable".into(),
            ifname: "eth0".into(),
        };

        firewall.remove_masquerade(&owner).unwrap();
        let error = firewall.settle().unwrap_err();

        let message = error.to_string();
        assert!(
            message.contains(r#"remove masquerade of network "mynet" container "unlockable""#),
            "{message}"
        );
        assert!(message.contains("/proc/cniwasm-test"), "{message}");
        firewall.settle().unwrap();
    }
}
