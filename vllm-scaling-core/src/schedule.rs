//! Scheduled bounds: `minReplicas`/`maxReplicas` overrides by weekday and time of day,
//! in a time zone.
//!
//! Time zones come from the IANA database compiled into the binary (jiff's bundled
//! copy, read through [`jiff::tz::TimeZoneDatabase::bundled`]), so evaluating a schedule
//! never reads `/usr/share/zoneinfo` or any other file: the core stays free of I/O, and
//! a controller on a distroless image behaves like one on a full distribution.
//!
//! Schedules compare the driver's `now` with wall-clock windows, so they are the one
//! place where the epoch of [`Timestamp`] matters: **drivers of policies with schedules
//! must pass Unix time** (milliseconds since 1970-01-01T00:00:00Z).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// A day of the week, as written in a schedule's `days` (`Mon` … `Sun`, or the full
/// English name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub enum Weekday {
    /// Monday.
    #[serde(alias = "Monday")]
    Mon,
    /// Tuesday.
    #[serde(alias = "Tuesday")]
    Tue,
    /// Wednesday.
    #[serde(alias = "Wednesday")]
    Wed,
    /// Thursday.
    #[serde(alias = "Thursday")]
    Thu,
    /// Friday.
    #[serde(alias = "Friday")]
    Fri,
    /// Saturday.
    #[serde(alias = "Saturday")]
    Sat,
    /// Sunday.
    #[serde(alias = "Sunday")]
    Sun,
}

impl Weekday {
    /// Every day, Monday first.
    pub const ALL: [Self; 7] = [Self::Mon, Self::Tue, Self::Wed, Self::Thu, Self::Fri, Self::Sat, Self::Sun];

    /// 0 for Monday … 6 for Sunday.
    #[must_use]
    pub const fn index(self) -> usize {
        match self {
            Self::Mon => 0,
            Self::Tue => 1,
            Self::Wed => 2,
            Self::Thu => 3,
            Self::Fri => 4,
            Self::Sat => 5,
            Self::Sun => 6,
        }
    }

    /// The day before.
    #[must_use]
    pub const fn previous(self) -> Self {
        Self::ALL[(self.index() + 6) % 7]
    }

    fn from_jiff(day: jiff::civil::Weekday) -> Self {
        Self::ALL[usize::from(day.to_monday_zero_offset().unsigned_abs())]
    }
}

impl fmt::Display for Weekday {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][self.index()])
    }
}

/// One entry of `spec.schedules`: replica bounds that apply on some weekdays between two
/// wall-clock times in a time zone.
///
/// ```yaml
/// schedules:
///   - name: weekday-daytime
///     timeZone: Europe/Berlin      # an IANA name, `UTC`, or a fixed offset like +05:30
///     days: [Mon, Tue, Wed, Thu, Fri]
///     start: "08:00"
///     end: "20:00"                 # an end at or before the start runs past midnight
///     minReplicas: 4
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScheduleSpec {
    /// A name for status and explanations (default `schedules[i]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The time zone `start` and `end` are read in: an IANA name (`America/New_York`),
    /// `UTC`, or a fixed offset (`+05:30`, `-08:00`). Required: a wrong default zone
    /// would shift every window silently.
    pub time_zone: String,
    /// The weekdays the window starts on (default: every day). A window that runs past
    /// midnight belongs to the day it starts on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<Vec<Weekday>>,
    /// Local start time, `HH:MM` (inclusive).
    pub start: String,
    /// Local end time, `HH:MM` or `24:00` (exclusive). At or before `start`: the window
    /// ends on the next day.
    pub end: String,
    /// `minReplicas` while the window is active (default: the spec's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<i32>,
    /// `maxReplicas` while the window is active (default: the spec's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<i32>,
}

/// A time zone for schedules: an IANA zone from the bundled database, or a fixed offset.
///
/// Compared by the name it was given.
#[derive(Clone)]
pub struct ScheduleZone {
    name: String,
    zone: jiff::tz::TimeZone,
}

