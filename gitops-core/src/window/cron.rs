//! The 5-field cron grammar of a window's schedule (minute, hour, day of
//! month, month, day of week; Vixie cron's day rule), and the wall-clock
//! times it selects. Calendar questions (month, day, weekday, the next day)
//! are jiff's.

use jiff::ToSpan as _;
use jiff::civil::{Date, DateTime};

/// A parsed 5-field cron schedule (bit sets of the allowed values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Schedule {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// Day of month or day of week was `*`: both must match (else either).
    day_star: bool,
    weekday_star: bool,
}

/// (field name, offending text, message).
pub(super) type FieldError = (&'static str, String, String);

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
        if text.is_empty() {
            return Err((self.name, text.to_owned(), "empty".to_owned()));
        }
        let mut bits = 0u64;
        for item in text.split(',') {
            if item.is_empty() {
                return Err((self.name, text.to_owned(), "empty list item".to_owned()));
            }
            let (lo, hi, step) = self.item(item)?;
            let mut v = lo;
            while v <= hi {
                bits |= 1 << v;
                v += step;
            }
        }
        Ok(bits)
    }

    /// One list item (`*`, `5`, `1-5`, each optionally `/step`): its
    /// lowest and highest value and its step.
    fn item(&self, item: &str) -> Result<(u32, u32, u32), FieldError> {
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
        Ok((lo, hi, step.unwrap_or(1)))
    }
}

impl Schedule {
    pub(super) fn parse(text: &str) -> Result<Self, FieldError> {
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

    /// Whether a start may fall on `date` (a wall-clock date).
    fn matches_day(&self, date: Date) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let dom_ok = self.days & (1 << date.day()) != 0;
        let dow_ok = self.weekdays & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        if self.day_star || self.weekday_star {
            dom_ok && dow_ok
        } else {
            dom_ok || dow_ok
        }
    }

    /// The starts of one day, ascending.
    fn starts_on(&self, date: Date) -> impl Iterator<Item = DateTime> + '_ {
        (0..24i8)
            .filter(move |h| self.hours & (1 << h) != 0)
            .flat_map(move |h| {
                (0..60i8)
                    .filter(move |m| self.minutes & (1 << m) != 0)
                    .map(move |m| date.at(h, m, 0, 0))
            })
    }

    /// Every start (wall-clock time) in `[from, to)`, ascending.
    pub(super) fn starts(
        &self,
        from: DateTime,
        to: DateTime,
    ) -> impl Iterator<Item = DateTime> + '_ {
        let last = to.date();
        from.date()
            .series(1.day())
            .take_while(move |d| *d <= last)
            .filter(move |d| self.matches_day(*d))
            .flat_map(move |d| self.starts_on(d))
            .filter(move |s| (from..to).contains(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

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
    fn day_of_month_or_day_of_week() {
        // Neither field starts with `*`: either matches (Vixie cron).
        let either = Schedule::parse("0 0 1 * MON").expect("parses");
        assert!(either.matches_day(date(2026, 11, 1)), "the 1st, a Sunday");
        assert!(either.matches_day(date(2026, 11, 2)), "a Monday");
        assert!(!either.matches_day(date(2026, 11, 3)));
        // One starts with `*`: both must match.
        let both = Schedule::parse("0 0 */2 * MON").expect("parses");
        assert!(both.matches_day(date(2026, 11, 9)), "the 9th, a Monday");
        assert!(!both.matches_day(date(2026, 11, 2)), "the 2nd, a Monday");
        assert!(!both.matches_day(date(2026, 11, 3)));
        let months = Schedule::parse("0 0 * FEB *").expect("parses");
        assert!(months.matches_day(date(2028, 2, 29)), "a leap day");
        assert!(!months.matches_day(date(2028, 3, 1)));
    }

    #[test]
    fn starts_are_wall_clock_times_in_the_range() {
        let s = Schedule::parse("30 23,1 * * *").expect("parses");
        let from = date(2026, 12, 31).at(23, 30, 0, 0);
        let to = date(2027, 1, 1).at(23, 30, 0, 0);
        let starts: Vec<DateTime> = s.starts(from, to).collect();
        assert_eq!(
            starts,
            [from, date(2027, 1, 1).at(1, 30, 0, 0)],
            "from is inside, to is not"
        );
        assert_eq!(s.starts(from, from).count(), 0);
    }
}
