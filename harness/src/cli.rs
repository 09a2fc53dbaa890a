//! The command line as clap parses it: every command, subcommand and flag, with its help text. `main.rs`
//! dispatches what it parsed.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use towntwin_core::store::Location;
use towntwin_harness::mqtt::Mode;
use towntwin_harness::run::{Speed, asset, default_scenario};

#[derive(Parser)]
#[command(name = "towntwin", version, about = "A digital twin of Gaohang town's smart-community platform")]
pub struct Cli {
    /// Logs on stderr as text, or as one JSON object per line (for a log collector). `TOWNTWIN_LOG` filters them.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run a scenario: the twin publishes the town's device traffic to a broker (embedded by default).
    Run(RunArgs),
    /// Generate or check the town model.
    #[command(subcommand)]
    Town(TownCommand),
    /// Check a scenario file.
    #[command(subcommand)]
    Scenario(ScenarioCommand),
    /// A district: several towns (scenarios/district/*.ron) on one broker or broker cluster and one
    /// PostgreSQL, each town's twin and core (and standby core) a process of its own under its own topic
    /// root; then every town's orders, and the district's API and console over them.
    #[command(subcommand)]
    District(DistrictCommand),
    /// Run the rules and work-order core as a service on a broker, until interrupted; or manage its tokens.
    #[command(args_conflicts_with_subcommands = true)]
    Core {
        #[command(subcommand)]
        action: Option<CoreAction>,
        #[command(flatten)]
        serve: CoreArgs,
    },
    /// Run a planners' experiment (scenarios/experiments/*.ron): replications of each variant on common
    /// random numbers, on all cores, then KPIs with 95% intervals, paired differences, validity checks,
    /// plots and report.html in the results folder. A folder holding the same plan resumes.
    #[command(args_conflicts_with_subcommands = true)]
    Experiment {
        #[command(subcommand)]
        action: Option<ExperimentAction>,
        #[command(flatten)]
        run: ExperimentArgs,
    },
    /// Load-test the core as deployed: `towntwin core` in its own process, the twin's traffic sent open loop
    /// at the profile's rates (scenarios/load/*.ron), faults injected on schedule, every event and work order
    /// accounted for; report in the results folder. Exit 1 when the SLO is missed, 3 when the run is invalid
    /// (the generator could not keep to its schedule). With `--generator i/n`, one generator of several
    /// against a core that runs on its own; `towntwin load merge` joins them.
    #[command(args_conflicts_with_subcommands = true)]
    Load {
        #[command(subcommand)]
        action: Option<LoadAction>,
        #[command(flatten)]
        run: LoadArgs,
    },
    /// An operator drill (scenarios/drills/*.ron, a master scenario events list): the embedded broker, the
    /// core (its API where the trainees work) and the town's twin, the town at full speed up to the drill's
    /// minute 0 and then at --speed; injects made real in the twin as their start conditions come; the
    /// controller's panel over HTTP (start, pause, resume, speed, fire or skip an inject, stop); then the
    /// after-action report (aar.html in Chinese, aar.en.html, aar.json) in the drill's folder. The script is checked first (exit 2
    /// naming file, field and reason when it is refused).
    Drill {
        /// The drill script (not needed with --replay).
        #[arg(required_unless_present = "replay")]
        file: Option<PathBuf>,
        /// Check the script and print its events list, without running it.
        #[arg(long)]
        check: bool,
        /// With --check: print the events list as CSV in HSEEP's MSEL columns.
        #[arg(long, requires = "check")]
        csv: bool,
        /// Read a master scenario events list (CSV, HSEEP's columns: as --check --csv writes it) as the
        /// script's injects, check the result, and print it as a script.
        #[arg(long, value_name = "MSEL_CSV", conflicts_with = "check")]
        import_msel: Option<PathBuf>,
        /// Town minutes per wall minute once the drill starts (default 1: real time; 3600 with --play).
        #[arg(long)]
        speed: Option<f64>,
        /// The drill's folder (default: results/drills/<name>-<unix time>); its name is the exercise id.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Where the core serves its API and console (port 0: a free one; the address is printed).
        #[arg(long, default_value = "127.0.0.1:0")]
        http: std::net::SocketAddr,
        /// Where the controller's panel listens (port 0: a free one; the address is printed).
        #[arg(long, default_value = "127.0.0.1:0")]
        control: std::net::SocketAddr,
        /// Hold at minute 0 until the controller starts the drill (POST /drill/start).
        #[arg(long)]
        wait_for_start: bool,
        /// Scripted trainees do what the script expects of them through the API: every trainee
        /// (`--play`), or those named (`--play=cadre,housing`) beside people at the console.
        #[arg(long, num_args = 0..=1, require_equals = true, value_delimiter = ',', default_missing_value = "")]
        play: Option<Vec<String>>,
        /// Score a finished drill again from its folder (drill-log.json and the core's store).
        #[arg(long, conflicts_with_all = ["file", "check"])]
        replay: Option<PathBuf>,
    },
    /// Run the embedded broker (rumqttd, patched: harness/vendor/rumqttd) on a loopback port until interrupted.
    Broker {
        /// Loopback port (0: a free one; the address is printed).
        #[arg(long, default_value_t = 1883)]
        port: u16,
        /// MiB of the stream kept in memory per subscription filter (about twice that resident): a
        /// subscriber further behind loses the oldest messages.
        #[arg(long, default_value_t = 320, value_parser = clap::value_parser!(u64).range(10..=65_536))]
        log_mib: u64,
    },
    /// Measure a broker's raw ceiling for messages of a given size.
    Ceiling {
        /// Broker to measure (default: start the embedded one).
        #[arg(long)]
        broker: Option<String>,
        #[arg(long, default_value_t = 200_000)]
        messages: u64,
        #[arg(long, default_value_t = 400)]
        size: usize,
    },
}

