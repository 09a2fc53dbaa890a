//! Broker credentials for the town, generated from the town model: one user per device (who may publish
//! only under its own topic), one per estate gateway and road, the clock, the twin's single gateway, the
//! core, and the twin's observers. `towntwin town credentials --out DIR` writes
//!
//! - `passwd`: a mosquitto password file (PBKDF2-SHA512 hashes, mosquitto's `$7$` format);
//! - `acl`: a mosquitto ACL file (`user X` + `topic write|read ...`);
//! - `credentials.csv`: `user,password` for the clients (the twin and the core read it; mode 0600).
//!
//! Passwords are secrets, not simulation: they come from the operating system's generator, never from the
//! run's seed. The embedded broker (rumqttd) has no per-topic ACL; with it, clients connect anonymously and
//! only the core's own check (an event's `source` must match its topic) ties a message to its device.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine as _;
use rand::RngCore as _;
use towntwin_core::event::{HOTLINE_KIND, TOWN_AREA};
use towntwin_core::town::Town;

use crate::UsageFault;

/// mosquitto's default PBKDF2 iteration count for `$7$` hashes.
const ITERATIONS: u32 = 101;

/// The core's user: reads the town's events, writes work orders, watermarks and dead letters.
pub const CORE: &str = "core";
/// The twin's one connection in `--connections one` mode.
pub const GATEWAY: &str = "twin-gateway";
/// The town clock (in estate and device modes).
pub const CLOCK: &str = "twin-clock";
/// The 12345 hotline's line into the platform (in device mode; an estate's gateway carries its calls in
/// estate mode).
pub const HOTLINE: &str = "twin-hotline";
/// The twin's observers and responders: read everything the core and the devices say.
pub const OBSERVER: &str = "twin-observer";

/// One broker user: its name and what it may publish and read.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub write: Vec<String>,
    pub read: Vec<String>,
}

/// Every user the town needs, in a stable order.
pub fn users(town: &Town) -> Vec<User> {
    let user = |name: &str, write: &[String], read: &[&str]| User {
        name: name.to_string(),
        write: write.to_vec(),
        read: read.iter().map(|s| s.to_string()).collect(),
    };
    let mut out = vec![
        user(CORE, &["orders/#".into(), "deadletter/#".into()], &["town/#"]),
        user(GATEWAY, &["town/#".into()], &[]),
        user(CLOCK, &[format!("town/{TOWN_AREA}/#")], &[]),
        // The estates' report lines: 12345, the QR code and the patrol.
        user(HOTLINE, &towntwin_core::event::Line::ALL.map(|l| format!("town/+/{HOTLINE_KIND}/{}/hotline.call", l.device())), &[]),
        user(OBSERVER, &[], &["town/#", "orders/#", "deadletter/#"]),
    ];
    let areas = town.estates.iter().map(|e| (e.id.as_str(), &e.devices)).chain(town.roads.iter().map(|r| (r.id.as_str(), &r.devices)));
    for (area, devices) in areas {
        // An estate's gateway (`--connections estate`) publishes for the devices of its area only.
        out.push(user(&gateway_of(area), &[format!("town/{area}/#")], &[]));
        for d in devices {
            // `town/{area}/{kind}/{device}/{type}`: the device's own topics and no other.
            out.push(user(&d.id, &[format!("town/{area}/{}/{}/+", d.kind.slug(), d.id)], &[]));
        }
    }
    out
}

/// The user of an area's gateway.
pub fn gateway_of(area: &str) -> String {
    format!("gw-{area}")
}

/// A mosquitto `$7$` hash of `password` (PBKDF2-HMAC-SHA512, 12-byte salt, 64-byte key).
pub fn mosquitto_hash(password: &str, salt: &[u8; 12]) -> String {
    let mut key = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password.as_bytes(), salt, ITERATIONS, &mut key);
    let b64 = base64::engine::general_purpose::STANDARD;
    format!("$7${ITERATIONS}${}${}", b64.encode(salt), b64.encode(key))
}

