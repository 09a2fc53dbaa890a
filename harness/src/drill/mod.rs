//! Operator drills (issue 11): scripted injects into the live twin while trainees work the queue. So far:
//! the script format and its checks ([`script`]), and `towntwin drill FILE --check`, which prints the
//! master scenario events list a checked script makes.

/// A line on stdout for the trainer; a closed stdout (the reader went away) stops nothing.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

pub mod aar;
mod evaluate;
mod hooks;
pub mod live;
pub mod msel_csv;
mod panel;
mod play;
pub mod script;

use std::fmt::Write;

use script::{Drill, Start, What};

/// The after-action report's gist for the terminal: points, each objective's rating, each inject's outcome.
pub fn summary(a: &aar::Aar) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "drill {}: {} of {} points; ended by {} at drill minute {:.0}", a.drill, a.earned, a.possible, a.ended_by, a.minutes);
    for ob in &a.objectives {
        let _ = writeln!(o, "  {} {}: {} of {} points ({})", ob.rating, ob.id, ob.earned, ob.possible, ob.text);
    }
    for i in &a.injects {
        let met = i.expectations.iter().filter(|x| x.met).count();
        let order = i.order.map_or_else(|| "no order".to_string(), |n| format!("order {n}"));
        let adhoc = if i.adhoc { ", ad hoc" } else { "" };
        let _ = writeln!(o, "  {} ({:?}{adhoc}, {order}): {met} of {} expectations met", i.id, i.status, i.expectations.len());
        if let Some(why) = &i.why {
            let _ = writeln!(o, "    why: {why}");
        }
        for x in i.expectations.iter().filter(|x| !x.met && i.why.is_none()) {
            let in_loop = x.in_loop.map(|l| format!(" ({} loop)", l.as_str())).unwrap_or_default();
            let _ = writeln!(o, "    {} {:?}{in_loop}: {}", x.by, x.action, x.why.as_deref().unwrap_or("not met"));
        }
    }
    o
}

/// The master scenario events list (MSEL) of a checked drill, as a Markdown table: injects in the order
/// they can start, each with its start condition, what it does, the area of its order, and the expected
/// actions with their deadlines and points.
pub fn msel(d: &Drill) -> String {
    let s = &d.script;
    let mut o = String::new();
    let _ = writeln!(o, "# Drill `{}`: {} minutes from {} (town time)\n", s.name, s.minutes, s.start);
    if !s.description.is_empty() {
        let _ = writeln!(o, "{}\n", s.description);
    }
    let _ = writeln!(o, "Trainees: {}\n", d.principals.iter().map(|(n, p)| format!("{n} ({p})")).collect::<Vec<_>>().join(", "));
    for ob in &s.objectives {
        let _ = writeln!(o, "- **{}**: {}", ob.id, ob.text);
    }
    let _ = writeln!(o, "\n| inject | starts | what | area | expected | points |\n|---|---|---|---|---|---|");
    for &i in &d.order {
        let inj = &s.injects[i];
        let start = match &inj.start {
            Start::At { minute } => format!("minute {minute}"),
            Start::AfterStarted { inject, minutes } => format!("{minutes} min after {inject} starts"),
            Start::AfterHandled { inject, minutes } => format!("{minutes} min after {inject}'s order is resolved"),
            Start::Manual => "when the controller fires it".into(),
        };
        let what = match &inj.what {
            What::Incapacitate { resident, call_after_minutes: None } => format!("{resident} taken ill at home"),
            What::Incapacitate { resident, call_after_minutes: Some(m) } => format!("{resident} taken ill at home; a neighbour calls 12345 {m} min later"),
            What::Fire { estate, flat } => format!("fire in {estate} {flat}"),
            What::NewFaces { estate, flat, people } => format!("{people} new faces move into {estate} {flat}"),
            What::DeviceDark { device, hours } => format!("{device} dark for {hours} h"),
            What::IllegalWorks { estate, flat } => format!("illegal works start in {estate} {flat}"),
            What::EbikeInElevator { estate, flat } => format!("an e-bike from {estate} {flat} carried up in a lift"),
            What::IndoorCharging { estate, flat } => format!("an e-bike charging at home in {estate} {flat}"),
            What::DumpedBags { kiosk, bags } => format!("{bags} bag(s) dumped beside {kiosk}"),
            What::FenceViolation { camera, code } => {
                let name = towntwin_core::violations::VIOLATIONS.iter().find(|v| v.code == *code).map_or("a violation", |v| v.name);
                format!("{} (code {code}) at {camera}", name.replace('_', " "))
            }
        };
        let expected: Vec<String> =
            inj.expect.iter().map(|e| format!("{} {} within {} min ({})", e.by, msel_csv::action_text(e), e.within_minutes, e.objective)).collect();
        let points: u32 = inj.expect.iter().map(|e| e.points).sum();
        let _ = writeln!(o, "| {}: {} | {start} | {what} | {} | {} | {points} |", inj.id, inj.title, d.areas[i], expected.join("; "));
    }
    o
}
