//! Runs one instance of a module: limits, the call, and the classification
//! of how it ended.

use crate::adjust::grants::{FuelStep, fuel_step};
use crate::instance::bindings::TxError;
use crate::instance::host::InstanceSetup;
use crate::instance::host::InstanceState;
use crate::instance::module::Module;
use crate::store::{EventEntry, ReadEntry, WriteEntry};
use crate::trace::HostCall;
use crate::trace::{Trace, TraceRecorder};
use crate::vocab::{Failure, FailureKind, Role};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

/// Extra time given to a guest blocked in a host call before the runtime
/// gives up on it; wasm code itself is stopped at the limit by the epoch.
const HOST_CALL_GRACE: Duration = Duration::from_millis(250);

/// What one instance did.
#[derive(Debug)]
pub(crate) struct InstanceRun {
    pub(crate) result: Result<Vec<u8>, Failure>,
    pub(crate) trace: Trace,
    pub(crate) reads: Vec<ReadEntry>,
    pub(crate) writes: Vec<WriteEntry>,
    pub(crate) events: Vec<EventEntry>,
}

impl InstanceRun {
    /// A mirror stopped before it ended (the primary would not wait longer
    /// at the gate before its commit): its calls so far, and no effects.
    pub(crate) fn cut_short(trace: TraceRecorder, after_micros: u64) -> Self {
        let ended =
            format!("stopped at the gate before the commit, {} ms after the primary ended", after_micros / 1000);
        Self {
            result: Err(Failure::new(FailureKind::Cancelled, ended.clone())),
            trace: Trace {
                role: Role::Mirror,
                events: trace.events_so_far(),
                fuel_consumed: 0,
                memory_peak_bytes: 0,
                duration_micros: trace.now_micros(),
                ended,
                output: None,
                failure: None,
            },
            reads: Vec::new(),
            writes: Vec::new(),
            events: Vec::new(),
        }
    }
}

fn guest_failure(error: TxError) -> Failure {
    match error {
        TxError::Validation(issues) => {
            let text: Vec<String> = issues.iter().map(|i| format!("{}: {}", i.field, i.message)).collect();
            Failure::new(FailureKind::Validation, text.join("; "))
        }
        TxError::Rejected(reason) => Failure::new(FailureKind::Rejected, reason),
        TxError::Unavailable(reason) => Failure::new(FailureKind::Unavailable, reason),
        TxError::UnknownPath(path) => {
            Failure::new(FailureKind::UnknownPath, format!("the module has no path `{path}`"))
        }
    }
}

fn classify_trap(error: &wasmtime::Error, state: &InstanceState, wall_time: Duration, fuel_limit: u64) -> Failure {
    if state.cancelled {
        return Failure::new(FailureKind::Cancelled, "stopped: the other path of the hedge won");
    }
    if state.cancelled_by_caller {
        return Failure::new(FailureKind::CancelledByCaller, "stopped: its caller cancelled the transaction");
    }
    if state.limiter.memory_limit_hit {
        return Failure::new(
            FailureKind::MemoryLimit,
            format!("stopped: memory would grow past its limit of {} MiB", state.limiter.memory_limit_bytes >> 20),
        );
    }
    if state.deadline_hit {
        return Failure::new(
            FailureKind::WallTimeExceeded,
            format!("stopped: ran past its wall-time limit of {} ms", wall_time.as_millis()),
        );
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => {
            Failure::new(FailureKind::FuelExhausted, format!("stopped: burnt all its fuel ({fuel_limit} units)"))
        }
        Some(Trap::StackOverflow) => Failure::new(FailureKind::StackOverflow, "stopped: call stack overflow"),
        Some(Trap::UnreachableCodeReached) => {
            Failure::new(FailureKind::GuestTrap, "the guest aborted (a panic, or `unreachable` was reached)")
        }
        Some(trap) => Failure::new(FailureKind::GuestTrap, format!("the guest trapped: {trap}")),
        None => Failure::new(FailureKind::GuestTrap, format!("the guest failed: {error:#}")),
    }
}

