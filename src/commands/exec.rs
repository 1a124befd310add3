//! The `--exec` runner (`task work`, `rpc serve`): `sh -c COMMAND` per message with the body on
//! its stdin (its stdout rmqlab's, or captured for a reply), in a process group of its own (a Ctrl-C at the terminal reaches rmqlab, which lets the task finish, and not the
//! command), tied to rmqlab's life (a killed rmqlab leaves no orphan working on a task the broker
//! gives to another worker), its stderr passed through and its last lines kept.

use crate::{context::Status, signals::Interrupts};
use indicatif::ProgressBar;
use std::{
    future::Future,
    io::{self, Write},
    os::unix::process::ExitStatusExt,
    path::Path,
    pin::pin,
    process::{ExitStatus, Stdio},
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    process::{Child, ChildStderr, ChildStdout},
};

/// How long the command's group has between SIGTERM and SIGKILL after an abort.
pub const GRACE: Duration = Duration::from_secs(5);
/// How long the command's stderr may stay open once the command exited (a process it left
/// in the background may hold it).
const STDERR_LINGER: Duration = Duration::from_secs(1);
/// Bytes of the command's stderr kept, and lines of them reported.
const STDERR_TAIL_BYTES: usize = 4096;
const STDERR_TAIL_LINES: usize = 10;

/// How one run of the command ended.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// The last lines the command wrote on stderr.
    pub stderr_tail: String,
    /// What it wrote on stdout, when [`start`] was asked to capture it.
    pub stdout: Vec<u8>,
}

impl Finished {
    /// sh could not start the command: 127 (not found) or 126 (not executable).
    pub fn not_started(&self) -> bool {
        matches!(self.status.code(), Some(126 | 127))
    }

    /// `exit status 3`, `killed by SIGKILL (signal 9)`.
    pub fn describe(&self) -> String {
        describe(self.status)
    }
}

pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by {} (signal {signal})", signal_name(signal)),
        (None, None) => status.to_string(),
    }
}

pub fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        other => return format!("signal {other}"),
    };
    name.to_string()
}

/// Checks, before the first task is taken, that the command's first word names something sh
/// can run: with a `/`, an executable file; else a builtin, a keyword or a program on PATH.
/// Whatever it cannot be sure of (quoting, expansions, assignments, redirections first) passes:
/// sh's 126 and 127 catch it on the first task. The error is the reason.
pub fn check_startable(command: &str) -> Result<(), String> {
    let word = command
        .trim_start()
        .split(|c: char| c.is_whitespace() || ";|&<>()".contains(c))
        .next()
        .unwrap_or_default();
    let unsure = |c: char| "'\"\\$`*?[]{}~=!#".contains(c);
    if word.is_empty() || word.contains(unsure) {
        return Ok(());
    }
    if word.contains('/') {
        let path = Path::new(word);
        return match std::fs::metadata(path) {
            Err(error) => Err(format!("'{word}': {}", plain_io_error(&error))),
            Ok(meta) if meta.is_dir() => Err(format!("'{word}' is a directory")),
            Ok(_) if !executable(path) => Err(format!("'{word}' is not executable")),
            Ok(_) => Ok(()),
        };
    }
    // The shell itself knows its builtins and keywords, and searches PATH as it will.
    let known = std::process::Command::new("sh")
        .args(["-c", "command -v -- \"$1\" >/dev/null", "sh", word])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match known {
        Ok(status) if !status.success() => Err(format!(
            "'{word}' is no command sh knows (not a builtin, not found on PATH)"
        )),
        // sh itself may be missing: spawning the first task says so.
        _ => Ok(()),
    }
}

/// An io::Error's text without its `(os error N)`.
fn plain_io_error(error: &io::Error) -> String {
    let text = error.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

fn executable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return true;
    };
    // SAFETY: access() reads a NUL-terminated path.
    unsafe { libc::access(path.as_ptr(), libc::X_OK) == 0 }
}

/// A started command: its process group, which the command's own children join.
pub struct Running {
    child: Child,
    /// The group's id: the pid of the process rmqlab started.
    group: libc::pid_t,
    stderr: Option<ChildStderr>,
    /// Captured stdout, for a reply.
    stdout: Option<ChildStdout>,
    finished: bool,
}

/// Starts `sh -c COMMAND` with `env`, in a process group of its own, tied to rmqlab's life; its
/// stdout is rmqlab's, or, with `capture_stdout`, kept for [`Finished::stdout`].
pub fn start(command: &str, env: &[(&str, String)], capture_stdout: bool) -> io::Result<Running> {
    let rmqlab = std::process::id() as libc::pid_t;
    let mut sh = tokio::process::Command::new("sh");
    sh.arg("-c")
        .arg(command)
        .envs(env.iter().map(|(name, value)| (name, value)))
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if capture_stdout {
        sh.stdout(Stdio::piped());
    }
    // SAFETY: `supervise` uses only async-signal-safe calls (fork, prctl, sigaction, close,
    // waitpid, kill, _exit), as a child of a multi-threaded process must.
    unsafe {
        sh.pre_exec(move || supervise(rmqlab));
    }
    let mut child = sh.spawn()?;
    let group = child.id().expect("a child just spawned has a pid") as libc::pid_t;
    let stderr = child.stderr.take();
    let stdout = child.stdout.take();
    Ok(Running {
        child,
        group,
        stderr,
        stdout,
        finished: false,
    })
}

