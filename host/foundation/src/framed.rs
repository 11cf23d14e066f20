//! Framed records: how the host's own append-only files (the manifests, the
//! embedded message log and its consumer offsets) hold one record after the
//! other, so that a record cut by a crash or a full disk is told apart from
//! a complete one.
//!
//! A record is one line: `#`, its payload's length and CRC-32 (ISO-HDLC, as
//! zlib's) in 8 hex digits each, the payload, and a line end:
//!
//! ```text
//! #0000002b 9a3f1c07 {"id":"…","state":"claimed","file":"a.csv"}
//! ```
//!
//! Reading takes records while they are whole and their checksum holds. What
//! follows the last good record is a *torn tail* if it is a record cut short
//! (its header, payload or line end missing) and no good record comes after
//! it: a write cut by a crash or a full disk, never acknowledged, cut off
//! before anything is appended. Anything else is *corruption*: a record
//! whose frame is whole but whose checksum fails (a write that was
//! acknowledged and then damaged, last record or not), or damage with good
//! records after it. Corruption is an error that names the file and the
//! offset, never cut off or skipped in silence.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Bytes before the payload: `#`, 8 hex digits, a space, 8 hex digits, a space.
pub const HEADER: usize = 19;
/// The largest payload a reader accepts (a bigger length is a broken header).
pub const MAX_RECORD_BYTES: usize = 64 << 20;

/// `payload` as one framed record.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(HEADER + payload.len() + 1);
    write!(record, "#{:08x} {:08x} ", payload.len(), crc32(payload)).expect("writing to a Vec");
    record.extend_from_slice(payload);
    record.push(b'\n');
    record
}

/// Whether `bytes` start like framed records (an empty file is framed too).
pub fn is_framed(bytes: &[u8]) -> bool {
    bytes.first().is_none_or(|b| *b == b'#')
}

/// The records of a file, as read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Records {
    /// Each whole record's payload, in order.
    pub payloads: Vec<Vec<u8>>,
    /// Where the last whole record ends: the length the file should have.
    pub end: u64,
    /// Bytes after `end` that are no record (a torn tail), if any.
    pub torn: u64,
}

/// A record whose checksum fails although its frame is whole, or whose frame
/// does not hold with good records after it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{file}: the record at byte {offset} is damaged ({reason}), not cut short by a crash; the file is corrupt: restore it from a backup, or move it aside to start it anew"
)]
pub struct Corrupt {
    pub file: PathBuf,
    pub offset: u64,
    pub reason: String,
}

/// The payload length a record header (its first [`HEADER`] bytes) states,
/// if it is a header.
pub fn payload_len(header: &[u8]) -> Option<usize> {
    let header = header.get(..HEADER)?;
    let hex = |field: &[u8]| std::str::from_utf8(field).ok().and_then(|t| u32::from_str_radix(t, 16).ok());
    if header[0] != b'#' || header[9] != b' ' || header[18] != b' ' {
        return None;
    }
    hex(&header[10..18])?;
    let len = hex(&header[1..9])? as usize;
    (len <= MAX_RECORD_BYTES).then_some(len)
}

/// The payload of `record` (one whole framed record), if its frame and
/// checksum hold.
pub fn payload(record: &[u8]) -> Option<&[u8]> {
    let (range, end) = record_at(record, 0).ok()?;
    (end == record.len()).then(|| &record[range])
}

/// Why the bytes at an offset are no sound record.
#[derive(Debug)]
enum Unsound {
    /// Cut short (or no record at all): what a write cut off leaves.
    Cut(String),
    /// A whole frame whose checksum fails: damaged after it was written.
    Damaged(String),
}

impl From<&str> for Unsound {
    fn from(reason: &str) -> Unsound {
        Unsound::Cut(reason.to_string())
    }
}

/// The record at `at`: its payload's range and where it ends, or why it is
/// not a whole, sound record.
fn record_at(bytes: &[u8], at: usize) -> Result<(std::ops::Range<usize>, usize), Unsound> {
    let header = bytes.get(at..at + HEADER).ok_or("the header is cut")?;
    let hex = |field: &[u8]| std::str::from_utf8(field).ok().and_then(|t| u32::from_str_radix(t, 16).ok());
    if header[0] != b'#' || header[9] != b' ' || header[18] != b' ' {
        return Err("no record header".into());
    }
    let (Some(len), Some(crc)) = (hex(&header[1..9]), hex(&header[10..18])) else { return Err("the header is not hex".into()) };
    let len = len as usize;
    if len > MAX_RECORD_BYTES {
        return Err(Unsound::Cut(format!("a length of {len} bytes")));
    }
    let start = at + HEADER;
    let payload = bytes.get(start..start + len).ok_or("the payload is cut")?;
    if bytes.get(start + len) != Some(&b'\n') {
        return Err("the line end is missing".into());
    }
    if crc32(payload) != crc {
        return Err(Unsound::Damaged("the checksum does not match".into()));
    }
    Ok((start..start + len, start + len + 1))
}

