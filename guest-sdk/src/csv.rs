//! CSV files, record by record: a header row names the columns, rows give
//! their fields by position or name, and a record cut by a read is joined
//! again before it is handed out.

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
    /// Fields copied out of quoted records by csv-core.
    fields: Vec<u8>,
    /// Where each field of the current record ends in its bytes.
    ends: Vec<usize>,
    field_count: usize,
    /// The current record's fields: `fields`, or for a record without quotes
    /// this part of `chunks.buf`, the fields with the commas between them.
    span: Option<(usize, usize)>,
    /// Where the current record starts in `chunks.buf` (it ends at `chunks.pos`).
    raw_start: usize,
    /// Whether the current record's bytes are valid UTF-8 (then so is each field).
    utf8: bool,
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
            span: None,
            raw_start: 0,
            utf8: false,
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
            Error::InvalidInput(format!("{}: the header row has no column `{name}` (columns: {})", self.file_name, self.headers.join(", ")))
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
            fields: self.fields(),
            ends: &self.ends[..self.field_count],
            gap: self.gap(),
            utf8: self.utf8,
            raw: &self.chunks.buf[self.raw_start..self.chunks.pos],
            columns: &self.columns,
        }))
    }

    fn field_text(&self, i: usize) -> Option<&str> {
        field(self.fields(), &self.ends[..self.field_count], self.gap(), self.utf8, i)
    }

    fn fields(&self) -> &[u8] {
        match self.span {
            Some((start, end)) => &self.chunks.buf[start..end],
            None => &self.fields,
        }
    }

    /// Bytes between one field and the next: the comma of a record without
    /// quotes, none in `fields`.
    fn gap(&self) -> usize {
        usize::from(self.span.is_some())
    }

    /// Parses the next record into `ends` (and `fields` or `span`); its raw
    /// bytes stay in the chunk buffer (kept across refills) from `raw_start`
    /// to `chunks.pos`.
    fn read_record(&mut self) -> Result<bool, Error> {
        self.raw_start = self.chunks.pos;
        if self.read_plain_record() || self.read_quoted_record() {
            return Ok(true);
        }
        self.span = None;
        let (mut out, mut end) = (0, 0);
        loop {
            // An empty input means end of file to csv-core: refill first.
            if self.chunks.pending().is_empty() && !self.chunks.eof && self.chunks.refill_keeping(self.raw_start)? {
                self.raw_start = 0;
            }
            let input = &self.chunks.buf[self.chunks.pos..];
            let (result, nin, nout, nend) = self.parser.read_record(input, &mut self.fields[out..], &mut self.ends[end..]);
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
                    self.utf8 = is_utf8(&self.chunks.buf[self.raw_start..self.chunks.pos]);
                    return Ok(true);
                }
                ReadRecordResult::End => return Ok(false),
            }
        }
    }
}

impl<S> CsvReader<S> {
    /// The common record: no quotes, and its line end already in the buffer.
    /// Found here eight bytes per step (csv-core goes byte by byte through a
    /// state machine, which in the sandbox also meters every step); anything
    /// else is left to csv-core (false). Blank lines before it are skipped, as
    /// csv-core skips them; at the end `chunks.pos` is past its `\r` or `\n`,
    /// where csv-core would be. Also checks that the record is UTF-8.
    fn read_plain_record(&mut self) -> bool {
        let buf = &self.chunks.buf;
        let start = skip_line_ends(buf, self.chunks.pos);
        let mut count = 0;
        let mut at = start;
        // The bytes read, OR-ed: no high bit means all ASCII.
        let mut high = 0;
        let stop = loop {
            let Some(word) = buf.get(at..at + 8) else {
                high |= HIGH;
                // The last few bytes of the buffer, one at a time.
                match buf[at..].iter().position(|b| matches!(b, b',' | b'\n' | b'\r' | b'"')) {
                    Some(i) if buf[at + i] == b',' => {
                        push_end(&mut self.ends, &mut count, at + i - start);
                        at += i + 1;
                        continue;
                    }
                    Some(i) => break at + i,
                    None => return false,
                }
            };
            let word = u64::from_le_bytes(word.try_into().unwrap());
            high |= word;
            let mut commas = bytes_equal(word, b',');
            let stops = bytes_equal(word, b'\n') | bytes_equal(word, b'\r') | bytes_equal(word, b'"');
            if stops != 0 {
                // Only the commas before the first stop belong to this record.
                commas &= (stops & stops.wrapping_neg()) - 1;
            }
            while commas != 0 {
                push_end(&mut self.ends, &mut count, at + (commas.trailing_zeros() / 8) as usize - start);
                commas &= commas - 1;
            }
            if stops != 0 {
                break at + (stops.trailing_zeros() / 8) as usize;
            }
            at += 8;
        };
        if buf[stop] == b'"' {
            return false;
        }
        push_end(&mut self.ends, &mut count, stop - start);
        // Bytes after the record in its last word may be what is not ASCII.
        self.utf8 = high & HIGH == 0 || std::str::from_utf8(&buf[start..stop]).is_ok();
        self.field_count = count;
        self.span = Some((start, stop));
        self.chunks.pos = stop + 1;
        true
    }
}

