//! RFC 3339 timestamps in request bodies (`expires_at`) and queries (`since`, `until`), as Unix
//! seconds, and the current time they are compared with.
//!
//! The API takes exactly one shape, `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)` (RFC 3339
//! section 5.6; `t` and `z` in either case), and needs only its instant in whole seconds. The
//! shape is checked here, strictly and with a message for each mistake; the calendar (days in
//! a month, leap years, the instant of a date, time and offset) is the `time` crate's. Not
//! `time`'s own RFC 3339 parser: it accepts a leap second only at the end of a UTC day, where
//! this API has always taken one at the end of any minute. Responses report times as Unix
//! seconds, as vault-core stores them.
//!
//! A fraction of a second is dropped (the instant is rounded down: a key set to expire at
//! `...:00.9Z` expires at `...:00Z`). A leap second (`:60`) counts as the second after `:59`.
//! Times before 1970 are refused, since no key can expire then.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::{Date, Month, PrimitiveDateTime, Time, UtcOffset};

use crate::error::ApiError;

/// A time given as RFC 3339 text, held as Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timestamp(pub(crate) u64);

/// What a time should look like, for error messages (which never quote the text sent).
const EXPECTED: &str = "an RFC 3339 time such as 2030-01-31T12:00:00Z";

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Timestamp;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Timestamp, E> {
                parse(v)
                    .map(Timestamp)
                    .map_err(|why| E::custom(format_args!("expected {EXPECTED}: {why}")))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// As Unix seconds (used only to compare requests, see `idempotency`).
impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

/// Unix seconds of an RFC 3339 date-time, or what is wrong with it.
pub(crate) fn parse(text: &str) -> Result<u64, &'static str> {
    let b = text.as_bytes();
    if b.len() < 20 {
        return Err("too short");
    }
    let sep = |at: usize, c: u8| b.get(at) == Some(&c);
    if !(sep(4, b'-')
        && sep(7, b'-')
        && matches!(b[10], b'T' | b't')
        && sep(13, b':')
        && sep(16, b':'))
    {
        return Err("not of the form YYYY-MM-DDTHH:MM:SS");
    }
    let year: u16 = digits(&b[0..4])?;
    let month: u8 = digits(&b[5..7])?;
    let day: u8 = digits(&b[8..10])?;
    let hour: u8 = digits(&b[11..13])?;
    let minute: u8 = digits(&b[14..16])?;
    let second: u8 = digits(&b[17..19])?;
    let month = Month::try_from(month).map_err(|_| "month out of range")?;
    let date =
        Date::from_calendar_date(i32::from(year), month, day).map_err(|_| "day out of range")?;
    // A leap second counts as the second after `:59`, at the end of any minute.
    let (second, leap) = match second {
        60 => (59, 1),
        s => (s, 0),
    };
    let time = Time::from_hms(hour, minute, second).map_err(|_| "time of day out of range")?;

    let mut rest = &b[19..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let n = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return Err("a '.' must be followed by digits");
        }
        rest = &fraction[n..];
    }
    let offset = match rest {
        [b'Z' | b'z'] => UtcOffset::UTC,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours: u8 = digits(&[*h1, *h2])?;
            let minutes: u8 = digits(&[*m1, *m2])?;
            if hours > 23 || minutes > 59 {
                return Err("offset out of range");
            }
            let signed = |n: u8| i8::try_from(n).map_err(|_| "offset out of range");
            let (hours, minutes) = (signed(hours)?, signed(minutes)?);
            let (hours, minutes) = if *sign == b'-' {
                (-hours, -minutes)
            } else {
                (hours, minutes)
            };
            UtcOffset::from_hms(hours, minutes, 0).map_err(|_| "offset out of range")?
        }
        _ => return Err("the offset must be Z or +HH:MM or -HH:MM"),
    };

    let instant = PrimitiveDateTime::new(date, time).assume_offset(offset);
    u64::try_from(instant.unix_timestamp() + leap).map_err(|_| "before 1970")
}

/// `since` or `until` as Unix milliseconds: Unix seconds (digits only) or an RFC 3339
/// date-time (to the second, as [`parse`] reads it).
pub(crate) fn parse_time(name: &str, text: &str) -> Result<u64, ApiError> {
    let seconds = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse::<u64>().map_err(|_| "too large")
    } else {
        parse(text)
    };
    seconds
        .ok()
        .and_then(|s| s.checked_mul(1000))
        .ok_or_else(|| {
            ApiError::invalid_query(format!(
                "{name}: expected Unix seconds or an RFC 3339 date-time such as \
                 2025-01-31T12:00:00Z"
            ))
        })
}

