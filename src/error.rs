//! The one error type of rmqlab, its exit codes (sysexits) and its hints.

use crate::{exit::Code, signals::Stop, uri::InvalidUrl};
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use std::{io, time::Duration};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of object a declaration is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Queue,
    Exchange,
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ObjectKind::Queue => "queue",
            ObjectKind::Exchange => "exchange",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidUrl(InvalidUrl),

    #[error("cannot reach the broker at {url}")]
    Unreachable {
        url: String,
        #[source]
        source: Box<lapin::Error>,
    },

    #[error("TLS to {url} failed: {}", if *.client_certificate {
        "the server refused the TLS session (does it want a client certificate?)"
    } else {
        "the server's certificate was not accepted"
    })]
    TlsRefused {
        url: String,
        /// The server refused rmqlab's certificate (or the lack of one), not the other way.
        client_certificate: bool,
        #[source]
        source: Box<lapin::Error>,
    },

    #[error("TLS setup: {context}")]
    Tls {
        context: String,
        #[source]
        source: rustls::Error,
    },

    #[error("no answer from the broker at {url} within {}", humantime::format_duration(*.after))]
    ConnectTimeout { url: String, after: Duration },

    /// Every URL of a list failed. `chief` is the failure that tells most (a refusal before an
    /// unreachable node) and sets the exit code and hint; `others` are shown after it.
    #[error("could not connect to any of the {} {what}", .others.len() + 1)]
    NoUrlConnected {
        /// "broker URLs", "management API URLs".
        what: &'static str,
        #[source]
        chief: Box<Error>,
        others: Vec<Error>,
    },

    #[error("the broker at {url} refused the login of user '{user}'")]
    LoginRefused {
        url: String,
        user: String,
        /// `guest` connecting to a broker on another host: RabbitMQ refuses that by default.
        guest_from_afar: bool,
        #[source]
        source: Box<lapin::Error>,
    },

    /// A plain `amqp://` connection that the server took, then answered with silence or
    /// something else than AMQP: most often a TLS listener.
    #[error(
        "the server at {url} took the connection but did not answer AMQP: is port {port} a TLS \
         listener?"
    )]
    NotAmqp {
        url: String,
        port: u16,
        /// No answer within --connect-timeout (75), rather than a wrong one (69).
        timed_out: bool,
    },

    #[error("TLS to {url} failed: the server did not answer TLS: is port {port} a TLS listener?")]
    NotTls {
        url: String,
        port: u16,
        #[source]
        source: Box<lapin::Error>,
    },

    #[error("the broker at {url} has no virtual host '{vhost}'")]
    VhostNotFound {
        url: String,
        vhost: String,
        #[source]
        source: Box<lapin::Error>,
    },

    #[error("the broker at {url} refused access to virtual host '{vhost}'")]
    VhostRefused {
        url: String,
        vhost: String,
        #[source]
        source: Box<lapin::Error>,
    },

    #[error("{kind} '{name}' already exists with other properties: {difference}")]
    Mismatch {
        kind: ObjectKind,
        name: String,
        difference: String,
        #[source]
        source: Box<lapin::Error>,
    },

    #[error("the broker refused message {number} (nack): it was not stored")]
    Nacked { number: u64 },

    #[error("message {number} was returned as unroutable: {reason}")]
    Unroutable { number: u64, reason: String },

    #[error("lost the connection to the broker: {context}")]
    ConnectionLost { context: String },

    #[error("could not reconnect to the broker within {}", humantime::format_duration(*.after))]
    ReconnectFailed {
        after: Duration,
        #[source]
        source: Box<Error>,
    },

    #[error("publishing stopped after {confirmed} confirmed message(s)")]
    PublishInterrupted {
        confirmed: u64,
        /// `-f PATH`, to show how to resume; None for stdin and words.
        input: Option<String>,
        #[source]
        source: Box<Error>,
    },

    #[error(
        "the broker confirmed no message within {} (--confirm-timeout)",
        humantime::format_duration(*.after)
    )]
    ConfirmTimeout { after: Duration },

    #[error(
        "line {line} of {path} is longer than --max-message-size ({limit} bytes): not published"
    )]
    LineTooLong { path: String, line: u64, limit: u64 },

    #[error("line {line} of {path} is not a message: {reason}")]
    NotAMessage {
        path: String,
        line: u64,
        reason: String,
    },

    #[error(
        "cannot write the report to standard output; all {confirmed} message(s) were still \
         published and confirmed"
    )]
    ReportLost {
        confirmed: u64,
        #[source]
        source: io::Error,
    },

    #[error("the broker cancelled the consumer of queue '{queue}' (was the queue deleted?)")]
    ConsumerCancelled { queue: String },

    #[error("{context}")]
    Broker {
        context: String,
        #[source]
        source: Box<lapin::Error>,
    },

    #[error("cannot reach the management API at {url}")]
    ApiUnreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    #[error(
        "no answer from the management API at {url} within {} ({option})",
        humantime::format_duration(*.after)
    )]
    ApiTimeout {
        url: String,
        after: Duration,
        /// The option that set the limit: `--api-timeout`, or `--connect-timeout`.
        option: &'static str,
    },

    #[error("{url} is not a RabbitMQ management API: {reason}")]
    NotManagementApi { url: String, reason: String },

    #[error(
        "the management API failed for {} (--reconnect-timeout)",
        humantime::format_duration(*.after)
    )]
    RefreshFailed {
        after: Duration,
        #[source]
        source: Box<Error>,
    },

    #[error("the management API at {url} refused user '{user}'{}", reason_suffix(.reason))]
    ApiRefused {
        url: String,
        user: String,
        reason: String,
    },

    #[error("the broker refused to delete queue '{queue}': {reason}")]
    DeleteRefused { queue: String, reason: String },

    #[error("{what} not found")]
    ApiNotFound { what: String },

    /// A name of `.` or `..` in an API path: URLs resolve it as a path step, so the request
    /// would reach another object (`/api/queues/%2F/./contents` is the queue `contents`).
    #[error(
        "the management API cannot address a queue, exchange or vhost named '{name}': \
         in its URL '{name}' would name another object"
    )]
    ApiDotName { name: String },

    #[error("the management API at {url} answered {status}{}", reason_suffix(.reason))]
    ApiStatus {
        url: String,
        status: u16,
        reason: String,
    },

    #[error("the management API at {url} sent an answer rmqlab cannot read: {reason}")]
    ApiAnswer { url: String, reason: String },

    #[error("management API request to {url} failed")]
    Api {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("cannot read the config file {path}")]
    ConfigUnreadable {
        path: String,
        #[source]
        source: io::Error,
    },

    #[error("--broker needs a config file, and neither XDG_CONFIG_HOME nor HOME is set")]
    ConfigNotFound,

    #[error("{path}{}: {message}", .line.map(|line| format!(":{line}")).unwrap_or_default())]
    Config {
        path: String,
        line: Option<usize>,
        message: String,
    },

    #[error("no broker '{name}' in {path}: {}", match .known.is_empty() {
        true => "it has no [broker.NAME] section".to_string(),
        false => format!("it has {}", .known.join(", ")),
    })]
    UnknownBroker {
        name: String,
        path: String,
        known: Vec<String>,
    },

    #[error(
        "RMQLAB_BROKER={broker} and {} are both set in the environment, and neither says which \
         broker is meant",
        .variables.join(", ")
    )]
    BrokerAndAddressInEnv {
        broker: String,
        variables: Vec<&'static str>,
    },

    #[error("a client certificate or key from {given} needs {missing} too")]
    IncompleteTls {
        given: String,
        missing: &'static str,
    },

    #[error("invalid {name}: {reason}")]
    InvalidVariable { name: &'static str, reason: String },

    #[error("cannot read {path}")]
    Input {
        path: String,
        #[source]
        source: io::Error,
    },

    #[error("line {line} of {input} is not a routing key: {reason}")]
    InvalidKey {
        input: String,
        line: u64,
        reason: String,
    },

    #[error(
        "the broker and rmqlab's own matcher disagree on {count} key(s): a bug in rmqlab, please \
         report it"
    )]
    MatcherDisagrees { count: usize },

    #[error("cannot write to standard output")]
    Output(#[source] io::Error),

    #[error("cannot run --exec command '{command}'")]
    Exec {
        command: String,
        #[source]
        source: io::Error,
    },

    #[error("the --exec command '{command}' cannot be started: {reason}")]
    ExecNotStarted { command: String, reason: String },

    #[error("the broker did not take the task into queue '{queue}': {reason}")]
    Forward { queue: String, reason: String },

    #[error(
        "the broker did not take a message into {to}: {reason}; the move stopped there: {moved} \
         message(s) were moved, and it and {left} other(s) not confirmed are still in queue \
         '{source_queue}'"
    )]
    NotMoved {
        to: String,
        reason: String,
        moved: u64,
        left: u64,
        source_queue: String,
    },

    #[error("nothing moved: {reason}")]
    MoveRefused { reason: String },

    #[error("{queue_type} queue '{queue}' refused: {reason}")]
    PeekRefused {
        queue: String,
        queue_type: String,
        reason: String,
    },

    #[error("{}", tasks_failed(*.parked, *.dead_lettered, .parking_queue))]
    TasksFailed {
        parked: u64,
        dead_lettered: u64,
        parking_queue: String,
    },

    #[error(
        "a task failed on every try ({reason}): it is back in the queue, and the worker stopped \
         (--on-failure stop)"
    )]
    TaskStopped { reason: String },

    #[error(
        "queue '{queue}' {}: --on-failure dead-letter would drop failed tasks",
        if *.exists { "has no dead-letter exchange" } else { "does not exist yet, so it has no dead-letter exchange" }
    )]
    NoDeadLetterExchange { queue: String, exists: bool },

    #[error("the broker refused the reply to '{to}' (nack)")]
    ReplyNacked { to: String },

    /// The broker closed the publishing channel while the connection stayed: over a message it
    /// refuses, never a reason to reconnect and send everything again.
    #[error("the broker closed the channel: {source}")]
    ChannelClosed {
        #[source]
        source: Box<Error>,
    },

    /// The replies stopped before the request `number` (refused, or the next one) with those to
    /// `unanswered` requests sent before it still to come: the broker closed the channel they
    /// come to (Direct Reply-To) over the refused one, or the connection went (after `refused`).
    #[error("{}", replies_lost(*.unanswered, *.number, *.connection, *.refused))]
    RepliesLost {
        number: u64,
        unanswered: usize,
        connection: bool,
        refused: Option<u64>,
        /// Through Direct Reply-To (an exclusive reply queue would have kept them).
        direct: bool,
        #[source]
        source: Box<Error>,
    },

    #[error("no queue '{queue}' to take the request: {reason}")]
    NoRequestQueue { queue: String, reason: String },

    #[error("no reply to request {number} within {}", humantime::format_duration(*.after))]
    NoReply {
        number: u64,
        queue: String,
        after: Duration,
        /// The request queue's consumers when the time ran out, if it could be seen.
        consumers: Option<u32>,
    },

    #[error("the server could not answer request {number}: {reason}")]
    ServerError { number: u64, reason: String },

    #[error("queue '{queue}' holds {found} message(s) where {expected} were confirmed")]
    QueueDepth {
        queue: String,
        expected: u64,
        found: u64,
    },

    #[error("cannot reach the stream protocol at {url}")]
    StreamUnreachable {
        url: String,
        #[source]
        source: io::Error,
    },

    #[error("the broker at {url} closed the stream connection during the handshake: {reason}")]
    StreamHandshake { url: String, reason: String },

    #[error("the broker at {url} refused the stream connection: {reason}")]
    StreamRefused { url: String, reason: String },

    #[error("'{name}' is a queue of another type, not a stream")]
    NotAStream { name: String },

    #[error("stream '{name}' does not exist")]
    NoStream { name: String },

    #[error("{context}: {reason}")]
    Stream { context: String, reason: String },

    #[error("lost the stream connection: {context}")]
    StreamLost { context: String },

    #[error("cannot start the async runtime")]
    Runtime(#[source] io::Error),

    /// Ctrl-C or SIGTERM before anything was done (while connecting, waiting for the API):
    /// rmqlab ends by that signal, saying nothing.
    #[error("interrupted")]
    Interrupted(Stop),
}

