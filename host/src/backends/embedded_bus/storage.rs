//! The files of the embedded message log, as framed records
//! ([`crate::framed`]): a partition is one record per message, its offset
//! the record's position; a consumer group's committed offsets are a log of
//! snapshots, the last whole one in force. A record cut by a crash or a full
//! disk is cut off when the file is opened, and a failed append is undone,
//! so what follows never merges with it; damage with records after it is an
//! error naming the file, never read past in silence.
//!
//! Files written before the records were framed (one JSON line per message,
//! one JSON object of offsets) are read and rewritten framed once, with a
//! log line.

use super::sink_error;
use crate::backends::SinkError;
use crate::framed;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The committed offsets of a group: topic -> partition -> next offset.
pub(super) type Committed = BTreeMap<String, BTreeMap<i32, i64>>;

/// Commit snapshots an offsets file holds before it is compacted to one.
const COMPACT_OFFSETS_AT: usize = 1000;

fn io_error(path: &Path, error: impl std::fmt::Display) -> SinkError {
    sink_error(&path.display().to_string(), error)
}

/// A partition open for appending.
pub(super) struct PartitionFile {
    path: PathBuf,
    file: File,
    /// Offset of the next message appended (the number of records).
    pub end: i64,
    /// Bytes of whole records: where the next one is written.
    len: u64,
}

impl PartitionFile {
    /// Opens (or creates) the partition at `path`: a torn tail is cut off, a
    /// file of JSON lines (as written before records were framed) migrated.
    pub(super) fn open(path: &Path) -> Result<PartitionFile, SinkError> {
        let (bytes, created) = match std::fs::read(path) {
            Ok(bytes) => (bytes, false),
            Err(error) if error.kind() == io::ErrorKind::NotFound => (Vec::new(), true),
            Err(error) => return Err(io_error(path, error)),
        };
        if !framed::is_framed(&bytes) {
            migrate_lines(path, &bytes)?;
        }
        let records = framed::recover(path).map_err(|e| io_error(path, e))?;
        let file = OpenOptions::new().create(true).read(true).append(true).open(path).map_err(|e| io_error(path, e))?;
        if created {
            // A new partition's name in its directory, so the records synced into it stay reachable after a crash.
            framed::sync_dir(path).map_err(|e| io_error(path, e))?;
        }
        Ok(PartitionFile { path: path.to_path_buf(), file, end: records.payloads.len() as i64, len: records.end })
    }

    /// Appends one record per payload and syncs: acknowledged means on disk.
    /// A failed write (a full disk) is undone, so the partition keeps only
    /// whole records and the next append follows the last of them.
    pub(super) fn append(&mut self, payloads: &[Vec<u8>]) -> Result<(), SinkError> {
        let mut bytes = Vec::new();
        for payload in payloads {
            bytes.extend_from_slice(&framed::frame(payload));
        }
        let written = self.file.write_all(&bytes).and_then(|()| self.file.sync_data());
        if let Err(error) = written {
            if let Err(undo) = self.file.set_len(self.len) {
                tracing::error!(file = %self.path.display(), %undo, "Cannot undo a failed append; the torn record is cut off when the log is opened again.");
            }
            return Err(io_error(&self.path, error));
        }
        self.len += bytes.len() as u64;
        self.end += payloads.len() as i64;
        Ok(())
    }
}

/// Rewrites a partition of JSON lines as framed records, in the same order
/// (so offsets stay). A last line without its line end was being written: it
/// is dropped; a line that is no JSON before it is damage.
fn migrate_lines(path: &Path, bytes: &[u8]) -> Result<(), SinkError> {
    let text = std::str::from_utf8(bytes).map_err(|e| io_error(path, format!("not a message log: {e}")))?;
    let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
    if lines.last().is_some_and(|l| !l.ends_with('\n')) {
        let torn = lines.pop().unwrap_or_default();
        tracing::warn!(file = %path.display(), bytes = torn.len(), "A message cut by a crash at the end of the log was dropped.");
    }
    for (offset, line) in lines.iter().enumerate() {
        if serde_json::from_str::<serde_json::Value>(line.trim_end()).is_err() {
            return Err(io_error(path, format!("message {offset} is not a JSON line: the log is corrupt; move it aside to start it anew")));
        }
    }
    framed::rewrite(path, lines.iter().map(|l| l.trim_end_matches('\n').as_bytes())).map_err(|e| io_error(path, e))?;
    tracing::info!(file = %path.display(), messages = lines.len(), "Message log migrated to framed records.");
    Ok(())
}

/// Reads a partition record by record from a position, never into a record
/// still being appended (it is read at the next call, once whole).
pub(super) struct PartitionReader {
    path: PathBuf,
    file: File,
    /// Byte offset of the next record.
    position: u64,
}

/// One step of a [`PartitionReader`].
pub(super) enum Next {
    Record(Vec<u8>),
    /// No whole record after the position yet.
    Nothing,
}

