//! Conversions between host API errors and CNI errors, and IPAM delegation.

use cniwasm_types::{CniError, codes, result_from_json};

use crate::bindings::cniwasm::host::ipam;
use crate::bindings::cniwasm::host::types::{CniError as WitCniError, HostError};
use crate::config::PluginConfig;

/// Plugin-specific error codes (100 and above) that cniwasm and the SDK
/// assign; `HOST_DENIED` is the one plugins return.
pub use cniwasm_types::codes::cniwasm as plugin_codes;

/// Formats a host error as `<kind>: <message>`, such as
/// `not found: link "eth0"`.
pub fn describe_host_error(error: &HostError) -> String {
    match error {
        HostError::Denied(message) => format!("denied by host policy: {message}"),
        HostError::NotFound(message) => format!("not found: {message}"),
        HostError::AlreadyExists(message) => format!("already exists: {message}"),
        HostError::Invalid(message) => format!("invalid argument: {message}"),
        HostError::Failed(message) => format!("failed: {message}"),
    }
}

/// Converts a failed host call into a CNI error whose message starts with
/// `context` (such as `failed to create veth "eth0"`). A denial gets code
/// [`plugin_codes::HOST_DENIED`]; every other error gets code 999, as the
/// reference `skel` reports errors it did not classify.
pub fn host_error(context: &str, error: HostError) -> CniError {
    let code = match error {
        HostError::Denied(_) => plugin_codes::HOST_DENIED,
        _ => codes::INTERNAL,
    };
    CniError::new(code, format!("{context}: {}", describe_host_error(&error)))
}

/// Adds a context message to host call results; see [`host_error`].
pub trait HostResultExt<T> {
    /// Converts the error with [`host_error`].
    fn context(self, context: &str) -> Result<T, CniError>;
}

impl<T> HostResultExt<T> for Result<T, HostError> {
    fn context(self, context: &str) -> Result<T, CniError> {
        self.map_err(|error| host_error(context, error))
    }
}

/// Converts an error received over WIT (from a delegated IPAM plugin).
pub fn from_wit_error(error: WitCniError) -> CniError {
    CniError::new(error.code, error.msg).with_details(error.details)
}

/// Converts an error to its WIT form; `cniVersion` is left to the host.
pub fn to_wit_error(error: CniError) -> WitCniError {
    WitCniError {
        code: error.code,
        msg: error.msg,
        details: error.details,
    }
}

/// Runs ADD of the IPAM plugin named by `ipam.type` and parses its result,
/// read in the configuration's version. The IPAM plugin's errors are returned
/// unchanged; an unreadable result is code 6.
pub fn delegate_ipam_add(config: &PluginConfig) -> Result<cniwasm_types::Result, CniError> {
    let text = ipam::add().map_err(from_wit_error)?;
    parse_ipam_result(&text, &config.cni_version)
}

/// Runs DEL of the IPAM plugin named by `ipam.type`.
pub fn delegate_ipam_del() -> Result<(), CniError> {
    ipam::del().map_err(from_wit_error)
}

/// Runs CHECK of the IPAM plugin named by `ipam.type`.
pub fn delegate_ipam_check() -> Result<(), CniError> {
    ipam::check().map_err(from_wit_error)
}

/// Runs STATUS of the IPAM plugin named by `ipam.type`; its error (code 50
/// or 51 by convention) is returned unchanged.
pub fn delegate_ipam_status() -> Result<(), CniError> {
    ipam::status().map_err(from_wit_error)
}

fn parse_ipam_result(text: &str, version: &str) -> Result<cniwasm_types::Result, CniError> {
    let decode_error = |reason: String| {
        CniError::new(
            codes::DECODING_FAILURE,
            format!("failed to parse IPAM plugin result: {reason}"),
        )
    };
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|error| decode_error(error.to_string()))?;
    result_from_json(&value, version).map_err(|error| decode_error(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_error_codes() {
        let denied = host_error(
            "failed to add route",
            HostError::Denied("dst 0.0.0.0/0".into()),
        );
        assert_eq!(denied.code, plugin_codes::HOST_DENIED);
        assert_eq!(
            denied.msg,
            "failed to add route: denied by host policy: dst 0.0.0.0/0"
        );

        let failed = host_error("failed to set up \"lo\"", HostError::Failed("EPERM".into()));
        assert_eq!(failed.code, 999);
    }

    #[test]
    fn ipam_result_reads_0_2_0() {
        let text = r#"{"cniVersion":"0.2.0","ip4":{"ip":"10.1.2.2/24","gateway":"10.1.2.1"}}"#;
        let result = parse_ipam_result(text, "0.2.0").unwrap();
        assert_eq!(result.ips[0].address, "10.1.2.2/24");
        assert_eq!(result.ips[0].gateway, "10.1.2.1");
    }

    #[test]
    fn ipam_result_bad_json_is_code_6() {
        assert_eq!(parse_ipam_result("nope", "1.0.0").unwrap_err().code, 6);
    }
}