impl Running {
    /// Feeds `body` to the command, passes its stderr through (above `progress`), and waits for
    /// it to end.
    pub async fn finish(&mut self, body: &[u8], progress: &ProgressBar) -> io::Result<Finished> {
        let stdin = self.child.stdin.take();
        let feed = async {
            if let Some(mut stdin) = stdin {
                // A command that does not read its stdin closes it early: that is not an error.
                let _ = stdin.write_all(body).await;
            }
        };
        let mut tail = Vec::new();
        let stderr = self.stderr.take();
        let mut stdout = Vec::new();
        let captured = self.stdout.take();
        let capture = async {
            if let Some(mut captured) = captured {
                let _ = captured.read_to_end(&mut stdout).await;
            }
        };
        let status = {
            let mut reading = std::pin::pin!(pass_stderr_through(stderr, &mut tail, progress));
            let mut waiting = std::pin::pin!(async {
                let (status, (), ()) = tokio::join!(self.child.wait(), feed, capture);
                status
            });
            let mut read_all = false;
            let status = loop {
                tokio::select! {
                    status = &mut waiting => break status?,
                    () = &mut reading, if !read_all => read_all = true,
                }
            };
            if !read_all {
                let _ = tokio::time::timeout(STDERR_LINGER, reading).await;
            }
            status
        };
        self.finished = true;
        Ok(Finished {
            status,
            stderr_tail: last_lines(&tail, STDERR_TAIL_LINES),
            stdout,
        })
    }

    /// After an abort: ends the command's whole group, SIGTERM first, SIGKILL once [`GRACE`] has
    /// passed or another interrupt came.
    pub async fn end_group(&mut self, interrupts: &mut Interrupts) {
        signal_group(self.group, libc::SIGTERM);
        let seen = interrupts.received();
        let group = self.group;
        let ended = async {
            let _ = self.child.wait().await;
            // What the command started in its group may outlive it.
            while group_alive(group) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let ended = tokio::select! {
            () = ended => true,
            () = tokio::time::sleep(GRACE) => false,
            () = interrupts.wait_for(seen + 1) => false,
        };
        if !ended {
            signal_group(self.group, libc::SIGKILL);
            let _ = self.child.wait().await;
        }
        self.finished = true;
    }
}

impl Drop for Running {
    /// A run given up half-way (rmqlab is failing) leaves nothing behind.
    fn drop(&mut self) {
        if !self.finished {
            signal_group(self.group, libc::SIGKILL);
        }
    }
}

fn signal_group(group: libc::pid_t, signal: i32) {
    // SAFETY: kill() with a negative pid signals a process group; no memory is involved.
    unsafe {
        libc::kill(-group, signal);
    }
}

fn group_alive(group: libc::pid_t) -> bool {
    // SAFETY: as in `signal_group`; signal 0 only checks.
    unsafe { libc::kill(-group, 0) == 0 }
}

/// Runs the work to its end, unless a second interrupt aborts it (`None`). The first interrupt
/// only announces that rmqlab stops after this `what` (task, request).
pub async fn unless_aborted<T>(
    status: Status,
    interrupts: &mut Interrupts,
    work: impl Future<Output = T>,
    progress: &ProgressBar,
    what: &str,
) -> Option<T> {
    let mut work = pin!(work);
    let mut announced = false;
    loop {
        let seen = interrupts.received();
        if seen >= 2 {
            progress.suspend(|| {
                status.info(format_args!(
                    " [!] Aborted: the broker will redeliver the {what}"
                ))
            });
            return None;
        }
        if seen == 1 && !announced {
            announced = true;
            progress.suspend(|| {
                status.info(format_args!(
                    " [*] Stopping after the current {what} (press CTRL+C again to abort it)"
                ))
            });
        }
        tokio::select! {
            result = &mut work => return Some(result),
            () = interrupts.wait_for(seen + 1) => {}
        }
    }
}

/// Copies the command's stderr to rmqlab's as it comes, keeping the last bytes in `tail`.
async fn pass_stderr_through(
    stderr: Option<ChildStderr>,
    tail: &mut Vec<u8>,
    progress: &ProgressBar,
) {
    let Some(mut stderr) = stderr else { return };
    let mut chunk = [0u8; 4096];
    while let Ok(n @ 1..) = stderr.read(&mut chunk).await {
        // rmqlab's stderr may be gone: the command's still runs, and its tail is still kept.
        progress.suspend(|| {
            let _ = io::stderr().write_all(&chunk[..n]);
        });
        tail.extend_from_slice(&chunk[..n]);
        if tail.len() > STDERR_TAIL_BYTES {
            tail.drain(..tail.len() - STDERR_TAIL_BYTES);
        }
    }
}

/// The last `lines` lines of `bytes`, as text.
fn last_lines(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end_matches('\n');
    let kept: Vec<&str> = text.rsplit('\n').take(lines).collect();
    kept.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Runs in the child rmqlab forked, in its new process group, before `sh` is executed. It forks
/// again: the new child goes on to run `sh -c COMMAND`, and this process stays behind as the
/// command's supervisor, which rmqlab waits for. When rmqlab dies, even by SIGKILL, the kernel
/// sends the supervisor SIGHUP (`PR_SET_PDEATHSIG`), and it kills the whole group: the command
/// and whatever it started. Otherwise it waits for the command and ends as it ended. It ignores
/// SIGTERM, so that an abort's SIGTERM to the group leaves the command its grace period.
fn supervise(rmqlab: libc::pid_t) -> io::Result<()> {
    // SAFETY: only async-signal-safe calls, on this process's own state.
    unsafe {
        let supervisor = libc::getpid();
        let command = libc::fork();
        if command < 0 {
            return Err(io::Error::last_os_error());
        }
        if command == 0 {
            // The command: it dies if its supervisor is killed outright.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != supervisor {
                libc::_exit(1);
            }
            return Ok(());
        }
        // The supervisor holds no descriptor: rmqlab learns that `sh` started when the
        // command's copy of std's status pipe closes on exec, and reads EOF on the command's
        // stdin pipe and stderr only from the command.
        close_all_descriptors();
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
        libc::signal(
            libc::SIGHUP,
            kill_group as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGHUP);
        if libc::getppid() != rmqlab {
            kill_group(libc::SIGHUP);
        }
        let mut status = 0;
        loop {
            let waited = libc::waitpid(command, &mut status, 0);
            if waited == command {
                break;
            }
            if waited < 0 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(127);
            }
        }
        if libc::WIFSIGNALED(status) {
            let signal = libc::WTERMSIG(status);
            libc::signal(signal, libc::SIG_DFL);
            libc::kill(supervisor, signal);
            libc::_exit(128 + signal);
        }
        libc::_exit(libc::WEXITSTATUS(status));
    }
}

