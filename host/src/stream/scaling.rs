//! The monitor's decisions, pure and tested here: what a window of a
//! stream's statistics measures, which thresholds a measurement crosses (the
//! alerts), whether the last scaling is still settling, and what the stream
//! manager does about one alert (one instance more or fewer, within the
//! profile's bounds, or nothing, with the reason).

use super::Window;
use crate::config::StreamThresholds;
use crate::telemetry::events::{AlertKind, Measurement};
use std::time::{Duration, Instant};

/// What one window of a stream's statistics measures: the average batch
/// time (none without batches), the share of failed messages (none without
/// messages), `lag` as the broker said, and how long no message came,
/// `running_for` if none came at all in the window.
pub fn measure(window: &Window, lag: Option<u64>, running_for: Duration, now: Instant) -> Measurement {
    let avg_ingestion_ms = (window.batches > 0).then(|| window.busy.as_secs_f64() * 1000.0 / window.batches as f64);
    let error_rate = (window.messages > 0).then(|| window.failed as f64 / window.messages as f64);
    let idle_for = window.last_message.map_or(running_for, |t| now.saturating_duration_since(t));
    Measurement { avg_ingestion_ms, lag, error_rate, idle_for_ms: Some(idle_for.as_millis() as u64) }
}

/// Whether a stream scaled at `last_change` is still settling at `now`:
/// until `cooldown` has passed, no new change is judged.
pub fn settling(last_change: Option<Instant>, now: Instant, cooldown: Duration) -> bool {
    last_change.is_some_and(|changed| now.saturating_duration_since(changed) < cooldown)
}

/// A threshold crossed: the measured value and the threshold, in the
/// threshold's unit, and a sentence for operators.
#[derive(Debug, Clone, PartialEq)]
pub struct Crossed {
    pub kind: AlertKind,
    pub value: f64,
    pub threshold: f64,
    pub message: String,
}

/// The thresholds `measured` crosses, in a fixed order (slow, lag, errors, idle).
pub fn crossed(thresholds: &StreamThresholds, measured: &Measurement) -> Vec<Crossed> {
    let mut crossed = Vec::new();
    let mut cross = |kind, value, threshold, message| crossed.push(Crossed { kind, value, threshold, message });
    if let (Some(avg), Some(max)) = (measured.avg_ingestion_ms, thresholds.max_avg_ingestion_ms)
        && avg > max as f64
    {
        cross(AlertKind::SlowIngestion, avg, max as f64, format!("batches take {avg:.0} ms on average; the profile allows {max} ms"));
    }
    if let (Some(lag), Some(max)) = (measured.lag, thresholds.max_consumer_lag)
        && lag > max
    {
        cross(AlertKind::ConsumerLag, lag as f64, max as f64, format!("the group lags {lag} messages; the profile allows {max}"));
    }
    if let (Some(rate), Some(max)) = (measured.error_rate, thresholds.max_error_rate)
        && rate > max
    {
        let message = format!("{:.0}% of messages failed; the profile allows {:.0}%", rate * 100.0, max * 100.0);
        cross(AlertKind::ErrorRate, rate, max, message);
    }
    if let (Some(idle_for), Some(idle_after)) = (measured.idle_for_ms, thresholds.idle_after_ms)
        && idle_for >= idle_after
        && measured.lag.unwrap_or(0) == 0
    {
        cross(AlertKind::Idle, idle_for as f64, idle_after as f64, format!("no message for {idle_for} ms and nothing waiting"));
    }
    crossed
}

/// What the stream manager does about one alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Instances to run: the same as now when it does nothing.
    pub to: u32,
    /// `up` or `down` when it scales.
    pub direction: Option<&'static str>,
    pub reason: String,
}

