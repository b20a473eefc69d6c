//! Sync windows: when an engine may change its target (Argo CD's sync
//! windows).
//!
//! A window is a 5-field cron schedule (minute, hour, day of month, month,
//! day of week) that opens it, a duration it stays open, and the time the
//! schedule is read in: UTC by default, a fixed offset
//! ([`utc_offset`](SyncWindow::utc_offset)), or an IANA time zone with its
//! daylight-saving rules ([`time_zone`](SyncWindow::time_zone)). The rules:
//!
//! - **deny wins**: while any deny window is open, nothing syncs;
//! - when at least one **allow** window exists, syncing happens only while one
//!   is open;
//! - **manual syncs** are those a person asked for: [`Engine::sync_once`],
//!   [`Engine::rollback`] and [`EngineHandle::rollback`] (triggers `manual`
//!   and `rollback`; the automatic rollback after a failed revision uses the
//!   `rollback` trigger too). They pass a deny window that has
//!   [`manual_sync`](SyncWindow::manual_sync) set, and pass "outside every
//!   allow window" when any allow window has it. Polls, webhooks
//!   ([`EngineHandle::reconcile_now`]), drift repair and retries are
//!   automatic and always obey the windows;
//! - a sync **in progress** when a deny window opens either finishes or stops
//!   at the next wave boundary ([`InProgress`]); the rest is applied when
//!   the windows allow again.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use gitops_core::window::{InProgress, SyncWindow, SyncWindows};
//!
//! // Deploy on weekdays 08:00–18:00 in Berlin, never on New Year's Eve.
//! let windows = SyncWindows::new()
//!     .with(SyncWindow::allow("office-hours", "0 8 * * MON-FRI", Duration::from_secs(10 * 3600))?
//!         .time_zone("Europe/Berlin")?)
//!     .with(SyncWindow::deny("new-year", "0 0 31 12 *", Duration::from_secs(24 * 3600))?
//!         .manual_sync(true))
//!     .in_progress(InProgress::StopAtWaveBoundary);
//! // 2026-11-26 is a Thursday; 09:00 UTC is 10:00 in Berlin (CET, +01:00).
//! let thursday_9_utc = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_683_600);
//! assert!(windows.check(thursday_9_utc, false).is_ok());
//! let blocked = windows.check(thursday_9_utc + Duration::from_secs(9 * 3600), false).unwrap_err();
//! assert_eq!(blocked.to_string(),
//!     "sync blocked: outside every allow window until 2026-11-27T07:00:00Z");
//! # Ok::<(), gitops_core::window::WindowError>(())
//! ```
//!
//! In a time zone, a start that falls in a spring-forward gap (02:30 on the
//! night clocks jump from 02:00 to 03:00) opens the window at the same
//! distance after the gap (03:30); a start whose wall-clock time happens
//! twice when clocks go back opens it at both, so a window is open whenever
//! the wall clock says so and an hourly 1-hour window has no hole that
//! night. The duration is elapsed time, so a 10-hour window that spans a
//! change still lasts 10 hours.
//!
//! [`Engine::sync_once`]: crate::Engine::sync_once
//! [`Engine::rollback`]: crate::Engine::rollback
//! [`EngineHandle::rollback`]: crate::EngineHandle::rollback
//! [`EngineHandle::reconcile_now`]: crate::EngineHandle::reconcile_now

use crate::sync::LockExt as _;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// The wall clock windows are read against; tests use a [`ManualClock`].
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<SystemTime>,
}

impl ManualClock {
    /// A clock reading `at`.
    pub fn new(at: SystemTime) -> Self {
        Self {
            now: Mutex::new(at),
        }
    }

    /// A clock reading `seconds` after the Unix epoch (UTC).
    pub fn at_unix(seconds: u64) -> Self {
        Self::new(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds))
    }

    /// Sets the time.
    pub fn set(&self, at: SystemTime) {
        *self.now.locked() = at;
    }

    /// Moves the time forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.locked();
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.locked()
    }
}

