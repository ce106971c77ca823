//! The policy's checks before a plugin runs at all: its digest, when the
//! policy pins one, and the host interfaces it imports. Both are enforced in
//! every mode, since a plugin that fails them never reaches a host call that
//! could be audited instead.

use cniwasm_host_api::audit::{AuditContext, AuditLog, PluginCallRecord};
use cniwasm_host_api::policy::{PluginPolicy, Verdict};

use crate::engine::{LoadedPlugin, PluginEngine, host_imports};
use crate::error::Error;

/// Checks `plugin` against its policy entry; a rejection is audited and
/// returned as [`Error::PluginRejected`].
pub(crate) fn admit(
    engine: &PluginEngine,
    plugin_type: &str,
    plugin: &LoadedPlugin,
    policy: &PluginPolicy,
    audit: (&AuditLog, &AuditContext),
) -> Result<(), Error> {
    let reason = rejection(engine, plugin, policy);
    let Some(reason) = reason else { return Ok(()) };

    let (log, context) = audit;
    let mut context = context.clone();
    context.plugin = plugin_type.to_string();
    context.digest = format!("sha256:{}", plugin.digest);
    log.plugin_call(
        &context,
        &PluginCallRecord {
            outcome: "rejected".into(),
            message: reason.clone(),
            wall_time_us: 0,
            peak_memory_bytes: 0,
            host_calls: 0,
            denials: 1,
            would_denials: 0,
        },
    );
    Err(Error::PluginRejected {
        plugin_type: plugin_type.to_string(),
        path: plugin.path.display().to_string(),
        reason,
    })
}

fn rejection(
    engine: &PluginEngine,
    plugin: &LoadedPlugin,
    policy: &PluginPolicy,
) -> Option<String> {
    let digest = format!("sha256:{}", plugin.digest);
    if let Some(pinned) = &policy.digest
        && pinned != &digest
    {
        return Some(format!(
            "its digest is {digest} but the policy pins {pinned} (rule digest)"
        ));
    }

    for interface in host_imports(engine.engine(), &plugin.component) {
        let decision = policy.check_import(&interface);
        if decision.verdict == Verdict::Deny {
            return Some(format!("{} (rule imports)", decision.reason));
        }
    }
    None
}
