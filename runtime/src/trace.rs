//! Traces: what an instance asked of its host, and when.
//!
//! Every host call of the mirror (and of the primary, for comparison and for
//! the latency history) is recorded as a [`TraceEvent`]. A trace ends with
//! the fuel the instance burnt and the memory it grew to.

use crate::vocab::{FailureKind, GateStage, GateVerdict, Role};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// What became of a call that would change something.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// Buffered in the primary's write set, to be committed at the end.
    Buffered,
    /// Kept in the mirror's private overlay and thrown away.
    Withheld,
    /// Refused, with the reason given to the guest.
    Denied {
        /// Why.
        reason: String,
    },
}

/// What became of an outbound HTTP request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum HttpOutcome {
    /// Sent, and answered with this status.
    Answered {
        /// The status code.
        status: u16,
        /// Size of the response body.
        response_bytes: usize,
        /// The wait a `429` or `503` asked for with `Retry-After`, in
        /// milliseconds: the next attempt waits at least this long.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// Sent, but it failed or timed out.
    Failed {
        /// Why.
        error: String,
    },
    /// Not sent (an unsafe request of the mirror); answered by a stub.
    Stubbed {
        /// The status of the stub.
        status: u16,
        /// Where the stub came from: `policy`, `last-response` or `synthesised`.
        source: String,
    },
    /// Refused: the policy does not grant the host.
    Denied {
        /// Why.
        reason: String,
    },
    /// Not sent: the host's circuit breaker is open (its calls failed too
    /// often in a row), or its one trial call is out.
    ShortCircuited {
        /// The host and port.
        host: String,
        /// How long until a trial call may go, in milliseconds.
        opens_in_ms: u64,
    },
    /// Not sent again: an earlier attempt of the transaction sent this call
    /// and it succeeded, so it is answered from the effect journal.
    Replayed {
        /// The recorded status.
        status: u16,
        /// Size of the recorded body.
        response_bytes: usize,
    },
}

/// One host call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
#[non_exhaustive]
pub enum HostCall {
    /// `kv.get`.
    KvGet {
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
        /// Version seen (0 if absent); `None` if denied or served from the write set.
        version: Option<u64>,
    },
    /// `kv.put` or `kv.delete` (`bytes` is `None` for a delete).
    KvWrite {
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
        /// Size of the new value; `None` for a delete.
        bytes: Option<usize>,
        /// What became of it.
        effect: Effect,
    },
    /// `kv.scan`.
    KvScan {
        /// Namespace.
        namespace: String,
        /// Prefix.
        prefix: String,
        /// Entries returned.
        returned: usize,
    },
    /// `events.emit`.
    Emit {
        /// Stream.
        stream: String,
        /// Payload size.
        bytes: usize,
        /// What became of it.
        effect: Effect,
    },
    /// An outbound HTTP request.
    Http {
        /// Method.
        method: String,
        /// URL.
        url: String,
        /// Whether the method is safe (GET, HEAD).
        safe: bool,
        /// The request body's size in bytes: measured for the mirror's
        /// stubbed requests, as `Content-Length` declares it otherwise;
        /// `None` if unknown (streamed without a length).
        #[serde(default)]
        request_bytes: Option<u64>,
        /// What became of it.
        outcome: HttpOutcome,
    },
    /// A file opened through a preopened directory.
    FileOpen {
        /// The path, relative to its preopen.
        path: String,
        /// Whether the open asked for writing, creating or truncating.
        write: bool,
        /// `None` if opened; the error code if refused.
        error: Option<String>,
    },
    /// A change to a granted directory other than opening a file: unlink,
    /// rename, mkdir, rmdir, link, symlink or set-times.
    FileChange {
        /// What was asked (`unlink`, `rename`…).
        op: String,
        /// The path it named (`from -> to` for a rename, `link -> target`
        /// for a link).
        path: String,
        /// `None` if done; the error code if refused.
        error: Option<String>,
    },
    /// An attempt to open a socket or look a name up: always refused
    /// (see `instance/host/sockets.rs`).
    Socket {
        /// `tcp`, `udp` or `name-lookup`.
        op: String,
        /// The address family asked for, or the name looked up.
        detail: String,
        /// The error code the guest was answered with.
        error: String,
    },
    /// A validation issue reported by the guest.
    Validation {
        /// Field.
        field: String,
        /// Message.
        message: String,
    },
    /// A log line.
    Log {
        /// Level.
        level: String,
        /// Message.
        message: String,
    },
    /// What the guest wrote to its standard output or error, recorded once
    /// when the instance ends (bounded: see `instance/host/output.rs`).
    Output {
        /// `stdout` or `stderr`.
        stream: String,
        /// What was kept, as text.
        text: String,
        /// How many bytes past the bound were dropped.
        #[serde(default)]
        dropped_bytes: u64,
    },
    /// The effect gate, before one of the primary's unsafe calls.
    Gate {
        /// How long the primary waited for the mirror, in microseconds.
        waited_micros: u64,
        /// Whether it stopped waiting at the gate's timeout.
        timed_out: bool,
        /// The failure probability of the mirror's trace so far.
        failure_probability: f32,
        /// The rules that held.
        reasons: Vec<String>,
        /// What the gate decided.
        decision: GateVerdict,
        /// What the gate stood before (traces older than this field were
        /// all written before unsafe calls).
        #[serde(default)]
        before: GateStage,
    },
    /// More of a resource granted to the running primary.
    Grant {
        /// `fuel`.
        resource: String,
        /// The limit before.
        from: u64,
        /// The limit after.
        to: u64,
        /// What the mirror had burnt when the grant was made.
        mirror_needed: u64,
    },
    /// `config.get`.
    Config {
        /// Key.
        key: String,
        /// Whether the policy sets it.
        found: bool,
    },
}

