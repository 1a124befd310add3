//! Every clap type of rmqlab, in one place. The interface is fixed in CLI.md.

use crate::topic::{self, KeyTooLong};
use clap::{
    Args, Parser, Subcommand, ValueEnum,
    error::{ContextKind, ContextValue, ErrorKind},
};
use std::{path::PathBuf, time::Duration};

/// The environment variables rmqlab reads, for the man page's ENVIRONMENT.
pub const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "RMQLAB_URL",
        "The broker URI, as --url; a comma-separated list for the nodes of a cluster.",
    ),
    (
        "AMQP_URL",
        "The broker URI (or list) when neither --url nor RMQLAB_URL is given.",
    ),
    (
        "RMQLAB_API_URL",
        "The management HTTP API base URL, as --api-url.",
    ),
    (
        "RMQLAB_CONFIG",
        "The config file, as --config [default: $XDG_CONFIG_HOME/rmqlab/config.toml, else \
         ~/.config/rmqlab/config.toml].",
    ),
    (
        "RMQLAB_BROKER",
        "The [broker.NAME] section of the config file to use, as --broker; an error together \
         with RMQLAB_URL, RMQLAB_API_URL or RMQLAB_STREAM_URL unless an option settles it.",
    ),
    (
        "RMQLAB_TLS_CA_FILE, RMQLAB_TLS_CERT_FILE, RMQLAB_TLS_KEY_FILE, RMQLAB_TLS_INSECURE",
        "As the --tls-* options.",
    ),
    (
        "NO_COLOR",
        "When set and not empty, no colour on stderr unless --color always.",
    ),
];

/// Examples for `rmqlab --help` and the man page.
pub const EXAMPLES: &[&str] = &[
    "rmqlab hello send && rmqlab hello recv --count 1",
    "seq 100 | rmqlab task new -f -",
    "rmqlab task work --prefetch 1 --exec ./handle.sh",
    "rmqlab topics match 'lazy.#' lazy.orange.elephant quick.orange.fox",
    "rmqlab rpc serve & rmqlab rpc call 30",
    "rmqlab queues list --watch 2s",
    "rmqlab --broker prod queues list",
];

/// The help of a publishing command's WORDS, with its own default message.
fn words_help(default: &'static str) -> impl FnOnce(clap::Arg) -> clap::Arg {
    move |arg| {
        arg.help(format!(
            "The message: the words joined with single spaces [default: {default}]"
        ))
    }
}

/// The help of a consuming command's `--output`, naming its own text line.
fn output_help(text_line: &'static str) -> impl FnOnce(clap::Arg) -> clap::Arg {
    move |arg| {
        arg.help(format!(
            "How to print each message: the tutorial's line (text: {text_line}), the body \
             alone, or one JSON object a line"
        ))
    }
}

/// The long help of an `--exec`: what it does, then the variables its command gets.
fn exec_long_help(what: &str, own: &[(&str, &str)]) -> String {
    let mut help = format!(
        "{what}\n\nThe command's environment describes the delivery (each variable is set, empty \
         when the delivery has no such value):"
    );
    for (name, meaning) in crate::message::EXEC_VARIABLES.iter().chain(own) {
        help.push_str(&format!("\n  {name}: {meaning}"));
    }
    help
}

fn exit_status_help() -> String {
    let mut help = String::from("Examples:\n");
    for example in EXAMPLES {
        help.push_str(&format!("  {example}\n"));
    }
    help.push('\n');
    help.push_str(&crate::exit::help_list());
    help
}

/// For a command whose required arguments are missing, an example that has them: (the
/// argument as clap names it in the error, the example).
const MISSING_ARGUMENT_EXAMPLES: &[(&str, &str)] = &[
    ("<SEVERITY>", "rmqlab routing listen warning error"),
    (
        "<BINDING_KEY>",
        "rmqlab topics listen 'kern.*' '*.critical'",
    ),
    (
        "<PATTERN>",
        "rmqlab topics match 'lazy.#' lazy.orange.elephant",
    ),
    ("<KEY>", "rmqlab topics match 'lazy.#' lazy.orange.elephant"),
];

/// Parses the command line; a usage error for missing required arguments also shows an example
/// with them.
pub fn try_parse() -> Result<Cli, clap::Error> {
    let cli = Cli::try_parse().map_err(with_example)?;
    check_combinations(&cli)?;
    Ok(cli)
}

/// What clap's declarations cannot say: clap drops a requirement that conflicts with an
/// argument given (`queues move SRC DST --routing-key K` would pass).
fn check_combinations(cli: &Cli) -> Result<(), clap::Error> {
    if let Command::Queues(QueuesCommand::Move(args)) = &cli.command
        && args.routing_key.is_some()
        && args.to_exchange.is_none()
    {
        use clap::CommandFactory;
        let mut command = Cli::command();
        let command = command
            .find_subcommand_mut("queues")
            .and_then(|queues| queues.find_subcommand_mut("move"))
            .cloned()
            .unwrap_or_else(Cli::command);
        return Err(command.bin_name("rmqlab queues move").error(
            ErrorKind::MissingRequiredArgument,
            "--routing-key is the key to publish with at an exchange: give --to-exchange \
             EXCHANGE with it (a DESTINATION queue is reached by its name)",
        ));
    }
    Ok(())
}

fn with_example(mut error: clap::Error) -> clap::Error {
    if error.kind() != ErrorKind::MissingRequiredArgument {
        return error;
    }
    let example = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::Strings(missing)) => MISSING_ARGUMENT_EXAMPLES
            .iter()
            .find(|(name, _)| missing.iter().any(|arg| arg.starts_with(name)))
            .map(|(_, example)| *example),
        _ => None,
    };
    if let Some(example) = example {
        error.insert(
            ContextKind::Suggested,
            ContextValue::StyledStrs(vec![format!("for example: {example}").into()]),
        );
    }
    error
}

/// A routing or binding key given on the command line: at most 255 bytes.
fn key(value: &str) -> Result<String, KeyTooLong> {
    topic::check_length(value).map(|()| value.to_string())
}

#[derive(Debug, Parser)]
#[command(
    name = "rmqlab",
    version,
    about = "Learn and script RabbitMQ: the RabbitMQ tutorials as one fast command-line tool",
    after_help = exit_status_help(),
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Use the [broker.NAME] section of the config file: its URLs, API URL, vhost, TLS files
    /// and timeouts, under the options given on the command line and over the connection
    /// variables of the environment [env: RMQLAB_BROKER]
    #[arg(long, global = true, value_name = "NAME")]
    pub broker: Option<String>,

    /// The config file of named brokers [env: RMQLAB_CONFIG] [default:
    /// $XDG_CONFIG_HOME/rmqlab/config.toml, else ~/.config/rmqlab/config.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// AMQP 0-9-1 URI of the broker (amqps:// for TLS). Repeat it, or give a comma-separated
    /// list, for the nodes of a cluster: rmqlab connects to the first that answers, in order,
    /// and after a lost connection to whichever answers next. All name the same vhost; a comma
    /// in a password is written %2C [env: RMQLAB_URL, then AMQP_URL] [default:
    /// amqp://guest:****@127.0.0.1:5672/%2f, RabbitMQ's default user]
    // RMQLAB_URL is read with AMQP_URL where the settings are made, not by clap: clap would name
    // an option taken from the environment in its usage lines, as if it had been typed.
    #[arg(long, global = true, value_name = "URI")]
    pub url: Vec<String>,

    /// Try the URLs of --url in a random order, so that clients started alike spread over the
    /// nodes of a cluster
    #[arg(long, global = true)]
    pub shuffle_urls: bool,

    /// Base URL of the management HTTP API, for `queues` and `task work --on-failure
    /// dead-letter`; a comma-separated list: the first that answers [env: RMQLAB_API_URL]
    /// [default: http://<host of the --url in use>:15672, with the user and password of that
    /// URL unless the API URL has its own]
    #[arg(long, global = true, value_name = "URL")]
    pub api_url: Option<String>,

    /// Stream protocol URL, for `stream` (rabbitmq-stream+tls:// for TLS) [env: RMQLAB_STREAM_URL]
    /// [default: rabbitmq-stream://<user, host and vhost of the --url in use>, port 5552]
    #[arg(long, global = true, value_name = "URL")]
    pub stream_url: Option<String>,

    /// When to colour status markers on stderr (auto: on a terminal, unless NO_COLOR is set)
    #[arg(long, global = true, value_enum, value_name = "WHEN", default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,

    /// Give up connecting after this long (500ms, 5s, 1m) [default: 10s]
    #[arg(long, global = true, value_name = "DURATION", value_parser = timeout)]
    pub connect_timeout: Option<Duration>,

    /// Give up waiting for an answer of the management API after this long (`queues`)
    /// [default: 60s]
    #[arg(long, global = true, value_name = "DURATION", value_parser = timeout)]
    pub api_timeout: Option<Duration>,

    /// After a lost connection, keep trying to reconnect for this long, then exit 75 (0s: never
    /// reconnect) [default: 5m]
    #[arg(long, global = true, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub reconnect_timeout: Option<Duration>,

    /// Trust the server certificates signed by the CA(s) in this PEM file, besides the system's
    /// roots (amqps:// and https://) [env: RMQLAB_TLS_CA_FILE]
    #[arg(long, global = true, value_name = "PATH")]
    pub tls_ca_file: Option<PathBuf>,

    /// Client certificate (PEM) to present, with --tls-key-file [env: RMQLAB_TLS_CERT_FILE]
    // Not `requires`: the other half may come from the --broker section or the environment
    // (checked where the settings are made).
    #[arg(long, global = true, value_name = "PATH")]
    pub tls_cert_file: Option<PathBuf>,

    /// Private key (PEM) of --tls-cert-file [env: RMQLAB_TLS_KEY_FILE]
    #[arg(long, global = true, value_name = "PATH")]
    pub tls_key_file: Option<PathBuf>,

    /// Do not verify the server's certificate: for tests only, never in production
    /// [env: RMQLAB_TLS_INSECURE]
    #[arg(long, global = true)]
    pub tls_insecure: bool,

    /// Print no status lines on stderr
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Print more diagnostics on stderr (the broker address, each declaration)
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Tutorial 1: send and receive through the default exchange (queue `hello`)
    #[command(subcommand)]
    Hello(HelloCommand),
    /// Tutorial 2: work queues with persistent tasks, manual acks and fair dispatch
    #[command(subcommand)]
    Task(TaskCommand),
    /// Tutorial 3: publish/subscribe through a fanout exchange (exchange `logs`)
    #[command(subcommand)]
    Pubsub(PubsubCommand),
    /// Tutorial 4: routing by severity through a direct exchange (exchange `direct_logs`)
    #[command(subcommand)]
    Routing(RoutingCommand),
    /// Tutorial 5: routing by pattern through a topic exchange (exchange `topic_logs`)
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// Tutorial 6: request/reply (RPC) through queue `rpc_queue`, from the shell
    #[command(subcommand)]
    Rpc(RpcCommand),
    /// Tutorial 7: the three publisher-confirm strategies, timed on your broker
    #[command(
        after_long_help = "Each strategy publishes --count messages (bodies 0, 1, 2...) to an \
exclusive, server-named queue of its own connection, checks that the queue holds every one, and \
the queue goes with the connection. `individual` waits for each message's confirm before the \
next, `batch` for a batch's confirms before the next batch, and `async` is rmqlab's own \
publisher (the one behind `task new -f`): up to 512 messages in flight, confirms handled as \
they come.

