//! Running client and server programs (pg_dump, pg_restore, psql, pgBackRest, initdb, pg_ctl):
//! they die with the thread that started them, their errors carry the command line and the end of
//! their output (never a password: those travel in the environment), and a run can be bounded in time.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

/// Lines of a program's output quoted in errors.
pub const TAIL_LINES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("could not run {}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "`{}` failed ({status}){}",
        command_line(program, args),
        indent(output)
    )]
    Failed {
        program: PathBuf,
        args: Vec<String>,
        status: ExitStatus,
        /// The tail of its stderr (of its stdout when stderr was empty).
        output: String,
    },
    #[error("`{}` did not finish within {} s and was killed{}", command_line(program, args), after.as_secs_f32(), indent(output))]
    TimedOut {
        program: PathBuf,
        args: Vec<String>,
        after: Duration,
        output: String,
    },
}

impl ProcessError {
    /// The program as named in the command, its arguments, a status text and the output tail of a
    /// program that ran (None for one that could not be started): for crates whose errors
    /// present failed commands their own way.
    pub fn parts(&self) -> Option<(&Path, &[String], String, &str)> {
        match self {
            ProcessError::Spawn { .. } => None,
            ProcessError::Failed {
                program,
                args,
                status,
                output,
            } => Some((program, args, status.to_string(), output)),
            ProcessError::TimedOut {
                program,
                args,
                after,
                output,
            } => Some((
                program,
                args,
                format!("killed after {} s", after.as_secs_f32()),
                output,
            )),
        }
    }
}

fn command_line(program: &Path, args: &[String]) -> String {
    let mut line = program.display().to_string();
    for arg in args {
        line.push(' ');
        line.push_str(arg);
    }
    line
}

fn indent(output: &str) -> String {
    output.lines().map(|line| format!("\n  {line}")).collect()
}

/// Makes `cmd` receive `signal` when the thread that starts it dies, so that a killed pgtenant
/// leaves no program running (a pg_restore that dies rolls its transaction back; a server gets
/// SIGQUIT, the immediate shutdown). [`Run`] does this itself with SIGTERM.
pub fn die_with_parent(cmd: &mut Command, signal: Signal) {
    // Registered after any account switch the command already carries, which would clear it.
    // SAFETY: prctl is async-signal-safe and the hook allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(signal)?;
            Ok(())
        });
    }
}

/// Makes every file and directory `cmd` creates private to the account it runs as (umask 0077).
pub fn private_output(cmd: &mut Command) {
    // SAFETY: umask is async-signal-safe and the hook allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
            Ok(())
        });
    }
}

/// The program's file name and its arguments, for messages.
pub fn describe(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    command_line(Path::new(&program), &args_of(cmd))
}

fn args_of(cmd: &Command) -> Vec<String> {
    cmd.get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// The last [`TAIL_LINES`] non-blank lines of `text`.
pub fn tail(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// Whether `path` is a regular file someone may execute.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `name` on `PATH`, as an absolute path.
pub fn which(name: impl AsRef<OsStr>) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name.as_ref()))
        .find(|candidate| is_executable(candidate))
}

fn spawn_error(cmd: &Command) -> impl FnOnce(std::io::Error) -> ProcessError {
    let program = PathBuf::from(cmd.get_program());
    move |source| ProcessError::Spawn { program, source }
}

fn failed(cmd: &Command, status: ExitStatus, stderr: &[u8], stdout: &[u8]) -> ProcessError {
    let mut output = tail(stderr);
    if output.trim().is_empty() {
        output = tail(stdout);
    }
    ProcessError::Failed {
        program: PathBuf::from(cmd.get_program()),
        args: args_of(cmd),
        status,
        output,
    }
}

/// Drains a pipe in the background, so that the program never blocks on a full one.
fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut text = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut text);
        }
        text
    })
}

/// One run of a program: stdin from `stdin` (else none), stdout and stderr captured, the
/// program killed with the calling thread (SIGTERM) and, with a timeout, when time is up.
pub struct Run<'a> {
    cmd: &'a mut Command,
    stdin: Option<&'a [u8]>,
    timeout: Option<Duration>,
    keep_stdout: bool,
}

impl<'a> Run<'a> {
    pub fn new(cmd: &'a mut Command) -> Self {
        Run {
            cmd,
            stdin: None,
            timeout: None,
            keep_stdout: true,
        }
    }

    pub fn stdin(mut self, input: &'a [u8]) -> Self {
        self.stdin = Some(input);
        self
    }

