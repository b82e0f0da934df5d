//! A storage backend that fails on command, for crash and fault injection.
//!
//! [`FaultInjectingBackend`] wraps redb's file backend. A [`FaultPlan`] lets
//! a test say "the Nth write from now tears and the machine dies": that
//! write lands half-way, and every write, resize and sync after it fails, as
//! if the process had lost power. Reopening the file with a fresh store then
//! shows what a real crash would have left on disk.

use redb::StorageBackend;
use redb::backends::FileBackend;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// When the backend should fail. Shared between a test and its backend.
#[derive(Debug, Default)]
pub struct FaultPlan {
    /// Writes left before the crash; `u64::MAX` means never.
    writes_left: AtomicU64,
    crashed: AtomicBool,
    writes_seen: AtomicU64,
}

impl FaultPlan {
    /// A plan that never fails.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            writes_left: AtomicU64::new(u64::MAX),
            crashed: AtomicBool::new(false),
            writes_seen: AtomicU64::new(0),
        })
    }

    /// Crash on the `n`th write from now (0 = the very next one).
    pub fn crash_after_writes(&self, n: u64) {
        self.writes_left.store(n, Ordering::SeqCst);
    }

    /// Whether the crash has happened.
    pub fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    /// Writes performed so far (torn one included).
    pub fn writes_seen(&self) -> u64 {
        self.writes_seen.load(Ordering::SeqCst)
    }

    fn check_alive(&self) -> io::Result<()> {
        if self.crashed() { Err(io::Error::other("injected crash: the machine is down")) } else { Ok(()) }
    }
}

/// redb's file backend, with injected crashes.
#[derive(Debug)]
pub struct FaultInjectingBackend {
    inner: FileBackend,
    plan: Arc<FaultPlan>,
}

impl FaultInjectingBackend {
    /// Wraps the file at `path`, creating it if needed.
    pub fn open(path: &std::path::Path, plan: Arc<FaultPlan>) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let inner = FileBackend::new(file).map_err(io::Error::other)?;
        Ok(Self { inner, plan })
    }
}

impl StorageBackend for FaultInjectingBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.plan.check_alive()?;
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.plan.check_alive()?;
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.plan.check_alive()?;
        self.plan.writes_seen.fetch_add(1, Ordering::SeqCst);
        let left = self.plan.writes_left.load(Ordering::SeqCst);
        if left == 0 {
            // A torn write: half of it reaches the disk, then the power goes.
            self.plan.crashed.store(true, Ordering::SeqCst);
            self.inner.write(offset, &data[..data.len() / 2])?;
            return Err(io::Error::other("injected crash during write"));
        }
        if left != u64::MAX {
            self.plan.writes_left.store(left - 1, Ordering::SeqCst);
        }
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }
}