/// The decision on an alert of `kind` for a stream running `instances`
/// (bounded by the profile's `min_instances`, at least 1, and
/// `max_instances`); `settling` when the last change is too recent to judge.
pub fn decide(kind: AlertKind, message: &str, instances: u32, min: u32, max: u32, settling: bool) -> Decision {
    let stay = |reason: String| Decision { to: instances, direction: None, reason };
    let (target, direction) = match kind {
        AlertKind::SlowIngestion | AlertKind::ConsumerLag => (instances + 1, "up"),
        AlertKind::Idle => (instances.saturating_sub(1), "down"),
        AlertKind::ErrorRate => return stay("not scaling: more instances do not fix failing messages".into()),
    };
    let bounded = target.clamp(min.max(1), max.max(min.max(1)));
    if bounded == instances {
        let limit = if direction == "up" { "maximum" } else { "minimum" };
        return stay(format!("not scaling: already at the profile's {limit} of {instances}"));
    }
    if settling {
        return stay("not scaling yet: the last change is still settling".into());
    }
    Decision { to: bounded, direction: Some(direction), reason: format!("scaled {direction}: {message}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thresholds() -> StreamThresholds {
        StreamThresholds {
            max_avg_ingestion_ms: Some(2000),
            max_consumer_lag: Some(5000),
            max_error_rate: Some(0.2),
            idle_after_ms: Some(60_000),
        }
    }

    fn measured(avg: Option<f64>, lag: Option<u64>, rate: Option<f64>, idle: u64) -> Measurement {
        Measurement { avg_ingestion_ms: avg, lag, error_rate: rate, idle_for_ms: Some(idle) }
    }

    #[test]
    fn a_window_measures_averages_shares_and_idleness() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        let window = |batches, messages, failed, busy, last: Option<u64>| Window {
            batches,
            messages,
            failed,
            busy: ms(busy),
            idle_polls: 0,
            last_message: last.map(|ago| now - ms(ago)),
        };
        // (window, running for ms, expected avg ms, error rate, idle ms)
        let cases = [
            (window(4, 100, 25, 2000, Some(300)), 10_000, Some(500.0), Some(0.25), 300),
            (window(0, 0, 0, 0, None), 10_000, None, None, 10_000),
            (window(1, 10, 0, 40, Some(0)), 50, Some(40.0), Some(0.0), 0),
        ];
        for (window, running_for, avg, rate, idle) in cases {
            let measured = measure(&window, Some(7), ms(running_for), now);
            assert_eq!(
                measured,
                Measurement { avg_ingestion_ms: avg, lag: Some(7), error_rate: rate, idle_for_ms: Some(idle) },
                "{window:?}"
            );
        }
    }

    #[test]
    fn a_change_settles_for_the_cooldown_and_no_longer() {
        let now = Instant::now();
        let s = Duration::from_secs;
        // (last change seconds ago, cooldown seconds, settling)
        let cases = [
            (None, 30, false),
            (Some(0), 30, true),
            (Some(29), 30, true),
            (Some(30), 30, false),
            (Some(90), 30, false),
            (Some(5), 0, false),
        ];
        for (ago, cooldown, expected) in cases {
            assert_eq!(settling(ago.map(|a| now - s(a)), now, s(cooldown)), expected, "changed {ago:?} s ago, cooldown {cooldown} s");
        }
    }

    fn kinds(measurement: &Measurement) -> Vec<AlertKind> {
        crossed(&thresholds(), measurement).into_iter().map(|c| c.kind).collect()
    }

    #[test]
    fn each_threshold_is_crossed_only_past_its_value() {
        use AlertKind::*;
        let cases: Vec<(Measurement, Vec<AlertKind>)> = vec![
            (measured(Some(2000.0), Some(5000), Some(0.2), 59_999), vec![]),
            (measured(Some(2000.1), Some(0), None, 0), vec![SlowIngestion]),
            (measured(None, Some(5001), None, 0), vec![ConsumerLag]),
            (measured(None, Some(0), Some(0.21), 0), vec![ErrorRate]),
            (measured(None, Some(0), None, 60_000), vec![Idle]),
            (measured(None, None, None, 60_000), vec![Idle]),
            // Idle only with nothing waiting.
            (measured(None, Some(1), None, 600_000), vec![]),
            (measured(Some(9000.0), Some(9000), Some(1.0), 0), vec![SlowIngestion, ConsumerLag, ErrorRate]),
            // Nothing measured, nothing crossed.
            (Measurement::default(), vec![]),
        ];
        for (measurement, expected) in cases {
            assert_eq!(kinds(&measurement), expected, "{measurement:?}");
        }
        let unset = StreamThresholds::default();
        assert!(crossed(&unset, &measured(Some(1e9), Some(u64::MAX), Some(1.0), u64::MAX)).is_empty(), "no threshold, no alert");
        let slow = &crossed(&thresholds(), &measured(Some(2500.0), None, None, 0))[0];
        assert_eq!((slow.value, slow.threshold), (2500.0, 2000.0));
        assert_eq!(slow.message, "batches take 2500 ms on average; the profile allows 2000 ms");
    }

    #[test]
    fn alerts_scale_by_one_within_the_profiles_bounds() {
        use AlertKind::*;
        // (alert, instances, min, max, settling) -> (to, direction)
        let cases = [
            (SlowIngestion, 1, 1, 3, false, 2, Some("up")),
            (ConsumerLag, 2, 1, 3, false, 3, Some("up")),
            (ConsumerLag, 3, 1, 3, false, 3, None),
            (Idle, 3, 1, 3, false, 2, Some("down")),
            (Idle, 1, 1, 3, false, 1, None),
            (Idle, 2, 2, 3, false, 2, None),
            // A minimum of 0 still keeps one instance: stopping is the operator's.
            (Idle, 1, 0, 3, false, 1, None),
            (ErrorRate, 1, 1, 3, false, 1, None),
            (SlowIngestion, 1, 1, 3, true, 1, None),
            (Idle, 3, 1, 3, true, 3, None),
        ];
        for (kind, instances, min, max, settling, to, direction) in cases {
            let decision = decide(kind, "why", instances, min, max, settling);
            assert_eq!((decision.to, decision.direction), (to, direction), "{kind:?} at {instances} in {min}..={max}, settling {settling}");
        }
    }

    #[test]
    fn every_decision_says_why() {
        use AlertKind::*;
        let reason = |kind, instances, settling| decide(kind, "the group lags 9000 messages", instances, 1, 3, settling).reason;
        assert_eq!(reason(ConsumerLag, 1, false), "scaled up: the group lags 9000 messages");
        assert_eq!(reason(ConsumerLag, 3, false), "not scaling: already at the profile's maximum of 3");
        assert_eq!(reason(Idle, 1, false), "not scaling: already at the profile's minimum of 1");
        assert_eq!(reason(ErrorRate, 2, false), "not scaling: more instances do not fix failing messages");
        assert_eq!(reason(ConsumerLag, 1, true), "not scaling yet: the last change is still settling");
    }
}
