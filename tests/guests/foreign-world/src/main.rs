//! A valid component of another world (`wasi:cli/command`): the runtime
//! must refuse it with a clear error rather than try to run it.

fn main() {
    println!("I am a command, not a transaction module.");
}