impl Error {
    /// Wraps a lapin error with what rmqlab was doing when it happened.
    pub fn broker(context: impl Into<String>) -> impl FnOnce(lapin::Error) -> Error {
        let context = context.into();
        move |source| Error::Broker {
            context,
            source: Box::new(source),
        }
    }

    pub fn exit_code(&self) -> Code {
        match self {
            Error::InvalidUrl(_)
            | Error::InvalidKey { .. }
            | Error::BrokerAndAddressInEnv { .. }
            | Error::InvalidVariable { .. }
            | Error::IncompleteTls { .. } => Code::Usage,
            Error::ConfigUnreadable { .. } | Error::ConfigNotFound => Code::NoInput,
            Error::Config { .. } | Error::UnknownBroker { .. } => Code::Config,
            Error::Unreachable { .. } | Error::TlsRefused { .. } => Code::Unavailable,
            Error::Tls { .. } => Code::Data,
            Error::ConnectTimeout { .. } => Code::Temporary,
            Error::NoUrlConnected { chief, .. } => chief.exit_code(),
            Error::NotTls { .. } => Code::Unavailable,
            Error::NotAmqp {
                timed_out: true, ..
            } => Code::Temporary,
            Error::NotAmqp { .. } => Code::Unavailable,
            Error::VhostNotFound { .. } => Code::Data,
            Error::LoginRefused { .. } | Error::VhostRefused { .. } => Code::NoPermission,
            Error::Mismatch { .. }
            | Error::Nacked { .. }
            | Error::Unroutable { .. }
            | Error::ConsumerCancelled { .. } => Code::Data,
            Error::Broker { source, .. } => broker_exit_code(source),
            Error::ConnectionLost { .. } | Error::ReconnectFailed { .. } => Code::Temporary,
            Error::PublishInterrupted { source, .. } | Error::RepliesLost { source, .. } => {
                source.exit_code()
            }
            Error::ConfirmTimeout { .. } => Code::Temporary,
            Error::LineTooLong { .. } | Error::NotAMessage { .. } => Code::Data,
            Error::ReportLost { .. } => Code::Io,
            Error::ApiUnreachable { .. } | Error::NotManagementApi { .. } => Code::Unavailable,
            Error::ApiTimeout { .. } | Error::RefreshFailed { .. } => Code::Temporary,
            Error::ApiRefused { .. } => Code::NoPermission,
            Error::ApiNotFound { .. } | Error::DeleteRefused { .. } | Error::ApiDotName { .. } => {
                Code::Data
            }
            Error::ApiStatus { status, .. } if *status >= 500 => Code::Unavailable,
            Error::ApiStatus { .. } => Code::Data,
            Error::Api { .. } | Error::ApiAnswer { .. } | Error::MatcherDisagrees { .. } => {
                Code::Software
            }
            Error::Input { .. } => Code::NoInput,
            Error::Output(_) => Code::Io,
            Error::Exec { .. } | Error::ExecNotStarted { .. } | Error::Runtime(_) => Code::Os,
            Error::Forward { .. }
            | Error::NotMoved { .. }
            | Error::MoveRefused { .. }
            | Error::PeekRefused { .. }
            | Error::TasksFailed { .. }
            | Error::TaskStopped { .. }
            | Error::NoDeadLetterExchange { .. } => Code::Data,
            Error::ReplyNacked { .. }
            | Error::ChannelClosed { .. }
            | Error::NoRequestQueue { .. }
            | Error::ServerError { .. } => Code::Data,
            Error::NoReply { .. } => Code::Temporary,
            Error::QueueDepth { .. } => Code::Software,
            Error::StreamUnreachable { .. } | Error::StreamHandshake { .. } => Code::Unavailable,
            Error::StreamRefused { .. } => Code::NoPermission,
            Error::NotAStream { .. } | Error::NoStream { .. } => Code::Data,
            Error::Stream { .. } => Code::Software,
            Error::StreamLost { .. } => Code::Temporary,
            Error::Interrupted(crate::signals::Stop::Interrupt) => Code::Interrupted,
            Error::Interrupted(crate::signals::Stop::Terminate) => Code::Terminated,
        }
    }

