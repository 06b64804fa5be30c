//! The throughput chart: per-minute rates over the last hour, drawn as inline SVG on the server (no script).

use chrono::{DateTime, DurationRound, Utc};
use maud::{html, Markup};
use quern_store::ThroughputMinute;

/// Minutes the chart spans.
pub const MINUTES: usize = 60;
const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 110.0;
const TOP: f64 = 14.0;
const LEFT: f64 = 44.0;

/// Per-second rates of each of the last [`MINUTES`] minutes, oldest first, the current (partial) minute last:
/// (jobs/s, chunks/s). Minutes without a succeeded job are zero.
pub fn rates(minutes: &[ThroughputMinute], now: DateTime<Utc>) -> Vec<(f64, f64)> {
    let this_minute = now.duration_trunc(chrono::TimeDelta::minutes(1)).unwrap_or(now);
    let mut rates = vec![(0.0, 0.0); MINUTES];
    for minute in minutes {
        let ago = (this_minute - minute.minute).num_minutes();
        if (0..MINUTES as i64).contains(&ago) {
            rates[MINUTES - 1 - ago as usize] = (minute.jobs as f64 / 60.0, minute.chunks as f64 / 60.0);
        }
    }
    rates
}

/// One series as a line over the hour, scaled to its own peak, with the peak labelled; `class` names the colour.
pub fn line(label: &str, unit: &str, values: &[f64], colour: &str) -> Markup {
    let peak = values.iter().copied().fold(0.0_f64, f64::max);
    let points = points(values, peak);
    html! {
        svg.chart viewBox=(format!("0 0 {WIDTH} {}", HEIGHT + 20.0)) role="img" aria-label=(label) {
            title { (label) }
            line x1=(LEFT) y1=(TOP + HEIGHT) x2=(WIDTH) y2=(TOP + HEIGHT) stroke="#c4ccd8" stroke-width="1" {}
            line x1=(LEFT) y1=(TOP) x2=(WIDTH) y2=(TOP) stroke="#eef1f6" stroke-width="1" {}
            text x="2" y=(TOP + 4.0) font-size="11" fill="#5d6878" { (format!("{peak:.1}")) }
            text x="2" y=(TOP + HEIGHT) font-size="11" fill="#5d6878" { "0" }
            text x=(LEFT) y=(TOP + HEIGHT + 16.0) font-size="11" fill="#5d6878" { "60 min ago" }
            text x=(WIDTH - 30.0) y=(TOP + HEIGHT + 16.0) font-size="11" fill="#5d6878" { "now" }
            text x=(LEFT + 6.0) y="11" font-size="11" fill=(colour) { (label) " (" (unit) ")" }
            polyline points=(points) fill="none" stroke=(colour) stroke-width="2" stroke-linejoin="round" {}
        }
    }
}

/// The polyline's points: one per value, spread over the plot's width, the peak at its top (a flat line at the
/// bottom when every value is zero).
fn points(values: &[f64], peak: f64) -> String {
    let step = if values.len() > 1 { (WIDTH - LEFT) / (values.len() - 1) as f64 } else { 0.0 };
    values
        .iter()
        .enumerate()
        .map(|(i, value)| {
            let y = if peak > 0.0 { TOP + HEIGHT - value / peak * HEIGHT } else { TOP + HEIGHT };
            format!("{:.1},{:.1}", LEFT + step * i as f64, y)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_land_in_their_place_as_rates_per_second() {
        let now: DateTime<Utc> = "2026-12-02T10:30:25Z".parse().expect("time");
        let at = |text: &str| text.parse::<DateTime<Utc>>().expect("time");
        let minutes = [
            ThroughputMinute { minute: at("2026-12-02T10:30:00Z"), jobs: 6, chunks: 120 },
            ThroughputMinute { minute: at("2026-12-02T10:28:00Z"), jobs: 3, chunks: 30 },
            // Older than the hour: left out.
            ThroughputMinute { minute: at("2026-12-02T09:30:00Z"), jobs: 600, chunks: 600 },
        ];
        let rates = rates(&minutes, now);
        assert_eq!(rates.len(), MINUTES);
        assert_eq!(rates[59], (0.1, 2.0));
        assert_eq!(rates[58], (0.0, 0.0));
        assert_eq!(rates[57], (0.05, 0.5));
        assert_eq!(rates.iter().filter(|r| r.0 > 0.0).count(), 2);
    }

    #[test]
    fn the_peak_reaches_the_top_and_zero_the_bottom() {
        let drawn = points(&[0.0, 2.0, 1.0], 2.0);
        assert_eq!(drawn, format!("{LEFT:.1},{:.1} 322.0,{TOP:.1} 600.0,{:.1}", TOP + HEIGHT, TOP + HEIGHT / 2.0));
        assert!(points(&[0.0, 0.0], 0.0).split(' ').all(|p| p.ends_with(&format!(",{:.1}", TOP + HEIGHT))));
    }
}