/// The current time in Unix seconds (0 if the clock is set before 1970).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The number written in two or four ASCII digits, in a type that holds 99 or 9999.
fn digits<T: From<u8> + std::ops::Mul<Output = T> + std::ops::Add<Output = T>>(
    b: &[u8],
) -> Result<T, &'static str> {
    b.iter().try_fold(T::from(0), |n, &c| {
        if c.is_ascii_digit() {
            Ok(n * T::from(10) + T::from(c - b'0'))
        } else {
            Err("a digit was expected")
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{parse, parse_time};

    #[test]
    fn known_instants() {
        assert_eq!(parse("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse("2000-03-01T00:00:00Z"), Ok(951_868_800));
        assert_eq!(parse("2024-02-29T12:34:56Z"), Ok(1_709_210_096));
        assert_eq!(parse("2024-02-29t12:34:56.999z"), Ok(1_709_210_096));
        assert_eq!(parse("2024-02-29T14:34:56+02:00"), Ok(1_709_210_096));
        assert_eq!(parse("2024-02-29T07:04:56-05:30"), Ok(1_709_210_096));
        assert_eq!(parse("2016-12-31T23:59:60Z"), Ok(1_483_228_800));
        assert_eq!(parse("9999-12-31T23:59:59Z"), Ok(253_402_300_799));
    }

    #[test]
    fn refusals() {
        for bad in [
            "",
            "2030-01-01",
            "2030-01-01T00:00:00",
            "2030-01-01 00:00:00Z",
            "2030-1-01T00:00:00Z",
            "2030-13-01T00:00:00Z",
            "2030-00-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2030-04-31T00:00:00Z",
            "2030-01-01T24:00:00Z",
            "2030-01-01T00:60:00Z",
            "2030-01-01T00:00:61Z",
            "2030-01-01T00:00:00.Z",
            "2030-01-01T00:00:00+0100",
            "2030-01-01T00:00:00+24:00",
            "2030-01-01T00:00:00Zjunk",
            "1969-12-31T23:59:59Z",
            "1970-01-01T00:00:00+00:01",
            "+030-01-01T00:00:00Z",
            "２０３０-01-01T00:00:00Z",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn since_and_until_take_unix_seconds_or_rfc3339() {
        let ok = |t: &str| parse_time("since", t).ok();
        assert_eq!(ok("0"), Some(0));
        assert_eq!(ok("1700000000"), Some(1_700_000_000_000));
        assert_eq!(ok("2000-03-01T00:00:00Z"), Some(951_868_800_000));
        assert_eq!(ok("2000-03-01T02:00:00.999+02:00"), Some(951_868_800_000));
        for bad in [
            "",
            "-1",
            "1e9",
            "2024-01-01",
            "99999999999999999999",
            "18446744073709552",
        ] {
            assert_eq!(ok(bad), None, "{bad}");
        }
    }

    proptest::proptest! {
        /// Any instant from 1970 to 9999, written by `time` as RFC 3339 (with or without a
        /// fraction, in any offset a request may give), reads back as its whole second.
        #[test]
        fn what_time_writes_reads_back_as_the_same_second(
            // A day short of the end of 9999, so that a positive offset stays in the year 9999.
            seconds in 0i64..253_402_214_400,
            nanos in proptest::prop_oneof![proptest::strategy::Just(0u32), 0u32..1_000_000_000],
            offset_minutes in -(23 * 60 + 59)..=(23 * 60 + 59i32),
        ) {
            use time::format_description::well_known::Rfc3339;
            use time::{Duration, OffsetDateTime, UtcOffset};

            let offset = UtcOffset::from_whole_seconds(offset_minutes * 60).unwrap();
            let instant = OffsetDateTime::from_unix_timestamp(seconds).unwrap()
                + Duration::nanoseconds(i64::from(nanos));
            let text = instant.to_offset(offset).format(&Rfc3339).unwrap();
            let expected = u64::try_from(seconds).unwrap();
            proptest::prop_assert_eq!(parse(&text), Ok(expected), "{}", text);
        }
    }
}