    /// `self`, unless it looks like a lost connection: then [`Error::ChannelClosed`].
    pub fn not_a_connection_loss(self) -> Error {
        match self.is_connection_loss() {
            true => Error::ChannelClosed {
                source: Box::new(self),
            },
            false => self,
        }
    }

    /// The connection (or its channel) went away under rmqlab: reconnecting may help.
    pub fn is_connection_loss(&self) -> bool {
        match self {
            Error::ConnectionLost { .. } => true,
            Error::Broker { source, .. } => match source.kind() {
                lapin::ErrorKind::IOError(_)
                | lapin::ErrorKind::MissingHeartbeatError
                | lapin::ErrorKind::InvalidConnectionState(_)
                | lapin::ErrorKind::InvalidChannelState(..)
                | lapin::ErrorKind::InvalidChannel(_) => true,
                // INTERNAL_ERROR closes the connection too. RabbitMQ 3.x answers a consume so
                // when two clients declare a new quorum queue at once and the queue is still
                // starting; a new connection gets past it.
                lapin::ErrorKind::ProtocolError(amqp) => matches!(
                    amqp.kind(),
                    AMQPErrorKind::Hard(
                        AMQPHardError::CONNECTIONFORCED | AMQPHardError::INTERNALERROR
                    )
                ),
                _ => false,
            },
            _ => false,
        }
    }

