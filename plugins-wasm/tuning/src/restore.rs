//! The original values of the link attributes that tuning changes. ADD
//! saves them through the host's `state` interface before changing the
//! link, and DEL puts them back, as the reference plugin does with a file
//! under its `dataDir`.

use serde::{Deserialize, Serialize};

use cniwasm_plugin_sdk::link::{LinkInfo, LinkSettings};

use crate::config::TuningConfig;

/// The values a link had before ADD, for the attributes ADD changes only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Original {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// MTU in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promisc: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allmulti: Option<bool>,
    /// Transmit queue length in packets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_queue_len: Option<u32>,
}

impl Original {
    /// Picks from the link's current values those that `options` changes.
    pub fn of(info: &LinkInfo, options: &TuningConfig) -> Self {
        Self {
            mac: options.mac.as_ref().map(|_| info.mac.clone()),
            mtu: options.mtu.map(|_| info.mtu),
            promisc: options.promisc.then_some(info.promisc),
            allmulti: options.allmulti.map(|_| info.allmulti),
            tx_queue_len: options.tx_queue_len.map(|_| info.tx_queue_len),
        }
    }

    /// Returns the settings that put the saved values back.
    pub fn settings(&self) -> LinkSettings {
        LinkSettings {
            mac: self.mac.clone(),
            mtu: self.mtu,
            promisc: self.promisc,
            allmulti: self.allmulti,
            tx_queue_len: self.tx_queue_len,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::link_info;

    #[test]
    fn saves_only_changed_attributes() {
        let options = TuningConfig {
            mtu: Some(9000),
            tx_queue_len: Some(2000),
            ..Default::default()
        };
        let original = Original::of(&link_info(), &options);
        assert_eq!(
            original,
            Original {
                mtu: Some(1400),
                tx_queue_len: Some(1000),
                ..Default::default()
            }
        );
        let text = serde_json::to_string(&original).unwrap();
        assert_eq!(text, r#"{"mtu":1400,"txQueueLen":1000}"#);
        let settings = serde_json::from_str::<Original>(&text).unwrap().settings();
        assert_eq!(settings.mtu, Some(1400));
        assert_eq!(settings.tx_queue_len, Some(1000));
        assert_eq!(settings.mac, None);
        assert_eq!(settings.promisc, None);
    }

    #[test]
    fn saves_every_attribute() {
        let options = TuningConfig {
            mac: Some("c2:11:22:33:44:55".into()),
            mtu: Some(9000),
            promisc: true,
            allmulti: Some(false),
            tx_queue_len: Some(2000),
            ..Default::default()
        };
        let original = Original::of(&link_info(), &options);
        assert_eq!(original.mac.as_deref(), Some("c2:00:00:00:00:01"));
        assert_eq!(original.promisc, Some(true));
        assert_eq!(original.allmulti, Some(true));
    }
}
