//! The local pgbouncer process: started daemonized as the server's OS account, found again through
//! its pid file, stopped with SIGTERM, reloaded with SIGHUP when its console does not answer.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pgtenant_cluster::ServerUser;
use pgtenant_pg::process::Run;

use crate::render::{INI_FILE, PID_FILE};
use crate::PoolerError;

/// How long pgbouncer gets to start or stop.
const WAIT: Duration = Duration::from_secs(15);

pub struct Process {
    pub program: PathBuf,
    pub dir: PathBuf,
    pub user: ServerUser,
}

impl Process {
    /// The pid of the running pgbouncer of this directory, if any.
    pub fn pid(&self) -> Option<i32> {
        pid_in(&self.dir)
    }

    /// Starts pgbouncer on the files in its directory (already written) and waits until its pid
    /// file names a live process; nothing to do when it runs.
    pub fn start(&self) -> Result<i32, PoolerError> {
        if let Some(pid) = self.pid() {
            return Ok(pid);
        }
        let mut cmd: Command = self.user.command(&self.program, &self.dir);
        cmd.arg("-d").arg("-q").arg(self.dir.join(INI_FILE));
        Run::new(&mut cmd)
            .timeout(WAIT)
            .success()
            .map_err(|e| PoolerError::Start {
                reason: format!("{e}{}", self.log_tail()),
            })?;
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(pid) = self.pid() {
                return Ok(pid);
            }
            if Instant::now() > deadline {
                return Err(PoolerError::Start {
                    reason: format!("no pid file after {WAIT:?}{}", self.log_tail()),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops pgbouncer (SIGTERM: immediate shutdown, clients are disconnected) and waits for it
    /// to exit; nothing to do when it does not run.
    pub fn stop(&self) -> Result<(), PoolerError> {
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        let deadline = Instant::now() + WAIT;
        while alive(pid) {
            if Instant::now() > deadline {
                return Err(PoolerError::Start {
                    reason: format!("pgbouncer (pid {pid}) did not exit after SIGTERM"),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// SIGHUP: pgbouncer re-reads its files, like RELOAD.
    pub fn hangup(&self) -> Result<(), PoolerError> {
        let pid = self.pid().ok_or(PoolerError::NotRunning)?;
        kill(Pid::from_raw(pid), Signal::SIGHUP).map_err(|e| PoolerError::Start {
            reason: format!("SIGHUP to pgbouncer (pid {pid}): {e}"),
        })
    }

    fn log_tail(&self) -> String {
        match std::fs::read(self.dir.join(crate::render::LOG_FILE)) {
            Ok(text) => format!(
                "\nend of pgbouncer.log:\n{}",
                pgtenant_pg::process::tail(&text)
            ),
            Err(_) => String::new(),
        }
    }
}

/// The pid in `dir`'s pid file when that process is alive.
pub fn pid_in(dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(dir.join(PID_FILE)).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    alive(pid).then_some(pid)
}

fn alive(pid: i32) -> bool {
    pid > 0 && kill(Pid::from_raw(pid), None).is_ok()
}