    /// A failed (re)connection attempt that a later attempt may get past.
    pub fn is_transient(&self) -> bool {
        match self {
            // One node answering later is enough.
            Error::NoUrlConnected { chief, others, .. } => {
                chief.is_transient() || others.iter().any(Error::is_transient)
            }
            _ => {
                self.is_connection_loss()
                    || matches!(self.exit_code(), Code::Unavailable | Code::Temporary)
            }
        }
    }

    /// Of the failures to connect to each URL of a list, the one to report: the first definite
    /// refusal (a login, a vhost: what the user has to fix), else the first failure.
    pub fn no_url_connected(what: &'static str, mut failures: Vec<Error>) -> Error {
        let chief = failures
            .iter()
            .position(|failure| !failure.is_transient())
            .unwrap_or(0);
        let chief = Box::new(failures.remove(chief));
        Error::NoUrlConnected {
            what,
            chief,
            others: failures,
        }
    }

    /// stdout was closed by its reader (`| head`): not a failure.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }

    /// The error and its causes on one line, for status lines.
    pub fn one_line(&self) -> String {
        std::iter::once(self.to_string())
            .chain(self.causes())
            .collect::<Vec<_>>()
            .join(": ")
    }

    /// The texts of the source chain. Libraries often wrap an error and repeat its text
    /// ("IO error: <the io error>"): a cause that only repeats the end of the one before is left
    /// out.
    pub fn causes(&self) -> Vec<String> {
        let mut causes = Vec::new();
        let mut previous = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !previous.ends_with(&text) {
                causes.push(text.clone());
            }
            previous = text;
            source = cause.source();
        }
        // The other URLs of a list, each on a line of its own after the chief failure.
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(error) = cause {
            if let Some(Error::NoUrlConnected { others, .. }) = error.downcast_ref::<Error>() {
                causes.extend(others.iter().map(Error::one_line));
            }
            cause = error.source();
        }
        causes
    }

    /// A line telling the user what to do next, where one helps.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::NoUrlConnected { chief, .. } => chief.hint(),
            Error::InvalidUrl(invalid) if invalid.unencoded.is_some() => invalid.hint(),
            Error::ConfigUnreadable { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                Some(
                    "write one with a [broker.NAME] section (see `rmqlab config show --help`), \
                     or point --config / RMQLAB_CONFIG at yours"
                        .into(),
                )
            }
            Error::BrokerAndAddressInEnv { variables, .. } => Some(format!(
                "say which on the command line: --broker NAME for the section, or {} for the \
                 address; or unset one of the variables",
                variables
                    .iter()
                    .map(|name| match *name {
                        "RMQLAB_URL" => "--url",
                        "RMQLAB_API_URL" => "--api-url",
                        _ => "--stream-url",
                    })
                    .collect::<Vec<_>>()
                    .join(" / ")
            )),
            Error::StreamUnreachable { .. } => Some(
                "is the stream plugin on? `rabbitmq-plugins enable rabbitmq_stream` on the broker \
                 (it listens on 5552); or point --stream-url / RMQLAB_STREAM_URL at its stream \
                 port"
                    .into(),
            ),
            Error::StreamHandshake { .. } => Some(
                "the stream protocol of rmqlab needs RabbitMQ 3.11 or later with the \
                 rabbitmq_stream plugin (older brokers close the connection at once); check \
                 that --stream-url names a stream port (5552), not an AMQP one"
                    .into(),
            ),
            Error::PeekRefused { .. } => Some(
                "pass --force to read it all the same (see --help: each message read counts one \
                 delivery toward the queue's delivery limit), or consume it for good with \
                 `queues move`"
                    .into(),
            ),
            Error::NotMoved { reason, .. } if reason.contains("user_id property set to") => Some(
                "a message that names its publisher (user_id) can be published again only as \
                 that user, or as a user tagged impersonator: give --url that user"
                    .into(),
            ),
            Error::NotMoved { reason, .. } if reason.contains("nacked") => Some(
                "a queue at its x-max-length with x-overflow reject-publish nacks what comes in: \
                 make room there, or raise the limit, and run it again"
                    .into(),
            ),
            Error::NotMoved { .. } => Some(
                "does the destination exist (`queues list`)? A queue is taken through the \
                 default exchange; --to-exchange needs a binding for --routing-key"
                    .into(),
            ),
            Error::NotAStream { .. } => {
                Some("a name can be a stream or a queue, not both: pick another --stream".into())
            }
            Error::Unreachable { .. } => Some(
                "start a broker: `rabbitmq-server -detached` where RabbitMQ is installed, or \
                 `docker run -it --rm --name rabbitmq -p 5672:5672 -p 15672:15672 \
                 rabbitmq:4-management`; or point --url / RMQLAB_URL at yours"
                    .into(),
            ),
            Error::TlsRefused {
                client_certificate: true,
                ..
            } => Some(
                "present a client certificate signed by a CA the broker trusts, with \
                 --tls-cert-file and --tls-key-file"
                    .into(),
            ),
            Error::TlsRefused { .. } => Some(
                "pass the CA that signed the server's certificate with --tls-ca-file, and connect \
                 with a host name the certificate was issued for"
                    .into(),
            ),
            Error::ConnectTimeout { .. } => Some(
                "check the host and port in --url (a firewall may be dropping packets), \
                 or allow more time with --connect-timeout"
                    .into(),
            ),
            Error::LoginRefused {
                guest_from_afar: true,
                ..
            } => Some(
                "RabbitMQ lets the 'guest' user log in only from localhost (loopback_users); \
                 create a user on the broker (`rabbitmqctl add_user NAME PASSWORD` and \
                 `rabbitmqctl set_permissions NAME '.*' '.*' '.*'`) and put it in --url"
                    .into(),
            ),
            Error::LoginRefused { .. } => {
                Some("check the user and password in --url / RMQLAB_URL / AMQP_URL".into())
            }
            Error::NotAmqp { .. } => Some(
                "use amqps:// for a TLS listener (5671 by default), or the port of the broker's \
                 plain AMQP listener (5672 by default) with amqp://"
                    .into(),
            ),
            Error::NotTls { .. } => Some(
                "use amqp:// for a plain listener (5672 by default), or the port of the broker's \
                 TLS listener (5671 by default) with amqps://"
                    .into(),
            ),
            Error::VhostNotFound { .. } => Some(
                "the virtual host is the URI's path, percent-encoded: the default vhost '/' is \
                 written %2f (amqp://host:5672/%2f); `rabbitmqctl list_vhosts` lists them"
                    .into(),
            ),
            Error::VhostRefused { .. } => Some(
                "the virtual host is the URI's path, percent-encoded: the default vhost '/' is \
                 written %2f (amqp://host:5672/%2f); `rabbitmqctl list_vhosts` lists them and \
                 `rabbitmqctl list_permissions -p VHOST` shows who may use one"
                    .into(),
            ),
            // rmqlab adopts an existing queue as it is; only an explicit --queue-type that
            // contradicts it gets here.
            Error::Mismatch {
                kind: ObjectKind::Queue,
                ..
            } => Some(
                "RabbitMQ cannot change an existing queue: leave out --queue-type to use the \
                 queue as it is, or give the type it has"
                    .into(),
            ),
            Error::Mismatch {
                kind: ObjectKind::Exchange,
                name,
                ..
            } if name.starts_with("amq.") => Some(format!(
                "'{name}' is one of RabbitMQ's built-in exchanges: it cannot be deleted or \
                 changed; use another --exchange"
            )),
            Error::Mismatch {
                kind: ObjectKind::Exchange,
                ..
            } => Some(
                "RabbitMQ cannot change an existing exchange; delete it (in the management UI, \
                 or `rabbitmqadmin delete exchange name=NAME`) and run again, or use another \
                 --exchange"
                    .into(),
            ),
            Error::ApiUnreachable { .. } => Some(
                "is the management plugin on? `rabbitmq-plugins enable rabbitmq_management` on \
                 the broker's host; or point --api-url / RMQLAB_API_URL at the API"
                    .into(),
            ),
            Error::ApiRefused { reason, .. } if reason.contains("management user") => Some(
                "the user needs the 'management' (or 'monitoring') tag: \
                 `rabbitmqctl set_user_tags USER management`"
                    .into(),
            ),
            Error::ApiRefused { .. } => Some(
                "the API takes the user and password of --url, or those written in --api-url"
                    .into(),
            ),
            Error::NotManagementApi { .. } => Some(
                "point --api-url / RMQLAB_API_URL at the management plugin's base URL, such as \
                 http://HOST:15672 (with its path prefix, if the plugin is configured with one)"
                    .into(),
            ),
            Error::ApiTimeout {
                option: "--api-timeout",
                ..
            } => Some("the broker may be overloaded; allow more time with --api-timeout".into()),
            Error::PublishInterrupted {
                confirmed,
                input,
                source,
            } => Some(match **source {
                // The broker may still take what it did not confirm in time.
                Error::ConfirmTimeout { .. } => format!(
                    "{}; the lines after them were not confirmed but may still arrive at the \
                     broker, so resending them may make duplicates",
                    resume_hint(*confirmed, input.as_deref())
                ),
                _ => resume_hint(*confirmed, input.as_deref()),
            }),
            Error::ConfirmTimeout { .. } => Some(
                "the message was not confirmed but may still arrive at the broker, so sending it \
                 again may make a duplicate; is the broker blocking publishers (a resource \
                 alarm: `rabbitmqctl status`)? --confirm-timeout allows more time"
                    .into(),
            ),
            Error::NotAMessage { .. } => Some(
                "with --input json each line is one message as `-o json` prints it (see \
                 --help for the typed header values)"
                    .into(),
            ),
            Error::LineTooLong { .. } => Some(
                "split the line, or raise --max-message-size (and the broker's \
                 max_message_size) for it"
                    .into(),
            ),
            Error::ReconnectFailed { .. } => {
                Some("is the broker running? --reconnect-timeout allows more time".into())
            }
            Error::Broker { context, source }
                if context.starts_with("cannot declare exchange 'amq.")
                    && amqp_error(source).is_some_and(|e| {
                        *e.kind() == AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)
                    }) =>
            {
                Some(
                    "exchange names starting with 'amq.' are reserved: the broker refuses to \
                     declare one (ACCESS_REFUSED) unless it is a built-in exchange of the same \
                     kind; use another --exchange"
                        .into(),
                )
            }
            Error::Broker { source, .. }
                if amqp_error(source).is_some_and(|e| {
                    e.get_message()
                        .as_str()
                        .contains("larger than configured max")
                }) =>
            {
                Some(
                    "the broker's max_message_size limits one message (128 MiB by default); \
                     split the message, or raise the limit in rabbitmq.conf"
                        .into(),
                )
            }
            Error::Broker { source, .. }
                if amqp_error(source).is_some_and(is_internal_exchange_refusal) =>
            {
                Some(
                    "an internal exchange takes messages only from other exchanges bound to \
                     it; publish to one of those, or use another --exchange"
                        .into(),
                )
            }
            Error::RepliesLost {
                source,
                direct,
                connection,
                ..
            } => {
                let keep = "`--reply-queue exclusive` keeps the replies to the requests sent \
                            before a refused one";
                match (source.hint(), *direct && !connection) {
                    (Some(hint), true) => Some(format!("{hint}; {keep}")),
                    (hint, false) => hint,
                    (None, true) => Some(keep.into()),
                }
            }
            Error::NoRequestQueue { queue, .. } => Some(format!(
                "`rmqlab rpc serve{}` declares the queue: start it first",
                queue_option(queue)
            )),
            Error::NoReply {
                queue,
                consumers: Some(0),
                ..
            } => Some(format!(
                "queue '{queue}' has no consumer: is `rmqlab rpc serve{}` running? (the request \
                 expires unanswered)",
                queue_option(queue)
            )),
            Error::NoReply {
                queue,
                consumers: Some(consumers),
                ..
            } => Some(format!(
                "queue '{queue}' has {consumers} consumer(s), busy or stuck: allow more time with \
                 --timeout"
            )),
            Error::Unroutable { .. } => Some(
                "the queue may have been deleted while sending; run the command again to \
                 declare it"
                    .into(),
            ),
            Error::TasksFailed {
                parked: 1..,
                parking_queue,
                ..
            } => Some(format!(
                "see the parked tasks and why they failed (headers x-rmqlab-*) with `rmqlab \
                 hello recv --queue {} -o json`",
                shell_quote(parking_queue)
            )),
            Error::NoDeadLetterExchange { .. } => Some(
                "give the queue a dead-letter exchange (the x-dead-letter-exchange argument, or \
                 a policy's dead-letter-exchange), or use --on-failure park"
                    .into(),
            ),
            _ => None,
        }
    }
}

