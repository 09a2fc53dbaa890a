//! A real mosquitto for tests and measurements: started on a free loopback port with the settings the book
//! gives for the core (`docs/src/qa/mosquitto.md`: no queue limit, no inflight window), ready when its log
//! says it is running, stopped when dropped. CI installs mosquitto (`.ci/run`); where it is missing,
//! [`Mosquitto::find`] says so and a test must fail when `CI` is set.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::broker::Endpoint;

/// A running mosquitto; killed on drop.
pub struct Mosquitto {
    child: Child,
    pub port: u16,
    exe: PathBuf,
    conf: PathBuf,
}

impl Mosquitto {
    /// The installed mosquitto binary, if any.
    pub fn find() -> Option<PathBuf> {
        ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"].iter().map(PathBuf::from).find(|p| p.exists())
    }

    /// Whether a test that needs mosquitto can run here. Where it is missing this says so and returns false,
    /// except in CI (`CI` set), where a missing mosquitto fails the test instead of passing it.
    pub fn available_for_test() -> bool {
        if Mosquitto::find().is_some() {
            return true;
        }
        assert!(std::env::var("CI").is_err(), "CI must install mosquitto (apt-get install -y mosquitto)");
        eprintln!("mosquitto is not installed here: skipping (CI installs it and requires this test)");
        false
    }

    /// Starts mosquitto with the book's settings (plus `extra` config lines) on a free loopback port, its
    /// config in `dir`; returns once it logs that it is running.
    pub fn start(dir: &Path, extra: &str) -> Result<Mosquitto> {
        let exe = Mosquitto::find().context("mosquitto is not installed (apt-get install -y mosquitto)")?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let conf = dir.join(format!("mosquitto-{port}.conf"));
        std::fs::write(
            &conf,
            // `user root`: run as root (as CI does), mosquitto would otherwise drop to the `mosquitto` user and
            // could not write its persistence file in a folder of ours.
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\nmessage_size_limit {}\nmax_queued_messages 0\nmax_inflight_messages 0\npersistence false\nset_tcp_nodelay true\n{extra}\n",
                towntwin_core::limits::BROKER_MAX_PAYLOAD
            ),
        )?;
        let child = spawn(&exe, &conf)?;
        Ok(Mosquitto { child, port, exe, conf })
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint { host: "127.0.0.1".into(), port: self.port, embedded: false, credentials: None, others: Vec::new() }
    }

    /// Kills it (SIGKILL: every session and queued message it held in memory is gone) and starts it again
    /// on the same port.
    pub fn restart(&mut self) -> Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self.exe, &self.conf)?;
        Ok(())
    }

    /// Stops it as an operator would (SIGTERM: with `persistence true` it saves its sessions and queued
    /// messages), waits for it to exit, and starts it again on the same port.
    pub fn restart_graceful(&mut self) -> Result<()> {
        let status = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().context("cannot run kill")?;
        if !status.success() {
            bail!("kill -TERM {} failed", self.child.id());
        }
        self.child.wait()?;
        self.child = spawn(&self.exe, &self.conf)?;
        Ok(())
    }
}

fn spawn(exe: &Path, conf: &Path) -> Result<Child> {
    let mut child = Command::new(exe).arg("-c").arg(conf).stderr(Stdio::piped()).spawn().context("cannot start mosquitto")?;
    // mosquitto logs "... running" to stderr once its listeners are open: wait for that line, then keep
    // draining its log so that it never blocks on a full pipe.
    let mut log = BufReader::new(child.stderr.take().context("mosquitto's stderr")?).lines();
    loop {
        match log.next() {
            Some(Ok(line)) if line.contains(" running") => break,
            Some(Ok(line)) if line.contains("Error") => {
                let _ = child.kill();
                bail!("mosquitto: {line}");
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => bail!("mosquitto's log: {e}"),
            None => {
                let _ = child.wait();
                bail!("mosquitto exited before it was running");
            }
        }
    }
    std::thread::spawn(move || log.for_each(drop));
    Ok(child)
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