impl PartitionReader {
    /// A reader of `path` positioned after its first `skip` records (or at
    /// its end when it has fewer); returns how many it skipped.
    pub(super) fn open_at(path: &Path, skip: i64) -> Result<(PartitionReader, i64), SinkError> {
        let file = File::open(path).map_err(|e| io_error(path, e))?;
        let mut reader = PartitionReader { path: path.to_path_buf(), file, position: 0 };
        let mut skipped = 0;
        while skipped < skip {
            match reader.next()? {
                Next::Record(_) => skipped += 1,
                Next::Nothing => break,
            }
        }
        Ok((reader, skipped))
    }

    pub(super) fn next(&mut self) -> Result<Next, SinkError> {
        let header = self.read_at(self.position, framed::HEADER)?;
        if header.len() < framed::HEADER {
            return Ok(Next::Nothing);
        }
        let len = framed::payload_len(&header)
            .ok_or_else(|| io_error(&self.path, format!("the record at byte {} has no valid header: the log is corrupt", self.position)))?;
        let record = self.read_at(self.position, framed::HEADER + len + 1)?;
        if record.len() < framed::HEADER + len + 1 {
            return Ok(Next::Nothing);
        }
        let payload = framed::payload(&record).ok_or_else(|| {
            io_error(&self.path, format!("the record at byte {} is damaged (checksum): the log is corrupt", self.position))
        })?;
        self.position += record.len() as u64;
        Ok(Next::Record(payload.to_vec()))
    }

    fn read_at(&mut self, position: u64, len: usize) -> Result<Vec<u8>, SinkError> {
        self.file.seek(SeekFrom::Start(position)).map_err(|e| io_error(&self.path, e))?;
        let mut buffer = Vec::with_capacity(len);
        (&mut self.file).take(len as u64).read_to_end(&mut buffer).map_err(|e| io_error(&self.path, e))?;
        Ok(buffer)
    }
}

/// The offsets a group committed last, from `path` (none yet: empty). A
/// snapshot cut by a crash is cut off (the one before it is in force); a
/// file that cannot be read as offsets is an error naming it, never a reset
/// to the start.
pub(super) fn read_offsets(path: &Path) -> Result<Committed, SinkError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Committed::new()),
        Err(error) => return Err(io_error(path, error)),
    };
    let corrupt = |detail: String| {
        sink_error(
            &path.display().to_string(),
            format!("the committed offsets cannot be read ({detail}); restore the file, or remove it to consume from the start"),
        )
    };
    if !framed::is_framed(&bytes) {
        // Written before records were framed: one JSON object, replaced whole.
        let committed: Committed = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let snapshot = serde_json::to_vec(&committed).expect("serializable");
        framed::rewrite(path, [snapshot.as_slice()]).map_err(|e| io_error(path, e))?;
        tracing::info!(file = %path.display(), "Committed offsets migrated to framed records.");
        return Ok(committed);
    }
    let records = framed::recover(path).map_err(|e| corrupt(e.to_string()))?;
    match records.payloads.last() {
        None => Ok(Committed::new()),
        Some(last) => serde_json::from_slice(last).map_err(|e| corrupt(e.to_string())),
    }
}