/// "3 task(s) failed on every try: 2 parked in queue 'q.failed', 1 dead-lettered".
fn tasks_failed(parked: u64, dead_lettered: u64, parking_queue: &str) -> String {
    let mut fates = Vec::new();
    if parked > 0 {
        fates.push(format!("{parked} parked in queue '{parking_queue}'"));
    }
    if dead_lettered > 0 {
        fates.push(format!("{dead_lettered} dead-lettered"));
    }
    format!(
        "{} task(s) failed on every try: {}",
        parked + dead_lettered,
        fates.join(", ")
    )
}

/// What was confirmed of a publisher's input, and how to go on from there: `tail -n +K` for a
/// file, the line to resend from otherwise.
pub fn resume_hint(confirmed: u64, input: Option<&str>) -> String {
    match input {
        Some(path) => format!(
            "the first {confirmed} line(s) were confirmed; resume with \
             `tail -n +{} {} | rmqlab ... -f -`",
            confirmed + 1,
            shell_quote(path)
        ),
        None => format!(
            "the first {confirmed} input line(s) were confirmed; resend from line {}",
            confirmed + 1
        ),
    }
}

/// The headline of [`Error::RepliesLost`].
fn replies_lost(unanswered: usize, number: u64, connection: bool, refused: Option<u64>) -> String {
    match (connection, refused) {
        (false, _) => format!(
            "the replies to {unanswered} request(s) sent before request {number} were lost with \
             the channel"
        ),
        (true, Some(refused)) => format!(
            "the replies to {unanswered} request(s) were lost with the connection, after the \
             broker refused request {refused}"
        ),
        (true, None) => {
            format!("the replies to {unanswered} request(s) were lost with the connection")
        }
    }
}

