//! What a pipeline knows and does besides reading and writing: who it runs
//! for and its parameters, deterministic document ids, rejections (dead
//! letters) and its own counters. [`BatchContext`] and [`StreamContext`]
//! also build the report the host records.

use crate::__private::bindings::mysimbdp::pipeline::types::{BatchReport, DeadRecord, Error as WitError, Message, Rejection, StreamReport};
use crate::__private::bindings::mysimbdp::pipeline::{config, dead_letter, metrics, staging};
use crate::{Error, InputFile, Line, Row, tally};
use std::collections::BTreeMap;
use std::fmt::Display;
use std::str::FromStr;

/// Dead records are sent in lists of this size.
const DEAD_LETTER_BATCH: usize = 256;

/// What both kinds of context share: parameters, counters and dead letters.
struct Common {
    tenant: String,
    pipeline: String,
    counters: BTreeMap<String, u64>,
    /// Dead records not sent yet: origin, raw record, reason.
    dead: Vec<(String, Vec<u8>, String)>,
}

impl Common {
    fn new() -> Self {
        Common { tenant: config::tenant(), pipeline: config::pipeline(), counters: BTreeMap::new(), dead: Vec::new() }
    }

    fn param_or<T: FromStr>(&self, key: &str, default: T) -> Result<T, Error>
    where
        T::Err: Display,
    {
        match config::get(key) {
            None => Ok(default),
            Some(text) => text.trim().parse().map_err(|e| {
                Error::InvalidInput(format!(
                    "parameter `{key}` of pipeline `{}` is `{text}`: {e}; fix it in the tenant's profile",
                    self.pipeline
                ))
            }),
        }
    }

    fn dead_letter(&mut self, origin: String, payload: &[u8], reason: String) -> Result<(), Error> {
        tally::with(|t| t.records_rejected += 1);
        self.dead.push((origin, payload.to_vec(), reason));
        if self.dead.len() >= DEAD_LETTER_BATCH {
            self.flush_dead_letters()?;
        }
        Ok(())
    }

    fn flush_dead_letters(&mut self) -> Result<(), Error> {
        if !self.dead.is_empty() {
            let records: Vec<DeadRecord<'_>> =
                self.dead.iter().map(|(origin, payload, reason)| DeadRecord { origin, payload, reason }).collect();
            dead_letter::send(&records)?;
            drop(records);
            self.dead.clear();
        }
        Ok(())
    }

    /// Sends what is buffered; called by the runner after the tenant's function.
    fn finish(&mut self) -> Result<(), Error> {
        self.flush_dead_letters()?;
        for (name, value) in std::mem::take(&mut self.counters) {
            metrics::counter_add(&name, value);
        }
        Ok(())
    }
}

macro_rules! common_methods {
    () => {
        /// The tenant running this pipeline.
        pub fn tenant(&self) -> &str {
            &self.common.tenant
        }

        /// The pipeline's name in the tenant's profile.
        pub fn pipeline(&self) -> &str {
            &self.common.pipeline
        }

        /// A parameter from the pipeline's section of the tenant's profile.
        pub fn param(&self, key: &str) -> Option<String> {
            config::get(key)
        }

        /// A parameter parsed as `T`, or `default` when the profile does not set it.
        pub fn param_or<T: FromStr>(&self, key: &str, default: T) -> Result<T, Error>
        where
            T::Err: Display,
        {
            self.common.param_or(key, default)
        }

        /// Adds to the pipeline's own counter `name` (exported by the host as
        /// `mysimbdp_guest_<name>_total`). Sent once at the end of the invocation.
        pub fn count(&mut self, name: &str, value: u64) {
            *self.common.counters.entry(name.to_string()).or_default() += value;
        }
    };
}

/// The default document ids of a file's rows (or lines): `<tenant>:<first 16
/// hex digits of the file's SHA-256>:<number>`, so ingesting the same file
/// again overwrites instead of duplicating. [`BatchContext::row_id`] uses the
/// file being ingested; this is the same outside a pipeline (e.g. natively).
#[derive(Debug, Clone)]
pub struct RowIds {
    prefix: String,
}

impl RowIds {
    /// The ids of the rows of the file with `checksum` (SHA-256, hex) of `tenant`.
    pub fn new(tenant: &str, checksum: &str) -> Self {
        RowIds { prefix: format!("{tenant}:{}:", &checksum[..16.min(checksum.len())]) }
    }

    /// The id of row `number`.
    pub fn id(&self, number: u64) -> String {
        String::from(self.row(number))
    }

    /// The id of row `number`, not yet written out: a [`DocumentWriter`]
    /// writes it straight into its batch.
    ///
    /// [`DocumentWriter`]: crate::DocumentWriter
    pub fn row(&self, number: u64) -> RowId<'_> {
        RowId { prefix: &self.prefix, number }
    }
}

/// The id of one row, as [`RowIds::id`] spells it: a document id that costs
/// no allocation. `to_string()` (or `String::from`) gives it as text.
#[derive(Debug, Clone, Copy)]
pub struct RowId<'a> {
    prefix: &'a str,
    number: u64,
}

