//! The `towntwin` command: parses arguments, sets up logging, calls the harness library, and maps how a
//! command ended to an exit code (the one table: `towntwin_harness::exit_code`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use towntwin_core::time::rfc3339;
use towntwin_core::town::Town;
use towntwin_harness::mqtt::Mode;
use towntwin_harness::run::{BrokerChoice, RunOptions, Speed, asset, default_scenario, render, run};
use towntwin_harness::status::Status;
use towntwin_harness::{DataFault, InvalidRun, UsageFault, exit_code};

#[derive(Parser)]
#[command(name = "towntwin", version, about = "A digital twin of Gaohang town's smart-community platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario: the twin publishes the town's device traffic to a broker (embedded by default).
    Run(RunArgs),
    /// Generate or check the town model.
    #[command(subcommand)]
    Town(TownCommand),
    /// Check a scenario file.
    #[command(subcommand)]
    Scenario(ScenarioCommand),
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
    /// (the generator could not keep to its schedule).
    Load {
        /// The load profile.
        profile: PathBuf,
        /// A broker on loopback, `mqtt://127.0.0.1:PORT` (default: the embedded broker, as its own process).
        #[arg(long)]
        broker: Option<String>,
        /// Results folder (default: results/load/<profile>-<unix time>); must not hold a run already.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Search for the highest steady rate that holds the profile's SLO (its `find_max` block, or from
        /// 5,000 events/s x1.5 a step): each trial's report in DIR/rate-N, the search in DIR/knee.md.
        #[arg(long)]
        find_max: bool,
    },
    /// An operator drill (scenarios/drills/*.ron, a master scenario events list): the embedded broker, the
    /// core (its API where the trainees work) and the town's twin, the town at full speed up to the drill's
    /// minute 0 and then at --speed; injects made real in the twin as their start conditions come; the
    /// controller's panel over HTTP (start, pause, resume, speed, fire or skip an inject, stop); then the
    /// after-action report (aar.html, aar.json) in the drill's folder. The script is checked first (exit 2
    /// naming file, field and reason when it is refused).
    Drill {
        /// The drill script (not needed with --replay).
        #[arg(required_unless_present = "replay")]
        file: Option<PathBuf>,
        /// Check the script and print its events list, without running it.
        #[arg(long)]
        check: bool,
        /// Town minutes per wall minute once the drill starts (1: real time).
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
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
        /// Score a finished drill again from its folder (drill-log.json and the core's store).
        #[arg(long, conflicts_with_all = ["file", "check"])]
        replay: Option<PathBuf>,
    },
    /// Run the embedded broker (rumqttd, patched: harness/vendor/rumqttd) on a loopback port until interrupted.
    Broker {
        /// Loopback port (0: a free one; the address is printed).
        #[arg(long, default_value_t = 1883)]
        port: u16,
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
struct ExperimentArgs {
    /// The experiment file.
    file: Option<PathBuf>,
    /// Results folder (default: results/experiments/<name>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replications run at once (default: the machine's cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Run only the slice i of n of the replications (k % n == i - 1), e.g. for a batch array job; join the
    /// slices with `towntwin experiment merge`.
    #[arg(long, value_parser = towntwin_harness::experiment::parse_shard)]
    shard: Option<(u32, u32)>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Subcommand)]
