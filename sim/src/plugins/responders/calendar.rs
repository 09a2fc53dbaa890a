//! The town's calendar: working days, holidays and make-up working weekends, for shifts that work only on
//! one or the other.

use super::*;

/// Working days: Monday to Friday, except the holidays, plus the make-up working days (调休) that fall on a
/// weekend. Written as local dates `YYYY-MM-DD`; a date that does not parse is refused as the file is read.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(try_from = "CalendarFile", into = "CalendarFile")]
pub struct Calendar {
    holidays: std::collections::BTreeSet<i64>,
    working_weekends: std::collections::BTreeSet<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct CalendarFile {
    holidays: Vec<String>,
    working_weekends: Vec<String>,
}

impl TryFrom<CalendarFile> for Calendar {
    type Error = String;
    fn try_from(f: CalendarFile) -> Result<Calendar, String> {
        let days = |field: &str, dates: &[String]| -> Result<std::collections::BTreeSet<i64>, String> {
            dates
                .iter()
                .enumerate()
                .map(|(i, d)| parse_local_date(d).map(|t| towntwin_contracts::time::Local::of(t).day).map_err(|e| format!("{field}[{i}]: {e}")))
                .collect()
        };
        Ok(Calendar { holidays: days("holidays", &f.holidays)?, working_weekends: days("working_weekends", &f.working_weekends)? })
    }
}

impl From<Calendar> for CalendarFile {
    fn from(c: Calendar) -> CalendarFile {
        let date = |d: &i64| towntwin_contracts::time::Local::of(*d * towntwin_contracts::time::DAY - towntwin_contracts::time::LOCAL_OFFSET).date_string();
        CalendarFile { holidays: c.holidays.iter().map(date).collect(), working_weekends: c.working_weekends.iter().map(date).collect() }
    }
}

impl Calendar {
    /// Whether local day `day` (days since 1970-01-01) is a working day.
    pub fn is_working_day(&self, day: i64) -> bool {
        // 1970-01-01 was a Thursday (Monday = 0).
        let weekend = (day + 3).rem_euclid(7) >= 5;
        (!weekend && !self.holidays.contains(&day)) || self.working_weekends.contains(&day)
    }

    pub(super) fn matches(&self, days: Days, day: i64) -> bool {
        match days {
            Days::Every => true,
            Days::Weekdays => self.is_working_day(day),
            Days::Weekend => !self.is_working_day(day),
        }
    }
}
