//! Scratch clusters: a throwaway server on a data directory that something else (pgBackRest) has
//! filled, used to read one database out of a backup and then deleted.
//!
//! A scratch server is unreachable from the network and from other local users: it listens on no
//! TCP address, its Unix socket sits in a directory only the server's OS account can enter, it
//! archives nothing (whatever the restored configuration says) and it runs as a child of the
//! process that started it, which the kernel stops (`PR_SET_PDEATHSIG`) if that process dies.
//! [`remove_leftovers`] deals with what a killed run may still leave behind.
//!
//! Layout of a scratch directory, `<kind>-<random>` (the server user's, 0700; the random part
//! comes from the OS's generator, so that its path cannot be guessed, and the name is short, so
//! that the socket's path fits in the 107 bytes a Unix socket path may have):
//!
//! ```text
//! data/          the restored data directory (server user, 0700)
//! socket/        the server's Unix socket (server user, 0700)
//! pg_hba.conf    trust over that socket only (the directory is the access control; 0600)
//! server.log     the server's output (0600)
//! ```
//!
//! Whatever is written there later (a dump of the database) is as private as the directory.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::RngCore;

use crate::os_user::{write_new_file, ServerUser};
use crate::{free_port, tail, Binaries, ClusterError};

const DATA_DIR: &str = "data";
const SOCKET_DIR: &str = "socket";
const HBA_FILE: &str = "pg_hba.conf";
const LOG_FILE: &str = "server.log";
/// Line of `postmaster.pid` that holds the server's status, and the status of a server that
/// accepts connections (after recovery and promotion, since hot standby is off).
const PID_STATUS_LINE: usize = 7;
const PID_STATUS_READY: &str = "ready";

/// A scratch server. Dropping it stops the server (immediate shutdown: nothing in it is kept)
/// and deletes the whole scratch directory.
pub struct ScratchCluster {
    dir: PathBuf,
    binaries: Binaries,
    user: ServerUser,
    port: u16,
    child: Option<Child>,
}

