//! A module that tries to act where it must not: the sandbox contract's
//! adversary (see `docs/sandbox.md`).
//!
//! Path `sneak` sends the requests its input lists (`[{"method", "url",
//! "headers": [[name, value]], "body"}]`), as a module that tries to act
//! from the mirror would, and returns each one's status or error, and the
//! headers of each answer. Path `files` changes the granted directory every
//! way it can (write, mkdir, rename, set-times, a symlink inside and one
//! pointing outside, unlink, rmdir) and returns each step's error, if any,
//! and what `/data/seen.txt` held. Path `sockets` tries to reach the
//! address its input names (`{"addr": "127.0.0.1:PORT"}`) around the HTTP
//! capability: a TCP connection, a UDP datagram, a listener and a name
//! lookup; it returns each one's error, if any. Path `later` looks for
//! `/data/late.txt`, writes it, waits on a GET to `{"wait_url"}` and reads
//! it again: the mirror, whose view is the directory as it was when the
//! attempt started, must not see what the primary wrote meanwhile. Path
//! `emit` emits an event to each stream its input lists (`{"streams"}`)
//! and returns each one's error, if any.

use serde_json::Value;
use txmirror_guest::Error;
use txmirror_guest::http::Request;

/// Sends each request of the input, carrying on past refusals.
fn sneak(input: Value) -> Result<Value, Error> {
    let mut outcomes = Vec::new();
    for request in input.as_array().into_iter().flatten() {
        let text = |name: &str| request.get(name).and_then(Value::as_str).unwrap_or_default().to_string();
        let mut sent = Request::new(&text("method"), &text("url"));
        for pair in request.get("headers").and_then(Value::as_array).into_iter().flatten() {
            if let (Some(name), Some(value)) = (pair[0].as_str(), pair[1].as_str()) {
                sent = sent.header(name, value);
            }
        }
        if let Some(body) = request.get("body").and_then(Value::as_str) {
            sent = sent.body(body.as_bytes().to_vec());
        }
        outcomes.push(match sent.send() {
            Ok(response) => serde_json::json!({ "status": response.status, "headers": response.headers }),
            Err(error) => serde_json::json!({ "error": error.to_string() }),
        });
    }
    Ok(Value::Array(outcomes))
}

/// `symlink(2)` from wasi-libc, which the standard library links: its own
/// `std::os::wasi::fs::symlink_path` is not stable yet.
fn symlink(target: &str, link: &str) -> std::io::Result<()> {
    unsafe extern "C" {
        fn symlink(target: *const std::ffi::c_char, link: *const std::ffi::c_char) -> std::ffi::c_int;
    }
    let (target, link) = (std::ffi::CString::new(target)?, std::ffi::CString::new(link)?);
    // SAFETY: both are valid NUL-terminated strings that outlive the call.
    let done = unsafe { symlink(target.as_ptr(), link.as_ptr()) };
    if done == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// Every kind of change to `/data`, carrying on past refusals.
fn files(_input: Value) -> Result<Value, Error> {
    let mut steps = serde_json::Map::new();
    let mut step = |name: &str, done: std::io::Result<()>| {
        steps.insert(name.to_string(), done.err().map(|error| error.to_string()).into());
    };
    let seen = std::fs::read_to_string("/data/seen.txt").unwrap_or_else(|error| format!("unreadable: {error}"));
    step("write", std::fs::write("/data/a.txt", b"a"));
    step("mkdir", std::fs::create_dir("/data/d"));
    step("rename", std::fs::rename("/data/a.txt", "/data/d/b.txt"));
    step(
        "set-times",
        std::fs::File::options()
            .write(true)
            .open("/data/d/b.txt")
            .and_then(|file| file.set_modified(std::time::SystemTime::UNIX_EPOCH)),
    );
    step("symlink-out", symlink("../outside", "/data/escape"));
    step("symlink-in", symlink("d/b.txt", "/data/inside"));
    step("unlink", std::fs::remove_file("/data/inside"));
    step("rmdir", std::fs::remove_dir("/data/d"));
    steps.insert("seen".to_string(), seen.into());
    Ok(Value::Object(steps))
}

/// Every way to a socket, carrying on past refusals.
fn sockets(input: Value) -> Result<Value, Error> {
    use std::io::Write as _;
    use std::net::{TcpListener, TcpStream, ToSocketAddrs as _, UdpSocket};
    let addr = input.get("addr").and_then(Value::as_str).unwrap_or("127.0.0.1:9").to_string();
    let outcome = |done: std::io::Result<()>| Value::from(done.err().map(|error| error.to_string()));
    Ok(serde_json::json!({
        "tcp": outcome(TcpStream::connect(&addr).and_then(|mut stream| stream.write_all(b"POST / HTTP/1.1\r\n\r\n"))),
        "udp": outcome(UdpSocket::bind("0.0.0.0:0").and_then(|socket| socket.send_to(b"hello", &addr).map(drop))),
        "listen": outcome(TcpListener::bind("0.0.0.0:0").map(drop)),
        "lookup": outcome(("example.com", 80).to_socket_addrs().map(drop)),
    }))
}

/// What a twin sees of the directory before and after the other may have
/// written to it.
fn later(input: Value) -> Result<Value, Error> {
    let url = input.get("wait_url").and_then(Value::as_str).unwrap_or_default().to_string();
    let before = std::fs::read_to_string("/data/late.txt").ok();
    let wrote = std::fs::write("/data/late.txt", b"written by a twin").err().map(|error| error.to_string());
    Request::get(&url).send()?;
    let after = std::fs::read_to_string("/data/late.txt").ok();
    Ok(serde_json::json!({ "before": before, "wrote": wrote, "after": after }))
}

/// An event to each stream asked for, carrying on past refusals.
fn emit(input: Value) -> Result<Value, Error> {
    let mut outcomes = serde_json::Map::new();
    for stream in input.get("streams").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        let done = txmirror_guest::events::emit(stream, &serde_json::json!({ "from": "hostile" }));
        outcomes.insert(stream.to_string(), done.err().map(|error| error.to_string()).into());
    }
    Ok(Value::Object(outcomes))
}

txmirror_guest::transaction_module! {
    paths: {
        "sneak" => sneak,
        "files" => files,
        "sockets" => sockets,
        "later" => later,
        "emit" => emit,
    }
}
