//! The per-call parameters of a CNI command.

use crate::bindings;

/// The values a CNI plugin receives as `CNI_*` environment variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invocation {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`, the interface name inside the container.
    pub ifname: String,
    /// `CNI_NETNS`, the namespace path; `None` when the runtime gave none,
    /// as in a DEL after the namespace was removed.
    pub netns: Option<String>,
    /// `CNI_ARGS` split into key/value pairs, in the order given.
    pub args: Vec<(String, String)>,
}

impl Invocation {
    /// Returns the value of `key` in `CNI_ARGS` (the first one when the key
    /// repeats). Keys match exactly, as the reference plugins match them.
    pub fn cni_arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }

    /// Returns the namespace path, or an empty string when there is none.
    pub fn netns_path(&self) -> &str {
        self.netns.as_deref().unwrap_or_default()
    }
}

impl From<bindings::cniwasm::host::types::Invocation> for Invocation {
    fn from(value: bindings::cniwasm::host::types::Invocation) -> Self {
        Self {
            container_id: value.container_id,
            ifname: value.ifname,
            netns: value.netns.filter(|path| !path.is_empty()),
            args: value.args,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cni_arg_finds_exact_key() {
        let inv = Invocation {
            args: vec![
                ("IgnoreUnknown".into(), "1".into()),
                ("IP".into(), "10.1.2.9".into()),
            ],
            ..Default::default()
        };
        assert_eq!(inv.cni_arg("IP"), Some("10.1.2.9"));
        assert_eq!(inv.cni_arg("ip"), None);
    }

    #[test]
    fn empty_netns_becomes_none() {
        let inv = Invocation::from(bindings::cniwasm::host::types::Invocation {
            container_id: "c".into(),
            ifname: "eth0".into(),
            netns: Some(String::new()),
            args: Vec::new(),
        });
        assert_eq!(inv.netns, None);
        assert_eq!(inv.netns_path(), "");
    }
}
