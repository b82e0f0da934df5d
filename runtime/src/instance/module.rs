//! Modules: validated, pre-initialised, compiled once and cached by content hash.

use crate::instance::bindings::{Transaction, TransactionPre};
use crate::instance::host::InstanceState;
use std::path::{Path, PathBuf};
use wasmtime::component::{Component, Linker, types::ComponentItem};
use wasmtime::{Engine, Store};

/// What wasmtime (or the file system) said when a module was refused, kept
/// as the [`ModuleError`]'s source.
pub type ModuleCause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a module was refused. Where wasmtime or the file system said why,
/// that error is the variant's [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModuleError {
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly file: {0}")]
    NotWasm(String),
    /// A core module, not a component.
    #[error(
        "this is a core WebAssembly module, not a component: build the guest for `wasm32-wasip2` \
         (or wrap it with `wasm-tools component new`) so that it targets the txmirror:transaction world"
    )]
    CoreModule,
    /// The component is malformed or uses features the engine does not allow.
    #[error("invalid component")]
    Invalid(#[source] ModuleCause),
    /// The component does not target the `txmirror:transaction` world.
    #[error("the component does not target the txmirror:transaction world")]
    WorldMismatch(#[source] ModuleCause),
    /// The component imports interfaces no policy grants (another
    /// package's, say): each of them, by name.
    #[error(
        "the module imports what no policy grants: {}; a module may import the txmirror:transaction \
         interfaces, wasi:io, wasi:clocks, wasi:random, wasi:cli (its output is traced), wasi:filesystem \
         (which reaches only the policy's directories), wasi:sockets (linked closed: every socket is refused) \
         and wasi:http's types and outgoing handler (which \
         reach only the policy's hosts)",
        .0.join(", ")
    )]
    ImportsNotGranted(Vec<String>),
    /// The `init` export trapped or could not be snapshotted.
    #[error("pre-initialisation (`init`) failed")]
    Preinit(#[source] ModuleCause),
    /// The `paths` export trapped or could not be called.
    #[error("cannot list the module's paths")]
    Paths(#[source] ModuleCause),
    /// The `paths` export returned no path, or a name that is not valid.
    #[error("the module's paths are not usable: {0}")]
    BadPaths(String),
    /// The compiled-artifact cache could not be used.
    #[error("cannot use the compile cache at {path}")]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A module ready to run: compiled, linked, and its paths known.
#[derive(Clone)]
pub struct Module {
    hash: String,
    paths: Vec<String>,
    preinitialized: bool,
    imports: Vec<String>,
    pub(crate) pre: TransactionPre<InstanceState>,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("hash", &self.hash)
            .field("paths", &self.paths)
            .field("preinitialized", &self.preinitialized)
            .finish_non_exhaustive()
    }
}

impl Module {
    /// The BLAKE3 hash of the uploaded bytes, hex.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The module's paths; the first is the default.
    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    /// Whether `init` ran at load time and its memory was snapshotted.
    pub fn is_preinitialized(&self) -> bool {
        self.preinitialized
    }

    /// The interfaces the module imports (`txmirror:transaction/kv@…`,
    /// `wasi:http/outgoing-handler@…`): what it could ask for, which its
    /// policy grants or denies.
    pub fn imports(&self) -> &[String] {
        &self.imports
    }
}

/// Fuel for running `init` and `paths` at load time.
const PREINIT_FUEL: u64 = 10_000_000_000;

const WASM_MAGIC: &[u8; 4] = b"\0asm";
const CORE_VERSION: [u8; 4] = [1, 0, 0, 0];
const COMPONENT_VERSION: [u8; 4] = [0x0d, 0, 1, 0];

/// Tells a component from a core module or anything else, by its header.
fn check_header(bytes: &[u8]) -> Result<(), ModuleError> {
    if bytes.len() < 8 || &bytes[..4] != WASM_MAGIC {
        let hint = if bytes.starts_with(b"(component") || bytes.starts_with(b"(module") {
            "this looks like the text format (WAT); compile it to binary first"
        } else {
            "it does not start with the `\\0asm` magic number"
        };
        return Err(ModuleError::NotWasm(hint.to_string()));
    }
    match [bytes[4], bytes[5], bytes[6], bytes[7]] {
        CORE_VERSION => Err(ModuleError::CoreModule),
        COMPONENT_VERSION => Ok(()),
        other => Err(ModuleError::NotWasm(format!("unknown WebAssembly version/layer {other:02x?}"))),
    }
}

/// The interfaces a module may import, by prefix. The linker holds all of
/// WASI 0.2; anything else it holds (another package, another interface of
/// `wasi:http`) is refused. `wasi:filesystem`, `wasi:cli` and
/// `wasi:sockets` are what every standard library built on wasi-libc
/// imports, whether it uses them or not: the host preopens only the
/// policy's directories, traces the guest's output, and links sockets
/// closed (every attempt refused and traced, see `host/sockets.rs`).
const GRANTABLE_IMPORTS: [&str; 9] = [
    "txmirror:transaction/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:cli/",
    "wasi:filesystem/",
    "wasi:sockets/",
    "wasi:http/types@",
    "wasi:http/outgoing-handler@",
];

/// Refuses a component that imports an interface no policy grants, naming
/// each one.
fn check_imports(engine: &Engine, component: &Component) -> Result<(), ModuleError> {
    let refused: Vec<String> = component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .filter(|name| !GRANTABLE_IMPORTS.iter().any(|prefix| name.starts_with(prefix)))
        .collect();
    if refused.is_empty() { Ok(()) } else { Err(ModuleError::ImportsNotGranted(refused)) }
}

pub(crate) struct ModuleLoader<'a> {
    pub(crate) engine: &'a Engine,
    pub(crate) linker: &'a Linker<InstanceState>,
    pub(crate) cache_dir: &'a Path,
    pub(crate) new_state: &'a (dyn Fn() -> InstanceState + Send + Sync),
}

