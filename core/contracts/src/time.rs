//! Event time: milliseconds since the Unix epoch (UTC), formatted as RFC 3339, and the town's local calendar
//! (China Standard Time, UTC+8, no daylight saving). Nothing here reads the wall clock.

/// Milliseconds since 1970-01-01T00:00:00Z, in simulated (event) time.
pub type Millis = i64;

pub const SECOND: Millis = 1_000;
pub const MINUTE: Millis = 60 * SECOND;
pub const HOUR: Millis = 60 * MINUTE;
pub const DAY: Millis = 24 * HOUR;
/// Shanghai is UTC+8 all year.
pub const LOCAL_OFFSET: Millis = 8 * HOUR;

/// Days since the epoch for a civil date (proleptic Gregorian), after H. Hinnant's `days_from_civil`.
pub fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y } as i64;
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since the epoch.
pub fn civil_from_days(z: i64) -> (i32, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    ((if m <= 2 { y + 1 } else { y }) as i32, m, d)
}

/// Parses `YYYY-MM-DD` as local midnight in the town, returned as UTC millis.
pub fn parse_local_date(s: &str) -> Result<Millis, String> {
    let bad = || format!("`{s}` is not a date of the form YYYY-MM-DD");
    let mut it = s.split('-');
    let (Some(y), Some(m), Some(d), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(bad());
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err(bad());
    }
    let (y, m, d): (i32, u32, u32) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?, d.parse().map_err(|_| bad())?);
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return Err(format!("`{s}` is not a real date"));
    }
    Ok(days_from_civil(y, m, d) * DAY - LOCAL_OFFSET)
}

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Appends `t` as RFC 3339 UTC with milliseconds, e.g. `2026-03-02T07:31:12.250Z`. Digits are written
/// by hand: this runs once per event and `write!` was a tenth of the twin's time.
pub fn write_rfc3339(out: &mut String, t: Millis) {
    out.push_str(std::str::from_utf8(&rfc3339_bytes(t)).unwrap_or_default());
}

/// `t` as RFC 3339 in UTC with milliseconds (`2026-03-01T08:00:00.000Z`), as bytes: for an encoder that
/// writes it straight into its buffer.
pub fn rfc3339_bytes(t: Millis) -> [u8; 24] {
    // The date and the minute are remembered per thread: an encoder writes a minute's events in a row (a
    // twin's tick), and working out the calendar date was most of this function's time.
    thread_local! {
        static LAST: std::cell::Cell<(Millis, [u8; 24])> = const { std::cell::Cell::new((Millis::MIN, [0; 24])) };
    }
    let minute = t.div_euclid(MINUTE);
    let (last, mut b) = LAST.get();
    if last != minute {
        b = rfc3339_full(t);
        LAST.set((minute, b));
    }
    let ms = t.rem_euclid(MINUTE);
    let (s, milli) = ((ms / SECOND) as u8, (ms % SECOND) as u16);
    b[17] = b'0' + s / 10;
    b[18] = b'0' + s % 10;
    b[20] = b'0' + (milli / 100) as u8;
    b[21] = b'0' + (milli / 10 % 10) as u8;
    b[22] = b'0' + (milli % 10) as u8;
    b
}

/// [`rfc3339_bytes`] worked out whole.
fn rfc3339_full(t: Millis) -> [u8; 24] {
    let days = t.div_euclid(DAY);
    let ms = t.rem_euclid(DAY);
    let (y, m, d) = civil_from_days(days);
    let (h, mi, s, milli) = (ms / HOUR, ms / MINUTE % 60, ms / SECOND % 60, ms % SECOND);
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: i64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y.rem_euclid(10_000) as i64);
    put(5, 2, m as i64);
    put(8, 2, d as i64);
    put(11, 2, h);
    put(14, 2, mi);
    put(17, 2, s);
    put(20, 3, milli);
    b
}

pub fn rfc3339(t: Millis) -> String {
    let mut s = String::with_capacity(24);
    write_rfc3339(&mut s, t);
    s
}