/// Why a window could not be configured; names the window and, for a bad
/// schedule, the cron field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// The cron schedule is malformed.
    #[error("sync window {window}: schedule {schedule:?}: {field} field {value:?}: {message}")]
    Schedule {
        /// The window's name.
        window: String,
        /// The whole schedule.
        schedule: String,
        /// `minute`, `hour`, `day of month`, `month`, `day of week`, or
        /// `schedule` when the field count is wrong.
        field: &'static str,
        /// The offending text.
        value: String,
        /// What is wrong.
        message: String,
    },
    /// The duration is zero or longer than 31 days.
    #[error("sync window {window}: duration {duration:?}: {message}")]
    Duration {
        /// The window's name.
        window: String,
        /// The duration given.
        duration: Duration,
        /// What is wrong.
        message: String,
    },
    /// The time zone is not in the IANA time zone database.
    #[error("sync window {window}: time zone {zone:?}: {message}")]
    TimeZone {
        /// The window's name.
        window: String,
        /// The zone given.
        zone: String,
        /// What the time zone database said.
        message: String,
    },
    /// The UTC offset is not `Z` or `±HH:MM` within ±23:59.
    #[error("sync window {window}: UTC offset {offset:?}: expected Z or ±HH:MM (e.g. +05:30)")]
    Offset {
        /// The window's name.
        window: String,
        /// The offset given.
        offset: String,
    },
}

const MAX_DURATION: Duration = Duration::from_secs(31 * 86_400);
/// No time zone is further than this from UTC (jiff bounds offsets to ±25:59:59).
const MAX_ZONE_OFFSET: i64 = 26 * 3_600;
/// How far ahead [`SyncWindows::check`] looks for the time syncing resumes.
const HORIZON: i64 = 400 * 86_400;

/// A parsed 5-field cron schedule (bit sets of the allowed values).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Schedule {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// Day of month or day of week was `*`: both must match (else either).
    day_star: bool,
    weekday_star: bool,
}

struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const FIELDS: [FieldSpec; 5] = [
    FieldSpec {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
    },
    FieldSpec {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
    },
    FieldSpec {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
    },
    FieldSpec {
        name: "month",
        min: 1,
        max: 12,
        names: &[
            "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
        ],
    },
    FieldSpec {
        name: "day of week",
        min: 0,
        max: 7,
        names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
    },
];

/// (field name, offending text, message).
type FieldError = (&'static str, String, String);

impl FieldSpec {
    fn value(&self, text: &str) -> Result<u32, FieldError> {
        let err = |message: String| (self.name, text.to_owned(), message);
        let upper = text.to_ascii_uppercase();
        if let Some(i) = self.names.iter().position(|n| *n == upper) {
            // Month names start at 1, weekday names at 0 (SUN).
            return Ok(i as u32 + if self.min == 1 { 1 } else { 0 });
        }
        let v: u32 = text.parse().map_err(|_| {
            err(if self.names.is_empty() {
                "not a number".to_owned()
            } else {
                format!("not a number or one of {}", self.names.join(","))
            })
        })?;
        if v < self.min || v > self.max {
            return Err(err(format!("out of range {}-{}", self.min, self.max)));
        }
        Ok(v)
    }

    /// The set of values `text` selects, as bits.
    fn parse(&self, text: &str) -> Result<u64, FieldError> {
        let err = |message: &str| (self.name, text.to_owned(), message.to_owned());
        if text.is_empty() {
            return Err(err("empty"));
        }
        let mut bits = 0u64;
        for item in text.split(',') {
            if item.is_empty() {
                return Err(err("empty list item"));
            }
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => {
                    let step: u32 = s
                        .parse()
                        .ok()
                        .filter(|s| *s > 0)
                        .ok_or_else(|| (self.name, item.to_owned(), "bad step".to_owned()))?;
                    (r, Some(step))
                }
                None => (item, None),
            };
            let (lo, hi) = if range == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let (lo, hi) = (self.value(a)?, self.value(b)?);
                if lo > hi {
                    return Err((
                        self.name,
                        item.to_owned(),
                        format!("range {lo}-{hi} runs backwards"),
                    ));
                }
                (lo, hi)
            } else {
                let v = self.value(range)?;
                // `5/15`: from 5 to the end, every 15.
                (v, if step.is_some() { self.max } else { v })
            };
            let step = step.unwrap_or(1);
            let mut v = lo;
            while v <= hi {
                bits |= 1 << v;
                v += step;
            }
        }
        Ok(bits)
    }
}

