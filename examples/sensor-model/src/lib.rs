//! Tenant `sensors` runs weather stations. Each reading arrives as one JSON
//! object, in NDJSON files (batch) or as Kafka messages (stream):
//!
//! `{"sensor_id":"hel-001","site":"helsinki","ts":"2026-11-20T10:00:00Z","temperature_c":-3.2,"humidity_pct":81.5,"pressure_hpa":1012.3,"battery_v":3.61}`
//!
//! [`reading_document`] checks it and derives: Fahrenheit, dew point (Magnus
//! formula), the hour bucket, battery state and an overall status.

use serde_json::{Value, json};

/// Where readings are rejected, and when a battery counts as low.
#[derive(Debug, Clone)]
pub struct Limits {
    pub min_temperature_c: f64,
    pub max_temperature_c: f64,
    pub low_battery_v: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { min_temperature_c: -60.0, max_temperature_c: 60.0, low_battery_v: 3.3 }
    }
}

/// A reading to its document, or the reason it is rejected.
pub fn reading_document(reading: &Value, limits: &Limits) -> Result<Value, String> {
    let text = |name: &str| -> Result<&str, String> {
        reading.get(name).and_then(Value::as_str).filter(|s| !s.trim().is_empty()).ok_or_else(|| format!("`{name}` is missing or not text"))
    };
    let number = |name: &str| -> Result<f64, String> {
        reading.get(name).and_then(Value::as_f64).filter(|n| n.is_finite()).ok_or_else(|| format!("`{name}` is missing or not a number"))
    };
    let sensor_id = text("sensor_id")?;
    let site = text("site")?;
    let ts = text("ts")?;
    if !looks_like_utc_timestamp(ts) {
        return Err(format!("`ts` {ts:?} is not an RFC 3339 UTC time like 2026-11-20T10:00:00Z"));
    }
    let temperature = number("temperature_c")?;
    if !(limits.min_temperature_c..=limits.max_temperature_c).contains(&temperature) {
        return Err(format!("`temperature_c` {temperature} is outside [{}, {}]", limits.min_temperature_c, limits.max_temperature_c));
    }
    let humidity = number("humidity_pct")?;
    if !(0.0..=100.0).contains(&humidity) {
        return Err(format!("`humidity_pct` {humidity} is outside [0, 100]"));
    }
    let pressure = reading.get("pressure_hpa").and_then(Value::as_f64);
    let battery = number("battery_v")?;
    let low_battery = battery < limits.low_battery_v;
    let status = if low_battery {
        "check-battery"
    } else if humidity >= 95.0 && temperature <= 0.0 {
        "icing-risk"
    } else {
        "ok"
    };
    Ok(json!({
        "sensor_id": sensor_id,
        "site": site.to_lowercase(),
        "ts": ts,
        "hour": &ts[..13],
        "temperature": { "c": round1(temperature), "f": round1(temperature * 9.0 / 5.0 + 32.0) },
        "humidity_pct": round1(humidity),
        "dew_point_c": round1(dew_point(temperature, humidity)),
        "pressure_hpa": pressure,
        "battery": { "volts": battery, "low": low_battery },
        "status": status,
    }))
}

/// Magnus formula, good to ±0.4 °C between -45 and 60 °C.
fn dew_point(temperature_c: f64, humidity_pct: f64) -> f64 {
    const B: f64 = 17.62;
    const C: f64 = 243.12;
    let gamma = (humidity_pct.max(0.1) / 100.0).ln() + B * temperature_c / (C + temperature_c);
    C * gamma / (B - gamma)
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// `YYYY-MM-DDTHH:MM:SS(.fff)Z`
fn looks_like_utc_timestamp(ts: &str) -> bool {
    let b = ts.as_bytes();
    let digits = |range: std::ops::Range<usize>| range.into_iter().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && ts.ends_with('Z')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_fields() {
        let reading = json!({"sensor_id":"hel-001","site":"Helsinki","ts":"2026-11-20T10:00:00Z","temperature_c":20.0,"humidity_pct":50.0,"battery_v":3.2});
        let doc = reading_document(&reading, &Limits::default()).unwrap();
        assert_eq!(doc["temperature"]["f"], 68.0);
        assert_eq!(doc["dew_point_c"], 9.3);
        assert_eq!(doc["hour"], "2026-11-20T10");
        assert_eq!(doc["status"], "check-battery");
        assert_eq!(doc["site"], "helsinki");
    }

    #[test]
    fn rejects_bad_readings() {
        let bad = json!({"sensor_id":"x","site":"y","ts":"yesterday","temperature_c":1.0,"humidity_pct":5.0,"battery_v":3.6});
        assert!(reading_document(&bad, &Limits::default()).unwrap_err().contains("`ts`"));
        let hot = json!({"sensor_id":"x","site":"y","ts":"2026-11-20T10:00:00Z","temperature_c":99.0,"humidity_pct":5.0,"battery_v":3.6});
        assert!(reading_document(&hot, &Limits::default()).unwrap_err().contains("temperature_c"));
    }
}
