//! Guests gone wrong, to test that limits stop them and the runtime lives on.
//!
//! - `spin`: an endless loop (stopped by fuel or by the wall-time epoch);
//! - `memory-bomb`: allocates until something stops it;
//! - `recurse`: recursion without end (stopped by the stack limit);
//! - `burn`: `{"rounds": n}` of arithmetic, to size fuel needs;
//! - `allocate`: `{"mib": n}` held at once, to size memory needs;
//! - `panic`: panics;
//! - `chatty`: a line to standard error, then `{"bytes": n}` to standard output;
//! - `ok`: does nothing and succeeds.

use serde::Deserialize;
use serde_json::Value;
use txmirror_guest::Error;

fn spin(_input: Value) -> Result<Value, Error> {
    let mut counter: u64 = 0;
    loop {
        counter = std::hint::black_box(counter.wrapping_add(1));
    }
}

fn memory_bomb(_input: Value) -> Result<Value, Error> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; 1 << 20];
        chunk[0] = 1;
        hoard.push(std::hint::black_box(chunk));
    }
}

#[inline(never)]
fn descend(depth: u64) -> u64 {
    // `black_box` hides from the compiler that this never ends.
    if std::hint::black_box(depth) == u64::MAX {
        return 0;
    }
    let below = descend(std::hint::black_box(depth + 1));
    below.rotate_left((depth % 13) as u32) ^ depth
}

fn recurse(_input: Value) -> Result<Value, Error> {
    Ok(Value::from(descend(0)))
}

#[derive(Deserialize)]
struct Allocate {
    mib: usize,
}

/// Holds `mib` MiB at once, then succeeds.
fn allocate(input: Allocate) -> Result<Value, Error> {
    let mut block = vec![0u8; input.mib << 20];
    for page in block.chunks_mut(4096) {
        page[0] = 1;
    }
    Ok(Value::from(std::hint::black_box(block).iter().map(|b| u64::from(*b)).sum::<u64>()))
}

#[derive(Deserialize)]
struct Burn {
    rounds: u64,
}

fn burn(input: Burn) -> Result<Value, Error> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..input.rounds {
        x = std::hint::black_box(x.rotate_left(5) ^ round).wrapping_mul(0x2545_f491_4f6c_dd1d);
    }
    Ok(Value::from(x))
}

fn panic(_input: Value) -> Result<Value, Error> {
    panic!("the guest gave up");
}

fn ok(_input: Value) -> Result<Value, Error> {
    Ok(serde_json::json!({ "ok": true }))
}

/// Prints, as a module's own diagnostics would.
#[allow(clippy::print_stdout, clippy::print_stderr, reason = "printing is what the path tests")]
fn chatty(input: Value) -> Result<Value, Error> {
    eprintln!("chatty: about to print");
    let bytes = input.get("bytes").and_then(Value::as_u64).unwrap_or(0);
    let line = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n";
    let mut printed = 0;
    while printed < bytes {
        print!("{line}");
        printed += line.len() as u64;
    }
    Ok(serde_json::json!({ "printed": printed }))
}

txmirror_guest::transaction_module! {
    paths: {
        "ok" => ok,
        "spin" => spin,
        "memory-bomb" => memory_bomb,
        "recurse" => recurse,
        "burn" => burn,
        "allocate" => allocate,
        "panic" => panic,
        "chatty" => chatty,
    }
}