impl Schedule {
    fn parse(text: &str) -> Result<Self, FieldError> {
        let expanded = match text.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err((
                "schedule",
                text.to_owned(),
                format!(
                    "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                    fields.len()
                ),
            ));
        }
        let mut sets = [0u64; 5];
        for (i, spec) in FIELDS.iter().enumerate() {
            sets[i] = spec.parse(fields[i])?;
        }
        // 7 is Sunday too.
        let weekdays = (sets[4] | (sets[4] >> 7)) & 0x7f;
        Ok(Self {
            minutes: sets[0],
            hours: sets[1] as u32,
            days: sets[2] as u32,
            months: sets[3] as u16,
            weekdays: weekdays as u8,
            day_star: fields[2].starts_with('*'),
            weekday_star: fields[4].starts_with('*'),
        })
    }

    /// Whether a start may fall on local day `day` (days since 1970-01-01).
    fn matches_day(&self, day: i64) -> bool {
        let (_, month, dom) = civil_from_days(day);
        if self.months & (1 << month) == 0 {
            return false;
        }
        let weekday = (day + 4).rem_euclid(7); // 1970-01-01 was a Thursday
        let dom_ok = self.days & (1 << dom) != 0;
        let dow_ok = self.weekdays & (1 << weekday) != 0;
        if self.day_star || self.weekday_star {
            dom_ok && dow_ok
        } else {
            dom_ok || dow_ok
        }
    }

    /// Every start in local seconds `[from, to)`, ascending.
    fn starts(&self, from: i64, to: i64) -> impl Iterator<Item = i64> + '_ {
        let first = from.div_euclid(86_400);
        let last = (to - 1).div_euclid(86_400);
        (first..=last)
            .filter(|&d| self.matches_day(d))
            .flat_map(move |d| {
                (0..24i64)
                    .filter(move |h| self.hours & (1 << h) != 0)
                    .flat_map(move |h| {
                        (0..60i64)
                            .filter(move |m| self.minutes & (1 << m) != 0)
                            .map(move |m| d * 86_400 + h * 3_600 + m * 60)
                    })
            })
            .filter(move |&s| s >= from && s < to)
    }
}

/// Year, month (1–12), day (1–31) of days since 1970-01-01 (H. Hinnant's
/// algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn unix(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
    }
}

fn from_unix(s: i64) -> SystemTime {
    if s >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(s.unsigned_abs())
    }
}

/// `2026-11-27T07:00:00Z`.
pub fn format_utc(t: SystemTime) -> String {
    let s = unix(t);
    let (y, mo, d) = civil_from_days(s.div_euclid(86_400));
    let secs = s.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// Syncing is allowed while open (and, once any allow window exists,
    /// only while one is open).
    Allow,
    /// Syncing is refused while open; deny wins over allow.
    Deny,
}

/// One window: when it opens, how long it stays open, and its offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncWindow {
    name: String,
    kind: WindowKind,
    schedule_text: String,
    schedule: Schedule,
    duration: Duration,
    zone: Zone,
    manual_sync: bool,
}

/// The time a schedule is read in.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Zone {
    /// Seconds east of UTC.
    Offset(i64),
    /// An IANA zone, daylight-saving rules included.
    Named {
        name: String,
        tz: jiff::tz::TimeZone,
    },
}

impl Zone {
    /// The UTC seconds at which the wall clock reads `local` (seconds since
    /// 1970-01-01T00:00 local): one, or two in a fold (clocks going back). A
    /// time in a gap (clocks going forward) is read with the offset before
    /// the gap, which lands the same distance after it.
    fn to_utc(&self, local: i64) -> [Option<i64>; 2] {
        use jiff::tz::AmbiguousOffset;
        match self {
            Zone::Offset(offset) => [Some(local - offset), None],
            Zone::Named { tz, .. } => {
                let Ok(wall) = jiff::Timestamp::from_second(local) else {
                    return [None, None];
                };
                let wall = wall.to_zoned(jiff::tz::TimeZone::UTC).datetime();
                let at = |offset: jiff::tz::Offset| Some(local - i64::from(offset.seconds()));
                match tz.to_ambiguous_timestamp(wall).offset() {
                    AmbiguousOffset::Unambiguous { offset } => [at(offset), None],
                    AmbiguousOffset::Gap { before, .. } => [at(before), None],
                    AmbiguousOffset::Fold { before, after } => [at(before), at(after)],
                }
            }
        }
    }