fn secret() -> String {
    let mut bytes = [0u8; 18];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What `write` made.
#[derive(Debug)]
pub struct Written {
    pub users: usize,
    pub passwd: PathBuf,
    pub acl: PathBuf,
    pub credentials: PathBuf,
}

/// Writes `passwd`, `acl` and `credentials.csv` for `town` into `dir` (created if need be). A folder that
/// already holds any of them is refused: new passwords would lock out every device set up with the old.
pub fn write(town: &Town, dir: &Path) -> Result<Written> {
    let (passwd, acl, credentials) = (dir.join("passwd"), dir.join("acl"), dir.join("credentials.csv"));
    for f in [&passwd, &acl, &credentials] {
        if f.exists() {
            return Err(UsageFault(format!("{} exists: credentials are written once; give an empty folder", f.display())).into());
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let users = users(town);
    let (mut pw, mut rules, mut csv) = (String::new(), String::new(), String::from("user,password\n"));
    for u in &users {
        let password = secret();
        let mut salt = [0u8; 12];
        rand::rng().fill_bytes(&mut salt);
        let _ = writeln!(pw, "{}:{}", u.name, mosquitto_hash(&password, &salt));
        let _ = writeln!(csv, "{},{password}", u.name);
        let _ = writeln!(rules, "user {}", u.name);
        for t in &u.write {
            let _ = writeln!(rules, "topic write {t}");
        }
        for t in &u.read {
            let _ = writeln!(rules, "topic read {t}");
        }
        rules.push('\n');
    }
    write_private(&passwd, &pw)?;
    std::fs::write(&acl, rules).with_context(|| format!("cannot write {}", acl.display()))?;
    write_private(&credentials, &csv)?;
    Ok(Written { users: users.len(), passwd, acl, credentials })
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

/// The passwords of `credentials.csv`, by user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    by_user: BTreeMap<String, String>,
}

impl Credentials {
    /// Reads `DIR/credentials.csv` (or the file itself); a malformed line is an error naming it.
    pub fn load(path: &Path) -> Result<Credentials> {
        let file = if path.is_dir() { path.join("credentials.csv") } else { path.to_path_buf() };
        let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
        let mut by_user = BTreeMap::new();
        for (i, line) in text.lines().enumerate().skip(1) {
            let Some((user, password)) = line.split_once(',').filter(|(u, p)| !u.is_empty() && !p.is_empty()) else {
                let e = towntwin_core::load::DataError::at(&file, format!("line {}", i + 1), "expected `user,password`");
                return Err(crate::DataFault(towntwin_core::load::DataErrors(vec![e])).into());
            };
            by_user.insert(user.to_string(), password.to_string());
        }
        Ok(Credentials { by_user })
    }

    /// The login of `user`, if the file has it.
    pub fn login(&self, user: &str) -> Option<(String, String)> {
        self.by_user.get(user).map(|p| (user.to_string(), p.clone()))
    }

    pub fn len(&self) -> usize {
        self.by_user.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_user.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_in_mosquittos_format_and_every_device_a_user_of_its_own_topic() {
        let h = mosquitto_hash("secret", &[7u8; 12]);
        let parts: Vec<&str> = h.split('$').collect();
        assert_eq!(parts[..3], ["", "7", "101"]);
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(parts[3]).unwrap(), [7u8; 12]);
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(parts[4]).unwrap().len(), 64);
        let town = towntwin_sim::generate::small(3, 2, 1);
        let users = users(&town);
        let devices = town.estates.iter().map(|e| e.devices.len()).sum::<usize>() + town.roads.iter().map(|r| r.devices.len()).sum::<usize>();
        assert_eq!(users.len(), 5 + town.estates.len() + town.roads.len() + devices);
        // The residents' lines (12345, the QR code, the patrols) may post reports for any estate, and nothing else.
        let hotline = users.iter().find(|u| u.name == HOTLINE).unwrap();
        assert_eq!(hotline.write, ["town/+/hotline/12345/hotline.call", "town/+/hotline/qr/hotline.call", "town/+/hotline/patrol/hotline.call"]);
        let d = &town.estates[0].devices[0];
        let u = users.iter().find(|u| u.name == d.id).unwrap();
        assert_eq!(u.write, [format!("town/{}/{}/{}/+", town.estates[0].id, d.kind.slug(), d.id)]);
        assert!(u.read.is_empty());
    }
}