Examples:
  rmqlab confirms
  rmqlab confirms --strategy async --count 1000000
  rmqlab confirms --count 10000 --batch-size 500"
    )]
    Confirms(ConfirmsArgs),
    /// Streams over the stream protocol (the stream tutorials): send, and read from an offset
    #[command(subcommand)]
    Stream(StreamCommand),
    /// Queue depth, purge and delete (management HTTP API); peek, move, dead letters
    #[command(subcommand)]
    Queues(QueuesCommand),
    /// Named brokers: the settings a command would connect with, and where each comes from
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print the completion script for a shell
    #[command(
        after_long_help = "The script runs rmqlab at each Tab (rmqlab must be on PATH): \
queue, stream and exchange names come live from the management API of the broker named on the \
line (--url, --api-url) or in the environment, asked with a timeout under a second; no answer \
completes nothing.

Examples:
  source <(rmqlab completions bash)
  rmqlab completions zsh > ~/.zfunc/_rmqlab
  rmqlab completions fish > ~/.config/fish/completions/rmqlab.fish"
    )]
    Completions {
        /// The shell to complete for
        #[arg(value_enum, value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum RpcCommand {
    /// Answer requests from the queue: fib(N) as in the tutorial, or any command with --exec
    #[command(
        after_long_help = "The server declares its queue (quorum when it creates it), takes \
--prefetch requests at a time, publishes each reply to the request's reply_to with its \
correlation_id, and acks the request once the broker confirmed the reply. A body that is not an \
integer from 0 to 100000 gets a reply with the header x-error (the reason) instead of a result.

With --exec, COMMAND runs through `sh -c` for each request, the body on its stdin; the reply is \
its standard output, with its exit status in the header x-exit-code, and the request is acked \
whatever the status (the reply carries the failure). A command that cannot be started (126, 127) \
puts the request back in the queue, and rmqlab exits 71.

Examples:
  rmqlab rpc serve
  rmqlab rpc serve --exec 'tr a-z A-Z'
  rmqlab rpc serve --queue resize --prefetch 4 --exec ./resize.sh

Ctrl-C or SIGTERM: the request in progress is finished and answered, then rmqlab ends by that \
signal (130 or 143); a second Ctrl-C aborts it, and the broker gives it to another server."
    )]
    Serve(RpcServeArgs),
    /// Send a request and print the reply (one request per line with -f)
    #[command(
        after_long_help = "Replies come through Direct Reply-To (amq.rabbitmq.reply-to) \
unless --reply-queue exclusive. Each request carries a fresh correlation id, and an expiration \
equal to --timeout, so that a server started later does not work on abandoned requests. The \
request queue is not declared: the server does that, and without it the request is returned \
(exit 65 at once).

Exit status: 0 when every reply came; 75 when one did not within --timeout; 65 for a reply \
with the header x-error (the server could not answer); a reply with a non-zero x-exit-code (an \
`rpc serve --exec` command that failed) is printed, and rmqlab then exits with the server's exit \
code, as ssh does. With -f, the first failed reply decides the status.

Examples:
  rmqlab rpc call 30
  seq 0 100 | rmqlab rpc call -f - -o body
  echo hello | rmqlab rpc call --queue upper -f - -o json"
    )]
    #[command(
        mut_arg("correlation_id", made_by_rpc_call("correlation_id")),
        mut_arg("reply_to", made_by_rpc_call("reply_to")),
        mut_arg("expiration", made_by_rpc_call("expiration (--timeout)"))
    )]
    Call(RpcCallArgs),
}

#[derive(Debug, Args)]
pub struct RpcServeArgs {
    /// Queue to declare and take requests from
    #[arg(long, value_name = "NAME", default_value = "rpc_queue", value_parser = name)]
    pub queue: String,
    #[command(flatten)]
    pub queue_type: QueueTypeArg,
    /// Requests this server may hold unanswered at once
    #[arg(long, value_name = "N", default_value = "1", value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: u16,
    /// Answer with COMMAND run through `sh -c`, the body on its stdin: the reply is its stdout,
    /// its exit status goes in the header x-exit-code; the request's metadata is in
    /// RMQLAB_MSG_* variables
    #[arg(
        long,
        value_name = "COMMAND",
        long_help = exec_long_help(
            "Answer with COMMAND run through `sh -c`, the body on its stdin: the reply is its \
             stdout, its exit status goes in the header x-exit-code.",
            &[],
        )
    )]
    pub exec: Option<String>,
    #[command(flatten)]
    pub consume: ConsumeArgs,
}