/// ` --queue NAME` for a request queue other than the tutorial's.
fn queue_option(queue: &str) -> String {
    match queue {
        "rpc_queue" => String::new(),
        other => format!(" --queue {}", shell_quote(other)),
    }
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    }
}

/// The broker's refusal of a publish to an exchange declared `internal` (reachable only
/// through exchange-to-exchange bindings).
fn is_internal_exchange_refusal(amqp: &lapin::protocol::AMQPError) -> bool {
    *amqp.kind() == AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)
        && amqp
            .get_message()
            .as_str()
            .contains("cannot publish to internal exchange")
}

fn broker_exit_code(source: &lapin::Error) -> Code {
    match source.kind() {
        // Not a permission: nobody may publish to an internal exchange.
        lapin::ErrorKind::ProtocolError(amqp) if is_internal_exchange_refusal(amqp) => Code::Data,
        lapin::ErrorKind::ProtocolError(amqp) => match amqp.kind() {
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)
            | AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED) => Code::NoPermission,
            AMQPErrorKind::Soft(
                AMQPSoftError::PRECONDITIONFAILED
                | AMQPSoftError::NOTFOUND
                | AMQPSoftError::RESOURCELOCKED
                | AMQPSoftError::NOROUTE
                | AMQPSoftError::NOCONSUMERS,
            ) => Code::Data,
            AMQPErrorKind::Hard(AMQPHardError::CONNECTIONFORCED) => Code::Temporary,
            AMQPErrorKind::Hard(AMQPHardError::FRAMEERROR) => Code::Data,
            _ => Code::Software,
        },
        lapin::ErrorKind::IOError(_)
        | lapin::ErrorKind::MissingHeartbeatError
        | lapin::ErrorKind::InvalidConnectionState(_)
        | lapin::ErrorKind::InvalidChannelState(..) => Code::Temporary,
        _ => Code::Software,
    }
}