    /// Kills the program (and, as it then leads its own process group, everything it started)
    /// when it has not finished after `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// For programs that write their data elsewhere and may print a lot: stdout goes nowhere.
    pub fn discard_stdout(mut self) -> Self {
        self.keep_stdout = false;
        self
    }

    /// Runs to completion and returns what it printed, whatever its exit status.
    pub fn output(mut self) -> Result<Output, ProcessError> {
        self.execute()
    }

    /// [`Self::output`], a failing exit status being an error with the output's tail.
    pub fn success(mut self) -> Result<Output, ProcessError> {
        let output = self.execute()?;
        if !output.status.success() {
            return Err(failed(
                self.cmd,
                output.status,
                &output.stderr,
                &output.stdout,
            ));
        }
        Ok(output)
    }

    fn execute(&mut self) -> Result<Output, ProcessError> {
        let (stdin, timeout, keep_stdout) = (self.stdin, self.timeout, self.keep_stdout);
        let cmd = &mut *self.cmd;
        die_with_parent(cmd, Signal::SIGTERM);
        if timeout.is_some() {
            cmd.process_group(0);
        }
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(if keep_stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(spawn_error(cmd))?;
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let feeder = match (stdin, child.stdin.take()) {
            (Some(input), Some(mut pipe)) => {
                let input = input.to_vec();
                // A program that exits early closes the pipe; its status and stderr tell why.
                Some(std::thread::spawn(move || match pipe.write_all(&input) {
                    Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e),
                    _ => Ok(()),
                }))
            }
            _ => None,
        };
        let status = match wait(&mut child, timeout) {
            Ok(Some(status)) => status,
            Ok(None) => {
                let after = timeout.expect("only a run with a timeout times out");
                // The whole group: a shell's children hold the output pipes open too.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    Signal::SIGKILL,
                );
                let _ = child.wait();
                let err = stderr.join().unwrap_or_default();
                let out = stdout.join().unwrap_or_default();
                let mut output = tail(&err);
                if output.is_empty() {
                    output = tail(&out);
                }
                return Err(ProcessError::TimedOut {
                    program: PathBuf::from(cmd.get_program()),
                    args: args_of(cmd),
                    after,
                    output,
                });
            }
            Err(e) => return Err(spawn_error(cmd)(e)),
        };
        if let Some(feeder) = feeder {
            if let Ok(Err(e)) = feeder.join() {
                return Err(spawn_error(cmd)(e));
            }
        }
        Ok(Output {
            status,
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        })
    }
}

