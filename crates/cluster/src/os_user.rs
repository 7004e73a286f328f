//! The OS account the server runs as, and running the server binaries as that account.
//!
//! PostgreSQL refuses to run as root, so when we are root every server binary is started
//! as an unprivileged account and everything the server touches is handed to it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::unistd::{self, Gid, Uid, User};

use crate::ClusterError;

/// Accounts tried, in order, for the server of a cluster created by root.
const SERVER_USER_CANDIDATES: [&str; 2] = ["postgres", "nobody"];

/// The OS account a cluster's server (and every program that must read its data directory, such
/// as pgBackRest) runs as.
#[derive(Debug, Clone)]
pub struct ServerUser {
    pub(crate) name: String,
    uid: Uid,
    gid: Gid,
    home: PathBuf,
    /// Whether we are root and must switch to this account to run the server binaries.
    switch: bool,
}

impl ServerUser {
    /// The account the server of a new cluster will run as: us, or when we are root `postgres`
    /// (else `nobody`).
    pub fn for_new_cluster() -> Result<Self, ClusterError> {
        if !unistd::geteuid().is_root() {
            return Ok(Self::current());
        }
        SERVER_USER_CANDIDATES
            .iter()
            .find_map(|name| lookup(name))
            .map(Self::switching_to)
            .ok_or(ClusterError::NoServerUser)
    }

    /// The account the server of an existing cluster runs as, recorded by init.
    pub(crate) fn for_existing_cluster(
        recorded: &str,
        data_dir: &Path,
    ) -> Result<Self, ClusterError> {
        if unistd::geteuid().is_root() {
            return lookup(recorded)
                .map(Self::switching_to)
                .ok_or_else(|| ClusterError::State {
                    path: data_dir.to_path_buf(),
                    reason: format!(
                        "the cluster's server runs as OS user `{recorded}`, which no longer exists"
                    ),
                });
        }
        let me = Self::current();
        // Without root we cannot switch accounts, and the server only runs as the owner of
        // its data.
        if let Ok(meta) = fs::metadata(data_dir) {
            if meta.uid() != me.uid.as_raw() {
                return Err(ClusterError::State {
                    path: data_dir.to_path_buf(),
                    reason: format!(
                        "belongs to OS user `{recorded}`; run pgtenant as that user or as root"
                    ),
                });
            }
        }
        Ok(me)
    }

    /// The invoking account (no switch).
    pub fn current() -> Self {
        let uid = unistd::geteuid();
        let user = User::from_uid(uid).ok().flatten();
        ServerUser {
            name: user
                .as_ref()
                .map_or_else(|| uid.to_string(), |u| u.name.clone()),
            uid,
            gid: unistd::getegid(),
            home: user.map(|u| u.dir).unwrap_or_default(),
            switch: false,
        }
    }

    fn switching_to(user: User) -> Self {
        ServerUser {
            name: user.name,
            uid: user.uid,
            gid: user.gid,
            home: user.dir,
            switch: true,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the server binaries run as another account than ours.
    pub fn switches(&self) -> bool {
        self.switch
    }

    /// A command for a server binary that runs as this account, in `cwd`, without inherited
    /// `PG*` variables.
    pub fn command(&self, program: &Path, cwd: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(cwd);
        // Inherited PGDATA, PGPORT and the like would silently override what we pass.
        pgtenant_pg::env::clear_inherited(&mut cmd);
        if self.switch {
            cmd.env("HOME", &self.home)
                .env("USER", &self.name)
                .env("LOGNAME", &self.name);
            let (uid, gid) = (self.uid, self.gid);
            // Not CommandExt::uid/gid: std runs pre_exec hooks after its own setuid, when
            // dropping root's supplementary groups is no longer permitted. So the whole
            // switch happens here, groups first and uid last.
            // SAFETY: the hook only makes async-signal-safe system calls and allocates nothing.
            unsafe {
                cmd.pre_exec(move || {
                    unistd::setgroups(&[])?;
                    unistd::setgid(gid)?;
                    unistd::setuid(uid)?;
                    Ok(())
                });
            }
        }
        cmd
    }

    /// Hands `path` to this account (nothing to do when it is us).
    pub fn chown(&self, path: &Path) -> Result<(), ClusterError> {
        if !self.switch {
            return Ok(());
        }
        std::os::unix::fs::chown(path, Some(self.uid.as_raw()), Some(self.gid.as_raw()))
            .map_err(|source| ClusterError::io(path, source))
    }

    /// Fails unless this account can enter `dir` and each of its ancestors, which the server
    /// needs to reach its data directory.
    pub fn check_traversable(&self, dir: &Path) -> Result<(), ClusterError> {
        if !self.switch {
            return Ok(());
        }
        for ancestor in dir.ancestors() {
            let meta =
                fs::metadata(ancestor).map_err(|source| ClusterError::io(ancestor, source))?;
            let mode = meta.mode();
            // The server keeps no supplementary groups, so only its primary group counts.
            let searchable = if meta.uid() == self.uid.as_raw() {
                mode & 0o100 != 0
            } else if meta.gid() == self.gid.as_raw() {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            };
            if !searchable {
                return Err(ClusterError::NotTraversable {
                    dir: ancestor.to_path_buf(),
                    user: self.name.clone(),
                });
            }
        }
        Ok(())
    }
}

fn lookup(name: &str) -> Option<User> {
    // A failed lookup leaves the same remedy as a missing account, so it is treated as one.
    User::from_name(name).ok().flatten()
}

/// Creates `path` (which must not exist) with `mode` and `contents`, then hands it to
/// `owner` if given; otherwise it stays with the invoking user.
pub(crate) fn write_new_file(
    path: &Path,
    contents: &[u8],
    mode: u32,
    owner: Option<&ServerUser>,
) -> Result<(), ClusterError> {
    let io_err = |source| ClusterError::io(path, source);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err)?;
    // `mode` at creation is narrowed by the umask; the file must end up with exactly it.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err)?;
    file.write_all(contents).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    if let Some(owner) = owner {
        owner.chown(path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_file_gets_exact_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        write_new_file(&path, b"x", 0o600, None).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.uid(), unistd::geteuid().as_raw());
        assert!(
            write_new_file(&path, b"y", 0o600, None).is_err(),
            "must not overwrite"
        );
    }

    #[test]
    fn untraversable_ancestor_is_named() {
        let Ok(user) = ServerUser::for_new_cluster() else {
            return;
        };
        if !user.switch {
            eprintln!("not root: the server runs as us, nothing to check");
            return;
        }
        let outer = tempfile::tempdir().unwrap();
        fs::set_permissions(outer.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let inner = outer.path().join("state/cluster");
        fs::create_dir_all(&inner).unwrap();
        match user.check_traversable(&inner) {
            Err(ClusterError::NotTraversable { dir, user: name }) => {
                assert_eq!(dir, outer.path());
                assert_eq!(name, user.name);
            }
            other => panic!("expected NotTraversable, got {other:?}"),
        }
        fs::set_permissions(outer.path(), fs::Permissions::from_mode(0o711)).unwrap();
        user.check_traversable(&inner).unwrap();
    }
}
