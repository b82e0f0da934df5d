//! `txmirror:transaction/kv`: snapshot reads and a buffered write set.

use super::{InstanceState, MAX_VALUE_BYTES, MAX_WRITE_SET_BYTES};
use crate::instance::bindings::txmirror::transaction::kv::{Host, KvError};
use crate::policy::Access;
use crate::store::{ReadEntry, StateSnapshot, WriteEntry};
use crate::trace::{Effect, HostCall};
use crate::vocab::{Role, validate_name};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One instance's view of the store: the snapshot plus its own writes.
///
/// For the primary, the reads and writes become the commit's read and write
/// sets. For the mirror, the same structure is the private overlay that is
/// thrown away: the mirror reads its own writes, as the primary does, so it
/// follows the same control flow.
#[derive(Debug)]
pub(crate) struct KvView {
    snapshot: Arc<dyn StateSnapshot>,
    reads: BTreeMap<(String, String), u64>,
    writes: BTreeMap<(String, String), Option<Vec<u8>>>,
    written_bytes: usize,
}

impl KvView {
    pub(crate) fn new(snapshot: Arc<dyn StateSnapshot>) -> Self {
        Self { snapshot, reads: BTreeMap::new(), writes: BTreeMap::new(), written_bytes: 0 }
    }

    /// The read set, for optimistic validation at commit.
    pub(crate) fn read_set(&self) -> Vec<ReadEntry> {
        self.reads
            .iter()
            .map(|((namespace, key), version)| ReadEntry {
                namespace: namespace.clone(),
                key: key.clone(),
                version: *version,
            })
            .collect()
    }

    /// The write set, in key order.
    pub(crate) fn write_set(&self) -> Vec<WriteEntry> {
        self.writes
            .iter()
            .map(|((namespace, key), value)| WriteEntry {
                namespace: namespace.clone(),
                key: key.clone(),
                value: value.clone(),
            })
            .collect()
    }

    pub(crate) fn written_bytes(&self) -> usize {
        self.written_bytes
    }
}

fn check(state: &InstanceState, namespace: &str, key: &str, write: bool) -> Result<(), KvError> {
    validate_name(namespace).map_err(|reason| KvError::InvalidKey(format!("namespace {reason}")))?;
    validate_name(key).map_err(|reason| KvError::InvalidKey(format!("key {reason}")))?;
    match state.policy.kv_access(namespace) {
        None => Err(KvError::Denied(format!("the policy does not grant namespace `{namespace}`"))),
        Some(Access::Read) if write => {
            Err(KvError::Denied(format!("the policy grants namespace `{namespace}` read-only")))
        }
        Some(_) => Ok(()),
    }
}

fn storage_trap(err: crate::store::StoreError) -> wasmtime::Error {
    wasmtime::format_err!("the store failed during a read: {err}")
}

impl InstanceState {
    fn write_effect(&self) -> Effect {
        match self.role {
            Role::Primary => Effect::Buffered,
            Role::Mirror => Effect::Withheld,
        }
    }

    fn kv_write(&mut self, namespace: String, key: String, value: Option<Vec<u8>>) -> Result<(), KvError> {
        let bytes = value.as_ref().map(Vec::len);
        if let Err(error) = check(self, &namespace, &key, true) {
            let reason = format!("{error:?}");
            self.trace.record(HostCall::KvWrite { namespace, key, bytes, effect: Effect::Denied { reason } });
            return Err(error);
        }
        let size = bytes.unwrap_or(0);
        if size > MAX_VALUE_BYTES {
            return Err(KvError::TooLarge(format!("{size} bytes; a value may have {MAX_VALUE_BYTES}")));
        }
        if self.kv.written_bytes + size + key.len() > MAX_WRITE_SET_BYTES {
            return Err(KvError::TooLarge(format!("the transaction's writes exceed {MAX_WRITE_SET_BYTES} bytes")));
        }
        self.kv.written_bytes += size + key.len();
        let effect = self.write_effect();
        self.trace.record(HostCall::KvWrite { namespace: namespace.clone(), key: key.clone(), bytes, effect });
        if let Some(claims) = &self.write_claims {
            claims.claim(&namespace, &key);
        }
        self.kv.writes.insert((namespace, key), value);
        Ok(())
    }
}

impl Host for InstanceState {
    async fn get(&mut self, namespace: String, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, KvError>> {
        let at = self.trace.now_micros();
        if let Err(error) = check(self, &namespace, &key, false) {
            self.trace.record_since(at, HostCall::KvGet { namespace, key, version: None });
            return Ok(Err(error));
        }
        let id = (namespace, key);
        if let Some(value) = self.kv.writes.get(&id) {
            let value = value.clone();
            self.trace.record_since(at, HostCall::KvGet { namespace: id.0, key: id.1, version: None });
            return Ok(Ok(value));
        }
        let found = self.kv.snapshot.get_async(&id.0, &id.1).await.map_err(storage_trap)?;
        let version = found.as_ref().map_or(0, |v| v.version);
        // The first version read is the one the commit validates.
        self.kv.reads.entry(id.clone()).or_insert(version);
        self.trace.record_since(at, HostCall::KvGet { namespace: id.0, key: id.1, version: Some(version) });
        Ok(Ok(found.map(|v| v.value)))
    }

    fn put(&mut self, namespace: String, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), KvError>> {
        Ok(self.kv_write(namespace, key, Some(value)))
    }

    fn delete(&mut self, namespace: String, key: String) -> wasmtime::Result<Result<(), KvError>> {
        Ok(self.kv_write(namespace, key, None))
    }

    fn scan(
        &mut self,
        namespace: String,
        prefix: String,
        limit: u32,
    ) -> wasmtime::Result<Result<Vec<(String, Vec<u8>)>, KvError>> {
        let at = self.trace.now_micros();
        if let Err(reason) = validate_name(&namespace) {
            return Ok(Err(KvError::InvalidKey(format!("namespace {reason}"))));
        }
        if self.policy.kv_access(&namespace).is_none() {
            return Ok(Err(KvError::Denied(format!("the policy does not grant namespace `{namespace}`"))));
        }
        let limit = usize::try_from(limit).unwrap_or(usize::MAX).min(10_000);
        // Read one more entry per buffered write, so that buffered deletions
        // cannot shorten the page.
        let buffered: Vec<_> =
            self.kv.writes.iter().filter(|((ns, key), _)| ns == &namespace && key.starts_with(&prefix)).collect();
        let stored = self.kv.snapshot.scan(&namespace, &prefix, limit + buffered.len()).map_err(storage_trap)?;
        let mut merged: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        let mut versions = Vec::with_capacity(stored.len());
        for (key, versioned) in stored {
            versions.push((key.clone(), versioned.version));
            merged.insert(key, Some(versioned.value));
        }
        for ((_, key), value) in buffered {
            merged.insert(key.clone(), value.clone());
        }
        for (key, version) in versions {
            self.kv.reads.entry((namespace.clone(), key)).or_insert(version);
        }
        let entries: Vec<(String, Vec<u8>)> =
            merged.into_iter().filter_map(|(key, value)| value.map(|value| (key, value))).take(limit).collect();
        self.trace.record_since(at, HostCall::KvScan { namespace, prefix, returned: entries.len() });
        Ok(Ok(entries))
    }
}
