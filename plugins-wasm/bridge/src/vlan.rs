//! The bridge port's VLANs: `vlan`, `vlanTrunk` and `preserveDefaultVlan`,
//! checked as the reference plugin checks them (cni-spec.md 6.1) and turned
//! into the host's `port-vlans` request.

use serde::Deserialize;

use cniwasm_plugin_sdk::link::{PortVlan, PortVlans};
use cniwasm_plugin_sdk::{CniError, codes};

/// The VLAN IDs a trunk may carry; 0 and 4095 are reserved by IEEE 802.1Q.
const TRUNK_IDS: std::ops::RangeInclusive<i64> = 1..=4094;

/// The native VLAN a trunk port gets when `vlan` is 0: the kernel's default
/// PVID.
const NATIVE_VLAN: u16 = 1;

/// One `vlanTrunk` entry as written: a single `id`, or `minID` and `maxID`.
/// The values stay signed so that a negative one gets the range message
/// rather than a type error.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawTrunk {
    id: Option<i64>,
    #[serde(rename = "minID")]
    min_id: Option<i64>,
    #[serde(rename = "maxID")]
    max_id: Option<i64>,
}

/// A checked trunk range of tagged VLANs, `min` to `max` inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrunkRange {
    pub min: u16,
    pub max: u16,
}

/// The port's VLAN options, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VlanConfig {
    /// The untagged PVID of the port; 0 for none.
    pub vlan: u16,
    /// Tagged VLANs, in the order written.
    pub trunk: Vec<TrunkRange>,
    /// Keep VLAN 1, which the kernel gives every new port, instead of
    /// removing it before adding the configured VLANs.
    pub preserve_default: bool,
}

/// The raw keys, as written in the configuration.
pub struct RawVlan<'a> {
    pub vlan: i64,
    pub trunk: &'a [RawTrunk],
    pub preserve_default: bool,
}

impl VlanConfig {
    /// Checks `vlan` (0 to 4094) and each trunk entry. Errors carry code
    /// 999, the code the reference plugin reports for them.
    pub fn parse(raw: &RawVlan<'_>) -> Result<Self, CniError> {
        let vlan = u16::try_from(raw.vlan)
            .ok()
            .filter(|vlan| *vlan <= 4094)
            .ok_or_else(|| {
                invalid(format!(
                    "invalid VLAN ID {} (must be between 0 and 4094)",
                    raw.vlan
                ))
            })?;

        let mut trunk = Vec::new();
        for entry in raw.trunk {
            trunk.extend(trunk_ranges(entry)?);
        }
        Ok(Self {
            vlan,
            trunk,
            preserve_default: raw.preserve_default,
        })
    }

    /// Tells whether the port carries VLANs, which needs `vlan_filtering`
    /// on the bridge.
    pub fn enabled(&self) -> bool {
        self.vlan != 0 || !self.trunk.is_empty()
    }

    /// Builds the host request: the trunk's tagged ranges, then the PVID
    /// (`vlan`, or native VLAN 1 for a trunk) untagged. The PVID goes last
    /// so that a trunk range that contains it cannot take its flags away.
    /// `None` when the port carries no VLANs.
    pub fn port_vlans(&self) -> Option<PortVlans> {
        if !self.enabled() {
            return None;
        }
        let mut vlans: Vec<PortVlan> = self
            .trunk
            .iter()
            .map(|range| PortVlan {
                min_id: range.min,
                max_id: range.max,
                pvid: false,
                untagged: false,
            })
            .collect();
        let pvid = if self.vlan != 0 {
            self.vlan
        } else {
            NATIVE_VLAN
        };
        vlans.push(PortVlan {
            min_id: pvid,
            max_id: pvid,
            pvid: true,
            untagged: true,
        });
        Some(PortVlans {
            remove_default: !self.preserve_default,
            vlans,
        })
    }
}

