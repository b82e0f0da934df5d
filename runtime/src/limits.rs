//! Per-instance resource limits: memory here; fuel and wall time are set on
//! the store by the executor.

use wasmtime::ResourceLimiter;

/// Limits the linear memory of one instance and remembers whether the limit
/// was what stopped it.
#[derive(Debug)]
pub(crate) struct InstanceLimiter {
    memory_limit_bytes: usize,
    pub(crate) peak_memory_bytes: usize,
    pub(crate) memory_limit_hit: bool,
}

/// The most table elements an instance may have.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl InstanceLimiter {
    pub(crate) fn new(memory_limit_bytes: usize) -> Self {
        Self { memory_limit_bytes, peak_memory_bytes: 0, memory_limit_hit: false }
    }

    /// Raises the memory limit of a running instance.
    #[allow(dead_code, reason = "used by resource grants of the predictor")]
    pub(crate) fn grant_memory(&mut self, memory_limit_bytes: usize) {
        self.memory_limit_bytes = self.memory_limit_bytes.max(memory_limit_bytes);
    }
}

impl ResourceLimiter for InstanceLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_limit_bytes {
            self.memory_limit_hit = true;
            return Err(wasmtime::format_err!(
                "memory limit reached: the instance asked for {desired} bytes, the limit is {}",
                self.memory_limit_bytes
            ));
        }
        self.peak_memory_bytes = self.peak_memory_bytes.max(desired);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
