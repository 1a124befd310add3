//! rmqlab: the RabbitMQ tutorials as one command-line tool, and a loss-free way to move messages
//! from a shell. `main.rs` parses the command line and calls [`run`].
//!
//! Layers: `cli` (clap types) → `context` (plain settings, the stderr reporter) → `commands/`
//! (what the user sees) → `amqp/` (the engine: topology, connect, publish, consume, reconnect;
//! it reports and never prints) and `management` (the HTTP API). `output` and `terminal` format
//! stdout and draw on stderr for `commands/`; `topic` reads routing and binding keys (pure).

pub mod amqp;
pub mod cli;
pub mod commands;
pub mod complete;
pub mod config;
pub mod context;
pub mod error;
pub mod exit;
pub mod generate;
pub mod input;
pub mod management;
pub mod message;
pub mod output;
pub mod signals;
pub mod terminal;
pub mod tls;
pub mod topic;
pub mod uri;

pub use error::{Error, Result};

use cli::Cli;
pub use exit::Exit;

/// Runs one parsed command line. Must be called inside a tokio runtime.
pub async fn run(cli: Cli) -> Result<Exit> {
    commands::run(&cli.global, cli.command).await
}
