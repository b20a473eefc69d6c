//! Times as RFC 3339 text (`2026-12-03T12:00:00.5Z`) in everything the crate
//! serialises (status, history, audit records), instead of serde's
//! `{"secs_since_epoch": …, "nanos_since_epoch": …}` for `SystemTime`.
//!
//! Reading also accepts that older map: stores of format 1 wrote it, and the
//! stored-format rule (docs/stored-data.md) keeps them readable.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serializer};

/// Serialises `t` as RFC 3339 in UTC.
pub(crate) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let text = jiff::Timestamp::try_from(*t)
        .map(|ts| ts.to_string())
        .unwrap_or_else(|_| crate::window::format_utc(*t));
    s.serialize_str(&text)
}

/// How a time may be stored: RFC 3339 text, or format 1's map.
#[derive(Deserialize)]
#[serde(untagged)]
enum Stored {
    Text(String),
    Legacy {
        secs_since_epoch: u64,
        nanos_since_epoch: u32,
    },
}

/// Reads RFC 3339 text or the format-1 `{secs_since_epoch, nanos_since_epoch}` map.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
    match Stored::deserialize(d)? {
        Stored::Text(text) => text
            .parse::<jiff::Timestamp>()
            .map(SystemTime::from)
            .map_err(|e| serde::de::Error::custom(format!("time {text:?}: {e}"))),
        Stored::Legacy {
            secs_since_epoch,
            nanos_since_epoch,
        } => UNIX_EPOCH
            .checked_add(Duration::new(secs_since_epoch, nanos_since_epoch))
            .ok_or_else(|| serde::de::Error::custom("time out of range")),
    }
}

/// [`serialize`] for an optional time (`None` stays `null`).
pub(crate) mod option {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::serialize(t, s),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct At {
        #[serde(with = "super")]
        at: SystemTime,
    }

    #[test]
    fn writes_rfc3339_and_reads_both_forms() {
        let at = At {
            at: UNIX_EPOCH + Duration::new(1_764_763_200, 500_000_000),
        };
        let text = serde_json::to_string(&at).expect("serialises");
        assert_eq!(text, r#"{"at":"2025-12-03T12:00:00.5Z"}"#);
        assert_eq!(serde_json::from_str::<At>(&text).expect("reads"), at);
        let legacy = r#"{"at":{"secs_since_epoch":1764763200,"nanos_since_epoch":500000000}}"#;
        assert_eq!(
            serde_json::from_str::<At>(legacy).expect("reads format 1"),
            at
        );
        assert!(serde_json::from_str::<At>(r#"{"at":"yesterday"}"#).is_err());
    }
}