#[derive(clap::Args)]
pub struct ExperimentArgs {
    /// The experiment file.
    pub file: Option<PathBuf>,
    /// Results folder (default: results/experiments/<name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replications run at once (default: the machine's cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Run only the slice i of n of the replications (k % n == i - 1), e.g. for a batch array job; join the
    /// slices with `towntwin experiment merge`.
    #[arg(long, value_parser = towntwin_harness::experiment::parse_shard)]
    pub shard: Option<(u32, u32)>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(clap::Args)]
pub struct LoadArgs {
    /// The load profile.
    pub profile: Option<PathBuf>,
    /// A broker on loopback, `mqtt://127.0.0.1:PORT` (default: the embedded broker, as its own process);
    /// with --generator, the broker (or a cluster's nodes) the core takes its events from.
    #[arg(long)]
    pub broker: Option<String>,
    /// Results folder (default: results/load/<profile>-<unix time>); must not hold a run already.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Search for the highest steady rate that holds the profile's SLO (its `find_max` block, or from
    /// 5,000 events/s x1.5 a step): each trial's report in DIR/rate-N, the search in DIR/knee.md.
    #[arg(long, conflicts_with = "generator")]
    pub find_max: bool,
    /// Be generator i of n: send only the events of the devices numbered k with k mod n = i - 1 (and, for
    /// generator 1, the clock and the report lines) to --broker, where a core runs on its own (`towntwin
    /// core --order minutes`); write this generator's record and HdrHistogram log to --out. Join the
    /// generators with `towntwin load merge`.
    #[arg(long, value_name = "I/N", value_parser = towntwin_harness::load::slice::Slice::parse, requires = "broker")]
    pub generator: Option<towntwin_harness::load::slice::Slice>,
    /// With --generator: the agreed start, milliseconds since the Unix epoch, the same for every generator
    /// (e.g. `$(( $(date +%s%3N) + 30000 ))`: 30 s from now). Needed when n > 1.
    #[arg(long, value_name = "UNIX_MS", requires = "generator")]
    pub start_at: Option<i64>,
}

