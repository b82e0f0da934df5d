//! The scripted demo: the examples on a fresh embedded store, with a local
//! payment gateway, through the `txmirror` CLI; then the service, and
//! several nodes on a local PostgreSQL (`nodes.rs`).

mod nodes;

use anyhow::{Context as _, Result, bail};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) fn run(root: &Path) -> Result<()> {
    build(root)?;
    run_scenario(root)
}

/// Builds the example modules and the whole workspace.
pub(crate) fn build(root: &Path) -> Result<()> {
    step("building the example modules for wasm32-wasip2");
    crate::run(Command::new(crate::cargo()).current_dir(root).args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "--manifest-path",
        "examples/Cargo.toml",
        "--target-dir",
        "target",
    ]))?;
    // The whole workspace, tests included and linted as `cargo xtask test`
    // builds it, so that the tests later reuse these artifacts instead of
    // building the workspace a second time.
    step("building the txmirror CLI (and the rest of the workspace)");
    crate::run(crate::lint::linted(Command::new(crate::cargo()).current_dir(root).args(crate::BUILD_ALL))?)
}

fn run_scenario(root: &Path) -> Result<()> {
    let demo = root.join("target").join("demo");
    if demo.exists() {
        std::fs::remove_dir_all(&demo).with_context(|| format!("cannot clear {}", demo.display()))?;
    }
    std::fs::create_dir_all(&demo)?;
    let gateway = Gateway::start(201)?;
    let failing = Gateway::start(503)?;
    let backup = Gateway::start(201)?;
    let payment_policy = std::fs::read_to_string(root.join("examples/payment/policy.toml"))?
        .replace("127.0.0.1:18080", &gateway.authority);
    std::fs::write(demo.join("payment.toml"), payment_policy)?;
    std::fs::write(
        demo.join("payment-failover.toml"),
        format!(
            r#"alternative_paths = ["charge-backup"]
compensation_path = "refund"

[capabilities]
kv = {{ payments = "read-write" }}
streams = ["payments"]
outbound_hosts = ["{failing}", "{backup}"]

[config]
primary_gateway = "http://{failing}"
backup_gateway = "http://{backup}"

[[mirror.stubs]]
method = "POST"
url_prefix = "http://{failing}/charges"
status = 201
body = '{{"charge_id": "mirror-stub"}}'

[[mirror.stubs]]
method = "POST"
url_prefix = "http://{backup}/charges"
status = 201
body = '{{"charge_id": "mirror-stub"}}'
"#,
            failing = failing.authority,
            backup = backup.authority
        ),
    )?;

    let cli = Cli { root, binary: crate::debug_binary(root, "txmirror")?, data_dir: demo.join("data") };
    let wasm = |name: &str| root.join("target/wasm32-wasip2/release").join(format!("{name}.wasm"));
    let examples = root.join("examples");
    let bank = (wasm("bank_transfer"), examples.join("bank-transfer/policy.toml"));
    let orders = (wasm("order_import"), examples.join("order-import/policy.toml"));
    let payment = (wasm("payment"), demo.join("payment.toml"));
    let failover = (wasm("payment"), demo.join("payment-failover.toml"));

    step("1. open two accounts (bank-transfer, path `deposit`)");
    cli.run(&bank, "deposit", r#"{"account":"alice","amount":100}"#, 0)?;
    cli.run(&bank, "deposit", r#"{"account":"bob","amount":20}"#, 0)?;

    step("2. transfer 30 from alice to bob: the mirror's writes are withheld, the primary's commit");
    cli.run(&bank, "transfer", r#"{"from":"alice","to":"bob","amount":30}"#, 0)?;

    step("3. an overdraft is rejected and commits nothing");
    cli.run(&bank, "transfer", r#"{"from":"bob","to":"alice","amount":500}"#, 1)?;

    step("4. import a Shopify order, then the same order again (idempotent)");
    let order = r#"{"platform":"shopify","store":"berlin","payload":{"id":1001,"currency":"EUR","total_price":"25.50","email":"ann@example.com","line_items":[{"sku":"MUG","quantity":2,"price":"10.00"},{"sku":"TEA","quantity":1,"price":"5.50"}]}}"#;
    cli.run(&orders, "import", order, 0)?;
    cli.run(&orders, "import", order, 0)?;

    step("5. an invalid Amazon order: every problem is named, the mirror reported them as it found them");
    cli.run(
        &orders,
        "import",
        r#"{"platform":"amazon","store":"berlin","payload":{"AmazonOrderId":"","OrderTotal":{"CurrencyCode":"XXX","Amount":"1"},"OrderItems":[]}}"#,
        1,
    )?;

    step("6. charge a card through the local gateway: the effect gate waits for the mirror, whose POST is stubbed");
    cli.run(&payment, "charge", r#"{"order_id":"order-1","amount_cents":2550,"currency":"EUR"}"#, 0)?;
    let charges = gateway.charges.load(Ordering::SeqCst);
    println!("the gateway received {charges} charge(s); the mirror's was stubbed, the health checks of both were sent");
    if charges != 1 {
        bail!("expected exactly one charge at the gateway, got {charges}");
    }

    step(
        "7. the primary gateway is failing: the mirror's health check shows it, the gate diverts the primary before it charges",
    );
    cli.run(&failover, "charge", r#"{"order_id":"order-2","amount_cents":990,"currency":"EUR"}"#, 0)?;
    let (refused, charged) = (failing.charges.load(Ordering::SeqCst), backup.charges.load(Ordering::SeqCst));
    println!("the failing gateway received {refused} charge(s); the backup received {charged}");
    if (refused, charged) != (0, 1) {
        bail!("expected no charge at the failing gateway and one at the backup, got {refused} and {charged}");
    }

    step("8. a dry run of another transfer: the mirror alone, nothing changes");
    cli.command(&bank, "transfer", r#"{"from":"alice","to":"bob","amount":10}"#).arg("--dry-run").status()?;

    step("the events committed with the transfers");
    crate::run(cli.base().args(["events", "tail", "transfers"]))?;
    service_scenario(root, &demo, &bank)?;
    println!(
        "\ndemo complete; its store is in {}, the service's in {}",
        cli.data_dir.display(),
        demo.join("service").display()
    );
    Ok(())
}

/// The same runtime as a service: `txmirror serve` on 127.0.0.1 with a
/// token per role, driven through the CLI's `--server`.
fn service_scenario(root: &Path, demo: &Path, bank: &(std::path::PathBuf, std::path::PathBuf)) -> Result<()> {
    let txmirror = crate::debug_binary(root, "txmirror")?;
    let dir = demo.join("service");
    std::fs::create_dir_all(&dir)?;
    step(
        "9. the service: HTTPS with a self-signed certificate, one tenant and a token per role (only their hashes are stored)",
    );
    let tls = dir.join("tls");
    if tls.exists() {
        std::fs::remove_dir_all(&tls)?;
    }
    crate::run(Command::new(&txmirror).args(["tls", "self-signed", "--out-dir"]).arg(&tls))?;
    let (tokens_config, tokens) = new_tokens(&txmirror, "demo")?;
    let config = format!(
        "data_dir = \"data\"\nmodel = {:?}\n\n[server.tls]\ncert_file = \"tls/cert.pem\"\nkey_file = \"tls/key.pem\"\n{tokens_config}",
        root.join(crate::learning::MODEL).display().to_string()
    );
    std::fs::write(dir.join("txmirror.toml"), &config)?;
    println!("{config}");

    let (mut server, base) = serve(root, &txmirror, &dir.join("txmirror.toml"), "serve")?;
    println!("serving on {base}; the operator page: {base}/#token=<the operator token>");
    let result = drive_service(&txmirror, &base, &tls.join("cert.pem"), &tokens, bank);
    step("14. SIGTERM: the service stops admitting, finishes what is in flight and exits");
    let _ = Command::new("kill").args(["-TERM", &server.id().to_string()]).status();
    let status = server.wait()?;
    println!("txmirror serve exited with {status}");
    result?;
    nodes::scenario(root, demo, bank, &txmirror)
}

/// A token per role for `tenant`: the configuration's `[[tokens]]` entries
/// (hashes only), and the tokens themselves by role.
fn new_tokens(txmirror: &Path, tenant: &str) -> Result<(String, std::collections::HashMap<&'static str, String>)> {
    let mut config = String::new();
    let mut tokens = std::collections::HashMap::new();
    for role in ["developer", "operator", "client"] {
        let out = Command::new(txmirror).args(["token", "new", "--tenant", tenant, "--role", role]).output()?;
        if !out.status.success() {
            bail!("`txmirror token new` failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        config.push_str(&String::from_utf8_lossy(&out.stdout));
        let token = String::from_utf8_lossy(&out.stderr).rsplit(' ').next().unwrap_or_default().trim().to_string();
        tokens.insert(role, token);
    }
    Ok((config, tokens))
}

/// Starts `txmirror serve` with `config` on a free port of 127.0.0.1; the
/// process and its address. Its log goes on to the terminal, each line
/// behind `[label]`.
fn serve(root: &Path, txmirror: &Path, config: &Path, label: &str) -> Result<(std::process::Child, String)> {
    let mut server = Command::new(txmirror);
    server.args(["serve", "--config"]).arg(config).args(["--listen", "127.0.0.1:0"]);
    if std::env::var_os("ORT_DYLIB_PATH").is_none() {
        server.env("ORT_DYLIB_PATH", crate::setup::onnxruntime_library(root));
    }
    let mut server = server.stderr(std::process::Stdio::piped()).spawn().context("cannot start txmirror serve")?;
    let mut stderr = BufReader::new(server.stderr.take().context("no stderr")?);
    let mut line = String::new();
    stderr.read_line(&mut line)?;
    let Some(base) = line.trim().strip_prefix("txmirror serving on ").map(str::to_string) else {
        let _ = server.kill();
        let _ = server.wait();
        bail!("txmirror serve did not start: {line}");
    };
    let label = label.to_string();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            eprintln!("  [{label}] {line}");
        }
    });
    Ok((server, base))
}

fn drive_service(
    txmirror: &Path,
    base: &str,
    ca_file: &Path,
    tokens: &std::collections::HashMap<&'static str, String>,
    (module, policy): &(std::path::PathBuf, std::path::PathBuf),
) -> Result<()> {
    let as_role = |role: &str| {
        let mut command = Command::new(txmirror);
        command.args(["--server", base, "--token", tokens.get(role).map_or("", String::as_str)]);
        command.arg("--ca-file").arg(ca_file);
        command
    };
    step("10. the developer uploads bank-transfer; the operator puts its policy");
    let out = as_role("developer").arg("upload").arg(module).output()?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    let hash = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("module ").map(str::to_string))
        .context("no module hash in the upload's answer")?;
    crate::run(as_role("operator").args(["put-policy", &hash]).arg(policy))?;

    step("11. a client deposits (synchronously), then transfers (asynchronously: 202 and an id to poll)");
    crate::run(as_role("client").args([
        "submit",
        &hash,
        "--path",
        "deposit",
        "--input",
        r#"{"account":"carol","amount":50}"#,
    ]))?;
    crate::run(as_role("client").args([
        "submit",
        &hash,
        "--path",
        "transfer",
        "--async",
        "--transaction-id",
        "demo-transfer",
        "--input",
        r#"{"from":"carol","to":"dave","amount":5}"#,
    ]))?;
    std::thread::sleep(std::time::Duration::from_millis(300));

    step("12. the operator lists the recent transactions; a client's token may not");
    crate::run(as_role("operator").args(["tx", "list"]))?;
    let refused = as_role("client").args(["dlq", "list"]).output()?;
    println!(
        "client token on the dead-letter queue: exit {:?}, {}",
        refused.status.code(),
        String::from_utf8_lossy(&refused.stderr).trim()
    );
    if refused.status.success() {
        bail!("a client token read the dead-letter queue");
    }

    step("13. the model the service scores with");
    crate::run(as_role("operator").args(["model", "status"]))
}

pub(crate) fn step(title: &str) {
    println!("\n=== {title}");
}

struct Cli<'a> {
    root: &'a Path,
    /// The `txmirror` binary of the debug build.
    binary: std::path::PathBuf,
    data_dir: std::path::PathBuf,
}

impl Cli<'_> {
    fn base(&self) -> Command {
        let mut command = Command::new(&self.binary);
        // The shipped model scores beside the rules, in the real ONNX Runtime.
        command.arg("--data-dir").arg(&self.data_dir).arg("--model").arg(self.root.join(crate::learning::MODEL));
        if std::env::var_os("ORT_DYLIB_PATH").is_none() {
            command.env("ORT_DYLIB_PATH", crate::setup::onnxruntime_library(self.root));
        }
        command
    }

    fn command(&self, (module, policy): &(std::path::PathBuf, std::path::PathBuf), path: &str, input: &str) -> Command {
        let mut command = self.base();
        command.arg("run").arg(module).arg("--policy").arg(policy).args(["--path", path, "--input", input]);
        command
    }

    /// Runs a transaction and checks its exit code.
    fn run(
        &self,
        module: &(std::path::PathBuf, std::path::PathBuf),
        path: &str,
        input: &str,
        expected: i32,
    ) -> Result<()> {
        let status = self.command(module, path, input).status()?;
        if status.code() != Some(expected) {
            bail!("`txmirror run --path {path}` exited with {status}, expected {expected}");
        }
        Ok(())
    }
}

/// A tiny payment gateway on 127.0.0.1 that answers every request with
/// `status` (and a new charge id when it succeeds), and counts the charges
/// (POST requests) it receives. It serves until the demo ends.
struct Gateway {
    authority: String,
    charges: Arc<AtomicUsize>,
}

impl Gateway {
    fn start(status: u16) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let authority = listener.local_addr()?.to_string();
        let charges = Arc::new(AtomicUsize::new(0));
        let counter = charges.clone();
        std::thread::spawn(move || {
            for (number, stream) in listener.incoming().flatten().enumerate() {
                let _ = answer(stream, number + 1, status, &counter);
            }
        });
        Ok(Self { authority, charges })
    }
}

fn answer(stream: std::net::TcpStream, number: usize, status: u16, charges: &AtomicUsize) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    if request_line.starts_with("POST ") {
        charges.fetch_add(1, Ordering::SeqCst);
    }
    let mut content_length = 0usize;
    let mut chunked = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("transfer-encoding") && value.trim().eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
    }
    // Read the whole body before answering: closing early would cut off a
    // client still sending it.
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
        }
    } else {
        let mut body = vec![0; content_length.min(1 << 20)];
        reader.read_exact(&mut body)?;
    }
    let reply = if status < 300 { format!(r#"{{"charge_id":"ch_{number}"}}"#) } else { "{}".to_string() };
    let reason = if status < 300 { "OK" } else { "Service Unavailable" };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
        reply.len()
    )
}