/// The broker's reply code and text, when the error came from the broker.
pub fn amqp_error(source: &lapin::Error) -> Option<&lapin::protocol::AMQPError> {
    match source.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => Some(amqp),
        _ => None,
    }
}

/// Quotes a word for a POSIX shell when it needs it.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:@%+=,".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Explains a PRECONDITION_FAILED reply to a declaration, such as
/// `inequivalent arg 'durable' for queue 'hello' in vhost '/': received 'true' but current is 'false'`.
pub fn describe_mismatch(reply_text: &str) -> String {
    let Some(after) = reply_text.split_once("inequivalent arg '").map(|(_, a)| a) else {
        return reply_text
            .trim_start_matches("PRECONDITION_FAILED - ")
            .to_string();
    };
    let property = after.split('\'').next().unwrap_or_default();
    let wanted = between(after, "received ", " but current is");
    let current = after.split_once("but current is ").map(|(_, c)| c);
    match (wanted, current) {
        (Some(wanted), Some(current)) => {
            // A classic queue carries no type argument.
            let shown = |value: &str| match (property, unquote(value)) {
                ("x-queue-type", value) if value == "none" => "classic".to_string(),
                (_, value) => value,
            };
            format!(
                "'{property}' is {} on the broker, rmqlab declares {}",
                shown(current),
                shown(wanted)
            )
        }
        _ => format!("'{property}' differs"),
    }
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let (_, rest) = text.split_once(start)?;
    rest.split_once(end).map(|(inner, _)| inner)
}