#[derive(Subcommand)]
pub enum LoadAction {
    /// Join the records of a load's generators (`towntwin load PROFILE --generator i/n`) into one run's
    /// report, judged against the core's store: every event and work order accounted for, latency from the
    /// generators' histograms added together.
    Merge {
        /// The generators' folders, one for each of 1..n.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// The core's store: its --db (a SQLite file or a postgres:// URL).
        #[arg(long)]
        store: towntwin_core::store::Location,
        /// The profile (default: the path the generators read it from).
        #[arg(long)]
        profile: Option<PathBuf>,
        /// Folder for the merged report; must not hold a run already.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum ExperimentAction {
    /// Join the replications of shards (or interrupted runs) of one experiment and write its report.
    Merge {
        /// Results folders of the shards.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Folder for the merged results and report.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(clap::Args)]
pub struct CoreArgs {
    /// Broker to subscribe to, `mqtt://host:port`.
    #[arg(long)]
    pub broker: Option<String>,
    /// The core's store, resumed from: a SQLite file, or a town's schema in PostgreSQL
    /// (`postgres://user@host:port/db?schema=gaohang`; the core holds the town's advisory lock there).
    #[arg(long, alias = "store", default_value = "towntwin-core.db")]
    pub db: Location,
    #[arg(long, default_value_os_t = asset("assets/town.ron"))]
    pub town: PathBuf,
    #[arg(long, default_value_os_t = asset("assets/rules.ron"))]
    pub rules: PathBuf,
    #[arg(long, default_value_os_t = asset("scenarios/policies/standard.ron"))]
    pub policy: PathBuf,
    /// MQTT client id: keep it across restarts so the broker keeps the session.
    #[arg(long, default_value = "towntwin-core")]
    pub client_id: String,
    /// Topic filter this instance owns (default: every event of the town, `town/#` or `ID/town/#`).
    #[arg(long)]
    pub filter: Option<String>,
    /// The town's id in a district: take its events under `ID/town/#` whose source is `/ID/...`, publish
    /// its orders under `ID/orders/...` (default: the single town).
    #[arg(long, value_name = "ID", value_parser = town_namespace)]
    pub town_id: Option<towntwin_core::event::Namespace>,
    /// Threads that decode the broker's messages ahead of the one that applies and commits them, in the
    /// order they came (the orders are the same for any number; 1: that one decodes too).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub partitions: u16,
    /// Messages a batch (one commit, one acknowledgement write) holds at most: a third of the broker's window
    /// of unacknowledged QoS 1 messages to one client keeps it sending while a batch commits (stock rumqttd:
    /// 100; the embedded broker: 1,000; mosquitto: `max_inflight_messages`, 20 unless configured).
    #[arg(long, default_value_t = 34, value_parser = clap::value_parser!(u16).range(1..=10_000))]
    pub batch_max: u16,
    /// Serve the HTTP JSON API on this address, e.g. 127.0.0.1:8080.
    #[arg(long)]
    pub http: Option<std::net::SocketAddr>,
    /// Log in to the broker as user `core` with the credentials `towntwin town credentials` wrote (the folder
    /// or its credentials.csv).
    #[arg(long)]
    pub credentials: Option<PathBuf>,
    /// Take only the events of this exercise (an operator drill's `exerciseid`), none of the town's own.
    #[arg(long)]
    pub exercise: Option<String>,
    /// Start as the town's standby: wait until its active core lets go of the store (a PostgreSQL store's
    /// lock), then take over with the same client id (the broker's session resumes). Nothing connects to the
    /// broker before.
    #[arg(long)]
    pub standby: bool,
    /// In what order to apply the events: `arrival`, as they come (one broker keeps the twin's order), or
    /// `minutes`, a minute at a time once it is whole, in a fixed order: the same orders whatever order the
    /// broker delivered them in (a broker cluster, whose QoS 0 and QoS 1 take different paths and whose
    /// redeliveries come late). A store must be resumed in the order it was written.
    #[arg(long, default_value = "arrival", value_name = "ORDER")]
    pub order: towntwin_core::service::Order,
}

#[derive(Subcommand)]
pub enum DistrictCommand {
    /// Run the district: its broker (embedded, a nats-server cluster, or given), its PostgreSQL (a
    /// throwaway one, or given), every town's core (and standby) and twin; print and write (district.json)
    /// every town's events and orders as the store holds them.
    Run {
        /// The district file.
        file: PathBuf,
        /// Results folder (default: results/district-<name>-<unix time>); must not hold a run already.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Then serve the district's API and console here (e.g. 127.0.0.1:8090) until interrupted; prints
        /// a `district` token for them.
        #[arg(long)]
        serve: Option<std::net::SocketAddr>,
        /// Kill the active core of town ID with SIGKILL once its store holds EVENTS events (`ID:EVENTS`);
        /// its standby takes over, and the takeover time is reported.
        #[arg(long, value_name = "ID:EVENTS", value_parser = kill_core)]
        kill_core: Option<(String, u64)>,
        /// Restart the district's own PostgreSQL (`store: Local`) once the first town's store holds EVENTS
        /// events: every core's session ends; the time until each town logs again is reported.
        #[arg(long, value_name = "EVENTS")]
        restart_store: Option<u64>,
        /// Kill a node of the district's own broker cluster (`broker: Cluster(n)`) with SIGKILL once the
        /// towns' stores together hold EVENTS events (`NODE:EVENTS`; NODE from 1, or `follower`: the first
        /// node that does not lead the stream of QoS 1 messages). Each town's twin and cores fail over to
        /// the next node; the time until each town logs again is reported.
        #[arg(long, value_name = "NODE:EVENTS", value_parser = kill_node)]
        kill_node: Option<(towntwin_harness::district::NodeChoice, u64)>,
    },
    /// Check a district file (and each town's scenario) without running it.
    Check { file: PathBuf },
    /// Serve the district's API and console over a PostgreSQL database its towns' cores write, until
    /// interrupted.
    Serve {
        /// The database (`postgres://user@host:port/db`; its schema parameter is ignored).
        #[arg(long)]
        store: towntwin_core::store::postgres::Url,
        #[arg(long, default_value = "127.0.0.1:8090")]
        http: std::net::SocketAddr,
    },
    /// The district's own tokens (a town's are its core's: `towntwin core token issue`).
    #[command(subcommand)]
    Token(DistrictTokenCommand),
}

#[derive(Subcommand)]
pub enum DistrictTokenCommand {
    /// Issue a `district` token (sees every town); prints it once.
    Issue {
        #[arg(long)]
        store: towntwin_core::store::postgres::Url,
        /// `district`, optionally `/name`.
        #[arg(long, default_value = "district")]
        principal: String,
        /// How long the token is valid: `90d`, `12h`, `30m`, or `never`.
        #[arg(long, default_value = "90d")]
        expires_in: Validity,
    },
    /// Revoke every district token of a principal. Exit 2 when none matched.
    Revoke {
        #[arg(long)]
        store: towntwin_core::store::postgres::Url,
        #[arg(long)]
        principal: String,
    },
}

/// `ID:EVENTS`, as `--kill-core` takes it.
fn kill_core(s: &str) -> Result<(String, u64), String> {
    let (id, n) = s.split_once(':').ok_or_else(|| format!("{s:?}: expected ID:EVENTS, e.g. jinqiao:5000"))?;
    let n: u64 = n.parse().map_err(|_| format!("{s:?}: EVENTS must be a whole number"))?;
    towntwin_core::event::Namespace::check_id(id)?;
    Ok((id.to_string(), n))
}

/// `NODE:EVENTS`, as `--kill-node` takes it.
fn kill_node(s: &str) -> Result<(towntwin_harness::district::NodeChoice, u64), String> {
    let (node, n) = s.split_once(':').ok_or_else(|| format!("{s:?}: expected NODE:EVENTS, e.g. follower:3000 or 2:3000"))?;
    let n: u64 = n.parse().map_err(|_| format!("{s:?}: EVENTS must be a whole number"))?;
    Ok((node.parse()?, n))
}

#[derive(Subcommand)]
pub enum CoreAction {
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The audit log (every transition, refusal and token, hash-chained).
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the audit log's hash chain; prints its length and head (record the head to detect a cut at the
    /// end later). Exit 1 and the first broken entry if it was changed, removed or inserted into.
    Verify {
        /// The core's store (a SQLite file or a `postgres://` URL).
        #[arg(long, alias = "store", default_value = "towntwin-core.db")]
        db: Location,
        /// A head printed by an earlier verify: the log must still contain it.
        #[arg(long)]
        head: Option<String>,
    },
    /// Print the last entries, one per line.
    Show {
        /// The core's store (a SQLite file or a `postgres://` URL).
        #[arg(long, alias = "store", default_value = "towntwin-core.db")]
        db: Location,
        /// How many entries from the end.
        #[arg(long, default_value_t = 20)]
        tail: usize,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Issue a token for a principal into the core's store (it may be running); prints the token once.
    Issue {
        /// `district`, `town`, `committee:C05`, `estate:E012`, optionally `/name`.
        #[arg(long)]
        principal: String,
        /// The core's store (a SQLite file or a `postgres://` URL).
        #[arg(long, alias = "store", default_value = "towntwin-core.db")]
        db: Location,
        /// How long the token is valid: `90d`, `12h`, `30m`, or `never`.
        #[arg(long, default_value = "90d")]
        expires_in: Validity,
    },
    /// Revoke tokens (a core running on the store refuses them at once); each is audited. Exit 2 when nothing
    /// matched a valid token.
    Revoke {
        /// The token to revoke, as it was printed.
        #[arg(long, conflicts_with = "principal", required_unless_present = "principal")]
        token: Option<String>,
        /// Revoke every token of this principal.
        #[arg(long)]
        principal: Option<String>,
        /// The core's store (a SQLite file or a `postgres://` URL).
        #[arg(long, alias = "store", default_value = "towntwin-core.db")]
        db: Location,
    },
}

/// How long a token is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity(pub Option<u64>);

impl std::str::FromStr for Validity {
    type Err = String;

    fn from_str(s: &str) -> Result<Validity, String> {
        if s == "never" {
            return Ok(Validity(None));
        }
        let expected = || format!("{s:?}: expected a whole number of minutes, hours or days (`30m`, `12h`, `90d`) or `never`");
        let (n, unit) = s.split_at(s.len().saturating_sub(1));
        let n: u64 = n.parse().map_err(|_| expected())?;
        let ms = match unit {
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(expected()),
        };
        if n == 0 || n > 3650 * 86_400_000 / ms {
            return Err(format!("{s:?}: between one minute and ten years"));
        }
        Ok(Validity(Some(n * ms)))
    }
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// Scenario file.
    #[arg(long, default_value_os_t = default_scenario())]
    pub scenario: PathBuf,
    /// Simulated days (overrides the scenario's).
    #[arg(long)]
    pub days: Option<u32>,
    /// Seed (overrides the scenario's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// `max`, or a multiple of real time: 1 for drills, 60, 3600.
    #[arg(long, default_value = "max")]
    pub speed: Speed,
    /// `mqtt://host:port` of an external broker; `none` to run without network. Default: embedded rumqttd.
    #[arg(long)]
    pub broker: Option<String>,
    /// One MQTT connection in all, one per estate gateway, or one per device.
    #[arg(long, value_enum, default_value_t = Mode::One)]
    pub connections: Mode,
    /// Results folder (default: results/<scenario>-<seed>-<unix time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Worker threads for the twin's ECS (the output is the same for any number).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Do not subscribe to town/# to count delivered messages.
    #[arg(long)]
    pub no_observe: bool,
    /// Check that every delivered payload is a valid CloudEvent.
    #[arg(long)]
    pub validate: bool,
    /// Also measure the broker's raw ceiling for messages of the run's mean size.
    #[arg(long)]
    pub ceiling: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Run without the rules and work-order core.
    #[arg(long)]
    pub no_core: bool,
    /// Feed the core the twin's messages directly instead of over the broker.
    #[arg(long)]
    pub in_process: bool,
    /// Rule set for the core.
    #[arg(long, default_value_os_t = asset("assets/rules.ron"))]
    pub rules: PathBuf,
    /// Escalation policy for the core (scenarios/policies/*.ron).
    #[arg(long, default_value_os_t = asset("scenarios/policies/standard.ron"))]
    pub policy: PathBuf,
    /// The core's store: a SQLite file (default: core.db in the results folder), or a town's schema in
    /// PostgreSQL (`postgres://user@host:port/db?schema=gaohang`).
    #[arg(long, alias = "store")]
    pub db: Option<Location>,
    /// Log every client in to the broker as its own user (devices, gateways, the clock, the core, the
    /// observers) with the credentials `towntwin town credentials` wrote. Needs --broker.
    #[arg(long)]
    pub credentials: Option<PathBuf>,
    /// The town's id in a district: its traffic under the topic root `ID/` (`ID/town/...`) and the
    /// CloudEvents source `/ID`, its core's under `ID/orders/...` (default: the single town, `town/...` and
    /// `/gaohang`).
    #[arg(long, value_name = "ID", value_parser = town_namespace)]
    pub town_id: Option<towntwin_core::event::Namespace>,
}

/// A town id, as `--town-id` takes it.
pub fn town_namespace(s: &str) -> Result<towntwin_core::event::Namespace, String> {
    towntwin_core::event::Namespace::town(s)
}

#[derive(Subcommand)]
pub enum TownCommand {
    /// Write the deterministic town model.
    Generate {
        #[arg(long, default_value_t = 20240913)]
        seed: u64,
        #[arg(long, default_value = "assets/town.ron")]
        out: PathBuf,
    },
    /// Write broker credentials for the town: a mosquitto password file and ACL (each device may publish
    /// only under its own topic), and credentials.csv for the twin and the core.
    Credentials {
        #[arg(long, default_value = "assets/town.ron")]
        town: PathBuf,
        /// An empty or new folder.
        #[arg(long)]
        out: PathBuf,
    },
    /// Load and validate a town file and print its census.
    Check {
        #[arg(default_value = "assets/town.ron")]
        file: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum ScenarioCommand {
    /// Load and validate a scenario file (and its town).
    Check { file: PathBuf },
}
