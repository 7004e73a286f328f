//! Running the external programs (pgBackRest, pg_dump, pg_restore) through
//! [`pgtenant_pg::process`]: their errors carry the command line and the end of their output, never
//! a password (those travel in the environment), they die with us, and what they create is private.

use std::process::Command;

use pgtenant_pg::process::{self as pg_process, ProcessError, Run};

use crate::BackupError;

pub use pg_process::private_output;
pub(crate) use pg_process::which;

impl From<ProcessError> for BackupError {
    fn from(error: ProcessError) -> Self {
        match error {
            ProcessError::Spawn { program, source } => BackupError::Spawn { program, source },
            failed => {
                let (program, args, status, output) = failed.parts().expect("the program ran");
                let name = program
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                BackupError::Command {
                    command: format!("{name} {}", args.join(" ")),
                    status,
                    output: output.to_string(),
                }
            }
        }
    }
}

/// Runs `cmd` to completion; its stdout on success, else an error with its stderr's tail.
pub(crate) fn run(cmd: &mut Command) -> Result<String, BackupError> {
    private_output(cmd);
    let output = Run::new(cmd).success()?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `cmd` with its stdout discarded and its stderr captured (for programs that write data
/// elsewhere and may print a lot of notices).
pub(crate) fn run_quiet(cmd: &mut Command) -> Result<(), BackupError> {
    private_output(cmd);
    Run::new(cmd).discard_stdout().success()?;
    Ok(())
}

/// [`pgtenant_pg::process::pipe_script`], both programs' output private.
pub(crate) fn pipe_script(
    producer: &mut Command,
    consumer: &mut Command,
    sentinel: &[u8],
) -> Result<(), BackupError> {
    private_output(producer);
    private_output(consumer);
    Ok(pg_process::pipe_script(producer, consumer, sentinel)?)
}
