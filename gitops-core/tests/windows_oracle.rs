//! Sync windows against a brute-force oracle: random cron schedules,
//! durations, offsets and zones; the oracle walks every minute, reads the
//! wall clock there from jiff's offset for that instant, and matches the
//! cron fields from the sets they were generated from (not by parsing).
//! `check` must agree at a random instant, and when blocked, `until` must be
//! the first minute the oracle says is open.

use std::time::{Duration, SystemTime};

use gitops_core::window::{SyncWindow, SyncWindows};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use proptest::prelude::*;

/// One cron field: its text and the values it allows.
#[derive(Debug, Clone)]
struct Field {
    text: String,
    values: Vec<u32>,
}

fn field(min: u32, max: u32) -> impl Strategy<Value = Field> {
    let all = move |step: u32| (min..=max).step_by(step as usize).collect::<Vec<_>>();
    prop_oneof![
        Just(Field {
            text: "*".into(),
            values: all(1)
        }),
        (2..=7u32).prop_map(move |k| Field {
            text: format!("*/{k}"),
            values: all(k),
        }),
        proptest::collection::btree_set(min..=max, 1..4).prop_map(|set| Field {
            text: set.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
            values: set.into_iter().collect(),
        }),
        (min..=max, min..=max, 1..=3u32).prop_map(|(a, b, k)| {
            let (a, b) = (a.min(b), a.max(b));
            Field {
                text: if k == 1 {
                    format!("{a}-{b}")
                } else {
                    format!("{a}-{b}/{k}")
                },
                values: (a..=b).step_by(k as usize).collect(),
            }
        }),
    ]
}

#[derive(Debug, Clone)]
struct Cron {
    minute: Field,
    hour: Field,
    day: Field,
    month: Field,
    weekday: Field,
}

impl Cron {
    fn text(&self) -> String {
        format!(
            "{} {} {} {} {}",
            self.minute.text, self.hour.text, self.day.text, self.month.text, self.weekday.text
        )
    }

    /// Vixie cron: when day of month or day of week starts with `*`, both
    /// must match; otherwise either.
    fn matches(&self, wall: jiff::civil::DateTime) -> bool {
        let has = |f: &Field, v: u32| f.values.contains(&v);
        let weekday = wall.weekday().to_sunday_zero_offset() as u32;
        let dom = has(&self.day, wall.day() as u32);
        let dow = has(&self.weekday, weekday) || (weekday == 0 && has(&self.weekday, 7));
        let day_ok = if self.day.text.starts_with('*') || self.weekday.text.starts_with('*') {
            dom && dow
        } else {
            dom || dow
        };
        has(&self.minute, wall.minute() as u32)
            && has(&self.hour, wall.hour() as u32)
            && has(&self.month, wall.month() as u32)
            && day_ok
    }
}

fn cron() -> impl Strategy<Value = Cron> {
    // Hours and minutes lean dense so windows open often enough to matter.
    (
        field(0, 59),
        field(0, 23),
        field(1, 31),
        field(1, 12),
        field(0, 7),
    )
        .prop_map(|(minute, hour, day, month, weekday)| Cron {
            minute,
            hour,
            day,
            month,
            weekday,
        })
}

#[derive(Debug, Clone)]
enum Zone {
    Utc,
    Offset(i32),
    Named(&'static str),
}

fn zone() -> impl Strategy<Value = Zone> {
    prop_oneof![
        Just(Zone::Utc),
        (-12 * 4..=14 * 4).prop_map(|q| Zone::Offset(q * 15 * 60)),
        // No daylight saving, odd offsets.
        Just(Zone::Named("Asia/Kolkata")),
        Just(Zone::Named("Asia/Kathmandu")),
        // Daylight saving; instants are drawn far from the changes.
        Just(Zone::Named("Europe/Berlin")),
        Just(Zone::Named("America/New_York")),
        Just(Zone::Named("Australia/Sydney")),
    ]
}

#[derive(Debug, Clone)]
struct Spec {
    deny: bool,
    cron: Cron,
    minutes: u64,
    zone: Zone,
}

fn spec() -> impl Strategy<Value = Spec> {
    (any::<bool>(), cron(), 1..=360u64, zone()).prop_map(|(deny, cron, minutes, zone)| Spec {
        deny,
        cron,
        minutes,
        zone,
    })
}

impl Spec {
    fn window(&self, i: usize) -> SyncWindow {
        let name = format!("w{i}");
        let length = Duration::from_secs(self.minutes * 60);
        let text = self.cron.text();
        let window = if self.deny {
            SyncWindow::deny(name, &text, length)
        } else {
            SyncWindow::allow(name, &text, length)
        }
        .expect("generated schedules are valid");
        match &self.zone {
            Zone::Utc => window,
            Zone::Offset(seconds) => {
                let sign = if *seconds < 0 { '-' } else { '+' };
                let m = seconds.unsigned_abs() / 60;
                window
                    .utc_offset(&format!("{sign}{:02}:{:02}", m / 60, m % 60))
                    .expect("offset")
            }
            Zone::Named(name) => window.time_zone(name).expect("zone"),
        }
    }

