//! Credits that come back: when a refill is due, and what a valid one is.
//!
//! A refill restores a key's remaining credits to its `amount` at the start of each interval,
//! in UTC: every day at 00:00, or every month at 00:00 of its `day`, which in a month too short
//! for it is the month's last day (a refill on the 31st comes on 30 April and on 28 or 29
//! February). It is applied at the first verify of the key after that start (`verify`), which
//! commits it with its own `key.credits_refilled` entry before the verify goes on; the time of
//! the last refill is stored with the credits, so a refill is applied once per interval however
//! many verifies race for it, and a key not used for three days is refilled once, not thrice.

use time::{Date, Month, OffsetDateTime, Time};

use super::types::{Refill, RefillInterval};
use crate::{Error, Result};

const DAY: u64 = 24 * 60 * 60;

/// Checks a refill as given to create, import or update; `credits`: whether the key has (or
/// gets) credits, which a refill needs.
pub(super) fn check(refill: &Option<Refill>, credits: bool) -> Result<()> {
    let Some(refill) = refill else {
        return Ok(());
    };
    if !credits {
        return Err(Error::InvalidInput(
            "credits.refill needs credits.remaining: only a key with credits can refill them"
                .into(),
        ));
    }
    if refill.amount == 0 {
        return Err(Error::InvalidInput(
            "credits.refill.amount must be at least 1".into(),
        ));
    }
    match (refill.interval, refill.day) {
        (RefillInterval::Daily, Some(_)) => Err(Error::InvalidInput(
            "credits.refill.day is only for a monthly refill".into(),
        )),
        (RefillInterval::Monthly, Some(day)) if !(1..=31).contains(&day) => Err(
            Error::InvalidInput("credits.refill.day must be 1 to 31".into()),
        ),
        _ => Ok(()),
    }
}

/// The refill as stored: a monthly refill names its day (1 unless given).
pub(super) fn normalised(refill: Option<Refill>) -> Option<Refill> {
    refill.map(|r| match r.interval {
        RefillInterval::Daily => Refill { day: None, ..r },
        RefillInterval::Monthly => Refill {
            day: Some(r.day.unwrap_or(1)),
            ..r
        },
    })
}

/// Whether a refill last applied (or set) at `refilled_at` is due at `now` (Unix seconds):
/// an interval began after it.
pub(super) fn due(refill: &Refill, refilled_at: u64, now: u64) -> bool {
    interval_start(refill, now) > refilled_at
}

/// The start of the interval `now` is in (Unix seconds, UTC).
pub(super) fn interval_start(refill: &Refill, now: u64) -> u64 {
    match refill.interval {
        RefillInterval::Daily => now - now % DAY,
        RefillInterval::Monthly => {
            let day = refill.day.unwrap_or(1);
            let Ok(at) = OffsetDateTime::from_unix_timestamp(i64::try_from(now).unwrap_or(0))
            else {
                return 0;
            };
            let this_month = refill_day(at.year(), at.month(), day);
            if this_month <= now {
                this_month
            } else {
                let (year, month) = match at.month() {
                    Month::January => (at.year() - 1, Month::December),
                    m => (at.year(), m.previous()),
                };
                refill_day(year, month, day)
            }
        }
    }
}

/// 00:00 UTC of `day` (clamped to the month's last day) of `month`, in Unix seconds.
fn refill_day(year: i32, month: Month, day: u8) -> u64 {
    let day = day.min(time::util::days_in_month(month, year));
    Date::from_calendar_date(year, month, day)
        .map(|d| d.with_time(Time::MIDNIGHT).assume_utc().unix_timestamp())
        .ok()
        .and_then(|t| u64::try_from(t).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-31T12:00:00Z.
    const JAN_31_NOON: u64 = 1_769_860_800;

    fn monthly(day: u8) -> Refill {
        Refill {
            amount: 10,
            interval: RefillInterval::Monthly,
            day: Some(day),
        }
    }

    #[test]
    fn a_daily_refill_starts_at_midnight_utc() {
        let daily = Refill {
            amount: 5,
            interval: RefillInterval::Daily,
            day: None,
        };
        assert_eq!(interval_start(&daily, JAN_31_NOON), JAN_31_NOON - 12 * 3600);
        assert!(!due(&daily, JAN_31_NOON, JAN_31_NOON + 11 * 3600));
        assert!(due(&daily, JAN_31_NOON, JAN_31_NOON + 12 * 3600));
    }

    #[test]
    fn a_monthly_refill_on_the_31st_comes_on_the_last_day_of_a_short_month() {
        // 2026-02-28T00:00:00Z: February 2026 has 28 days.
        let feb_28 = 1_772_236_800;
        assert_eq!(interval_start(&monthly(31), feb_28 + 5), feb_28);
        assert_eq!(
            interval_start(&monthly(31), feb_28 - 5),
            JAN_31_NOON - 12 * 3600
        );
        assert!(due(&monthly(31), JAN_31_NOON, feb_28));
        assert!(!due(&monthly(31), JAN_31_NOON, feb_28 - 1));
    }

    #[test]
    fn a_monthly_refill_before_its_day_belongs_to_the_month_before() {
        // On 2026-01-31, a refill on the 1st began on 2026-01-01; one in December 2025 on 15th.
        assert_eq!(interval_start(&monthly(1), JAN_31_NOON), 1_767_225_600);
        let jan_10 = 1_768_003_200;
        assert_eq!(interval_start(&monthly(15), jan_10), 1_765_756_800);
    }

    #[test]
    fn bad_refills_are_refused() {
        assert!(check(&Some(monthly(1)), false).is_err());
        assert!(check(&Some(monthly(32)), true).is_err());
        assert!(
            check(
                &Some(Refill {
                    amount: 0,
                    ..monthly(1)
                }),
                true
            )
            .is_err()
        );
        let daily_with_day = Refill {
            interval: RefillInterval::Daily,
            ..monthly(3)
        };
        assert!(check(&Some(daily_with_day), true).is_err());
        assert!(check(&Some(monthly(31)), true).is_ok());
    }
}