impl ScheduleZone {
    /// Reads a zone: `UTC`, an IANA name (matched without regard to case), or a fixed
    /// offset `+HH:MM` / `-HH:MM` (`+HH` also accepted).
    ///
    /// # Errors
    /// A sentence saying why the name is not a zone.
    pub fn parse(name: &str) -> Result<Self, String> {
        let trimmed = name.trim();
        if trimmed.is_empty() {
            return Err(
                "must name a time zone (an IANA name such as Europe/Berlin, UTC, or an offset such as +05:30)".into()
            );
        }
        if trimmed.starts_with('+') || trimmed.starts_with('-') {
            let seconds = parse_offset(trimmed)?;
            let offset = jiff::tz::Offset::from_seconds(seconds).map_err(|e| format!("`{trimmed}`: {e}"))?;
            return Ok(Self { name: trimmed.to_owned(), zone: jiff::tz::TimeZone::fixed(offset) });
        }
        // The bundled database only: never the system's zoneinfo files (no I/O in core).
        match jiff::tz::TimeZoneDatabase::bundled().get(trimmed) {
            Ok(zone) => Ok(Self { name: trimmed.to_owned(), zone }),
            Err(_) => Err(format!(
                "unknown time zone `{trimmed}`: use an IANA name such as Europe/Berlin or America/New_York, UTC, or an offset such as +05:30"
            )),
        }
    }

    /// The name as given.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The local weekday and the seconds since local midnight at `t` (Unix time);
    /// `None` for instants past the year 9999.
    #[must_use]
    pub fn local(&self, t: Timestamp) -> Option<(Weekday, u32)> {
        let millis = i64::try_from(t.as_millis()).ok()?;
        let instant = jiff::Timestamp::from_millisecond(millis).ok()?;
        let civil = self.zone.to_datetime(instant);
        let secs = u32::from(civil.hour().unsigned_abs()) * 3600
            + u32::from(civil.minute().unsigned_abs()) * 60
            + u32::from(civil.second().unsigned_abs());
        Some((Weekday::from_jiff(civil.weekday()), secs))
    }
}

impl fmt::Debug for ScheduleZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ScheduleZone").field(&self.name).finish()
    }
}

impl PartialEq for ScheduleZone {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

fn parse_offset(text: &str) -> Result<i32, String> {
    let bad = || format!("`{text}` is not an offset: use +HH:MM or -HH:MM, such as +05:30");
    let (sign, rest) = match text.split_at(1) {
        ("+", rest) => (1, rest),
        ("-", rest) => (-1, rest),
        _ => return Err(bad()),
    };
    let (hours, minutes) = match rest.split_once(':') {
        Some((h, m)) => (h, m),
        None => (rest, "00"),
    };
    if hours.len() != 2 || minutes.len() != 2 || !hours.chars().chain(minutes.chars()).all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let h: i32 = hours.parse().map_err(|_| bad())?;
    let m: i32 = minutes.parse().map_err(|_| bad())?;
    if h > 18 || m > 59 {
        return Err(format!("`{text}` is out of range: offsets run from -18:00 to +18:00"));
    }
    Ok(sign * (h * 3600 + m * 60))
}

/// Parses `HH:MM` into minutes since midnight; `24:00` only when `allow_24` (an end).
pub(crate) fn parse_clock(text: &str, allow_24: bool) -> Result<u32, String> {
    let bad = || format!("`{text}` is not a time of day: use HH:MM on a 24-hour clock, such as 08:00 or 17:30");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 || !h.chars().chain(m.chars()).all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if h == 24 && m == 0 && allow_24 {
        return Ok(24 * 60);
    }
    if h > 23 || m > 59 {
        return Err(format!(
            "`{text}` is out of range: hours run 00-23 and minutes 00-59{}",
            if allow_24 { " (24:00 ends a day)" } else { "" }
        ));
    }
    Ok(h * 60 + m)
}

/// A validated schedule: what the engine evaluates.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ResolvedSchedule {
    /// Its name, or `schedules[i]`.
    pub name: String,
    /// The zone its times are read in.
    pub zone: ScheduleZone,
    /// The weekdays the window starts on, indexed Monday = 0.
    pub days: [bool; 7],
    /// Local start, minutes since midnight (inclusive).
    pub start_minute: u32,
    /// Local end, minutes since midnight (exclusive); at or before `start_minute` the
    /// window ends on the next day.
    pub end_minute: u32,
    /// `minReplicas` override.
    pub min_replicas: Option<i32>,
    /// `maxReplicas` override.
    pub max_replicas: Option<i32>,
}

