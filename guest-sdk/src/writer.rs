//! Documents into the tenant's collections, in batches: one host call per
//! thousand documents, their ids and JSON texts packed in one buffer.

use crate::__private::bindings::mysimbdp::pipeline::coredms;
use crate::context::RowId;
use crate::{Error, tally};

const DEFAULT_BATCH_DOCS: usize = 1000;
const DEFAULT_BATCH_BYTES: usize = 4 << 20;

/// A document id: a `&str`, a `String` or a [`RowId`] (what
/// [`BatchContext::row_id`](crate::BatchContext::row_id) returns), written
/// straight into the batch.
pub trait DocumentId {
    /// Appends the id's text to `out`.
    fn write_id(&self, out: &mut Vec<u8>);
}

impl DocumentId for str {
    fn write_id(&self, out: &mut Vec<u8>) {
        crate::json::push_bytes(out, self.as_bytes());
    }
}

impl DocumentId for String {
    fn write_id(&self, out: &mut Vec<u8>) {
        self.as_str().write_id(out);
    }
}

impl<T: DocumentId + ?Sized> DocumentId for &T {
    fn write_id(&self, out: &mut Vec<u8>) {
        (**self).write_id(out);
    }
}

impl DocumentId for RowId<'_> {
    #[inline]
    fn write_id(&self, out: &mut Vec<u8>) {
        self.write_to(out);
    }
}

/// Documents as [`DocumentWriter`] buffers them: every id and JSON text one
/// after the other in one buffer, which keeps its capacity from batch to
/// batch. A document costs no allocation of its own, and the batch crosses to
/// the host as it is, in two lists (`coredms.bulk-index-packed`). Public so
/// that a transform can be run natively with the same code (see `bench/`).
#[derive(Debug, Default)]
pub struct DocumentBatch {
    text: Vec<u8>,
    /// Per document, where its id ends and where its JSON ends in `text`.
    ends: Vec<[u32; 2]>,
}

/// The length of `text` as an offset of `bulk-index-packed`. A batch is
/// flushed at a few MiB, far below 4 GiB.
#[inline]
fn offset(text: &[u8]) -> u32 {
    u32::try_from(text.len()).expect("a document batch under 4 GiB")
}

impl DocumentBatch {
    /// An empty batch with room for `docs` documents.
    pub fn with_capacity(docs: usize) -> Self {
        DocumentBatch { text: Vec::new(), ends: Vec::with_capacity(docs) }
    }

    /// Documents in the batch.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the batch holds no document.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes of the batch's ids and JSON texts.
    pub fn bytes(&self) -> usize {
        self.text.len()
    }

    /// Adds a document given as JSON text.
    pub fn push(&mut self, id: impl DocumentId, json: &str) {
        id.write_id(&mut self.text);
        let id_end = offset(&self.text);
        self.text.extend_from_slice(json.as_bytes());
        self.ends.push([id_end, offset(&self.text)]);
    }

    /// Adds `doc` as JSON text, exactly as `serde_json::to_string` writes it.
    /// On error the batch is left as it was.
    #[inline]
    pub fn push_serialize<T: serde::Serialize + ?Sized>(&mut self, id: impl DocumentId, doc: &T) -> Result<(), serde_json::Error> {
        let start = self.text.len();
        id.write_id(&mut self.text);
        let id_end = offset(&self.text);
        match crate::json::write(&mut self.text, doc) {
            Ok(()) => {
                self.ends.push([id_end, offset(&self.text)]);
                Ok(())
            }
            Err(error) => {
                self.text.truncate(start);
                Err(error)
            }
        }
    }

    /// Each document's id and JSON text, in the order they were added.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        let mut start = 0;
        self.ends.iter().map(move |&[id_end, end]| {
            let (id_end, end) = (id_end as usize, end as usize);
            // SAFETY: `text` holds only whole `str`s (ids, JSON texts written
            // by `json::write`, which writes UTF-8 only), and `ends` marks
            // their boundaries.
            let (id, json) = unsafe {
                (std::str::from_utf8_unchecked(&self.text[start..id_end]), std::str::from_utf8_unchecked(&self.text[id_end..end]))
            };
            start = end;
            (id, json)
        })
    }

    /// The batch as `bulk-index-packed` takes it: the text, and per document
    /// where its id ends and where its JSON text ends.
    pub fn packed(&self) -> (&[u8], &[u32]) {
        (&self.text, self.ends.as_flattened())
    }

    /// Empties the batch; its buffers keep their capacity.
    pub fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
    }
}

/// Writes documents to one of the tenant's collections, one host call per
/// batch. Documents the store refuses are dead-lettered by the host and counted
/// as rejected. Call [`DocumentWriter::finish`] at the end; a writer dropped
/// with buffered documents still writes them and fails the ingestion if that
/// write fails.
pub struct DocumentWriter {
    collection: String,
    batch: DocumentBatch,
    max_docs: usize,
    max_bytes: usize,
}

