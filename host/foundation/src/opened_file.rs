//! A file to ingest, opened once. It is opened without following a link,
//! checked as the open descriptor (a regular file, inside the directory it
//! must be in), hashed and read through that same descriptor, and never read
//! past the size that was checked. A link swapped in, or bytes appended,
//! after the check change nothing: the host reads the file it checked.

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Size and SHA-256 of a file's checked bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileIdentity {
    pub bytes: u64,
    pub sha256: String,
}

/// Why a file was not opened for ingestion.
#[derive(Debug, thiserror::Error)]
pub enum OpenRefused {
    #[error("{path} is a symbolic link; the host never follows links to files it ingests: name or stage the file itself")]
    Link { path: PathBuf },
    #[error("{path} is not a regular file but a {kind}")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{path} is {real}, which is outside {within}")]
    Outside { path: PathBuf, real: PathBuf, within: PathBuf },
    #[error("cannot open {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// An open file with the size it was checked at. Clones share the descriptor.
#[derive(Debug, Clone)]
pub struct OpenedFile {
    file: Arc<File>,
    /// Bytes the host reads at most: the size when it was opened.
    size: u64,
    /// Where the descriptor is, as the kernel resolved it.
    real_path: PathBuf,
}

impl OpenedFile {
    /// Opens `path` for reading, refusing a link in its last component, any
    /// file that is not a regular one, and, with `within`, a file whose real
    /// path (links in its directories resolved) is outside that directory.
    pub fn open(path: &Path, within: Option<&Path>) -> Result<OpenedFile, OpenRefused> {
        let io_error = |source| OpenRefused::Io { path: path.to_path_buf(), source };
        // No link followed in the last component; no wait on a FIFO.
        let opened = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path);
        let file = match opened {
            Ok(file) => file,
            Err(error) if error.raw_os_error() == Some(libc::ELOOP) => return Err(OpenRefused::Link { path: path.to_path_buf() }),
            Err(error) => return Err(io_error(error)),
        };
        let metadata = file.metadata().map_err(io_error)?;
        if !metadata.is_file() {
            return Err(OpenRefused::NotRegular { path: path.to_path_buf(), kind: file_kind(&metadata.file_type()) });
        }
        let real_path = descriptor_path(&file).map_err(io_error)?;
        if let Some(within) = within {
            let within = within.canonicalize().map_err(|source| OpenRefused::Io { path: within.to_path_buf(), source })?;
            if !real_path.starts_with(&within) {
                return Err(OpenRefused::Outside { path: path.to_path_buf(), real: real_path, within });
            }
        }
        Ok(OpenedFile { file: Arc::new(file), size: metadata.len(), real_path })
    }

    /// The checked size: nothing past it is read.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn real_path(&self) -> &Path {
        &self.real_path
    }

    /// The same file, read up to `size` at most (a size recorded earlier,
    /// e.g. in the manifest); an error if the file is now shorter.
    pub fn limited_to(mut self, size: u64) -> io::Result<OpenedFile> {
        if size > self.size {
            return Err(shrank(&self.real_path, size, self.size));
        }
        self.size = size;
        Ok(self)
    }

    /// Reads into `buffer` from `offset`, never past the checked size.
    /// Returns 0 at the checked end; an error if the file ends before it.
    pub fn read_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
        let room = self.size.saturating_sub(offset).min(buffer.len() as u64) as usize;
        if room == 0 {
            return Ok(0);
        }
        loop {
            match self.file.read_at(&mut buffer[..room], offset) {
                Ok(0) => return Err(shrank(&self.real_path, self.size, offset)),
                Ok(n) => return Ok(n),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }

    /// Hashes the checked bytes (blocking: call it off the async workers).
    pub fn identify(&self) -> io::Result<FileIdentity> {
        let mut hasher = Sha256::new();
        let mut buffer = vec![0; 1 << 20];
        let mut offset = 0;
        while offset < self.size {
            let n = self.read_at(&mut buffer, offset)?;
            hasher.update(&buffer[..n]);
            offset += n as u64;
        }
        Ok(FileIdentity { bytes: self.size, sha256: hex::encode(hasher.finalize()) })
    }
}

fn shrank(path: &Path, expected: u64, now: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("{} ends at byte {now} but was checked at {expected} bytes: it was truncated while being ingested", path.display()),
    )
}

/// Where an open descriptor is, as the kernel knows it.
fn descriptor_path(file: &File) -> io::Result<PathBuf> {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

fn file_kind(kind: &std::fs::FileType) -> &'static str {
    if kind.is_dir() {
        "directory"
    } else if kind.is_fifo() {
        "named pipe"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "device"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn a_regular_file_is_read_up_to_its_size_at_opening() {
        let dir = dir();
        let path = dir.path().join("a.csv");
        std::fs::write(&path, b"0123456789").unwrap();
        let opened = OpenedFile::open(&path, Some(dir.path())).unwrap();
        // Appended after the check: never read.
        std::io::Write::write_all(&mut std::fs::OpenOptions::new().append(true).open(&path).unwrap(), b"appended").unwrap();
        let mut buffer = [0; 64];
        let n = opened.read_at(&mut buffer, 0).unwrap();
        assert_eq!(&buffer[..n], b"0123456789");
        assert_eq!(opened.read_at(&mut buffer, 10).unwrap(), 0);
        assert_eq!(opened.identify().unwrap().bytes, 10);
        assert_eq!(opened.identify().unwrap().sha256, hex::encode(Sha256::digest(b"0123456789")));
        let limited = opened.clone().limited_to(4).unwrap();
        assert_eq!(limited.identify().unwrap().sha256, hex::encode(Sha256::digest(b"0123")));
        assert!(opened.limited_to(11).is_err(), "cannot read more than it had when opened");
    }

    #[test]
    fn links_special_files_and_files_outside_are_refused() {
        let dir = dir();
        let inside = dir.path().join("inside");
        std::fs::create_dir(&inside).unwrap();
        let secret = dir.path().join("secret.csv");
        std::fs::write(&secret, b"secret").unwrap();
        let link = inside.join("link.csv");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        assert!(matches!(OpenedFile::open(&link, Some(&inside)), Err(OpenRefused::Link { .. })));
        assert!(matches!(OpenedFile::open(&link, None), Err(OpenRefused::Link { .. })), "never followed, even unchecked");
        // A link in a directory of the path: resolved, and outside.
        let linked_dir = inside.join("up");
        std::os::unix::fs::symlink(dir.path(), &linked_dir).unwrap();
        let through = linked_dir.join("secret.csv");
        assert!(matches!(OpenedFile::open(&through, Some(&inside)), Err(OpenRefused::Outside { .. })));
        assert!(matches!(OpenedFile::open(&inside, Some(dir.path())), Err(OpenRefused::NotRegular { kind: "directory", .. })));
        let fifo = inside.join("pipe.csv");
        let name = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        assert!(matches!(OpenedFile::open(&fifo, Some(&inside)), Err(OpenRefused::NotRegular { kind: "named pipe", .. })));
        assert!(OpenedFile::open(&secret, Some(&inside)).is_err());
        assert!(OpenedFile::open(&secret, Some(dir.path())).is_ok());
    }

    #[test]
    fn a_file_truncated_after_opening_is_an_error_not_a_short_read() {
        let dir = dir();
        let path = dir.path().join("a.csv");
        std::fs::write(&path, b"0123456789").unwrap();
        let opened = OpenedFile::open(&path, None).unwrap();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(4).unwrap();
        let error = opened.identify().unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        assert!(error.to_string().contains("truncated"), "{error}");
    }
}
