//! Files that must never be left half-written: every file ddpm-gpu writes (checkpoints, configs,
//! pictures, metrics rewrites) goes through [`write_atomic`].

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Write `bytes` to `<path>.tmp`, flush it to disk, then rename it over `path`: readers see the
/// old file or the new one, never a part.
/// The parent directory is created if needed; on failure the temporary file is removed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("cannot write {}: not a file path", path.display()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    let tmp: PathBuf = path.with_file_name(tmp_name);
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()))
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

/// ddpm-gpu's cache folder (trained feature classifiers live there): `$DDPM_GPU_CACHE` if set,
/// else the platform's convention: `$XDG_CACHE_HOME/ddpm-gpu` or `~/.cache/ddpm-gpu` on Linux,
/// `~/Library/Caches/ddpm-gpu` on macOS, `%LOCALAPPDATA%\ddpm-gpu` on Windows. `None` when no
/// home folder is known.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var("DDPM_GPU_CACHE") {
        return Some(dir);
    }
    let base = if cfg!(target_os = "windows") {
        var("LOCALAPPDATA")
    } else if cfg!(target_os = "macos") {
        var("HOME").map(|h| h.join("Library").join("Caches"))
    } else {
        var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|h| h.join(".cache")))
    };
    base.map(|b| b.join("ddpm-gpu"))
}

/// Create a new folder `parent/name` that no one else has: if it exists, `name-2`, `name-3`, …
/// Creation is the exclusive `mkdir`, so two processes asking at once get different folders.
pub fn create_unique_dir(parent: &Path, name: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create folder {}", parent.display()))?;
    for k in 1.. {
        let path = if k == 1 {
            parent.join(name)
        } else {
            parent.join(format!("{name}-{k}"))
        };
        match std::fs::create_dir(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create folder {}", path.display())),
        }
    }
    unreachable!("some suffix is free")
}

/// An exclusive lock on a folder (its `.lock` file), held until dropped or the process ends
/// (also by a crash: the operating system releases it, so no lock is ever stale).
pub struct FolderLock {
    _file: std::fs::File,
}

impl FolderLock {
    /// Take the lock of `dir`, or say that another process holds it.
    pub fn take(dir: &Path) -> Result<FolderLock> {
        let path = dir.join(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(FolderLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
                "{} is in use: another ddpm-gpu process is training in it (wait for it to finish, or stop it)",
                dir.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
        }
    }
}

/// Bytes of memory available to a new allocation without swapping (`MemAvailable` of
/// /proc/meminfo); `None` where that is not known (other systems).
pub fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
