//! The `nft` program, which reads and prints the nftables JSON schema
//! (`nft -j`, libnftables-json(5)), shared by the MAC spoof checks and the
//! nftables NAT rules.
//!
//! The JSON is built with serde_json rather than the `nftables` crate,
//! because a few `json!` literals express the reference plugins' tables,
//! chains and rules directly. The crate would add schema types that the
//! callers would still have to map those layouts onto.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use netlink_packet_netfilter::NetfilterProtoFamily;

use super::iptables::NftSocket;
use crate::kernel::{KernelError, KernelErrorKind, Namespace};

/// The program that applies and lists nftables rules.
const NFT: &str = "nft";

/// Runs `nft` in the network namespace of the calling thread, the host's.
#[derive(Debug, Clone)]
pub(crate) struct NftProgram {
    program: String,
    /// The feature that needs the program, named in the message when it is
    /// missing, such as `MAC spoof checks`.
    purpose: &'static str,
}

impl NftProgram {
    /// Runs `program` in place of `nft`, looked up in `PATH` unless it
    /// contains a `/`.
    pub(crate) fn new(program: impl Into<String>, purpose: &'static str) -> Self {
        Self {
            program: program.into(),
            purpose,
        }
    }

    /// Runs `nft` from `PATH`.
    pub(crate) fn from_path(purpose: &'static str) -> Self {
        Self::new(NFT, purpose)
    }

    /// Runs `nft -j -f -` with `commands` as one transaction, which the
    /// kernel applies whole or not at all.
    pub(crate) fn apply(&self, operation: &str, commands: Vec<Value>) -> Result<(), KernelError> {
        let text = json!({ "nftables": commands }).to_string();
        self.run(operation, &["-j", "-f", "-"], Some(&text))?;
        tracing::debug!(commands = %text, "applied nftables commands");
        Ok(())
    }

    /// Lists the tables of `family` with `nft -j list ruleset FAMILY`,
    /// which succeeds when a table is missing, where listing the table
    /// would fail.
    pub(crate) fn list_family(&self, operation: &str, family: &str) -> Result<Value, KernelError> {
        self.list(operation, &["-j", "list", "ruleset", family])
    }

    /// Lists table `family name` with `nft -j list table`. A missing table
    /// gives a listing without objects. Only a failed listing looks for
    /// the table, so the usual case costs one process.
    pub(crate) fn list_table(
        &self,
        operation: &str,
        family: &str,
        name: &str,
    ) -> Result<Value, KernelError> {
        // A bridge DEL removes the masquerade of both backends, so with the
        // iptables backend this runs for a table that does not exist. Asking
        // the kernel first spares the two nft processes of that case.
        if table_missing(family, name) {
            return Ok(json!({ "nftables": [] }));
        }

        let error = match self.list(operation, &["-j", "list", "table", family, name]) {
            Ok(listing) => return Ok(listing),
            Err(error) => error,
        };
        let tables = self.list(operation, &["-j", "list", "tables", family])?;
        let exists = listed_objects(&tables)
            .map_err(|reason| failed(operation, reason))?
            .iter()
            .filter_map(|object| object.get("table"))
            .any(|table| table["name"] == name);
        match exists {
            true => Err(error),
            false => Ok(json!({ "nftables": [] })),
        }
    }

    fn list(&self, operation: &str, args: &[&str]) -> Result<Value, KernelError> {
        let output = self.run(operation, args, None)?;
        serde_json::from_str(&output)
            .map_err(|error| failed(operation, format!("invalid nft -j output: {error}")))
    }

    /// Runs `nft ARGS`, writing `input` to its stdin, and returns its stdout.
    fn run(
        &self,
        operation: &str,
        args: &[&str],
        input: Option<&str>,
    ) -> Result<String, KernelError> {
        let program = &self.program;
        let spawned = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let reason = format!(
                    "{program} not found in PATH: {} need the nft binary, install nftables",
                    self.purpose
                );
                return Err(failed(operation, reason));
            }
            Err(error) => {
                let reason = format!("failed to run {program}: {error}");
                return Err(failed(operation, reason));
            }
        };

        // Dropping stdin after the write closes the pipe, so nft reads EOF.
        let written = match (child.stdin.take(), input) {
            (Some(mut stdin), Some(input)) => stdin.write_all(input.as_bytes()),
            _ => Ok(()),
        };
        let output = child
            .wait_with_output()
            .map_err(|error| failed(operation, format!("failed to wait for {program}: {error}")))?;

        if !output.status.success() || written.is_err() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let mut reason = format!(
                "{program} {} exited with {}: {}",
                args.join(" "),
                output.status,
                stderr.trim()
            );
            if let Some(input) = input {
                reason.push_str(&format!("; input: {input}"));
            }
            return Err(failed(operation, reason));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// Returns a failure of `operation` in the host namespace.
/// Tells whether nf_tables netlink reports that table `name` of the nft
/// family `family` does not exist in the calling thread's namespace. A
/// failed request counts as unknown, and then nft decides.
fn table_missing(family: &str, name: &str) -> bool {
    let family = match family {
        "inet" => NetfilterProtoFamily::Inet,
        "ip" => NetfilterProtoFamily::IPv4,
        "ip6" => NetfilterProtoFamily::IPv6,
        "bridge" => NetfilterProtoFamily::Bridge,
        _ => return false,
    };
    let exists = NftSocket::open().and_then(|mut socket| socket.table_exists(family, name));
    match exists {
        Ok(exists) => !exists,
        Err(error) => {
            tracing::debug!(%error, name, "nf_tables table lookup failed, asking nft");
            false
        }
    }
}

pub(crate) fn failed(operation: &str, reason: String) -> KernelError {
    KernelError::new(KernelErrorKind::Failed, Namespace::Host, operation, reason)
}

/// Returns the objects of `listing`, the output of `nft -j list ...`.
pub(crate) fn listed_objects(listing: &Value) -> Result<&[Value], String> {
    listing["nftables"]
        .as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| format!("no \"nftables\" array in {listing}"))
}

/// Returns the command that deletes listed `rule` by its handle.
pub(crate) fn rule_deletion(rule: &Value) -> Result<Value, String> {
    let handle = rule["handle"]
        .as_u64()
        .ok_or_else(|| format!("a rule without a handle in the listing: {rule}"))?;
    Ok(
        json!({"delete": {"rule": {"family": rule["family"], "table": rule["table"],
        "chain": rule["chain"], "handle": handle}}}),
    )
}

/// Returns the match `LEFT OP RIGHT` of the JSON schema.
pub(crate) fn matching(left: Value, op: &str, right: Value) -> Value {
    json!({"match": {"op": op, "left": left, "right": right}})
}

/// Returns the payload expression `PROTOCOL FIELD`, such as `ip saddr`.
pub(crate) fn payload(protocol: &str, field: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": field}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_deletion_keeps_location() {
        let rule = json!({"family": "ip", "table": "t", "chain": "c", "handle": 7, "expr": []});
        assert_eq!(
            rule_deletion(&rule).unwrap(),
            json!({"delete": {"rule": {"family": "ip", "table": "t", "chain": "c", "handle": 7}}})
        );
        assert!(rule_deletion(&json!({"family": "ip"})).is_err());
    }

    #[test]
    fn missing_program_named() {
        let nft = NftProgram::new("/nonexistent/nft", "tests");
        let error = nft.apply("apply nothing", Vec::new()).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("/nonexistent/nft"), "{message}");
        assert!(message.contains("tests need the nft binary"), "{message}");
        assert!(message.contains("install nftables"), "{message}");
    }
}
