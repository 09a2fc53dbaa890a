//! A district file (`scenarios/district/*.ron`): the towns of one district, each from a scenario (its own
//! seed) and either the scenario's town or a town generated to a size, each under its own topic root and
//! CloudEvents source; where their broker and their store are; whether each town has a standby core.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use towntwin_core::event::Namespace;
use towntwin_core::load::{DataErrors, Problems, read_ron};

/// The broker the district's towns share.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub enum BrokerSpec {
    /// The embedded broker (rumqttd) as a process of its own.
    #[default]
    Embedded,
    /// A nats-server cluster of this many nodes on loopback (nats-server 2.10 or later on the PATH); each
    /// core fails over between the nodes, the towns' twins spread over them.
    Cluster(usize),
    /// Brokers already running: `mqtt://host:port`, the nodes of one cluster.
    External(Vec<String>),
}

/// Where the district's towns keep their orders.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub enum StoreSpec {
    /// A throwaway PostgreSQL the district starts on loopback and removes when it stops.
    #[default]
    Local,
    /// A PostgreSQL database (`postgres://user@host:port/db`): each town in a schema named after its id
    /// (`-` as `_`), the district's registry beside them.
    Url(String),
}

/// A town generated to a size: the first `estates` estates and `roads` roads of the town the generator
/// makes from `seed` (Gaohang's layout, a smaller place).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Generate {
    pub seed: u64,
    pub estates: usize,
    pub roads: usize,
}

/// One town of the district.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TownSpec {
    /// Its id: the topic root (`{id}/town/...`), the CloudEvents source (`/{id}/...`), the store's schema.
    pub id: String,
    pub name: String,
    /// The scenario its twin runs, relative to the district file.
    pub scenario: String,
    /// The scenario's seed, replaced (each town its own).
    #[serde(default)]
    pub seed: Option<u64>,
    /// A generated town instead of the scenario's own.
    #[serde(default)]
    pub generate: Option<Generate>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DistrictFile {
    pub name: String,
    /// Simulated days of every town (each scenario's own otherwise).
    #[serde(default)]
    pub days: Option<u32>,
    #[serde(default)]
    pub broker: BrokerSpec,
    #[serde(default)]
    pub store: StoreSpec,
    /// A standby core for every town, waiting on the town's lock in the store.
    #[serde(default)]
    pub standby: bool,
    pub towns: Vec<TownSpec>,
}

/// The most towns one district file may run on one machine (each a twin and one or two cores).
pub const MAX_TOWNS: usize = 36;

/// A checked district file, with its towns' scenario files resolved.
#[derive(Debug, Clone)]
pub struct District {
    pub file: PathBuf,
    pub spec: DistrictFile,
    /// Each town's namespace and scenario file, in the file's order.
    pub towns: Vec<(Namespace, PathBuf)>,
}