fn unquote(value: &str) -> String {
    let value = value.trim();
    // "the value 'quorum' of type 'longstr'" -> "'quorum'"
    let value = value.strip_prefix("the value ").unwrap_or(value);
    let value = value.split(" of type").next().unwrap_or(value);
    match value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        Some(inner) => inner.to_string(),
        None => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_connection_is_a_loss_and_a_refusal_is_not() {
        let closed = |kind| Error::Broker {
            context: "cannot consume from queue 'q'".into(),
            source: Box::new(lapin::Error::from(lapin::ErrorKind::ProtocolError(
                lapin::protocol::AMQPError::new(kind, "x".into()),
            ))),
        };
        for hard in [
            AMQPHardError::CONNECTIONFORCED,
            AMQPHardError::INTERNALERROR,
        ] {
            assert!(closed(AMQPErrorKind::Hard(hard)).is_connection_loss());
        }
        assert!(!closed(AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)).is_connection_loss());
        assert!(!closed(AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED)).is_connection_loss());
    }

    #[test]
    fn durable_mismatch_is_explained() {
        let text = "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'hello' in vhost \
                    '/': received 'true' but current is 'false'";
        assert_eq!(
            describe_mismatch(text),
            "'durable' is false on the broker, rmqlab declares true"
        );
    }

    #[test]
    fn queue_type_mismatch_is_explained() {
        let text = "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q' in vhost \
                    '/': received the value 'quorum' of type 'longstr' but current is none";
        assert_eq!(
            describe_mismatch(text),
            "'x-queue-type' is classic on the broker, rmqlab declares quorum"
        );
    }

    #[test]
    fn exchange_type_mismatch_is_explained() {
        let text = "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'logs' in vhost \
                    '/': received 'fanout' but current is 'direct'";
        assert_eq!(
            describe_mismatch(text),
            "'type' is direct on the broker, rmqlab declares fanout"
        );
    }

    #[test]
    fn unknown_texts_pass_through() {
        assert_eq!(
            describe_mismatch("PRECONDITION_FAILED - something else"),
            "something else"
        );
    }

    #[test]
    fn shell_quote_quotes_only_when_needed() {
        assert_eq!(shell_quote("task_queue"), "task_queue");
        assert_eq!(shell_quote("my queue"), "'my queue'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