impl ResolvedSchedule {
    /// Whether the window is open at `now` (Unix time).
    ///
    /// Wall-clock semantics: on the day clocks jump forward, a window inside the skipped
    /// hour never opens; on the day they fall back, the repeated hour is inside the
    /// window both times.
    #[must_use]
    pub fn is_active(&self, now: Timestamp) -> bool {
        let Some((day, secs)) = self.zone.local(now) else { return false };
        let (start, end) = (self.start_minute * 60, self.end_minute * 60);
        if start < end {
            self.days[day.index()] && (start..end).contains(&secs)
        } else {
            // Runs past midnight: the evening part on a listed day, the morning part on
            // the day after a listed day.
            (self.days[day.index()] && secs >= start) || (self.days[day.previous().index()] && secs < end)
        }
    }
}

/// The replica bounds in force at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Bounds {
    /// The effective `minReplicas`.
    pub min_replicas: i32,
    /// The effective `maxReplicas`.
    pub max_replicas: i32,
    /// The schedule that set them, if one is active (the first active one in spec
    /// order wins).
    pub schedule: Option<String>,
    /// Whether the active schedule overrides `minReplicas`.
    pub min_from_schedule: bool,
    /// Whether the active schedule overrides `maxReplicas`.
    pub max_from_schedule: bool,
}

impl Bounds {
    /// The bounds at `now`: the first active schedule's overrides on top of the spec's.
    #[must_use]
    pub fn at(schedules: &[ResolvedSchedule], min_replicas: i32, max_replicas: i32, now: Timestamp) -> Self {
        match schedules.iter().find(|s| s.is_active(now)) {
            None => {
                Self { min_replicas, max_replicas, schedule: None, min_from_schedule: false, max_from_schedule: false }
            }
            Some(s) => Self {
                min_replicas: s.min_replicas.unwrap_or(min_replicas),
                max_replicas: s.max_replicas.unwrap_or(max_replicas),
                schedule: Some(s.name.clone()),
                min_from_schedule: s.min_replicas.is_some(),
                max_from_schedule: s.max_replicas.is_some(),
            },
        }
    }
}

/// The longest schedule `name`, in bytes (the CRD's `maxLength`).
pub const MAX_SCHEDULE_NAME_LEN: usize = 253;