impl HostCall {
    /// Whether the guest made this call: not the runtime's own record of
    /// what it did to the instance (the gate's decisions, grants).
    pub fn is_guest_call(&self) -> bool {
        !matches!(self, Self::Gate { .. } | Self::Grant { .. })
    }

    /// Whether this call would change the world outside the instance.
    pub fn is_effect(&self) -> bool {
        match self {
            Self::KvWrite { .. } | Self::Emit { .. } => true,
            Self::Http { safe, .. } => !safe,
            Self::FileOpen { write, .. } => *write,
            Self::FileChange { .. } => true,
            _ => false,
        }
    }
}

/// A host call with its timing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceEvent {
    /// When the call started, in microseconds since the instance started.
    pub at_micros: u64,
    /// How long it took, in microseconds.
    pub duration_micros: u64,
    /// The call.
    #[serde(flatten)]
    pub call: HostCall,
}

/// The complete trace of one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// Which twin.
    pub role: Role,
    /// Host calls in the order they started.
    pub events: Vec<TraceEvent>,
    /// Fuel burnt.
    pub fuel_consumed: u64,
    /// The largest linear memory reached, in bytes.
    pub memory_peak_bytes: u64,
    /// Wall time of the instance, in microseconds.
    pub duration_micros: u64,
    /// How the instance ended, for a person to read.
    pub ended: String,
    /// What the path returned, if it returned (lossy UTF-8).
    pub output: Option<String>,
    /// Why the instance failed, if it did.
    pub failure: Option<FailureKind>,
}

impl Trace {
    /// A one-line-per-call summary for a person.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} trace: {} host calls, {} fuel, {} KiB peak memory, {} µs, ended: {}",
            self.role,
            self.events.len(),
            self.fuel_consumed,
            self.memory_peak_bytes / 1024,
            self.duration_micros,
            self.ended
        );
        for event in &self.events {
            let _ = writeln!(out, "  {:>8} µs  {}", event.at_micros, describe(&event.call));
        }
        out
    }
}

fn describe_effect(effect: &Effect) -> String {
    match effect {
        Effect::Buffered => "buffered".into(),
        Effect::Withheld => "withheld (mirror overlay)".into(),
        Effect::Denied { reason } => format!("denied: {reason}"),
    }
}

