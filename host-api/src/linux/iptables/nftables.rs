//! Removal of owners' NAT chains over nf_tables netlink, and the check of a
//! shared jump, for iptables with the nf_tables backend (iptables-nft).
//!
//! With iptables 1.8.9 on kernel 6.18 (2-core VM), `iptables-restore`
//! applied a removal in 2 to 3 ms and then waited about 7 ms more at exit.
//! Closing an nf_tables netlink socket after a commit that deleted objects
//! waits for the kernel's transaction-destroy work. Here the commit
//! goes over a socket that the firewall keeps open, so the call returns once
//! the commit is applied, and the destroy work runs in a kernel worker
//! meanwhile. The socket closes when the firewall drops. On that machine,
//! a settle that removed two owners' chains in both families took 1.1 to
//! 1.2 ms this way and 25 to 39 ms with `iptables -S` and
//! `iptables-restore` (debug build of the privileged tests).
//!
//! A jump to an owner's chain is found by the verdict of the rule's
//! `immediate` expression. The xtables `match` and `target` expressions that
//! iptables-nft puts in rules are never decoded.
//!
//! The requests come from `netlink-packet-netfilter` (MIT, from the
//! rust-netlink project of `netlink-packet-route` and `rtnetlink`), which
//! encodes the nf_tables batch, table, chain and rule messages. Rule dumps
//! are read by hand, see [`dumped_rule`]. `rustables` 0.9 was not
//! used: it is GPL-3.0-or-later, which this Apache-2.0 project cannot take
//! on, and it needs libclang at build time for bindgen.

use std::io;
use std::ops::ControlFlow;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use netlink_packet_core::{
    DefaultNla, NLA_HEADER_SIZE, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NetlinkBuffer, NetlinkMessage, NetlinkPayload,
    NlaBuffer, NlasIterator,
};
use netlink_packet_netfilter::nftables::{
    Bitwise, ChainAttribute, ChainMessage, Cmp, DataAttribute, ExpressionAttribute, Expressions,
    Immediate, ListAttribute, Meta, MetaKey, NfTablesMessage, Operator, Payload, Register,
    RuleAttribute, RuleMessage, TableAttribute, TableMessage, Verdict, VerdictAttribute,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use super::nft_rules::{EncodedRule, Expr};
use super::rules::Family;

const NAT_TABLE: &str = "nat";

/// The nfnetlink subsystem id of nf_tables, which batch messages carry in
/// their `res_id` (linux/netfilter/nfnetlink.h).
const NFNL_SUBSYS_NFTABLES: u16 = 10;

/// How long a request waits for the kernel's reply before it fails.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// The name of the multi-call binary of iptables with the nf_tables backend,
/// which `iptables` and `ip6tables` link to (iptables 1.8).
const NFT_MULTI_BINARY: &str = "xtables-nft-multi";

/// An owner's chain to delete, with the rules of `parent` that jump to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChainRemoval<'a> {
    pub(crate) parent: &'a str,
    pub(crate) chain: &'a str,
}

/// Failure of an in-process removal.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NftError {
    /// A request before the commit failed, so this family is unchanged.
    #[error("{0}")]
    BeforeCommit(String),
    /// The kernel rejected the commit, which then changed nothing.
    #[error("nf_tables commit failed: {0}")]
    Commit(String),
}

/// Returns true when both `iptables` and `ip6tables` on PATH resolve to
/// the nf_tables multi-call binary. A missing command, a legacy binary
/// (`xtables-legacy-multi`) or any other file returns false.
pub(crate) fn iptables_uses_nf_tables() -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    ["iptables", "ip6tables"]
        .iter()
        .all(|command| resolves_to_nft(&path, command))
}

/// Returns true when the first `command` in the directories of `path` is,
/// after following its links, a file named [`NFT_MULTI_BINARY`].
fn resolves_to_nft(path: &std::ffi::OsStr, command: &str) -> bool {
    let Some(found) = std::env::split_paths(path)
        .map(|dir| dir.join(command))
        .find(|candidate| candidate.is_file())
    else {
        return false;
    };

    match std::fs::canonicalize(&found) {
        Ok(target) => target.file_name() == Some(std::ffi::OsStr::new(NFT_MULTI_BINARY)),
        Err(_) => false,
    }
}

/// A netfilter netlink socket in the network namespace of the thread that
/// opened it.
pub(crate) struct NftSocket {
    socket: Socket,
    /// The device and inode of that namespace, to tell it from another.
    namespace: (u64, u64),
    sequence: u32,
}