/// Reads the records of `bytes` (the contents of `file`, for errors).
pub fn read(file: &Path, bytes: &[u8]) -> Result<Records, Corrupt> {
    let mut records = Records::default();
    let mut at = 0;
    while at < bytes.len() {
        match record_at(bytes, at) {
            Ok((payload, next)) => {
                records.payloads.push(bytes[payload].to_vec());
                at = next;
            }
            Err(Unsound::Damaged(reason)) => return Err(Corrupt { file: file.to_path_buf(), offset: at as u64, reason }),
            Err(Unsound::Cut(reason)) => {
                // A good record further on means this one is damaged, not torn.
                let later =
                    (at + 1..bytes.len()).filter(|&i| bytes[i] == b'#' && bytes[i - 1] == b'\n').find(|&i| record_at(bytes, i).is_ok());
                if later.is_some() {
                    return Err(Corrupt { file: file.to_path_buf(), offset: at as u64, reason });
                }
                break;
            }
        }
    }
    records.end = at as u64;
    records.torn = (bytes.len() - at) as u64;
    Ok(records)
}

/// Reads `path` (missing: no records), cuts a torn tail off it (logged, and
/// synced), and returns the whole records.
pub fn recover(path: &Path) -> io::Result<Records> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Records::default()),
        Err(error) => return Err(error),
    };
    let records = read(path, &bytes).map_err(|corrupt| io::Error::new(io::ErrorKind::InvalidData, corrupt))?;
    if records.torn > 0 {
        tracing::warn!(
            file = %path.display(),
            at = records.end,
            bytes = records.torn,
            "A torn record at the end of the file (a write cut by a crash or a full disk) was cut off."
        );
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        file.set_len(records.end)?;
        file.sync_all()?;
    }
    Ok(records)
}

/// Writes `payloads` as framed records to a new file at `path`, atomically
/// (a temporary file, synced, renamed, and the directory synced).
pub fn rewrite<'p>(path: &Path, payloads: impl IntoIterator<Item = &'p [u8]>) -> io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    let temporary = path.with_file_name(name);
    {
        let mut out = File::create(&temporary)?;
        let mut text = Vec::new();
        for payload in payloads {
            text.extend_from_slice(&frame(payload));
        }
        out.write_all(&text)?;
        out.sync_all()?;
    }
    std::fs::rename(&temporary, path)?;
    sync_dir(path)
}

/// Tries a write in `dir` (a small file, synced, removed): whether the host
/// can write there now (after a write failed, say, with a full disk).
pub fn probe_dir(dir: &Path) -> io::Result<()> {
    let path = dir.join(".mysimbdp-write-probe");
    let written = File::create(&path).and_then(|mut file| {
        file.write_all(&[0u8; 64 * 1024])?;
        file.sync_all()
    });
    let _ = std::fs::remove_file(&path);
    written
}

/// Syncs the directory of `path`, so a file created or renamed there stays.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

