use crate::__private::bindings::mysimbdp::pipeline::{coredms, types::Document};
use crate::{Error, tally};

const DEFAULT_BATCH_DOCS: usize = 1000;
const DEFAULT_BATCH_BYTES: usize = 4 << 20;
/// Documents larger than this are written into a buffer that grows as needed.
const MAX_JSON_CAPACITY: usize = 64 << 10;

/// Turns documents into JSON text, each written into a buffer sized like the
/// largest document so far (up to 64 KiB), so that it is not regrown (and
/// copied) while being written. [`DocumentWriter::push_serialize`] uses one.
#[derive(Debug, Clone)]
pub struct JsonEncoder {
    capacity: usize,
}

impl Default for JsonEncoder {
    fn default() -> Self {
        JsonEncoder { capacity: 128 }
    }
}

impl JsonEncoder {
    /// `doc` as JSON text, as `serde_json::to_string` writes it.
    pub fn encode<T: serde::Serialize + ?Sized>(&mut self, doc: &T) -> Result<String, serde_json::Error> {
        let mut json = Vec::with_capacity(self.capacity);
        crate::json::write(&mut json, doc)?;
        self.capacity = self.capacity.max(json.len()).min(MAX_JSON_CAPACITY);
        // SAFETY: `json::write` writes UTF-8 only: the text of `&str`s, and
        // ASCII around and inside it.
        Ok(unsafe { String::from_utf8_unchecked(json) })
    }
}

/// Writes documents to one of the tenant's collections, one host call per
/// batch. Documents the store refuses are dead-lettered by the host and counted
/// as rejected. Call [`DocumentWriter::finish`] at the end; a writer dropped
/// with buffered documents still writes them and fails the ingestion if that
/// write fails.
pub struct DocumentWriter {
    collection: String,
    docs: Vec<Document>,
    bytes: usize,
    max_docs: usize,
    max_bytes: usize,
    encoder: JsonEncoder,
}

impl DocumentWriter {
    /// A writer to `collection`, stored by the host as `<tenant>-<collection>`.
    pub fn new(collection: impl Into<String>) -> Self {
        DocumentWriter {
            collection: collection.into(),
            docs: Vec::with_capacity(DEFAULT_BATCH_DOCS),
            bytes: 0,
            max_docs: DEFAULT_BATCH_DOCS,
            max_bytes: DEFAULT_BATCH_BYTES,
            encoder: JsonEncoder::default(),
        }
    }

    /// Documents per host call (default 1000).
    pub fn batch_docs(mut self, docs: usize) -> Self {
        self.max_docs = docs.max(1);
        self
    }

    /// Adds a document (a JSON object as text) under `id`; writing the same id
    /// again overwrites it.
    pub fn push(&mut self, id: impl Into<String>, json: impl Into<String>) -> Result<(), Error> {
        let json = json.into();
        self.bytes += json.len();
        self.docs.push(Document { id: Some(id.into()), json });
        if self.docs.len() >= self.max_docs || self.bytes >= self.max_bytes {
            self.flush()?;
        }
        Ok(())
    }

    /// Adds a document built with `serde_json`.
    pub fn push_value(&mut self, id: impl Into<String>, value: &serde_json::Value) -> Result<(), Error> {
        self.push_serialize(id, value)
    }

    /// Adds any `serde::Serialize` value that serialises to a JSON object,
    /// e.g. a `#[derive(Serialize)]` struct borrowing the row's fields: the
    /// cheapest way to build a document, with no `Value` tree in between.
    pub fn push_serialize<T: serde::Serialize + ?Sized>(&mut self, id: impl Into<String>, doc: &T) -> Result<(), Error> {
        let json = self.encoder.encode(doc).map_err(|e| Error::invalid_input(format!("a document for collection `{}` is not valid JSON: {e}", self.collection)))?;
        self.push(id, json)
    }

    /// Writes the buffered documents now.
    pub fn flush(&mut self) -> Result<(), Error> {
        if self.docs.is_empty() {
            return Ok(());
        }
        let written = coredms::bulk_index(&self.collection, &self.docs);
        // Emptied either way: a failed write is the caller's to handle, and
        // must not be written again when the writer is dropped. The vector
        // keeps its capacity for the next batch.
        self.docs.clear();
        self.bytes = 0;
        let report = written?;
        tally::with(|t| {
            t.records_out += u64::from(report.indexed);
            t.records_rejected += report.failed.len() as u64;
        });
        Ok(())
    }

    /// Writes what is left and ends the writer.
    pub fn finish(mut self) -> Result<(), Error> {
        self.flush()
    }
}

impl Drop for DocumentWriter {
    fn drop(&mut self) {
        if let Err(error) = self.flush() {
            tally::with(|t| {
                t.lost_write.get_or_insert(error);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use std::collections::BTreeMap;

    #[derive(Serialize)]
    struct Doc<'a> {
        text: &'a str,
        key_of_forty_bytes_so_written_in_one_copy: u32,
        nested: BTreeMap<&'a str, f64>,
    }

    /// Every piece length up to past the 32-byte short-copy limit, with
    /// escapes and multi-byte characters at both ends: the encoder writes
    /// what `serde_json::to_string` writes.
    #[test]
    fn encodes_as_serde_json() {
        let mut encoder = JsonEncoder::default();
        let alphabet = ["a", "\"", "é", "\\", "\n", "€", "z", "\u{1}"];
        for len in 0..80 {
            for (shift, _) in alphabet.iter().enumerate() {
                let text: String = (0..len).map(|i| alphabet[(i + shift) % alphabet.len()]).collect();
                let key = "k".repeat(len);
                let doc = Doc { text: &text, key_of_forty_bytes_so_written_in_one_copy: len as u32, nested: BTreeMap::from([(key.as_str(), len as f64 / 7.0)]) };
                assert_eq!(encoder.encode(&doc).unwrap(), serde_json::to_string(&doc).unwrap(), "length {len}");
            }
        }
    }
}
