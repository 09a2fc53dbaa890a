//! A single-node Slurm on loopback, for the tests that run experiments and load generators as batch jobs:
//! a private munged (its own key and socket), slurmctld and slurmd in the foreground, with the
//! configuration `deploy/slurm/slurm.conf` gives for such a node (its ports, folders and the munge socket
//! filled in). Every process is stopped on drop. Debian's `slurm-wlm` and `munge` (`.ci/run` installs them).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A running single-node Slurm; its daemons are stopped on drop.
pub struct Slurm {
    dir: tempfile::TempDir,
    munged: Option<u32>,
    ctld: Option<Child>,
    slurmd: Option<Child>,
}

/// What became of a job (`scontrol show job`'s `JobState`), once it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub state: String,
    pub exit_code: String,
}

const PROGRAMS: [&str; 8] = ["munged", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "scancel", "sinfo"];

/// The states a job ends in (`JobState`).
const ENDED: [&str; 9] = ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL", "DEADLINE"];

fn which(p: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|v| std::env::split_paths(&v).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(p))
        .find(|f| f.is_file())
}

impl Slurm {
    /// The programs this needs that are not installed.
    pub fn missing() -> Vec<&'static str> {
        PROGRAMS.into_iter().filter(|p| which(p).is_none()).collect()
    }

    /// Whether a test that needs Slurm can run here. Where it is missing this says so and returns false,
    /// except in CI (`CI` set), where a missing Slurm fails the test instead of passing it.
    pub fn available_for_test() -> bool {
        let missing = Slurm::missing();
        // The configuration runs slurmctld and slurmd as root (SlurmUser, SlurmdUser), as CI does.
        // (/proc/self belongs to the process's effective user.)
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
        if missing.is_empty() && root {
            return true;
        }
        if missing.is_empty() {
            assert!(std::env::var("CI").is_err(), "CI runs the Slurm tests as root");
            eprintln!("skipping: the single-node Slurm runs its daemons as root, and this is not root");
            return false;
        }
        assert!(std::env::var("CI").is_err(), "CI must install Slurm and munge (missing: {missing:?}): apt-get install -y slurm-wlm munge");
        eprintln!("skipping: no {missing:?} (apt-get install -y slurm-wlm munge; CI installs them and requires this test)");
        false
    }

    /// Starts munged, slurmctld and slurmd with the project's configuration `conf` (the template
    /// `deploy/slurm/slurm.conf`) on free loopback ports; returns once the node is idle.
    pub fn start(conf: &Path) -> Result<Slurm> {
        let missing = Slurm::missing();
        if !missing.is_empty() {
            bail!("Slurm is not installed (missing: {missing:?}): apt-get install -y slurm-wlm munge");
        }
        let dir = tempfile::Builder::new().prefix("towntwin-slurm-").tempdir()?;
        let d = dir.path();
        for sub in ["state", "spool", "log"] {
            std::fs::create_dir_all(d.join(sub))?;
        }
        // munged refuses a key that others may read, and a socket folder others may write.
        let key = d.join("munge.key");
        let mut bytes = [0u8; 1024];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes).context("no randomness for the munge key")?;
        std::fs::write(&key, bytes)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))?;
        let socket = d.join("munge.socket");
        let st = Command::new(which("munged").context("munged")?)
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--key-file={}", key.display()))
            .arg(format!("--pid-file={}", d.join("munged.pid").display()))
            .arg(format!("--log-file={}", d.join("log/munged.log").display()))
            .arg(format!("--seed-file={}", d.join("munged.seed").display()))
            .arg("--force")
            .status()
            .context("cannot start munged")?;
        if !st.success() {
            bail!("munged failed ({st}); see {}", d.join("log/munged.log").display());
        }
        let munged = std::fs::read_to_string(d.join("munged.pid")).ok().and_then(|p| p.trim().parse().ok());
        let mut slurm = Slurm { dir, munged, ctld: None, slurmd: None };
        let free = || -> Result<u16> { Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()) };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let template = std::fs::read_to_string(conf).with_context(|| format!("cannot read {}", conf.display()))?;
        let text = template
            .replace("/var/spool/towntwin-slurm", &slurm.dir.path().display().to_string())
            .replace("/run/munge/munge.socket.2", &socket.display().to_string())
            .replace("SlurmctldPort=6817", &format!("SlurmctldPort={}", free()?))
            .replace("SlurmdPort=6818", &format!("SlurmdPort={}", free()?))
            .replace("CPUs=2", &format!("CPUs={cpus}"))
            .replace("RealMemory=4000", &format!("RealMemory={}", memory_mb().unwrap_or(4000)));
        std::fs::write(slurm.conf(), text)?;
        let (conf, logs) = (slurm.conf(), slurm.log_dir());
        let daemon = |exe: &str, args: &[&str], log: &str| -> Result<Child> {
            let out = std::fs::File::create(logs.join(log))?;
            Command::new(which(exe).with_context(|| exe.to_string())?)
                .args(args)
                .env("SLURM_CONF", &conf)
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .spawn()
                .with_context(|| format!("cannot start {exe}"))
        };
        slurm.ctld = Some(daemon("slurmctld", &["-D", "-i"], "slurmctld.out")?);
        slurm.slurmd = Some(daemon("slurmd", &["-D", "-N", "localhost"], "slurmd.out")?);
        let t0 = Instant::now();
        loop {
            let logs = slurm.log_dir();
            for (name, c) in [("slurmctld", slurm.ctld.as_mut()), ("slurmd", slurm.slurmd.as_mut())] {
                if let Some(st) = c.and_then(|c| c.try_wait().ok().flatten()) {
                    bail!("{name} exited ({st}); see {}", logs.display());
                }
            }
            let o = slurm.command("sinfo").args(["-h", "-o", "%T"]).output();
            if let Ok(o) = &o
                && String::from_utf8_lossy(&o.stdout).trim() == "idle"
            {
                return Ok(slurm);
            }
            if t0.elapsed() > Duration::from_secs(30) {
                bail!(
                    "the Slurm node was not idle within 30 s ({:?}); see {}",
                    o.map(|o| String::from_utf8_lossy(&o.stdout).to_string()),
                    slurm.dir.path().join("log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The configuration file of this Slurm (what `SLURM_CONF` names for its commands).
    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("slurm.conf")
    }

    /// A Slurm command (`sbatch`, `scontrol`, ...) talking to this Slurm.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(which(program).unwrap_or_else(|| PathBuf::from(program)));
        c.env("SLURM_CONF", self.conf());
        c
    }

    /// `sbatch --parsable ARGS`: the job's id.
    pub fn sbatch(&self, args: &[&str], env: &[(&str, &Path)]) -> Result<String> {
        let mut c = self.command("sbatch");
        c.arg("--parsable").args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.output().context("cannot run sbatch")?;
        if !o.status.success() {
            bail!("sbatch {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        }
        Ok(String::from_utf8_lossy(&o.stdout).trim().split(';').next().unwrap_or_default().to_string())
    }

    /// The fields of a job from `scontrol show job`, a map per record (an array job has one per task),
    /// if Slurm still knows it.
    pub fn job(&self, id: &str) -> Option<Vec<std::collections::BTreeMap<String, String>>> {
        let o = self.command("scontrol").args(["show", "job", "-o", id]).output().ok()?;
        if !o.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&o.stdout);
        let records: Vec<_> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.split_whitespace().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect())
            .collect();
        (!records.is_empty()).then_some(records)
    }

    /// Waits until a job has ended (every task of an array in a final state), at most `limit`; the state
    /// of its first record that did not complete, else of its first.
    pub fn wait(&self, id: &str, limit: Duration) -> Result<Ended> {
        let t0 = Instant::now();
        loop {
            if let Some(records) = self.job(id) {
                let state = |r: &std::collections::BTreeMap<String, String>| r.get("JobState").cloned().unwrap_or_default();
                if records.iter().all(|r| ENDED.contains(&state(r).as_str())) {
                    let r = records.iter().find(|r| state(r) != "COMPLETED").unwrap_or(&records[0]);
                    return Ok(Ended { state: state(r), exit_code: r.get("ExitCode").cloned().unwrap_or_default() });
                }
            }
            if t0.elapsed() > limit {
                bail!("job {id} has not ended after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The folder its logs are in.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.path().join("log")
    }
}

/// Nine tenths of this machine's memory in MB (what slurmd may offer jobs), from `/proc/meminfo`.
fn memory_mb() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = info.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.split_whitespace().next()?.parse().ok()?;
    Some(kb / 1024 * 9 / 10)
}

impl Drop for Slurm {
    fn drop(&mut self) {
        // Jobs still queued or running are cancelled first, and waited for (KillWait is short in the
        // configuration): their steps are not slurmd's children and would outlive it.
        let queued = |s: &Slurm| -> Vec<String> {
            s.command("squeue")
                .args(["-h", "-o", "%A"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().map(String::from).collect())
                .unwrap_or_default()
        };
        let ids = queued(self);
        if !ids.is_empty() {
            let _ = self.command("scancel").args(&ids).status();
            let t0 = Instant::now();
            while !queued(self).is_empty() && t0.elapsed() < Duration::from_secs(15) {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        for c in [self.slurmd.as_mut(), self.ctld.as_mut()].into_iter().flatten() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
        }
        let t0 = Instant::now();
        for c in [self.slurmd.as_mut(), self.ctld.as_mut()].into_iter().flatten() {
            while c.try_wait().ok().flatten().is_none() && t0.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(pid) = self.munged {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let t0 = Instant::now();
            while nix::sys::signal::kill(pid, None).is_ok() && t0.elapsed() < Duration::from_secs(3) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}