impl District {
    /// Reads and checks a district file: every problem at once, each naming the field.
    pub fn load(file: &Path) -> Result<District, DataErrors> {
        let spec: DistrictFile = read_ron(file).map_err(|e| DataErrors(vec![e]))?;
        let mut p = Problems::new(file);
        p.check(!spec.towns.is_empty(), || "towns".into(), || "a district names at least one town".into());
        p.check(spec.towns.len() <= MAX_TOWNS, || "towns".into(), || format!("{} towns: at most {MAX_TOWNS} on one machine", spec.towns.len()));
        if let Some(d) = spec.days {
            p.check((1..=366).contains(&d), || "days".into(), || format!("expected 1..=366 days, got {d}"));
        }
        match &spec.broker {
            BrokerSpec::Cluster(n) => p.check((1..=9).contains(n), || "broker".into(), || format!("Cluster({n}): 1 to 9 nodes")),
            BrokerSpec::External(urls) => {
                p.check(!urls.is_empty(), || "broker".into(), || "External([...]) names at least one mqtt://host:port".into());
                for (i, u) in urls.iter().enumerate() {
                    if let Err(e) = crate::broker::parse_url(u) {
                        p.push(format!("broker[{i}]"), e.to_string());
                    }
                }
            }
            BrokerSpec::Embedded => {}
        }
        if let StoreSpec::Url(u) = &spec.store
            && let Err(e) = u.parse::<towntwin_core::store::postgres::Url>()
        {
            p.push("store", e);
        }
        let dir = file.parent().unwrap_or(Path::new("."));
        let mut seen = HashSet::new();
        let mut towns = Vec::new();
        for (i, t) in spec.towns.iter().enumerate() {
            let at = |f: &str| format!("towns[{i}] ({}).{f}", t.id);
            let scenario = dir.join(&t.scenario);
            if !scenario.is_file() {
                p.push(at("scenario"), format!("no scenario file {}", scenario.display()));
            }
            match Namespace::town(&t.id) {
                Ok(ns) => {
                    if !seen.insert(t.id.clone()) {
                        p.push(at("id"), format!("two towns with the id `{}`: each town needs a topic root of its own", t.id));
                    }
                    towns.push((ns, scenario));
                }
                Err(e) => p.push(at("id"), e),
            }
            p.check(!t.name.trim().is_empty(), || at("name"), || "a town needs a name".into());
            if let Some(g) = t.generate {
                p.check(
                    (1..=82).contains(&g.estates),
                    || at("generate.estates"),
                    || format!("1 to 82 estates (the generator's town has 82), got {}", g.estates),
                );
                p.check(g.roads <= 20, || at("generate.roads"), || format!("0 to 20 roads, got {}", g.roads));
            }
        }
        p.finish()?;
        Ok(District { file: file.to_path_buf(), spec, towns })
    }
}

/// The store schema of a town: its id with `-` as `_` (a schema name takes no `-`).
pub fn schema_of(id: &str) -> String {
    id.replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<District, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.ron"), "()").unwrap();
        let f = dir.path().join("d.ron");
        std::fs::write(&f, text).unwrap();
        District::load(&f).map_err(|e| e.to_string())
    }

    #[test]
    fn a_district_file_is_refused_naming_each_problem() {
        let ok = load(r#"(name: "d", towns: [(id: "a", name: "A", scenario: "s.ron"), (id: "b-2", name: "B", scenario: "s.ron", generate: Some((seed: 1, estates: 3, roads: 1)))])"#).unwrap();
        assert_eq!(ok.towns.len(), 2);
        assert_eq!(ok.towns[1].0.events_filter(), "b-2/town/#");
        assert_eq!(schema_of("b-2"), "b_2");
        let e = load(r#"(name: "d", towns: [(id: "a", name: "A", scenario: "s.ron"), (id: "a", name: "A2", scenario: "s.ron")])"#).unwrap_err();
        assert!(e.contains("towns[1] (a).id") && e.contains("topic root of its own"), "{e}");
        let e = load(r#"(name: "d", towns: [(id: "town", name: "T", scenario: "missing.ron")])"#).unwrap_err();
        assert!(e.contains("reserved") && e.contains("missing.ron"), "{e}");
        let e = load(r#"(name: "d", towns: [(id: "Big Town", name: "", scenario: "s.ron", generate: Some((seed: 1, estates: 0, roads: 1)))])"#).unwrap_err();
        assert!(e.contains("a-z") && e.contains("needs a name") && e.contains("generate.estates"), "{e}");
        let e = load(r#"(name: "d", broker: External(["http://x"]), store: Url("mysql://x"), towns: [])"#).unwrap_err();
        assert!(e.contains("broker[0]") && e.contains("store") && e.contains("at least one town"), "{e}");
        let e = load(r#"(name: "d", towns: [(id: "a", name: "A", scenario: "s.ron", colour: 1)])"#).unwrap_err();
        assert!(e.contains("colour"), "{e}");
    }
}
