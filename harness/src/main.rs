//! The `towntwin` command: parses arguments, sets up logging, calls the harness library, and maps how a
//! command ended to an exit code (the one table: `towntwin_harness::exit_code`).

use anyhow::{Context, Result};
use clap::Parser;
use towntwin_core::time::rfc3339;
use towntwin_core::town::Town;
use towntwin_harness::run::{BrokerChoice, RunOptions, render, run};
use towntwin_harness::status::Status;

mod cli;

use cli::{
    AuditCommand, Cli, Command, CoreAction, CoreArgs, DistrictCommand, DistrictTokenCommand, ExperimentAction, ExperimentArgs, LoadAction, LoadArgs,
    ScenarioCommand, TokenCommand, TownCommand,
};
use towntwin_harness::{DataFault, InvalidRun, UsageFault, exit_code};

fn main() {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("TOWNTWIN_LOG").unwrap_or_else(|_| "warn,rumqttd=off".into()))
        .with_writer(std::io::stderr);
    match cli.log_format {
        cli::LogFormat::Text => logs.init(),
        cli::LogFormat::Json => logs.json().flatten_event(true).with_current_span(false).init(),
    }
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
                ns: a.town_id.unwrap_or_default(),
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
            // Loaded as a run loads it: the town too, and what the scenario names in it.
            let loaded = towntwin_sim::Scenario::load(&file).map_err(DataFault)?;
            towntwin_harness::setup::Setup::load_one(&file, None, |_| {}).map_err(DataFault)?;
            println!("{}: ok ({} day(s) from {}, seed {})", file.display(), loaded.scenario.days, loaded.scenario.start_date, loaded.scenario.seed);
            Ok(())
        }
        Command::District(DistrictCommand::Check { file }) => {
            let d = towntwin_harness::district::District::load(&file).map_err(DataFault)?;
            for ((ns, scenario), t) in d.towns.iter().zip(&d.spec.towns) {
                towntwin_sim::Scenario::load(scenario).map_err(DataFault)?;
                println!("{:<12} {:<24} topics {:<18} source {:<12} scenario {}", ns.id(), t.name, ns.events_filter(), ns.source(), scenario.display());
            }
            println!("{}: {} towns, broker {:?}, store {:?}, standby cores: {}", file.display(), d.towns.len(), d.spec.broker, d.spec.store, d.spec.standby);
            Ok(())
        }
        Command::District(DistrictCommand::Run { file, out, serve, kill_core, restart_store, kill_node }) => {
            towntwin_harness::district::run(&file, &towntwin_harness::district::RunOpts { out, serve, kill_core, restart_store, kill_node }).map(drop)
        }
        Command::District(DistrictCommand::Serve { store, http }) => {
            let state = towntwin_harness::district::serve::State::open(&store).with_context(|| format!("cannot open the district's registry in {store}"))?;
            let rt = towntwin_harness::runtime()?;
            rt.block_on(async {
                let listener = tokio::net::TcpListener::bind(http).await.with_context(|| format!("cannot listen on {http}"))?;
                eprintln!("the district's API and console on http://{}/district", listener.local_addr()?);
                towntwin_harness::district::serve::serve(listener, state, async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await
                .context("the district's server")
            })
        }
        Command::District(DistrictCommand::Token(DistrictTokenCommand::Issue { store, principal, expires_in })) => {
            let p: towntwin_core::principal::Principal = principal.parse().map_err(|e| UsageFault(format!("--principal: {e}")))?;
            if p.scope != towntwin_core::principal::Scope::District {
                return Err(UsageFault(format!(
                    "--principal {p}: the district issues district principals only (a town's come from `towntwin core token issue --store ...?schema=TOWN`)"
                ))
                .into());
            }
            let registry = towntwin_core::store::postgres::District::open(&store).with_context(|| format!("cannot open the district's registry in {store}"))?;
            let (token, now) = (towntwin_core::auth::new_token(), towntwin_core::auth::wall_ms());
            let expires_at = expires_in.0.map(|ms| now + ms as i64);
            registry.issue_token(&towntwin_core::auth::hash(&token), &p.to_string(), now, expires_at)?;
            let until = expires_at.map_or_else(|| "never expires".to_string(), |t| format!("valid until {}", towntwin_core::time::rfc3339(t)));
            eprintln!("token for {p}, {until} (shown once; the registry keeps only its hash):");
            println!("{token}");
            Ok(())
        }
        Command::District(DistrictCommand::Token(DistrictTokenCommand::Revoke { store, principal })) => {
            let registry = towntwin_core::store::postgres::District::open(&store).with_context(|| format!("cannot open the district's registry in {store}"))?;
            match registry.revoke(&principal)? {
                0 => Err(UsageFault(format!("{store}: no valid district token of {principal}")).into()),
                n => {
                    println!("revoked {n} district token(s) of {principal}");
                    Ok(())
                }
            }
        }
        Command::Core { action: Some(CoreAction::Token(TokenCommand::Issue { principal, db, expires_in })), .. } => {
            let principal: towntwin_core::principal::Principal = principal.parse().map_err(|e| UsageFault(format!("--principal: {e}")))?;
            let expires_at = expires_in.0.map(|ms| towntwin_core::auth::wall_ms() + ms as i64);
            let token = towntwin_core::auth::issue_into(&db, &principal, expires_at).with_context(|| format!("cannot issue a token into {db}"))?;
            let until = expires_at.map_or_else(|| "never expires".to_string(), |t| format!("valid until {}", towntwin_core::time::rfc3339(t)));
            eprintln!("token for {principal}, {until} (shown once; the store keeps only its hash):");
            println!("{token}");
            Ok(())
        }
        Command::Core { action: Some(CoreAction::Token(TokenCommand::Revoke { token, principal, db })), .. } => {
            let which = match (token, principal) {
                (Some(t), _) => towntwin_core::auth::Revoke::Token(t.trim().to_string()),
                (None, Some(p)) => {
                    let p: towntwin_core::principal::Principal = p.parse().map_err(|e| UsageFault(format!("--principal: {e}")))?;
                    towntwin_core::auth::Revoke::Principal(p.to_string())
                }
                (None, None) => return Err(UsageFault("give --token or --principal".into()).into()),
            };
            if !db.may_exist() {
                return Err(UsageFault(format!("{db}: no such store")).into());
            }
            let revoked = towntwin_core::auth::revoke(&db, &which).with_context(|| format!("cannot revoke tokens in {db}"))?;
            if revoked.is_empty() {
                return Err(UsageFault(format!("{db}: no valid token matched (already revoked, or never issued there)")).into());
            }
            for p in &revoked {
                println!("revoked a token of {p}");
            }
            Ok(())
        }
        Command::Core { action: Some(CoreAction::Audit(AuditCommand::Verify { db, head })), .. } => {
            let store = open_existing(&db)?;
            let v = store.verify_audit(head.as_deref()).with_context(|| format!("{db}: the audit log is broken"))?;
            println!("{db}: audit log intact: {} entries, head {}", v.entries, v.head);
            Ok(())
        }
        Command::Core { action: Some(CoreAction::Audit(AuditCommand::Show { db, tail })), .. } => {
            let store = open_existing(&db)?;
            let all = store.audit_entries().with_context(|| format!("cannot read the audit log of {db}"))?;
            for s in &all[all.len().saturating_sub(tail)..] {
                let e = &s.entry;
                println!("{:>8} {} {:<28} {:<16} {:<14} {:<12} {}", s.seq, rfc3339(e.at), e.actor, e.scope, e.what, e.target, e.outcome);
            }
            Ok(())
        }
        Command::Core {
            action: None,
            serve: CoreArgs { broker, db, town, rules, policy, client_id, filter, town_id, partitions, batch_max, http, credentials, exercise, standby, order },
        } => {
            let broker = broker.ok_or_else(|| UsageFault("`towntwin core` serves on a broker: give --broker mqtt://host:port".into()))?;
            let ns = town_id.unwrap_or_default();
            towntwin_harness::serve::core(&towntwin_harness::serve::Serve {
                broker,
                filter: filter.unwrap_or_else(|| ns.events_filter()),
                ns,
                db,
                town,
                rules,
                policy,
                client_id,
                partitions,
                batch_max,
                http,
                credentials,
                exercise,
                standby,
                order,
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
            println!("After-action report: {} (中文), {} (English)", dir.join("aar.html").display(), dir.join("aar.en.html").display());
            Ok(())
        }
        Command::Drill { file: Some(file), check: true, csv, .. } => {
            let drill = towntwin_harness::drill::script::load(&file).map_err(DataFault)?;
            if csv {
                use std::io::Write as _;
                std::io::stdout().write_all(&towntwin_harness::drill::msel_csv::export(&drill.script)?)?;
            } else {
                print!("{}", towntwin_harness::drill::msel(&drill));
            }
            Ok(())
        }
        Command::Drill { file: Some(file), import_msel: Some(csv), .. } => {
            use towntwin_harness::drill::{msel_csv, script};
            let injects = msel_csv::import(&csv).map_err(DataFault)?;
            let mut s: script::Script = towntwin_core::load::read_ron(&file).map_err(|e| DataFault(e.into()))?;
            s.injects = injects;
            let drill = script::load_script(&file, s).map_err(DataFault)?;
            let pretty = ron::ser::PrettyConfig::new().struct_names(false);
            println!("{}", ron::ser::to_string_pretty(&drill.script, pretty)?);
            Ok(())
        }
        Command::Drill { file: Some(file), speed, out, http, control, wait_for_start, play, .. } => {
            // `--play` alone: every trainee; `--play=` with names: those.
            let play = play.map(|names| names.into_iter().filter(|n| !n.is_empty()).collect::<Vec<_>>());
            let speed = speed.unwrap_or(if play.is_some() { towntwin_harness::drill::live::MAX_SPEED } else { 1.0 });
            let opts = towntwin_harness::drill::live::DrillOptions { file, speed, out, http, control, wait_for_start, threads: None, play };
            let done = towntwin_harness::drill::live::run(&opts)?;
            print!("{}", towntwin_harness::drill::summary(&done.aar));
            println!("After-action report: {} (中文), {} (English)", done.out.join("aar.html").display(), done.out.join("aar.en.html").display());
            Ok(())
        }
        Command::Drill { file: None, .. } => Err(UsageFault("`towntwin drill` needs a drill script, or --replay DIR".into()).into()),
        Command::Load { action: Some(LoadAction::Merge { dirs, store, profile, out }), .. } => {
            let summary = towntwin_harness::load::merge::merge(&towntwin_harness::load::merge::MergeOptions { dirs, store, profile, out })?;
            load_verdict(&summary)
        }
        Command::Load { action: None, run: LoadArgs { profile, generator: Some(slice), broker, out, start_at, .. } } => {
            let profile =
                profile.ok_or_else(|| UsageFault("give the load profile, e.g. `towntwin load scenarios/load/smoke.ron --generator 1/3 ...`".into()))?;
            let broker = broker.ok_or_else(|| UsageFault("--generator needs --broker: the broker the core takes its events from".into()))?;
            let opts = towntwin_harness::load::generator::GeneratorOptions { profile, broker, slice, start_at, out };
            towntwin_harness::load::generator::run(&opts)?;
            println!("generator {slice} done; join the generators with `towntwin load merge DIRS... --store CORE_DB --out DIR`");
            Ok(())
        }
        Command::Load { action: None, run: LoadArgs { profile, broker, out, find_max: true, .. } } => {
            let profile = profile.ok_or_else(|| UsageFault("give the load profile, e.g. `towntwin load scenarios/load/smoke.ron --find-max`".into()))?;
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
        Command::Load { action: None, run: LoadArgs { profile, broker, out, .. } } => {
            let profile = profile.ok_or_else(|| UsageFault("give the load profile, e.g. `towntwin load scenarios/load/smoke.ron`".into()))?;
            let summary = towntwin_harness::load::run(&towntwin_harness::load::LoadOptions { profile, broker, out })?;
            load_verdict(&summary)
        }
        Command::Broker { port, log_mib } => {
            let ep = towntwin_harness::broker::start_embedded_with(port, (log_mib as usize) << 20)?;
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

/// A load run's verdict: printed, then exit 0 (SLO met), 1 (missed) or 3 (invalid).
fn load_verdict(summary: &towntwin_harness::load::Summary) -> Result<()> {
    print!("{}", towntwin_harness::load::report::render(summary));
    if !summary.valid {
        return Err(InvalidRun(summary.invalid_reason.clone().unwrap_or_else(|| "?".into())).into());
    }
    if !summary.slo_pass {
        let failed: Vec<&str> = summary.checks.iter().filter(|c| !c.pass).map(|c| c.what.as_str()).collect();
        anyhow::bail!("SLO missed: {}", failed.join(", "));
    }
    println!("SLO met.");
    Ok(())
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
fn open_existing(db: &towntwin_core::store::Location) -> Result<towntwin_core::store::Reader> {
    if !db.may_exist() {
        return Err(UsageFault(format!("{db}: no such store (give the core's SQLite file or postgres:// URL with --db)")).into());
    }
    towntwin_core::store::Reader::open(db).map_err(|e| match e {
        towntwin_core::store::StoreError::Missing { .. } => anyhow::Error::new(UsageFault(e.to_string())),
        // The store's error names it.
        e => anyhow::Error::new(e),
    })
}
