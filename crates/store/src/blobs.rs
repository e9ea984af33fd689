//! File bytes, outside the database. [`BlobStore`] is what the server needs
//! from a place for bytes, so an object store can stand in later; [`DirBlobs`]
//! keeps them in a directory: each blob is written to a temporary name,
//! fsynced, then renamed into place (and the directory fsynced), so a blob is
//! either whole under its name or absent.
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A place for immutable byte strings, by name.
pub trait BlobStore: Send + Sync {
    /// Starts a new blob; dropping the writer without `commit` leaves nothing.
    fn create(&self) -> io::Result<Box<dyn BlobWriter>>;
    /// The whole blob.
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    /// Removes a blob; false if there was none.
    fn remove(&self, name: &str) -> io::Result<bool>;
}

/// A blob being written.
pub trait BlobWriter: Send {
    fn write(&mut self, chunk: &[u8]) -> io::Result<()>;
    /// Makes the bytes durable under `name`.
    fn commit(self: Box<Self>, name: &str) -> io::Result<Committed>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub bytes: u64,
    /// Lowercase hex sha256 of the bytes.
    pub sha256: String,
}

/// Blobs as files of one directory (`tmp/` holds unfinished ones).
pub struct DirBlobs {
    root: PathBuf,
    /// `.lock`, held shared by every process that uses the directory and
    /// exclusively by one that is alone (and may therefore clean up).
    lock: Mutex<File>,
    exclusive: Mutex<bool>,
}

impl DirBlobs {
    /// Opens (creating) the directory, exclusively if no other process has it open.
    pub fn open(root: &Path) -> io::Result<Self> {
        fs::create_dir_all(root.join("tmp"))?;
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(root.join(".lock"))?;
        let exclusive = match lock.try_lock() {
            Ok(()) => true,
            Err(TryLockError::WouldBlock) => {
                lock.lock_shared()?;
                false
            }
            Err(TryLockError::Error(e)) => return Err(e),
        };
        Ok(Self { root: root.to_path_buf(), lock: Mutex::new(lock), exclusive: Mutex::new(exclusive) })
    }

    /// Whether this process is the only one using the directory (until `share`).
    pub fn is_exclusive(&self) -> bool {
        *self.exclusive.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes what interrupted writes left: every temporary file, and every
    /// blob whose name `keep` does not hold (renamed into place, but its record
    /// was never committed). Only while exclusive: another process's uploads
    /// in flight look the same. Returns how many files it removed.
    pub fn sweep(&self, keep: &HashSet<String>) -> io::Result<usize> {
        if !self.is_exclusive() {
            return Ok(0);
        }
        let mut removed = 0;
        for entry in fs::read_dir(self.root.join("tmp"))? {
            fs::remove_file(entry?.path())?;
            removed += 1;
        }
        for entry in fs::read_dir(&self.root)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type()?.is_file() && valid_name(&name) && !keep.contains(&name) {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        sync_dir(&self.root)?;
        Ok(removed)
    }

    /// Lets other processes use the directory too (after the sweep).
    pub fn share(&self) -> io::Result<()> {
        let mut exclusive = self.exclusive.lock().unwrap_or_else(|e| e.into_inner());
        if *exclusive {
            let lock = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            lock.unlock()?;
            lock.lock_shared()?;
            *exclusive = false;
        }
        Ok(())
    }

    fn path(&self, name: &str) -> io::Result<PathBuf> {
        if valid_name(name) {
            Ok(self.root.join(name))
        } else {
            Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid blob name {name:?}")))
        }
    }
}

/// Names are ids: ASCII letters, digits, `-` and `_` (never a path).
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 128 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl BlobStore for DirBlobs {
    fn create(&self) -> io::Result<Box<dyn BlobWriter>> {
        let tmp = self.root.join("tmp").join(format!("upload-{}", uuid::Uuid::new_v4().simple()));
        let file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        Ok(Box::new(DirWriter { root: self.root.clone(), tmp, file: Some(file), hasher: Sha256::new(), bytes: 0 }))
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        File::open(self.path(name)?)?.read_to_end(&mut out)?;
        Ok(out)
    }

    fn remove(&self, name: &str) -> io::Result<bool> {
        match fs::remove_file(self.path(name)?) {
            Ok(()) => {
                sync_dir(&self.root)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

struct DirWriter {
    root: PathBuf,
    tmp: PathBuf,
    /// None once committed (so `Drop` leaves the renamed file alone).
    file: Option<File>,
    hasher: Sha256,
    bytes: u64,
}

impl BlobWriter for DirWriter {
    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        let file = self.file.as_mut().ok_or_else(|| io::Error::other("blob already committed"))?;
        file.write_all(chunk)?;
        self.hasher.update(chunk);
        self.bytes += chunk.len() as u64;
        Ok(())
    }

    fn commit(mut self: Box<Self>, name: &str) -> io::Result<Committed> {
        if !valid_name(name) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid blob name {name:?}")));
        }
        let file = self.file.take().ok_or_else(|| io::Error::other("blob already committed"))?;
        file.sync_all()?;
        drop(file);
        let target = self.root.join(name);
        if target.exists() {
            let _ = fs::remove_file(&self.tmp);
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("blob {name} exists")));
        }
        fs::rename(&self.tmp, &target)?;
        sync_dir(&self.root)?;
        Ok(Committed { bytes: self.bytes, sha256: hex::encode(self.hasher.clone().finalize()) })
    }
}

impl Drop for DirWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hearth-blobs-{tag}-{}", uuid::Uuid::new_v4().simple()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn commit_read_remove() {
        let dir = scratch("crr");
        let blobs = DirBlobs::open(&dir).unwrap();
        let mut w = blobs.create().unwrap();
        w.write(b"hello ").unwrap();
        w.write(b"world").unwrap();
        let c = w.commit("file-1").unwrap();
        assert_eq!(c.bytes, 11);
        assert_eq!(c.sha256, "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
        assert_eq!(blobs.read("file-1").unwrap(), b"hello world");
        assert_eq!(fs::read_dir(dir.join("tmp")).unwrap().count(), 0, "no temp file after commit");
        assert!(blobs.remove("file-1").unwrap());
        assert!(!blobs.remove("file-1").unwrap());
        assert!(blobs.read("../x").is_err(), "names are never paths");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn abandoned_writes_leave_nothing_and_sweep_cleans() {
        let dir = scratch("sweep");
        let blobs = DirBlobs::open(&dir).unwrap();
        let mut w = blobs.create().unwrap();
        w.write(b"partial").unwrap();
        drop(w);
        assert_eq!(fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
        // What a crash leaves: a temp file and a renamed blob with no record.
        fs::write(dir.join("tmp").join("upload-x"), b"x").unwrap();
        let mut w = blobs.create().unwrap();
        w.write(b"kept").unwrap();
        w.commit("file-kept").unwrap();
        let mut w = blobs.create().unwrap();
        w.write(b"orphan").unwrap();
        w.commit("file-orphan").unwrap();
        assert!(blobs.is_exclusive());
        let removed = blobs.sweep(&HashSet::from(["file-kept".to_string()])).unwrap();
        assert_eq!(removed, 2);
        assert_eq!(blobs.read("file-kept").unwrap(), b"kept");
        assert!(blobs.read("file-orphan").is_err());
        blobs.share().unwrap();
        assert!(!blobs.is_exclusive());
        fs::remove_dir_all(dir).unwrap();
    }
}
