//! Durations on the command line (`--ttl`, `--grace`): seconds, or one number with one unit.

/// A duration in seconds from `90`, `90s`, `15m`, `1h` or `7d` (one number, one unit at most).
/// Written by hand: humantime's grammar ("1h 30m", "2 weeks") is more than the CLI promises.
pub fn duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "`{text}` is not a duration: give seconds, or 90s, 15m, 1h, 7d"
            ));
        }
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: give seconds, or 90s, 15m, 1h, 7d"))?;
    n.checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too long a duration"))
}

#[cfg(test)]
mod duration_tests {
    use super::duration;

    #[test]
    fn durations_are_seconds_or_a_number_with_a_unit() {
        assert_eq!(duration("90"), Ok(90));
        assert_eq!(duration("90s"), Ok(90));
        assert_eq!(duration("15m"), Ok(900));
        assert_eq!(duration("1h"), Ok(3_600));
        assert_eq!(duration("7d"), Ok(604_800));
        for bad in [
            "",
            "h",
            "1x",
            "1h30m",
            "-1",
            "1.5h",
            "99999999999999999999d",
        ] {
            assert!(duration(bad).is_err(), "{bad}");
        }
    }
}
