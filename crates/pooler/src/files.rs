//! Writing the pooler's files: atomically (a temporary file renamed over the old one), 0600, in a
//! 0700 directory, owned by the account pgbouncer runs as when it needs to read them.

use std::fs;
use std::io::{ErrorKind, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use pgtenant_cluster::ServerUser;

use crate::PoolerError;

/// Creates `dir` (0700, handed to `owner`) unless it exists; an existing one is narrowed to 0700.
pub(crate) fn ensure_dir(dir: &Path, owner: Option<&ServerUser>) -> Result<(), PoolerError> {
    match fs::DirBuilder::new()
        .recursive(false)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(PoolerError::io(dir, e)),
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| PoolerError::io(dir, e))?;
    if let Some(owner) = owner {
        owner.chown(dir)?;
    }
    Ok(())
}

/// Replaces `path` with `contents` unless it holds them already; returns whether it changed.
pub(crate) fn write_if_changed(
    path: &Path,
    contents: &[u8],
    owner: Option<&ServerUser>,
) -> Result<bool, PoolerError> {
    write(path, contents, owner, true)
}

/// [`write_if_changed`] without the fsync, for a file every sync renders again from what is
/// durable (the state file, the declaration): still replaced atomically, so pgbouncer reads the
/// old or the new text, and a crash that loses it is repaired by the next sync.
pub(crate) fn write_derived_if_changed(
    path: &Path,
    contents: &[u8],
    owner: Option<&ServerUser>,
) -> Result<bool, PoolerError> {
    write(path, contents, owner, false)
}

fn write(
    path: &Path,
    contents: &[u8],
    owner: Option<&ServerUser>,
    durable: bool,
) -> Result<bool, PoolerError> {
    if fs::read(path).is_ok_and(|current| current == contents) {
        return Ok(false);
    }
    let previous = fs::metadata(path).and_then(|m| m.modified()).ok();
    let tmp = path.with_extension("tmp");
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != ErrorKind::NotFound => return Err(PoolerError::io(&tmp, e)),
        _ => {}
    }
    let io = |e| PoolerError::io(&tmp, e);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io)?;
    file.write_all(contents).map_err(io)?;
    // pgbouncer re-reads its auth file on RELOAD only when the file's inode, size or mtime (in
    // whole seconds) changed, and a replacement of the same size may get the freed inode of the
    // file before: so the new file's mtime is at least a second past the old one's.
    if let Some(previous) = previous {
        let floor = previous + std::time::Duration::from_secs(1);
        if std::time::SystemTime::now() < floor {
            file.set_modified(floor).map_err(io)?;
        }
    }
    if durable {
        file.sync_all().map_err(io)?;
    }
    if let Some(owner) = owner {
        owner.chown(&tmp)?;
    }
    fs::rename(&tmp, path).map_err(|e| PoolerError::io(path, e))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_private_replaced_atomically_and_only_when_changed() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("pooler");
        ensure_dir(&dir, None).unwrap();
        ensure_dir(&dir, None).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let path = dir.join("users.txt");
        assert!(write_if_changed(&path, b"a", None).unwrap());
        assert!(!write_if_changed(&path, b"a", None).unwrap());
        assert!(write_if_changed(&path, b"b", None).unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"b");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!path.with_extension("tmp").exists());
        // A replacement within the same second still looks changed to pgbouncer.
        let first = fs::metadata(&path).unwrap().modified().unwrap();
        assert!(write_if_changed(&path, b"c", None).unwrap());
        let second = fs::metadata(&path).unwrap().modified().unwrap();
        assert!(second.duration_since(first).unwrap() >= std::time::Duration::from_secs(1));
    }
}