    /// The local range that holds every start whose UTC time is in `[from, to)`.
    fn local_range(&self, from: i64, to: i64) -> (i64, i64) {
        match self {
            Zone::Offset(offset) => (from + offset, to + offset),
            Zone::Named { .. } => (from - MAX_ZONE_OFFSET, to + MAX_ZONE_OFFSET),
        }
    }
}

impl SyncWindow {
    /// An allow window opening at each time `schedule` (5-field cron, in
    /// UTC unless [`utc_offset`](Self::utc_offset) says otherwise) for `duration`.
    pub fn allow(
        name: impl Into<String>,
        schedule: &str,
        duration: Duration,
    ) -> Result<Self, WindowError> {
        Self::new(name.into(), WindowKind::Allow, schedule, duration)
    }

    /// A deny window; see [`allow`](Self::allow).
    pub fn deny(
        name: impl Into<String>,
        schedule: &str,
        duration: Duration,
    ) -> Result<Self, WindowError> {
        Self::new(name.into(), WindowKind::Deny, schedule, duration)
    }

    fn new(
        name: String,
        kind: WindowKind,
        schedule: &str,
        duration: Duration,
    ) -> Result<Self, WindowError> {
        let parsed =
            Schedule::parse(schedule).map_err(|(field, value, message)| WindowError::Schedule {
                window: name.clone(),
                schedule: schedule.to_owned(),
                field,
                value,
                message,
            })?;
        if duration.as_secs() == 0 || duration > MAX_DURATION {
            return Err(WindowError::Duration {
                window: name,
                duration,
                message: "must be at least one second and at most 31 days".into(),
            });
        }
        Ok(Self {
            name,
            kind,
            schedule_text: schedule.to_owned(),
            schedule: parsed,
            duration,
            zone: Zone::Offset(0),
            manual_sync: false,
        })
    }

    /// Reads the schedule at a fixed offset from UTC: `Z`, `+05:30`, `-08:00`.
    pub fn utc_offset(mut self, offset: &str) -> Result<Self, WindowError> {
        let bad = || WindowError::Offset {
            window: self.name.clone(),
            offset: offset.to_owned(),
        };
        let seconds = if offset == "Z" || offset == "+00:00" || offset == "-00:00" {
            0
        } else {
            let (sign, rest) = match offset.as_bytes().first() {
                Some(b'+') => (1, &offset[1..]),
                Some(b'-') => (-1, &offset[1..]),
                _ => return Err(bad()),
            };
            let (h, m) = rest.split_once(':').ok_or_else(bad)?;
            if h.len() != 2 || m.len() != 2 {
                return Err(bad());
            }
            let h: i64 = h.parse().map_err(|_| bad())?;
            let m: i64 = m.parse().map_err(|_| bad())?;
            if h > 23 || m > 59 {
                return Err(bad());
            }
            sign * (h * 3_600 + m * 60)
        };
        self.zone = Zone::Offset(seconds);
        Ok(self)
    }

    /// Reads the schedule in an IANA time zone (`Europe/Berlin`,
    /// `America/New_York`), following its daylight-saving changes; see the
    /// module docs for starts in a gap or a fold. The zone comes from the
    /// system's time zone database (`/usr/share/zoneinfo`: the `tzdata`
    /// package); an unknown zone is an error naming the window.
    pub fn time_zone(mut self, zone: &str) -> Result<Self, WindowError> {
        let tz = jiff::tz::db()
            .get(zone)
            .map_err(|e| WindowError::TimeZone {
                window: self.name.clone(),
                zone: zone.to_owned(),
                message: e.to_string(),
            })?;
        self.zone = Zone::Named {
            name: zone.to_owned(),
            tz,
        };
        Ok(self)
    }

    /// Lets manual syncs through while this (deny) window is open, or, on an
    /// allow window, outside every allow window (default off).
    pub fn manual_sync(mut self, allowed: bool) -> Self {
        self.manual_sync = allowed;
        self
    }

    /// The window's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Allow or deny.
    pub fn kind(&self) -> WindowKind {
        self.kind
    }

    /// Whether the window is open at `at`.
    pub fn is_open(&self, at: SystemTime) -> bool {
        let t = unix(at);
        self.intervals(t - self.duration.as_secs() as i64 + 1, t + 1)
            .next()
            .is_some()
    }