impl RowId<'_> {
    /// Appends the id to `out`.
    #[inline]
    pub(crate) fn write_to(&self, out: &mut Vec<u8>) {
        // Called for every document: not `fmt`, and both pieces copied
        // without `memcpy` (a call into the host in the sandbox; see `json`).
        crate::json::push_bytes(out, self.prefix.as_bytes());
        crate::json::write_u64(out, self.number);
    }
}

impl From<RowId<'_>> for String {
    fn from(id: RowId<'_>) -> String {
        let mut text = Vec::new();
        id.write_to(&mut text);
        // SAFETY: the concatenation of two `str`s.
        unsafe { String::from_utf8_unchecked(text) }
    }
}

impl std::fmt::Display for RowId<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from(*self))
    }
}

/// What a batch pipeline knows about its run besides the file.
pub struct BatchContext {
    common: Common,
    file_name: String,
    ids: RowIds,
}

impl BatchContext {
    common_methods!();

    /// The default document id of row (or line) `number`: built from the
    /// tenant, the file's checksum and the number, so ingesting the same file
    /// again overwrites instead of duplicating.
    pub fn row_id(&self, number: u64) -> RowId<'_> {
        self.ids.row(number)
    }

    /// Sends a CSV row to the dead-letter topic with `reason`; counted as rejected.
    pub fn reject_row(&mut self, row: &Row<'_>, reason: impl Into<String>) -> Result<(), Error> {
        let origin = format!("{}:row {}", self.file_name, row.number());
        self.common.dead_letter(origin, row.raw(), reason.into())
    }

    /// Sends a line to the dead-letter topic with `reason`; counted as rejected.
    pub fn reject_line(&mut self, line: &Line<'_>, reason: impl Into<String>) -> Result<(), Error> {
        let origin = format!("{}:line {}", self.file_name, line.number());
        self.common.dead_letter(origin, line.raw(), reason.into())
    }
}

/// What a stream pipeline knows about its run besides the messages.
pub struct StreamContext {
    common: Common,
    rejected: Vec<Rejection>,
}

impl StreamContext {
    common_methods!();

    /// The default document id of a message: its topic, partition and offset,
    /// so a message delivered twice is written once.
    pub fn message_id(&self, message: &Message) -> String {
        format!("{}-{}-{}", message.topic, message.partition, message.offset)
    }

    /// Rejects message `index` of the batch; the host sends the original
    /// message to the dead-letter topic with `reason` in its headers.
    pub fn reject(&mut self, index: usize, reason: impl Into<String>) {
        tally::with(|t| t.records_rejected += 1);
        self.rejected.push(Rejection { index: index as u32, reason: reason.into() });
    }
}

/// Runs the tenant's batch function and builds the report. Used by `#[batch_pipeline]`.
pub fn run_batch(
    handle: &staging::InputFile,
    pipeline: impl FnOnce(&InputFile<'_>, &mut BatchContext) -> Result<(), Error>,
) -> Result<BatchReport, WitError> {
    tally::take();
    let file = InputFile::new(handle);
    let common = Common::new();
    let ids = RowIds::new(&common.tenant, file.checksum());
    let mut ctx = BatchContext { common, file_name: file.name().to_string(), ids };
    let outcome = pipeline(&file, &mut ctx);
    let finished = ctx.common.finish();
    let tally = tally::take();
    outcome?;
    finished?;
    if let Some(error) = tally.lost_write {
        return Err(error.into());
    }
    Ok(BatchReport { records_in: tally.records_in, records_out: tally.records_out, records_rejected: tally.records_rejected })
}

/// Runs the tenant's stream function and builds the report. Used by `#[stream_pipeline]`.
pub fn run_stream(
    batch: Vec<Message>,
    pipeline: impl FnOnce(&[Message], &mut StreamContext) -> Result<(), Error>,
) -> Result<StreamReport, WitError> {
    tally::take();
    let mut ctx = StreamContext { common: Common::new(), rejected: Vec::new() };
    let outcome = pipeline(&batch, &mut ctx);
    let finished = ctx.common.finish();
    let tally = tally::take();
    outcome?;
    finished?;
    if let Some(error) = tally.lost_write {
        return Err(error.into());
    }
    Ok(StreamReport { records_in: batch.len() as u64, records_out: tally.records_out, rejected: ctx.rejected })
}

#[cfg(test)]
mod tests {
    use super::RowIds;

    #[test]
    fn row_ids_are_tenant_checksum_prefix_and_number() {
        let ids = RowIds::new("retail", "0123456789abcdef0123");
        assert_eq!(ids.id(0), "retail:0123456789abcdef:0");
        assert_eq!(ids.id(42), "retail:0123456789abcdef:42");
        assert_eq!(ids.id(u64::MAX), format!("retail:0123456789abcdef:{}", u64::MAX));
        assert_eq!(RowIds::new("t", "abc").id(7), "t:abc:7");
        for number in [0, 9, 10, 12_345, u64::MAX] {
            let mut written = b"x".to_vec();
            ids.row(number).write_to(&mut written);
            assert_eq!(written, format!("x{}", ids.id(number)).into_bytes());
            assert_eq!(String::from(ids.row(number)), ids.id(number));
        }
    }
}