impl ModuleLoader<'_> {
    pub(crate) async fn load(&self, bytes: &[u8]) -> Result<Module, ModuleError> {
        check_header(bytes)?;
        let hash = blake3::hash(bytes).to_hex().to_string();
        let compat = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            self.engine.precompile_compatibility_hash().hash(&mut hasher);
            hasher.finish()
        };
        let cache_file = self.cache_dir.join(format!("{hash}-{compat:016x}.cwasm"));

        let (component, preinitialized) = match self.read_cache(&cache_file)? {
            Some(component) => {
                check_imports(self.engine, &component)?;
                let preinitialized = exports_init(self.engine, &component);
                (component, preinitialized)
            }
            None => {
                let mut compiled = precompile(self.engine, bytes)?;
                let mut component = deserialize(self.engine, &compiled)?;
                // Before `init` runs any of the module's code.
                check_imports(self.engine, &component)?;
                let preinitialized = exports_init(self.engine, &component);
                if preinitialized {
                    let snapshot = self.preinitialize(bytes).await?;
                    compiled = precompile(self.engine, &snapshot)?;
                    component = deserialize(self.engine, &compiled)?;
                }
                self.write_cache(&cache_file, &compiled)?;
                (component, preinitialized)
            }
        };

        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| ModuleError::WorldMismatch(e.into()))?;
        let pre = TransactionPre::new(instance_pre).map_err(|e| ModuleError::WorldMismatch(e.into()))?;
        let paths = self.list_paths(&pre).await?;
        let imports = component.component_type().imports(self.engine).map(|(name, _)| name.to_string()).collect();
        Ok(Module { hash, paths, preinitialized, imports, pre })
    }

    fn read_cache(&self, file: &Path) -> Result<Option<Component>, ModuleError> {
        // Read into memory rather than map the file: a mapped cache entry
        // that someone truncates would crash the process with SIGBUS.
        let compiled = match std::fs::read(file) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(ModuleError::Cache { path: file.to_path_buf(), source }),
        };
        // SAFETY: the file was written by `write_cache` from the output of
        // `Engine::precompile_component` of an engine with the same
        // compatibility hash (it is part of the name), into the runtime's
        // own cache directory, and renamed into place only when complete.
        // wasmtime checks its header and version before using it.
        #[allow(unsafe_code)]
        let loaded = unsafe { Component::deserialize(self.engine, &compiled) };
        match loaded {
            Ok(component) => Ok(Some(component)),
            Err(error) => {
                // A damaged cache entry is not the module's fault: recompile.
                tracing::warn!(file = %file.display(), "ignoring unreadable cache entry: {error:#}");
                let _ = std::fs::remove_file(file);
                Ok(None)
            }
        }
    }

    fn write_cache(&self, file: &Path, compiled: &[u8]) -> Result<(), ModuleError> {
        let cache_error = |source| ModuleError::Cache { path: file.to_path_buf(), source };
        std::fs::create_dir_all(self.cache_dir).map_err(cache_error)?;
        // A partial file of its own, renamed into place when complete: two
        // loads of one module at once (in one process or two) each write
        // theirs, and the last rename wins with the same bytes.
        let mut partial = tempfile::NamedTempFile::new_in(self.cache_dir).map_err(cache_error)?;
        std::io::Write::write_all(&mut partial, compiled).map_err(cache_error)?;
        partial.persist(file).map_err(|error| cache_error(error.error))?;
        Ok(())
    }

    async fn preinitialize(&self, bytes: &[u8]) -> Result<Vec<u8>, ModuleError> {
        let mut store = Store::new(self.engine, (self.new_state)());
        store.set_fuel(PREINIT_FUEL).map_err(|e| ModuleError::Preinit(e.into()))?;
        store.epoch_deadline_async_yield_and_update(1);
        let linker = self.linker;
        let (snapshot, _) = wasmtime_wizer::Wizer::new()
            .init_func("init")
            .keep_init_func(true)
            .run_component(&mut store, bytes, async |store, component| linker.instantiate_async(store, component).await)
            .await
            .map_err(|e| ModuleError::Preinit(e.into()))?;
        Ok(snapshot)
    }

    async fn list_paths(&self, pre: &TransactionPre<InstanceState>) -> Result<Vec<String>, ModuleError> {
        let mut store = Store::new(self.engine, (self.new_state)());
        store.set_fuel(PREINIT_FUEL).map_err(|e| ModuleError::Paths(e.into()))?;
        store.epoch_deadline_async_yield_and_update(1);
        let instance: Transaction =
            pre.instantiate_async(&mut store).await.map_err(|e| ModuleError::Paths(e.into()))?;
        let paths = instance.call_paths(&mut store).await.map_err(|e| ModuleError::Paths(e.into()))?;
        if paths.is_empty() {
            return Err(ModuleError::BadPaths("the module exports no paths".into()));
        }
        if let Some(bad) = paths.iter().find(|p| crate::vocab::validate_name(p).is_err()) {
            return Err(ModuleError::BadPaths(format!("invalid path name {bad:?}")));
        }
        Ok(paths)
    }
}