/// Validates `spec.schedules` against the spec's bounds. `zero_allowed` says whether a
/// scheduled `minReplicas: 0` is valid (scale-to-zero is configured).
pub(crate) fn resolve_schedules(
    specs: &[ScheduleSpec],
    min_replicas: i32,
    max_replicas: i32,
    zero_allowed: bool,
    err: &mut dyn FnMut(&str, String),
) -> Vec<ResolvedSchedule> {
    if specs.len() > crate::policy::MAX_SCHEDULES {
        err("schedules", format!("must hold at most {} schedules, got {}", crate::policy::MAX_SCHEDULES, specs.len()));
        return Vec::new();
    }
    let mut out = Vec::with_capacity(specs.len());
    let mut first_index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, spec) in specs.iter().enumerate() {
        let at = |field: &str| format!("schedules[{i}].{field}");
        let name = spec.name.clone().unwrap_or_else(|| format!("schedules[{i}]"));
        if let Some(n) = &spec.name {
            if n.trim().is_empty() {
                err(&at("name"), "must not be empty".into());
            } else if n.len() > MAX_SCHEDULE_NAME_LEN {
                err(&at("name"), format!("must be at most {MAX_SCHEDULE_NAME_LEN} characters, got {}", n.len()));
            } else if let Some(j) = first_index.get(n.as_str()) {
                err(&at("name"), format!("duplicate schedule name `{n}` (also schedules[{j}])"));
            } else {
                first_index.insert(n, i);
            }
        }
        let zone = match ScheduleZone::parse(&spec.time_zone) {
            Ok(z) => Some(z),
            Err(reason) => {
                err(&at("timeZone"), reason);
                None
            }
        };
        let start = parse_clock(&spec.start, false).map_err(|r| err(&at("start"), r)).ok();
        let end = parse_clock(&spec.end, true).map_err(|r| err(&at("end"), r)).ok();
        if let (Some(s), Some(e)) = (start, end)
            && (s == e || (e == 24 * 60 && s == 0))
        {
            err(
                &at("end"),
                format!(
                    "the window {}-{} is empty or a whole day; for every day leave the bounds in the spec",
                    spec.start, spec.end
                ),
            );
        }
        let mut days = [false; 7];
        match &spec.days {
            None => days = [true; 7],
            Some(list) if list.is_empty() => err(&at("days"), "must list at least one day when given".into()),
            Some(list) => {
                for d in list {
                    if days[d.index()] {
                        err(&at("days"), format!("{d} is listed twice"));
                    }
                    days[d.index()] = true;
                }
            }
        }
        if spec.min_replicas.is_none() && spec.max_replicas.is_none() {
            err(&at("minReplicas"), "a schedule must set minReplicas, maxReplicas or both".into());
        }
        let min = spec.min_replicas.unwrap_or(min_replicas);
        let max = spec.max_replicas.unwrap_or(max_replicas);
        if let Some(m) = spec.min_replicas
            && (m < 0 || (m == 0 && !zero_allowed))
        {
            err(&at("minReplicas"), format!("must be at least 1, got {m} (0 needs spec.scaleToZero)"));
        }
        if let Some(m) = spec.max_replicas
            && m < 1
        {
            err(&at("maxReplicas"), format!("must be at least 1, got {m}"));
        }
        if min > max {
            let field = if spec.min_replicas.is_some() { "minReplicas" } else { "maxReplicas" };
            err(&at(field), format!("the scheduled bounds are inverted: minReplicas {min} > maxReplicas {max}"));
        }
        if let (Some(zone), Some(start_minute), Some(end_minute)) = (zone, start, end) {
            out.push(ResolvedSchedule {
                name,
                zone,
                days,
                start_minute,
                end_minute,
                min_replicas: spec.min_replicas,
                max_replicas: spec.max_replicas,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_and_offsets() {
        assert_eq!(parse_clock("08:30", false), Ok(510));
        assert_eq!(parse_clock("24:00", true), Ok(1440));
        assert!(parse_clock("24:00", false).is_err());
        assert!(parse_clock("8:30", false).is_err());
        assert!(parse_clock("12:60", false).is_err());
        assert_eq!(parse_offset("+05:30"), Ok(19_800));
        assert_eq!(parse_offset("-08"), Ok(-28_800));
        assert!(parse_offset("+5:30").is_err());
        assert!(parse_offset("+19:00").is_err());
    }

    #[test]
    fn zones_come_from_the_bundled_database() {
        let z = ScheduleZone::parse("europe/berlin").unwrap();
        // 2026-01-05 (a Monday) 07:00 UTC is 08:00 in Berlin (UTC+1 in winter).
        let (day, secs) = z.local(Timestamp::from_secs(1_767_596_400)).unwrap();
        assert_eq!((day, secs), (Weekday::Mon, 8 * 3600));
        let e = ScheduleZone::parse("Mars/Olympus").unwrap_err();
        assert!(e.contains("unknown time zone"), "{e}");
        assert_eq!(ScheduleZone::parse("UTC").unwrap().local(Timestamp::ZERO), Some((Weekday::Thu, 0)));
    }
}
