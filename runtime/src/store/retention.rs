//! How long a stream keeps its events.

/// What a purge of a stream may remove: its events older than an age, or
/// past a count, and, unless told otherwise, only those every consumer
/// group has acknowledged. With neither an age nor a count, nothing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamRetention {
    /// Events committed before this time (ms since the Unix epoch) may go.
    /// Events committed before the store kept commit times count as the
    /// oldest.
    pub committed_before_unix_ms: Option<u64>,
    /// All but the newest this many events may go.
    pub keep_last: Option<u64>,
    /// Keeps every event some consumer group has not acknowledged, whatever
    /// its age or place (the default); `false` lets the retention override
    /// the groups, which then lose what they had not read.
    pub keep_unacknowledged: bool,
}

impl StreamRetention {
    /// A retention by age and count (either may be `None`), keeping what a
    /// consumer group has not acknowledged.
    pub fn new(committed_before_unix_ms: Option<u64>, keep_last: Option<u64>) -> Self {
        Self { committed_before_unix_ms, keep_last, keep_unacknowledged: true }
    }

    /// The same retention, purging what consumer groups have not
    /// acknowledged as well.
    pub fn overriding_groups(self) -> Self {
        Self { keep_unacknowledged: false, ..self }
    }

    /// Whether it may remove anything at all.
    pub fn limits_anything(&self) -> bool {
        self.committed_before_unix_ms.is_some() || self.keep_last.is_some()
    }
}