#[derive(Debug, Args)]
pub struct RpcCallArgs {
    /// The request's body: the N of fib(N) [default: 30]
    #[arg(
        value_name = "N",
        allow_negative_numbers = true,
        conflicts_with = "file"
    )]
    pub request: Option<String>,
    /// Send one request per line of PATH (`-` reads stdin); replies print in input order
    #[arg(short, long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Refuse a request line longer than SIZE (exit 65, naming the line)
    #[arg(long, value_name = "SIZE", default_value = "128MiB", value_parser = parse_size)]
    pub max_message_size: u64,
    /// Queue to send requests to (not declared: `rpc serve` does that)
    #[arg(long, value_name = "NAME", default_value = "rpc_queue", value_parser = name)]
    pub queue: String,
    /// Where replies come: Direct Reply-To, or an exclusive callback queue as in the Python
    /// tutorial
    #[arg(long, value_enum, value_name = "KIND", default_value_t = ReplyQueueKind::Direct)]
    pub reply_queue: ReplyQueueKind,
    /// Give up (exit 75) when a reply takes longer than this; also the requests' expiration
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = reply_timeout)]
    pub timeout: Duration,
    /// Requests in flight at once with -f
    #[arg(long, value_name = "N", default_value = "64", value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// How to print each reply
    #[arg(short, long, value_enum, value_name = "FORMAT", default_value_t = ReplyFormat::Text)]
    pub output: ReplyFormat,
    #[command(flatten)]
    pub properties: PropertyArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReplyQueueKind {
    /// amq.rabbitmq.reply-to: no queue, replies straight to the client's channel
    Direct,
    /// an exclusive, server-named queue of the client's connection
    Exclusive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReplyFormat {
    /// ` [x] Requesting fib(N)` and ` [.] Got REPLY`, as the tutorial prints
    Text,
    /// each reply's body, then a newline unless it ends with one
    Body,
    /// one JSON object per reply: request, body, properties (headers), round_trip_ms
    Json,
}

#[derive(Debug, Args)]
pub struct ConfirmsArgs {
    /// Messages each strategy publishes
    #[arg(long, value_name = "N", default_value = "50000", value_parser = positive)]
    pub count: u64,
    /// The strategy to time
    #[arg(long, value_enum, value_name = "STRATEGY", default_value_t = ConfirmStrategy::All)]
    pub strategy: ConfirmStrategy,
    /// Messages published before waiting for their confirms, for the batch strategy
    #[arg(long, value_name = "N", default_value = "100", value_parser = clap::value_parser!(u16).range(1..))]
    pub batch_size: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConfirmStrategy {
    /// wait for each message's confirm before publishing the next
    Individual,
    /// wait for a whole batch's confirms before the next batch
    Batch,
    /// keep publishing, handle confirms as they come (rmqlab's own publisher)
    Async,
    /// the three, one after the other, then a table
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum PubsubCommand {
    /// Declare the fanout exchange and publish one message (or one per line of -f) to it
    #[command(
        mut_arg("words", words_help("info: Hello World!")),
        after_long_help = "Every listener bound to the exchange gets every message. A \
message published while no listener is bound is dropped by the broker: that is how fan-out \
works, so rmqlab notes it on stderr and still exits 0.

Examples:
  rmqlab pubsub emit
  rmqlab pubsub emit warning: disk full
  tail -f /var/log/syslog | rmqlab pubsub emit -f -"
    )]
    Emit(PubsubEmitArgs),
    /// Bind an exclusive, server-named queue to the exchange and print what arrives
    #[command(
        mut_arg("output", output_help("` [x] MESSAGE`")),
        after_long_help = "The queue is this listener's own: the broker deletes it when \
the listener exits, and messages emitted while no listener ran are not kept.

Examples:
  rmqlab pubsub listen
  rmqlab pubsub listen --count 2
  rmqlab pubsub listen -o json > logs.jsonl"
    )]
    Listen(PubsubListenArgs),
}

#[derive(Debug, Args)]
pub struct PubsubEmitArgs {
    /// Fanout exchange to declare and publish to (non-durable, as in the tutorial)
    #[arg(long, value_name = "NAME", default_value = "logs", value_parser = name)]
    pub exchange: String,
    #[command(flatten)]
    pub message: MessageArgs,
    #[command(flatten)]
    pub properties: PropertyArgs,
}

#[derive(Debug, Args)]
pub struct PubsubListenArgs {
    /// Fanout exchange to declare and listen to
    #[arg(long, value_name = "NAME", default_value = "logs", value_parser = name)]
    pub exchange: String,
    #[command(flatten)]
    pub consume: ConsumeArgs,
}

#[derive(Debug, Subcommand)]
pub enum RoutingCommand {
    /// Declare the direct exchange and publish one message (or one per line of -f) with routing
    /// key SEVERITY
    #[command(
        after_long_help = "The first word is the severity (the routing key) and the rest is \
the message: `rmqlab routing emit error Run.` sends `Run.` with key `error`. Only the queues \
bound with that exact key get the message; with none, the broker drops it, and rmqlab notes \
that on stderr and still exits 0.

Examples:
  rmqlab routing emit error \"Run. Run. Or it will explode.\"
  rmqlab routing emit warning disk almost full
  tail -f app.log | rmqlab routing emit info -f -"
    )]
    Emit(RoutingEmitArgs),
    /// Bind a queue to the direct exchange once per SEVERITY and print what arrives
    #[command(
        after_long_help = "By default the queue is this listener's own (exclusive, named by the \
broker, deleted when it exits); --queue NAME binds a durable queue instead, which keeps what \
arrives while no listener runs.

Examples:
  rmqlab routing listen warning error
  rmqlab routing listen info warning error --count 10 -o json
  rmqlab routing listen error --queue errors"
    )]
    Listen(RoutingListenArgs),
}

#[derive(Debug, Args)]
pub struct RoutingEmitArgs {
    /// Direct exchange to declare and publish to (non-durable, as in the tutorial)
    #[arg(long, value_name = "NAME", default_value = "direct_logs", value_parser = name)]
    pub exchange: String,
    /// The routing key: the message's severity, at most 255 bytes
    #[arg(value_name = "SEVERITY", default_value = "info", value_parser = key)]
    pub severity: String,
    #[command(flatten)]
    pub message: MessageArgs,
    #[command(flatten)]
    pub properties: PropertyArgs,
}

#[derive(Debug, Args)]
pub struct RoutingListenArgs {
    /// Direct exchange to declare and listen to
    #[arg(long, value_name = "NAME", default_value = "direct_logs", value_parser = name)]
    pub exchange: String,
    /// The severities to receive: one binding each, with that routing key
    #[arg(value_name = "SEVERITY", required = true, value_parser = key)]
    pub severities: Vec<String>,
    #[command(flatten)]
    pub queue: ListenQueueArgs,
    #[command(flatten)]
    pub consume: ConsumeArgs,
}

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Declare the topic exchange and publish one message (or one per line of -f) with
    /// ROUTING_KEY
    #[command(
        after_long_help = "A routing key is a list of words separated by dots \
(`kern.critical`, `quick.orange.rabbit`), at most 255 bytes. The first word on the command line \
is the key and the rest is the message. With no queue bound by a matching pattern, the broker \
drops the message, and rmqlab notes that on stderr and still exits 0.

Examples:
  rmqlab topics emit kern.critical \"A critical kernel error\"
  rmqlab topics emit quick.orange.rabbit
  journalctl -f -o cat | rmqlab topics emit host1.syslog.info -f -"
    )]
    Emit(TopicsEmitArgs),
    /// Bind a queue to the topic exchange once per BINDING_KEY and print what arrives
    #[command(
        after_long_help = "In a binding key, `*` stands for exactly one word and `#` for zero or \
more words; `*` or `#` inside a word (`a*b`) is a literal character, and rmqlab warns about it. \
Quote the patterns for the shell. A message that several binding keys match arrives once. By \
default the queue is this listener's own (exclusive, deleted when it exits); --queue NAME binds a \
durable queue instead.

Examples:
  rmqlab topics listen '#'
  rmqlab topics listen 'kern.*'
  rmqlab topics listen 'kern.*' '*.critical'
  rmqlab topics listen '*.orange.*' --queue Q1 -o json"
    )]
    Listen(TopicsListenArgs),
    /// Say whether binding key PATTERN matches each routing key, without a broker
    #[command(
        after_long_help = "One line per key on stdout. Exit 0 when PATTERN matches every key, 1 \
when it does not match some key (as grep(1) does), 2 for a key or pattern over 255 bytes. Words \
are what lies between dots, empty ones included: `a.*.b` matches `a..b`, `#` matches the empty \
key and `*` does not. --live asks the broker too, through a temporary topic exchange and queue, \
and reports any key where the two disagree (exit 70).

Examples:
  rmqlab topics match '*.orange.*' quick.orange.rabbit lazy.brown.fox
  rmqlab topics match 'lazy.#' lazy
  cut -f1 keys.tsv | rmqlab topics match 'app.*.error' -f -
  rmqlab topics match --live 'a.*.b' a..b"
    )]
    Match(TopicsMatchArgs),
}

#[derive(Debug, Args)]
pub struct TopicsEmitArgs {
    /// Topic exchange to declare and publish to (non-durable, as in the tutorial)
    #[arg(long, value_name = "NAME", default_value = "topic_logs", value_parser = name)]
    pub exchange: String,
    /// The routing key: words separated by dots, at most 255 bytes
    #[arg(value_name = "ROUTING_KEY", default_value = "anonymous.info", value_parser = key)]
    pub routing_key: String,
    #[command(flatten)]
    pub message: MessageArgs,
    #[command(flatten)]
    pub properties: PropertyArgs,
}

#[derive(Debug, Args)]
pub struct TopicsListenArgs {
    /// Topic exchange to declare and listen to
    #[arg(long, value_name = "NAME", default_value = "topic_logs", value_parser = name)]
    pub exchange: String,
    /// The patterns to receive: `*` stands for one word, `#` for zero or more; one binding each
    #[arg(value_name = "BINDING_KEY", required = true, value_parser = key)]
    pub binding_keys: Vec<String>,
    #[command(flatten)]
    pub queue: ListenQueueArgs,
    #[command(flatten)]
    pub consume: ConsumeArgs,
}

#[derive(Debug, Args)]
pub struct TopicsMatchArgs {
    /// The binding key: `*` stands for one word, `#` for zero or more
    #[arg(value_name = "PATTERN", value_parser = key)]
    pub pattern: String,
    /// The routing keys to test
    #[arg(
        value_name = "KEY",
        required_unless_present = "file",
        conflicts_with = "file",
        value_parser = key
    )]
    pub keys: Vec<String>,
    /// Test the routing keys on the lines of PATH (`-` reads stdin)
    #[arg(short, long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Ask the broker as well (a temporary topic exchange and queue) and report any disagreement
    #[arg(long)]
    pub live: bool,
}

