//! CNI types shared by the cniwasm runtime and the plugin SDK: the error
//! object, results of every spec version and the conversions between them,
//! and version strings.
//!
//! Field names and JSON layout follow the CNI specification and the reference
//! Go types (`pkg/types/{020,040,100}` of containernetworking/cni), so output
//! compares field by field with the reference plugins.

mod error;
mod result;
mod version;

pub use error::{CniError, codes};
pub use result::{
    Dns, Interface, IpConfig, Result, ResultError, Route, print_json, result_from_json,
    result_to_json,
};
pub use version::{SUPPORTED_VERSIONS, Version, VersionError, compare_versions, version_at_least};