/// Runs `path` on `input` in a fresh instance of `module`.
pub(crate) async fn run_instance(
    engine: &Engine,
    module: &Module,
    setup: &InstanceSetup,
    role: Role,
    trace: TraceRecorder,
    path: &str,
    input: &[u8],
) -> InstanceRun {
    let started = Instant::now();
    let limits = setup.policy.resource_requirements.clone();
    let state = match InstanceState::new(setup, role, trace) {
        Ok(state) => state,
        Err(error) => {
            return InstanceRun {
                result: Err(Failure::new(FailureKind::Setup, error.to_string())),
                trace: Trace {
                    role,
                    events: Vec::new(),
                    fuel_consumed: 0,
                    memory_peak_bytes: 0,
                    duration_micros: 0,
                    ended: "not started".into(),
                    output: None,
                    failure: Some(FailureKind::Setup),
                },
                reads: Vec::new(),
                writes: Vec::new(),
                events: Vec::new(),
            };
        }
    };
    let mut store = Store::new(engine, state);
    store.limiter_async(|state| &mut state.limiter);
    // Fuel can only fail to be set when fuel is disabled, and the engine enables it.
    // In a mirrored attempt the mirror gets the ceiling, to show the real need.
    let resource_watch = setup.resource_watch.clone();
    let ceiling = limits.fuel_ceiling();
    let initial_fuel = if role == Role::Mirror && resource_watch.is_some() { ceiling } else { limits.fuel };
    // The limit in force; grants raise it. Shared with the epoch callback.
    let granted = Arc::new(AtomicU64::new(initial_fuel));
    let _ = store.set_fuel(initial_fuel);
    if resource_watch.is_some() {
        // Compiled code keeps fuel in a register inside hot loops; handing it
        // out in chunks makes the count the epoch callback reads accurate to
        // one chunk. Each chunk boundary is also a yield point.
        let _ = store.fuel_async_yield_interval(Some((initial_fuel / 64).max(100_000)));
    }
    // The wall time is read at every tick: the predictor may raise it.
    let timeouts = setup.timeouts.clone();
    let cancelled = setup.cancelled.clone();
    let caller_cancel = setup.caller_cancel.clone();
    let adjust = setup.adjust;
    store.set_epoch_deadline(1);
    let limit = granted.clone();
    let watch = resource_watch.clone();
    let wall = timeouts.clone();
    store.epoch_deadline_callback(move |mut context| {
        if Instant::now() >= started + wall.wall() {
            context.data_mut().deadline_hit = true;
            return Err(wasmtime::format_err!("wall-time limit reached"));
        }
        if cancelled.as_ref().is_some_and(|c| c.load(Ordering::SeqCst)) {
            context.data_mut().cancelled = true;
            return Err(wasmtime::format_err!("cancelled: the other path of the hedge won"));
        }
        if caller_cancel.as_ref().is_some_and(crate::vocab::CancelToken::is_cancelled) {
            context.data_mut().cancelled_by_caller = true;
            return Err(wasmtime::format_err!("cancelled by its caller"));
        }
        if let Some(watch) = &watch {
            let current = limit.load(Ordering::SeqCst);
            let remaining = context.get_fuel().unwrap_or(0);
            match role {
                Role::Mirror => watch.publish(current.saturating_sub(remaining)),
                // An explored attempt's primary runs as it would unadjusted.
                Role::Primary if !adjust => {}
                Role::Primary => match fuel_step(watch, current, remaining, ceiling) {
                    FuelStep::Carry => {}
                    FuelStep::Grant(to) => {
                        context.set_fuel(remaining.saturating_add(to - current))?;
                        limit.store(to, Ordering::SeqCst);
                        let mirror_needed = watch.mirror_consumed();
                        let grant = HostCall::Grant { resource: "fuel".into(), from: current, to, mirror_needed };
                        context.data().trace.record(grant);
                    }
                    FuelStep::Wait => {
                        // Pause until the mirror has burnt past this limit (or
                        // ended): then the next tick knows what to grant.
                        let watch = watch.clone();
                        return Ok(UpdateDeadline::YieldCustom(
                            1,
                            Box::pin(async move { watch.wait_for(|w| w.mirror_consumed() > current).await }),
                        ));
                    }
                },
            }
        }
        // Yield at every tick so that the twins interleave.
        Ok(UpdateDeadline::Yield(1))
    });

    let call = async {
        let instance = module.pre.instantiate_async(&mut store).await?;
        instance.call_run(&mut store, path, input).await
    };
    // A guest blocked in a host call is not stopped by the epoch; this is
    // the backstop, re-armed whenever the wall time was raised meanwhile.
    let outcome = {
        let mut call = std::pin::pin!(call);
        let start = tokio::time::Instant::from_std(started);
        loop {
            let limit = timeouts.wall() + HOST_CALL_GRACE;
            match tokio::time::timeout_at(start + limit, &mut call).await {
                Err(_) if timeouts.wall() + HOST_CALL_GRACE > limit => continue,
                outcome => break outcome,
            }
        }
    };
    let wall_time = timeouts.wall();
    let fuel_left = store.get_fuel().unwrap_or(0);
    let fuel_limit = granted.load(Ordering::SeqCst);
    let fuel_consumed = fuel_limit.saturating_sub(fuel_left);
    if let (Role::Mirror, Some(watch)) = (role, &resource_watch) {
        watch.end(fuel_consumed);
    }
    let result = match outcome {
        Ok(Ok(Ok(output))) => Ok(output),
        Ok(Ok(Err(error))) => Err(guest_failure(error)),
        Ok(Err(trap)) => Err(classify_trap(&trap, store.data(), wall_time, fuel_limit)),
        Err(_elapsed) => Err(Failure::new(
            FailureKind::WallTimeExceeded,
            format!("stopped: blocked in a host call past its wall-time limit of {} ms", wall_time.as_millis()),
        )),
    };
    let state = store.into_data();
    for (stream, captured) in [("stdout", &state.stdout), ("stderr", &state.stderr)] {
        let (text, dropped_bytes) = captured.kept();
        if !text.is_empty() || dropped_bytes > 0 {
            state.trace.record(HostCall::Output { stream: stream.into(), text, dropped_bytes });
        }
    }
    let ended = match &result {
        Ok(output) => format!("returned {} bytes", output.len()),
        Err(failure) => format!("{}: {}", failure.kind, failure.message),
    };
    InstanceRun {
        trace: Trace {
            role,
            events: state.trace.events_so_far(),
            fuel_consumed,
            memory_peak_bytes: state.limiter.peak_memory_bytes as u64,
            duration_micros: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            ended,
            output: result.as_ref().ok().map(|output| String::from_utf8_lossy(output).into_owned()),
            failure: result.as_ref().err().map(|failure| failure.kind),
        },
        reads: state.kv.read_set(),
        writes: state.kv.write_set(),
        events: state.events,
        result,
    }
}
