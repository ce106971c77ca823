use serde::{Deserialize, Serialize};

/// Well-known CNI error codes. Codes 0 to 99 are reserved by the
/// specification; plugins use 100 and above for their own.
pub mod codes {
    pub const INCOMPATIBLE_CNI_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENVIRONMENT_VARIABLES: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODING_FAILURE: u32 = 6;
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// A plugin failed in a way it did not classify (the reference `skel`
    /// wraps plain Go errors with this code).
    pub const INTERNAL: u32 = 999;

    /// Codes cniwasm assigns, in the plugin-specific range.
    pub mod cniwasm {
        /// The host rejected a plugin's request (policy or ownership).
        pub const HOST_DENIED: u32 = 100;
        /// The plugin trapped: a panic, an out-of-bounds access, a failed
        /// memory growth.
        pub const PLUGIN_TRAPPED: u32 = 101;
        pub const PLUGIN_DEADLINE_EXCEEDED: u32 = 102;
        /// The plugin's result is not a valid CNI result.
        pub const PLUGIN_INVALID_OUTPUT: u32 = 103;
        pub const PLUGIN_LOAD_FAILED: u32 = 104;
        /// No `<type>.wasm` on the plugin path.
        pub const PLUGIN_NOT_FOUND: u32 = 105;
        /// The policy rejects the plugin before it runs: a digest mismatch,
        /// or an import the policy does not grant.
        pub const PLUGIN_REJECTED: u32 = 106;
        /// The policy file is invalid.
        pub const INVALID_POLICY: u32 = 107;
    }
}

/// The CNI error object. `cniVersion` is filled in when printed for a
/// configuration whose version is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{}", self.display())]
pub struct CniError {
    #[serde(
        rename = "cniVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            cni_version: String::new(),
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// Formats as libcni does: `msg`, or `msg; details`.
    fn display(&self) -> String {
        if self.details.is_empty() {
            self.msg.clone()
        } else {
            format!("{}; {}", self.msg, self.details)
        }
    }
}
