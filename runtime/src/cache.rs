//! The result cache, in libcni's layout and format so that tools reading
//! `<cache dir>/results/<network>-<container id>-<ifname>` see the same files
//! whichever runtime wrote them.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

const KIND: &str = "cniCacheV1";

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("failed to write result cache {}: {source}; set CNIWASM_CACHE_DIR to a writable directory", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to read result cache {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid result cache {}: {reason}; run DEL, which tolerates it, then ADD again", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("failed to remove result cache {}: {source}", path.display())]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One cached attachment (the `cniCacheV1` object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedAttachment {
    pub kind: String,
    #[serde(rename = "containerId")]
    pub container_id: String,
    /// The configuration list's bytes, base64-encoded as Go encodes `[]byte`.
    pub config: String,
    #[serde(rename = "ifName")]
    pub ifname: String,
    #[serde(rename = "networkName")]
    pub network_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub netns: String,
    #[serde(rename = "cniArgs", default, skip_serializing_if = "Vec::is_empty")]
    pub cni_args: Vec<(String, String)>,
    #[serde(
        rename = "capabilityArgs",
        default,
        skip_serializing_if = "Map::is_empty"
    )]
    pub capability_args: Map<String, Value>,
    #[serde(default)]
    pub result: Value,
}

/// The key of a cache file.
#[derive(Debug, Clone, Copy)]
pub struct CacheKey<'a> {
    pub network: &'a str,
    pub container_id: &'a str,
    pub ifname: &'a str,
}

pub fn cache_path(cache_dir: &Path, key: CacheKey<'_>) -> PathBuf {
    cache_dir.join("results").join(format!(
        "{}-{}-{}",
        key.network, key.container_id, key.ifname
    ))
}

/// Parameters of [`write`].
pub struct CacheEntry<'a> {
    pub key: CacheKey<'a>,
    pub config_bytes: &'a [u8],
    pub netns: &'a str,
    pub cni_args: &'a [(String, String)],
    pub capability_args: &'a Map<String, Value>,
    pub result: &'a Value,
}

/// Writes the entry through a temporary file and a rename, so a crash never
/// leaves a half-written cache file. Directory mode 0700, file mode 0600.
pub fn write(cache_dir: &Path, entry: &CacheEntry<'_>) -> Result<PathBuf, CacheError> {
    let path = cache_path(cache_dir, entry.key);
    let cached = CachedAttachment {
        kind: KIND.to_string(),
        container_id: entry.key.container_id.to_string(),
        config: base64::engine::general_purpose::STANDARD.encode(entry.config_bytes),
        ifname: entry.key.ifname.to_string(),
        network_name: entry.key.network.to_string(),
        netns: entry.netns.to_string(),
        cni_args: entry.cni_args.to_vec(),
        capability_args: entry.capability_args.clone(),
        result: entry.result.clone(),
    };
    let bytes = serde_json::to_vec(&cached).expect("a cache entry always serialises");

    let write_error = |source| CacheError::Write {
        path: path.clone(),
        source,
    };
    let dir = path.parent().expect("cache paths have a parent");
    create_private_dir(dir).map_err(write_error)?;

    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(write_error)?;
    std::io::Write::write_all(&mut file, &bytes).map_err(write_error)?;
    file.persist(&path)
        .map_err(|error| write_error(error.error))?;
    Ok(path)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Reads a cached attachment; `Ok(None)` when there is no cache file.
pub fn read(cache_dir: &Path, key: CacheKey<'_>) -> Result<Option<CachedAttachment>, CacheError> {
    let path = cache_path(cache_dir, key);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CacheError::Read { path, source }),
    };

    let value: Value = serde_json::from_slice(&bytes).map_err(|error| CacheError::Corrupt {
        path: path.clone(),
        reason: error.to_string(),
    })?;
    if value.get("kind").and_then(Value::as_str) != Some(KIND) {
        // A legacy cache file holds only the result.
        return Ok(Some(CachedAttachment {
            kind: String::new(),
            container_id: key.container_id.to_string(),
            config: String::new(),
            ifname: key.ifname.to_string(),
            network_name: key.network.to_string(),
            netns: String::new(),
            cni_args: Vec::new(),
            capability_args: Map::new(),
            result: value,
        }));
    }

    serde_json::from_value(value)
        .map(Some)
        .map_err(|error| CacheError::Corrupt {
            path,
            reason: error.to_string(),
        })
}

