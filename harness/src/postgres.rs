//! A real PostgreSQL for tests, measurements and the district's commands: a throwaway cluster (`initdb`)
//! in a folder of its own, served on a free loopback port, stopped and removed when dropped.
//!
//! PostgreSQL refuses to run as root, so as root (CI) the cluster belongs to the `postgres` user and its
//! programs are run through `runuser`. `fsync` is off (this is a test cluster: an operating system crash is
//! not what it models); `synchronous_commit` stays on, so a commit the core was told of survives a kill -9
//! of the server. CI installs PostgreSQL (`.ci/run`); where it is missing, [`Postgres::find`] says so and a
//! test must fail when `CI` is set.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// A running throwaway PostgreSQL; stopped (immediately) and removed on drop.
pub struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Postgres {
    /// The folder of the installed PostgreSQL's programs (`initdb`, `pg_ctl`), the newest version if several.
    pub fn find() -> Option<PathBuf> {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").exists() && b.join("pg_ctl").exists())
            .collect();
        versions.sort();
        versions.pop().or_else(|| {
            let which = Command::new("sh").args(["-c", "command -v pg_ctl"]).output().ok()?;
            let p = PathBuf::from(String::from_utf8_lossy(&which.stdout).trim());
            let bin = std::fs::canonicalize(&p).ok()?.parent()?.to_path_buf();
            bin.join("initdb").exists().then_some(bin)
        })
    }

    /// Whether a test that needs PostgreSQL can run here. Where it is missing this says so and returns
    /// false, except in CI (`CI` set), where a missing PostgreSQL fails the test instead of passing it.
    pub fn available_for_test() -> bool {
        if Postgres::find().is_some() {
            return true;
        }
        assert!(std::env::var("CI").is_err(), "CI must install PostgreSQL (apt-get install -y postgresql)");
        eprintln!("PostgreSQL is not installed here: skipping (CI installs it and requires this test)");
        false
    }

    /// Creates a cluster and starts it on a free loopback port; returns once it takes connections.
    pub fn start() -> Result<Postgres> {
        let bin = Postgres::find().context("PostgreSQL is not installed (apt-get install -y postgresql)")?;
        let dir = tempfile::Builder::new().prefix("towntwin-pg-").tempdir().context("cannot make the cluster's folder")?;
        if as_root() {
            // The cluster's folder belongs to the user the server runs as.
            let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().context("cannot run chown")?;
            if !status.success() {
                bail!("chown postgres {} failed (is there a `postgres` user?)", dir.path().display());
            }
        }
        let data = dir.path().join("data");
        let out = run_as_owner(&bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync", "--locale=C"])
            .output()
            .context("cannot run initdb")?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let pg = Postgres { bin, dir, port };
        pg.pg_ctl_start()?;
        Ok(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl_start(&self) -> Result<()> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=200 -c shared_buffers=64MB",
            self.port,
            self.dir.path().display()
        );
        let out = run_as_owner(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-o", &opts, "-w", "-t", "60", "start"])
            .stdout(Stdio::null())
            .output()
            .context("cannot run pg_ctl start")?;
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            bail!("PostgreSQL did not start: {}\n{}", String::from_utf8_lossy(&out.stderr).trim(), log.lines().rev().take(10).collect::<Vec<_>>().join("\n"));
        }
        Ok(())
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres?schema=SCHEMA`.
    pub fn url(&self, schema: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres?schema={schema}", self.port)
    }

    /// The store location of a town's schema here.
    pub fn location(&self, schema: &str) -> towntwin_core::store::Location {
        self.url(schema).parse().unwrap_or_else(|e| panic!("a throwaway cluster's URL parses: {e}"))
    }

    /// Stops it as an operator would (`pg_ctl stop -m fast`: sessions are ended, what was committed is
    /// kept) and starts it again on the same port.
    pub fn restart(&self) -> Result<()> {
        self.stop("fast")?;
        self.pg_ctl_start()
    }

    /// Kills the server (SIGKILL to the postmaster, as a crash would: its backends go with it) and starts it
    /// again; it recovers from its log.
    pub fn crash_and_restart(&self) -> Result<()> {
        let pid = std::fs::read_to_string(self.data().join("postmaster.pid")).context("the server's pid file")?;
        let pid = pid.lines().next().unwrap_or("").trim().to_string();
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        // The backends notice their postmaster is gone and exit; the new one waits for their shared memory.
        std::thread::sleep(std::time::Duration::from_millis(500));
        self.pg_ctl_start()
    }

    fn stop(&self, mode: &str) -> Result<()> {
        let out =
            run_as_owner(&self.bin.join("pg_ctl")).arg("-D").arg(self.data()).args(["-m", mode, "-w", "stop"]).output().context("cannot run pg_ctl stop")?;
        if !out.status.success() {
            bail!("pg_ctl stop failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.stop("immediate");
    }
}

fn as_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `program`, run as the cluster's owner: `postgres` through `runuser` when we are root, else ourselves.
fn run_as_owner(program: &Path) -> Command {
    if as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}
