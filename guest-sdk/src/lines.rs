//! Text files line by line (NDJSON, logs).

use crate::input::{ChunkSource, Chunks};
use crate::{Error, tally};

/// Reads a text file line by line (NDJSON, logs). Empty lines are skipped but
/// still counted in line numbers.
pub struct LineReader<S> {
    chunks: Chunks<S>,
    number: u64,
}

impl<S: ChunkSource> LineReader<S> {
    /// A reader over `source`.
    pub fn new(source: S) -> Self {
        LineReader { chunks: Chunks::new(source), number: 0 }
    }

    /// The next non-empty line, or `None` at the end of the file.
    pub fn next_line(&mut self) -> Result<Option<Line<'_>>, Error> {
        loop {
            let (start, end, next) = match self.chunks.pending().iter().position(|&b| b == b'\n') {
                Some(i) => (self.chunks.pos, self.chunks.pos + i, self.chunks.pos + i + 1),
                None if self.chunks.refill()? => continue,
                None if self.chunks.pending().is_empty() => return Ok(None),
                None => (self.chunks.pos, self.chunks.buf.len(), self.chunks.buf.len()),
            };
            self.chunks.pos = next;
            self.number += 1;
            let bytes = &self.chunks.buf[start..end];
            let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
            if bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            tally::with(|t| t.records_in += 1);
            // Re-borrow: the loop above needed `self.chunks` mutably.
            let bytes = &self.chunks.buf[start..start + bytes.len()];
            return Ok(Some(Line { number: self.number, bytes }));
        }
    }
}

/// One line of a text file.
pub struct Line<'r> {
    number: u64,
    bytes: &'r [u8],
}

impl<'r> Line<'r> {
    /// 1 for the first line of the file.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// The line's bytes, without its line end.
    pub fn raw(&self) -> &'r [u8] {
        self.bytes
    }

    /// The line as text; an error naming the line if it is not UTF-8.
    pub fn text(&self) -> Result<&'r str, Error> {
        std::str::from_utf8(self.bytes).map_err(|e| Error::InvalidInput(format!("line {} is not UTF-8: {e}", self.number)))
    }

    /// Parses the line as one JSON value.
    pub fn json(&self) -> Result<serde_json::Value, Error> {
        Ok(serde_json::from_slice(self.bytes)?)
    }
}