    fn tz(&self) -> TimeZone {
        match &self.zone {
            Zone::Utc => TimeZone::UTC,
            Zone::Offset(seconds) => {
                TimeZone::fixed(jiff::tz::Offset::from_seconds(*seconds).expect("offset"))
            }
            Zone::Named(name) => TimeZone::get(name).expect("zone"),
        }
    }

    /// Whether the window is open during each minute of `[from, from + n)`
    /// (UTC minutes), from every start minute since `from - 6h`.
    fn open_minutes(&self, from: i64, n: usize) -> Vec<bool> {
        let tz = self.tz();
        let back = self.minutes as usize;
        let first = from - back as i64;
        let mut open_until = i64::MIN;
        let mut out = Vec::with_capacity(n);
        for minute in first..from + n as i64 {
            let at = Timestamp::from_second(minute * 60).expect("in range");
            let wall = at.to_zoned(tz.clone()).datetime();
            if self.cron.matches(wall) {
                open_until = minute + self.minutes as i64;
            }
            if minute >= from {
                out.push(minute < open_until);
            }
        }
        out
    }
}

/// Open per minute of `[from, from + n)` for the whole set (automatic syncs).
fn oracle(specs: &[Spec], from: i64, n: usize) -> Vec<bool> {
    let per: Vec<Vec<bool>> = specs.iter().map(|s| s.open_minutes(from, n)).collect();
    let any_allow = specs.iter().any(|s| !s.deny);
    (0..n)
        .map(|i| {
            let denied = specs.iter().zip(&per).any(|(s, o)| s.deny && o[i]);
            let allowed = !any_allow || specs.iter().zip(&per).any(|(s, o)| !s.deny && o[i]);
            allowed && !denied
        })
        .collect()
}

/// 2027-01-05 .. 2027-02-20 and 2027-06-05 .. 2027-07-20: no zone above
/// changes its clocks within three days of these (Sydney's changes are in
/// April and October).
fn instant() -> impl Strategy<Value = i64> {
    let jan: i64 = 1_799_107_200 / 60; // 2027-01-05T00:00Z in minutes
    let jun: i64 = 1_812_153_600 / 60; // 2027-06-05T00:00Z in minutes
    let span: i64 = 46 * 24 * 60;
    prop_oneof![jan..jan + span, jun..jun + span]
}

const LOOK: usize = 3 * 24 * 60;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn check_and_until_agree_with_the_minute_by_minute_oracle(
        specs in proptest::collection::vec(spec(), 1..4),
        minute in instant(),
    ) {
        let windows = specs
            .iter()
            .enumerate()
            .fold(SyncWindows::new(), |w, (i, s)| w.with(s.window(i)));
        let open = oracle(&specs, minute, LOOK);
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(minute as u64 * 60);
        match windows.check(at, false) {
            Ok(()) => prop_assert!(open[0], "check says open, the oracle says closed"),
            Err(block) => {
                prop_assert!(!open[0], "check says blocked ({block}), the oracle says open");
                let first_open = open.iter().position(|&o| o);
                match (block.until, first_open) {
                    (Some(until), Some(i)) => {
                        let until = until.duration_since(SystemTime::UNIX_EPOCH).expect("after 1970");
                        prop_assert_eq!(until.as_secs() as i64, (minute + i as i64) * 60, "until");
                    }
                    (Some(until), None) => {
                        let until = until.duration_since(SystemTime::UNIX_EPOCH).expect("after 1970");
                        prop_assert!(until.as_secs() as i64 >= (minute + LOOK as i64) * 60,
                            "until {until:?} is inside the look-ahead, where the oracle finds nothing open");
                    }
                    (None, Some(i)) => prop_assert!(false, "no until, the oracle opens after {i} minutes"),
                    (None, None) => {}
                }
            }
        }
    }
}
