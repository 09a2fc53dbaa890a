//! The operators' console in a real browser: a short drill (`towntwin drill`) runs; headless Chromium,
//! driven over WebDriver (Debian's `chromium` and `chromium-driver`, which `.ci/run` installs), signs in
//! with the trainee's token, sees the injected fire's order appear in the live queue (measured: how long
//! after the order can be read from the API the page shows it), opens it, accepts, starts and resolves it;
//! an order outside the trainee's estate is refused (403, audited); the controller's panel page pauses and
//! resumes the drill. The after-action report scores the handled inject as met and the ignored one as missed.
//!
//! With `TOWNTWIN_SCREENSHOTS=DIR` the test also saves the console's queue, an order and the after-action
//! report as PNGs there (the book's screenshots, results/drills/screenshots, come from such a run).

use crate::common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::{Killed, LiveDrill, root};
use fantoccini::{ClientBuilder, Locator};

/// A GET with a bearer token: (status, JSON body or Null).
fn get(base: &str, path: &str, token: &str) -> (u16, serde_json::Value) {
    common::http(base, "GET", path, Some(token), None)
}

fn now_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64() * 1000.0
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn chromedriver() -> (Killed, u16) {
    let port = free_port();
    let child = Command::new("chromedriver").arg(format!("--port={port}")).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap_or_else(|e| {
        panic!("cannot start chromedriver ({e}): install Debian's chromium and chromium-driver (`apt-get install -y chromium chromium-driver`; .ci/run does)")
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen on {port} within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    (Killed(child), port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trainee_works_the_injected_order_in_the_browser_and_the_report_scores_it() {
    let shots = std::env::var_os("TOWNTWIN_SCREENSHOTS").map(std::path::PathBuf::from);
    let tmp = tempfile::tempdir().unwrap();
    let baseline = root().join("scenarios/baseline.ron");
    let script = format!(
        r#"(
    name: "console",
    description: "Answer a fire alarm from the console; a second alarm is left alone.",
    scenario: {baseline:?},
    start: "2026-03-02T00:10",
    minutes: 30,
    trainees: [(name: "property", principal: "estate:E001/property")],
    objectives: [(id: "O1", text: "Answer a fire alarm"), (id: "O2", text: "Answer the next one")],
    injects: [
        (id: "I1", title: "Fire in B16", start: At(minute: 3.0), what: Fire(estate: "E001", flat: "B16-101"),
         expect: [
            (by: "property", action: Notice, within_minutes: 8.0, points: 5, objective: "O1"),
            (by: "property", action: Accept, within_minutes: 10.0, points: 5, objective: "O1"),
            (by: "property", action: Resolve, within_minutes: 15.0, points: 10, objective: "O1"),
         ]),
        (id: "I2", title: "Fire in B03", start: At(minute: 15.0), what: Fire(estate: "E001", flat: "B03-101"),
         expect: [(by: "property", action: Accept, within_minutes: 10.0, points: 10, objective: "O2")]),
    ],
)"#,
        baseline = baseline.to_str().unwrap()
    );
    let file = tmp.path().join("console.ron");
    std::fs::write(&file, script).unwrap();
    let out = tmp.path().join("console-drill");
    let (_driver, driver_port) = chromedriver();

    let drill = LiveDrill::start(&file, &out, &["--speed", "20"]);
    let printed = drill.printed(1);
    let (console, town, panel) = (printed.console.clone(), printed.controller.clone(), format!("{}/drill/panel", printed.panel));
    let trainee = printed.trainees["property"].clone();

    let caps: serde_json::Map<String, serde_json::Value> = serde_json::from_value(serde_json::json!({
        "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1300,900"] }
    }))
    .unwrap();
    let c = ClientBuilder::rustls()
        .unwrap()
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("a WebDriver session in headless Chromium");

    // This trainee reads English: chosen once on the console (Chinese is the default), it holds for the
    // controller's panel too (a cookie is the host's, whatever the port).
    c.goto(&format!("{console}/console/lang/en")).await.unwrap();
    // Signing in: a wrong token is refused, the trainee's is taken.
    c.goto(&format!("{console}/console")).await.unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/console/login"), "not signed in: sent to the login page");
    c.find(Locator::Id("token")).await.unwrap().send_keys("not-a-token").await.unwrap();
    c.find(Locator::Id("signin")).await.unwrap().click().await.unwrap();
    // Wait for the refusal's page: right after the click, the page may still be the form.
    let refused = c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css("p.error")).await.expect("a page saying why the token was refused");
    assert!(refused.text().await.unwrap().contains("not issued by this core"));
    c.goto(&format!("{console}/console/login")).await.unwrap();
    c.find(Locator::Id("token")).await.unwrap().send_keys(&trainee).await.unwrap();
    c.find(Locator::Id("signin")).await.unwrap().click().await.unwrap();
    let who = c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Id("principal")).await.unwrap().text().await.unwrap();
    assert_eq!(who, "estate:E001/property");
    // The page notes when each order's row first appears (a MutationObserver, in the page's own clock).
    c.execute(
        "window.seen = {}; new MutationObserver(() => { for (const r of document.querySelectorAll('#orders tr[id^=order-]')) \
         { if (!(r.id in window.seen)) window.seen[r.id] = Date.now(); } }).observe(document.body, {subtree: true, childList: true}); return true;",
        vec![],
    )
    .await
    .unwrap();
    let preexisting: Vec<u64> = get(&console, "/orders", &trainee).1.as_array().unwrap().iter().filter_map(|o| o["id"].as_u64()).collect();

    // The fire's order: first readable from the API, then shown by the live queue without a reload.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (order, readable_at) = loop {
        assert!(Instant::now() < deadline, "the injected fire made no order in E001");
        let (s, list) = get(&console, "/orders?rule=smoke", &trainee);
        assert_eq!(s, 200);
        if let Some(o) = list.as_array().unwrap().iter().find(|o| !preexisting.contains(&o["id"].as_u64().unwrap())) {
            break (o["id"].as_u64().unwrap(), now_ms());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let row = format!("order-{order}");
    c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Id(&row)).await.expect("the new order appears in the queue without a reload");
    let shown_at = c.execute(&format!("return window.seen['{row}'] || Date.now();"), vec![]).await.unwrap().as_f64().unwrap();
    let latency = shown_at - readable_at;
    println!("console: order {order} shown {latency:.0} ms after the API first returned it");
    assert!(latency < 1000.0, "the console showed the new order {latency:.0} ms after it was made (at most 1,000)");
    if let Some(dir) = &shots {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("console-queue.png"), c.screenshot().await.unwrap()).unwrap();
    }

    // The map fills the building whose smoke detector raised it (the order names the detector, not the flat).
    let subject = get(&console, &format!("/orders/{order}"), &trainee).1["order"]["subject"].as_str().unwrap_or_default().to_string();
    let detector =
        towntwin_core::town::Town::load(&root().join("assets/town.ron")).unwrap().estates.iter().flat_map(|e| e.devices.clone()).find(|d| d.id == subject);
    let building = detector.and_then(|d| d.building).unwrap_or_else(|| panic!("the fire's order names a detector in a building: {subject}"));
    c.goto(&format!("{console}/console/map")).await.unwrap();
    let marked = c.find(Locator::Css(&format!("#estate-E001 > rect[data-building='{building}']"))).await.unwrap();
    assert_eq!(marked.attr("fill").await.unwrap().as_deref(), Some("#e33"), "building {building} carries the alarm of {subject}");
    c.goto(&format!("{console}/console")).await.unwrap();
    c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Id(&row)).await.unwrap();

    // Open it, and act on it: accept, start, resolve (each button a legal action of its state).
    c.find(Locator::Css(&format!("#{row} a"))).await.unwrap().click().await.unwrap();
    c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Id("history")).await.unwrap();
    for (action, state) in [("accept", "accepted"), ("start", "in_progress"), ("resolve", "resolved")] {
        c.wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Id(&format!("act-{action}")))
            .await
            .unwrap_or_else(|e| panic!("no {action} button: {e}"))
            .click()
            .await
            .unwrap();
        // The page after the action: its state is the new one (the old page has a `history` too, so waiting
        // for that raced the reload).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let shown = match c.find(Locator::Id("state")).await {
                Ok(e) => e.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if shown == state {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "after {action} the order shows state {shown:?}, not {state}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(c.find(Locator::Id("state")).await.unwrap().text().await.unwrap(), "resolved");
    if let Some(dir) = &shots {
        std::fs::write(dir.join("console-order.png"), c.screenshot().await.unwrap()).unwrap();
        c.goto(&format!("{console}/console/map")).await.unwrap();
        std::fs::write(dir.join("console-map.png"), c.screenshot().await.unwrap()).unwrap();
    }
    // The controller's panel, a page of its own: signed in with the controller's token, it shows the drill
    // and pauses and resumes it.
    c.goto(&panel).await.unwrap();
    c.find(Locator::Id("token")).await.unwrap().send_keys(&town).await.unwrap();
    c.find(Locator::Id("signin")).await.unwrap().click().await.unwrap();
    let status = c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css("#status p")).await.unwrap();
    assert!(status.text().await.unwrap().contains("drill minute"), "the panel shows the drill");
    c.find(Locator::XPath("//button[text()='Pause']")).await.unwrap().click().await.unwrap();
    let paused = async {
        loop {
            // The panel redraws its status: an element found may be replaced before it is read (stale); try again.
            if let Ok(p) = c.find(Locator::Css("#status p")).await
                && let Ok(t) = p.text().await
                && t.contains("paused")
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), paused).await.expect("the panel shows the drill paused");
    if let Some(dir) = &shots {
        std::fs::write(dir.join("controller-panel.png"), c.screenshot().await.unwrap()).unwrap();
    }
    c.find(Locator::XPath("//button[text()='Resume']")).await.unwrap().click().await.unwrap();

    // An order of another estate: 403 for this trainee, and audited.
    let (_, all) = get(&console, "/orders", &town);
    let other = all.as_array().unwrap().iter().find(|o| o["area"] != "E001").map(|o| o["id"].as_u64().unwrap()).expect("the town has orders elsewhere");
    c.goto(&format!("{console}/console/orders/{other}")).await.unwrap();
    let refused = c.source().await.unwrap();
    assert!(refused.contains("403") && refused.contains("无权查看或操作"), "outside the trainee's scope, said in both languages");

    // The drill runs to its end; the report scores the handled fire as met and the ignored one as missed.
    let (code, printed) = drill.finish(Duration::from_secs(300));
    assert!(code.success(), "{printed}");
    let aar: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("aar.json")).unwrap()).unwrap();
    let inject = |id: &str| aar["injects"].as_array().unwrap().iter().find(|i| i["id"] == id).unwrap().clone();
    let i1 = inject("I1");
    assert_eq!(i1["order"].as_u64(), Some(order), "{i1}");
    assert!(i1["expectations"].as_array().unwrap().iter().all(|x| x["met"] == true), "handled in time: {i1}");
    let i2 = inject("I2");
    assert_eq!(i2["expectations"][0]["met"], false, "ignored: {i2}");
    if let Some(dir) = &shots {
        c.goto(&format!("file://{}", out.join("aar.en.html").display())).await.unwrap();
        std::fs::write(dir.join("aar.png"), c.screenshot().await.unwrap()).unwrap();
    }
    c.close().await.unwrap();
    let audit = towntwin_core::store::Store::open(out.join("core.db")).unwrap().audit_entries().unwrap();
    assert!(
        audit.iter().any(|s| s.entry.actor == "estate:E001/property"
            && s.entry.what == "view"
            && s.entry.target == format!("order {other}")
            && s.entry.outcome.starts_with("refused 403")),
        "the refusal is audited"
    );
}