/// Checks one trunk entry: `minID` and `maxID` together, each from 1 to
/// 4094 and in order; `id` from 1 to 4094. An entry may hold both forms.
fn trunk_ranges(entry: &RawTrunk) -> Result<Vec<TrunkRange>, CniError> {
    let mut ranges = Vec::new();
    match (entry.min_id, entry.max_id) {
        (None, None) => {}
        (Some(min), Some(max)) => {
            let min = trunk_id(min, "minID")?;
            let max = trunk_id(max, "maxID")?;
            if min > max {
                return Err(invalid(format!(
                    "minID is greater than maxID in trunk parameter: {min} > {max}; swap them"
                )));
            }
            ranges.push(TrunkRange { min, max });
        }
        (min, max) => {
            return Err(invalid(format!(
                "minID and maxID should be configured simultaneously, got minID {min:?} and maxID {max:?}: set both, or use id for one VLAN"
            )));
        }
    }
    if let Some(id) = entry.id {
        let id = trunk_id(id, "id")?;
        ranges.push(TrunkRange { min: id, max: id });
    }
    Ok(ranges)
}

fn trunk_id(value: i64, key: &str) -> Result<u16, CniError> {
    match TRUNK_IDS.contains(&value) {
        true => Ok(value as u16),
        false => Err(invalid(format!(
            "incorrect trunk {key} parameter {value}: use a VLAN ID from 1 to 4094"
        ))),
    }
}

fn invalid(message: String) -> CniError {
    CniError::new(codes::INTERNAL, message)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn parse(vlan: i64, trunk: Value) -> Result<VlanConfig, CniError> {
        let trunk: Vec<RawTrunk> = serde_json::from_value(trunk).unwrap();
        VlanConfig::parse(&RawVlan {
            vlan,
            trunk: &trunk,
            preserve_default: false,
        })
    }

    #[test]
    fn vlan_range() {
        assert_eq!(parse(0, json!([])).unwrap().vlan, 0);
        assert_eq!(parse(4094, json!([])).unwrap().vlan, 4094);
        for bad in [-1, 4095, 70000] {
            let error = parse(bad, json!([])).unwrap_err();
            assert_eq!(error.code, 999);
            let expected = format!("invalid VLAN ID {bad} (must be between 0 and 4094)");
            assert_eq!(error.msg, expected);
        }
    }

    #[test]
    fn trunk_accepted() {
        let config = parse(0, json!([{"id": 101}, {"minID": 200, "maxID": 210}])).unwrap();
        let ranges = [(101, 101), (200, 210)].map(|(min, max)| TrunkRange { min, max });
        assert_eq!(config.trunk, ranges);
        assert!(config.enabled());
    }

    /// The reference's validation table (cni-spec.md 6.1): each entry and
    /// the start of its message.
    #[test]
    fn trunk_rejected() {
        let cases = [
            (json!({"id": 0}), "incorrect trunk id parameter"),
            (json!({"id": 4095}), "incorrect trunk id parameter"),
            (json!({"id": -1}), "incorrect trunk id parameter"),
            (
                json!({"minID": 0, "maxID": 5}),
                "incorrect trunk minID parameter",
            ),
            (
                json!({"minID": 5, "maxID": 4095}),
                "incorrect trunk maxID parameter",
            ),
            (
                json!({"minID": 6, "maxID": 5}),
                "minID is greater than maxID in trunk parameter",
            ),
            (json!({"minID": 5}), "minID and maxID should be configured"),
            (json!({"maxID": 5}), "minID and maxID should be configured"),
        ];
        for (entry, message) in cases {
            let error = parse(0, json!([entry])).unwrap_err();
            assert_eq!(error.code, 999, "{entry}");
            assert!(error.msg.starts_with(message), "{entry}: {}", error.msg);
        }
    }

    #[test]
    fn pvid_goes_last() {
        let config = parse(100, json!([{"minID": 99, "maxID": 101}])).unwrap();
        let spec = config.port_vlans().unwrap();
        assert!(spec.remove_default);
        let last = spec.vlans.last().unwrap();
        assert_eq!((last.min_id, last.pvid, last.untagged), (100, true, true));
        assert!(!spec.vlans[0].pvid);
        assert!(!spec.vlans[0].untagged);
    }

    #[test]
    fn trunk_gets_native_vlan() {
        let config = parse(0, json!([{"id": 101}])).unwrap();
        let spec = config.port_vlans().unwrap();
        let native = spec.vlans.last().unwrap();
        assert_eq!((native.min_id, native.max_id, native.pvid), (1, 1, true));
    }

    #[test]
    fn no_vlans_no_request() {
        let config = parse(0, json!([{}])).unwrap();
        assert!(!config.enabled());
        assert!(config.port_vlans().is_none());
    }
}