    /// The open intervals `[start, end)` (UTC seconds) whose start lies in
    /// `[from, to)`; ascending except around a time zone's gap.
    fn intervals(&self, from: i64, to: i64) -> impl Iterator<Item = (i64, i64)> + '_ {
        let length = self.duration.as_secs() as i64;
        let (local_from, local_to) = self.zone.local_range(from, to);
        self.schedule
            .starts(local_from, local_to)
            .flat_map(move |local| self.zone.to_utc(local).into_iter().flatten())
            .filter(move |start| (from..to).contains(start))
            .map(move |start| (start, start + length))
    }
}

impl fmt::Display for SyncWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            WindowKind::Allow => "allow",
            WindowKind::Deny => "deny",
        };
        write!(
            f,
            "{kind} window {} ({:?} for {:?}",
            self.name, self.schedule_text, self.duration
        )?;
        match &self.zone {
            Zone::Offset(0) => f.write_str(")"),
            Zone::Offset(seconds) => {
                let sign = if *seconds < 0 { '-' } else { '+' };
                let minutes = seconds.abs() / 60;
                write!(f, " at UTC{sign}{:02}:{:02})", minutes / 60, minutes % 60)
            }
            Zone::Named { name, .. } => write!(f, " in {name})"),
        }
    }
}

/// What a sync in progress does when a deny window opens (or the last
/// allow window closes) during it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InProgress {
    /// Finish the sync (default).
    #[default]
    Finish,
    /// Stop before the next wave (and before prune); the rest is applied
    /// when the windows allow again.
    StopAtWaveBoundary,
}

/// Why the windows refuse a sync now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowBlock {
    /// The deny window that is open, or `None` when the block is "outside
    /// every allow window".
    pub deny: Option<String>,
    /// When syncing is next allowed (`None`: not within 400 days).
    pub until: Option<SystemTime>,
}

impl fmt::Display for WindowBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.deny {
            Some(name) => write!(f, "sync blocked by deny window {name}")?,
            None => f.write_str("sync blocked: outside every allow window")?,
        }
        match self.until {
            Some(t) => write!(f, " until {}", format_utc(t)),
            None => f.write_str(" (no opening within 400 days)"),
        }
    }
}

/// The windows of one engine and its in-progress policy. Empty: always open.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncWindows {
    windows: Vec<SyncWindow>,
    in_progress: InProgress,
}

impl SyncWindows {
    /// No windows: syncing is always allowed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a window.
    pub fn with(mut self, window: SyncWindow) -> Self {
        self.windows.push(window);
        self
    }

    /// What a sync in progress does when the windows close (default
    /// [`InProgress::Finish`]).
    pub fn in_progress(mut self, policy: InProgress) -> Self {
        self.in_progress = policy;
        self
    }

    /// The in-progress policy.
    pub fn in_progress_policy(&self) -> InProgress {
        self.in_progress
    }

    /// The windows.
    pub fn windows(&self) -> &[SyncWindow] {
        &self.windows
    }

    /// Whether there are no windows.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// The deny windows that bind a sync (`manual`: overridable ones do not).
    fn denies(&self, manual: bool) -> impl Iterator<Item = &SyncWindow> {
        self.windows
            .iter()
            .filter(move |w| w.kind == WindowKind::Deny && !(manual && w.manual_sync))
    }

    /// Whether "only inside an allow window" binds a sync.
    fn allow_binds(&self, manual: bool) -> bool {
        let mut allows = self.windows.iter().filter(|w| w.kind == WindowKind::Allow);
        let first = allows.clone().next().is_some();
        first && !(manual && allows.any(|w| w.manual_sync))
    }

    /// `Ok` when a sync (`manual` or automatic, see the module docs) may run
    /// at `at`; else which window blocks it and until when.
    pub fn check(&self, at: SystemTime, manual: bool) -> Result<(), WindowBlock> {
        let deny = self.denies(manual).find(|w| w.is_open(at));
        let outside = self.allow_binds(manual)
            && !self
                .windows
                .iter()
                .any(|w| w.kind == WindowKind::Allow && w.is_open(at));
        if deny.is_none() && !outside {
            return Ok(());
        }
        Err(WindowBlock {
            deny: deny.map(|w| w.name.clone()),
            until: self.next_open(unix(at), manual).map(from_unix),
        })
    }