/// The first instant RFC 3339 can write in UTC, 0000-01-01T00:00:00.000Z.
pub const RFC3339_MIN: Millis = -62_167_219_200_000;
/// The last instant RFC 3339 can write in UTC, 9999-12-31T23:59:59.999Z.
pub const RFC3339_MAX: Millis = 253_402_300_799_999;

/// Parses an RFC 3339 timestamp (`Z` or `+hh:mm`, any fraction, truncated to milliseconds) with chrono's
/// parser; `None` for anything else, including a time with no offset, and a time whose offset puts it
/// outside the years 0000 to 9999 in UTC (`0000-01-01T00:00:00+01:00` is in the year -1), which
/// [`write_rfc3339`] could not write back: every time this accepts is written back as the same instant.
pub fn parse_rfc3339(s: &str) -> Option<Millis> {
    chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_millis()).filter(|t| (RFC3339_MIN..=RFC3339_MAX).contains(t))
}

/// A local time of day, `HH:MM` (00:00 to 23:59), held as minutes after local midnight. Data files write it
/// as the string `"HH:MM"`; anything else is refused when the file is read, so a loaded value is always a
/// real time and nothing downstream parses it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HhMm(u16);

impl HhMm {
    /// `h:m`, or `None` unless `h < 24` and `m < 60`.
    pub const fn new(h: u16, m: u16) -> Option<HhMm> {
        if h < 24 && m < 60 { Some(HhMm(h * 60 + m)) } else { None }
    }

    /// Minutes after local midnight, 0..1440.
    pub const fn minutes(self) -> u32 {
        self.0 as u32
    }

    /// Milliseconds after local midnight.
    pub const fn millis(self) -> Millis {
        self.0 as Millis * MINUTE
    }
}

impl std::fmt::Display for HhMm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

impl std::str::FromStr for HhMm {
    type Err = String;
    /// Exactly two digits, a colon, two digits.
    fn from_str(s: &str) -> Result<HhMm, String> {
        let bad = || format!("`{s}` is not a time HH:MM");
        let b = s.as_bytes();
        if b.len() != 5 || b[2] != b':' || ![b[0], b[1], b[3], b[4]].iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        let d = |i: usize| (b[i] - b'0') as u16;
        HhMm::new(d(0) * 10 + d(1), d(3) * 10 + d(4)).ok_or_else(bad)
    }
}

impl serde::Serialize for HhMm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for HhMm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<HhMm, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Local (town) calendar facts of an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    /// Days since the epoch, in local time.
    pub day: i64,
    pub hour: u32,
    pub minute: u32,
    /// 0 = Monday .. 6 = Sunday.
    pub weekday: u32,
}

