//! Dispatch from the parsed command to one module per tutorial step or admin group. The flows
//! they share live in `send` and `receive`; what the user sees of the engine's events in
//! `report`.

pub mod confirms;
pub mod exec;
pub mod hello;
pub mod pubsub;
pub mod queues;
pub mod receive;
pub mod report;
pub mod rpc;
pub mod send;
pub mod task;

use crate::{
    amqp::topology::{Queue, QueueType},
    cli::{self, Command, GlobalArgs, QueueTypeArg},
    context::Context,
    error::{Error, Result},
    exit::Exit,
    generate,
};
use std::io::{self, Write};

/// Output buffered before a flush.
const STDOUT_BUFFER: usize = 64 * 1024;

pub async fn run(global: &GlobalArgs, command: Command) -> Result<Exit> {
    match command {
        Command::Hello(command) => hello::run(&Context::new(global)?, command).await,
        Command::Task(command) => task::run(&Context::new(global)?, command).await,
        Command::Pubsub(command) => pubsub::run(&Context::new(global)?, command).await,
        Command::Rpc(command) => rpc::run(&Context::new(global)?, command).await,
        Command::Confirms(args) => confirms::run(&Context::new(global)?, args).await,
        Command::Queues(command) => queues::run(&Context::new(global)?, command).await,
        Command::Completions { shell } => {
            print(&generate::completion(shell))?;
            Ok(Exit::Success)
        }
    }
}

/// Writes a whole piece of output to stdout at once, and flushes it.
pub fn print(bytes: &[u8]) -> Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(Error::Output)
}

/// The durable queue `--queue NAME` names, of the type `--queue-type` asks for (quorum unless
/// given).
fn named_queue(name: &str, queue_type: &QueueTypeArg) -> Queue {
    Queue::Named {
        name: name.to_string(),
        queue_type: match queue_type.queue_type.unwrap_or(cli::QueueType::Quorum) {
            cli::QueueType::Classic => QueueType::Classic,
            cli::QueueType::Quorum => QueueType::Quorum,
        },
        explicit_type: queue_type.queue_type.is_some(),
    }
}