/// CRC-32 (ISO-HDLC, the polynomial of zlib and Ethernet), by crc32fast:
/// the checksum every record written since framing began carries.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(payloads: &[&str]) -> Vec<u8> {
        payloads.iter().flat_map(|p| frame(p.as_bytes())).collect()
    }

    fn payloads(records: &Records) -> Vec<String> {
        records.payloads.iter().map(|p| String::from_utf8(p.clone()).unwrap()).collect()
    }

    #[test]
    fn crc32_is_zlibs() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926, "the standard check value");
        assert_eq!(crc32(b"The quick brown fox jumps over the lazy dog"), 0x414F_A339);
    }

    #[test]
    fn a_record_is_one_line_with_its_length_and_checksum() {
        let record = frame(b"{\"a\":1}");
        assert_eq!(String::from_utf8(record.clone()).unwrap(), format!("#00000007 {:08x} {{\"a\":1}}\n", crc32(b"{\"a\":1}")));
        let read = read(Path::new("f"), &record).unwrap();
        assert_eq!((payloads(&read), read.end, read.torn), (vec!["{\"a\":1}".to_string()], record.len() as u64, 0));
        assert!(is_framed(&record) && is_framed(b"") && !is_framed(b"{\"legacy\":true}\n"));
    }

    #[test]
    fn a_cut_at_every_byte_of_the_last_record_keeps_exactly_the_whole_ones() {
        let whole = ["{\"id\":1}", "{\"id\":2,\"text\":\"é\\n with a line end inside the JSON\"}", "{\"id\":3}"];
        let bytes = records(&whole);
        let last_start = bytes.len() - frame(whole[2].as_bytes()).len();
        for cut in last_start..=bytes.len() {
            let read = read(Path::new("f"), &bytes[..cut]).unwrap();
            let kept = if cut == bytes.len() { 3 } else { 2 };
            assert_eq!(payloads(&read), whole[..kept], "cut at byte {cut}");
            assert_eq!(read.end, if kept == 3 { bytes.len() } else { last_start } as u64, "cut at byte {cut}");
            assert_eq!(read.torn, (cut - read.end as usize) as u64);
        }
    }

    #[test]
    fn damage_followed_by_records_is_corruption_and_names_the_place() {
        let bytes = records(&["{\"id\":1}", "{\"id\":2}", "{\"id\":3}"]);
        let second = frame(b"{\"id\":1}").len();
        for (what, damaged) in [
            ("a flipped payload byte", {
                let mut b = bytes.clone();
                b[second + HEADER + 3] ^= 0x20;
                b
            }),
            ("a flipped length", {
                let mut b = bytes.clone();
                b[second + 8] = b'9';
                b
            }),
            ("a lost line end", {
                let mut b = bytes.clone();
                b.remove(second - 1);
                b
            }),
        ] {
            let error = read(Path::new("/var/m.jsonl"), &damaged).unwrap_err();
            assert!(error.offset <= second as u64, "{what}: at {}", error.offset);
            assert!(error.to_string().starts_with("/var/m.jsonl: the record at byte"), "{what}: {error}");
        }
    }

    #[test]
    fn a_whole_last_record_with_a_bad_checksum_is_corruption_a_cut_one_a_torn_tail() {
        let bytes = records(&["{\"id\":1}", "{\"id\":2}"]);
        let last = frame(b"{\"id\":1}").len();
        // A flipped payload byte of the last record: its frame is whole, so
        // it was written whole and damaged afterwards, not torn.
        let mut flipped = bytes.clone();
        flipped[bytes.len() - 3] ^= 0x20;
        let error = read(Path::new("/var/offsets"), &flipped).unwrap_err();
        assert_eq!((error.offset, error.reason.as_str()), (last as u64, "the checksum does not match"));
        // The only record of a file (an offsets snapshot), damaged: an error too, never no records.
        let only = frame(b"{\"group\":{\"t-0\":42}}");
        let mut damaged = only.clone();
        damaged[HEADER + 2] ^= 0x01;
        assert!(read(Path::new("/var/offsets"), &damaged).is_err(), "a damaged snapshot is not an empty file");
        // Cut anywhere before its line end, the same record is a torn tail.
        for cut in last..bytes.len() {
            let read = read(Path::new("f"), &flipped[..cut]).unwrap();
            assert_eq!((read.payloads.len(), read.end), (1, last as u64), "cut at byte {cut}");
        }
    }

    #[test]
    fn recovery_cuts_the_torn_tail_off_the_file_and_appending_goes_on_from_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut bytes = records(&["one", "two"]);
        bytes.extend_from_slice(&frame(b"three")[..7]);
        std::fs::write(&path, &bytes).unwrap();
        let recovered = recover(&path).unwrap();
        assert_eq!((payloads(&recovered), recovered.torn), (vec!["one".to_string(), "two".to_string()], 7));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), recovered.end, "cut off");
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(&frame(b"four")).unwrap();
        assert_eq!(payloads(&recover(&path).unwrap()), ["one", "two", "four"]);
        assert_eq!(recover(&dir.path().join("missing")).unwrap(), Records::default());
        rewrite(&path, [b"only".as_slice()]).unwrap();
        assert_eq!(payloads(&recover(&path).unwrap()), ["only"]);
    }

    /// Files a host built from ab84cb3 wrote (before crc32fast replaced the
    /// hand-written table; `host/testdata/ab84cb3/README.md`): every record
    /// reads whole, and framing its payload again gives back the same bytes.
    #[test]
    fn files_written_by_ab84cb3_read_whole_and_frame_back_byte_for_byte() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/ab84cb3");
        for (file, records) in [
            ("manifests/retail.jsonl", 3),
            ("messaging/topics/sensors.readings/1.log", 3),
            ("messaging/topics/sensors.readings/meta.json", 1),
        ] {
            let path = dir.join(file);
            let bytes = std::fs::read(&path).unwrap();
            let read = read(&path, &bytes).unwrap_or_else(|corrupt| panic!("{file}: {corrupt:?}"));
            assert_eq!((read.payloads.len(), read.torn), (records, 0), "{file}");
            let again: Vec<u8> = read.payloads.iter().flat_map(|payload| frame(payload)).collect();
            assert_eq!(again, bytes, "{file} framed again");
        }
    }
}
