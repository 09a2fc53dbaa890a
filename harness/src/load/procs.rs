//! The processes a load test drives: the core (`towntwin core`, exactly as a town deploys it) and the embedded
//! broker (`towntwin broker`), each a child of this process so that it can be killed, frozen and restarted,
//! and measured (CPU and resident memory from `/proc`).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
pub use nix::sys::signal::Signal;

use crate::status::Status;

/// Which [`Status`] line says a process is ready.
pub type Ready = fn(&Status) -> bool;

/// A child process started from this executable, and what it printed.
pub struct Proc {
    pub name: &'static str,
    args: Vec<String>,
    ready: Ready,
    child: Child,
    /// Every line it printed on stdout, in order, across restarts.
    pub lines: Arc<Mutex<Vec<String>>>,
    pub starts: u32,
}

impl Proc {
    /// Starts `towntwin ARGS`, and waits (at most `timeout`) until it prints a status line that `ready`
    /// accepts.
    pub fn start(name: &'static str, args: Vec<String>, ready: Ready, timeout: Duration) -> Result<Proc> {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let child = spawn(name, &args, ready, &lines, timeout)?;
        Ok(Proc { name, args, ready, child, lines, starts: 1 })
    }

    /// Whether it has exited (reaped if so).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`, and reaps it.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill().with_context(|| format!("cannot kill the {}", self.name))?;
        let _ = self.child.wait();
        Ok(())
    }

    /// Starts it again with the same arguments.
    pub fn restart(&mut self, timeout: Duration) -> Result<()> {
        let _ = self.child.try_wait();
        self.child = spawn(self.name, &self.args, self.ready, &self.lines, timeout)?;
        self.starts += 1;
        Ok(())
    }

    /// Sends a signal (`SIGSTOP`, `SIGCONT`, `SIGINT`).
    pub fn signal(&self, sig: Signal) -> Result<()> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid()).context("a process id out of range")?);
        nix::sys::signal::kill(pid, sig).with_context(|| format!("cannot send {sig} to the {} ({})", self.name, self.pid()))
    }

    /// Asks it to stop (SIGINT: the core commits and acknowledges what it holds) and waits up to `timeout`,
    /// then kills it. Returns whether it stopped by itself with success.
    pub fn stop(&mut self, timeout: Duration) -> bool {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return false;
        }
        if self.signal(Signal::SIGINT).is_err() {
            let _ = self.kill();
            return false;
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.success();
            }
            // Polling a child's exit: std has no wait with a timeout.
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.kill();
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn spawn(name: &str, args: &[String], ready: Ready, lines: &Arc<Mutex<Vec<String>>>, timeout: Duration) -> Result<Child> {
    let exe = std::env::current_exe().context("cannot find this executable to start the core and broker from")?;
    let mut child = Command::new(&exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start the {name} ({} {})", exe.display(), args.join(" ")))?;
    let out = child.stdout.take().ok_or_else(|| anyhow!("no stdout from the {name}"))?;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let lines = lines.clone();
    std::thread::Builder::new().name(format!("{name}-stdout")).spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if Status::parse(&line).is_some_and(|s| ready(&s))
                && let Some(t) = tx.take()
            {
                let _ = t.send(());
            }
            if let Ok(mut l) = lines.lock() {
                l.push(line);
            }
        }
    })?;
    match rx.recv_timeout(timeout) {
        Ok(()) => Ok(child),
        Err(_) => {
            let _ = child.kill();
            let status = child.wait().ok();
            bail!("the {name} did not get ready within {timeout:?} (it printed no status line saying so; exit: {status:?}; see its errors above)")
        }
    }
}

/// CPU time and resident memory of a process, from `/proc/PID/stat` and `/proc/PID/status`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// User plus system CPU seconds since it started.
    pub cpu_seconds: f64,
    pub rss_mb: f64,
}

/// Clock ticks per second of `/proc/PID/stat` (USER_HZ: 100 on every Linux this runs on).
const USER_HZ: f64 = 100.0;

pub fn usage(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), which ends at the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (f64, f64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: f64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()?;
    Some(Usage { cpu_seconds: (utime + stime) / USER_HZ, rss_mb: rss_kb / 1024.0 })
}

/// The arguments of `towntwin core` for a load run.
pub fn core_args(
    broker: &str,
    db: &std::path::Path,
    town: &std::path::Path,
    rules: &std::path::Path,
    policy: &std::path::Path,
    client_id: &str,
    tuning: &[(&str, Option<u16>)],
) -> Vec<String> {
    let p = |p: &std::path::Path| p.display().to_string();
    let mut args = vec![
        "core".into(),
        "--broker".into(),
        broker.into(),
        "--db".into(),
        p(db),
        "--town".into(),
        p(town),
        "--rules".into(),
        p(rules),
        "--policy".into(),
        p(policy),
        "--client-id".into(),
        client_id.into(),
    ];
    for (flag, value) in tuning {
        if let Some(v) = value {
            args.extend([format!("--{flag}"), v.to_string()]);
        }
    }
    args
}

/// The core's accepted and duplicate counts from the status line `towntwin core` prints when it stops.
pub fn core_stop_counts(lines: &[String]) -> Option<(u64, u64)> {
    Status::last(lines, |s| match s {
        Status::CoreStopped { accepted, duplicates, .. } => Some((accepted, duplicates)),
        _ => None,
    })
}

/// The core is ready once the broker has acknowledged its subscription.
pub fn core_ready(s: &Status) -> bool {
    matches!(s, Status::CoreSubscribed { .. })
}

/// Starts the embedded broker (`towntwin broker`) as a process of its own on a free loopback port; a
/// restart brings it back on the same port.
pub fn start_broker() -> Result<(Proc, crate::broker::Endpoint)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).context("cannot find a free loopback port")?.port();
    let p = Proc::start(
        "broker",
        vec!["broker".into(), "--port".into(), port.to_string()],
        |s| matches!(s, Status::BrokerListening { .. }),
        Duration::from_secs(30),
    )?;
    Ok((p, crate::broker::Endpoint { host: "127.0.0.1".into(), port, embedded: true, credentials: None, others: Vec::new() }))
}

/// A folder for the load's files.
pub fn db_path(out: &std::path::Path) -> PathBuf {
    out.join("core.db")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_usage_and_the_core_stop_line() {
        let u = usage(std::process::id()).expect("this process has /proc entries");
        assert!(u.rss_mb > 0.0 && u.cpu_seconds >= 0.0);
        let stopped = Status::CoreStopped { accepted: 1200, duplicates: 34, rejected: Default::default(), orders: 5 };
        let lines = vec![r#"{"status":"core_subscribed","broker":"mqtt://x:1","http":null}"#.to_string(), serde_json::to_string(&stopped).unwrap()];
        assert_eq!(core_stop_counts(&lines), Some((1200, 34)));
        assert_eq!(core_stop_counts(&lines[..1]), None);
    }
}