/// A WebDriver session of its own (a browser with its own cookies: one person).
async fn browser(driver_port: u16) -> fantoccini::Client {
    let caps: serde_json::Map<String, serde_json::Value> = serde_json::from_value(serde_json::json!({
        "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1300,900"] }
    }))
    .unwrap();
    ClientBuilder::rustls()
        .unwrap()
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("a WebDriver session in headless Chromium")
}

/// Signs `c` into the console at `console` with `token`; returns the principal the page shows.
async fn sign_in(c: &fantoccini::Client, console: &str, token: &str) -> String {
    c.goto(&format!("{console}/console/login")).await.unwrap();
    c.find(Locator::Id("token")).await.unwrap().send_keys(token).await.unwrap();
    c.find(Locator::Id("signin")).await.unwrap().click().await.unwrap();
    c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Id("principal")).await.unwrap().text().await.unwrap()
}

/// Clicks the action button `id` on an order's page and waits for the page to show `state` (the state's
/// code, `data-state`, whatever the page's language).
async fn act(c: &fantoccini::Client, id: &str, state: &str) {
    c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Id(id)).await.unwrap_or_else(|e| panic!("no {id} button: {e}")).click().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown = match c.find(Locator::Id("state")).await {
            Ok(e) => e.attr("data-state").await.ok().flatten().unwrap_or_default(),
            Err(_) => String::new(),
        };
        if shown == state {
            return;
        }
        assert!(Instant::now() < deadline, "after {id} the order shows state {shown:?}, not {state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the element `id` of `c`'s page has a text containing `words` (a page that redraws itself).
async fn shows(c: &fantoccini::Client, id: &str, words: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(e) = c.find(Locator::Id(id)).await
            && let Ok(t) = e.text().await
            && t.contains(words)
        {
            return t;
        }
        assert!(Instant::now() < deadline, "#{id} never showed {words:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The loops in browsers: a group rental in E040 on the source's loops. The committee's cadre, the housing
/// office and the police station each work in a browser of their own; the cadre whistles (居村吹哨) and the
/// order appears live in both departments' queues; the housing office accepts and reports its part, the
/// police report theirs (部门报到), and the order is resolved. An evaluator records an observation from
/// their page; the controller fires an ad-hoc inject from the panel's form (a bad one is refused, saying
/// why). The report scores the whistle and both reports as met and carries the observation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_trainees_work_one_whistle_in_their_browsers_and_an_evaluator_observes() {
    let shots = std::env::var_os("TOWNTWIN_SCREENSHOTS").map(std::path::PathBuf::from);
    let shot = |c: &fantoccini::Client, name: &'static str| {
        let (c, dir) = (c.clone(), shots.clone());
        async move {
            if let Some(dir) = dir {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join(name), c.screenshot().await.unwrap()).unwrap();
            }
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let (scenario, rules, policy) =
        (root().join("scenarios/platform/after.ron"), root().join("scenarios/rules/platform.ron"), root().join("scenarios/policies/source-loops.ron"));
    let script = format!(
        r#"(
    name: "loops",
    scenario: {scenario:?},
    rules: Some({rules:?}),
    policy: Some({policy:?}),
    start: "2026-03-02T09:00",
    minutes: 90,
    trainees: [
        (name: "property", principal: "estate:E040/property"),
        (name: "cadre", principal: "committee:C29/cadre"),
        (name: "housing", principal: "town/housing"),
        (name: "police", principal: "town/public-security"),
    ],
    objectives: [(id: "O1", text: "The committee whistles"), (id: "O2", text: "The departments report on site together")],
    injects: [
        (id: "I1", title: "Twelve new faces in B13-104", start: At(minute: 2.0), what: NewFaces(estate: "E040", flat: "B13-104", people: 12),
         expect: [
            (by: "cadre", action: Whistle, within_minutes: 80.0, points: 10, objective: "O1"),
            (by: "housing", action: Report, within_minutes: 85.0, points: 10, objective: "O2"),
            (by: "police", action: Report, within_minutes: 85.0, points: 10, objective: "O2"),
         ]),
    ],
    evaluators: [(name: "ana", objectives: ["O1", "O2"])],
)"#,
        scenario = scenario.to_str().unwrap(),
        rules = rules.to_str().unwrap(),
        policy = policy.to_str().unwrap()
    );
    let file = tmp.path().join("loops.ron");
    std::fs::write(&file, script).unwrap();
    let out = tmp.path().join("loops-drill");
    let (_driver, driver_port) = chromedriver();
    let drill = LiveDrill::start(&file, &out, &["--speed", "20"]);
    let printed = drill.printed_with(4, 1);
    let (console, panel, controller) = (printed.console.clone(), printed.panel.clone(), printed.controller.clone());
    let token = |n: &str| printed.trainees[n].clone();

    let (cadre, housing, police, evaluator) = (browser(driver_port).await, browser(driver_port).await, browser(driver_port).await, browser(driver_port).await);
    assert_eq!(sign_in(&cadre, &console, &token("cadre")).await, "committee:C29/cadre");
    assert_eq!(sign_in(&housing, &console, &token("housing")).await, "town/housing");
    assert_eq!(sign_in(&police, &console, &token("police")).await, "town/public-security");

    // The group rental's order, as the API has it.
    let deadline = Instant::now() + Duration::from_secs(180);
    let order = loop {
        assert!(Instant::now() < deadline, "the new faces made no group-rental order in E040");
        let (_, list) = get(&console, "/orders?rule=group-rental", &token("cadre"));
        if let Some(o) = list.as_array().unwrap().iter().find(|o| o["area"] == "E040" && o["subject"] == "B13-104") {
            break o["id"].as_u64().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let row = format!("order-{order}");
    // Still the estate's: not in the housing office's queue (theirs by default).
    assert!(housing.find(Locator::Id(&row)).await.is_err(), "before the whistle the order is not the department's");

    // The pages are in Chinese by default: the queue, the order, its whistle.
    assert!(housing.source().await.unwrap().contains("工单队列"), "the console in Chinese");
    // The cadre opens it and whistles.
    cadre.goto(&format!("{console}/console/orders/{order}")).await.unwrap();
    assert_eq!(cadre.find(Locator::Id("act-whistle")).await.unwrap().text().await.unwrap(), "吹哨");
    cadre.find(Locator::Css("form.act:has(#act-whistle) input[name=reason]")).await.unwrap().send_keys("the tenants will not open the door").await.unwrap();
    act(&cadre, "act-whistle", "dispatched").await;
    // It appears in both departments' queues without a reload, marked theirs.
    for (who, c) in [("housing", &housing), ("police", &police)] {
        let found = c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Id(&row)).await;
        let found = found.unwrap_or_else(|_| panic!("the whistled order reaches the {who} queue live"));
        assert!(found.attr("class").await.unwrap().unwrap_or_default().contains("mine"), "{who}: marked theirs");
    }
    // Housing accepts and reports its part; it has no button for the police's part.
    housing.goto(&format!("{console}/console/orders/{order}")).await.unwrap();
    act(&housing, "act-accept", "accepted").await;
    assert!(housing.find(Locator::Id("act-report-public_security")).await.is_err(), "housing reports its own part only");
    shot(&housing, "console-order-zh.png").await;
    act(&housing, "act-report-housing", "in_progress").await;
    police.goto(&format!("{console}/console/orders/{order}")).await.unwrap();
    assert!(police.find(Locator::Id("act-report-public_security")).await.unwrap().text().await.unwrap().contains("派出所"));
    act(&police, "act-report-public_security", "resolved").await;
    assert_eq!(police.find(Locator::Id("state")).await.unwrap().text().await.unwrap(), "已办结");
    // The map: E040 where the town file places it, marked with its open order, building 13 filled red.
    police.goto(&format!("{console}/console/map")).await.unwrap();
    let estate = police.wait().at_most(Duration::from_secs(10)).for_element(Locator::Id("estate-E040")).await.unwrap();
    assert!(estate.attr("class").await.unwrap().unwrap_or_default().contains("alarm"), "E040 shows its open order");
    let b13 = police.find(Locator::Css("#estate-E040 > rect[data-building='13']")).await.unwrap();
    assert_eq!(b13.attr("fill").await.unwrap().as_deref(), Some("#e33"), "building 13 carries the order");
    // Alarms of devices on estates' grounds (kiosks, charging piles) elsewhere in the town: a red dot
    // naming its order and device.
    let dot = police.find(Locator::Css("circle.device-alarm title")).await.expect("the town has open orders about grounds devices");
    let named = dot.html(true).await.unwrap();
    assert!(named.contains('-') && named.contains('('), "the dot names its order and device: {named}");
    shot(&police, "console-map-zh.png").await;
    police.goto(&format!("{console}/console/orders/{order}")).await.unwrap();
    // The police officer switches the console to English: the same order, in English.
    police.find(Locator::Id("lang-en")).await.unwrap().click().await.unwrap();
    shows(&police, "state", "resolved").await;
    assert!(police.source().await.unwrap().contains(">Queue</a>"), "the console in English");

    // The evaluator: signs in on the controller's address, sees the guide, records an observation.
    evaluator.goto(&format!("{panel}/drill/evaluate")).await.unwrap();
    evaluator.find(Locator::Id("token")).await.unwrap().send_keys(&printed.evaluators["ana"]).await.unwrap();
    evaluator.find(Locator::Id("signin")).await.unwrap().click().await.unwrap();
    shows(&evaluator, "eeg", "The committee whistles").await;
    evaluator.find(Locator::Id("observe-inject")).await.unwrap().send_keys("I1").await.unwrap();
    evaluator.find(Locator::Id("observe-kind")).await.unwrap().select_by_value("improvement").await.unwrap();
    evaluator.find(Locator::Id("observe-text")).await.unwrap().send_keys("The whistle came before anyone from the estate had been to the door").await.unwrap();
    evaluator.find(Locator::Id("observe-action")).await.unwrap().send_keys("The property manager visits before the committee whistles").await.unwrap();
    evaluator.find(Locator::Id("observe")).await.unwrap().click().await.unwrap();
    shows(&evaluator, "observe-outcome", "已记录于").await;
    shows(&evaluator, "observations", "before anyone from the estate").await;
    shot(&evaluator, "evaluator-zh.png").await;

    // The controller fires an ad-hoc inject from the panel's form; a bad one is refused saying why.
    let ctl = &cadre;
    ctl.goto(&format!("{panel}/drill/panel")).await.unwrap();
    ctl.find(Locator::Id("token")).await.unwrap().send_keys(&controller).await.unwrap();
    ctl.find(Locator::Id("signin")).await.unwrap().click().await.unwrap();
    for (id, what, outcome) in
        [("X1", "DeviceDark(device: \"E040-gate-99\", hours: 1.0)", "refused"), ("X1", "DeviceDark(device: \"E040-gate-01\", hours: 1.0)", "X1 fired")]
    {
        let field = |f: &'static str| async move { ctl.wait().at_most(Duration::from_secs(10)).for_element(Locator::Id(f)).await.unwrap() };
        field("adhoc-id").await.clear().await.unwrap();
        field("adhoc-id").await.send_keys(id).await.unwrap();
        field("adhoc-title").await.clear().await.unwrap();
        field("adhoc-title").await.send_keys("A gate goes dark").await.unwrap();
        field("adhoc-what").await.clear().await.unwrap();
        field("adhoc-what").await.send_keys(what).await.unwrap();
        field("fire-adhoc").await.click().await.unwrap();
        shows(ctl, "adhoc-outcome", outcome).await;
    }
    shot(ctl, "controller-panel-zh.png").await;
    // The ad-hoc inject takes effect at the next town minute.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, st) = common::http(&panel, "GET", "/drill", Some(&controller), None);
        if st["injects"].as_array().unwrap().iter().any(|i| i["id"] == "X1" && i["status"] == "started") {
            break;
        }
        assert!(Instant::now() < deadline, "X1 never started: {st}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The panel's inject states, in Chinese (it redraws itself every second).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown = match ctl.find(Locator::Css("#status td[data-status=Started]")).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if shown == "已生效" {
            break;
        }
        assert!(Instant::now() < deadline, "the panel's started inject shows {shown:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(common::http(&panel, "POST", "/drill/stop", Some(&controller), None).0, 204);
    let (code, printed) = drill.finish(Duration::from_secs(300));
    assert!(code.success(), "{printed}");
    // The report to forward, opened in the browser: in Chinese, with the English one a link away.
    ctl.goto(&format!("file://{}", out.join("aar.html").display())).await.unwrap();
    assert!(ctl.title().await.unwrap().starts_with("演练评估报告"), "{:?}", ctl.title().await);
    shot(ctl, "aar-zh.png").await;
    ctl.find(Locator::Id("lang")).await.unwrap().click().await.unwrap();
    ctl.wait().at_most(Duration::from_secs(10)).for_element(Locator::Id("improvement-plan")).await.unwrap();
    assert!(ctl.title().await.unwrap().starts_with("After-action report"), "{:?}", ctl.title().await);
    for c in [cadre, housing, police, evaluator] {
        c.close().await.unwrap();
    }
    let aar: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("aar.json")).unwrap()).unwrap();
    let i1 = aar["injects"].as_array().unwrap().iter().find(|i| i["id"] == "I1").unwrap().clone();
    assert_eq!(i1["order"].as_u64(), Some(order), "{i1}");
    for x in i1["expectations"].as_array().unwrap() {
        assert_eq!(x["met"], true, "done in the browsers: {x}");
    }
    assert_eq!(aar["observations"][0]["evaluator"], "ana", "{aar}");
    assert!(aar["injects"].as_array().unwrap().iter().any(|i| i["id"] == "X1" && i["adhoc"] == true), "the ad-hoc inject went out");
    assert!(aar["improvement_plan"].as_array().unwrap().iter().any(|r| r["corrective_action"] == "The property manager visits before the committee whistles"));
}
