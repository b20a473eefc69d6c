//! The time a window's schedule is read in: a fixed offset from UTC or an
//! IANA time zone, and the UTC instants at which its wall clock shows a
//! given time (jiff's offsets and time zone database).

use std::fmt;

use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, Offset, TimeZone};
use jiff::{SignedDuration, Timestamp};

/// No time zone is further than this from UTC (jiff bounds offsets to ±25:59:59).
const MAX_ZONE_OFFSET: SignedDuration = SignedDuration::from_hours(26);

/// The time a schedule is read in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Zone {
    /// A fixed offset from UTC.
    Fixed(Offset),
    /// An IANA zone, daylight-saving rules included.
    Named {
        /// As given, e.g. `Europe/Berlin`.
        name: String,
        tz: TimeZone,
    },
}

impl Zone {
    /// The offset of `Z`, `+05:30`, `-08:00` (at most ±23:59); `None` for
    /// anything else.
    pub(super) fn parse_offset(text: &str) -> Option<Offset> {
        if text == "Z" || text == "+00:00" || text == "-00:00" {
            return Some(Offset::UTC);
        }
        let sign = match text.as_bytes().first() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return None,
        };
        let (h, m) = text[1..].split_once(':')?;
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        let h: i32 = h.parse().ok()?;
        let m: i32 = m.parse().ok()?;
        if h > 23 || m > 59 {
            return None;
        }
        Offset::from_seconds(sign * (h * 3_600 + m * 60)).ok()
    }

    /// The zone called `name` in the system's time zone database, or what
    /// the database said.
    pub(super) fn named(name: &str) -> Result<Self, String> {
        let tz = jiff::tz::db().get(name).map_err(|e| e.to_string())?;
        Ok(Zone::Named {
            name: name.to_owned(),
            tz,
        })
    }

    /// The instants at which the wall clock reads `wall`: one, or two in a
    /// fold (clocks going back). A time in a gap (clocks going forward) is
    /// read with the offset before the gap, which lands the same distance
    /// after it. `None` beyond the range jiff represents.
    pub(super) fn to_utc(&self, wall: DateTime) -> [Option<Timestamp>; 2] {
        let at = |offset: Offset| offset.to_timestamp(wall).ok();
        match self {
            Zone::Fixed(offset) => [at(*offset), None],
            Zone::Named { tz, .. } => match tz.to_ambiguous_timestamp(wall).offset() {
                AmbiguousOffset::Unambiguous { offset } => [at(offset), None],
                AmbiguousOffset::Gap { before, .. } => [at(before), None],
                AmbiguousOffset::Fold { before, after } => [at(before), at(after)],
            },
        }
    }

    /// A wall-clock range that holds every time whose instant (see
    /// [`to_utc`](Self::to_utc)) is in `[from, to)`.
    pub(super) fn wall_range(&self, from: Timestamp, to: Timestamp) -> (DateTime, DateTime) {
        match self {
            Zone::Fixed(offset) => (offset.to_datetime(from), offset.to_datetime(to)),
            Zone::Named { .. } => (
                Offset::UTC
                    .to_datetime(from)
                    .saturating_sub(MAX_ZONE_OFFSET),
                Offset::UTC.to_datetime(to).saturating_add(MAX_ZONE_OFFSET),
            ),
        }
    }
}

/// How a window's [`Display`](fmt::Display) ends: `)` in UTC,
/// ` at UTC+05:30)`, ` in Europe/Berlin)`.
impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Zone::Fixed(offset) if *offset == Offset::UTC => f.write_str(")"),
            Zone::Fixed(offset) => {
                let sign = if offset.is_negative() { '-' } else { '+' };
                let minutes = offset.seconds().unsigned_abs() / 60;
                write!(f, " at UTC{sign}{:02}:{:02})", minutes / 60, minutes % 60)
            }
            Zone::Named { name, .. } => write!(f, " in {name})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn utc(text: &str) -> Option<Timestamp> {
        Some(text.parse().expect("timestamp"))
    }

    #[test]
    fn offsets() {
        assert_eq!(Zone::parse_offset("Z"), Some(Offset::UTC));
        assert_eq!(Zone::parse_offset("-00:00"), Some(Offset::UTC));
        let india = Zone::parse_offset("+05:30").expect("offset");
        assert_eq!(india.seconds(), 5 * 3_600 + 30 * 60);
        assert_eq!(
            Zone::parse_offset("-08:00").map(Offset::seconds),
            Some(-8 * 3_600)
        );
        for bad in [
            "+5", "05:30", "+24:00", "+05:60", "+5:30", "", "-", "+ab:cd",
        ] {
            assert_eq!(Zone::parse_offset(bad), None, "{bad}");
        }
        let wall = date(2026, 11, 26).at(9, 0, 0, 0);
        assert_eq!(
            Zone::Fixed(india).to_utc(wall),
            [utc("2026-11-26T03:30:00Z"), None]
        );
        assert_eq!(Zone::Fixed(india).to_string(), " at UTC+05:30)");
        let pacific = Zone::parse_offset("-08:00").expect("offset");
        assert_eq!(Zone::Fixed(pacific).to_string(), " at UTC-08:00)");
        assert_eq!(Zone::Fixed(Offset::UTC).to_string(), ")");
    }

    #[test]
    fn gaps_and_folds() {
        let berlin = Zone::named("Europe/Berlin").expect("tzdata");
        // 02:30 does not exist on 2026-03-29: read at +01:00, it is 03:30 CEST.
        let gap = date(2026, 3, 29).at(2, 30, 0, 0);
        assert_eq!(berlin.to_utc(gap), [utc("2026-03-29T01:30:00Z"), None]);
        // 02:30 happens twice on 2026-10-25.
        let fold = date(2026, 10, 25).at(2, 30, 0, 0);
        assert_eq!(
            berlin.to_utc(fold),
            [utc("2026-10-25T00:30:00Z"), utc("2026-10-25T01:30:00Z")]
        );
        assert!(Zone::named("Europe/Atlantis").is_err());
        assert_eq!(berlin.to_string(), " in Europe/Berlin)");
    }

    #[test]
    fn the_wall_range_holds_every_start_in_the_utc_range() {
        let from = utc("2026-11-26T00:00:00Z").expect("from");
        let to = utc("2026-11-27T00:00:00Z").expect("to");
        let india = Zone::Fixed(Zone::parse_offset("+05:30").expect("offset"));
        assert_eq!(
            india.wall_range(from, to),
            (
                date(2026, 11, 26).at(5, 30, 0, 0),
                date(2026, 11, 27).at(5, 30, 0, 0)
            )
        );
        let berlin = Zone::named("Europe/Berlin").expect("tzdata");
        assert_eq!(
            berlin.wall_range(from, to),
            (
                date(2026, 11, 24).at(22, 0, 0, 0),
                date(2026, 11, 28).at(2, 0, 0, 0)
            )
        );
        let (lo, hi) = berlin.wall_range(Timestamp::MIN, Timestamp::MAX);
        assert_eq!((lo, hi), (DateTime::MIN, DateTime::MAX), "saturates");
    }
}
