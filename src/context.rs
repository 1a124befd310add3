//! The plain settings every command starts from, made once from the global options, and the
//! reporter of status lines on stderr. Nothing below here sees clap.

use crate::{
    cli::GlobalArgs,
    config::{Origin, Setting, Settings},
    error::{Error, Result},
    terminal::{self, escape_controls, paint_marker, write_stderr},
    tls::TlsSettings,
    uri::{BrokerUrl, BrokerUrls, StreamUrl},
};
use std::{path::PathBuf, time::Duration};

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
    /// The vhost of the `--broker` section, when it is the one in use: `queues list` lists it
    /// rather than every vhost.
    pub default_vhost: Option<String>,
}

impl Context {
    /// Turns the global options, the environment and the `--broker` section into plain
    /// settings, once, for the commands that talk to a broker; warns about a config file that
    /// shows a password to other users.
    pub fn new(global: &GlobalArgs) -> Result<Context> {
        let settings = Settings::new(global)?;
        Context::from_settings(&settings, Status::new(global))
    }

    /// Parses what `settings` holds.
    pub fn from_settings(settings: &Settings, status: Status) -> Result<Context> {
        for warning in &settings.warnings {
            status.warn(warning);
        }
        let urls = &settings.urls;
        let mut parsed = BrokerUrls::parse(
            &urls.value,
            &urls.origin.label("urls"),
            &settings.url_defaults,
        )
        .map_err(Error::InvalidUrl)?;
        if settings.shuffle_urls.value {
            // Random enough to spread clients started at the same moment.
            parsed = parsed.shuffled(uuid::Uuid::new_v4().as_u64_pair().0);
        }
        let stream_url_given = match &settings.stream_url {
            Some(raw) => Some(
                StreamUrl::parse(&settings.url_defaults.fill(&raw.value))
                    .map_err(Error::InvalidUrl)?,
            ),
            None => None,
        };
        let file = |setting: &Option<Setting<PathBuf>>| setting.as_ref().map(|s| s.value.clone());
        // A certificate without its key (or the other way) would connect without either.
        let (cert, key) = (&settings.tls_cert_file, &settings.tls_key_file);
        if let Some((given, given_key, missing)) = match (cert, key) {
            (Some(cert), None) => Some((cert, "tls_cert_file", "a --tls-key-file")),
            (None, Some(key)) => Some((key, "tls_key_file", "a --tls-cert-file")),
            _ => None,
        } {
            return Err(Error::IncompleteTls {
                given: given.origin.label(given_key),
                missing,
            });
        }
        Ok(Context {
            default_vhost: matches!(settings.vhost_origin(), Origin::Section { .. })
                .then(|| parsed.in_use().vhost().to_string()),
            urls: parsed,
            stream_url_given,
            api_url: settings
                .api_url
                .as_ref()
                .map(|url| settings.url_defaults.fill_list(&url.value)),
            tls: TlsSettings {
                ca_file: file(&settings.tls_ca_file),
                cert_file: file(&settings.tls_cert_file),
                key_file: file(&settings.tls_key_file),
                insecure: settings.tls_insecure.value,
            },
            connect_timeout: settings.connect_timeout.value,
            api_timeout: settings.api_timeout.value,
            reconnect_timeout: settings.reconnect_timeout.value,
            status,
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
