//! Running the external programs (pgBackRest, pg_dump, pg_restore): their errors carry the
//! command line and the end of their output, never a password (those travel in the environment),
//! and they die with us.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sys::signal::Signal;

use crate::BackupError;

/// Lines of a program's error output quoted in errors.
const TAIL_LINES: usize = 20;

/// Makes `cmd` receive SIGTERM when the calling thread's process dies, so that a killed pgtenant
/// leaves no pg_dump or pg_restore running (a pg_restore that dies rolls its transaction back).
pub(crate) fn die_with_parent(cmd: &mut Command) {
    // Registered after any account switch the command already carries, which would clear it.
    // SAFETY: prctl is async-signal-safe and the hook allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
            Ok(())
        });
    }
}

/// Makes every file and directory `cmd` creates private to the account it runs as (umask 0077):
/// pg_dump's dumps (file or directory format), pgBackRest's repository, logs and locks (its
/// configuration says `neutral-umask=n`). Set here rather than relying on the calling process's
/// umask, since the library is used outside the CLI too.
pub fn private_output(cmd: &mut Command) {
    // SAFETY: umask is async-signal-safe and the hook allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
            Ok(())
        });
    }
}

/// The hooks every program run here gets: [`die_with_parent`] and [`private_output`].
fn child_hooks(cmd: &mut Command) {
    die_with_parent(cmd);
    private_output(cmd);
}

/// Runs `cmd` to completion; its stdout on success, else an error with its stderr's tail.
pub(crate) fn run(cmd: &mut Command) -> Result<String, BackupError> {
    child_hooks(cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let program = PathBuf::from(cmd.get_program());
    let output = cmd.output().map_err(|source| BackupError::Spawn {
        program: program.clone(),
        source,
    })?;
    if !output.status.success() {
        return Err(command_failed(
            cmd,
            &output.status.to_string(),
            &output.stderr,
            &output.stdout,
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `cmd` with its stdout discarded and its stderr captured (for programs that write data
/// elsewhere and may print a lot of notices).
pub(crate) fn run_quiet(cmd: &mut Command) -> Result<(), BackupError> {
    child_hooks(cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let program = PathBuf::from(cmd.get_program());
    let spawn_err = |source| BackupError::Spawn {
        program: program.clone(),
        source,
    };
    let mut child = cmd.spawn().map_err(spawn_err)?;
    let mut stderr = Vec::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_end(&mut stderr);
    }
    let status = child.wait().map_err(spawn_err)?;
    if !status.success() {
        return Err(command_failed(cmd, &status.to_string(), &stderr, &[]));
    }
    Ok(())
}

fn command_failed(cmd: &Command, status: &str, stderr: &[u8], stdout: &[u8]) -> BackupError {
    let mut output = tail(stderr);
    if output.trim().is_empty() {
        output = tail(stdout);
    }
    BackupError::Command {
        command: describe(cmd),
        status: status.to_string(),
        output,
    }
}

/// The program's file name and its arguments, for messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    format!("{program} {}", args.join(" "))
}

pub(crate) fn tail(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// `name` on `PATH`, as an absolute path.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Runs `producer` (which writes a SQL script to stdout) into `consumer`'s stdin, appending
/// `sentinel` only once the producer has exited successfully; the consumer is killed instead if
/// the producer fails, so it never mistakes a truncated script for a complete one.
pub(crate) fn pipe_script(
    producer: &mut Command,
    consumer: &mut Command,
    sentinel: &[u8],
) -> Result<(), BackupError> {
    use std::io::Write;
    child_hooks(producer);
    child_hooks(consumer);
    let spawn_err = |cmd: &Command| {
        let program = PathBuf::from(cmd.get_program());
        move |source| BackupError::Spawn { program, source }
    };
    producer
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    consumer
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut sink = consumer.spawn().map_err(spawn_err(consumer))?;
    let mut source = match producer.spawn() {
        Ok(child) => child,
        Err(e) => {
            let _ = sink.kill();
            let _ = sink.wait();
            return Err(spawn_err(producer)(e));
        }
    };
    // Both error streams are drained in the background so that neither program blocks on them.
    let drain = |pipe: Option<std::process::ChildStderr>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut text);
            }
            text
        })
    };
    let source_err = drain(source.stderr.take());
    let sink_err = drain(sink.stderr.take());
    let mut input = sink.stdin.take().expect("piped stdin");
    let mut output = source.stdout.take().expect("piped stdout");
    let copied = std::io::copy(&mut output, &mut input);
    drop(output);
    if copied.is_err() {
        // The consumer stopped reading (it failed); the producer may be blocked on a full pipe.
        let _ = source.kill();
    }
    let source_status = source.wait().map_err(spawn_err(producer))?;
    let complete = copied.is_ok() && source_status.success();
    if complete && input.write_all(sentinel).is_ok() {
        drop(input);
    } else {
        drop(input);
        let _ = sink.kill();
    }
    let sink_status = sink.wait().map_err(spawn_err(consumer))?;
    let source_text = source_err.join().unwrap_or_default();
    let sink_text = sink_err.join().unwrap_or_default();
    if !source_status.success() && copied.is_ok() {
        return Err(command_failed(
            producer,
            &source_status.to_string(),
            &source_text,
            &[],
        ));
    }
    if !sink_status.success() || !complete {
        return Err(command_failed(
            consumer,
            &sink_status.to_string(),
            &sink_text,
            &[],
        ));
    }
    Ok(())
}
