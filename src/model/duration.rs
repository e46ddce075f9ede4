//! Durations as OpenFaaS writes them: whole seconds (`30`) or a Go duration (`1m30s`,
//! `500ms`, `1.5s`, `2h`; units ns, us, µs, ms, s, m, h). One parser for the watchdog's
//! timeouts, the gateway's flags and the `com.openfaas.scale.zero-duration` label.

use std::time::Duration;

/// `value` as a duration, or `None` when it is not one (empty, a unit missing or unknown,
/// a negative or overflowing total).
pub(crate) fn parse(value: &str) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let mut total = 0f64;
    let mut rest = v;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        if num_end == 0 {
            return None;
        }
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_go_durations() {
        assert_eq!(parse("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse(" 1m30s "), Some(Duration::from_secs(90)));
        assert_eq!(parse("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse("2h"), Some(Duration::from_secs(7200)));
        for bad in ["", "s", "10x", "1m30", "-1s", "abc"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