fn describe(call: &HostCall) -> String {
    match call {
        HostCall::KvGet { namespace, key, version } => match version {
            Some(0) => format!("kv.get {namespace}/{key} → absent"),
            Some(v) => format!("kv.get {namespace}/{key} → version {v}"),
            None => format!("kv.get {namespace}/{key} → from own writes or denied"),
        },
        HostCall::KvWrite { namespace, key, bytes, effect } => match bytes {
            Some(b) => format!("kv.put {namespace}/{key} ({b} B) → {}", describe_effect(effect)),
            None => format!("kv.delete {namespace}/{key} → {}", describe_effect(effect)),
        },
        HostCall::KvScan { namespace, prefix, returned } => {
            format!("kv.scan {namespace}/{prefix}* → {returned} entries")
        }
        HostCall::Emit { stream, bytes, effect } => format!("emit {stream} ({bytes} B) → {}", describe_effect(effect)),
        HostCall::Http { method, url, outcome, .. } => {
            let outcome = match outcome {
                HttpOutcome::Answered { status, response_bytes, .. } => {
                    format!("sent, answered {status} ({response_bytes} B)")
                }
                HttpOutcome::Failed { error } => format!("sent, failed: {error}"),
                HttpOutcome::Stubbed { status, source } => format!("NOT sent, stub {status} ({source})"),
                HttpOutcome::Denied { reason } => format!("denied: {reason}"),
                HttpOutcome::ShortCircuited { host, opens_in_ms } => {
                    format!("NOT sent: the circuit breaker of {host} is open (a trial in {opens_in_ms} ms)")
                }
                HttpOutcome::Replayed { status, response_bytes } => {
                    format!("NOT sent again, {status} from the effect journal ({response_bytes} bytes)")
                }
            };
            format!("http {method} {url} → {outcome}")
        }
        HostCall::FileChange { op, path, error } => match error {
            None => format!("file {op} {path}"),
            Some(error) => format!("file {op} {path} refused: {error}"),
        },
        HostCall::FileOpen { path, write, error } => {
            let mode = if *write { "write" } else { "read" };
            match error {
                None => format!("file open {path} for {mode} → ok"),
                Some(e) => format!("file open {path} for {mode} → refused: {e}"),
            }
        }
        HostCall::Socket { op, detail, error } => format!("socket {op} {detail} refused: {error}"),
        HostCall::Validation { field, message } => format!("validation issue {field}: {message}"),
        HostCall::Log { level, message } => format!("log {level}: {message}"),
        HostCall::Output { stream, text, dropped_bytes } => {
            let more = if *dropped_bytes > 0 { format!(" (and {dropped_bytes} bytes more)") } else { String::new() };
            format!("{stream}: {}{more}", text.trim_end())
        }
        HostCall::Config { key, found } => format!("config {key} → {}", if *found { "set" } else { "unset" }),
        HostCall::Grant { resource, from, to, mirror_needed } => {
            format!("grant {resource}: {from} → {to} (the mirror needed {mirror_needed})")
        }
        HostCall::Gate { waited_micros, timed_out, failure_probability, reasons, decision, before } => format!(
            "gate before {before}: waited {waited_micros} µs for the mirror{}, failure probability \
             {failure_probability:.2} [{}] → {decision}",
            if *timed_out { " (timed out)" } else { "" },
            reasons.join(", ")
        ),
    }
}

/// Records host calls of one instance; cheap to clone into host hooks.
#[derive(Debug, Clone)]
pub(crate) struct TraceRecorder {
    started: Instant,
    events: Arc<Mutex<Vec<TraceEvent>>>,
    /// Woken at every recorded call, for whoever watches this trace grow.
    progress: Option<Arc<tokio::sync::Notify>>,
}

impl TraceRecorder {
    pub(crate) fn new(started: Instant) -> Self {
        Self { started, events: Arc::new(Mutex::new(Vec::new())), progress: None }
    }

    /// A recorder that wakes `progress` at every call it records.
    pub(crate) fn watched(started: Instant, progress: Arc<tokio::sync::Notify>) -> Self {
        Self { started, events: Arc::new(Mutex::new(Vec::new())), progress: Some(progress) }
    }

    /// The calls recorded so far, in the order they started. This copies:
    /// the effect gate may still be reading a finished mirror's trace.
    pub(crate) fn events_so_far(&self) -> Vec<TraceEvent> {
        let mut events = self.lock().clone();
        events.sort_by_key(|e| e.at_micros);
        events
    }

    /// The calls recorded after the first `seen`, in the order they were
    /// recorded (which is the order they ended).
    pub(crate) fn events_since(&self, seen: usize) -> Vec<TraceEvent> {
        self.lock().get(seen..).map(<[TraceEvent]>::to_vec).unwrap_or_default()
    }

    /// How many recorded calls match, without copying them.
    pub(crate) fn count(&self, matches: impl Fn(&TraceEvent) -> bool) -> usize {
        self.lock().iter().filter(|e| matches(e)).count()
    }

    fn push(&self, event: TraceEvent) {
        self.lock().push(event);
        if let Some(progress) = &self.progress {
            progress.notify_waiters();
        }
    }

    /// Microseconds since the instance started.
    pub(crate) fn now_micros(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Records a call that started at `at_micros` and ends now.
    pub(crate) fn record_since(&self, at_micros: u64, call: HostCall) {
        let duration_micros = self.now_micros().saturating_sub(at_micros);
        self.push(TraceEvent { at_micros, duration_micros, call });
    }

    /// Records an instantaneous call.
    pub(crate) fn record(&self, call: HostCall) {
        let at_micros = self.now_micros();
        self.push(TraceEvent { at_micros, duration_micros: 0, call });
    }

    fn lock(&self) -> MutexGuard<'_, Vec<TraceEvent>> {
        // A panic while holding this lock cannot leave the vector inconsistent.
        self.events.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