impl NftSocket {
    /// Opens a socket in the calling thread's network namespace.
    pub(crate) fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        set_receive_timeout(&socket, REPLY_TIMEOUT)?;
        Ok(Self {
            socket,
            namespace: current_namespace()?,
            sequence: 0,
        })
    }

    /// Tells whether the calling thread is in the namespace of the socket.
    pub(crate) fn in_current_namespace(&self) -> bool {
        current_namespace().is_ok_and(|namespace| namespace == self.namespace)
    }

    /// Deletes the rules of each parent chain that jump to its owner chain,
    /// then flushes and deletes the owner chains, all in one commit. A
    /// missing table or chain has nothing to remove. Returns the number of
    /// messages committed, zero when there was nothing to remove.
    // NOTE: the batch does not carry the generation id of the rules it read
    // (NFTA_GEN_ID), so a change between the read and the commit by a tool
    // that does not take the cniwasm lock goes unnoticed until the commit.
    // A rule deleted meanwhile fails the commit with ENOENT, and a new jump
    // to an owner chain fails its deletion with EBUSY.
    pub(crate) fn remove_chains(
        &mut self,
        family: Family,
        removals: &[ChainRemoval<'_>],
    ) -> Result<usize, NftError> {
        let mut batch = Vec::new();
        for removal in removals {
            let jumps = self
                .jump_handles(family, removal.parent, removal.chain)
                .map_err(|error| before_commit("list rules of", removal.parent, &error))?;
            for handle in jumps {
                batch.push(delete_rule(removal.parent, handle));
            }

            let exists = self
                .chain_exists(family, removal.chain)
                .map_err(|error| before_commit("get chain", removal.chain, &error))?;
            if exists {
                batch.push(flush_chain(removal.chain));
                batch.push(delete_chain(removal.chain));
            }
        }

        if !batch.is_empty() {
            self.commit(family, &batch)?;
        }
        Ok(batch.len())
    }

    /// Tells whether a rule of `parent` jumps or goes to `target`. A missing
    /// table or chain has no such rule. The dump runs on a socket of its
    /// own and stops at the first such rule, and the socket closes with the
    /// rest unread. The kernel builds a dump one datagram at a time as it is
    /// read, and the shared jumps are inserted first. So with the masquerade
    /// jumps of 500 containers in POSTROUTING, this reads one datagram.
    pub(crate) fn has_jump(
        &mut self,
        family: Family,
        parent: &str,
        target: &str,
    ) -> io::Result<bool> {
        let mut found = false;
        let mut socket = NftSocket::open()?;
        socket.dump_rules(family, parent, |attributes| {
            found = dumped_rule(attributes).jump.as_deref() == Some(target);
            match found {
                true => ControlFlow::Break(()),
                false => ControlFlow::Continue(()),
            }
        })?;
        Ok(found)
    }

    /// Returns the handles of the rules of `parent` whose verdict jumps or
    /// goes to `target`. A missing table or chain has none.
    fn jump_handles(&mut self, family: Family, parent: &str, target: &str) -> io::Result<Vec<u64>> {
        let mut handles = Vec::new();
        self.dump_rules(family, parent, |attributes| {
            let rule = dumped_rule(attributes);
            if rule.jump.as_deref() == Some(target)
                && let Some(handle) = rule.handle
            {
                handles.push(handle);
            }
            ControlFlow::Continue(())
        })?;
        Ok(handles)
    }

    /// Returns the expressions of each rule of `chain`, in order. A missing
    /// table or chain has no rules.
    pub(crate) fn rule_expressions(
        &mut self,
        family: Family,
        chain: &str,
    ) -> io::Result<Vec<Vec<Expr>>> {
        let mut rules = Vec::new();
        self.dump_rules(family, chain, |attributes| {
            rules.push(decoded_expressions(attributes));
            ControlFlow::Continue(())
        })?;
        Ok(rules)
    }

    /// Dumps the rules of `chain` in the nat table and passes the
    /// attributes of each to `each`, until `each` breaks. A missing table or
    /// chain has none. The replies are read with [`split_messages`], not
    /// with netlink-packet-netfilter (see [`dumped_rule`]). After a break
    /// the rest of the dump is still queued, so the socket must not be used
    /// again.
    fn dump_rules(
        &mut self,
        family: Family,
        chain: &str,
        mut each: impl FnMut(&[u8]) -> ControlFlow<()>,
    ) -> io::Result<()> {
        let request = NfTablesMessage::GetRule(RuleMessage {
            attributes: vec![
                RuleAttribute::Table(NAT_TABLE.into()),
                RuleAttribute::Chain(chain.into()),
            ],
        });
        let sequence = self.next_sequence();
        let flags = NLM_F_REQUEST | NLM_F_DUMP;
        let message = netfilter_message(family_header(family), request, flags, sequence);
        self.socket.send(&encode(&[message]), 0)?;

        loop {
            let (buffer, _) = self.socket.recv_from_full()?;
            for (kind, reply_sequence, payload) in split_messages(&buffer)? {
                if reply_sequence != sequence {
                    continue;
                }
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => match error_code(payload) {
                        0 => {}
                        code if code == -libc::ENOENT => return Ok(()),
                        code => return Err(io::Error::from_raw_os_error(-code)),
                    },
                    _ => {
                        let attributes = payload.get(NFGENMSG_LEN..).unwrap_or_default();
                        if each(attributes).is_break() {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    /// Creates `chain` in the nat table and appends `rules` to their
    /// chains, in one commit. The commit fails, and changes nothing, when
    /// `chain` exists already or the table or a rule's chain is missing.
    pub(crate) fn add_chain_with_rules(
        &mut self,
        family: Family,
        chain: &str,
        rules: &[(&str, &EncodedRule)],
    ) -> Result<(), NftError> {
        let mut messages = vec![new_chain(chain)];
        let mut flags = vec![NLM_F_CREATE | NLM_F_EXCL];
        for (rule_chain, rule) in rules {
            messages.push(new_rule(rule_chain, rule));
            flags.push(NLM_F_CREATE | NLM_F_APPEND);
        }
        self.commit_with_flags(family, &messages, &flags)
    }

    /// Tells whether the nf_tables table `name` of the netfilter family
    /// `family` (such as `inet`) exists.
    pub(crate) fn table_exists(
        &mut self,
        family: NetfilterProtoFamily,
        name: &str,
    ) -> io::Result<bool> {
        let request = NfTablesMessage::GetTable(TableMessage {
            attributes: vec![TableAttribute::Name(name.into())],
        });
        let header = NetfilterHeader::new(family, 0, 0);
        match self.request(header, request, NLM_F_REQUEST) {
            Ok(_) => Ok(true),
            Err(error) if error.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(error) => Err(error),
        }
    }

    fn chain_exists(&mut self, family: Family, chain: &str) -> io::Result<bool> {
        let request = NfTablesMessage::GetChain(ChainMessage {
            attributes: vec![
                ChainAttribute::Table(NAT_TABLE.into()),
                ChainAttribute::Name(chain.into()),
            ],
        });
        match self.request(family_header(family), request, NLM_F_REQUEST) {
            Ok(_) => Ok(true),
            Err(error) if error.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Sends `request` and returns the nf_tables messages of the reply,
    /// reading until NLMSG_DONE for a dump or until the first message
    /// otherwise. An NLMSG_ERROR reply becomes its errno.
    fn request(
        &mut self,
        header: NetfilterHeader,
        request: NfTablesMessage,
        flags: u16,
    ) -> io::Result<Vec<NfTablesMessage>> {
        let sequence = self.next_sequence();
        let message = netfilter_message(header, request, flags, sequence);
        self.socket.send(&encode(&[message]), 0)?;

        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut replies = Vec::new();
        loop {
            for reply in self.receive()? {
                if reply.header.sequence_number != sequence {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::Error(error) if error.code.is_some() => {
                        return Err(error.to_io());
                    }
                    NetlinkPayload::InnerMessage(NetfilterMessage {
                        inner: NetfilterMessageInner::NfTables(inner),
                        ..
                    }) => replies.push(inner),
                    _ => {}
                }
                if !dump {
                    return Ok(replies);
                }
            }
        }
    }

    /// Sends `messages` as one batch, each asking for an acknowledgement,
    /// and waits for every one. The kernel applies all or none of them.
    fn commit(&mut self, family: Family, messages: &[NfTablesMessage]) -> Result<(), NftError> {
        self.commit_with_flags(family, messages, &vec![0; messages.len()])
    }

    /// Commits `messages` as [`Self::commit`] does, each with its extra
    /// netlink flags from `flags` (such as NLM_F_CREATE).
    fn commit_with_flags(
        &mut self,
        family: Family,
        messages: &[NfTablesMessage],
        flags: &[u16],
    ) -> Result<(), NftError> {
        let first = self.next_sequence();
        let batch = batch(family, messages, flags, first);
        let last = first.wrapping_add(batch.len() as u32 - 1);
        self.sequence = last;

        self.socket
            .send(&encode(&batch), 0)
            .map_err(|error| NftError::BeforeCommit(format!("send nf_tables batch: {error}")))?;

        let failures = self.collect_acks(first, last, messages)?;
        match failures.is_empty() {
            true => Ok(()),
            false => Err(NftError::Commit(failures.join("; "))),
        }
    }

    /// Reads the acknowledgements of the batch with sequence numbers
    /// `first..=last` and returns a description of each failed message.
    /// An error on the batch's begin or end message ends the batch.
    fn collect_acks(
        &mut self,
        first: u32,
        last: u32,
        messages: &[NfTablesMessage],
    ) -> Result<Vec<String>, NftError> {
        let mut failures = Vec::new();
        let mut acknowledged = 0;
        while acknowledged < messages.len() {
            let replies = self
                .receive()
                .map_err(|error| NftError::Commit(format!("no reply to the batch: {error}")))?;
            for reply in replies {
                let sequence = reply.header.sequence_number;
                let NetlinkPayload::Error(error) = reply.payload else {
                    continue;
                };
                if sequence == first || sequence == last {
                    failures.push(format!("batch rejected: {}", error.to_io()));
                    return Ok(failures);
                }
                // The message after the begin message has index 0.
                let index = sequence.wrapping_sub(first).wrapping_sub(1) as usize;
                let Some(message) = messages.get(index) else {
                    continue;
                };

                acknowledged += 1;
                if error.code.is_some() {
                    failures.push(format!("{}: {}", describe(message), error.to_io()));
                }
            }
        }
        Ok(failures)
    }

    /// Reads one datagram and parses the netlink messages in it.
    fn receive(&mut self) -> io::Result<Vec<NetlinkMessage<NetfilterMessage>>> {
        let (buffer, _) = self.socket.recv_from_full()?;
        let mut messages = Vec::new();
        let mut offset = 0;
        while offset < buffer.len() {
            let message = NetlinkMessage::<NetfilterMessage>::deserialize(&buffer[offset..])
                .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error.to_string()))?;
            let length = message.header.length as usize;
            if length == 0 {
                break;
            }
            // Netlink aligns each message to 4 bytes.
            offset += length.next_multiple_of(4);
            messages.push(message);
        }
        Ok(messages)
    }

    fn next_sequence(&mut self) -> u32 {
        self.sequence = self.sequence.wrapping_add(1);
        self.sequence
    }
}

/// Wraps `messages` in a batch whose begin message has sequence number
/// `first` and whose others follow it. Each message of `messages` sets
/// NLM_F_ACK, so the commit can wait for the kernel's reply to each.
fn batch(
    family: Family,
    messages: &[NfTablesMessage],
    extra_flags: &[u16],
    first: u32,
) -> Vec<NetlinkMessage<NetfilterMessage>> {
    let control = NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES);
    let mut sequence = first;
    let mut batch = vec![netfilter_message(
        control.clone(),
        ControlMessage::BatchBegin,
        NLM_F_REQUEST,
        sequence,
    )];

    for (index, message) in messages.iter().enumerate() {
        sequence = sequence.wrapping_add(1);
        let extra = extra_flags.get(index).copied().unwrap_or(0);
        let flags = NLM_F_REQUEST | NLM_F_ACK | extra;
        let header = family_header(family);
        batch.push(netfilter_message(header, message.clone(), flags, sequence));
    }

    sequence = sequence.wrapping_add(1);
    let end = netfilter_message(control, ControlMessage::BatchEnd, NLM_F_REQUEST, sequence);
    batch.push(end);
    batch
}

/// The length of `struct nfgenmsg`, which precedes the attributes of every
/// nf_tables message.
const NFGENMSG_LEN: usize = 4;

// Attribute and verdict numbers from linux/netfilter/nf_tables.h.
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFTA_RULE_COMPAT_PROTO: u16 = 1;
const NFTA_RULE_COMPAT_FLAGS: u16 = 2;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
/// NFTA_MATCH_* and NFTA_TARGET_* share their numbers.
const NFTA_XT_NAME: u16 = 1;
const NFTA_XT_REV: u16 = 2;
const NFTA_XT_INFO: u16 = 3;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;

/// The handle of a dumped rule and the chain its verdict jumps or goes to.
#[derive(Debug, Default, PartialEq, Eq)]
struct DumpedRule {
    handle: Option<u64>,
    jump: Option<String>,
}

/// Reads the handle and the jump of a rule from its attributes. This walks
/// the attributes by hand because netlink-packet-netfilter 0.4 formats
/// every payload it parses with `{:?}` into an error context first: a dump
/// of the 500 rules of a busy POSTROUTING took about 30 ms that way.
/// Attributes that do not parse are skipped.
fn dumped_rule(attributes: &[u8]) -> DumpedRule {
    let mut rule = DumpedRule::default();
    for attribute in NlasIterator::new(attributes).flatten() {
        match attribute.kind() {
            NFTA_RULE_HANDLE => {
                rule.handle = value_of(attribute).try_into().ok().map(u64::from_be_bytes);
            }
            NFTA_RULE_EXPRESSIONS => {
                let mut elements = NlasIterator::new(value_of(attribute)).flatten();
                rule.jump = elements.find_map(|element| {
                    let kind = element.kind();
                    (kind == NFTA_LIST_ELEM)
                        .then(|| expression_jump(value_of(element)))
                        .flatten()
                });
            }
            _ => {}
        }
    }
    rule
}

/// Returns the chain that an `immediate` expression's verdict jumps or goes
/// to. Other expressions have no verdict data and give `None`.
fn expression_jump(expression: &[u8]) -> Option<String> {
    let data = nested(expression, NFTA_EXPR_DATA)?;
    let immediate = nested(data, NFTA_IMMEDIATE_DATA)?;
    let verdict = nested(immediate, NFTA_DATA_VERDICT)?;

    let code = nested(verdict, NFTA_VERDICT_CODE)?;
    let code = i32::from_be_bytes(code.try_into().ok()?);
    if code != NFT_JUMP && code != NFT_GOTO {
        return None;
    }
    let chain = nested(verdict, NFTA_VERDICT_CHAIN)?;
    let chain = chain.strip_suffix(&[0]).unwrap_or(chain);
    String::from_utf8(chain.to_vec()).ok()
}

/// Returns the value of the first attribute of `kind` in `attributes`.
fn nested(attributes: &[u8], kind: u16) -> Option<&[u8]> {
    NlasIterator::new(attributes)
        .flatten()
        .find(|attribute| attribute.kind() == kind)
        .map(value_of)
}

/// Returns the value of `attribute`, borrowed from the buffer it was read
/// from.
fn value_of(attribute: NlaBuffer<&[u8]>) -> &[u8] {
    let length = attribute.value_length();
    &attribute.into_inner()[NLA_HEADER_SIZE..NLA_HEADER_SIZE + length]
}

fn rule_handle(rule: &RuleMessage) -> Option<u64> {
    rule.attributes
        .iter()
        .find_map(|attribute| match attribute {
            RuleAttribute::Handle(handle) => Some(*handle),
            _ => None,
        })
}

/// Splits one datagram into its netlink messages: type, sequence number
/// and payload.
fn split_messages(buffer: &[u8]) -> io::Result<Vec<(u16, u32, &[u8])>> {
    let mut messages = Vec::new();
    let mut offset = 0;
    while offset < buffer.len() {
        let message = NetlinkBuffer::new_checked(&buffer[offset..])
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error.to_string()))?;
        let length = message.length() as usize;
        if length == 0 {
            break;
        }
        messages.push((
            message.message_type(),
            message.sequence_number(),
            message.payload(),
        ));
        // Netlink aligns each message to 4 bytes.
        offset += length.next_multiple_of(4);
    }
    Ok(messages)
}

/// Returns the error code of an NLMSG_ERROR payload: 0 for an
/// acknowledgement, else a negative errno.
fn error_code(payload: &[u8]) -> i32 {
    payload
        .get(..4)
        .and_then(|bytes| bytes.try_into().ok())
        .map_or(-libc::EIO, i32::from_ne_bytes)
}

fn delete_rule(chain: &str, handle: u64) -> NfTablesMessage {
    NfTablesMessage::DeleteRule(RuleMessage {
        attributes: vec![
            RuleAttribute::Table(NAT_TABLE.into()),
            RuleAttribute::Chain(chain.into()),
            RuleAttribute::Handle(handle),
        ],
    })
}

/// Returns a rule deletion without a handle, which deletes every rule of
/// the chain.
fn flush_chain(chain: &str) -> NfTablesMessage {
    NfTablesMessage::DeleteRule(RuleMessage {
        attributes: vec![
            RuleAttribute::Table(NAT_TABLE.into()),
            RuleAttribute::Chain(chain.into()),
        ],
    })
}

fn delete_chain(chain: &str) -> NfTablesMessage {
    NfTablesMessage::DeleteChain(ChainMessage {
        attributes: vec![
            ChainAttribute::Table(NAT_TABLE.into()),
            ChainAttribute::Name(chain.into()),
        ],
    })
}

fn new_chain(chain: &str) -> NfTablesMessage {
    NfTablesMessage::NewChain(ChainMessage {
        attributes: vec![
            ChainAttribute::Table(NAT_TABLE.into()),
            ChainAttribute::Name(chain.into()),
        ],
    })
}

/// Returns the message that adds `rule` to `chain`, with the layer 4
/// protocol that xtables matches such as `multiport` are checked against,
/// as iptables-nft sends it (NFTA_RULE_COMPAT).
fn new_rule(chain: &str, rule: &EncodedRule) -> NfTablesMessage {
    let compat = vec![
        DefaultNla::new(
            NFTA_RULE_COMPAT_PROTO,
            u32::from(rule.protocol).to_be_bytes().to_vec(),
        ),
        DefaultNla::new(NFTA_RULE_COMPAT_FLAGS, 0u32.to_be_bytes().to_vec()),
    ];
    NfTablesMessage::NewRule(RuleMessage {
        attributes: vec![
            RuleAttribute::Table(NAT_TABLE.into()),
            RuleAttribute::Chain(chain.into()),
            RuleAttribute::Expressions(rule.expressions.iter().map(expression_attribute).collect()),
            RuleAttribute::Compat(compat),
        ],
    })
}

/// Encodes one expression, loading into register 1 and giving verdicts in
/// register 0 as iptables-nft does.
fn expression_attribute(expression: &Expr) -> ListAttribute<ExpressionAttribute> {
    let value = |bytes: &[u8]| DataAttribute::Value(bytes.to_vec());
    let expressions = match expression {
        Expr::Meta { key } => Expressions::Meta(vec![
            Meta::Key(MetaKey::Other(*key)),
            Meta::DestinationRegister(Register::Reg1),
        ]),
        Expr::Payload { base, offset, len } => Expressions::Payload(vec![
            Payload::DestinationRegister(Register::Reg1),
            Payload::Base(*base),
            Payload::Offset(*offset),
            Payload::Len(*len),
        ]),
        Expr::Bitwise { mask, xor } => Expressions::Bitwise(vec![
            Bitwise::SourceRegister(Register::Reg1),
            Bitwise::DestinationRegister(Register::Reg1),
            Bitwise::Length(mask.len() as u32),
            Bitwise::Mask(value(mask)),
            Bitwise::Xor(value(xor)),
        ]),
        Expr::Cmp { op, data } => Expressions::Cmp(vec![
            Cmp::SourceRegister(Register::Reg1),
            Cmp::Op(Operator::Other(*op)),
            Cmp::Data(value(data)),
        ]),
        Expr::Verdict { code, chain } => {
            let mut verdict = vec![VerdictAttribute::Code(Verdict::Other(*code as u32))];
            if let Some(chain) = chain {
                verdict.push(VerdictAttribute::Chain(chain.clone()));
            }
            Expressions::Immediate(vec![
                Immediate::DestinationRegister(Register::Verdict),
                Immediate::Data(DataAttribute::Verdict(verdict)),
            ])
        }
        Expr::Match { name, rev, info } | Expr::Target { name, rev, info } => {
            let kind = match expression {
                Expr::Match { .. } => "match",
                _ => "target",
            };
            Expressions::Other {
                expression_type: kind.into(),
                attributes: vec![
                    DefaultNla::new(NFTA_XT_NAME, nul_terminated(name)),
                    DefaultNla::new(NFTA_XT_REV, rev.to_be_bytes().to_vec()),
                    DefaultNla::new(NFTA_XT_INFO, info.clone()),
                ],
            }
        }
        Expr::Counter => Expressions::Other {
            expression_type: "counter".into(),
            attributes: vec![
                DefaultNla::new(NFTA_COUNTER_BYTES, 0u64.to_be_bytes().to_vec()),
                DefaultNla::new(NFTA_COUNTER_PACKETS, 0u64.to_be_bytes().to_vec()),
            ],
        },
        Expr::Other(name) => Expressions::Other {
            expression_type: name.clone(),
            attributes: Vec::new(),
        },
    };
    ListAttribute::from(expressions)
}

fn nul_terminated(text: &str) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    bytes.push(0);
    bytes
}

/// Reads the expressions of a dumped rule from its attributes, by hand for
/// the reason [`dumped_rule`] gives. Registers and attributes that
/// [`Expr`] does not hold are skipped, so an expression added with
/// [`expression_attribute`] reads back equal. An expression of another
/// kind reads as [`Expr::Other`].
fn decoded_expressions(attributes: &[u8]) -> Vec<Expr> {
    let Some(list) = nested(attributes, NFTA_RULE_EXPRESSIONS) else {
        return Vec::new();
    };
    NlasIterator::new(list)
        .flatten()
        .filter(|element| element.kind() == NFTA_LIST_ELEM)
        .map(|element| decoded_expression(value_of(element)))
        .collect()
}

fn decoded_expression(expression: &[u8]) -> Expr {
    let name = nested(expression, NFTA_EXPR_NAME)
        .map(text_of)
        .unwrap_or_default();
    let data = nested(expression, NFTA_EXPR_DATA).unwrap_or_default();
    let number = |kind: u16| nested(data, kind).and_then(be_u32).unwrap_or(u32::MAX);
    let data_value = |kind: u16| {
        nested(data, kind)
            .and_then(|value| nested(value, NFTA_DATA_VALUE))
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    };

    match name.as_str() {
        "meta" => Expr::Meta {
            key: number(NFTA_META_KEY),
        },
        "payload" => Expr::Payload {
            base: number(NFTA_PAYLOAD_BASE),
            offset: number(NFTA_PAYLOAD_OFFSET),
            len: number(NFTA_PAYLOAD_LEN),
        },
        "bitwise" => Expr::Bitwise {
            mask: data_value(NFTA_BITWISE_MASK),
            xor: data_value(NFTA_BITWISE_XOR),
        },
        "cmp" => Expr::Cmp {
            op: number(NFTA_CMP_OP),
            data: data_value(NFTA_CMP_DATA),
        },
        "immediate" => decoded_verdict(data).unwrap_or(Expr::Other(name)),
        "match" | "target" => {
            let xt_name = nested(data, NFTA_XT_NAME).map(text_of).unwrap_or_default();
            let rev = number(NFTA_XT_REV);
            let info = nested(data, NFTA_XT_INFO).unwrap_or_default().to_vec();
            match name.as_str() {
                "match" => Expr::Match {
                    name: xt_name,
                    rev,
                    info,
                },
                _ => Expr::Target {
                    name: xt_name,
                    rev,
                    info,
                },
            }
        }
        "counter" => Expr::Counter,
        _ => Expr::Other(name),
    }
}

fn decoded_verdict(data: &[u8]) -> Option<Expr> {
    let immediate = nested(data, NFTA_IMMEDIATE_DATA)?;
    let verdict = nested(immediate, NFTA_DATA_VERDICT)?;
    let code = be_u32(nested(verdict, NFTA_VERDICT_CODE)?)? as i32;
    let chain = nested(verdict, NFTA_VERDICT_CHAIN).map(text_of);
    Some(Expr::Verdict { code, chain })
}

fn be_u32(bytes: &[u8]) -> Option<u32> {
    bytes.try_into().ok().map(u32::from_be_bytes)
}

/// Reads a NUL-terminated string attribute.
fn text_of(bytes: &[u8]) -> String {
    let bytes = bytes.split(|byte| *byte == 0).next().unwrap_or_default();
    String::from_utf8_lossy(bytes).into_owned()
}

/// Describes a message of a removal batch for an error message.
fn describe(message: &NfTablesMessage) -> String {
    match message {
        NfTablesMessage::DeleteRule(rule) => {
            let chain = rule
                .attributes
                .iter()
                .find_map(|attribute| match attribute {
                    RuleAttribute::Chain(chain) => Some(chain.as_str()),
                    _ => None,
                });
            let chain = chain.unwrap_or("?");
            match rule_handle(rule) {
                Some(handle) => format!("delete rule {handle} of chain {chain}"),
                None => format!("flush chain {chain}"),
            }
        }
        NfTablesMessage::DeleteChain(chain) => {
            let name = chain
                .attributes
                .iter()
                .find_map(|attribute| match attribute {
                    ChainAttribute::Name(name) => Some(name.as_str()),
                    _ => None,
                });
            format!("delete chain {}", name.unwrap_or("?"))
        }
        other => format!("{:?}", other.message_type()),
    }
}

fn before_commit(action: &str, chain: &str, error: &io::Error) -> NftError {
    NftError::BeforeCommit(format!("{action} {chain} in table {NAT_TABLE}: {error}"))
}

fn family_header(family: Family) -> NetfilterHeader {
    let family = match family {
        Family::V4 => NetfilterProtoFamily::IPv4,
        Family::V6 => NetfilterProtoFamily::IPv6,
    };
    NetfilterHeader::new(family, 0, 0)
}

fn netfilter_message(
    header: NetfilterHeader,
    inner: impl Into<NetfilterMessageInner>,
    flags: u16,
    sequence: u32,
) -> NetlinkMessage<NetfilterMessage> {
    let mut message = NetlinkMessage::from(NetfilterMessage::new(header, inner));
    message.header.flags = flags;
    message.header.sequence_number = sequence;
    message.finalize();
    message
}

/// Encodes `messages` one after the other, as one datagram.
fn encode(messages: &[NetlinkMessage<NetfilterMessage>]) -> Vec<u8> {
    use netlink_packet_core::Emitable;

    let mut buffer = Vec::new();
    for message in messages {
        let start = buffer.len();
        buffer.resize(start + message.buffer_len(), 0);
        message.emit(&mut buffer[start..]);
    }
    buffer
}

/// Returns the device and inode of the calling thread's network namespace.
fn current_namespace() -> io::Result<(u64, u64)> {
    let metadata = std::fs::metadata(Path::new("/proc/thread-self/ns/net"))?;
    Ok((metadata.dev(), metadata.ino()))
}

fn set_receive_timeout(socket: &Socket, timeout: Duration) -> io::Result<()> {
    let value = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: the option value is a timeval that lives for the call, and
    // its size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const value).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    match rc {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use netlink_packet_netfilter::nftables::{
        DataAttribute, ExpressionAttribute, Expressions, Immediate, ListAttribute, Register,
        Verdict, VerdictAttribute,
    };

    /// The bytes of `delete_rule("POSTROUTING", 7)` for IPv4, from the
    /// layout of nf_tables.h: nlmsghdr, nfgenmsg, then the table, chain and
    /// handle attributes, the handle in network byte order.
    const DELETE_RULE_BYTES: [u8; 56] = [
        0x38, 0, 0, 0, // length 56
        0x08, 0x0a, // NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_DELRULE
        0x05, 0x00, // NLM_F_REQUEST | NLM_F_ACK
        2, 0, 0, 0, // sequence number
        0, 0, 0, 0, // port id
        2, 0, 0, 0, // NFPROTO_IPV4, version 0, res_id 0
        8, 0, 1, 0, b'n', b'a', b't', 0, // NFTA_RULE_TABLE
        16, 0, 2, 0, b'P', b'O', b'S', b'T', b'R', b'O', b'U', b'T', b'I', b'N', b'G', 0, 12, 0, 3,
        0, 0, 0, 0, 0, 0, 0, 0, 7, // NFTA_RULE_HANDLE
    ];

    /// Returns the bytes of a batch begin (`end` false) or end message of
    /// nf_tables: type NFNL_MSG_BATCH_BEGIN or _END, res_id 10 big-endian.
    fn control_bytes(end: bool, sequence: u8) -> [u8; 20] {
        let kind = if end { 0x11 } else { 0x10 };
        [
            20, 0, 0, 0, kind, 0, 1, 0, sequence, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10,
        ]
    }

    #[test]
    fn batch_encodes_begin_rule_end() {
        let messages = [delete_rule("POSTROUTING", 7)];
        let encoded = encode(&batch(Family::V4, &messages, &[], 1));

        let mut expected = control_bytes(false, 1).to_vec();
        expected.extend_from_slice(&DELETE_RULE_BYTES);
        expected.extend_from_slice(&control_bytes(true, 3));
        assert_eq!(encoded, expected);
    }

    #[test]
    fn batch_uses_family_of_removal() {
        let messages = [delete_chain("CNI-x"), flush_chain("CNI-x")];
        let batch = batch(Family::V6, &messages, &[], 10);

        assert_eq!(batch.len(), 4);
        let sequences: Vec<u32> = batch.iter().map(|m| m.header.sequence_number).collect();
        assert_eq!(sequences, [10, 11, 12, 13]);
        for message in &batch[1..3] {
            let NetlinkPayload::InnerMessage(inner) = &message.payload else {
                panic!("not an nf_tables message: {message:?}");
            };
            assert_eq!(inner.header.family, NetfilterProtoFamily::IPv6);
            assert_eq!(message.header.flags, NLM_F_REQUEST | NLM_F_ACK);
        }
    }

    /// Builds a rule as iptables-nft writes `-m comment ... -j CHAIN`:
    /// xtables `match` data, a counter, and an immediate verdict.
    fn iptables_rule(verdict: Verdict, chain: &str) -> RuleMessage {
        let raw = |name: &str| {
            ListAttribute::Element(vec![
                ExpressionAttribute::Name(name.into()),
                ExpressionAttribute::Data(Expressions::Other {
                    expression_type: name.into(),
                    attributes: Vec::new(),
                }),
            ])
        };
        let immediate = ListAttribute::Element(vec![
            ExpressionAttribute::Name("immediate".into()),
            ExpressionAttribute::Data(Expressions::Immediate(vec![
                Immediate::DestinationRegister(Register::Verdict),
                Immediate::Data(DataAttribute::Verdict(vec![
                    VerdictAttribute::Code(verdict),
                    VerdictAttribute::Chain(chain.into()),
                ])),
            ])),
        ]);
        RuleMessage {
            attributes: vec![
                RuleAttribute::Table(NAT_TABLE.into()),
                RuleAttribute::Chain("POSTROUTING".into()),
                RuleAttribute::Handle(42),
                RuleAttribute::Expressions(vec![raw("match"), raw("counter"), immediate]),
            ],
        }
    }

    /// Encodes `rule` as the kernel sends it in a dump and reads it back
    /// with [`dumped_rule`].
    fn dump_and_read(rule: RuleMessage) -> DumpedRule {
        let header = family_header(Family::V4);
        let message = netfilter_message(header, NfTablesMessage::NewRule(rule), 0, 1);
        let bytes = encode(&[message]);
        let messages = split_messages(&bytes).unwrap();
        assert_eq!(messages.len(), 1);
        let (_, sequence, payload) = messages[0];
        assert_eq!(sequence, 1);
        dumped_rule(&payload[NFGENMSG_LEN..])
    }

    #[test]
    fn dumped_rule_reads_jump_and_handle() {
        let jump = dump_and_read(iptables_rule(Verdict::Jump, "CNI-abc"));
        assert_eq!(jump.jump.as_deref(), Some("CNI-abc"));
        assert_eq!(jump.handle, Some(42));

        let goto = dump_and_read(iptables_rule(Verdict::Goto, "CNI-abc"));
        assert_eq!(goto.jump.as_deref(), Some("CNI-abc"));
    }

    #[test]
    fn dumped_rule_ignores_other_verdicts() {
        // NF_ACCEPT is 1, and such a verdict names no chain in practice.
        let accept = dump_and_read(iptables_rule(Verdict::Other(1), "CNI-abc"));
        assert_eq!(accept.jump, None);
        assert_eq!(accept.handle, Some(42));

        let empty = dump_and_read(RuleMessage {
            attributes: Vec::new(),
        });
        assert_eq!(empty, DumpedRule::default());
    }

    #[test]
    fn error_codes_read() {
        assert_eq!(error_code(&0i32.to_ne_bytes()), 0);
        assert_eq!(error_code(&(-libc::ENOENT).to_ne_bytes()), -libc::ENOENT);
        assert_eq!(error_code(&[]), -libc::EIO);
    }

    #[test]
    fn nft_detection_follows_links() {
        let dir = tempfile::tempdir().unwrap();
        let nft = dir.path().join("nft");
        let legacy = dir.path().join("legacy");
        for (bin, target) in [(&nft, NFT_MULTI_BINARY), (&legacy, "xtables-legacy-multi")] {
            std::fs::create_dir(bin).unwrap();
            std::fs::write(bin.join(target), "").unwrap();
            std::os::unix::fs::symlink(bin.join(target), bin.join("iptables")).unwrap();
        }
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();

        let path = |dirs: &[&Path]| std::env::join_paths(dirs).unwrap();
        assert!(resolves_to_nft(&path(&[&nft]), "iptables"));
        assert!(!resolves_to_nft(&path(&[&legacy]), "iptables"));
        // The first directory on PATH with the command decides.
        assert!(!resolves_to_nft(
            &path(&[&empty, &legacy, &nft]),
            "iptables"
        ));
        assert!(resolves_to_nft(&path(&[&empty, &nft, &legacy]), "iptables"));
        assert!(!resolves_to_nft(&path(&[&empty]), "iptables"));
    }
}
