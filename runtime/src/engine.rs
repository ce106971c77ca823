//! The wasmtime engine, the linker every plugin is instantiated with, and the
//! on-disk cache of compiled components.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine};

use crate::sandbox::PluginState;

/// How often the epoch advances. Deadlines are whole multiples of it.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("failed to set up the wasm engine: {0}")]
    Setup(String),
    #[error("failed to read plugin {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to compile plugin {}: {reason}", path.display())]
    Compile { path: PathBuf, reason: String },
}

/// A compiled plugin, with the SHA-256 digest of its `.wasm` file.
#[derive(Clone)]
pub struct LoadedPlugin {
    pub component: Component,
    pub digest: String,
    pub path: PathBuf,
}

pub struct PluginEngine {
    engine: Engine,
    linker: Linker<PluginState>,
    /// Directory of compiled components; `None` compiles on every load.
    compile_cache: Option<PathBuf>,
}

impl PluginEngine {
    pub fn new(compile_cache: Option<PathBuf>) -> Result<Arc<Self>, EngineError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        let engine = Engine::new(&config).map_err(|error| EngineError::Setup(error.to_string()))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|error| EngineError::Setup(error.to_string()))?;
        cniwasm_host_api::plugin_host::add_to_linker(&mut linker, |state: &mut PluginState| {
            &mut state.host
        })
        .map_err(|error| EngineError::Setup(error.to_string()))?;

        start_epoch_ticker(&engine);
        Ok(Arc::new(Self {
            engine,
            linker,
            compile_cache,
        }))
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn linker(&self) -> &Linker<PluginState> {
        &self.linker
    }

    /// Loads a plugin, compiling it only when the cache has no artifact for
    /// this file's digest and this engine's settings.
    pub fn load(&self, path: &Path) -> Result<LoadedPlugin, EngineError> {
        let wasm = std::fs::read(path).map_err(|source| EngineError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let digest = hex::encode(Sha256::digest(&wasm));

        let component = match &self.compile_cache {
            Some(dir) => self.load_cached(dir, &digest, &wasm, path)?,
            None => {
                Component::new(&self.engine, &wasm).map_err(|error| compile_error(path, error))?
            }
        };
        Ok(LoadedPlugin {
            component,
            digest,
            path: path.to_path_buf(),
        })
    }

    fn load_cached(
        &self,
        dir: &Path,
        digest: &str,
        wasm: &[u8],
        path: &Path,
    ) -> Result<Component, EngineError> {
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(&self.engine.precompile_compatibility_hash(), &mut hasher);
        let key = std::hash::Hasher::finish(&hasher);
        let artifact = dir.join(format!("{digest}-{key:016x}.cwasm"));

        if artifact.is_file() {
            // SAFETY: the artifact was written by `precompile_component` of an
            // engine with the same compatibility hash (part of the file name),
            // into a cache directory that only this runtime writes.
            match unsafe { Component::deserialize_file(&self.engine, &artifact) } {
                Ok(component) => return Ok(component),
                Err(error) => {
                    tracing::warn!(artifact = %artifact.display(), %error, "ignoring unreadable compiled plugin")
                }
            }
        }

        let compiled = self
            .engine
            .precompile_component(wasm)
            .map_err(|error| compile_error(path, error))?;
        if let Err(error) = write_atomically(dir, &artifact, &compiled) {
            tracing::warn!(artifact = %artifact.display(), %error, "failed to cache compiled plugin");
        }

        // SAFETY: `compiled` was produced just now by this engine.
        unsafe { Component::deserialize(&self.engine, &compiled) }
            .map_err(|error| compile_error(path, error))
    }
}

/// Lists the `cniwasm:host` interfaces a component imports, by short name (`link`,
/// `nat`, ...). WASI imports are not listed: the host links them but grants
/// nothing through them.
pub fn host_imports(engine: &Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .imports(engine)
        .filter_map(|(name, _)| {
            let interface = name.strip_prefix("cniwasm:host/")?;
            let interface = interface.split('@').next().unwrap_or(interface);
            (interface != "types").then(|| interface.to_string())
        })
        .collect()
}

/// Lists the functions a component exports, by name.
pub fn exports(engine: &Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect()
}

fn compile_error(path: &Path, error: wasmtime::Error) -> EngineError {
    EngineError::Compile {
        path: path.to_path_buf(),
        reason: format!("{error:#}"),
    }
}

/// Writes through a temporary file and a rename, so concurrent runtimes never
/// read a half-written artifact.
fn write_atomically(dir: &Path, target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut file, bytes)?;
    file.persist(target).map_err(|error| error.error)?;
    Ok(())
}

/// Advances the engine's epoch every [`EPOCH_TICK`] from a background thread,
/// which ends with the process.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("cniwasm-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning a thread only fails when the process is out of resources");
}