/// Which queue a listener binds.
#[derive(Debug, Args)]
pub struct ListenQueueArgs {
    /// Bind this durable queue instead of an exclusive one, so that nothing is lost while no
    /// listener runs; created when absent, used as it is when present
    #[arg(long, value_name = "NAME", value_parser = name)]
    pub queue: Option<String>,
    /// Type of the --queue when rmqlab creates it [default: quorum]; only a type that contradicts
    /// an existing queue is an error (65)
    #[arg(long, value_enum, value_name = "TYPE", requires = "queue")]
    pub queue_type: Option<QueueType>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the connection settings in effect (passwords masked) and where each comes from:
    /// an option (flag), the --broker section, the environment (env), or the default
    #[command(after_long_help = CONFIG_HELP)]
    Show(ConfigShowArgs),
}

/// How the config file works, for `config show --help` and the man page.
pub const CONFIG_HELP: &str = "The config file (--config, RMQLAB_CONFIG; by default \
$XDG_CONFIG_HOME/rmqlab/config.toml, else ~/.config/rmqlab/config.toml) is TOML with one \
[broker.NAME] section per broker:

  [broker.prod]
  urls = [\"amqps://app@rabbit1.example/shop\", \"amqps://app@rabbit2.example/shop\"]
  api_url = \"https://rabbit.example:15671\"
  password = \"s3cret\"            # for URLs that name no user: chmod 600 the file
  tls_ca_file = \"/etc/rmqlab/prod-ca.pem\"

Keys: urls (one string or a list; also url), api_url (one string or a list; also api_urls), \
stream_url, vhost, user and password (for URLs that name none), tls_ca_file, tls_cert_file, \
tls_key_file, tls_insecure, connect_timeout, api_timeout, reconnect_timeout, shuffle_urls: each \
as the global option of that name. A key rmqlab does not know is an error, never ignored.

--broker NAME (or RMQLAB_BROKER) picks a section. Each setting comes from, first to last: the \
option on the command line, the section, the environment (RMQLAB_URL, AMQP_URL, \
RMQLAB_API_URL, RMQLAB_STREAM_URL, RMQLAB_TLS_*), the default. A section that has urls owns \
the addresses: the environment's URLs are not used with it, and the API and stream URLs \
default to the section's hosts. RMQLAB_BROKER and RMQLAB_URL, RMQLAB_API_URL or \
RMQLAB_STREAM_URL set together in the environment are an error (2), as neither says it \
overrides the other: say which on the command line (--broker, --url...).

Exit status: 66 when the file given by --config, or the file --broker needs, cannot be read; \
78 when it is not valid (a TOML syntax error or a key or value rmqlab does not know, shown as \
FILE:LINE) or has no section of that name. A file that holds a password and that other users \
can read gets a warning on every run (chmod 600 it).

Examples:
  rmqlab config show
  rmqlab --broker prod config show -o json
  rmqlab --broker prod queues list
  RMQLAB_BROKER=dev rmqlab task work";

#[derive(Debug, Args)]
pub struct ConfigShowArgs {
    /// Output format
    #[arg(short, long, value_enum, value_name = "FORMAT", default_value_t = ShowFormat::Text)]
    pub output: ShowFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShowFormat {
    /// one setting a line: name, value, where it comes from
    Text,
    /// one JSON object: each setting with its value and where it comes from
    Json,
}

#[derive(Debug, Subcommand)]
pub enum QueuesCommand {
    /// List queues with their depth (replaces `rabbitmqctl list_queues name messages_ready
    /// messages_unacknowledged`)
    #[command(
        after_long_help = "Columns (--columns, --sort): vhost, name, type (classic, \
quorum, stream), state, durable, messages, messages_ready, messages_unacknowledged, consumers, \
memory, node (a classic queue's node), leader (a quorum queue's or stream's leader), members, \
online (the members that are running), publish_rate, deliver_rate, ack_rate (messages per \
second published to, delivered or fetched from, and acknowledged on the queue, from the broker's \
statistics: averaged over its last sample, about 5 s). Default: vhost (when no --vhost is \
given), name, messages_ready, messages_unacknowledged, consumers; with --watch, also the three \
rates and, on a terminal, `depth`: a sparkline of the queue's ready messages over the last 20 \
refreshes (its lowest to its highest). In a table, a quorum queue or stream whose \
members are not all online has a `!` before its online (or members) list; in tsv and JSON the \
online list is shorter than the members list.

The listing comes from the management API without its statistics, so it answers at once however \
many queues there are: a classic queue's counts are its own, exact at that moment; a quorum \
queue's come from a table that RabbitMQ 3.x refreshes every few seconds; a stream's are asked \
for one stream at a time from the statistics. The consumer counts come from one more request \
(the list of consumers). Only memory and the rates make rmqlab ask for the statistics of every \
queue, which is slower and lags about 5 s. A number the broker does not report shows as 0 in \
table and tsv output and as null in JSON; other missing fields are empty, or null in JSON. \
--filter is matched as the broker would match it (a PCRE, case-insensitive).

Examples:
  rmqlab queues list
  rmqlab queues list --filter '^task' --sort messages_ready --reverse
  rmqlab queues list --columns name,type,leader,members,online
  rmqlab queues list -o tsv --no-headers | cut -f2
  rmqlab queues list --watch 2s
  rmqlab queues list --columns name,messages_ready,publish_rate,ack_rate --sort publish_rate"
    )]
    List(QueuesListArgs),
    /// Remove every ready message of a queue
    #[command(after_long_help = "Examples:
  rmqlab queues purge task_queue
  rmqlab queues purge orders --vhost shop")]
    Purge(QueueNameArgs),
    /// Delete a queue and the messages in it
    #[command(after_long_help = "Examples:
  rmqlab queues delete hello
  rmqlab queues delete task_queue --if-empty --if-unused")]
    Delete(QueuesDeleteArgs),
    /// Show the first messages of a queue and leave them in it
    #[command(
        after_long_help = "How the messages stay depends on the queue's type (asked of \
the management API):
  stream   read from its first offset, as any stream reader does: nothing changes.
  classic  taken one by one (basic.get) on one channel without an ack, then all put back at once
           (basic.nack, requeue): they keep their order, but are now marked redelivered (said
           on stderr).
  quorum   refused (65) unless --force: a quorum queue counts every message put back as one
           delivery (the header x-delivery-count), and past its delivery limit (x-delivery-limit;
           20 by default on RabbitMQ 4.x) drops or dead-letters it; RabbitMQ 3.x also puts them
           back at the end of the queue (4.x in their places). With --force rmqlab says so,
           and names those that had reached the delivery limit: put back, they are gone.
Peeking and a consumer of the same queue compete: a message a consumer holds unacked is not seen.

Examples:
  rmqlab queues peek task_queue
  rmqlab queues peek orders --count 1 -o json | jq .properties.headers
  rmqlab queues peek events --count 100 -o body"
    )]
    Peek(QueuesPeekArgs),
    /// Move messages to another queue or an exchange, each confirmed there before it is acked
    #[command(
        after_long_help = "Each message is taken from SOURCE, published with its body, \
properties and headers unchanged (mandatory, with publisher confirms) but for the \
x-delivery-count header a quorum queue adds (it is the broker's count, not the message's), and \
acked on SOURCE only once the broker confirmed it: at-least-once, nothing is lost. Up to 256 \
messages are in flight at once. It stops when SOURCE is empty, after --count messages, or at \
Ctrl-C (the messages in flight are confirmed and acked first), and prints one summary line. It \
takes no more than SOURCE held when it began: messages that come in meanwhile (say an exchange \
that routes back into SOURCE) stay there, and rmqlab says how many.

A quorum queue applies acks asynchronously: a move that empties SOURCE ends only once a last get \
after the last ack finds it empty, and one stopped by --count waits half a second, so that SOURCE \
holds what the summary says when rmqlab exits.

DESTINATION must exist: rmqlab declares nothing here, so that a mistyped name cannot swallow the \
messages (65 before anything is moved). A message no queue takes at --to-exchange, one the broker \
nacks (a full queue with overflow reject-publish), or a publishing channel the broker closes, \
stops the move (65): the messages the broker confirmed before it stopped are acked on SOURCE, \
and the refused one and every other taken and not confirmed go back to SOURCE (nack, requeue), \
so each message is in one place (but when the broker closes the channel, those it took and had \
not yet confirmed may be at DESTINATION as well: the error says so). A quorum SOURCE counts each \
message put back as a delivery (x-delivery-count, toward its delivery limit).

After a lost connection rmqlab reconnects (--reconnect-timeout) and carries on: the messages \
published but not yet acked went back to SOURCE and are published again, so DESTINATION may hold \
them twice; the summary says how many.