/// Appends `committed` as the group's new snapshot and syncs it (a commit is
/// acknowledged once on disk); compacts the file now and then.
pub(super) fn write_offsets(path: &Path, committed: &Committed) -> Result<(), SinkError> {
    let snapshot = serde_json::to_vec(committed).expect("serializable");
    let mut file = OpenOptions::new().create(true).append(true).read(true).open(path).map_err(|e| io_error(path, e))?;
    let len = file.metadata().map_err(|e| io_error(path, e))?.len();
    if let Err(error) = file.write_all(&framed::frame(&snapshot)).and_then(|()| file.sync_data()) {
        let _ = file.set_len(len);
        return Err(io_error(path, error));
    }
    if len == 0 {
        framed::sync_dir(path).map_err(|e| io_error(path, e))?;
    }
    // A snapshot is small; compacting keeps the file from growing for good.
    if len as usize > COMPACT_OFFSETS_AT * (snapshot.len() + framed::HEADER + 1) {
        framed::rewrite(path, [snapshot.as_slice()]).map_err(|e| io_error(path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(i: usize) -> Vec<u8> {
        format!("{{\"t\":{i},\"v\":\"bWVzc2FnZSB7aX0=\",\"h\":[]}}").into_bytes()
    }

    /// The records a reader finds in the partition at `path`, from the start.
    fn read_back(path: &Path) -> Vec<Vec<u8>> {
        let (mut reader, _) = PartitionReader::open_at(path, 0).unwrap();
        let mut found = Vec::new();
        while let Next::Record(record) = reader.next().unwrap() {
            found.push(record);
        }
        found
    }

    #[test]
    fn a_partition_cut_at_every_byte_of_its_last_record_keeps_exactly_the_whole_ones() {
        let dir = tempfile::tempdir().unwrap();
        let whole = dir.path().join("whole.log");
        let mut partition = PartitionFile::open(&whole).unwrap();
        partition.append(&[payload(0), payload(1)]).unwrap();
        partition.append(&[payload(2)]).unwrap();
        let bytes = std::fs::read(&whole).unwrap();
        let last_start = bytes.len() - framed::frame(&payload(2)).len();
        for cut in last_start..=bytes.len() {
            let path = dir.path().join(format!("cut-{cut}.log"));
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let mut reopened = PartitionFile::open(&path).unwrap();
            let kept = if cut == bytes.len() { 3 } else { 2 };
            assert_eq!(reopened.end, kept as i64, "cut at byte {cut}");
            assert_eq!(read_back(&path), (0..kept).map(payload).collect::<Vec<_>>(), "cut at byte {cut}");
            // The next message follows the last whole one, at the next offset.
            reopened.append(&[payload(9)]).unwrap();
            assert_eq!(reopened.end, kept as i64 + 1);
            assert_eq!(read_back(&path).last(), Some(&payload(9)), "cut at byte {cut}");
        }
    }

    #[test]
    fn a_reader_waits_for_a_record_being_appended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut partition = PartitionFile::open(&path).unwrap();
        partition.append(&[payload(0)]).unwrap();
        let (mut reader, skipped) = PartitionReader::open_at(&path, 5).unwrap();
        assert_eq!(skipped, 1, "fewer records than asked to skip");
        // Half a record, as another writer leaves it mid-write.
        let record = framed::frame(&payload(1));
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(&record[..10]).unwrap();
        assert!(matches!(reader.next().unwrap(), Next::Nothing));
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(&record[10..]).unwrap();
        assert!(matches!(reader.next().unwrap(), Next::Record(p) if p == payload(1)));
    }

    #[test]
    fn a_partition_of_json_lines_is_migrated_keeping_its_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        // As written before records were framed, the last line cut by a crash.
        std::fs::write(&path, b"{\"v\":\"YQ==\"}\n{\"v\":\"Yg==\"}\n{\"v\":\"Y").unwrap();
        let partition = PartitionFile::open(&path).unwrap();
        assert_eq!(partition.end, 2);
        assert_eq!(read_back(&path), [b"{\"v\":\"YQ==\"}".to_vec(), b"{\"v\":\"Yg==\"}".to_vec()]);
        assert!(framed::is_framed(&std::fs::read(&path).unwrap()));
        std::fs::write(&path, b"{\"v\":\"YQ==\"}\nnot json\n{\"v\":\"Yg==\"}\n").unwrap();
        let error = PartitionFile::open(&path).err().expect("damage in the middle is an error").to_string();
        assert!(error.contains("0.log") && error.contains("corrupt"), "{error}");
    }

    fn offsets(n: i64) -> Committed {
        [("t.readings".to_string(), [(0, n), (1, 2 * n)].into_iter().collect())].into_iter().collect()
    }

    #[test]
    fn offsets_cut_at_every_byte_of_the_last_commit_are_the_commit_before() {
        let dir = tempfile::tempdir().unwrap();
        let whole = dir.path().join("group.json");
        for n in 1..=3 {
            write_offsets(&whole, &offsets(n)).unwrap();
        }
        assert_eq!(read_offsets(&whole).unwrap(), offsets(3));
        let bytes = std::fs::read(&whole).unwrap();
        let last = framed::frame(&serde_json::to_vec(&offsets(3)).unwrap()).len();
        for cut in bytes.len() - last..=bytes.len() {
            let path = dir.path().join(format!("cut-{cut}.json"));
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let expected = if cut == bytes.len() { offsets(3) } else { offsets(2) };
            assert_eq!(read_offsets(&path).unwrap(), expected, "cut at byte {cut}");
        }
    }

    #[test]
    fn offsets_that_cannot_be_read_are_an_error_naming_the_file_never_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mysimbdp.t.live.json");
        assert_eq!(read_offsets(&path).unwrap(), Committed::new(), "no file: nothing committed yet");
        // Written before records were framed: read, and migrated.
        std::fs::write(&path, br#"{"t.readings":{"0":7}}"#).unwrap();
        assert_eq!(read_offsets(&path).unwrap()["t.readings"][&0], 7);
        assert!(framed::is_framed(&std::fs::read(&path).unwrap()));
        let mut two_snapshots = framed::frame(br#"{"t.readings":{"0":1}}"#);
        two_snapshots.extend(framed::frame(br#"{"t.readings":{"0":2}}"#));
        two_snapshots[25] ^= 0x01;
        let damaged_files = [
            b"{\"t.readings\":{\"0\":".to_vec(),
            b"\x00\x00\x00garbage".to_vec(),
            // Framed, whole, but not offsets.
            framed::frame(b"not offsets"),
            // Framed, the first snapshot damaged with a whole one after it.
            two_snapshots,
            // Framed, one whole snapshot (after a compaction) with a flipped byte.
            {
                let mut only = framed::frame(br#"{"t.readings":{"0":9}}"#);
                only[framed::HEADER + 20] ^= 0x01;
                only
            },
        ];
        for damaged in damaged_files {
            std::fs::write(&path, &damaged).unwrap();
            let error = read_offsets(&path).unwrap_err().to_string();
            assert!(error.contains("mysimbdp.t.live.json") && error.contains("cannot be read"), "{error}");
        }
    }
}
