//! How the CLI prints: short aligned text for people, `--json` for scripts.

use crate::batch::constraints::human_bytes;
use crate::telemetry::{IngestionRecord, Outcome};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::time::Duration;

pub struct Output {
    pub json: bool,
}

impl Output {
    pub fn json<T: Serialize>(&self, value: &T) {
        println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
    }

    pub fn ingestion(&self, record: &IngestionRecord) {
        if self.json {
            return self.json(record);
        }
        println!("{}/{} v{} <- {} ({})", record.tenant, record.pipeline, record.version, record.source, human_bytes(record.bytes));
        println!(
            "  records   in {}  out {}  rejected {}  (dead-lettered {})",
            record.records_in, record.records_out, record.records_rejected, record.dead_lettered
        );
        let seconds = record.duration_ms / 1000.0;
        let rate = if seconds > 0.0 { record.bytes as f64 / seconds } else { 0.0 };
        println!(
            "  time      {:.0} ms ({}/s)  fuel {}  peak memory {}",
            record.duration_ms,
            human_bytes(rate as u64),
            thousands(record.fuel_consumed),
            human_bytes(record.peak_memory_bytes)
        );
        match record.outcome {
            Outcome::Ok => println!("  outcome   ok"),
            Outcome::Failed => println!(
                "  outcome   FAILED ({}): {}",
                record.failure.map_or("unknown", |f| f.as_str()),
                record.reason.as_deref().unwrap_or("")
            ),
        }
    }

    /// Prints rows under a header, columns padded to their widest cell.
    pub fn table(&self, header: &[&str], rows: &[Vec<String>]) {
        let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
        for row in rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |cells: Vec<String>| {
            let padded: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
            println!("{}", padded.join("  ").trim_end());
        };
        line(header.iter().map(|h| h.to_uppercase()).collect());
        for row in rows {
            line(row.clone());
        }
    }
}

/// `12345678` as `12,345,678`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A spinner on stderr for work without a known length.
pub fn spinner(message: impl Into<String>) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("valid template"));
    bar.set_message(message.into());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A byte progress bar on stderr.
pub fn bytes_bar(total: u64, message: impl Into<String>) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(message.into());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A progress bar over a number of items on stderr.
pub fn count_bar(total: u64, message: impl Into<String>) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}").expect("valid template").progress_chars("=> "),
    );
    bar.set_message(message.into());
    bar
}