impl DocumentWriter {
    /// A writer to `collection`, stored by the host as `<tenant>-<collection>`.
    pub fn new(collection: impl Into<String>) -> Self {
        DocumentWriter {
            collection: collection.into(),
            batch: DocumentBatch::with_capacity(DEFAULT_BATCH_DOCS),
            max_docs: DEFAULT_BATCH_DOCS,
            max_bytes: DEFAULT_BATCH_BYTES,
        }
    }

    /// Documents per host call (default 1000).
    pub fn batch_docs(mut self, docs: usize) -> Self {
        self.max_docs = docs.max(1);
        self
    }

    /// Adds a document (a JSON object as text) under `id`; writing the same id
    /// again overwrites it.
    pub fn push(&mut self, id: impl DocumentId, json: impl AsRef<str>) -> Result<(), Error> {
        self.batch.push(id, json.as_ref());
        self.flush_if_full()
    }

    /// Adds a document built with `serde_json`.
    pub fn push_value(&mut self, id: impl DocumentId, value: &serde_json::Value) -> Result<(), Error> {
        self.push_serialize(id, value)
    }

    /// Adds any `serde::Serialize` value that serialises to a JSON object,
    /// e.g. a `#[derive(Serialize)]` struct borrowing the row's fields: the
    /// cheapest way to build a document, with no `Value` tree in between.
    #[inline]
    pub fn push_serialize<T: serde::Serialize + ?Sized>(&mut self, id: impl DocumentId, doc: &T) -> Result<(), Error> {
        if let Err(e) = self.batch.push_serialize(id, doc) {
            return Err(Error::invalid_input(format!("a document for collection `{}` is not valid JSON: {e}", self.collection)));
        }
        self.flush_if_full()
    }

    #[inline]
    fn flush_if_full(&mut self) -> Result<(), Error> {
        if self.batch.len() >= self.max_docs || self.batch.bytes() >= self.max_bytes {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the buffered documents now.
    pub fn flush(&mut self) -> Result<(), Error> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let (text, ends) = self.batch.packed();
        let written = coredms::bulk_index_packed(&self.collection, text, ends);
        // Emptied either way: a failed write is the caller's to handle, and
        // must not be written again when the writer is dropped.
        self.batch.clear();
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
    /// escapes and multi-byte characters at both ends: the batch holds each
    /// id and what `serde_json::to_string` writes, in order.
    #[test]
    fn encodes_as_serde_json() {
        let mut batch = DocumentBatch::default();
        let mut expected = Vec::new();
        let alphabet = ["a", "\"", "é", "\\", "\n", "€", "z", "\u{1}"];
        for len in 0..80 {
            for (shift, _) in alphabet.iter().enumerate() {
                let text: String = (0..len).map(|i| alphabet[(i + shift) % alphabet.len()]).collect();
                let key = "k".repeat(len);
                let doc = Doc {
                    text: &text,
                    key_of_forty_bytes_so_written_in_one_copy: len as u32,
                    nested: BTreeMap::from([(key.as_str(), len as f64 / 7.0)]),
                };
                batch.push_serialize(format!("{len}/{shift}"), &doc).unwrap();
                expected.push((format!("{len}/{shift}"), serde_json::to_string(&doc).unwrap()));
            }
        }
        let held: Vec<(String, String)> = batch.iter().map(|(id, json)| (id.to_string(), json.to_string())).collect();
        assert_eq!(held, expected);
        assert_eq!(batch.len(), expected.len());
        assert_eq!(batch.bytes(), expected.iter().map(|(id, json)| id.len() + json.len()).sum::<usize>());
    }

    /// A document that cannot be written leaves no trace: the documents
    /// around it keep their ids and texts.
    #[test]
    fn refused_document_leaves_batch_as_it_was() {
        let ids = crate::RowIds::new("t", "0123456789abcdef");
        let mut batch = DocumentBatch::default();
        batch.push(ids.row(1), r#"{"a":1}"#);
        // A map with a key that is not a string: refused half-way through.
        let bad = BTreeMap::from([("ok", BTreeMap::from([(vec![1u8], 2)]))]);
        assert!(batch.push_serialize(ids.row(2), &bad).is_err());
        batch.push_serialize("plain", &BTreeMap::from([("b", 2)])).unwrap();
        let held: Vec<(&str, &str)> = batch.iter().collect();
        assert_eq!(held, [("t:0123456789abcdef:1", r#"{"a":1}"#), ("plain", r#"{"b":2}"#)]);
        // What the host receives (`bulk-index-packed`): the text, and where
        // each id and each JSON text ends.
        let (text, ends) = batch.packed();
        assert_eq!(std::str::from_utf8(text).unwrap(), r#"t:0123456789abcdef:1{"a":1}plain{"b":2}"#);
        assert_eq!(ends, [20, 27, 32, 39]);
        batch.clear();
        assert!(batch.is_empty() && batch.bytes() == 0 && batch.iter().next().is_none() && batch.packed() == (&[][..], &[][..]));
    }
}
