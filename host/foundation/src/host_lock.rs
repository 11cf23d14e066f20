//! One writer of a data directory's files: `host run` holds
//! `<data_dir>/host.lock` while it runs, and a command that writes the
//! host's own files without a host (in local mode `batch retry`, `tenant
//! suspend|resume`, `ingest`, `stream produce`) takes it too, so two
//! processes never append to the same manifest or message log (where one's
//! undo of a failed append, or its cut of what looks like a torn tail, would
//! cut the other's records off).

use anyhow::Context;
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

/// The lock of a data directory, released when dropped (or when the process ends).
#[derive(Debug)]
pub struct HostLock {
    path: PathBuf,
    _file: File,
}

impl HostLock {
    /// Takes the lock of `data_dir`, or fails at once, saying who holds it.
    pub fn acquire(data_dir: &Path) -> anyhow::Result<HostLock> {
        std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
        let path = data_dir.join("host.lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(HostLock { path, _file: file }),
            Err(TryLockError::WouldBlock) => anyhow::bail!(
                "another mysimbdp process holds {}: a host runs on this data directory (its API may be on another address, \
                 or not answer yet); go through that host, or stop it first",
                path.display()
            ),
            Err(TryLockError::Error(error)) => Err(error).with_context(|| format!("cannot lock {}", path.display())),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::HostLock;

    #[test]
    fn a_data_directory_has_one_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = HostLock::acquire(dir.path()).unwrap();
        let refused = HostLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(refused.contains("holds") && refused.contains("host.lock"), "{refused}");
        drop(first);
        assert!(HostLock::acquire(dir.path()).is_ok(), "released when dropped");
    }
}