    /// The first second at or after `t` when `check` passes, within the horizon.
    fn next_open(&self, t: i64, manual: bool) -> Option<i64> {
        let merged = |windows: Vec<&SyncWindow>| {
            let mut all: Vec<(i64, i64)> = windows
                .iter()
                .flat_map(|w| w.intervals(t - w.duration.as_secs() as i64, t + HORIZON))
                .collect();
            all.sort_unstable();
            let mut out: Vec<(i64, i64)> = Vec::new();
            for (a, b) in all {
                match out.last_mut() {
                    Some(last) if a <= last.1 => last.1 = last.1.max(b),
                    _ => out.push((a, b)),
                }
            }
            out
        };
        let deny = merged(self.denies(manual).collect());
        let allow = self.allow_binds(manual).then(|| {
            merged(
                self.windows
                    .iter()
                    .filter(|w| w.kind == WindowKind::Allow)
                    .collect(),
            )
        });
        // Both lists are merged, so sorted by start and by end: binary search.
        let mut candidate = t;
        loop {
            if let Some(allow) = &allow {
                let next = allow.partition_point(|(_, end)| *end <= candidate);
                let (start, _) = *allow.get(next)?;
                candidate = candidate.max(start);
            }
            let next = deny.partition_point(|(_, end)| *end <= candidate);
            match deny.get(next) {
                Some((start, end)) if *start <= candidate => candidate = *end,
                _ => break,
            }
        }
        (candidate < t + HORIZON).then_some(candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_783), (2026, 11, 26));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(format_utc(from_unix(1_795_683_600)), "2026-11-26T09:00:00Z");
    }

    #[test]
    fn field_syntax() {
        let s = Schedule::parse("*/15 9-17 * JAN,jul 1-5").expect("parses");
        assert_eq!(s.minutes, 1 | 1 << 15 | 1 << 30 | 1 << 45);
        assert_eq!(s.hours, (9..=17).map(|h| 1u32 << h).sum::<u32>());
        assert_eq!(s.months, 1 << 1 | 1 << 7);
        assert_eq!(s.weekdays, 0b0011_1110);
        let s = Schedule::parse("5/20 0 1 * 7").expect("parses");
        assert_eq!(s.minutes, 1 << 5 | 1 << 25 | 1 << 45);
        assert_eq!(s.weekdays, 1, "7 is Sunday");
        assert_eq!(Schedule::parse("@daily"), Schedule::parse("0 0 * * *"));
    }

    #[test]
    fn errors_name_the_window_and_the_field() {
        let cases = [
            ("61 * * * *", "minute", "61", "out of range 0-59"),
            ("0 24 * * *", "hour", "24", "out of range 0-23"),
            ("0 0 0 * *", "day of month", "0", "out of range 1-31"),
            ("0 0 * FOO *", "month", "FOO", "not a number or one of JAN"),
            (
                "0 0 * * 5-1",
                "day of week",
                "5-1",
                "range 5-1 runs backwards",
            ),
            ("*/0 * * * *", "minute", "*/0", "bad step"),
            ("0 0 * *", "schedule", "0 0 * *", "expected 5 fields"),
            ("0 0 ,1 * *", "day of month", ",1", "empty list item"),
        ];
        for (schedule, field, value, message) in cases {
            let err =
                SyncWindow::deny("freeze", schedule, Duration::from_secs(60)).expect_err(schedule);
            match &err {
                WindowError::Schedule {
                    window,
                    field: f,
                    value: v,
                    message: m,
                    ..
                } => {
                    assert_eq!(window, "freeze");
                    assert_eq!(*f, field, "{schedule}");
                    assert_eq!(v, value, "{schedule}");
                    assert!(m.starts_with(message), "{schedule}: {m}");
                }
                other => panic!("{schedule}: {other}"),
            }
            assert!(
                err.to_string().starts_with("sync window freeze: schedule"),
                "{err}"
            );
        }
        let err = SyncWindow::allow("w", "* * * * *", Duration::ZERO).expect_err("zero");
        assert!(matches!(err, WindowError::Duration { .. }), "{err}");
        let err = SyncWindow::allow("w", "* * * * *", Duration::from_secs(60))
            .and_then(|w| w.utc_offset("+5"))
            .expect_err("offset");
        assert_eq!(
            err.to_string(),
            "sync window w: UTC offset \"+5\": expected Z or ±HH:MM (e.g. +05:30)"
        );
    }
}
