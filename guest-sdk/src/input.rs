//! The staged file a batch pipeline ingests, read from the host in chunks.

use crate::__private::bindings::mysimbdp::pipeline::staging;
use crate::{CsvReader, Error, LineReader};

/// How much one host call reads; large enough that the call overhead vanishes.
pub(crate) const CHUNK_BYTES: u32 = 1 << 20;

/// The staged file being ingested. Read it in chunks with [`InputFile::read`],
/// or row by row with [`InputFile::csv`] and [`InputFile::lines`].
pub struct InputFile<'a> {
    handle: &'a staging::InputFile,
    name: String,
    size: u64,
    checksum: String,
}

impl<'a> InputFile<'a> {
    pub(crate) fn new(handle: &'a staging::InputFile) -> Self {
        InputFile { name: handle.name(), size: handle.size(), checksum: handle.checksum(), handle }
    }

    /// The file name as staged.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its size in bytes, as the host checked it (nothing past it is read).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// SHA-256 of the file, lowercase hex.
    pub fn checksum(&self) -> &str {
        &self.checksum
    }

    /// The next chunk of at most `max_bytes`; empty at the end of the file.
    pub fn read(&self, max_bytes: u32) -> Result<Vec<u8>, Error> {
        self.handle.read(max_bytes).map_err(Error::from)
    }

    /// A streaming CSV reader; the first row holds the column names.
    pub fn csv(&self) -> Result<CsvReader<&Self>, Error> {
        CsvReader::new(self.name.clone(), self)
    }

    /// A streaming reader of text lines (NDJSON and the like); empty lines are skipped.
    pub fn lines(&self) -> LineReader<&Self> {
        LineReader::new(self)
    }
}

/// Where the readers get their bytes: the staged file inside a pipeline, or
/// any `std::io::Read` (see [`ReadSource`]) to run the same code natively.
pub trait ChunkSource {
    /// The next chunk of at most `max_bytes`; empty at the end.
    fn next_chunk(&mut self, max_bytes: u32) -> Result<Vec<u8>, Error>;
}

impl ChunkSource for &InputFile<'_> {
    fn next_chunk(&mut self, max_bytes: u32) -> Result<Vec<u8>, Error> {
        self.read(max_bytes)
    }
}

/// Adapts a `std::io::Read` (a file, a byte slice) to the readers, e.g. to
/// test or benchmark a transform natively.
pub struct ReadSource<R>(pub R);

impl<R: std::io::Read> ChunkSource for ReadSource<R> {
    fn next_chunk(&mut self, max_bytes: u32) -> Result<Vec<u8>, Error> {
        let mut chunk = vec![0; max_bytes as usize];
        let mut filled = 0;
        while filled < chunk.len() {
            match self.0.read(&mut chunk[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Unavailable(format!("read: {e}"))),
            }
        }
        chunk.truncate(filled);
        Ok(chunk)
    }
}

/// Refills a buffer from a source one chunk at a time.
pub(crate) struct Chunks<S> {
    source: S,
    pub buf: Vec<u8>,
    pub pos: usize,
    pub eof: bool,
}

impl<S: ChunkSource> Chunks<S> {
    pub fn new(source: S) -> Self {
        Chunks { source, buf: Vec::new(), pos: 0, eof: false }
    }

    /// Unread bytes.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Replaces the consumed part of the buffer with the next chunk; keeps what
    /// is unread. Returns false at the end of the file.
    pub fn refill(&mut self) -> Result<bool, Error> {
        self.refill_keeping(self.pos)
    }

    /// As [`Chunks::refill`], but keeps the buffer from `keep` (at most `pos`)
    /// on, e.g. the start of a record being parsed, so that the record stays
    /// in one piece: positions shift down by `keep`.
    pub fn refill_keeping(&mut self, keep: usize) -> Result<bool, Error> {
        if self.eof {
            return Ok(false);
        }
        let chunk = self.source.next_chunk(CHUNK_BYTES)?;
        if chunk.is_empty() {
            self.eof = true;
            return Ok(false);
        }
        if keep == self.buf.len() {
            self.buf = chunk;
        } else {
            self.buf.drain(..keep);
            self.buf.extend_from_slice(&chunk);
        }
        self.pos -= keep;
        Ok(true)
    }
}