Examples:
  rmqlab queues move task_queue.failed task_queue
  rmqlab queues move orders orders.archive --count 1000
  rmqlab queues move orders --to-exchange events --routing-key orders.replayed"
    )]
    Move(QueuesMoveArgs),
    /// Group what is in a dead-letter queue by how it died, and redrive it where it came from
    #[command(
        after_long_help = "Each message is read as `queues peek` reads (and put back \
without being taken): a quorum queue needs --force, except for a --redrive without --reason or \
--from-queue, which takes every message it can redrive and puts nothing back. Messages are \
grouped by their first death, from the headers RabbitMQ adds when it dead-letters one \
(x-first-death-queue, x-first-death-reason, x-first-death-exchange and the routing keys of that \
death in x-death): the queue it died in, why (rejected, expired, maxlen, delivery_limit), the \
exchange and routing keys it was first published with, how many, and the oldest and newest time \
of death. Tasks parked by `task work --exec` (QUEUE.failed) carry rmqlab's own headers instead: \
they show with the reason `parked`, the queue in x-rmqlab-queue and the time in \
x-rmqlab-failed-at. A message with neither shows as (unknown) and is never redriven.

--redrive republishes each selected message with its properties and headers, confirmed, then \
acks it (as `queues move`): straight to the queue it died in through the default exchange (a \
fanout or topic exchange would copy it to every other queue bound to it), or with --via-exchange \
through the exchange and routing keys it was first published with. Expired messages redriven to a \
queue that has a message TTL expire again after it: rmqlab says so. A redrive takes no more \
than the dead-letter queue held when it began, so a queue that dead-letters them straight back \
(a TTL or maximum length of 0) cannot make it endless: what came back stays, and rmqlab says how \
many.

Examples:
  rmqlab queues dead-letters orders.dlq
  rmqlab queues dead-letters orders.dlq --redrive --reason rejected
  rmqlab queues dead-letters task_queue.failed --redrive
  rmqlab queues dead-letters orders.dlq --from-queue orders --redrive --via-exchange"
    )]
    DeadLetters(QueuesDeadLettersArgs),
}

#[derive(Debug, Args)]
pub struct QueuesPeekArgs {
    /// The queue (or stream) to look into, in the vhost of --url
    #[arg(value_name = "QUEUE", value_parser = name)]
    pub queue: String,
    /// Show at most N messages, from the head of the queue
    #[arg(long, value_name = "N", default_value = "10", value_parser = positive)]
    pub count: u64,
    /// Peek into a quorum queue all the same, counting one delivery for each message shown
    #[arg(long)]
    pub force: bool,
    /// How to print each message: a line ` [x] BODY`, the body alone, or one JSON object a line
    #[arg(short, long, value_enum, value_name = "FORMAT", default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct QueuesMoveArgs {
    /// The queue to take the messages from
    #[arg(value_name = "SOURCE", value_parser = name)]
    pub source: String,
    /// The queue to put them in, through the default exchange; it must exist
    #[arg(
        value_name = "DESTINATION",
        value_parser = name,
        required_unless_present = "to_exchange",
        conflicts_with = "to_exchange"
    )]
    pub destination: Option<String>,
    /// Publish to this exchange instead of a queue; it must exist
    #[arg(long, value_name = "EXCHANGE", value_parser = name)]
    pub to_exchange: Option<String>,
    /// The routing key to publish with at --to-exchange [default: each message's own]
    #[arg(long, value_name = "KEY", requires = "to_exchange", value_parser = short_string)]
    pub routing_key: Option<String>,
    /// Move at most N messages
    #[arg(long, value_name = "N", value_parser = positive)]
    pub count: Option<u64>,
}

#[derive(Debug, Args)]
pub struct QueuesDeadLettersArgs {
    /// The dead-letter queue (or QUEUE.failed of `task work`), in the vhost of --url
    #[arg(value_name = "QUEUE", value_parser = name)]
    pub queue: String,
    /// Republish each selected message where it died, confirmed, then ack it here
    #[arg(long)]
    pub redrive: bool,
    /// With --redrive: publish through the exchange and routing keys of the first death, not
    /// straight to the queue
    #[arg(long, requires = "redrive")]
    pub via_exchange: bool,
    /// Only the messages that (first) died for this reason
    #[arg(long, value_enum, value_name = "REASON")]
    pub reason: Option<DeathReason>,
    /// Only the messages that (first) died in this queue
    #[arg(long, value_name = "QUEUE", value_parser = name)]
    pub from_queue: Option<String>,
    /// Read a quorum queue all the same, counting one delivery for each message put back
    #[arg(long)]
    pub force: bool,
    /// Output format of the table
    #[arg(short, long, value_enum, value_name = "FORMAT", default_value_t = TableFormat::Table)]
    pub output: TableFormat,
    /// Leave out the header row
    #[arg(long)]
    pub no_headers: bool,
}

/// Why a message was dead-lettered (`x-first-death-reason`), or parked by `task work`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeathReason {
    /// rejected or nacked without requeue
    Rejected,
    /// its TTL (per message or per queue) passed
    Expired,
    /// dropped from the head of a queue over its length limit
    Maxlen,
    /// delivered more often than a quorum queue's delivery limit
    #[value(name = "delivery_limit")]
    DeliveryLimit,
    /// parked in QUEUE.failed by `task work --exec`
    Parked,
}

#[derive(Debug, Args)]
pub struct QueuesListArgs {
    /// List the queues of this vhost only [default: the vhost of the --broker section when it
    /// sets one, else every vhost]
    #[arg(long, value_name = "VHOST", value_parser = name)]
    pub vhost: Option<String>,
    /// Only queues whose name matches this regular expression (matched by the broker)
    #[arg(long, value_name = "REGEX", value_parser = regex)]
    pub filter: Option<String>,
    /// Show these columns, in this order (comma-separated; see below) [default: vhost, name,
    /// messages_ready, messages_unacknowledged, consumers]
    #[arg(long, value_enum, value_name = "COLUMN,...", value_delimiter = ',')]
    pub columns: Vec<QueueColumn>,
    /// Sort by this column [default: vhost, then name]
    #[arg(long, value_enum, value_name = "COLUMN")]
    pub sort: Option<QueueColumn>,
    /// Reverse the order
    #[arg(long)]
    pub reverse: bool,
    /// Output format
    #[arg(short, long, value_enum, value_name = "FORMAT", default_value_t = TableFormat::Table)]
    pub output: TableFormat,
    /// Leave out the header row
    #[arg(long)]
    pub no_headers: bool,
    /// Refresh every DURATION (2s, 1m) until Ctrl-C, showing the change in ready messages, the
    /// publish, deliver and ack rates, and on a terminal a sparkline of each queue's depth
    #[arg(long, value_name = "DURATION", value_parser = watch_interval)]
    pub watch: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct QueueNameArgs {
    /// The queue's name
    #[arg(value_name = "NAME", value_parser = name)]
    pub name: String,
    /// The queue's vhost [default: the vhost of --url]
    #[arg(long, value_name = "VHOST", value_parser = name)]
    pub vhost: Option<String>,
}

#[derive(Debug, Args)]
pub struct QueuesDeleteArgs {
    #[command(flatten)]
    pub queue: QueueNameArgs,
    /// Refuse (exit 65) when the queue holds messages
    #[arg(long)]
    pub if_empty: bool,
    /// Refuse (exit 65) when the queue has consumers
    #[arg(long)]
    pub if_unused: bool,
}

/// A column of `queues list`, named as in the management API (and `rabbitmqctl list_queues`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueueColumn {
    #[value(name = "vhost")]
    Vhost,
    #[value(name = "name")]
    Name,
    #[value(name = "type")]
    Type,
    #[value(name = "state")]
    State,
    #[value(name = "durable")]
    Durable,
    #[value(name = "messages")]
    Messages,
    #[value(name = "messages_ready", alias = "ready")]
    MessagesReady,
    #[value(name = "messages_unacknowledged", alias = "unacked")]
    MessagesUnacknowledged,
    #[value(name = "consumers")]
    Consumers,
    #[value(name = "memory")]
    Memory,
    #[value(name = "node")]
    Node,
    #[value(name = "leader")]
    Leader,
    #[value(name = "members")]
    Members,
    #[value(name = "online")]
    Online,
    #[value(name = "publish_rate")]
    PublishRate,
    #[value(name = "deliver_rate")]
    DeliverRate,
    #[value(name = "ack_rate")]
    AckRate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TableFormat {
    /// a table that fits the terminal
    Table,
    /// tab-separated values, one queue a line
    Tsv,
    /// a JSON array of objects with the API's field names
    Json,
}

#[derive(Debug, Subcommand)]
pub enum HelloCommand {
    /// Declare the queue and publish one message (or one per line of -f), confirmed by the broker
    #[command(
        mut_arg("words", words_help("Hello World!")),
        after_long_help = "Examples:
  rmqlab hello send
  rmqlab hello send Hi there
  seq 3 | rmqlab hello send -f -"
    )]
    Send(HelloSendArgs),
    /// Declare the queue and print the messages that arrive
    #[command(
        mut_arg("output", output_help("` [x] Received MESSAGE`")),
        after_long_help = "Each message is acknowledged once it has been printed. (The \
tutorial consumes with auto-ack; acking after printing means that --count and Ctrl-C never \
take a message from the queue that was not printed.) A closed stdout (`| head -1`) ends the \
run with exit 0, but the lines already written into the pipe are gone with it, and they were \
acked: to take exactly N messages, use --count N.

