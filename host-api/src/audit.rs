//! The audit log: one JSON line per host call and one per plugin call,
//! appended to a file that several cniwasm processes may write at once.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
#[error("failed to open audit log {}: {source}", path.display())]
pub struct AuditError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// The origin of a record, the same for every record of one chain
/// operation and plugin.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditContext {
    /// Random id shared by every record of one cniwasm invocation.
    pub invocation: String,
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    /// `ADD`, `DEL` or `CHECK`.
    pub command: String,
    pub plugin: String,
    /// `sha256:` and the hex digest of the plugin's `.wasm` file.
    pub digest: String,
}

/// One host call.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostCallRecord<'a> {
    pub operation: &'a str,
    pub arguments: Value,
    /// `allow`, `deny` or `would-deny`.
    pub decision: &'a str,
    pub rule: &'a str,
    /// `ok`, or the error the call ended with.
    pub outcome: String,
    pub duration_us: u64,
}

/// The summary of one plugin call.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginCallRecord {
    /// `ok`, `cni-error:<code>`, `trap`, `deadline` or `rejected`.
    pub outcome: String,
    pub message: String,
    pub wall_time_us: u64,
    pub peak_memory_bytes: u64,
    pub host_calls: u64,
    pub denials: u64,
    pub would_denials: u64,
}

/// An append-only JSON-lines file, or nothing when auditing is off.
#[derive(Debug, Clone, Default)]
pub struct AuditLog {
    file: Option<Arc<File>>,
}

impl AuditLog {
    /// Returns an audit log that drops every record.
    pub fn disabled() -> Self {
        Self { file: None }
    }

    /// Opens `path` for appending, creating it with mode 0600 and its
    /// directory if needed.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        use std::os::unix::fs::OpenOptionsExt;

        let error = |source| AuditError {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(error)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(error)?;
        Ok(Self {
            file: Some(Arc::new(file)),
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.file.is_some()
    }

    pub fn host_call(&self, context: &AuditContext, record: &HostCallRecord<'_>) {
        self.write("host-call", context, record);
    }

    pub fn plugin_call(&self, context: &AuditContext, record: &PluginCallRecord) {
        self.write("plugin-call", context, record);
    }

    /// Writes one line with a single `write` under an exclusive `flock`, so
    /// lines of concurrent processes never interleave. A failed write is
    /// logged, not returned: auditing must not turn a finished kernel change
    /// into a reported failure.
    fn write(&self, kind: &str, context: &AuditContext, record: &impl Serialize) {
        let Some(file) = &self.file else { return };

        let mut line = serde_json::Map::new();
        line.insert(
            "time".into(),
            Value::String(
                humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
            ),
        );
        line.insert("kind".into(), Value::String(kind.to_string()));
        merge(&mut line, context);
        merge(&mut line, record);
        let mut bytes = serde_json::to_vec(&line).expect("audit records always serialise");
        bytes.push(b'\n');

        let result = rustix::fs::flock(file.as_ref(), rustix::fs::FlockOperation::LockExclusive)
            .map_err(std::io::Error::from)
            .and_then(|()| (&**file).write_all(&bytes));
        let _ = rustix::fs::flock(file.as_ref(), rustix::fs::FlockOperation::Unlock);
        if let Err(error) = result {
            tracing::error!(%error, "failed to write an audit record");
        }
    }
}

fn merge(line: &mut serde_json::Map<String, Value>, value: &impl Serialize) {
    if let Ok(Value::Object(object)) = serde_json::to_value(value) {
        line.extend(object);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> AuditContext {
        AuditContext {
            invocation: "abc".into(),
            plugin: "bridge".into(),
            command: "ADD".into(),
            ..Default::default()
        }
    }

    #[test]
    fn records_are_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit/audit.log");
        let log = AuditLog::open(&path).unwrap();
        let record = HostCallRecord {
            operation: "link.delete",
            arguments: serde_json::json!({"name": "lo"}),
            decision: "deny",
            rule: "ownership.hostLinks",
            outcome: "denied".into(),
            duration_us: 3,
        };
        log.host_call(&context(), &record);
        log.host_call(&context(), &record);

        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["kind"], "host-call");
        assert_eq!(lines[0]["plugin"], "bridge");
        assert_eq!(lines[0]["decision"], "deny");
        assert_eq!(lines[0]["arguments"]["name"], "lo");
        assert!(lines[0]["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        AuditLog::open(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn disabled_log_writes_nothing() {
        let log = AuditLog::disabled();
        assert!(!log.is_enabled());
        log.plugin_call(
            &context(),
            &PluginCallRecord {
                outcome: "ok".into(),
                message: String::new(),
                wall_time_us: 1,
                peak_memory_bytes: 0,
                host_calls: 0,
                denials: 0,
                would_denials: 0,
            },
        );
    }
}
