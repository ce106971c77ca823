use std::cmp::Ordering;

/// The CNI specification versions whose results cniwasm reads and writes.
pub const SUPPORTED_VERSIONS: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CNI version {0:?}: expected MAJOR[.MINOR[.PATCH]] with integer parts")]
pub struct VersionError(pub String);

/// A parsed CNI version. An empty string means 0.1.0, as in the reference
/// library.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl Version {
    pub fn parse(text: &str) -> Result<Self, VersionError> {
        if text.is_empty() {
            return Ok(Self {
                major: 0,
                minor: 1,
                patch: 0,
            });
        }

        let parts: Vec<&str> = text.split('.').collect();
        if parts.len() > 3 {
            return Err(VersionError(text.to_string()));
        }

        let mut numbers = [0u64; 3];
        for (slot, part) in numbers.iter_mut().zip(&parts) {
            *slot = part.parse().map_err(|_| VersionError(text.to_string()))?;
        }
        Ok(Self {
            major: numbers[0],
            minor: numbers[1],
            patch: numbers[2],
        })
    }
}

/// Compares two version strings; errors on a malformed one.
pub fn compare_versions(a: &str, b: &str) -> Result<Ordering, VersionError> {
    Ok(Version::parse(a)?.cmp(&Version::parse(b)?))
}

/// Tells whether `version` is at least `minimum`. A malformed version counts
/// as lower than any valid one.
pub fn version_at_least(version: &str, minimum: &str) -> bool {
    matches!(
        compare_versions(version, minimum),
        Ok(Ordering::Greater | Ordering::Equal)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_version_is_0_1_0() {
        assert_eq!(
            Version::parse("").unwrap(),
            Version::parse("0.1.0").unwrap()
        );
    }

    #[test]
    fn short_versions_fill_zeroes() {
        assert_eq!(
            Version::parse("1").unwrap(),
            Version::parse("1.0.0").unwrap()
        );
        assert_eq!(
            Version::parse("0.4").unwrap(),
            Version::parse("0.4.0").unwrap()
        );
    }

    #[test]
    fn malformed_versions_rejected() {
        assert!(Version::parse("1.0.0.0").is_err());
        assert!(Version::parse("1.x").is_err());
        assert!(Version::parse("v1").is_err());
    }

    #[test]
    fn ordering_is_numeric() {
        assert!(version_at_least("0.10.0", "0.4.0"));
        assert!(!version_at_least("0.3.1", "0.4.0"));
        assert!(version_at_least("1.0.0", "1.0.0"));
    }
}