Examples:
  rmqlab hello recv
  rmqlab hello recv --count 1
  rmqlab hello recv --idle-timeout 2s -o json"
    )]
    Recv(HelloRecvArgs),
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Declare the durable queue and publish persistent tasks, confirmed by the broker
    #[command(
        mut_arg("words", words_help("Hello World!")),
        after_long_help = "Examples:
  rmqlab task new First message.
  rmqlab task new A very heavy task.........
  seq 100 | rmqlab task new -f -"
    )]
    New(TaskNewArgs),
    /// Work through tasks: one interval per `.` in the body, ack after the work
    #[command(
        mut_arg("output", output_help("` [x] Received MESSAGE`, then ` [x] Done`")),
        after_long_help = "Examples:
  rmqlab task work
  rmqlab task work --prefetch 1 --exec ./handle.sh
  rmqlab task work --exec ./handle.sh --retries 3 --on-failure dead-letter
  rmqlab task work --count 10000 --dot-duration 0s -o body | wc -l

A worker stops taking tasks on Ctrl-C or SIGTERM, finishes the task in progress, acks it and
ends by that signal (the shell sees 130 or 143); a second Ctrl-C aborts that task, which the
broker then gives to another worker.

With --exec, no task is ever dropped. The command runs in a process group of its own, so the
first Ctrl-C at a terminal does not reach it; a second Ctrl-C ends that group (SIGTERM, then
SIGKILL after 5 seconds), and the command dies with rmqlab even when rmqlab is killed. A failed
task is published again, confirmed, to the back of the queue with its failures counted in the
header x-rmqlab-failures, then acked; after --retries such tries it is handled by --on-failure.
A parked task carries the headers x-rmqlab-failures, x-rmqlab-reason (exit status or signal),
x-rmqlab-exit-status or x-rmqlab-signal, x-rmqlab-stderr (the last lines of the command's
stderr), x-rmqlab-command, x-rmqlab-queue and x-rmqlab-failed-at. A parked task that comes back
(`queues dead-letters QUEUE.failed --redrive`, `queues move`) gets its tries again: its failures
count from 0 and the headers of its old park are dropped. Every park is a warning, even
with -q, and a run that parked or dead-lettered tasks ends with exit 65 and their number. A
command that cannot be started (not found, not executable: sh's 126 and 127) puts the task back
and exits 71; an --exec whose first word is no executable is refused (71) before any task is
taken."
    )]
    Work(TaskWorkArgs),
}

#[derive(Debug, Args)]
pub struct HelloSendArgs {
    /// Queue to declare and publish to
    #[arg(long, value_name = "NAME", default_value = "hello", value_parser = name)]
    pub queue: String,
    #[command(flatten)]
    pub queue_type: QueueTypeArg,
    #[command(flatten)]
    pub message: MessageArgs,
    #[command(flatten)]
    pub properties: PropertyArgs,
}

#[derive(Debug, Args)]
pub struct HelloRecvArgs {
    /// Queue to declare and consume from
    #[arg(long, value_name = "NAME", default_value = "hello", value_parser = name)]
    pub queue: String,
    #[command(flatten)]
    pub queue_type: QueueTypeArg,
    #[command(flatten)]
    pub consume: ConsumeArgs,
}

#[derive(Debug, Args)]
pub struct TaskNewArgs {
    /// Durable queue to declare and publish to
    #[arg(long, value_name = "NAME", default_value = "task_queue", value_parser = name)]
    pub queue: String,
    #[command(flatten)]
    pub queue_type: QueueTypeArg,
    #[command(flatten)]
    pub message: MessageArgs,
    #[command(flatten)]
    pub properties: PropertyArgs,
}

#[derive(Debug, Args)]
pub struct TaskWorkArgs {
    /// Durable queue to declare and take tasks from
    #[arg(long, value_name = "NAME", default_value = "task_queue", value_parser = name)]
    pub queue: String,
    #[command(flatten)]
    pub queue_type: QueueTypeArg,
    /// Unacknowledged tasks this worker may hold at once (1 = fair dispatch)
    #[arg(long, value_name = "N", default_value = "1", value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: u16,
    /// Time worked per `.` in a task's body (0s: no work, as fast as possible)
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "1s",
        value_parser = humantime::parse_duration
    )]
    pub dot_duration: Duration,
    /// Run COMMAND through `sh -c` for each task, the body on its stdin, instead of sleeping:
    /// exit 0 acks the task, another exit is a failure (see --retries and --on-failure). Its
    /// stderr passes through to rmqlab's; the task's metadata is in RMQLAB_MSG_* variables
    #[arg(
        long,
        value_name = "COMMAND",
        long_help = exec_long_help(
            "Run COMMAND through `sh -c` for each task, the body on its stdin, instead of \
             sleeping: exit 0 acks the task, another exit is a failure (see --retries and \
             --on-failure). Its stderr passes through to rmqlab's.",
            &[("RMQLAB_MSG_FAILURES", "the task's failures so far (header x-rmqlab-failures)")],
        )
    )]
    pub exec: Option<String>,
    /// Tries again after a task's first failure, at most N times: counted in the task's own
    /// header x-rmqlab-failures, never from the broker's redelivered flag or delivery count
    #[arg(long, value_name = "N", default_value = "1", requires = "exec")]
    pub retries: u32,
    /// What becomes of a task whose last try failed
    #[arg(
        long,
        value_enum,
        value_name = "ACTION",
        default_value_t = OnFailure::Park,
        requires = "exec"
    )]
    pub on_failure: OnFailure,
    #[command(flatten)]
    pub consume: ConsumeArgs,
}

/// What becomes of a task whose last try failed (`--on-failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnFailure {
    /// publish it, confirmed, to the durable queue QUEUE.failed with headers saying why, then
    /// ack it; exit 65 at the end
    Park,
    /// reject it to the queue's dead-letter exchange (rmqlab refuses to start, 65, when the
    /// queue has none, by argument or policy: asked of the management API); exit 65 at the end
    DeadLetter,
    /// put it back as it is, forever (RabbitMQ 4.x quorum queues drop or dead-letter a message
    /// after 20 deliveries unless the queue's delivery limit says otherwise)
    Requeue,
    /// put it back and exit 65
    Stop,
}

#[derive(Debug, Args)]
pub struct QueueTypeArg {
    /// Type of the queue when rmqlab creates it, durable [default: quorum]. A queue that exists
    /// is used as it is, whatever its type; only a type given here that contradicts it is an
    /// error (65)
    #[arg(long, value_enum, value_name = "TYPE")]
    pub queue_type: Option<QueueType>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueueType {
    Classic,
    Quorum,
}

#[derive(Debug, Subcommand)]
pub enum StreamCommand {
    /// Create the stream if absent and append one message (or one per line of -f), with confirms
    #[command(after_long_help = "The stream protocol listens on port 5552 (plugin \
`rabbitmq_stream`, RabbitMQ 3.11 or later for rmqlab's client): see --stream-url. A stream keeps \
every message until its retention (--max-length-bytes, --max-age) removes old segments; reading \
takes nothing away.

As `task new`: a lost connection is opened again within --reconnect-timeout and every message \
not yet confirmed is sent again (at-least-once: it may be in the stream twice; the run says how \
many were sent again); past the timeout, exit 75 saying how many lines were confirmed.

Examples:
  rmqlab stream send
  rmqlab stream send --stream events user signed up
  seq 1000 | rmqlab stream send --stream numbers -f -")]
    Send(StreamSendArgs),
    /// Read a stream from an offset and print each message with its offset
    #[command(
        after_long_help = "--offset: `first` (the default, as the tutorial), `last` (the \
start of the last chunk the broker wrote: possibly several messages), `next` (only what is \
appended from now on), a number (exactly that offset), an RFC 3339 time \
(2026-11-27T17:00:00Z) or a duration ago (10m): from the first chunk written at or after that \
time.

-o json: each message's `body`, `stream`, `offset`, and the time the broker wrote its chunk: \
`timestamp` (RFC 3339, UTC, milliseconds) and `timestamp_ms` (milliseconds since the Unix epoch).

A lost connection is opened again within --reconnect-timeout, and reading goes on just after \
the last offset printed: nothing skipped, nothing twice.

--name CONSUMER tracks the offset on the broker: the offset stored under that name wins over \
--offset (reading resumes just after it); it is stored every --store-every messages and on every \
way out (--count, --idle-timeout, Ctrl-C, an error), so a consumer killed with SIGKILL reads \
again at most --store-every messages, and skips none.

Examples:
  rmqlab stream recv
  rmqlab stream recv --stream events --offset next
  rmqlab stream recv --stream events --offset 10m -o json
  rmqlab stream recv --stream stream-offset-tracking-rust --name consumer-1 --count 100"
    )]
    Recv(StreamRecvArgs),
    /// Show a stream's first and last offsets, its leader and replicas, and the offsets named
    /// consumers stored
    #[command(
        after_long_help = "What the stream protocol exposes: the leader and replica nodes \
(metadata), the offset of the first message and of the last message of the last chunk (read by \
short-lived consumers: nothing is taken, nothing stored), and for each --name the offset that \
consumer stored, if any. The stream is not created.

