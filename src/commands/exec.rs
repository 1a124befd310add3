//! `--exec COMMAND` (`task work`, `rpc serve`): COMMAND run through `sh -c` for each message,
//! the body on its stdin, in a process group of its own, so that a Ctrl-C at the terminal stops
//! rmqlab after the message rather than killing the command half-way.

use crate::{
    context::Status,
    error::{Error, Result},
    signals::Interrupts,
};
use indicatif::ProgressBar;
use lapin::message::Delivery;
use std::{future::Future, os::unix::process::ExitStatusExt, pin::pin, process::Stdio};
use tokio::io::AsyncWriteExt;

/// What the command printed, and how it ended.
pub struct Finished {
    /// Its exit code, or 128 + the signal that killed it, as a shell reports it.
    pub code: i32,
    /// Its standard output, when captured.
    pub stdout: Vec<u8>,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

/// Runs `sh -c COMMAND` with the body of `delivery` on its stdin; its stdout is the caller's,
/// or captured. A command that cannot be started (no `sh`, or the shell's 126 and 127: not
/// executable, not found) is an error, [`Error::Exec`]: the message must go back to the queue.
pub async fn run_exec(command: &str, delivery: &Delivery, capture: bool) -> Result<Finished> {
    let cannot_start = |source| Error::Exec {
        command: command.to_string(),
        source,
    };
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .env(
            "RMQLAB_REDELIVERED",
            if delivery.redelivered { "1" } else { "0" },
        )
        .env("RMQLAB_ROUTING_KEY", delivery.routing_key.as_str())
        .stdin(Stdio::piped())
        .stdout(if capture {
            Stdio::piped()
        } else {
            Stdio::inherit()
        })
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(cannot_start)?;
    let mut stdin = child.stdin.take().expect("stdin was piped");
    let feed = async {
        // A command that does not read its stdin closes it early: that is not an error.
        let _ = stdin.write_all(&delivery.data).await;
        drop(stdin);
    };
    let (output, ()) = tokio::join!(child.wait_with_output(), feed);
    let output = output.map_err(cannot_start)?;
    let code = match (output.status.code(), output.status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 128,
    };
    if code == 126 || code == 127 {
        return Err(cannot_start(std::io::Error::other(format!(
            "sh exited {code}: the command was not found or is not executable"
        ))));
    }
    Ok(Finished {
        code,
        stdout: output.stdout,
    })
}

/// Runs the work to its end, unless a second interrupt aborts it (`None`). The first interrupt
/// only announces that rmqlab stops after this message.
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
