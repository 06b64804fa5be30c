//! The one duration syntax of every flag and config file setting: humantime's (`500ms`, `30s`, `1h30m`, `7d`, `2w`).

use std::time::Duration;

/// Parses a duration like `500ms`, `10s`, `5m`, `1h30m`, `1d` or `2w`. A bare number is refused: `30` could mean
/// seconds or minutes, and a wrong guess at a retention or a window is costly.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value.trim())
        .map_err(|e| format!("`{value}` is not a duration like 500ms, 30s, 1h30m or 7d: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_humantime_units_and_need_one() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration(" 1d "), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(14 * 86_400)));
        for bad in ["", "10", "h", "-1h", "3 parsecs"] {
            let error = parse_duration(bad).expect_err(bad);
            assert!(error.contains("is not a duration"), "{error}");
        }
    }
}