impl<S> CsvReader<S> {
    /// A record with quotes (or any record) whose line end is already in the
    /// buffer, read as csv-core reads it: a quote that opens a field starts
    /// a quoted part, in which `""` is a quote and commas and line ends are
    /// text; after the closing quote, and in a field that does not start
    /// with one, a quote is text. The fields go to `fields`, copied eight
    /// bytes per step between the bytes that matter (csv-core takes every
    /// byte through its state machine, which the sandbox meters). False, and
    /// nothing consumed, when the record runs past the buffer: csv-core reads
    /// it across the refill or flushes it at the end of the file.
    fn read_quoted_record(&mut self) -> bool {
        let buf = &self.chunks.buf;
        let start = skip_line_ends(buf, self.chunks.pos);
        let mut at = start;
        let (mut out, mut count) = (0, 0);
        let fields = &mut self.fields;
        let stop = loop {
            // A field starts at `at`.
            if buf.get(at) == Some(&b'"') {
                at += 1;
                // Quoted text up to the closing quote; `""` goes on.
                loop {
                    let Some(quote) = copy_until(buf, &mut at, fields, &mut out, [b'"']) else {
                        return false;
                    };
                    at = quote + 1;
                    match buf.get(at) {
                        Some(b'"') => {
                            push_byte(fields, &mut out, b'"');
                            at += 1;
                        }
                        Some(_) => break,
                        None => return false,
                    }
                }
            }
            // Unquoted text (or what follows a closing quote) up to a comma or a line end.
            let Some(end) = copy_until(buf, &mut at, fields, &mut out, [b',', b'\n', b'\r']) else {
                return false;
            };
            push_end(&mut self.ends, &mut count, out);
            if buf[end] != b',' {
                break end;
            }
            at = end + 1;
        };
        self.utf8 = is_utf8(&buf[start..stop]);
        self.field_count = count;
        self.span = None;
        self.chunks.pos = stop + 1;
        true
    }
}

/// Copies `buf` from `*at` up to the first of the `stops` bytes (found eight
/// bytes per step) to `out[*len..]`, growing `out` as needed, and returns
/// where that byte is, or `None` when the buffer ends first. `*at` moves past
/// the bytes checked.
#[inline(always)]
fn copy_until<const N: usize>(buf: &[u8], at: &mut usize, out: &mut Vec<u8>, len: &mut usize, stops: [u8; N]) -> Option<usize> {
    while let Some(word) = buf.get(*at..*at + 8) {
        if *len + 8 > out.len() {
            out.resize(out.len() * 2 + 8, 0);
        }
        // The whole word is stored; only the bytes before a stop are counted.
        out[*len..*len + 8].copy_from_slice(word);
        let word_bits = u64::from_le_bytes(word.try_into().unwrap());
        let marks = stops.iter().fold(0, |marks, &stop| marks | bytes_equal(word_bits, stop));
        if marks != 0 {
            let n = (marks.trailing_zeros() / 8) as usize;
            *len += n;
            *at += n;
            return Some(*at);
        }
        *len += 8;
        *at += 8;
    }
    while let Some(&byte) = buf.get(*at) {
        if stops.contains(&byte) {
            return Some(*at);
        }
        push_byte(out, len, byte);
        *at += 1;
    }
    None
}

#[inline(always)]
fn push_byte(out: &mut Vec<u8>, len: &mut usize, byte: u8) {
    if *len == out.len() {
        out.resize(out.len() * 2 + 8, 0);
    }
    out[*len] = byte;
    *len += 1;
}

/// The first position from `at` that is not a line end (blank lines are
/// skipped, as csv-core skips them).
#[inline(always)]
fn skip_line_ends(buf: &[u8], mut at: usize) -> usize {
    while at < buf.len() && matches!(buf[at], b'\n' | b'\r') {
        at += 1;
    }
    at
}

