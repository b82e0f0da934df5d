//! Per-instance resource limits: memory here; fuel and wall time are set on
//! the store by the executor.

use crate::adjust::grants::ResourceWatch;
use crate::trace::{HostCall, TraceRecorder};
use crate::vocab::Role;
use std::sync::Arc;
use wasmtime::ResourceLimiterAsync;

/// Limits the linear memory of one instance, remembers whether the limit
/// was what stopped it, and, in a mirrored attempt, grants the primary the
/// memory its mirror showed it needs.
#[derive(Debug)]
pub(crate) struct InstanceLimiter {
    pub(crate) memory_limit_bytes: usize,
    pub(crate) peak_memory_bytes: usize,
    pub(crate) memory_limit_hit: bool,
    /// Set in mirrored attempts: the twin's needs, the ceiling, the trace.
    grants: Option<MemoryGrants>,
}

#[derive(Debug)]
struct MemoryGrants {
    role: Role,
    watch: Arc<ResourceWatch>,
    ceiling_bytes: usize,
    trace: TraceRecorder,
}

/// The most table elements an instance may have.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl InstanceLimiter {
    pub(crate) fn new(memory_limit_bytes: usize) -> Self {
        Self { memory_limit_bytes, peak_memory_bytes: 0, memory_limit_hit: false, grants: None }
    }

    /// A limiter for one twin of a mirrored attempt: the mirror gets the
    /// ceiling and publishes its growth; the primary may be granted up to it.
    pub(crate) fn mirrored(
        memory_limit_bytes: usize,
        ceiling_bytes: usize,
        role: Role,
        watch: Arc<ResourceWatch>,
        trace: TraceRecorder,
    ) -> Self {
        let limit = if role == Role::Mirror { ceiling_bytes } else { memory_limit_bytes };
        Self { grants: Some(MemoryGrants { role, watch, ceiling_bytes, trace }), ..Self::new(limit) }
    }

    fn refuse(&mut self, desired: usize) -> wasmtime::Result<bool> {
        self.memory_limit_hit = true;
        Err(wasmtime::format_err!(
            "memory limit reached: the instance asked for {desired} bytes, the limit is {}",
            self.memory_limit_bytes
        ))
    }
}

#[async_trait::async_trait]
impl ResourceLimiterAsync for InstanceLimiter {
    async fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit_bytes {
            let Some(grants) = &self.grants else { return self.refuse(desired) };
            let (role, watch, ceiling, trace) =
                (grants.role, grants.watch.clone(), grants.ceiling_bytes, grants.trace.clone());
            if role != Role::Primary || desired > ceiling {
                return self.refuse(desired);
            }
            // Has the mirror needed as much? Wait for it to get there.
            let wanted = desired as u64;
            watch.wait_for(|w| w.mirror_memory() >= wanted).await;
            let needed = watch.mirror_memory();
            if needed < wanted {
                return self.refuse(desired);
            }
            let from = self.memory_limit_bytes;
            let to = ceiling.min(usize::try_from(needed).unwrap_or(usize::MAX));
            trace.record(HostCall::Grant {
                resource: "memory".into(),
                from: from as u64,
                to: to as u64,
                mirror_needed: needed,
            });
            self.memory_limit_bytes = to;
        }
        self.peak_memory_bytes = self.peak_memory_bytes.max(desired);
        if let Some(grants) = &self.grants
            && grants.role == Role::Mirror
        {
            grants.watch.publish_memory(desired as u64);
        }
        Ok(true)
    }

    async fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