impl Local {
    pub fn of(t: Millis) -> Local {
        let lt = t + LOCAL_OFFSET;
        let day = lt.div_euclid(DAY);
        let ms = lt.rem_euclid(DAY);
        // 1970-01-01 was a Thursday (weekday 3 counting from Monday = 0).
        let weekday = (day + 3).rem_euclid(7) as u32;
        Local { day, hour: (ms / HOUR) as u32, minute: (ms / MINUTE % 60) as u32, weekday }
    }
    pub fn is_weekend(self) -> bool {
        self.weekday >= 5
    }
    /// Local midnight of this day, as UTC millis.
    pub fn midnight(self) -> Millis {
        self.day * DAY - LOCAL_OFFSET
    }
    pub fn date_string(self) -> String {
        let (y, m, d) = civil_from_days(self.day);
        format!("{y:04}-{m:02}-{d:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip_and_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(days_from_civil(2026, 3, 2)), (2026, 3, 2));
        for z in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn local_date_is_utc_plus_eight() {
        let t = parse_local_date("2026-03-02").unwrap();
        assert_eq!(rfc3339(t), "2026-03-01T16:00:00.000Z");
        let l = Local::of(t);
        assert_eq!((l.hour, l.weekday, l.date_string()), (0, 0, "2026-03-02".to_string()));
        assert!(parse_local_date("2026-02-30").is_err());
        assert!(parse_local_date("2026-3-2").is_err());
    }

    #[test]
    fn the_remembered_minute_writes_what_chrono_writes() {
        let chrono_writes = |t: Millis| chrono::DateTime::from_timestamp_millis(t).unwrap().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string().into_bytes();
        // Within a minute, across minutes, days and years, back and forth, and before 1970.
        let mut times = vec![0, -1, 59_999, 60_000, -60_000, -60_001, RFC3339_MIN, RFC3339_MAX, 1_772_380_800_123];
        let mut t = 1_772_380_799_000i64;
        for step in [1, 7, 999, 1_000, 59_999, 60_001, 3_599_999, -60_000, 86_400_000, -1, 31_536_000_000] {
            for _ in 0..50 {
                t += step;
                times.push(t);
            }
        }
        for t in times {
            assert_eq!(rfc3339_bytes(t).to_vec(), chrono_writes(t), "{t}");
            assert_eq!(rfc3339_bytes(t), rfc3339_full(t), "{t}");
        }
    }

    #[test]
    fn rfc3339_parses_what_it_writes() {
        for t in [0, 1_772_380_800_123, 1_772_380_800_000 + 86_399_999] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        }
        assert_eq!(parse_rfc3339("2026-03-02T08:00:00+08:00"), parse_rfc3339("2026-03-02T00:00:00Z"));
        assert_eq!(parse_rfc3339("2026-03-02T08:00:00"), None);
        assert_eq!(parse_rfc3339("2026-13-02T08:00:00Z"), None);
        assert_eq!(parse_rfc3339("2026-02-30T08:00:00Z"), None);
        assert_eq!(parse_rfc3339("2026-03-02T00:00:00.123456Z"), Some(parse_rfc3339("2026-03-02T00:00:00Z").unwrap() + 123));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
    }

    #[test]
    fn a_time_outside_the_years_rfc3339_writes_is_refused() {
        // Found with the round-trip check of the decode_event fuzz target (fuzz): an offset took a
        // four-digit year's time into the year -1 or 10000 in UTC, and write_rfc3339 wrote the year -1 as 9999.
        assert_eq!(parse_rfc3339("0000-01-01T00:00:00+01:00"), None);
        assert_eq!(parse_rfc3339("9999-12-31T23:30:00-01:00"), None);
        assert_eq!(days_from_civil(0, 1, 1) * DAY, RFC3339_MIN);
        assert_eq!(days_from_civil(10_000, 1, 1) * DAY - 1, RFC3339_MAX);
        assert_eq!(rfc3339(RFC3339_MIN), "0000-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(RFC3339_MAX), "9999-12-31T23:59:59.999Z");
        for s in ["0000-01-01T00:00:00Z", "0000-01-01T01:00:00+01:00", "9999-12-31T23:59:59.999Z", "9999-12-31T22:59:59.999-01:00"] {
            let t = parse_rfc3339(s).unwrap_or_else(|| panic!("{s}"));
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t), "{s}");
        }
    }

    #[test]
    fn hhmm_reads_and_writes_two_digit_times_only() {
        assert_eq!("09:30".parse::<HhMm>().map(HhMm::minutes), Ok(570));
        assert_eq!("00:00".parse::<HhMm>().map(HhMm::minutes), Ok(0));
        assert_eq!("23:59".parse::<HhMm>().map(HhMm::minutes), Ok(1439));
        for bad in ["24:00", "25:00", "12:60", "9:30", "09:3", "0930", "09-30", "+9:30", " 9:30", "09:30 ", "ab:cd", ""] {
            assert_eq!(bad.parse::<HhMm>(), Err(format!("`{bad}` is not a time HH:MM")), "{bad:?}");
        }
        let t = HhMm::new(7, 5).unwrap();
        assert_eq!(t.to_string(), "07:05");
        assert_eq!(t.millis(), 7 * HOUR + 5 * MINUTE);
        assert_eq!(HhMm::new(24, 0), None);
        let e = crate::load::parse_ron::<Vec<HhMm>>(std::path::Path::new("x.ron"), "[\"08:00\", \"25:00\"]").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("[1]"), "{e}");
        assert!(e.to_string().contains("`25:00` is not a time HH:MM"), "{e}");
        assert_eq!(ron::to_string(&t).unwrap(), "\"07:05\"");
    }
}
