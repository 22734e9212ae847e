//! The deterministic WebAssembly task runtime (wasmtime, WASI preview 1).
//!
//! Determinism: NaN canonicalization, no threads, relaxed SIMD off, no GC or stack
//! switching, a fixed wall clock, a monotonic clock that advances one microsecond per
//! reading, and randomness from a seeded deterministic stream. Fuel is the
//! deterministic measure of work; its check in compiled code traps when the fuel is
//! gone (askee's patch to wasmtime, vendor/README.md), so all of a run's fuel is
//! given at once ([`MAX_FUEL`]). The wall-clock limit is a [`Watchdog`]: an epoch
//! ticker for modules run in-process, the sandbox parent's kill-all for the worker
//! (whose compiled code then carries no epoch checks, the larger metering cost). Linear
//! memory growth is capped by a [`ResourceLimiter`] (a refused `memory.grow` returns -1
//! to the guest, it does not trap); a write past the stdout cap traps.

use std::collections::HashMap;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::{
    Config, Engine, InstancePre, Linker, Module, OptLevel, ResourceLimiter, Store, Trap,
};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{
    Deterministic, FsPerms, HostMonotonicClock, HostWallClock, I32Exit, WasiCtxBuilder,
};

use crate::digest::sha256;
use crate::types::{KillReason, Limits, OutputFile, WasmEnd, WasmRun};

/// How a guest past its wall-clock limit is stopped. Part of the engine
/// configuration: artifacts compiled for one do not load in the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Watchdog {
    /// The compiled code checks an epoch at every loop header and function
    /// entry and the engine stops the guest itself: for modules run
    /// in-process. Costs more than fuel metering (the sieve benchmark
    /// runs at 0.48x native with it, 0.72x without: the epoch check calls into
    /// the runtime, which costs loops their registers).
    Epoch,
    /// No check in the compiled code: the process running the guest is
    /// stopped from outside. The sandbox's worker runs this way; its parent
    /// kills the task's whole cgroup at the wall-clock limit (frozen time
    /// excluded), which a guest cannot evade.
    External,
}

/// The most fuel a run is given; a larger limit is this one. wasmtime injects at
/// most this much at once and keeps the rest in a reserve, and the vendored fuel
/// check (vendor/README.md) traps rather than refuel from it, so all of a task's
/// fuel must be injected at once. At a billion units a second it lasts 292 years.
pub const MAX_FUEL: u64 = i64::MAX as u64;

/// The fuel a run with `limits` is given.
fn fuel_given(limits: &Limits) -> u64 {
    limits.fuel.min(MAX_FUEL)
}

/// Our changes to wasmtime's code generation (vendor/README.md), part of the
/// artifact cache key: code compiled before a change is compiled again.
const CODEGEN_PATCHES: &str = "fuel-check-traps";