Examples:
  rmqlab stream info
  rmqlab stream info stream-offset-tracking-rust --name consumer-1"
    )]
    Info(StreamInfoArgs),
}

#[derive(Debug, Args)]
pub struct StreamInfoArgs {
    /// The stream
    #[arg(value_name = "NAME", default_value = "hello-rust-stream", value_parser = name)]
    pub stream: String,
    /// A consumer whose stored offset to show (repeat for several)
    #[arg(long, value_name = "CONSUMER", value_parser = name)]
    pub name: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StreamTarget {
    /// The stream
    #[arg(long, value_name = "NAME", default_value = "hello-rust-stream", value_parser = name)]
    pub stream: String,
    /// Retention when the stream is created: keep at most this many bytes (old segments go)
    #[arg(long, value_name = "SIZE", default_value = "5GB", value_parser = parse_size)]
    pub max_length_bytes: u64,
    /// Retention when the stream is created: drop segments older than this (7d, 12h)
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub max_age: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct StreamSendArgs {
    #[command(flatten)]
    pub target: StreamTarget,
    #[command(flatten)]
    pub message: MessageArgs,
}

#[derive(Debug, Args)]
pub struct StreamRecvArgs {
    #[command(flatten)]
    pub target: StreamTarget,
    /// Where to start: first, last, next, an offset, an RFC 3339 time or a duration ago (10m)
    #[arg(long, value_name = "OFFSET", default_value = "first", value_parser = parse_offset)]
    pub offset: StartAt,
    /// Track the offset on the broker under this consumer name (see below)
    #[arg(long, value_name = "CONSUMER", value_parser = name)]
    pub name: Option<String>,
    /// With --name: store the offset every N messages (and always at the end)
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = positive, requires = "name")]
    pub store_every: u64,
    #[command(flatten)]
    pub consume: ConsumeArgs,
}

/// Where `stream recv` starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    First,
    Last,
    Next,
    Offset(u64),
    /// Milliseconds since the Unix epoch.
    Timestamp(i64),
}

/// `first`, `last`, `next`, an offset, an RFC 3339 time, or a duration ago.
pub fn parse_offset(text: &str) -> Result<StartAt, String> {
    parse_offset_at(text, std::time::SystemTime::now())
}

pub fn parse_offset_at(text: &str, now: std::time::SystemTime) -> Result<StartAt, String> {
    let millis = |time: std::time::SystemTime| {
        time.duration_since(std::time::UNIX_EPOCH)
            .map(|since| since.as_millis() as i64)
            .map_err(|_| format!("'{text}' is before 1970"))
    };
    match text {
        "first" => return Ok(StartAt::First),
        "last" => return Ok(StartAt::Last),
        "next" => return Ok(StartAt::Next),
        _ => {}
    }
    if let Ok(offset) = text.parse::<u64>() {
        return Ok(StartAt::Offset(offset));
    }
    if let Ok(time) = humantime::parse_rfc3339_weak(text) {
        return millis(time).map(StartAt::Timestamp);
    }
    if let Ok(ago) = humantime::parse_duration(text) {
        let time = now
            .checked_sub(ago)
            .ok_or_else(|| format!("'{text}' ago is before 1970"))?;
        return millis(time).map(StartAt::Timestamp);
    }
    Err(format!(
        "'{text}' is not an offset: write first, last, next, a number, an RFC 3339 time \
         (2026-11-27T17:00:00Z) or a duration ago (10m)"
    ))
}

#[derive(Debug, Args)]
pub struct MessageArgs {
    /// The message: the words joined with single spaces [default: the tutorial's message]
    #[arg(value_name = "WORDS", conflicts_with = "file")]
    pub words: Vec<String>,
    /// Publish one message per line of PATH (`-` reads stdin); stdin is never read otherwise.
    /// Every line is published even when stdout closes (`| head`): the ` [x] Sent` lines are a
    /// report, the messages are the work. A stdout that cannot be written for another reason
    /// (a full disk) does not stop publishing either: rmqlab exits 74 at the end, saying how
    /// many messages were confirmed
    #[arg(short, long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Refuse an input line longer than SIZE (exit 65, naming the line; nothing after it is
    /// published): a line with no newline is not read into memory without end. RabbitMQ 3.x
    /// accepts messages up to 128 MiB by default, 4.x up to 16 MiB
    #[arg(long, value_name = "SIZE", default_value = "128MiB", value_parser = parse_size)]
    pub max_message_size: u64,
    /// Give up (exit 75, saying what was confirmed) when the broker takes or confirms no
    /// message for this long, as while a resource alarm blocks publishers [default: no bound]
    #[arg(long, value_name = "DURATION", value_parser = timeout)]
    pub confirm_timeout: Option<Duration>,
}

pub use crate::message::InputFormat;

const INPUT_LONG_HELP: &str = "How to read each input line: `body`, the line is the message's \
body; `json`, the line is a whole message as consumers print it with `-o json` (body, or \
body_base64 for exact bytes, which wins; routing_key; properties, with headers), so that \
`rmqlab hello recv -o json | rmqlab hello send --queue copy --input json` copies what it \
received. --input json reads stdin when no -f is given, unless the message is on the command \
line (then it is one such line). The other fields consumers print (exchange, redelivered, \
delivery_tag; a stream message's stream, offset and timestamp) are the delivery's and are left \
out; any other key, or a property beside the body instead of in properties, is not a message. \
A line's routing_key is used by \
`pubsub`, `routing` and `topics emit` (the command's key is for lines that have none); \
`hello send` and `task new` always publish to their queue. A line's delivery_mode wins over \
`task new`'s persistent default. The flags below are set on every message over what the line \
says (a --header replaces a header of the same name, the others add to the line's). A line that \
is not such a message stops the run at that line: exit 65 naming the line, after the lines \
before it are published and confirmed, and nothing after it.

Header values in JSON: a string, true/false, null (void), an array, an object (a table), a \
number with a fraction (a 64-bit float) and an integer (a signed 32-bit int when it fits, else \
64-bit) are themselves; any other AMQP value is written {\"type\":TYPE,\"value\":VALUE} with \
TYPE i8, u8, i16, u16, i32, u32 or i64 (an integer), f32 or f64 (a number, or \"NaN\", \"inf\", \
\"-inf\", which are shown but never published: RabbitMQ closes the connection on them), decimal (a string: \"12.50\" is scale 2), timestamp (seconds since 1970, as in \
x-death), bytes (a byte array, base64), string_base64 (a string that is not UTF-8) or table \
(a table with a key `type` of its own). `-o json` prints values this way, so a replay \
reproduces every value with its AMQP type.";

/// What every AMQP publisher may set on its messages.
#[derive(Debug, Args)]
#[command(next_help_heading = "Message properties")]
pub struct PropertyArgs {
    /// How to read each input line: a body, or a whole message as `-o json` prints it (stdin
    /// when no -f is given)
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        default_value_t = InputFormat::Body,
        long_help = INPUT_LONG_HELP
    )]
    pub input: InputFormat,
    /// Set header NAME to the string TEXT; NAME:=JSON sets another type, written as in
    /// `-o json` (n:=3 is a 32-bit integer; see --input). Repeatable
    #[arg(long = "header", value_name = "NAME=TEXT", value_parser = crate::message::parse_header)]
    pub headers: Vec<(String, lapin::types::AMQPValue)>,
    /// The content_type property (text/plain, application/json)
    #[arg(long, value_name = "TYPE", value_parser = short_string)]
    pub content_type: Option<String>,
    /// The message_id property
    #[arg(long, value_name = "ID", value_parser = short_string)]
    pub message_id: Option<String>,
    /// The correlation_id property
    #[arg(long, value_name = "ID", value_parser = short_string)]
    pub correlation_id: Option<String>,
    /// The reply_to property: the queue an answer should go to
    #[arg(long, value_name = "QUEUE", value_parser = short_string)]
    pub reply_to: Option<String>,
    /// The expiration property: the broker drops (or dead-letters) the message once it waited
    /// this long in a queue (500ms, 10s, 1h; sent as milliseconds)
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub expiration: Option<Duration>,
    /// The priority property, 0 to 255 (a classic queue with x-max-priority orders by it)
    #[arg(long, value_name = "N")]
    pub priority: Option<u8>,
}

