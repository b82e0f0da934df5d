//! A real PostgreSQL of its own, for the tests and the demo: PostgreSQL
//! 15's `initdb` and `pg_ctl` (Debian's `postgresql-15`, in
//! `/usr/lib/postgresql/15/bin` unless `TXMIRROR_PG_BIN` says otherwise) on
//! a temporary directory, listening on 127.0.0.1 only, on a free port, and
//! stopped when dropped: a test that fails unwinds through the drop, so no
//! server outlives its test.
//!
//! `initdb` and `pg_ctl` refuse to run as root; as root, they run as the
//! `postgres` user (`runuser -u postgres --`) on a directory it owns.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};

/// Where PostgreSQL's programs are.
fn bin_dir() -> PathBuf {
    std::env::var_os("TXMIRROR_PG_BIN").map_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"), PathBuf::from)
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

/// The `postgres` user's uid and gid.
fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| {
        let out = Command::new("id").args([flag, "postgres"]).output().expect("`id` runs");
        assert!(out.status.success(), "no `postgres` user: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().parse::<u32>().expect("a number")
    };
    (id("-u"), id("-g"))
}

/// A command of PostgreSQL's, as the `postgres` user when running as root.
fn program(name: &str) -> Command {
    let path = bin_dir().join(name);
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(path);
        command
    } else {
        Command::new(path)
    }
}

fn run(mut command: Command, what: &str) -> Output {
    let out = command.output().unwrap_or_else(|error| panic!("{what} does not start: {error}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("a free port").port()
}

/// A PostgreSQL server of the caller's own.
#[derive(Debug)]
pub struct LocalPostgres {
    dir: tempfile::TempDir,
    port: u16,
    databases: std::sync::atomic::AtomicUsize,
    /// Whether commits wait for the disk (`fsync`), as PostgreSQL's
    /// default has it; off for tests of behaviour.
    durable: bool,
}

impl LocalPostgres {
    /// Creates a cluster in a temporary directory and starts it, with
    /// `fsync=off`: for tests of behaviour, not of durability.
    pub fn start() -> Self {
        Self::create(false)
    }

    /// As [`LocalPostgres::start`], with PostgreSQL's durable defaults
    /// (`fsync=on`, `synchronous_commit=on`: a commit returns once its
    /// write-ahead log is flushed), for measurements.
    pub fn start_durable() -> Self {
        Self::create(true)
    }

    fn create(durable: bool) -> Self {
        let dir = tempfile::Builder::new().prefix("txmirror-pg-").tempdir().expect("a temporary directory");
        if is_root() {
            let (uid, gid) = postgres_ids();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("the directory given to postgres");
        }
        let data = dir.path().join("data");
        let mut initdb = program("initdb");
        initdb.args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync", "-D"]).arg(&data);
        run(initdb, "initdb");
        let server = Self { dir, port: 0, databases: 0.into(), durable };
        server.started()
    }

    /// Starts the server on a free port; a port taken between choosing it
    /// and binding it is tried again with another.
    fn started(mut self) -> Self {
        let mut last = String::new();
        for _ in 0..3 {
            self.port = free_port();
            match self.pg_ctl_start() {
                Ok(()) => return self,
                Err(log) => last = log,
            }
        }
        panic!("PostgreSQL did not start:\n{last}");
    }

    /// `pg_ctl start` on the server's port; the server's log if it failed.
    fn pg_ctl_start(&self) -> Result<(), String> {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync={} -c max_connections=200",
            self.port,
            self.dir.path().display(),
            if self.durable { "on" } else { "off" }
        );
        let mut pg_ctl = program("pg_ctl");
        pg_ctl.args(["-w", "-t", "60", "-o", &options, "-l"]).arg(self.log()).arg("-D").arg(self.data()).arg("start");
        let out = pg_ctl.output().expect("pg_ctl starts");
        if out.status.success() {
            return Ok(());
        }
        Err(std::fs::read_to_string(self.log()).unwrap_or_default())
    }

    /// Starts a stopped server again, on the same port (its clients
    /// reconnect to the address they know).
    pub fn start_again(&self) {
        if let Err(log) = self.pg_ctl_start() {
            panic!("PostgreSQL did not start again:\n{log}");
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The directory of the server's files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Creates a database of its own for one check; its URL.
    pub fn fresh_database(&self) -> String {
        let n = self.databases.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("txm_{n}");
        let mut createdb = Command::new(bin_dir().join("createdb"));
        createdb.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", &name]);
        run(createdb, "createdb");
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs one SQL statement on the database at `url` with `psql`.
    pub fn sql(&self, url: &str, statement: &str) {
        let mut psql = Command::new(bin_dir().join("psql"));
        psql.args(["-v", "ON_ERROR_STOP=1", "-q", "-d", url, "-c", statement]);
        run(psql, "psql");
    }

    /// Runs one SQL query on the database at `url` with `psql`: its rows,
    /// one a line, fields apart by `|`.
    pub fn query(&self, url: &str, statement: &str) -> String {
        let mut psql = Command::new(bin_dir().join("psql"));
        psql.args(["-v", "ON_ERROR_STOP=1", "-q", "-t", "-A", "-d", url, "-c", statement]);
        String::from_utf8_lossy(&run(psql, "psql").stdout).trim().to_string()
    }

    /// A `psql` session on the database at `url` that runs what it is sent
    /// as it arrives: a test holds an SQL transaction open with it while
    /// the code under test works, then ends it.
    pub fn session(&self, url: &str) -> Session {
        let mut child = Command::new(bin_dir().join("psql"))
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-d", url])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("psql starts");
        let input = child.stdin.take().expect("psql's input");
        Session { child, input: Some(input) }
    }

    /// Stops the server at once (`-m immediate`: as a crash would).
    pub fn stop(&self) {
        let mut pg_ctl = program("pg_ctl");
        pg_ctl.args(["-w", "-m", "immediate", "-D"]).arg(self.data()).arg("stop");
        let _ = pg_ctl.output();
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `psql` session of [`LocalPostgres::session`]; killed when dropped.
#[derive(Debug)]
pub struct Session {
    child: Child,
    input: Option<ChildStdin>,
}

impl Session {
    /// Sends `statements` to the session, which runs them in order.
    pub fn send(&mut self, statements: &str) {
        let input = self.input.as_mut().expect("the session is open");
        writeln!(input, "{statements}").and_then(|()| input.flush()).expect("psql takes its input");
    }

    /// Ends the session once it has run what it was sent; whether it ran
    /// it all without an error.
    pub fn finish(mut self) -> bool {
        drop(self.input.take());
        self.child.wait().is_ok_and(|status| status.success())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.input.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