/// Epoch tick length of the wall-clock watchdog.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Errors of the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The engine could not be created.
    #[error("creating wasmtime engine: {0}")]
    Engine(String),
    /// The module failed validation or compilation.
    #[error("compiling module {hash}: {message}")]
    Compile {
        /// Content hash (hex).
        hash: String,
        /// Cause.
        message: String,
    },
    /// A precompiled artifact could not be written or loaded.
    #[error("module cache file {path}: {message}")]
    Cache {
        /// File.
        path: PathBuf,
        /// Cause.
        message: String,
    },
    /// The WASI context could not be built (e.g. a preopen failed).
    #[error("setting up wasi for the task: {0}")]
    Wasi(String),
    /// Instantiation failed.
    #[error("instantiating module {hash}: {message}")]
    Instantiate {
        /// Content hash (hex).
        hash: String,
        /// Cause.
        message: String,
    },
    /// Reading the output directory failed.
    #[error("reading outputs under {path}: {source}")]
    Outputs {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// The engine configuration every replica uses. Changing it changes compiled artifacts
/// (their cache key includes the engine's compatibility hash). The watchdog changes
/// only how a run is stopped, never its result or the fuel it consumes.
pub fn deterministic_config(watchdog: Watchdog) -> Config {
    let mut c = Config::new();
    // Threads: wasmtime is built without its `threads` feature, so shared memories and
    // atomics-wait are rejected at validation.
    c.cranelift_nan_canonicalization(true)
        .wasm_relaxed_simd(false)
        .relaxed_simd_deterministic(true)
        .wasm_gc(false)
        .wasm_stack_switching(false)
        .consume_fuel(true)
        .epoch_interruption(watchdog == Watchdog::Epoch)
        .max_wasm_stack(1 << 20)
        .cranelift_opt_level(OptLevel::Speed)
        .memory_init_cow(true)
        .parallel_compilation(true);
    c
}

/// Per-store state.
pub struct TaskState {
    wasi: WasiP1Ctx,
    limiter: MemoryLimiter,
    ticks_left: u64,
    stopped: Option<KillReason>,
}

/// Standard output with a hard cap: once it is full, the next write traps the
/// guest. The plain pipe answers an error the guest may ignore and spin on, which
/// only a watchdog would stop.
#[derive(Clone)]
struct CappedStdout(MemoryOutputPipe);

/// The marker of a trap from [`CappedStdout`].
const STDOUT_FULL: &str = "stdout limit reached";

impl IsTerminal for CappedStdout {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedStdout {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(CappedStream(self.0.clone()))
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        self.0.async_stream()
    }
}

struct CappedStream(MemoryOutputPipe);

#[async_trait::async_trait]
impl Pollable for CappedStream {
    async fn ready(&mut self) {}
}

impl OutputStream for CappedStream {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        self.0.write(bytes)
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        self.0.flush()
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        match self.0.check_write() {
            Err(StreamError::Closed) => {
                Err(StreamError::Trap(wasmtime::format_err!("{STDOUT_FULL}")))
            }
            other => other,
        }
    }
}

struct MemoryLimiter {
    max_bytes: usize,
    refused: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.refused = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// Wall clock that always reads 2000-01-01T00:00:00Z.
struct FixedWallClock;

impl HostWallClock for FixedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::from_secs(946_684_800)
    }
}

/// Monotonic clock that advances one microsecond per reading.
struct SteppingClock(AtomicU64);

impl HostMonotonicClock for SteppingClock {
    fn resolution(&self) -> u64 {
        1_000
    }
    fn now(&self) -> u64 {
        self.0.fetch_add(1_000, Ordering::Relaxed)
    }
}

/// A module compiled for the deterministic engine, pre-linked against WASI.
pub struct CompiledModule {
    hash: [u8; 32],
    pre: InstancePre<TaskState>,
}

impl CompiledModule {
    /// SHA-256 of the module bytes.
    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }
}

/// What a task invocation gets.
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    /// `argv[1..]`.
    pub args: Vec<String>,
    /// stdin bytes.
    pub stdin: Vec<u8>,
    /// Host directory preopened read-only as `/input`.
    pub input_dir: Option<PathBuf>,
    /// Host directory preopened read-write as `/output`; its files are the outputs.
    pub output_dir: Option<PathBuf>,
    /// Seed of the deterministic randomness.
    pub random_seed: [u8; 32],
    /// Limits (memory, fuel, wall time, stdout and storage are used here).
    pub limits: Limits,
}