/// Lists the attachments of `network` cached in `cniCacheV1` form, in file
/// name order. Unreadable files are skipped with a warning, as libcni skips them.
pub fn list_attachments(cache_dir: &Path, network: &str) -> Vec<CachedAttachment> {
    let dir = cache_dir.join("results");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut names: Vec<PathBuf> = entries
        .filter_map(|entry| Some(entry.ok()?.path()))
        .collect();
    names.sort();

    let mut attachments = Vec::new();
    for path in names {
        let parsed = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<CachedAttachment>(&bytes).ok());
        match parsed {
            Some(cached)
                if cached.kind == KIND
                    && cached.network_name == network
                    && !cached.ifname.is_empty() =>
            {
                attachments.push(cached)
            }
            Some(_) => {}
            None => tracing::warn!(path = %path.display(), "skipping unreadable result cache"),
        }
    }
    attachments
}

/// Removes the cache file; a missing file is not an error.
pub fn remove(cache_dir: &Path, key: CacheKey<'_>) -> Result<(), CacheError> {
    let path = cache_path(cache_dir, key);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CacheError::Remove { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: CacheKey<'static> = CacheKey {
        network: "mynet",
        container_id: "abc",
        ifname: "eth0",
    };

    #[test]
    fn write_then_read_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut capability_args = Map::new();
        capability_args.insert("portMappings".into(), json!([{"hostPort": 9090}]));
        let entry = CacheEntry {
            key: KEY,
            config_bytes: b"{\"name\":\"mynet\"}",
            netns: "/run/netns/x",
            cni_args: &[("IP".into(), "10.0.0.2".into())],
            capability_args: &capability_args,
            result: &json!({"cniVersion": "0.3.0"}),
        };
        let path = write(dir.path(), &entry).unwrap();
        assert_eq!(path, dir.path().join("results/mynet-abc-eth0"));

        let cached = read(dir.path(), KEY).unwrap().unwrap();
        assert_eq!(cached.kind, "cniCacheV1");
        assert_eq!(cached.config, "eyJuYW1lIjoibXluZXQifQ==");
        assert_eq!(cached.capability_args, capability_args);
        assert_eq!(
            cached.cni_args,
            vec![("IP".to_string(), "10.0.0.2".to_string())]
        );
        assert_eq!(cached.result, json!({"cniVersion": "0.3.0"}));
    }

    /// Writes an entry with no arguments and an empty result.
    fn write_empty(cache_dir: &Path) -> Result<PathBuf, CacheError> {
        let entry = CacheEntry {
            key: KEY,
            config_bytes: b"{}",
            netns: "",
            cni_args: &[],
            capability_args: &Map::new(),
            result: &json!({}),
        };
        write(cache_dir, &entry)
    }

    #[test]
    fn file_and_directory_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = write_empty(dir.path()).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
    }

    #[test]
    fn missing_file_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path(), KEY).unwrap().is_none());
        remove(dir.path(), KEY).unwrap();
    }

    #[test]
    fn truncated_file_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("results")).unwrap();
        std::fs::write(cache_path(dir.path(), KEY), "{\"kind\":\"cniCa").unwrap();
        assert!(matches!(
            read(dir.path(), KEY),
            Err(CacheError::Corrupt { .. })
        ));
    }

    #[test]
    fn write_below_file_fails() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "not a directory").unwrap();

        let error = write_empty(&blocker.join("cache")).unwrap_err();

        assert!(matches!(error, CacheError::Write { .. }), "{error}");
        let message = error.to_string();
        assert!(
            message.contains(&blocker.display().to_string()),
            "{message}"
        );
        assert!(message.contains("CNIWASM_CACHE_DIR"), "{message}");
    }
}
