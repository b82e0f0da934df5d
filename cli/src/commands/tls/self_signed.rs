//! `txmirror tls self-signed`: a certificate for HTTPS without a CA.

use crate::commands::{Target, print};
use crate::exit::Failed;
use anyhow::Context as _;
use std::path::PathBuf;

/// Makes a self-signed certificate (`cert.pem`) and its private key
/// (`key.pem`, readable by its owner only) in a directory.
#[derive(clap::Args, Debug)]
pub(crate) struct SelfSignedCommand {
    /// Where to write `cert.pem` and `key.pem` (made if missing; existing
    /// files are not overwritten).
    #[arg(long, default_value = ".")]
    out_dir: PathBuf,
    /// The names and addresses the certificate is for.
    #[arg(long = "name", default_values = ["localhost", "127.0.0.1", "::1"])]
    names: Vec<String>,
}

impl SelfSignedCommand {
    pub(crate) async fn execute(self, _target: Target) -> Result<u8, Failed> {
        let certified = rcgen::generate_simple_self_signed(self.names.clone())
            .context("cannot make the certificate (is every --name a DNS name or an IP address?)")?;
        std::fs::create_dir_all(&self.out_dir).with_context(|| format!("cannot make {}", self.out_dir.display()))?;
        let cert = self.out_dir.join("cert.pem");
        let key = self.out_dir.join("key.pem");
        for path in [&cert, &key] {
            if path.exists() {
                return Err(Failed::usage(format!("{} exists; not overwritten", path.display())));
            }
        }
        std::fs::write(&cert, certified.cert.pem()).with_context(|| format!("cannot write {}", cert.display()))?;
        write_private(&key, certified.signing_key.serialize_pem().as_bytes())
            .with_context(|| format!("cannot write {}", key.display()))?;
        print(&format!(
            "wrote {} and {} for {}\n\n[server.tls]\ncert_file = {:?}\nkey_file = {:?}",
            cert.display(),
            key.display(),
            self.names.join(", "),
            cert.display().to_string(),
            key.display().to_string()
        ));
        Ok(0)
    }
}

/// Writes a file only its owner can read.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)
}
