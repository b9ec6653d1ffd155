//! Human units for settings: durations (`500ms`, `5s`, `2m`, `1h`) and sizes (`64KiB`,
//! `1MiB`, `1000`). Pure parsing; not the flags themselves.
//!
//! Public for applications that read `Config` values from text (a file, flags, the
//! environment): the same forms then mean the same as in the `corecast` binary's settings,
//! which parse with these, as the load generator's flags do. Errors are messages for a person.
//!
//! ```
//! use std::time::Duration;
//! use corecast::units::{parse_duration, parse_size};
//!
//! let config = corecast::Config {
//!     ping_interval: parse_duration("5s")?,
//!     max_message_size: parse_size("64KiB")?,
//!     ..corecast::Config::default()
//! };
//! assert_eq!(config.ping_interval, Duration::from_secs(5));
//! assert_eq!(config.max_message_size, 65536);
//! # Ok::<(), String>(())
//! ```

use std::time::Duration;

/// Parses `<number><unit>` with unit ms, s, m or h (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| {
        format!("invalid duration {s:?}: expected a number with a unit, like 500ms, 5s, 2m or 1h")
    })?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "invalid duration {s:?}: unknown unit {other:?} (use ms, s, m or h)"
            ))
        }
    };
    let secs = value * scale;
    if !secs.is_finite() || secs > 1e9 {
        return Err(format!("invalid duration {s:?}: too large"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a byte size: a number with an optional unit B, KB, KiB, MB, MiB, GB, GiB; `unlimited`
/// means no limit.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("unlimited") {
        return Ok(usize::MAX);
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: u64 = num.parse().map_err(|_| {
        format!(
            "invalid size {s:?}: expected a number with an optional unit, like 4096, 64KiB or 1MiB"
        )
    })?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        other => {
            return Err(format!(
                "invalid size {s:?}: unknown unit {other:?} (use B, KB, KiB, MB, MiB, GB or GiB)"
            ))
        }
    };
    value
        .checked_mul(scale)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| format!("invalid size {s:?}: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("5x")
            .unwrap_err()
            .contains("unknown unit \"x\""));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("1mb"), Ok(1_000_000));
        assert_eq!(parse_size("unlimited"), Ok(usize::MAX));
        assert!(parse_size("1.5MiB").is_err());
        assert!(parse_size("10XB").unwrap_err().contains("unknown unit"));
        assert!(parse_size("99999999999999999999GiB").is_err());
    }
}