fn precompile(engine: &Engine, bytes: &[u8]) -> Result<Vec<u8>, ModuleError> {
    engine.precompile_component(bytes).map_err(|e| ModuleError::Invalid(e.into()))
}

fn deserialize(engine: &Engine, compiled: &[u8]) -> Result<Component, ModuleError> {
    // SAFETY: `compiled` was produced a moment ago by
    // `Engine::precompile_component` of this very engine.
    #[allow(unsafe_code)]
    let component = unsafe { Component::deserialize(engine, compiled) };
    component.map_err(|e| ModuleError::Invalid(e.into()))
}

fn exports_init(engine: &Engine, component: &Component) -> bool {
    component
        .component_type()
        .exports(engine)
        .any(|(name, item)| name == "init" && matches!(item.ty, ComponentItem::ComponentFunc(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_told_apart() {
        assert!(matches!(check_header(b"hello world"), Err(ModuleError::NotWasm(_))));
        assert!(matches!(check_header(b"(module)"), Err(ModuleError::NotWasm(m)) if m.contains("text format")));
        assert!(matches!(check_header(b"\0asm\x01\0\0\0"), Err(ModuleError::CoreModule)));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
        assert!(matches!(check_header(b"\0asm\x02\0\0\0"), Err(ModuleError::NotWasm(_))));
    }
}
