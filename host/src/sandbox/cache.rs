//! Compiled components on disk (`<data_dir>/compiled`), so neither an
//! ingestion after the upload nor a restart compiles a pipeline again.
//!
//! Loading an artifact runs the machine code in it, so a file is loaded only
//! if it carries a MAC (HMAC-SHA256) made with this host's secret
//! (`compiled/key`, created on first use, mode 0600) over its name and its
//! bytes: a tampered, truncated or swapped file is refused and the component
//! compiled again. Names are the SHA-256 of the component's bytes (computed
//! here, never read from a record) and a fingerprint of the engine settings.

use anyhow::Context;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use wasmtime::Engine;

const MAGIC: &[u8; 8] = b"MYSBDPC1";
const MAC_BYTES: usize = 32;
const KEY_FILE: &str = "key";

/// The artifact cache of one data directory.
pub struct ArtifactCache {
    dir: PathBuf,
    key: [u8; 32],
}

/// Why a cached artifact was not used.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// No such file: compiled for the first time.
    Missing,
    /// Too short, wrong magic, or a MAC that does not match.
    Tampered,
}

impl ArtifactCache {
    /// Opens (creating) `dir` and its secret.
    pub fn open(dir: &Path) -> anyhow::Result<ArtifactCache> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let key_file = dir.join(KEY_FILE);
        let key = match read_key(&key_file)? {
            Some(key) => key,
            None => create_key(&key_file)?,
        };
        Ok(ArtifactCache { dir: dir.to_path_buf(), key })
    }

    /// The file name of `sha256`'s artifact for `engine` (its settings, the
    /// wasmtime version) and a stack of `stack_bytes`.
    pub fn name(engine: &Engine, sha256: &str, stack_bytes: u64) -> String {
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        stack_bytes.hash(&mut hasher);
        format!("{sha256}-{:016x}.cwasm", hasher.finish())
    }

    fn mac(&self, name: &str, artifact: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(&(name.len() as u64).to_le_bytes());
        mac.update(name.as_bytes());
        mac.update(artifact);
        mac
    }

    /// The artifact stored as `name`, if its MAC holds.
    pub fn get(&self, name: &str) -> Result<Vec<u8>, Refused> {
        let Ok(mut file) = std::fs::File::open(self.dir.join(name)) else {
            return Err(Refused::Missing);
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|_| Refused::Tampered)?;
        if bytes.len() < MAGIC.len() + MAC_BYTES || &bytes[..MAGIC.len()] != MAGIC {
            return Err(Refused::Tampered);
        }
        let artifact = bytes.split_off(MAGIC.len() + MAC_BYTES);
        self.mac(name, &artifact).verify_slice(&bytes[MAGIC.len()..]).map_err(|_| Refused::Tampered)?;
        Ok(artifact)
    }

    /// Stores `artifact` as `name`: written to a private temporary file,
    /// synced, renamed into place, the directory synced.
    pub fn put(&self, name: &str, artifact: &[u8]) -> anyhow::Result<()> {
        let path = self.dir.join(name);
        let temporary = self.dir.join(format!(".{name}.{}.{:?}.tmp", std::process::id(), std::thread::current().id()));
        let written = (|| {
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(MAGIC)?;
            file.write_all(&self.mac(name, artifact).finalize().into_bytes())?;
            file.write_all(artifact)?;
            file.sync_all()?;
            std::fs::rename(&temporary, &path)?;
            crate::framed::sync_dir(&path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        written.with_context(|| format!("cannot write the compiled pipeline {}", path.display()))
    }
}

fn read_key(file: &Path) -> anyhow::Result<Option<[u8; 32]>> {
    match std::fs::read(file) {
        Ok(bytes) => {
            let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                anyhow::anyhow!("{} is not a key of 32 bytes; remove it (the compiled pipelines are then compiled again)", file.display())
            })?;
            Ok(Some(key))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("cannot read {}", file.display())),
    }
}

/// A new random secret, written once: of two processes creating it at once,
/// one writes it and the other reads what was written.
fn create_key(file: &Path) -> anyhow::Result<[u8; 32]> {
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut random| random.read_exact(&mut key)).context("cannot read /dev/urandom")?;
    let temporary = file.with_extension(format!("{}.tmp", std::process::id()));
    let written = (|| {
        let mut out = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary)?;
        out.write_all(&key)?;
        out.sync_all()?;
        // A link fails if the key exists: the other process's key holds.
        std::fs::hard_link(&temporary, file)
    })();
    let _ = std::fs::remove_file(&temporary);
    match written {
        Ok(()) => Ok(key),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            read_key(file)?.with_context(|| format!("{} vanished", file.display()))
        }
        Err(error) => Err(error).with_context(|| format!("cannot create the cache key {}", file.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_artifact_is_returned_only_as_it_was_stored_under_its_own_name() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::open(dir.path()).unwrap();
        assert_eq!(cache.get("a.cwasm"), Err(Refused::Missing));
        cache.put("a.cwasm", b"artifact of a").unwrap();
        cache.put("b.cwasm", b"artifact of b").unwrap();
        assert_eq!(cache.get("a.cwasm").unwrap(), b"artifact of a");
        let stored = std::fs::read(dir.path().join("a.cwasm")).unwrap();
        let tampered: &[(&str, Vec<u8>)] = &[
            ("a byte of the artifact flipped", {
                let mut bytes = stored.clone();
                *bytes.last_mut().unwrap() ^= 1;
                bytes
            }),
            ("a byte of the MAC flipped", {
                let mut bytes = stored.clone();
                bytes[MAGIC.len()] ^= 1;
                bytes
            }),
            ("truncated", stored[..stored.len() - 1].to_vec()),
            ("only the header", stored[..MAGIC.len() + MAC_BYTES].to_vec()),
            ("shorter than a header", stored[..10].to_vec()),
            ("empty", Vec::new()),
            ("another file's bytes", std::fs::read(dir.path().join("b.cwasm")).unwrap()),
        ];
        for (how, bytes) in tampered {
            std::fs::write(dir.path().join("a.cwasm"), bytes).unwrap();
            assert_eq!(cache.get("a.cwasm"), Err(Refused::Tampered), "{how}");
        }
        // Another host's secret makes this host's files worthless.
        std::fs::write(dir.path().join("a.cwasm"), &stored).unwrap();
        assert!(cache.get("a.cwasm").is_ok());
        let other = tempfile::tempdir().unwrap();
        std::fs::copy(dir.path().join("a.cwasm"), other.path().join("a.cwasm")).unwrap();
        assert_eq!(ArtifactCache::open(other.path()).unwrap().get("a.cwasm"), Err(Refused::Tampered));
    }

    #[test]
    fn the_key_is_made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = ArtifactCache::open(dir.path()).unwrap();
        first.put("a.cwasm", b"x").unwrap();
        let again = ArtifactCache::open(dir.path()).unwrap();
        assert_eq!(again.get("a.cwasm").unwrap(), b"x", "a second open reads the same key");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let leftovers: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".tmp")).collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        std::fs::write(dir.path().join(KEY_FILE), b"short").unwrap();
        let error = ArtifactCache::open(dir.path()).err().unwrap().to_string();
        assert!(error.contains("not a key of 32 bytes"), "{error}");
    }
}