/// The engine plus the module cache (in memory, and on disk when a directory is given).
pub struct WasmEngine {
    engine: Engine,
    linker: Linker<TaskState>,
    cache_dir: Option<PathBuf>,
    modules: Mutex<HashMap<[u8; 32], Arc<CompiledModule>>>,
    watchdog: Watchdog,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for WasmEngine {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl WasmEngine {
    /// Create the engine, its WASI linker and, for [`Watchdog::Epoch`], the epoch ticker
    /// thread. `cache_dir`, when given, stores precompiled artifacts keyed by module hash
    /// and engine compatibility.
    pub fn new(cache_dir: Option<PathBuf>, watchdog: Watchdog) -> Result<Self, RuntimeError> {
        let engine = Engine::new(&deterministic_config(watchdog))
            .map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut TaskState| &mut s.wasi)
            .map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        if watchdog == Watchdog::Epoch {
            let (e2, stop) = (engine.clone(), ticker_stop.clone());
            std::thread::Builder::new()
                .name("askee-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        // A timer, not synchronisation: each tick advances the epoch.
                        std::thread::sleep(EPOCH_TICK);
                        e2.increment_epoch();
                    }
                })
                .map_err(|e| RuntimeError::Engine(format!("spawning epoch ticker: {e}")))?;
        }
        if let Some(d) = &cache_dir {
            fs::create_dir_all(d).map_err(|e| RuntimeError::Cache {
                path: d.clone(),
                message: e.to_string(),
            })?;
        }
        Ok(WasmEngine {
            engine,
            linker,
            cache_dir,
            modules: Mutex::new(HashMap::new()),
            watchdog,
            ticker_stop,
        })
    }

    /// The underlying engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn compat_tag(&self) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        CODEGEN_PATCHES.hash(&mut h);
        format!("{:016x}", h.finish())
    }

    /// Path of the precompiled artifact for a module hash.
    pub fn artifact_path(&self, hash: &[u8; 32]) -> Option<PathBuf> {
        self.cache_dir
            .as_ref()
            .map(|d| d.join(format!("{}-{}.cwasm", hex::encode(hash), self.compat_tag())))
    }

    /// Compile (or fetch from cache) a module given as binary or text bytes.
    pub fn compile(&self, bytes: &[u8]) -> Result<Arc<CompiledModule>, RuntimeError> {
        let hash = sha256(bytes);
        if let Some(m) = self.lock().get(&hash) {
            return Ok(m.clone());
        }
        let module = match self.artifact_path(&hash) {
            Some(p) if p.exists() => self.load_artifact(&p)?,
            other => {
                let m = Module::new(&self.engine, bytes).map_err(|e| RuntimeError::Compile {
                    hash: hex::encode(hash),
                    message: format!("{e:#}"),
                })?;
                if let Some(p) = other {
                    let ser = m.serialize().map_err(|e| RuntimeError::Cache {
                        path: p.clone(),
                        message: format!("{e:#}"),
                    })?;
                    // One temporary file per writer: jobs compiling the same
                    // module at once must not rename each other's file away.
                    static WRITERS: std::sync::atomic::AtomicU64 =
                        std::sync::atomic::AtomicU64::new(0);
                    let tmp = p.with_extension(format!(
                        "{}.{}.tmp",
                        std::process::id(),
                        WRITERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    ));
                    fs::write(&tmp, ser)
                        .and_then(|()| fs::rename(&tmp, &p))
                        .map_err(|e| RuntimeError::Cache {
                            path: p.clone(),
                            message: e.to_string(),
                        })?;
                }
                m
            }
        };
        let compiled = Arc::new(self.prelink(hash, &module)?);
        self.lock().insert(hash, compiled.clone());
        Ok(compiled)
    }

    /// Load a precompiled artifact written by [`WasmEngine::compile`].
    pub fn load_artifact(&self, path: &Path) -> Result<Module, RuntimeError> {
        // SAFETY: artifacts are only ever written by `compile` above (serialized by this
        // engine configuration) into the agent's private cache directory; wasmtime also
        // checks the compatibility header before using the code.
        unsafe { Module::deserialize_file(&self.engine, path) }.map_err(|e| RuntimeError::Cache {
            path: path.to_path_buf(),
            message: format!("{e:#}"),
        })
    }

    /// Load a precompiled artifact from memory (the sandboxed worker reads the file
    /// before it pivots into its empty root).
    pub fn load_artifact_bytes(&self, bytes: &[u8]) -> Result<Module, RuntimeError> {
        // SAFETY: the bytes are an artifact the parent serialized with this engine
        // configuration (see `load_artifact`); wasmtime checks its header.
        unsafe { Module::deserialize(&self.engine, bytes) }.map_err(|e| RuntimeError::Cache {
            path: PathBuf::from("<memory>"),
            message: format!("{e:#}"),
        })
    }

    /// Pre-link a loaded module against WASI.
    pub fn prelink(&self, hash: [u8; 32], module: &Module) -> Result<CompiledModule, RuntimeError> {
        let pre = self
            .linker
            .instantiate_pre(module)
            .map_err(|e| RuntimeError::Instantiate {
                hash: hex::encode(hash),
                message: format!("{e:#}"),
            })?;
        Ok(CompiledModule { hash, pre })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Arc<CompiledModule>>> {
        self.modules.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Instantiate a compiled module in a fresh store and return the store and instance
    /// without running it (used to measure instantiation).
    pub fn instantiate(
        &self,
        module: &CompiledModule,
        inv: &Invocation,
    ) -> Result<
        (
            Store<TaskState>,
            wasmtime::Instance,
            MemoryOutputPipe,
            MemoryOutputPipe,
        ),
        RuntimeError,
    > {
        let stdout = MemoryOutputPipe::new(inv.limits.stdout_bytes.min(usize::MAX as u64) as usize);
        let stderr = MemoryOutputPipe::new(64 << 10);
        let mut b = WasiCtxBuilder::new();
        let mut argv = vec!["task".to_string()];
        argv.extend(inv.args.iter().cloned());
        b.args(&argv)
            .stdin(MemoryInputPipe::new(inv.stdin.clone()))
            .stdout(CappedStdout(stdout.clone()))
            .stderr(stderr.clone())
            .wall_clock(FixedWallClock)
            .monotonic_clock(SteppingClock(AtomicU64::new(0)))
            .secure_random(Deterministic::new(inv.random_seed.to_vec()))
            .insecure_random(Deterministic::new(sha256(&inv.random_seed).to_vec()))
            .insecure_random_seed(u128::from_le_bytes(
                inv.random_seed[..16].try_into().unwrap_or([0; 16]),
            ))
            .allow_blocking_current_thread(true);
        if let Some(d) = &inv.input_dir {
            b.preopened_dir(d, "/input", FsPerms::ReadOnly)
                .map_err(|e| RuntimeError::Wasi(format!("preopen {}: {e:#}", d.display())))?;
        }
        if let Some(d) = &inv.output_dir {
            b.preopened_dir(d, "/output", FsPerms::ReadWrite)
                .map_err(|e| RuntimeError::Wasi(format!("preopen {}: {e:#}", d.display())))?;
        }
        let ticks = (inv.limits.wall_time.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
        let state = TaskState {
            ticks_left: ticks,
            stopped: None,
            wasi: b.build_p1(),
            limiter: MemoryLimiter {
                max_bytes: inv.limits.memory_bytes.min(usize::MAX as u64) as usize,
                refused: false,
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store
            .set_fuel(fuel_given(&inv.limits))
            .map_err(|e| RuntimeError::Wasi(format!("setting fuel: {e:#}")))?;
        if self.watchdog == Watchdog::Epoch {
            // Every tick: stop a guest past its wall-clock limit.
            store.set_epoch_deadline(1);
            store.epoch_deadline_callback(|mut ctx| {
                let s = ctx.data_mut();
                if s.ticks_left == 0 {
                    s.stopped = Some(KillReason::WallTime);
                    return Err(wasmtime::format_err!("wall-clock limit reached"));
                }
                s.ticks_left -= 1;
                Ok(wasmtime::UpdateDeadline::Continue(1))
            });
        }
        let instance =
            module
                .pre
                .instantiate(&mut store)
                .map_err(|e| RuntimeError::Instantiate {
                    hash: hex::encode(module.hash),
                    message: format!("{e:#}"),
                })?;
        Ok((store, instance, stdout, stderr))
    }

    /// Run a module's `_start` to its end.
    pub fn run(&self, module: &CompiledModule, inv: &Invocation) -> Result<WasmRun, RuntimeError> {
        let started = Instant::now();
        let (mut store, instance, stdout, stderr) = self.instantiate(module, inv)?;
        let result = instance
            .get_typed_func::<(), ()>(&mut store, "_start")
            .and_then(|f| f.call(&mut store, ()));
        let fuel_left = store.get_fuel().unwrap_or(0);
        let refused_memory = store.data().limiter.refused;
        let stdout_full = result.as_ref().is_err_and(|e| {
            stdout.contents().len() as u64 >= inv.limits.stdout_bytes
                || format!("{e:?}").contains(STDOUT_FULL)
        });
        let stopped = store.data().stopped;
        let mut end = match result {
            Ok(()) => WasmEnd::Exited(0),
            Err(_) if stdout_full => WasmEnd::OutputTruncated,
            Err(_) if stopped.is_some() => WasmEnd::Killed(stopped.unwrap_or(KillReason::WallTime)),
            Err(e) => {
                if let Some(exit) = e.downcast_ref::<I32Exit>() {
                    WasmEnd::Exited(exit.0)
                } else if let Some(trap) = e.downcast_ref::<Trap>() {
                    match trap {
                        Trap::OutOfFuel => WasmEnd::Killed(KillReason::Fuel),
                        Trap::Interrupt => WasmEnd::Killed(KillReason::WallTime),
                        _ if refused_memory => WasmEnd::Killed(KillReason::Memory),
                        _ => WasmEnd::Trapped(format!("{e:#}")),
                    }
                } else {
                    let msg = format!("{e:?}");
                    if msg.contains("beyond capacity of MemoryOutputPipe") {
                        WasmEnd::OutputTruncated
                    } else if refused_memory {
                        WasmEnd::Killed(KillReason::Memory)
                    } else {
                        WasmEnd::Trapped(format!("{e:#}"))
                    }
                }
            }
        };
        drop(store);
        let outputs = match &inv.output_dir {
            Some(d) => collect_outputs(d)?,
            None => Vec::new(),
        };
        let stored: u64 = outputs.iter().map(|f| f.contents.len() as u64).sum();
        let full = inv
            .output_dir
            .as_deref()
            .and_then(crate::sys::available_bytes)
            .is_some_and(|a| a < 8192);
        if stored > inv.limits.storage_bytes || (full && !matches!(end, WasmEnd::Exited(0))) {
            end = WasmEnd::Killed(KillReason::Storage);
        }
        tracing::debug!(hash = %hex::encode(module.hash), elapsed = ?started.elapsed(), ?end, "module run");
        Ok(WasmRun {
            end,
            stdout: stdout.contents().to_vec(),
            stderr: stderr.contents().to_vec(),
            outputs,
            fuel_consumed: fuel_given(&inv.limits).saturating_sub(fuel_left),
        })
    }
}

/// Read every regular file under `dir` (symbolic links are not followed), sorted by
/// `/`-separated relative path.
pub fn collect_outputs(dir: &Path) -> Result<Vec<OutputFile>, RuntimeError> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, prefix)) = stack.pop() {
        let rd = fs::read_dir(&d).map_err(|source| RuntimeError::Outputs {
            path: d.clone(),
            source,
        })?;
        for entry in rd {
            let entry = entry.map_err(|source| RuntimeError::Outputs {
                path: d.clone(),
                source,
            })?;
            let ft = entry.file_type().map_err(|source| RuntimeError::Outputs {
                path: entry.path(),
                source,
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            if ft.is_dir() {
                stack.push((entry.path(), rel));
            } else if ft.is_file() {
                let contents = fs::read(entry.path()).map_err(|source| RuntimeError::Outputs {
                    path: entry.path(),
                    source,
                })?;
                out.push(OutputFile {
                    path: rel,
                    contents,
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(out)
}
