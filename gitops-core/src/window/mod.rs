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

mod clock;
mod cron;
mod zone;

use std::fmt;
use std::time::{Duration, SystemTime};

use jiff::{RoundMode, SignedDuration, Timestamp, TimestampRound, Unit};

pub use clock::{Clock, ManualClock, SystemClock};
use cron::Schedule;
use zone::Zone;

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
/// How far ahead [`SyncWindows::check`] looks for the time syncing resumes.
const HORIZON: SignedDuration = SignedDuration::from_hours(400 * 24);
const SECOND: SignedDuration = SignedDuration::from_secs(1);

/// An open interval `[start, end)`.
type Interval = (Timestamp, Timestamp);

/// `at` to the second (rounded down); times beyond jiff's range (years
/// -9999 to 9999) are clamped to its ends.
fn timestamp(at: SystemTime) -> Timestamp {
    let exact = Timestamp::try_from(at).unwrap_or(if at < SystemTime::UNIX_EPOCH {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    });
    let second = TimestampRound::new()
        .smallest(Unit::Second)
        .mode(RoundMode::Floor);
    exact.round(second).unwrap_or(exact)
}

/// `t + by`, clamped to jiff's range.
fn shift(t: Timestamp, by: SignedDuration) -> Timestamp {
    t.checked_add(by).unwrap_or(if by.is_negative() {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// `2026-11-27T07:00:00Z` (to the second, rounded down).
pub fn format_utc(t: SystemTime) -> String {
    timestamp(t).to_string()
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
            zone: Zone::Fixed(jiff::tz::Offset::UTC),
            manual_sync: false,
        })
    }

    /// Reads the schedule at a fixed offset from UTC: `Z`, `+05:30`, `-08:00`.
    pub fn utc_offset(mut self, offset: &str) -> Result<Self, WindowError> {
        let Some(parsed) = Zone::parse_offset(offset) else {
            return Err(WindowError::Offset {
                window: self.name,
                offset: offset.to_owned(),
            });
        };
        self.zone = Zone::Fixed(parsed);
        Ok(self)
    }

    /// Reads the schedule in an IANA time zone (`Europe/Berlin`,
    /// `America/New_York`), following its daylight-saving changes; see the
    /// module docs for starts in a gap or a fold. The zone comes from the
    /// system's time zone database (`/usr/share/zoneinfo`: the `tzdata`
    /// package); an unknown zone is an error naming the window.
    pub fn time_zone(mut self, zone: &str) -> Result<Self, WindowError> {
        self.zone = Zone::named(zone).map_err(|message| WindowError::TimeZone {
            window: self.name.clone(),
            zone: zone.to_owned(),
            message,
        })?;
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
        let t = timestamp(at);
        self.intervals(shift(t, SECOND - self.length()), shift(t, SECOND))
            .next()
            .is_some()
    }

    /// How long the window stays open, in whole seconds.
    fn length(&self) -> SignedDuration {
        // At most 31 days (checked in `new`).
        SignedDuration::from_secs(self.duration.as_secs() as i64)
    }

    /// The open intervals whose start lies in `[from, to)`; ascending
    /// except around a time zone's gap.
    fn intervals(&self, from: Timestamp, to: Timestamp) -> impl Iterator<Item = Interval> + '_ {
        let length = self.length();
        let (wall_from, wall_to) = self.zone.wall_range(from, to);
        self.schedule
            .starts(wall_from, wall_to)
            .flat_map(move |wall| self.zone.to_utc(wall).into_iter().flatten())
            .filter(move |start| (from..to).contains(start))
            .map(move |start| (start, shift(start, length)))
    }
}

