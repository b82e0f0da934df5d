//! Modules that are not txmirror transaction components are refused with a
//! clear error that says what is wrong.

use tempfile::tempdir;
use txmirror_runtime::ModuleError;
use txmirror_tests::{guests, runtime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_and_malformed_modules_are_refused() {
    let dir = tempdir().unwrap();
    let runtime = runtime(dir.path());

    let garbage = runtime.load_module(b"this is not wasm at all").await.unwrap_err();
    assert!(matches!(garbage, ModuleError::NotWasm(_)), "{garbage}");
    assert!(garbage.to_string().contains("magic"), "{garbage}");

    // The smallest valid core module: magic and version 1, no sections.
    let core = runtime.load_module(b"\0asm\x01\0\0\0").await.unwrap_err();
    assert!(matches!(core, ModuleError::CoreModule), "{core}");
    assert!(core.to_string().contains("wasm32-wasip2"), "the error says how to fix it: {core}");

    // A real component of another world (a `wasi:cli` command).
    let bytes = std::fs::read(guests::FOREIGN_WORLD).unwrap();
    let foreign = runtime.load_module(&bytes).await.unwrap_err();
    assert!(matches!(foreign, ModuleError::WorldMismatch(_)), "{foreign}");
    assert!(foreign.to_string().contains("txmirror:transaction"), "{foreign}");
    // wasmtime's own words are kept as the error's source, not flattened.
    let mut causes = Vec::new();
    let mut cause = std::error::Error::source(&foreign);
    while let Some(error) = cause {
        causes.push(error.to_string());
        cause = error.source();
    }
    let causes = causes.join(": ");
    assert!(causes.contains("paths") || causes.contains("run"), "the sources name the missing export: {causes}");
    let text = format!("{:#}", anyhow::Error::new(foreign));
    assert!(text.contains(&causes), "the CLI prints the whole chain: {text}");

    // A component that imports what the runtime does not offer (an
    // incoming HTTP handler, another package): refused, before any of its
    // code runs, naming each such import. Sockets are linked, closed (see
    // `hostile.rs`), since every guest built on wasi-libc imports them.
    let foreign = wat::parse_str(
        r#"(component
             (import "wasi:cli/stdout@0.2.0" (instance))
             (import "wasi:sockets/tcp@0.2.0" (instance))
             (import "wasi:http/incoming-handler@0.2.0" (instance))
             (import "acme:backdoor/open@1.0.0" (instance)))"#,
    )
    .unwrap();
    let refused = runtime.load_module(&foreign).await.unwrap_err();
    let ModuleError::ImportsNotGranted(names) = &refused else { panic!("{refused}") };
    assert_eq!(names, &["wasi:http/incoming-handler@0.2.0", "acme:backdoor/open@1.0.0"]);
    assert!(refused.to_string().contains("wasi:http/incoming-handler@0.2.0, acme:backdoor/open@1.0.0"), "{refused}");

    // A truncated component.
    let real = std::fs::read(guests::BANK_TRANSFER).unwrap();
    let truncated = runtime.load_module(&real[..real.len() / 2]).await.unwrap_err();
    assert!(matches!(truncated, ModuleError::Invalid(_)), "{truncated}");

    // The runtime still loads a good module afterwards.
    let module = runtime.load_module(&real).await.unwrap();
    assert_eq!(module.paths(), ["transfer", "deposit", "balance"]);
}