/// Waits for `child`, at most `timeout`: None when time ran out first.
fn wait(child: &mut Child, timeout: Option<Duration>) -> std::io::Result<Option<ExitStatus>> {
    let Some(timeout) = timeout else {
        return child.wait().map(Some);
    };
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Runs `producer` (which writes a SQL script to stdout) into `consumer`'s stdin, appending
/// `sentinel` only once the producer has exited successfully; the consumer is killed instead if
/// the producer fails, so it never mistakes a truncated script for a complete one. Both die with
/// the calling thread.
pub fn pipe_script(
    producer: &mut Command,
    consumer: &mut Command,
    sentinel: &[u8],
) -> Result<(), ProcessError> {
    die_with_parent(producer, Signal::SIGTERM);
    die_with_parent(consumer, Signal::SIGTERM);
    producer
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    consumer
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut sink = consumer.spawn().map_err(spawn_error(consumer))?;
    let mut source = match producer.spawn() {
        Ok(child) => child,
        Err(e) => {
            let _ = sink.kill();
            let _ = sink.wait();
            return Err(spawn_error(producer)(e));
        }
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
    let source_status = source.wait().map_err(spawn_error(producer))?;
    let complete = copied.is_ok() && source_status.success();
    if complete && input.write_all(sentinel).is_ok() {
        drop(input);
    } else {
        drop(input);
        let _ = sink.kill();
    }
    let sink_status = sink.wait().map_err(spawn_error(consumer))?;
    let source_text = source_err.join().unwrap_or_default();
    let sink_text = sink_err.join().unwrap_or_default();
    if !source_status.success() && copied.is_ok() {
        return Err(failed(producer, source_status, &source_text, &[]));
    }
    if !sink_status.success() || !complete {
        return Err(failed(consumer, sink_status, &sink_text, &[]));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    #[test]
    fn failure_quotes_the_last_lines_of_stderr() {
        let mut cmd = sh("for i in $(seq 1 30); do echo line$i >&2; echo; done; exit 3");
        let err = Run::new(&mut cmd).success().unwrap_err();
        let ProcessError::Failed { status, output, .. } = &err else {
            panic!("expected Failed, got {err:?}");
        };
        assert_eq!(status.code(), Some(3));
        let lines: Vec<&str> = output.lines().collect();
        assert_eq!(lines.len(), TAIL_LINES, "{output}");
        assert_eq!((lines[0], lines[19]), ("line11", "line30"));
        let message = err.to_string();
        assert!(
            message.starts_with("`sh -c for i in"),
            "the command line leads: {message}"
        );
        assert!(message.ends_with("\n  line29\n  line30"), "{message}");
        // Nothing on stderr: stdout's tail explains instead (pgBackRest reports there).
        let mut quiet = sh("echo on stdout; exit 1");
        match Run::new(&mut quiet).success().unwrap_err() {
            ProcessError::Failed { output, .. } => assert_eq!(output, "on stdout"),
            other => panic!("expected Failed, got {other:?}"),
        }
        let mut ok = sh("exit 4");
        assert_eq!(Run::new(&mut ok).output().unwrap().status.code(), Some(4));
    }

    #[test]
    fn stdin_is_fed_and_stdout_returned() {
        let input = vec![b'x'; 1 << 20];
        let mut cmd = Command::new("cat");
        let output = Run::new(&mut cmd).stdin(&input).success().unwrap();
        assert_eq!(output.stdout, input, "more than a pipe buffer, no deadlock");
        let mut cmd = sh("echo dropped");
        let output = Run::new(&mut cmd).discard_stdout().success().unwrap();
        assert!(output.stdout.is_empty());
        let mut missing = Command::new("/nonexistent/pgtenant-test-program");
        assert!(matches!(
            Run::new(&mut missing).output(),
            Err(ProcessError::Spawn { .. })
        ));
    }

    #[test]
    fn timeout_kills_the_program_and_what_it_started() {
        // The shell's child keeps the output pipes open: only killing the group ends the run.
        let mut cmd = sh("echo started >&2; sleep 30; echo never");
        let started = Instant::now();
        let err = Run::new(&mut cmd)
            .timeout(Duration::from_millis(300))
            .output()
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        match &err {
            ProcessError::TimedOut { after, output, .. } => {
                assert_eq!(*after, Duration::from_millis(300));
                assert_eq!(output, "started");
            }
            other => panic!("expected TimedOut, got {other:?}"),
        }
        assert!(
            err.to_string().contains("did not finish within 0.3 s"),
            "{err}"
        );
        let mut quick = sh("echo done");
        let output = Run::new(&mut quick)
            .timeout(Duration::from_secs(30))
            .success()
            .unwrap();
        assert_eq!(output.stdout, b"done\n");
    }

    #[test]
    fn spawned_program_gets_the_signal_when_its_thread_ends() {
        let child = std::thread::spawn(|| {
            let mut cmd = Command::new("sleep");
            cmd.arg("30");
            die_with_parent(&mut cmd, Signal::SIGTERM);
            cmd.spawn().unwrap()
        })
        .join()
        .unwrap();
        let mut child = child;
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(Signal::SIGTERM as i32), "{status}");
    }

    /// Environment variable that turns [`parent_role`] into a pgtenant-like parent process.
    const PARENT_ROLE: &str = "PGTENANT_PG_TEST_PARENT_PIDFILE";

    /// Not a test on its own: run by [`child_dies_with_its_parent_process`] in a separate process,
    /// it starts a long program through [`Run`] and is then killed.
    #[test]
    fn parent_role() {
        let Some(pidfile) = std::env::var_os(PARENT_ROLE) else {
            return;
        };
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"echo $$ > "$1.tmp"; mv "$1.tmp" "$1"; exec sleep 60"#)
            .arg("sh")
            .arg(pidfile);
        let _ = Run::new(&mut cmd).output();
    }

    fn alive(pid: i32) -> bool {
        // A zombie has exited already (its parent, now init, reaps it in its own time).
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit(") ")
                .next()
                .is_some_and(|s| !s.starts_with('Z'))
        })
    }

    #[test]
    fn child_dies_with_its_parent_process() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        let mut parent = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "process::tests::parent_role", "--test-threads=1"])
            .env(PARENT_ROLE, &pidfile)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let pid: i32 = loop {
            if let Ok(text) = std::fs::read_to_string(&pidfile) {
                break text.trim().parse().unwrap();
            }
            assert!(Instant::now() < deadline, "the child never started");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(alive(pid));
        parent.kill().unwrap();
        parent.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(pid) {
            assert!(
                Instant::now() < deadline,
                "child {pid} outlived its killed parent"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
