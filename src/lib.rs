//! rmqlab: the RabbitMQ tutorials as one command-line tool, and a loss-free way to move messages
//! from a shell. `main.rs` parses the command line and calls [`run`].

pub mod amqp;
pub mod cli;
pub mod commands;
pub mod consume;
pub mod error;
pub mod generate;
pub mod input;
pub mod management;
pub mod oneshot;
pub mod output;
pub mod signals;
pub mod terminal;
pub mod tls;
pub mod uri;

pub use error::{Error, Result};

use amqp::{Context, Status};
use cli::{Cli, GlobalArgs};
use uri::{BrokerUrl, DEFAULT_URL};

/// How a command that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success,
    /// Stopped cleanly by Ctrl-C or SIGTERM.
    Interrupted,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => error::exit::SUCCESS,
            Exit::Interrupted => error::exit::INTERRUPTED,
        }
    }
}

/// Runs one parsed command line. Must be called inside a tokio runtime.
pub async fn run(cli: Cli) -> Result<Exit> {
    commands::run(&cli.global, cli.command).await
}

/// Turns the global options into plain settings, once, for the commands that talk to a broker.
pub(crate) fn context(global: &GlobalArgs) -> Result<Context> {
    // clap already read RMQLAB_URL into `url`; AMQP_URL is the conventional fallback.
    let raw = global
        .url
        .clone()
        .or_else(|| std::env::var("AMQP_URL").ok().filter(|url| !url.is_empty()))
        .unwrap_or_else(|| DEFAULT_URL.to_string());
    Ok(Context {
        url: BrokerUrl::parse(&raw).map_err(Error::InvalidUrl)?,
        api_url: global.api_url.clone().filter(|url| !url.is_empty()),
        tls: tls::TlsSettings {
            ca_file: global.tls_ca_file.clone(),
            cert_file: global.tls_cert_file.clone(),
            key_file: global.tls_key_file.clone(),
            insecure: global.tls_insecure,
        },
        connect_timeout: global.connect_timeout,
        reconnect_timeout: global.reconnect_timeout,
        status: Status {
            quiet: global.quiet,
            verbose: global.verbose,
            color: terminal::stderr_color(global.color),
            progress: terminal::Progress {
                allowed: terminal::progress_allowed(global.quiet),
            },
        },
    })
}
