//! Dispatch from the parsed command to one module per tutorial step or admin group. The flows
//! they share live in `send` and `receive`; what the user sees of the engine's events in
//! `report`.

pub mod config;
pub mod confirms;
pub mod dead_letters;
pub mod exec;
pub mod hello;
pub mod moving;
pub mod peek;
pub mod pubsub;
pub mod queues;
pub mod receive;
pub mod report;
pub mod routing;
pub mod rpc;
pub mod send;
pub mod stream;
pub mod task;
pub mod topics;

use crate::{
    amqp::topology::{Queue, QueueType},
    cli::{self, Command, GlobalArgs, TopicsCommand},
    context::{Context, Status},
    error::{Error, Result},
    exit::Exit,
    generate,
};
use std::{
    io::{self, Write},
    sync::atomic::{AtomicBool, Ordering},
};

/// Output buffered before a flush.
const STDOUT_BUFFER: usize = 64 * 1024;

pub async fn run(global: &GlobalArgs, command: Command) -> Result<Exit> {
    match command {
        Command::Hello(command) => hello::run(&Context::new(global)?, command).await,
        Command::Task(command) => task::run(&Context::new(global)?, command).await,
        Command::Pubsub(command) => pubsub::run(&Context::new(global)?, command).await,
        Command::Routing(command) => routing::run(&Context::new(global)?, command).await,
        // Offline, it needs no broker settings: a bad --url does not stop it.
        Command::Topics(TopicsCommand::Match(args)) if !args.live => {
            topics::match_offline(Status::new(global), &args).await
        }
        Command::Topics(command) => topics::run(&Context::new(global)?, command).await,
        Command::Rpc(command) => rpc::run(&Context::new(global)?, command).await,
        Command::Confirms(args) => confirms::run(&Context::new(global)?, args).await,
        Command::Stream(command) => stream::run(&Context::new(global)?, command).await,
        Command::Queues(command) => queues::run(&Context::new(global)?, command).await,
        Command::Config(command) => config::run(global, command),
        Command::Completions { shell } => {
            print(&generate::completion(shell))?;
            Ok(Exit::Success)
        }
    }
}

/// Set when descriptor 1 was closed as rmqlab started.
static STDOUT_WAS_CLOSED: AtomicBool = AtomicBool::new(false);

/// To be called first, before anything opens a file or a socket: tells whether descriptor 1
/// was closed (`rmqlab ... >&-`), so that consumers refuse to start (74) rather than take
/// messages and print them nowhere. Rust's runtime puts /dev/null, opened read-write, in the
/// place of a closed standard descriptor before `main` (so that no file or socket opened later
/// takes it); a shell's `>/dev/null` opens it write-only, and stays a choice of the user's.
pub fn guard_stdout() {
    // SAFETY: fcntl, fstat, stat, open, dup2 and close work on descriptor numbers, a
    // NUL-terminated path and zeroed plain structs only.
    unsafe {
        let flags = libc::fcntl(1, libc::F_GETFL);
        if flags == -1 {
            // Not sanitized (another platform): /dev/null takes the place all the same.
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
            if null > 1 {
                libc::dup2(null, 1);
                libc::close(null);
            }
            STDOUT_WAS_CLOSED.store(true, Ordering::Relaxed);
            return;
        }
        let mut stdout: libc::stat = std::mem::zeroed();
        let mut null: libc::stat = std::mem::zeroed();
        let is_null = libc::fstat(1, &mut stdout) == 0
            && libc::stat(c"/dev/null".as_ptr(), &mut null) == 0
            && stdout.st_mode & libc::S_IFMT == libc::S_IFCHR
            && stdout.st_rdev == null.st_rdev;
        if is_null && flags & libc::O_ACCMODE == libc::O_RDWR {
            STDOUT_WAS_CLOSED.store(true, Ordering::Relaxed);
        }
    }
}

/// Whether descriptor 1 was closed as rmqlab started ([`guard_stdout`]).
pub fn stdout_was_closed() -> bool {
    STDOUT_WAS_CLOSED.load(Ordering::Relaxed)
}

/// The error of a write to a stdout that was closed as rmqlab started: Rust's runtime put
/// /dev/null in its place, where every write would succeed and be lost.
pub fn closed_stdout() -> io::Error {
    io::Error::from_raw_os_error(libc::EBADF)
}

/// Fails as a write to a closed descriptor would, when stdout was closed as rmqlab started.
pub fn check_stdout() -> io::Result<()> {
    match stdout_was_closed() {
        true => Err(closed_stdout()),
        false => Ok(()),
    }
}

/// Writes a whole piece of output to stdout at once, and flushes it.
pub fn print(bytes: &[u8]) -> Result<()> {
    check_stdout().map_err(Error::Output)?;
    let mut out = io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(Error::Output)
}

/// Writes a piece of the tutorial's text to stdout at once, and flushes it; control characters
/// are shown escaped on a terminal.
pub fn print_text(bytes: &[u8]) -> Result<()> {
    check_stdout().map_err(Error::Output)?;
    let mut out = crate::terminal::TerminalText::new(io::stdout().lock());
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(Error::Output)
}

/// The durable queue `--queue NAME` names, of the type `--queue-type` asks for (quorum unless
/// given).
fn named_queue(name: &str, queue_type: Option<cli::QueueType>) -> Queue {
    Queue::Named {
        name: name.to_string(),
        queue_type: match queue_type.unwrap_or(cli::QueueType::Quorum) {
            cli::QueueType::Classic => QueueType::Classic,
            cli::QueueType::Quorum => QueueType::Quorum,
        },
        explicit_type: queue_type.is_some(),
    }
}