impl fmt::Display for SyncWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            WindowKind::Allow => "allow",
            WindowKind::Deny => "deny",
        };
        // The zone writes the closing parenthesis.
        write!(
            f,
            "{kind} window {} ({:?} for {:?}{}",
            self.name, self.schedule_text, self.duration, self.zone
        )
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

    /// The allow windows.
    fn allows(&self) -> impl Iterator<Item = &SyncWindow> + Clone {
        self.windows.iter().filter(|w| w.kind == WindowKind::Allow)
    }

    /// Whether "only inside an allow window" binds a sync.
    fn allow_binds(&self, manual: bool) -> bool {
        let mut allows = self.allows();
        let first = allows.clone().next().is_some();
        first && !(manual && allows.any(|w| w.manual_sync))
    }

    /// `Ok` when a sync (`manual` or automatic, see the module docs) may run
    /// at `at`; else which window blocks it and until when.
    pub fn check(&self, at: SystemTime, manual: bool) -> Result<(), WindowBlock> {
        let deny = self.denies(manual).find(|w| w.is_open(at));
        let outside = self.allow_binds(manual) && !self.allows().any(|w| w.is_open(at));
        if deny.is_none() && !outside {
            return Ok(());
        }
        Err(WindowBlock {
            deny: deny.map(|w| w.name.clone()),
            until: self.next_open(timestamp(at), manual).map(SystemTime::from),
        })
    }

    /// The first second at or after `t` when `check` passes, within the horizon.
    fn next_open(&self, t: Timestamp, manual: bool) -> Option<Timestamp> {
        let end = shift(t, HORIZON);
        let deny = merged(self.denies(manual), t, end);
        let allow = self
            .allow_binds(manual)
            .then(|| merged(self.allows(), t, end));
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
        (candidate < end).then_some(candidate)
    }
}

/// The open intervals of `windows` that end after `t` and start before
/// `end`, overlapping or touching ones merged: sorted by start and by end.
fn merged<'a>(
    windows: impl Iterator<Item = &'a SyncWindow>,
    t: Timestamp,
    end: Timestamp,
) -> Vec<Interval> {
    let mut all: Vec<Interval> = windows
        .flat_map(|w| w.intervals(shift(t, -w.length()), end))
        .collect();
    all.sort_unstable();
    let mut out: Vec<Interval> = Vec::new();
    for (a, b) in all {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_text() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_683_600);
        assert_eq!(format_utc(t), "2026-11-26T09:00:00Z");
        assert_eq!(
            format_utc(t + Duration::from_millis(999)),
            "2026-11-26T09:00:00Z",
            "rounded down"
        );
        let before_1970 = SystemTime::UNIX_EPOCH - Duration::from_millis(500);
        assert_eq!(format_utc(before_1970), "1969-12-31T23:59:59Z");
        assert_eq!(format_utc(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn merging_joins_touching_overlapping_and_contained_intervals() {
        let t = timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_651_200));
        let hour = |h: i64| shift(t, SignedDuration::from_hours(h));
        let deny = |name: &str, schedule: &str, hours: u64| {
            SyncWindow::deny(name, schedule, Duration::from_secs(hours * 3_600)).expect("window")
        };
        let windows = [
            deny("a", "0 1 * * *", 1),
            deny("b", "0 2 * * *", 2),
            deny("c", "0 3 * * *", 3),
            deny("inside", "0 4 * * *", 1),
            deny("apart", "0 8 * * *", 1),
        ];
        let day = merged(windows.iter(), t, hour(24));
        assert_eq!(day, [(hour(1), hour(6)), (hour(8), hour(9))]);
    }

    #[test]
    fn syncing_resumes_only_where_no_deny_window_starts() {
        // 09:00 on a Thursday: the allow window opens at 10:00, and so does
        // a deny window, for an hour.
        let windows = SyncWindows::new()
            .with(
                SyncWindow::allow("day", "0 10 * * *", Duration::from_secs(7_200)).expect("window"),
            )
            .with(
                SyncWindow::deny("deploy-freeze", "0 10 * * *", Duration::from_secs(3_600))
                    .expect("window"),
            );
        let nine = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_651_200 + 9 * 3_600);
        let block = windows
            .check(nine, false)
            .expect_err("outside the allow window");
        assert_eq!(
            block.until.map(format_utc).as_deref(),
            Some("2026-11-26T11:00:00Z")
        );
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
