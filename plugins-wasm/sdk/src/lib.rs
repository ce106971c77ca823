//! SDK for writing cniwasm plugins: sandboxed WebAssembly components that
//! implement CNI's ADD, DEL, CHECK, STATUS and GC over the host API of the
//! WIT world `cniwasm:host/cni-plugin`.
//!
//! A plugin implements [`Plugin`] on a unit type and calls
//! [`export_plugin!`] once. The SDK then:
//!
//! * parses and validates the network configuration ([`PluginConfig`]),
//!   rejecting bad JSON (code 6), a missing or invalid `name` (code 7) and an
//!   unsupported `cniVersion` (code 1), as the reference `skel` does;
//! * parses `prevResult` in the configuration's version;
//! * renders the result of ADD in the configuration's `cniVersion` layout.
//!
//! ```ignore
//! use cniwasm_plugin_sdk::{CniError, Invocation, Plugin, PluginConfig, AddOutput};
//!
//! struct Noop;
//!
//! impl Plugin for Noop {
//!     fn add(_: &Invocation, config: &PluginConfig) -> Result<AddOutput, CniError> {
//!         Ok(AddOutput::Result(config.prev_result.clone().unwrap_or_default()))
//!     }
//!     fn del(_: &Invocation, _: &PluginConfig) -> Result<(), CniError> {
//!         Ok(())
//!     }
//!     fn check(_: &Invocation, _: &PluginConfig) -> Result<(), CniError> {
//!         Ok(())
//!     }
//! }
//!
//! cniwasm_plugin_sdk::export_plugin!(Noop);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2`; the cdylib is
//! the component. Host calls are only available inside that component: on a
//! native target (unit tests) they panic, while [`logging`] prints to stderr.

mod config;
pub mod container;
mod dispatch;
mod host;
mod invocation;
pub mod logging;

/// Bindings generated from the host API WIT package `cniwasm:host@0.1.0`.
#[allow(missing_docs, clippy::all, reason = "generated code")]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../host-api/wit",
        world: "cni-plugin",
        pub_export_macro: true,
        default_bindings_module: "cniwasm_plugin_sdk::bindings",
    });
}

/// Settings that change nothing, so that a plugin names only the fields it
/// sets (`LinkSettings { up: Some(true), ..Default::default() }`) and keeps
/// building when the host API gains a field.
impl Default for bindings::cniwasm::host::link::LinkSettings {
    fn default() -> Self {
        Self {
            up: None,
            mtu: None,
            mac: None,
            master: None,
            hairpin: None,
            isolated: None,
            promisc: None,
            allmulti: None,
            tx_queue_len: None,
        }
    }
}

pub use bindings::cniwasm::host::types::{HostError, Netns};
pub use bindings::cniwasm::host::{
    address, dns, filter, ipam, ipam_store, link, nat, nft_nat, route, spoof_check, state, sysctl,
};
pub use cniwasm_types;
pub use cniwasm_types::{CniError, codes};
pub use config::{PluginConfig, validate_network_name};
pub use dispatch::{Adapter, AddOutput, Command, render_add_output};
pub use host::{
    HostResultExt, delegate_ipam_add, delegate_ipam_check, delegate_ipam_del, delegate_ipam_status,
    describe_host_error, from_wit_error, host_error, plugin_codes, to_wit_error,
};
pub use invocation::Invocation;

/// The CNI versions every plugin of this SDK reads and writes by default.
pub const ALL_VERSIONS: &[&str] = cniwasm_types::SUPPORTED_VERSIONS;

/// A CNI plugin. Each method receives the per-call parameters and the parsed
/// configuration, which the SDK has already validated.
pub trait Plugin {
    /// Versions the plugin accepts in `cniVersion`; the default is every
    /// version from 0.1.0 to 1.1.0.
    fn supported_versions() -> Vec<String> {
        ALL_VERSIONS.iter().map(|v| v.to_string()).collect()
    }

    /// Attaches the container. An [`AddOutput::Result`] is rendered in the
    /// configuration's `cniVersion` by the SDK.
    fn add(inv: &Invocation, config: &PluginConfig) -> Result<AddOutput, CniError>;

    /// Detaches the container. It must succeed when repeated and when the
    /// container's namespace is gone.
    fn del(inv: &Invocation, config: &PluginConfig) -> Result<(), CniError>;

    /// Verifies that the attachment is still as ADD left it. Called only for
    /// configurations of version 0.4.0 or later.
    fn check(inv: &Invocation, config: &PluginConfig) -> Result<(), CniError>;

    /// Reports whether the plugin can service ADD; succeeds by default.
    /// Called only for configurations of version 1.1.0 or later.
    fn status(_inv: &Invocation, _config: &PluginConfig) -> Result<(), CniError> {
        Ok(())
    }

    /// Releases resources of attachments absent from
    /// `cni.dev/valid-attachments`; does nothing by default. Called only for
    /// configurations of version 1.1.0 or later.
    fn gc(_inv: &Invocation, _config: &PluginConfig) -> Result<(), CniError> {
        Ok(())
    }
}

/// Exports a type implementing [`Plugin`] as the component's `cni-plugin`
/// world. Call it once per plugin crate, at the crate root.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        type __CniwasmExportedPlugin = $crate::Adapter<$plugin>;
        $crate::bindings::export!(__CniwasmExportedPlugin with_types_in $crate::bindings);
    };
}
