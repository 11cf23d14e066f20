use crate::input::{ChunkSource, Chunks};
use crate::{Error, tally};
use csv_core::{ReadRecordResult, Reader};
use std::collections::HashMap;

/// Reads a CSV file row by row without holding it in memory. The first row
/// names the columns.
pub struct CsvReader<S> {
    chunks: Chunks<S>,
    parser: Reader,
    file_name: String,
    headers: Vec<String>,
    columns: HashMap<String, usize>,
    fields: Vec<u8>,
    ends: Vec<usize>,
    field_count: usize,
    raw: Vec<u8>,
    number: u64,
}

impl<S: ChunkSource> CsvReader<S> {
    /// A reader over `source`; `name` is used in error messages.
    pub fn new(name: impl Into<String>, source: S) -> Result<Self, Error> {
        let mut reader = CsvReader {
            chunks: Chunks::new(source),
            parser: Reader::new(),
            file_name: name.into(),
            headers: Vec::new(),
            columns: HashMap::new(),
            fields: vec![0; 4096],
            ends: vec![0; 64],
            field_count: 0,
            raw: Vec::new(),
            number: 0,
        };
        if reader.read_record()? {
            reader.headers = (0..reader.field_count)
                .map(|i| reader.field_text(i).unwrap_or_default().trim_start_matches('\u{feff}').trim().to_string())
                .collect();
            reader.columns = reader.headers.iter().enumerate().map(|(i, h)| (h.clone(), i)).collect();
        }
        Ok(reader)
    }

    /// Column names from the header row.
    pub fn headers(&self) -> &[String] {
        &self.headers
    }

    /// The position of column `name`, resolved once so rows can be read by index.
    pub fn column(&self, name: &str) -> Result<usize, Error> {
        self.columns.get(name).copied().ok_or_else(|| {
            Error::InvalidInput(format!(
                "{}: the header row has no column `{name}` (columns: {})",
                self.file_name,
                self.headers.join(", ")
            ))
        })
    }

    /// The next data row, or `None` at the end of the file.
    pub fn next_row(&mut self) -> Result<Option<Row<'_>>, Error> {
        if !self.read_record()? {
            return Ok(None);
        }
        self.number += 1;
        tally::with(|t| t.records_in += 1);
        Ok(Some(Row {
            number: self.number,
            fields: &self.fields,
            ends: &self.ends[..self.field_count],
            raw: &self.raw,
            columns: &self.columns,
        }))
    }

    fn field_text(&self, i: usize) -> Option<&str> {
        field(&self.fields, &self.ends[..self.field_count], i)
    }

    /// Parses the next record into `fields`/`ends` and keeps its raw bytes.
    fn read_record(&mut self) -> Result<bool, Error> {
        self.raw.clear();
        let (mut out, mut end) = (0, 0);
        loop {
            // An empty input means end of file to csv-core: refill first.
            if self.chunks.pending().is_empty() && !self.chunks.eof {
                self.chunks.refill()?;
            }
            let input = &self.chunks.buf[self.chunks.pos..];
            let (result, nin, nout, nend) =
                self.parser.read_record(input, &mut self.fields[out..], &mut self.ends[end..]);
            self.raw.extend_from_slice(&input[..nin]);
            self.chunks.pos += nin;
            out += nout;
            end += nend;
            match result {
                // Refilled at the top of the loop; at the end of the file the
                // empty input makes the parser flush the last record.
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => {
                    let len = self.fields.len();
                    self.fields.resize(len * 2, 0);
                }
                ReadRecordResult::OutputEndsFull => {
                    let len = self.ends.len();
                    self.ends.resize(len * 2, 0);
                }
                ReadRecordResult::Record => {
                    self.field_count = end;
                    return Ok(true);
                }
                ReadRecordResult::End => return Ok(false),
            }
        }
    }
}

fn field<'r>(fields: &'r [u8], ends: &[usize], i: usize) -> Option<&'r str> {
    let end = *ends.get(i)?;
    let start = if i == 0 { 0 } else { ends[i - 1] };
    std::str::from_utf8(&fields[start..end]).ok()
}

/// One data row of a CSV file.
pub struct Row<'r> {
    number: u64,
    fields: &'r [u8],
    ends: &'r [usize],
    raw: &'r [u8],
    columns: &'r HashMap<String, usize>,
}

impl<'r> Row<'r> {
    /// 1 for the first row after the header.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// How many fields the row has.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Field `i`, or `None` when the row is shorter or the field is not UTF-8.
    pub fn field(&self, i: usize) -> Option<&'r str> {
        field(self.fields, self.ends, i)
    }

    /// The field under column `name`.
    pub fn get(&self, name: &str) -> Option<&'r str> {
        self.columns.get(name).and_then(|&i| self.field(i))
    }

    /// The row as it was in the file, for dead-lettering.
    pub fn raw(&self) -> &'r [u8] {
        self.raw.strip_suffix(b"\n").map(|r| r.strip_suffix(b"\r").unwrap_or(r)).unwrap_or(self.raw)
    }
}