/// Records that field number `count` ends at `end`.
#[inline(always)]
fn push_end(ends: &mut Vec<usize>, count: &mut usize, end: usize) {
    if *count == ends.len() {
        ends.resize(ends.len() * 2, 0);
    }
    ends[*count] = end;
    *count += 1;
}

const HIGH: u64 = 0x8080_8080_8080_8080;

/// 0x80 in each byte of `word` that equals `byte`, 0 in the others.
#[inline(always)]
fn bytes_equal(word: u64, byte: u8) -> u64 {
    const LOW: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let t = word ^ (0x0101_0101_0101_0101 * byte as u64);
    // Bit 7 of a byte of `(t & LOW) + LOW` is set when its low seven bits are
    // not all zero (no carry crosses into the next byte); `| t` adds bit 7.
    !(((t & LOW) + LOW) | t) & HIGH
}

/// Whether `bytes` are UTF-8, with an ASCII check eight bytes at a time first
/// (most rows are ASCII; on wasm32 `str::is_ascii` goes four bytes at a time).
fn is_utf8(bytes: &[u8]) -> bool {
    let (words, rest) = bytes.as_chunks::<8>();
    let high = words.iter().fold(0, |high, word| high | u64::from_ne_bytes(*word)) & HIGH;
    (high == 0 && rest.is_ascii()) || std::str::from_utf8(bytes).is_ok()
}

/// Field `i` as text; fields are `gap` bytes apart. `utf8` says the whole
/// record was valid UTF-8: then every field is too, since fields are the
/// record's bytes cut at ASCII delimiters and quotes, which are always
/// character boundaries.
#[inline(always)]
fn field<'r>(fields: &'r [u8], ends: &[usize], gap: usize, utf8: bool, i: usize) -> Option<&'r str> {
    let end = *ends.get(i)?;
    let start = if i == 0 { 0 } else { ends[i - 1] + gap };
    let bytes = &fields[start..end];
    if utf8 {
        // SAFETY: checked above: a field of a UTF-8 record is UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        std::str::from_utf8(bytes).ok()
    }
}

