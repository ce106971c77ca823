//! open-files: ADD tries to read a host file, list the root directory and open a TCP connection, and reports which attempts the sandbox blocked. For tests only.

use std::net::TcpStream;

use cniwasm_plugin_sdk::{AddOutput, CniError, Invocation, Plugin, PluginConfig};

/// Returned when at least one attempt succeeded.
const CODE_SANDBOX_ESCAPE: u32 = 199;
/// Returned when the sandbox blocked every attempt, the outcome tests expect.
const CODE_ALL_BLOCKED: u32 = 198;

pub struct OpenFiles;

impl Plugin for OpenFiles {
    fn add(_inv: &Invocation, _config: &PluginConfig) -> Result<AddOutput, CniError> {
        let mut succeeded: Vec<String> = Vec::new();
        let mut failed: Vec<String> = Vec::new();

        match std::fs::read("/etc/passwd") {
            Ok(bytes) => succeeded.push(format!("read /etc/passwd ({} bytes)", bytes.len())),
            Err(error) => failed.push(format!("read /etc/passwd: {error}")),
        }
        match std::fs::read_dir("/") {
            Ok(_) => succeeded.push("listed directory /".to_string()),
            Err(error) => failed.push(format!("list directory /: {error}")),
        }
        match TcpStream::connect("127.0.0.1:22") {
            Ok(_) => succeeded.push("connected to 127.0.0.1:22".to_string()),
            Err(error) => failed.push(format!("connect to 127.0.0.1:22: {error}")),
        }

        if succeeded.is_empty() {
            Err(CniError::new(
                CODE_ALL_BLOCKED,
                format!("sandbox blocked every attempt: {}", failed.join("; ")),
            ))
        } else {
            Err(CniError::new(
                CODE_SANDBOX_ESCAPE,
                format!("sandbox escape: {}", succeeded.join("; ")),
            ))
        }
    }

    fn del(_inv: &Invocation, _config: &PluginConfig) -> Result<(), CniError> {
        Ok(())
    }

    fn check(_inv: &Invocation, _config: &PluginConfig) -> Result<(), CniError> {
        Ok(())
    }
}

cniwasm_plugin_sdk::export_plugin!(OpenFiles);
