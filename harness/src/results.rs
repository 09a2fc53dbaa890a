//! Results folders: one policy for every command that writes one (`run`, `load`, `drill`). A command
//! never reports another run's results as its own: a folder that holds what any run leaves (its summary,
//! the core's store, a knee search, a drill's log) is refused before anything is started or written, with
//! what to do instead (exit 2). `towntwin experiment` is the exception by design: the same folder again
//! resumes the same plan, and its fingerprint decides (see `experiment`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::UsageFault;

/// Files whose presence means a folder holds a run (finished, or killed before its end).
pub const MARKERS: &[&str] = &["summary.json", "core.db", "knee.json", "drill-log.json", "aar.json", "district.json", "generator.json"];

/// `results/<name>-<unix time>`: a command's default folder.
pub fn stamped(name: &str) -> PathBuf {
    // The wall clock only names the folder; it decides nothing in the run.
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    PathBuf::from("results").join(format!("{name}-{stamp}"))
}

/// Refuses `out` if it holds a run, or if any of `also` (a store given outside the folder) exists; `what`
/// names the command's run for the message ("a run", "a load run", "a drill").
pub fn refuse_used(out: &Path, what: &str, also: &[&Path]) -> Result<()> {
    let held = MARKERS.iter().map(|m| out.join(m)).chain(also.iter().map(|p| p.to_path_buf())).find(|p| p.exists());
    match held {
        Some(file) => Err(UsageFault(format!(
            "the results folder {} already holds {what}: {} already exists; give another --out, or remove the folder to run again",
            out.display(),
            file.display()
        ))
        .into()),
        None => Ok(()),
    }
}

/// Creates `out` (and its parents).
pub fn create(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create the results folder {}", out.display()))
}

/// [`refuse_used`], then [`create`].
pub fn claim(out: &Path, what: &str) -> Result<()> {
    refuse_used(out, what, &[])?;
    create(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_that_holds_any_runs_files_is_refused_and_an_empty_one_claimed() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a/b");
        claim(&out, "a run").unwrap();
        assert!(out.is_dir());
        claim(&out, "a run").expect("an empty folder is claimed again");
        for m in MARKERS {
            std::fs::write(out.join(m), "x").unwrap();
            let e = claim(&out, "a drill").unwrap_err();
            assert!(e.is::<UsageFault>() || e.chain().any(|c| c.is::<UsageFault>()));
            let msg = e.to_string();
            assert!(msg.contains("already holds a drill") && msg.contains(m) && msg.contains("--out"), "{msg}");
            std::fs::remove_file(out.join(m)).unwrap();
        }
        let store = dir.path().join("elsewhere.db");
        std::fs::write(&store, "x").unwrap();
        let msg = refuse_used(&out, "a run", &[&store]).unwrap_err().to_string();
        assert!(msg.contains("elsewhere.db") && msg.contains("already exists"), "{msg}");
    }
}
