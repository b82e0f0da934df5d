//! Installs what a fresh machine lacks, each piece only once:
//!
//! - the `wasm32-wasip2` and `wasm32-unknown-unknown` targets, through rustup;
//! - the ONNX Runtime library, taken from the PyPI wheel of `onnxruntime`
//!   (its own download host is out of reach) into `target/onnxruntime/`;
//! - the training pipeline's Python packages (`models/requirements.txt`)
//!   into `target/python/`, without touching the system (the tests train
//!   their model fixtures with them), and the API fuzzer the tests run
//!   (`tests/requirements.txt`, schemathesis) into `target/python-tests/`,
//!   and componentize-py, which builds Python guests
//!   (`guest-sdk-python/requirements.txt`), into `target/python-guests/`.
//!
//! `.cargo/config.toml` points `ORT_DYLIB_PATH` and the `TXMIRROR_*PYTHONPATH`
//! variables at these places for everything cargo runs.

use anyhow::{Context as _, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The guests' targets: components, and the Extism plugin of the peer comparison.
const WASM_TARGETS: &[&str] = &["wasm32-wasip2", "wasm32-unknown-unknown"];

/// The ONNX Runtime release the runtime is built against (`ort`'s `api-31`).
pub(crate) const ONNXRUNTIME_VERSION: &str = "1.31.1";

/// Everything, in order.
pub(crate) fn ensure_all(root: &Path) -> Result<()> {
    ensure_wasm_target()?;
    ensure_onnxruntime(root)?;
    ensure_python_packages(root)?;
    ensure_chromium()?;
    ensure_postgresql()?;
    Ok(())
}

/// Where the operator page's browser test finds Chromium and ChromeDriver.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Installs Debian's Chromium and ChromeDriver (for the operator page's
/// end-to-end test) if they are missing.
fn ensure_chromium() -> Result<()> {
    if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
        return Ok(());
    }
    apt_install(&["chromium", "chromium-driver"])
        .context("cannot install chromium and chromium-driver (the operator page's browser test needs them)")
}

/// Where the PostgreSQL store's tests find PostgreSQL's programs.
const POSTGRES_INITDB: &str = "/usr/lib/postgresql/15/bin/initdb";

/// Installs Debian's PostgreSQL 15 (for the PostgreSQL store's tests, which
/// start their own servers) if it is missing.
fn ensure_postgresql() -> Result<()> {
    if Path::new(POSTGRES_INITDB).exists() {
        return Ok(());
    }
    apt_install(&["postgresql-15"])
        .context("cannot install postgresql-15 (the PostgreSQL store's tests start their own servers with it)")
}

/// Installs Debian packages with apt-get: as root, or through sudo.
fn apt_install(packages: &[&str]) -> Result<()> {
    println!("installing Debian's {} with apt-get", packages.join(" and "));
    let root = Command::new("id").arg("-u").output().is_ok_and(|out| out.stdout.starts_with(b"0"));
    let apt = |args: &[&str]| {
        let mut command = if root { Command::new("apt-get") } else { Command::new("sudo") };
        if !root {
            command.arg("apt-get");
        }
        command.env("DEBIAN_FRONTEND", "noninteractive").args(args);
        crate::run(&mut command)
    };
    apt(&["update", "-q"])?;
    apt(&[&["install", "-y", "-q", "--no-install-recommends"], packages].concat())
}

/// Adds the wasm targets through rustup if they are missing.
pub(crate) fn ensure_wasm_target() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("rustup is needed to install the wasm targets")?;
    let installed = String::from_utf8_lossy(&installed.stdout);
    for target in WASM_TARGETS {
        if installed.lines().any(|line| line.trim() == *target) {
            continue;
        }
        println!("installing the {target} target with rustup");
        crate::run(Command::new("rustup").args(["target", "add", target]))?;
    }
    Ok(())
}

/// Where the ONNX Runtime library goes.
pub(crate) fn onnxruntime_library(root: &Path) -> PathBuf {
    root.join("target/onnxruntime").join(format!("libonnxruntime.so.{ONNXRUNTIME_VERSION}"))
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Extracts `libonnxruntime.so` from the `onnxruntime` wheel on PyPI.
fn ensure_onnxruntime(root: &Path) -> Result<()> {
    let library = onnxruntime_library(root);
    if library.exists() {
        return Ok(());
    }
    println!("installing ONNX Runtime {ONNXRUNTIME_VERSION} (from the PyPI wheel) into {}", library.display());
    let downloads = root.join("target/onnxruntime/wheel");
    std::fs::create_dir_all(&downloads).with_context(|| format!("cannot create {}", downloads.display()))?;
    crate::run(
        Command::new(python())
            .args(["-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d"])
            .arg(&downloads)
            .arg(format!("onnxruntime=={ONNXRUNTIME_VERSION}")),
    )
    .context("pip could not download the onnxruntime wheel")?;
    let wheel = std::fs::read_dir(&downloads)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("onnxruntime-{ONNXRUNTIME_VERSION}-")) && n.ends_with(".whl"))
        })
        .with_context(|| format!("no onnxruntime wheel in {}", downloads.display()))?;
    // A wheel is a zip file; Python's zipfile reads it on any machine.
    let member = format!("onnxruntime/capi/libonnxruntime.so.{ONNXRUNTIME_VERSION}");
    let partial = library.with_extension("partial");
    let script = "import sys, zipfile\nwith zipfile.ZipFile(sys.argv[1]) as wheel, open(sys.argv[3], 'wb') as out:\n    out.write(wheel.read(sys.argv[2]))\n";
    crate::run(Command::new(python()).arg("-c").arg(script).arg(&wheel).arg(&member).arg(&partial))
        .with_context(|| format!("cannot extract {member} from {}", wheel.display()))?;
    std::fs::rename(&partial, &library).with_context(|| format!("cannot move the library to {}", library.display()))?;
    std::fs::remove_dir_all(&downloads).ok();
    Ok(())
}