/// One data row of a CSV file.
pub struct Row<'r> {
    number: u64,
    fields: &'r [u8],
    ends: &'r [usize],
    gap: usize,
    utf8: bool,
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

    /// Whether the row has no field.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Field `i`, or `None` when the row is shorter or the field is not UTF-8.
    #[inline(always)]
    pub fn field(&self, i: usize) -> Option<&'r str> {
        field(self.fields, self.ends, self.gap, self.utf8, i)
    }

    /// The field under column `name`.
    pub fn get(&self, name: &str) -> Option<&'r str> {
        self.columns.get(name).and_then(|&i| self.field(i))
    }

    /// The row as it was in the file, for dead-lettering, without line ends
    /// (with `\r\n` the parser ends a row at `\r` and skips `\n` before the next).
    pub fn raw(&self) -> &'r [u8] {
        let newline = |b: &u8| *b == b'\r' || *b == b'\n';
        let start = self.raw.iter().position(|b| !newline(b)).unwrap_or(self.raw.len());
        let end = self.raw.iter().rposition(|b| !newline(b)).map_or(start, |i| i + 1);
        &self.raw[start..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out the input a few bytes at a time, so records straddle refills.
    struct Trickle<'a>(&'a [u8], usize);

    impl ChunkSource for Trickle<'_> {
        fn next_chunk(&mut self, _: u32) -> Result<Vec<u8>, Error> {
            let n = self.1.min(self.0.len());
            let (chunk, rest) = self.0.split_at(n);
            self.0 = rest;
            Ok(chunk.to_vec())
        }
    }

    fn rows(input: &[u8], chunk: usize) -> Vec<(Vec<Option<String>>, Vec<u8>)> {
        let mut reader = CsvReader::new("test.csv", Trickle(input, chunk)).unwrap();
        let mut out = Vec::new();
        while let Some(row) = reader.next_row().unwrap() {
            let fields = (0..row.len()).map(|i| row.field(i).map(str::to_string)).collect();
            out.push((fields, row.raw().to_vec()));
        }
        out
    }

    #[test]
    fn fields_and_raw_rows_survive_any_chunking() {
        let input = "id,name,note\n1,\"Smith, J\",plain\r\n2,Åsa,\"say \"\"hi\"\"\"\n3,,last".as_bytes();
        let expected = rows(input, input.len());
        assert_eq!(expected.len(), 3);
        assert_eq!(expected[0].0, [Some("1".into()), Some("Smith, J".into()), Some("plain".into())]);
        assert_eq!(expected[0].1, b"1,\"Smith, J\",plain");
        assert_eq!(expected[1].0, [Some("2".into()), Some("Åsa".into()), Some("say \"hi\"".into())]);
        assert_eq!(expected[2].0, [Some("3".into()), Some(String::new()), Some("last".into())]);
        assert_eq!(expected[2].1, b"3,,last");
        for chunk in 1..input.len() {
            assert_eq!(rows(input, chunk), expected, "read {chunk} bytes at a time");
        }
    }

    /// The records csv-core alone reads from `input`, field by field.
    fn csv_core_records(input: &[u8]) -> Vec<Vec<Option<String>>> {
        let (mut parser, mut records, mut at) = (Reader::new(), Vec::new(), 0);
        let (mut fields, mut ends) = (vec![0; 1 << 16], vec![0; 1 << 10]);
        // A record that ends only at the end of the input takes two calls.
        let (mut out, mut end) = (0, 0);
        loop {
            let (result, nin, nout, nend) = parser.read_record(&input[at..], &mut fields[out..], &mut ends[end..]);
            (at, out, end) = (at + nin, out + nout, end + nend);
            match result {
                ReadRecordResult::Record => {
                    records.push(
                        (0..end)
                            .map(|i| {
                                let start = if i == 0 { 0 } else { ends[i - 1] };
                                String::from_utf8(fields[start..ends[i]].to_vec()).ok()
                            })
                            .collect(),
                    );
                    (out, end) = (0, 0);
                }
                ReadRecordResult::End => return records,
                ReadRecordResult::InputEmpty => {}
                other => panic!("{other:?}"),
            }
        }
    }

    /// Generated files mixing what the fast path takes (plain records) with
    /// what it leaves to csv-core (quotes, records cut by a refill, the last
    /// record without a line end): the same fields as csv-core alone.
    #[test]
    fn records_are_read_as_csv_core_reads_them() {
        let pieces: [&[u8]; 15] = [
            b"a",
            b"bcdefghij",
            b",",
            b",",
            b"\n",
            b"\r\n",
            b"\r",
            b"\"q\"",
            b"\"x,\"\"y\"",
            b"\"l\r\n\"",
            b"\xc3\xa9",
            b"\xff",
            b" ",
            b"1234567",
            b"z\"z",
        ];
        let mut next = crate::seeded(0x9e37_79b9_7f4a_7c15);
        for case in 0..400 {
            let len = (next() % 60) as usize;
            let input: Vec<u8> = (0..len).flat_map(|_| pieces[(next() % pieces.len() as u64) as usize].to_vec()).collect();
            let mut expected = csv_core_records(&input);
            // The first record is the header row, which CsvReader keeps apart.
            if expected.is_empty() {
                continue;
            }
            expected.remove(0);
            for chunk in [1, 3, 8, 13, 64, input.len().max(1)] {
                let got: Vec<_> = rows(&input, chunk).into_iter().map(|(fields, _)| fields).collect();
                assert_eq!(got, expected, "case {case}, {chunk} bytes at a time: {:?}", String::from_utf8_lossy(&input));
            }
        }
    }

    #[test]
    fn bytes_equal_marks_exactly_the_equal_bytes() {
        for byte in [b',', b'\n', 0, 0x80, 0xff] {
            for other in 0..=255u8 {
                for at in 0..8 {
                    let mut word = [byte; 8];
                    word[at] = other;
                    let mask = bytes_equal(u64::from_le_bytes(word), byte).to_le_bytes();
                    for (i, m) in mask.iter().enumerate() {
                        let equal = if i == at { other == byte } else { true };
                        assert_eq!(*m, if equal { 0x80 } else { 0 }, "{byte:#x} against {other:#x} at {at}, byte {i}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_field_that_is_not_utf8_is_none_and_the_others_are_read() {
        let input = b"a,b,c\nok,\xff\xfe,\xc3\xa9\n\xc3,\xa9,x\n";
        let rows = rows(input, 4);
        assert_eq!(rows[0].0, [Some("ok".into()), None, Some("é".into())]);
        // Valid UTF-8 only across the comma: each field alone is not.
        assert_eq!(rows[1].0, [None, None, Some("x".into())]);
        assert_eq!(rows[1].1, b"\xc3,\xa9,x");
    }

    #[test]
    fn utf8_check_matches_std() {
        let long = "0123456789abcdef".repeat(3);
        for text in [&b""[..], b"plain ascii", long.as_bytes(), "ascii then é".as_bytes(), b"\x80 high", b"01234567\xc3"] {
            assert_eq!(is_utf8(text), std::str::from_utf8(text).is_ok(), "{text:?}");
        }
    }
}