impl PropertyArgs {
    /// How input becomes messages, with what these flags set.
    pub fn form(&self) -> crate::message::MessageForm {
        crate::message::MessageForm {
            input: self.input,
            stamp: crate::message::Stamp {
                headers: self.headers.clone(),
                content_type: self.content_type.clone(),
                message_id: self.message_id.clone(),
                correlation_id: self.correlation_id.clone(),
                reply_to: self.reply_to.clone(),
                expiration: self.expiration,
                priority: self.priority,
            },
            user: None,
        }
    }
}

/// For `rpc call`, which sets these itself: refuses the flag.
fn made_by_rpc_call(property: &'static str) -> impl FnOnce(clap::Arg) -> clap::Arg {
    move |arg| {
        arg.hide(true)
            .value_parser(move |_: &str| -> Result<String, String> {
                Err(format!("rpc call makes each request's {property} itself"))
            })
    }
}

/// A size in bytes: `1048576`, `512KiB`, `128MiB`, `1GiB` (also `K`, `M`, `G`), or in powers of
/// ten, `16MB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size: write bytes, or 64KiB, 16MiB, 1GiB"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "k" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(format!("unknown size unit '{other}': use KiB, MiB or GiB")),
    };
    match number.checked_mul(factor) {
        Some(0) | None => Err(format!("'{text}' is not a size rmqlab can take")),
        Some(size) => Ok(size),
    }
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Exit 0 after N messages
    #[arg(long, value_name = "N", value_parser = positive)]
    pub count: Option<u64>,
    /// Exit 0 after this long without a message (500ms, 5s, 1m)
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// How to print each message: the tutorial's lines, the body alone, or one JSON object a line
    #[arg(short, long, value_enum, value_name = "FORMAT", default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// the tutorial's line for each message (named above)
    Text,
    /// each body exactly, then a newline
    Body,
    /// one JSON object per line: body, exchange, routing_key, redelivered, delivery_tag, properties
    Json,
}

/// The longest name RabbitMQ takes (an AMQP short string): queues, exchanges, vhosts, routing
/// keys.
pub const MAX_NAME_BYTES: usize = 255;

/// A queue, exchange or vhost name: not empty (an empty queue name asks the broker to make one
/// up), at most 255 bytes.
pub fn name(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err("a name cannot be empty".into());
    }
    short_string(value)
}

/// A routing key or other AMQP short string: at most 255 bytes, may be empty.
pub fn short_string(value: &str) -> Result<String, String> {
    match value.len() {
        len if len > MAX_NAME_BYTES => Err(format!(
            "it is {len} bytes long; RabbitMQ takes at most {MAX_NAME_BYTES} bytes"
        )),
        _ => Ok(value.to_string()),
    }
}

/// A count of 1 or more.
fn positive(value: &str) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(0) => Err("it must be 1 or more".into()),
        Ok(count) => Ok(count),
        Err(error) => Err(format!("{error} (expected a whole number, 1 or more)")),
    }
}

/// A limit on a wait (`--connect-timeout`, `--api-timeout`, `--confirm-timeout`): more than 0,
/// as a limit of 0 would give up before anything could answer.
pub fn timeout(value: &str) -> Result<Duration, String> {
    match humantime::parse_duration(value).map_err(|error| error.to_string())? {
        Duration::ZERO => Err("it must be more than 0 (a limit of 0s gives up at once)".into()),
        timeout => Ok(timeout),
    }
}

/// The shortest `--watch` interval: each refresh costs the broker an API call per page.
pub const MIN_WATCH: Duration = Duration::from_millis(100);

fn watch_interval(value: &str) -> Result<Duration, String> {
    let interval = humantime::parse_duration(value).map_err(|error| error.to_string())?;
    if interval < MIN_WATCH {
        return Err(format!(
            "refreshing more often than every {} would only load the broker",
            humantime::format_duration(MIN_WATCH)
        ));
    }
    Ok(interval)
}

/// `rpc call --timeout`: at least a millisecond, as it is also the requests' expiration in
/// whole milliseconds (an expiration of 0 would have the broker drop every request at once).
fn reply_timeout(value: &str) -> Result<Duration, String> {
    let timeout = humantime::parse_duration(value).map_err(|error| error.to_string())?;
    if timeout < Duration::from_millis(1) {
        return Err(
            "a reply cannot come in less than 1ms (it is also the requests' expiration)".into(),
        );
    }
    Ok(timeout)
}

/// A `--filter` pattern, checked here because the broker answers a broken one with an empty
/// list (3.x) or a puzzling 400. The broker uses Erlang's `re` (PCRE): only errors that are
/// errors there too are refused; what PCRE has and this parser lacks (look-around,
/// backreferences, possessive or atomic forms) is left to the broker.
fn regex(value: &str) -> Result<String, String> {
    use regex_syntax::ast::{ErrorKind, parse::Parser};
    let mut checked = value.to_string();
    // The parser stops at the first look-around or backreference, before the rest of the
    // pattern is checked: those become a plain group and a literal, and the rest is parsed.
    for _ in 0..value.len() {
        match Parser::new().parse(&checked) {
            Err(error)
                if matches!(
                    error.kind(),
                    ErrorKind::UnsupportedLookAround | ErrorKind::UnsupportedBackreference
                ) =>
            {
                let span = error.span();
                let replacement = match error.kind() {
                    ErrorKind::UnsupportedLookAround => "(?:",
                    _ => "x",
                };
                let next = format!(
                    "{}{replacement}{}",
                    &checked[..span.start.offset],
                    &checked[span.end.offset..]
                );
                if next == checked {
                    break;
                }
                checked = next;
            }
            _ => break,
        }
    }
    match Parser::new().parse(&checked) {
        Err(error)
            if matches!(
                error.kind(),
                ErrorKind::GroupUnclosed
                    | ErrorKind::GroupUnopened
                    | ErrorKind::ClassUnclosed
                    | ErrorKind::ClassRangeInvalid
                    | ErrorKind::EscapeUnexpectedEof
                    | ErrorKind::RepetitionCountUnclosed
                    | ErrorKind::RepetitionCountInvalid
            ) =>
        {
            Err(format!("not a regular expression: {}", error.kind()))
        }
        _ => Ok(value.to_string()),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn stream_offsets_parse_every_form() {
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        let at = |text: &str| parse_offset_at(text, now);
        assert_eq!(at("first"), Ok(StartAt::First));
        assert_eq!(at("last"), Ok(StartAt::Last));
        assert_eq!(at("next"), Ok(StartAt::Next));
        assert_eq!(at("500"), Ok(StartAt::Offset(500)));
        assert_eq!(at("10m"), Ok(StartAt::Timestamp((1_000_000 - 600) * 1000)));
        assert_eq!(
            at("1500ms"),
            Ok(StartAt::Timestamp(1_000_000 * 1000 - 1500))
        );
        assert_eq!(
            at("1970-01-02T00:00:00Z"),
            Ok(StartAt::Timestamp(86_400 * 1000))
        );
        assert!(at("yesterday").unwrap_err().contains("is not an offset"));
        assert!(at("-1").is_err());
    }

    use super::*;
    use clap::CommandFactory;

    #[test]
    fn sizes_parse_in_both_powers() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("1KiB"), Ok(1024));
        assert_eq!(parse_size("128MiB"), Ok(128 << 20));
        assert_eq!(parse_size("16MB"), Ok(16_000_000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn names_are_short_strings_and_not_empty() {
        assert!(name("").is_err());
        assert!(name(&"q".repeat(255)).is_ok());
        let error = name(&"é".repeat(128)).unwrap_err();
        assert!(error.contains("256 bytes"), "{error}");
        assert!(short_string("").is_ok());
    }

    #[test]
    fn counts_start_at_one() {
        assert_eq!(positive("1"), Ok(1));
        assert_eq!(positive("0").unwrap_err(), "it must be 1 or more");
        assert!(positive("-3").unwrap_err().contains("1 or more"));
    }

    #[test]
    fn broken_patterns_are_refused_and_pcre_ones_left_to_the_broker() {
        assert!(regex("([").is_err());
        assert!(regex("a)").is_err());
        assert!(regex("^task\\.").is_ok());
        assert!(regex("(?=x)y").is_ok(), "look-ahead is PCRE's");
        assert!(regex("(a)\\1").is_ok(), "backreferences are PCRE's");
        assert!(regex("(?<=a)b(?!c)(?<!d)").is_ok(), "look-behind too");
        for broken in ["(?=a", "(?!a", "(?<=a", "(a)\\1(", "(?=a)[", "(?=(?=a)"] {
            let refused = regex(broken).expect_err(broken);
            assert!(
                refused.starts_with("not a regular expression: "),
                "{refused}"
            );
        }
    }

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }
}