/// The Restate server of the durable engines' comparison (`cargo xtask
/// bench engines`), from the npm registry's package of its binary.
pub(crate) const RESTATE_VERSION: &str = "1.7.12";

/// Where that server goes.
pub(crate) fn restate_server(root: &Path) -> PathBuf {
    root.join("target/peers/restate-server/package/bin/restate-server")
}

/// Installs Restate's server from the npm registry into `target/peers/`:
/// the tarball of `@restatedev/restate-server-linux-x64`, checked against
/// the registry's SHA-512 and unpacked by Python (no Node.js needed). For
/// the benchmark only: the tests never start it.
pub(crate) fn ensure_restate(root: &Path) -> Result<()> {
    let server = restate_server(root);
    if server.exists() {
        return Ok(());
    }
    anyhow::ensure!(
        cfg!(all(target_os = "linux", target_arch = "x86_64")),
        "the Restate server is installed for Linux on x86_64 only; set TXMIRROR_RESTATE_SERVER to one"
    );
    println!("installing the Restate server {RESTATE_VERSION} (from the npm registry) into {}", server.display());
    let into = root.join("target/peers/restate-server");
    let script = r#"
import base64, hashlib, io, json, sys, tarfile, urllib.request
package, version, into = sys.argv[1], sys.argv[2], sys.argv[3]
with urllib.request.urlopen(f"https://registry.npmjs.org/{package}/{version}", timeout=60) as answer:
    dist = json.load(answer)["dist"]
with urllib.request.urlopen(dist["tarball"], timeout=600) as answer:
    tarball = answer.read()
algorithm, digest = dist["integrity"].split("-", 1)
if algorithm != "sha512" or hashlib.sha512(tarball).digest() != base64.b64decode(digest):
    sys.exit(f"{dist['tarball']} does not match the registry's integrity {dist['integrity']}")
with tarfile.open(fileobj=io.BytesIO(tarball)) as archive:
    archive.extractall(into, filter="data")
"#;
    crate::run(
        Command::new(python())
            .arg("-c")
            .arg(script)
            .arg("@restatedev/restate-server-linux-x64")
            .arg(RESTATE_VERSION)
            .arg(&into),
    )
    .context("cannot install the Restate server from the npm registry")?;
    // The tarball's modes may not survive `filter="data"`: make it runnable.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&server, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", server.display()))?;
    Ok(())
}

/// Installs the Temporal peer of the durable engines' comparison into
/// `target/peers/temporal/` from PyPI (`benches/temporal-bank/requirements.txt`):
/// the `temporal` CLI, whose development server the bench starts, the Python
/// SDK its worker uses, and the gateway's HTTP server. For the benchmark
/// only: the tests never start it.
pub(crate) fn ensure_temporal(root: &Path) -> Result<()> {
    install_requirements(
        root,
        "benches/temporal-bank/requirements.txt",
        "target/peers/temporal",
        "the Temporal peer (its CLI, Python SDK and gateway)",
    )
}

/// Installs the pinned training packages into `target/python`, the API
/// fuzzer of the tests into `target/python-tests` and the Python guests'
/// builder into `target/python-guests`, each again when its requirements
/// file changes.
fn ensure_python_packages(root: &Path) -> Result<()> {
    install_requirements(root, "models/requirements.txt", "target/python", "the training packages")?;
    install_requirements(root, "tests/requirements.txt", "target/python-tests", "the API fuzzer (schemathesis)")?;
    install_requirements(
        root,
        "guest-sdk-python/requirements.txt",
        "target/python-guests",
        "the Python guests' builder (componentize-py)",
    )
}

/// Installs the pinned packages of `requirements` into `target` with pip.
fn install_requirements(root: &Path, requirements: &str, target: &str, what: &str) -> Result<()> {
    let requirements = root.join(requirements);
    let wanted =
        std::fs::read_to_string(&requirements).with_context(|| format!("cannot read {}", requirements.display()))?;
    let target = root.join(target);
    let stamp = target.join(".requirements.txt");
    if std::fs::read_to_string(&stamp).is_ok_and(|installed| installed == wanted) {
        return Ok(());
    }
    println!("installing {what} of {} into {}", requirements.display(), target.display());
    if target.exists() {
        std::fs::remove_dir_all(&target).with_context(|| format!("cannot clear {}", target.display()))?;
    }
    crate::run(
        Command::new(python())
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-warn-script-location"])
            .env("PIP_ROOT_USER_ACTION", "ignore")
            .arg("--target")
            .arg(&target)
            .arg("-r")
            .arg(&requirements),
    )
    .with_context(|| format!("pip could not install {what}"))?;
    std::fs::write(&stamp, wanted).with_context(|| format!("cannot write {}", stamp.display()))?;
    Ok(())
}

/// A Python command that sees the training packages.
pub(crate) fn training_python(root: &Path) -> Command {
    let mut command = Command::new(python());
    command.env("PYTHONPATH", root.join("target/python")).env("PYTHONDONTWRITEBYTECODE", "1");
    command
}
