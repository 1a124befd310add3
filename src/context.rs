//! The plain settings every command starts from, made once from the global options, and the
//! reporter of status lines on stderr. Nothing below here sees clap.

use crate::{
    cli::GlobalArgs,
    error::{Error, Result},
    terminal::{self, escape_controls, paint_marker, write_stderr},
    tls::TlsSettings,
    uri::{BrokerUrl, BrokerUrls, DEFAULT_URL, StreamUrl},
};
use std::time::Duration;

/// Where to connect and how to report.
#[derive(Debug, Clone)]
pub struct Context {
    /// `--url`: one broker, or the nodes of a cluster in the order they are tried.
    pub urls: BrokerUrls,
    /// `--stream-url`, when given; else the stream port beside each of `urls`.
    pub stream_url_given: Option<StreamUrl>,
    /// How long to keep trying to reconnect after a lost connection (zero: never).
    pub reconnect_timeout: Duration,
    pub tls: TlsSettings,
    /// `--api-url`, parsed only by the commands that use the management API.
    pub api_url: Option<String>,
    pub connect_timeout: Duration,
    /// `--api-timeout`: how long one management API request may take.
    pub api_timeout: Duration,
    pub status: Status,
}

impl Context {
    /// Turns the global options into plain settings, once, for the commands that talk to a
    /// broker.
    pub fn new(global: &GlobalArgs) -> Result<Context> {
        // The options first, then RMQLAB_URL, then AMQP_URL, the conventional one.
        let from_env = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let (values, source) = match global.url.is_empty() {
            false => (global.url.clone(), "--url"),
            true => match (from_env("RMQLAB_URL"), from_env("AMQP_URL")) {
                (Some(value), _) => (vec![value], "RMQLAB_URL"),
                (None, Some(value)) => (vec![value], "AMQP_URL"),
                (None, None) => (vec![DEFAULT_URL.to_string()], "the default"),
            },
        };
        let mut urls = BrokerUrls::parse(&values, source).map_err(Error::InvalidUrl)?;
        if global.shuffle_urls {
            // Random enough to spread clients started at the same moment.
            urls = urls.shuffled(uuid::Uuid::new_v4().as_u64_pair().0);
        }
        let stream_url_given = match global
            .stream_url
            .clone()
            .filter(|url| !url.is_empty())
            .or_else(|| from_env("RMQLAB_STREAM_URL"))
        {
            Some(raw) => Some(StreamUrl::parse(&raw).map_err(Error::InvalidUrl)?),
            None => None,
        };
        Ok(Context {
            urls,
            stream_url_given,
            api_url: global
                .api_url
                .clone()
                .filter(|url| !url.is_empty())
                .or_else(|| from_env("RMQLAB_API_URL")),
            tls: TlsSettings {
                ca_file: global.tls_ca_file.clone(),
                cert_file: global.tls_cert_file.clone(),
                key_file: global.tls_key_file.clone(),
                insecure: global.tls_insecure,
            },
            connect_timeout: global.connect_timeout,
            api_timeout: global.api_timeout,
            reconnect_timeout: global.reconnect_timeout,
            status: Status::new(global),
        })
    }

    /// The broker URL in use: the one connected to last, else the first to try.
    pub fn url(&self) -> &BrokerUrl {
        self.urls.in_use()
    }
}

/// Status and diagnostic lines on stderr; stdout carries data only.
#[derive(Debug, Clone, Copy)]
pub struct Status {
    pub quiet: bool,
    pub verbose: bool,
    /// Colour the status markers.
    pub color: bool,
    pub progress: terminal::Progress,
}

impl Status {
    /// The reporter the global options ask for.
    pub fn new(global: &GlobalArgs) -> Status {
        Status {
            quiet: global.quiet,
            verbose: global.verbose,
            color: terminal::stderr_color(global.color),
            progress: terminal::Progress {
                allowed: terminal::progress_allowed(global.quiet),
            },
        }
    }

    /// No status lines, no colour, no progress.
    pub fn silent() -> Status {
        Status {
            quiet: true,
            verbose: false,
            color: false,
            progress: terminal::Progress { allowed: false },
        }
    }

    pub fn info(&self, line: impl std::fmt::Display) {
        if !self.quiet {
            self.warn(line);
        }
    }

    /// A warning: something the user should know even with `--quiet`.
    pub fn warn(&self, line: impl std::fmt::Display) {
        let line = line.to_string();
        let line = escape_controls(&line, false);
        write_stderr(&format!("{}\n", paint_marker(&line, self.color)));
    }

    pub fn debug(&self, line: impl std::fmt::Display) {
        if self.verbose {
            let line = line.to_string();
            write_stderr(&format!("rmqlab: {}\n", escape_controls(&line, false)));
        }
    }
}