impl ScratchCluster {
    /// Creates a scratch directory `<kind>-<random>` in `parent` (which must exist), private to
    /// the server's account, with an empty data directory for a restore to fill. Nothing runs
    /// yet.
    pub fn create(
        parent: &Path,
        kind: &str,
        binaries: Binaries,
        user: ServerUser,
    ) -> Result<Self, ClusterError> {
        let suffix = rand::rngs::OsRng.next_u64();
        let dir = &parent.join(format!("{kind}-{suffix:016x}"));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(|e| ClusterError::io(dir, e))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| ClusterError::io(dir, e))?;
        // Only the server's account (and root) may enter: we are one of the two.
        user.chown(dir)?;
        let scratch = ScratchCluster {
            dir: dir.to_path_buf(),
            binaries,
            user,
            port: free_port()?,
            child: None,
        };
        scratch.user.check_traversable(dir)?;
        for sub in [DATA_DIR, SOCKET_DIR] {
            let path = dir.join(sub);
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&path)
                .map_err(|e| ClusterError::io(&path, e))?;
            scratch.user.chown(&path)?;
        }
        // Trust is safe only because the socket directory is private to the server's account
        // (and root) and there is no TCP listener at all.
        let hba = "# Scratch cluster: the private Unix socket only.\nlocal all all trust\n";
        write_new_file(
            &dir.join(HBA_FILE),
            hba.as_bytes(),
            0o600,
            Some(&scratch.user),
        )?;
        Ok(scratch)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join(DATA_DIR)
    }

    /// Where clients connect: libpq's `host` for a Unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join(SOCKET_DIR)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn log_file(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// Starts the server on the restored data directory and waits until it accepts connections,
    /// which with hot standby off means: recovery finished and, for a recovery target, the server
    /// promoted. An error if the server exits first (say, the recovery target was not reached),
    /// with the end of its log; `timeout` bounds the wait.
    pub fn start(&mut self, timeout: Duration) -> Result<(), ClusterError> {
        let log_path = self.log_file();
        let log = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&log_path)
            .map_err(|e| ClusterError::io(&log_path, e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| ClusterError::io(&log_path, e))?;
        let mut cmd = self
            .user
            .command(&self.binaries.program("postgres"), &self.dir);
        cmd.arg("-D").arg(self.data_dir());
        // Command-line settings beat every configuration file the restore brought along.
        let settings = [
            ("listen_addresses", String::new()),
            ("port", self.port.to_string()),
            (
                "unix_socket_directories",
                self.socket_dir().display().to_string(),
            ),
            ("unix_socket_permissions", "0700".into()),
            ("hba_file", self.dir.join(HBA_FILE).display().to_string()),
            ("ssl", "off".into()),
            ("archive_mode", "off".into()),
            ("hot_standby", "off".into()),
            ("logging_collector", "off".into()),
            ("log_destination", "stderr".into()),
            // Throwaway: durability traded for speed.
            ("fsync", "off".into()),
            ("synchronous_commit", "off".into()),
            ("full_page_writes", "off".into()),
        ];
        for (name, value) in settings {
            cmd.arg("-c").arg(format!("{name}={value}"));
        }
        cmd.stdin(Stdio::null()).stdout(log).stderr(log_err);
        // After the account switch, which would clear it: the kernel sends the server the
        // immediate-shutdown signal if we die, so a killed run leaves no server behind.
        pgtenant_pg::process::die_with_parent(&mut cmd, Signal::SIGQUIT);
        let child = cmd
            .spawn()
            .map_err(|e| ClusterError::io(&self.binaries.program("postgres"), e))?;
        self.child = Some(child);
        let started = Instant::now();
        loop {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                return Err(self.failure(format!("the scratch server exited ({status})")));
            }
            if self.is_ready() {
                return Ok(());
            }
            if started.elapsed() > timeout {
                self.stop();
                return Err(self.failure(format!(
                    "the scratch server was not ready after {} s",
                    timeout.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn is_ready(&self) -> bool {
        fs::read_to_string(self.data_dir().join("postmaster.pid")).is_ok_and(|text| {
            text.lines()
                .nth(PID_STATUS_LINE)
                .is_some_and(|status| status.trim() == PID_STATUS_READY)
        })
    }

    fn failure(&self, what: String) -> ClusterError {
        ClusterError::Command {
            program: self.binaries.program("postgres").display().to_string(),
            args: vec!["-D".into(), self.data_dir().display().to_string()],
            status: what,
            output: format!("end of {}:\n{}", self.log_file().display(), self.log_tail()),
        }
    }

    /// The end of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        tail(&fs::read(self.log_file()).unwrap_or_default())
    }

    /// Stops the server at once (immediate shutdown); nothing to do if it is not running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(child.id() as i32);
            let _ = kill(pid, Signal::SIGQUIT);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server and deletes its data directory in a background thread (deleting
    /// freshly synced files can take seconds), keeping the rest of the scratch directory (a dump
    /// written there, say) until the handle is dropped. Join the returned thread to wait for it.
    pub fn discard_data(&mut self) -> Result<std::thread::JoinHandle<()>, ClusterError> {
        self.stop();
        let data = self.data_dir();
        let discarded = self.dir.join("data.discarded");
        match fs::rename(&data, &discarded) {
            Err(e) if e.kind() != ErrorKind::NotFound => return Err(ClusterError::io(&data, e)),
            _ => {}
        }
        Ok(std::thread::spawn(move || {
            let _ = fs::remove_dir_all(discarded);
        }))
    }
}

impl Drop for ScratchCluster {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Deletes every scratch directory under `parent` (a run killed before it could clean up leaves
/// one), first stopping a server still running in it. Call it only while holding the lock that
/// keeps other runs from creating scratch clusters there. Returns the directories removed.
pub fn remove_leftovers(parent: &Path) -> Result<Vec<PathBuf>, ClusterError> {
    let entries = match fs::read_dir(parent) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ClusterError::io(parent, e)),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ClusterError::io(parent, e))?;
        let path = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        stop_stray_server(&path.join(DATA_DIR));
        fs::remove_dir_all(&path).map_err(|e| ClusterError::io(&path, e))?;
        removed.push(path);
    }
    Ok(removed)
}

/// Stops the postmaster recorded in `data_dir`'s `postmaster.pid`, if it still runs there.
fn stop_stray_server(data_dir: &Path) {
    let Ok(text) = fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return;
    };
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
    else {
        return;
    };
    // Only a postgres server on this very data directory: the pid may have been reused since.
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if !String::from_utf8_lossy(&cmdline).contains(&*data_dir.to_string_lossy()) {
        return;
    }
    let pid = Pid::from_raw(pid);
    let _ = kill(pid, Signal::SIGQUIT);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && kill(pid, None).is_ok() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = kill(pid, Signal::SIGKILL);
}
