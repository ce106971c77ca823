use std::path::PathBuf;

use cniwasm_host_api::kernel::KernelError;
use cniwasm_types::{CniError, codes};

use crate::cache::CacheError;
use crate::config::ConfigError;
use crate::engine::EngineError;
use crate::sandbox::{self, PluginError};

/// Everything a chain operation can fail with, each convertible to the CNI
/// error object the CLI prints.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// A runtime parameter (container id, ifname, netns, CNI_ARGS, CAP_ARGS)
    /// is invalid.
    #[error("{message}")]
    InvalidArguments { code: u32, message: String },

    #[error(
        "failed to find plugin {plugin_type:?} in path {search_path:?}: install {plugin_type}.wasm into one of these directories or fix CNI_PATH"
    )]
    PluginNotFound {
        plugin_type: String,
        search_path: Vec<PathBuf>,
    },

    #[error("plugin {plugin_type:?} ({path}) rejected by policy: {reason}")]
    PluginRejected {
        plugin_type: String,
        path: String,
        reason: String,
    },

    #[error("failed to read policy {path}: {reason}")]
    Policy { path: String, reason: String },

    #[error(transparent)]
    Audit(#[from] cniwasm_host_api::audit::AuditError),

    #[error(transparent)]
    Engine(#[from] EngineError),

    #[error(transparent)]
    Kernel(#[from] KernelError),

    #[error("plugin type={plugin_type:?} failed ({command}): {source}")]
    Plugin {
        command: &'static str,
        index: usize,
        plugin_type: String,
        source: Box<PluginError>,
    },

    #[error("{}", join_messages(errors))]
    Many { errors: Vec<Error> },

    #[error(transparent)]
    Cache(#[from] CacheError),

    #[error(
        "configuration version {version:?} does not support the {command} command: it needs 0.4.0 or later"
    )]
    VersionTooOld {
        version: String,
        command: &'static str,
    },
}

fn join_messages(errors: &[Error]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    pub fn invalid(code: u32, message: impl Into<String>) -> Self {
        Error::InvalidArguments {
            code,
            message: message.into(),
        }
    }

    /// Converts to the CNI error object, keeping a plugin's own code.
    pub fn to_cni_error(&self) -> CniError {
        match self {
            Error::Config(error) => error.to_cni_error(),
            Error::InvalidArguments { code, message } => CniError::new(*code, message.clone()),
            Error::PluginNotFound { .. } => {
                CniError::new(sandbox::codes::PLUGIN_NOT_FOUND, self.to_string())
            }
            Error::PluginRejected { .. } => {
                CniError::new(sandbox::codes::PLUGIN_REJECTED, self.to_string())
            }
            Error::Policy { .. } => CniError::new(sandbox::codes::INVALID_POLICY, self.to_string()),
            Error::Audit(_) => CniError::new(codes::IO_FAILURE, self.to_string()),
            Error::Engine(_) => CniError::new(sandbox::codes::PLUGIN_LOAD_FAILED, self.to_string()),
            Error::Kernel(_) => CniError::new(codes::INTERNAL, self.to_string()),
            Error::Plugin {
                command,
                plugin_type,
                source,
                ..
            } => {
                let inner = source.to_cni_error();
                let mut error = CniError::new(
                    inner.code,
                    format!(
                        "plugin type={plugin_type:?} failed ({command}): {}",
                        inner.msg
                    ),
                );
                error.details = inner.details;
                error
            }
            Error::Many { errors } => {
                let code = errors
                    .first()
                    .map_or(codes::INTERNAL, |error| error.to_cni_error().code);
                CniError::new(code, self.to_string())
            }
            // A cache that cannot be parsed is a decoding failure, as any
            // other invalid JSON input is. Other cache errors are I/O failures.
            Error::Cache(CacheError::Corrupt { .. }) => {
                CniError::new(codes::DECODING_FAILURE, self.to_string())
            }
            Error::Cache(_) => CniError::new(codes::IO_FAILURE, self.to_string()),
            Error::VersionTooOld { .. } => {
                CniError::new(codes::INCOMPATIBLE_CNI_VERSION, self.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_error_codes() {
        let corrupt = Error::Cache(CacheError::Corrupt {
            path: PathBuf::from("/var/lib/cni/results/mynet-abc-eth0"),
            reason: "EOF while parsing an object".into(),
        });
        let unwritable = Error::Cache(CacheError::Write {
            path: PathBuf::from("/var/lib/cni/results/mynet-abc-eth0"),
            source: std::io::ErrorKind::NotADirectory.into(),
        });

        assert_eq!(corrupt.to_cni_error().code, codes::DECODING_FAILURE);
        assert_eq!(unwritable.to_cni_error().code, codes::IO_FAILURE);
        assert!(corrupt.to_cni_error().msg.contains("mynet-abc-eth0"));
    }
}