/// The supervisor's SIGHUP handler: rmqlab is gone, so is the command's group.
extern "C" fn kill_group(_: libc::c_int) {
    // SAFETY: kill(0, ..) signals the caller's own process group.
    unsafe {
        libc::kill(0, libc::SIGKILL);
    }
}

/// Closes every descriptor of the calling process.
///
/// # Safety
/// Only between fork and exec (or _exit): nothing may use a descriptor afterwards.
unsafe fn close_all_descriptors() {
    // SAFETY: close_range and close take plain numbers.
    unsafe {
        if libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) == 0 {
            return;
        }
        for fd in 0..65536 {
            libc::close(fd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_unrunnable_first_word_is_refused() {
        assert!(check_startable("./no-such-handler.sh").is_err());
        let plain = std::env::temp_dir().join(format!("rmqlab-exec-{}", std::process::id()));
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        let refused = check_startable(&format!("{} arg", plain.display()));
        std::fs::remove_file(&plain).unwrap();
        assert!(refused.unwrap_err().ends_with("is not executable"));
        assert!(check_startable("/etc").is_err(), "a directory");
        assert!(check_startable("no-such-command-rmqlab x").is_err());
    }

    #[test]
    fn builtins_programs_and_what_is_unsure_pass() {
        for command in [
            "cat >/dev/null",
            "cd /tmp && ./x",
            "exit 1",
            ":",
            "if true; then :; fi",
            "FOO=1 ./missing.sh",
            "'quoted cmd'",
            "\"$HANDLER\" arg",
            "{ echo; }",
            "(./missing.sh)",
            "cat | ./missing.sh",
            "/bin/sh -c true",
            "   ",
            "~/handler.sh",
        ] {
            assert_eq!(check_startable(command), Ok(()), "{command}");
        }
    }

    #[test]
    fn the_stderr_tail_is_its_last_lines() {
        assert_eq!(last_lines(b"a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines(b"only", 10), "only");
        assert_eq!(last_lines(b"", 10), "");
    }

    #[test]
    fn statuses_are_described() {
        assert_eq!(describe(ExitStatus::from_raw(3 << 8)), "exit status 3");
        assert_eq!(
            describe(ExitStatus::from_raw(libc::SIGKILL)),
            "killed by SIGKILL (signal 9)"
        );
    }
}
