//! The conventions every subcommand shares: one duration syntax, one environment-variable
//! prefix, examples in every `--help`.
//!
//! - A time is a number with a unit (`500ms`, `15s`, `1m`, `2h`, `1d`, combined as
//!   `1m30s`, with decimals as `1.5s`); a plain number keeps the unit the flag always had
//!   (seconds; milliseconds for the `--*-ms*` flags of `simulate`; days for
//!   `--rate-profile-days`).
//! - Every flag that can come from the environment reads `VLLM_AUTOSCALER_<FLAG>`.

use std::time::Duration;

/// The prefix of every environment variable a flag reads.
pub(crate) const ENV_PREFIX: &str = "VLLM_AUTOSCALER_";

/// Milliseconds in one of each unit.
fn unit_ms(unit: &str) -> Option<f64> {
    Some(match unit {
        "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        _ => return None,
    })
}

/// `text` in milliseconds; a plain number is `plain_unit_ms` milliseconds each.
fn parse_ms(text: &str, plain_unit_ms: f64, plain: &str) -> Result<f64, String> {
    let bad = || {
        format!(
            "`{text}` is not a duration: use a number with a unit, like 500ms, 15s or 1m (a plain number is {plain})"
        )
    };
    let text = text.trim();
    if text.is_empty() {
        return Err(bad());
    }
    let number_len = |s: &str| s.chars().take_while(|c| c.is_ascii_digit() || *c == '.').count();
    let n = number_len(text);
    if n == text.len() {
        let v: f64 = text.parse().map_err(|_| bad())?;
        return Ok(v * plain_unit_ms);
    }
    let mut total = 0.0;
    let mut rest = text;
    while !rest.is_empty() {
        let n = number_len(rest);
        if n == 0 {
            return Err(bad());
        }
        let v: f64 = rest[..n].parse().map_err(|_| bad())?;
        rest = &rest[n..];
        let u = rest.chars().take_while(char::is_ascii_alphabetic).count();
        total += v * unit_ms(&rest[..u]).ok_or_else(bad)?;
        rest = &rest[u..];
    }
    if total.is_finite() { Ok(total) } else { Err(bad()) }
}

/// A time flag stored as a [`Duration`]: `500ms`, `15s`, `1m`; a plain number is seconds.
pub(crate) fn duration(text: &str) -> Result<Duration, String> {
    let ms = parse_ms(text, 1_000.0, "seconds")?;
    Duration::try_from_secs_f64(ms / 1_000.0).map_err(|e| format!("`{text}`: {e}"))
}

/// A time flag stored as seconds: `500ms`, `15s`, `1m`; a plain number is seconds.
pub(crate) fn seconds(text: &str) -> Result<f64, String> {
    Ok(parse_ms(text, 1_000.0, "seconds")? / 1_000.0)
}

/// A time flag stored as days: `2d`, `36h`; a plain number is days.
pub(crate) fn days(text: &str) -> Result<f64, String> {
    Ok(parse_ms(text, 86_400_000.0, "days")? / 86_400_000.0)
}

/// A time flag stored as milliseconds: `25ms`, `0.5s`; a plain number is milliseconds.
pub(crate) fn millis(text: &str) -> Result<f64, String> {
    parse_ms(text, 1.0, "milliseconds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_with_units_and_plain_numbers() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(duration("2h"), Ok(Duration::from_secs(7200)));
        // Plain numbers keep meaning seconds.
        assert_eq!(duration("15"), Ok(Duration::from_secs(15)));
        assert_eq!(duration("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(seconds("60"), Ok(60.0));
        assert_eq!(seconds("2m"), Ok(120.0));
        assert_eq!(seconds("250ms"), Ok(0.25));
        // Plain numbers of the millisecond flags are milliseconds.
        assert_eq!(millis("25"), Ok(25.0));
        assert_eq!(millis("0.5s"), Ok(500.0));
        assert_eq!(days("2"), Ok(2.0));
        assert_eq!(days("36h"), Ok(1.5));
    }

    #[test]
    fn bad_durations_say_what_is_expected() {
        for bad in ["", "s", "15x", "1m-", "-1s", "1..5s", "abc"] {
            let err = duration(bad).unwrap_err();
            assert!(err.contains("is not a duration") && err.contains("500ms, 15s or 1m"), "{bad}: {err}");
        }
        assert!(duration("15 minutes").is_err());
        assert!(millis("x").unwrap_err().contains("a plain number is milliseconds"));
    }
}