enum ExperimentAction {
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
struct CoreArgs {
    /// Broker to subscribe to, `mqtt://host:port`.
    #[arg(long)]
    broker: Option<String>,
    /// The core's SQLite file; state is resumed from it.
    #[arg(long, default_value = "towntwin-core.db")]
    db: PathBuf,
    #[arg(long, default_value_os_t = asset("assets/town.ron"))]
    town: PathBuf,
    #[arg(long, default_value_os_t = asset("assets/rules.ron"))]
    rules: PathBuf,
    #[arg(long, default_value_os_t = asset("scenarios/policies/standard.ron"))]
    policy: PathBuf,
    /// MQTT client id: keep it across restarts so the broker keeps the session.
    #[arg(long, default_value = "towntwin-core")]
    client_id: String,
    /// Topic filter this instance owns.
    #[arg(long, default_value = "town/#")]
    filter: String,
    /// Threads that decode the broker's messages ahead of the one that applies and commits them, in the
    /// order they came (the orders are the same for any number; 1: that one decodes too).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    partitions: u16,
    /// Messages a batch (one commit, one acknowledgement write) holds at most: a third of the broker's window
    /// of unacknowledged QoS 1 messages to one client keeps it sending while a batch commits (stock rumqttd:
    /// 100; the embedded broker: 1,000; mosquitto: `max_inflight_messages`, 20 unless configured).
    #[arg(long, default_value_t = 34, value_parser = clap::value_parser!(u16).range(1..=10_000))]
    batch_max: u16,
    /// Serve the HTTP JSON API on this address, e.g. 127.0.0.1:8080.
    #[arg(long)]
    http: Option<std::net::SocketAddr>,
    /// Log in to the broker as user `core` with the credentials `towntwin town credentials` wrote (the folder
    /// or its credentials.csv).
    #[arg(long)]
    credentials: Option<PathBuf>,
    /// Take only the events of this exercise (an operator drill's `exerciseid`), none of the town's own.
    #[arg(long)]
    exercise: Option<String>,
}

#[derive(Subcommand)]
enum CoreAction {
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The audit log (every transition, refusal and token, hash-chained).
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the audit log's hash chain; prints its length and head (record the head to detect a cut at the
    /// end later). Exit 1 and the first broken entry if it was changed, removed or inserted into.
    Verify {
        /// The core's SQLite file.
        #[arg(long, default_value = "towntwin-core.db")]
        db: PathBuf,
        /// A head printed by an earlier verify: the log must still contain it.
        #[arg(long)]
        head: Option<String>,
    },
    /// Print the last entries, one per line.
    Show {
        #[arg(long, default_value = "towntwin-core.db")]
        db: PathBuf,
        /// How many entries from the end.
        #[arg(long, default_value_t = 20)]
        tail: usize,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Issue a token for a principal into the core's store (it may be running); prints the token once.
    Issue {
        /// `district`, `town`, `committee:C05`, `estate:E012`, optionally `/name`.
        #[arg(long)]
        principal: String,
        /// The core's SQLite file.
        #[arg(long, default_value = "towntwin-core.db")]
        db: PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Scenario file.
    #[arg(long, default_value_os_t = default_scenario())]
    scenario: PathBuf,
    /// Simulated days (overrides the scenario's).
    #[arg(long)]
    days: Option<u32>,
    /// Seed (overrides the scenario's).
    #[arg(long)]
    seed: Option<u64>,
    /// `max`, or a multiple of real time: 1 for drills, 60, 3600.
    #[arg(long, default_value = "max")]
    speed: Speed,
    /// `mqtt://host:port` of an external broker; `none` to run without network. Default: embedded rumqttd.
    #[arg(long)]
    broker: Option<String>,
    /// One MQTT connection in all, one per estate gateway, or one per device.
    #[arg(long, value_enum, default_value_t = Mode::One)]
    connections: Mode,
    /// Results folder (default: results/<scenario>-<seed>-<unix time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Worker threads for the twin's ECS (the output is the same for any number).
    #[arg(long)]
    threads: Option<usize>,
    /// Do not subscribe to town/# to count delivered messages.
    #[arg(long)]
    no_observe: bool,
    /// Check that every delivered payload is a valid CloudEvent.
    #[arg(long)]
    validate: bool,
    /// Also measure the broker's raw ceiling for messages of the run's mean size.
    #[arg(long)]
    ceiling: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    /// Run without the rules and work-order core.
    #[arg(long)]
    no_core: bool,
    /// Feed the core the twin's messages directly instead of over the broker.
    #[arg(long)]
    in_process: bool,
    /// Rule set for the core.
    #[arg(long, default_value_os_t = asset("assets/rules.ron"))]
    rules: PathBuf,
    /// Escalation policy for the core (scenarios/policies/*.ron).
    #[arg(long, default_value_os_t = asset("scenarios/policies/standard.ron"))]
    policy: PathBuf,
    /// The core's SQLite file (default: core.db in the results folder).
    #[arg(long)]
    db: Option<PathBuf>,
    /// Log every client in to the broker as its own user (devices, gateways, the clock, the core, the
    /// observers) with the credentials `towntwin town credentials` wrote. Needs --broker.
    #[arg(long)]
    credentials: Option<PathBuf>,
}

#[derive(Subcommand)]
enum TownCommand {
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
enum ScenarioCommand {
    /// Load and validate a scenario file (and its town).
    Check { file: PathBuf },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("TOWNTWIN_LOG").unwrap_or_else(|_| "warn,rumqttd=off".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    towntwin_harness::raise_fd_limit();
    if let Err(e) = dispatch(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(exit_code(&e));
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(a) => {
            let broker = match a.broker.as_deref() {
                None | Some("embedded") => BrokerChoice::Embedded,
                Some("none") => BrokerChoice::None,
                Some(url) => BrokerChoice::External(url.to_string()),
            };
            let opts = RunOptions {
                scenario: a.scenario,
                days: a.days,
                seed: a.seed,
                speed: a.speed,
                broker,
                connections: a.connections,
                out: a.out,
                threads: a.threads,
                observe: !a.no_observe,
                validate: a.validate,
                ceiling: a.ceiling,
                progress: !a.quiet,
                core: !a.no_core,
                in_process: a.in_process,
                rules: a.rules,
                policy: a.policy,
                db: a.db,
                credentials: a.credentials,
            };
            let summary = run(&opts)?;
            print!("{}", render(&summary));
            if let Some(n) = &summary.network
                && n.qos1_unacknowledged > 0
            {
                anyhow::bail!(
                    "{} of {} QoS 1 messages were never acknowledged by the broker {} (the summary is written)",
                    n.qos1_unacknowledged,
                    n.published_qos1,
                    n.broker
                );
            }
            Ok(())
        }
        Command::Town(TownCommand::Generate { seed, out }) => {
            let town = towntwin_sim::generate::generate(seed);
            town.validate(&out).map_err(DataFault).context("the generator made an invalid town")?;
            std::fs::write(&out, towntwin_sim::generate::to_ron(&town)).with_context(|| format!("cannot write {}", out.display()))?;
            let c = town.census();
            println!(
                "wrote {}: {} estates, {} residents, {} gates, {} sensors, {} cameras",
                out.display(),
                c.estates,
                c.residents,
                c.gates,
                c.sensors,
                c.cameras
            );
            Ok(())
        }
        Command::Town(TownCommand::Credentials { town, out }) => {
            let town = Town::load(&town).map_err(DataFault)?;
            let w = towntwin_harness::credentials::write(&town, &out)?;
            println!(
                "wrote {} users: {} (mosquitto password_file), {} (acl_file), {} (for the clients; keep it secret)",
                w.users,
                w.passwd.display(),
                w.acl.display(),
                w.credentials.display()
            );
            Ok(())
        }
        Command::Town(TownCommand::Check { file }) => {
            let town = Town::load(&file).map_err(DataFault)?;
            println!("{}", serde_json::to_string_pretty(&town.census())?);
            Ok(())
        }
        Command::Scenario(ScenarioCommand::Check { file }) => {
            let loaded = towntwin_sim::Scenario::load(&file).map_err(DataFault)?;
            Town::load(&loaded.town_file).map_err(DataFault)?;
            println!("{}: ok ({} day(s) from {}, seed {})", file.display(), loaded.scenario.days, loaded.scenario.start_date, loaded.scenario.seed);
            Ok(())
        }
        Command::Core { action: Some(CoreAction::Token(TokenCommand::Issue { principal, db })), .. } => {
            let principal: towntwin_core::principal::Principal = principal.parse().map_err(|e| UsageFault(format!("--principal: {e}")))?;
            let token = towntwin_core::auth::issue_into(&db, &principal).with_context(|| format!("cannot issue a token into {}", db.display()))?;
            eprintln!("token for {principal} (shown once; the store keeps only its hash):");
            println!("{token}");
            Ok(())
        }
        Command::Core { action: Some(CoreAction::Audit(AuditCommand::Verify { db, head })), .. } => {
            let store = open_existing(&db)?;
            let v = store.verify_audit(head.as_deref()).with_context(|| format!("{}: the audit log is broken", db.display()))?;
            println!("{}: audit log intact: {} entries, head {}", db.display(), v.entries, v.head);
            Ok(())
        }
        Command::Core { action: Some(CoreAction::Audit(AuditCommand::Show { db, tail })), .. } => {
            let store = open_existing(&db)?;
            let all = store.audit_entries().with_context(|| format!("cannot read the audit log of {}", db.display()))?;
            for s in &all[all.len().saturating_sub(tail)..] {
                let e = &s.entry;
                println!("{:>8} {} {:<28} {:<16} {:<14} {:<12} {}", s.seq, rfc3339(e.at), e.actor, e.scope, e.what, e.target, e.outcome);
            }
            Ok(())
        }
        Command::Core {
            action: None,
            serve: CoreArgs { broker, db, town, rules, policy, client_id, filter, partitions, batch_max, http, credentials, exercise },
        } => {
            let broker = broker.ok_or_else(|| UsageFault("`towntwin core` serves on a broker: give --broker mqtt://host:port".into()))?;
            towntwin_harness::serve::core(&towntwin_harness::serve::Serve {
                broker,
                db,
                town,
                rules,
                policy,
                client_id,
                filter,
                partitions,
                batch_max,
                http,
                credentials,
                exercise,
            })
        }
        Command::Experiment { action: Some(ExperimentAction::Merge { dirs, out }), .. } => {
            let summary = towntwin_harness::experiment::merge(&dirs, &out)?;
            print!("{}", towntwin_harness::experiment::render(&summary, &out));
            checks_pass(&summary)
        }
        Command::Experiment { action: None, run: ExperimentArgs { file, out, jobs, shard, quiet } } => {
            let file = file.ok_or_else(|| UsageFault("give the experiment file, e.g. `towntwin experiment scenarios/experiments/loops.ron`".into()))?;
            let opts = towntwin_harness::experiment::Options { file, out, jobs, shard, progress: !quiet };
            let done = towntwin_harness::experiment::run(&opts)?;
            match &done.summary {
                Some(s) => {
                    print!("{}", towntwin_harness::experiment::render(s, &done.out));
                    println!("ran {} replication(s) ({} resumed) in {:.0} s", done.ran, done.resumed, done.wall_seconds);
                    checks_pass(s)
                }
                None => {
                    println!(
                        "shard done: {} replication(s) ({} resumed) in {:.0} s into {}; join the shards with `towntwin experiment merge DIRS... --out DIR`",
                        done.ran,
                        done.resumed,
                        done.wall_seconds,
                        done.out.display()
                    );
                    Ok(())
                }
            }
        }
        Command::Drill { replay: Some(dir), .. } => {
            let aar = towntwin_harness::drill::live::replay(&dir)?;
            print!("{}", towntwin_harness::drill::summary(&aar));
            println!("After-action report: {}", dir.join("aar.html").display());
            Ok(())
        }
        Command::Drill { file: Some(file), check: true, .. } => {
            let drill = towntwin_harness::drill::script::load(&file).map_err(DataFault)?;
            print!("{}", towntwin_harness::drill::msel(&drill));
            Ok(())
        }
        Command::Drill { file: Some(file), speed, out, http, control, wait_for_start, .. } => {
            let opts = towntwin_harness::drill::live::DrillOptions { file, speed, out, http, control, wait_for_start, threads: None };
            let done = towntwin_harness::drill::live::run(&opts)?;
            print!("{}", towntwin_harness::drill::summary(&done.aar));
            println!("After-action report: {}", done.out.join("aar.html").display());
            Ok(())
        }
        Command::Drill { file: None, .. } => Err(UsageFault("`towntwin drill` needs a drill script, or --replay DIR".into()).into()),
        Command::Load { profile, broker, out, find_max: true } => {
            let loaded = towntwin_harness::load::profile::load(&profile).map_err(DataFault)?;
            let out = out.unwrap_or_else(|| towntwin_harness::results::stamped(&format!("load/{}-knee", loaded.profile.name)));
            let knee = towntwin_harness::load::knee::find_max(&loaded, broker.as_deref(), &out)?;
            print!("{}", towntwin_harness::load::knee::render(&knee));
            println!("Results: {}", out.display());
            if knee.highest_holding.is_none() {
                anyhow::bail!("no rate held the SLO");
            }
            Ok(())
        }
        Command::Load { profile, broker, out, find_max: false } => {
            let summary = towntwin_harness::load::run(&towntwin_harness::load::LoadOptions { profile, broker, out })?;
            print!("{}", towntwin_harness::load::report::render(&summary));
            if !summary.valid {
                return Err(InvalidRun(summary.invalid_reason.unwrap_or_else(|| "?".into())).into());
            }
            if !summary.slo_pass {
                let failed: Vec<&str> = summary.checks.iter().filter(|c| !c.pass).map(|c| c.what.as_str()).collect();
                anyhow::bail!("SLO missed: {}", failed.join(", "));
            }
            println!("SLO met.");
            Ok(())
        }
        Command::Broker { port } => {
            let ep = towntwin_harness::broker::start_embedded_on(port)?;
            // Printed once it accepts connections: a client may connect now.
            Status::BrokerListening { broker: format!("mqtt://{}:{}", ep.host, ep.port) }.print();
            let rt = towntwin_harness::runtime()?;
            rt.block_on(tokio::signal::ctrl_c())?;
            Ok(())
        }
        Command::Ceiling { broker, messages, size } => {
            let ep = match broker {
                Some(url) => towntwin_harness::broker::reach(&url)?,
                None => towntwin_harness::broker::start_embedded()?,
            };
            let rt = towntwin_harness::runtime()?;
            let c = rt.block_on(towntwin_harness::ceiling::measure(&ep, messages, size))?;
            println!(
                "{ep}: {} x {} B QoS 0: published {:.0}/s, delivered {} in {:.2} s = {:.0} msg/s",
                c.messages, c.payload_bytes, c.published_per_second, c.delivered, c.seconds, c.delivered_per_second
            );
            Ok(())
        }
    }
}

/// An experiment whose validity checks failed exits 1 (after writing its report, which says which).
fn checks_pass(s: &towntwin_harness::experiment::analyse::Summary) -> Result<()> {
    let failed = s.failed_checks();
    if failed.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = failed.iter().map(|c| format!("{} ({}): {}", c.name, c.variant, c.detail)).collect();
    anyhow::bail!("{} validity check(s) failed (the report says so too):\n  {}", failed.len(), list.join("\n  "))
}

/// A store that must already exist (read-only: checking never creates or changes one).
fn open_existing(db: &std::path::Path) -> Result<towntwin_core::store::Reader> {
    if !db.is_file() {
        return Err(UsageFault(format!("{}: no such store (give the core's SQLite file with --db)", db.display())).into());
    }
    towntwin_core::store::Reader::open(db).with_context(|| format!("cannot open {}", db.display()))
}
