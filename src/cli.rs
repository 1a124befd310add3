//! Every clap type of rmqlab, in one place. The interface is fixed in CLI.md.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::{path::PathBuf, time::Duration};

/// The environment variables rmqlab reads, for the man page's ENVIRONMENT.
pub const ENVIRONMENT: &[(&str, &str)] = &[
    ("RMQLAB_URL", "The broker URI, as --url."),
    (
        "AMQP_URL",
        "The broker URI when neither --url nor RMQLAB_URL is given.",
    ),
    (
        "RMQLAB_API_URL",
        "The management HTTP API base URL, as --api-url.",
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
    "rmqlab rpc serve & rmqlab rpc call 30",
    "rmqlab queues list --watch 2s",
];

fn exit_status_help() -> String {
    let mut help = String::from("Examples:\n");
    for example in EXAMPLES {
        help.push_str(&format!("  {example}\n"));
    }
    help.push('\n');
    help.push_str(&crate::exit::help_list());
    help
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
    /// AMQP 0-9-1 URI of the broker (amqps:// for TLS) [env: RMQLAB_URL, then AMQP_URL]
    /// [default: amqp://guest:****@127.0.0.1:5672/%2f, RabbitMQ's default user]
    #[arg(
        long,
        global = true,
        value_name = "URI",
        env = "RMQLAB_URL",
        hide_env = true
    )]
    pub url: Option<String>,

    /// Base URL of the management HTTP API, for `queues` [env: RMQLAB_API_URL] [default:
    /// http://<host of --url>:15672, with the user and password of --url unless it has its own]
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "RMQLAB_API_URL",
        hide_env = true
    )]
    pub api_url: Option<String>,

    /// When to colour status markers on stderr (auto: on a terminal, unless NO_COLOR is set)
    #[arg(long, global = true, value_enum, value_name = "WHEN", default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,

    /// Give up connecting after this long (500ms, 5s, 1m)
    #[arg(
        long,
        global = true,
        value_name = "DURATION",
        default_value = "10s",
        value_parser = humantime::parse_duration
    )]
    pub connect_timeout: Duration,

    /// After a lost connection, keep trying to reconnect for this long, then exit 75 (0s: never
    /// reconnect)
    #[arg(
        long,
        global = true,
        value_name = "DURATION",
        default_value = "5m",
        value_parser = humantime::parse_duration
    )]
    pub reconnect_timeout: Duration,

    /// Trust the server certificates signed by the CA(s) in this PEM file, besides the system's
    /// roots (amqps:// and https://) [env: RMQLAB_TLS_CA_FILE]
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "RMQLAB_TLS_CA_FILE",
        hide_env = true
    )]
    pub tls_ca_file: Option<PathBuf>,

    /// Client certificate (PEM) to present, with --tls-key-file [env: RMQLAB_TLS_CERT_FILE]
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "RMQLAB_TLS_CERT_FILE",
        hide_env = true,
        requires = "tls_key_file"
    )]
    pub tls_cert_file: Option<PathBuf>,

    /// Private key (PEM) of --tls-cert-file [env: RMQLAB_TLS_KEY_FILE]
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "RMQLAB_TLS_KEY_FILE",
        hide_env = true,
        requires = "tls_cert_file"
    )]
    pub tls_key_file: Option<PathBuf>,

    /// Do not verify the server's certificate: for tests only, never in production
    /// [env: RMQLAB_TLS_INSECURE]
    #[arg(long, global = true, env = "RMQLAB_TLS_INSECURE", hide_env = true)]
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
    /// Queue depth, purge and delete, through the management HTTP API
    #[command(subcommand)]
    Queues(QueuesCommand),
    /// Print the completion script for a shell
    #[command(after_long_help = "Examples:
  source <(rmqlab completions bash)
  rmqlab completions zsh > ~/.zfunc/_rmqlab
  rmqlab completions fish > ~/.config/fish/completions/rmqlab.fish")]
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
    Call(RpcCallArgs),
}

#[derive(Debug, Args)]
pub struct RpcServeArgs {
    /// Queue to declare and take requests from
    #[arg(long, value_name = "NAME", default_value = "rpc_queue")]
    pub queue: String,
    #[command(flatten)]
    pub queue_type: QueueTypeArg,
    /// Requests this server may hold unanswered at once
    #[arg(long, value_name = "N", default_value = "1", value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: u16,
    /// Answer with COMMAND run through `sh -c`, the body on its stdin: the reply is its stdout,
    /// its exit status goes in the header x-exit-code
    #[arg(long, value_name = "COMMAND")]
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
    /// Queue to send requests to (not declared: `rpc serve` does that)
    #[arg(long, value_name = "NAME", default_value = "rpc_queue")]
    pub queue: String,
    /// Where replies come: Direct Reply-To, or an exclusive callback queue as in the Python
    /// tutorial
    #[arg(long, value_enum, value_name = "KIND", default_value_t = ReplyQueueKind::Direct)]
    pub reply_queue: ReplyQueueKind,
    /// Give up (exit 75) when a reply takes longer than this; also the requests' expiration
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Requests in flight at once with -f
    #[arg(long, value_name = "N", default_value = "64", value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// How to print each reply
    #[arg(short, long, value_enum, value_name = "FORMAT", default_value_t = ReplyFormat::Text)]
    pub output: ReplyFormat,
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
    #[arg(long, value_name = "N", default_value = "50000", value_parser = clap::value_parser!(u64).range(1..))]
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
    #[arg(long, value_name = "NAME", default_value = "logs")]
    pub exchange: String,
    #[command(flatten)]
    pub message: MessageArgs,
}

#[derive(Debug, Args)]
pub struct PubsubListenArgs {
    /// Fanout exchange to declare and listen to
    #[arg(long, value_name = "NAME", default_value = "logs")]
    pub exchange: String,
    #[command(flatten)]
    pub consume: ConsumeArgs,
}

#[derive(Debug, Subcommand)]
pub enum QueuesCommand {
    /// List queues with their depth (replaces `rabbitmqctl list_queues name messages_ready
    /// messages_unacknowledged`)
    #[command(after_long_help = "Columns: vhost (when no --vhost is given), name, \
messages_ready, messages_unacknowledged, consumers. A number the broker does not report yet (a \
queue created a moment ago has no statistics) shows as 0 in table and tsv output and as null in \
JSON. The broker refreshes these statistics every few seconds.

Examples:
  rmqlab queues list
  rmqlab queues list --filter '^task' --sort messages_ready --reverse
  rmqlab queues list -o tsv --no-headers | cut -f2
  rmqlab queues list --watch 2s")]
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
}

#[derive(Debug, Args)]
pub struct QueuesListArgs {
    /// List the queues of this vhost only [default: every vhost]
    #[arg(long, value_name = "VHOST")]
    pub vhost: Option<String>,
    /// Only queues whose name matches this regular expression (matched by the broker)
    #[arg(long, value_name = "REGEX")]
    pub filter: Option<String>,
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
    /// Refresh every DURATION (2s, 1m) until Ctrl-C, showing the change in ready messages
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub watch: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct QueueNameArgs {
    /// The queue's name
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The queue's vhost [default: the vhost of --url]
    #[arg(long, value_name = "VHOST")]
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

/// A column of `queues list`, named as in the management API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueueColumn {
    #[value(name = "vhost")]
    Vhost,
    #[value(name = "name")]
    Name,
    #[value(name = "messages_ready", alias = "ready")]
    MessagesReady,
    #[value(name = "messages_unacknowledged", alias = "unacked")]
    MessagesUnacknowledged,
    #[value(name = "consumers")]
    Consumers,
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
    #[command(after_long_help = "Examples:
  rmqlab hello send
  rmqlab hello send Hi there
  seq 3 | rmqlab hello send -f -")]
    Send(HelloSendArgs),
    /// Declare the queue and print the messages that arrive
    #[command(
        after_long_help = "Each message is acknowledged once it has been printed. (The \
tutorial consumes with auto-ack; acking after printing means that --count, Ctrl-C or a closed \
stdout never take a message from the queue that was not printed.)

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
    #[command(after_long_help = "Examples:
  rmqlab task new First message.
  rmqlab task new A very heavy task.........
  seq 100 | rmqlab task new -f -")]
    New(TaskNewArgs),
    /// Work through tasks: one interval per `.` in the body, ack after the work
    #[command(after_long_help = "Examples:
  rmqlab task work
  rmqlab task work --prefetch 1 --exec ./handle.sh
  rmqlab task work --count 10000 --dot-duration 0s -o body | wc -l

A worker stops taking tasks on Ctrl-C or SIGTERM, finishes the task in progress, acks it and
ends by that signal (the shell sees 130 or 143); a second Ctrl-C aborts that task, which the
broker then gives to another worker.")]
    Work(TaskWorkArgs),
}

#[derive(Debug, Args)]
pub struct HelloSendArgs {
    /// Queue to declare and publish to
    #[arg(long, value_name = "NAME", default_value = "hello")]
    pub queue: String,
    #[command(flatten)]
    pub queue_type: QueueTypeArg,
    #[command(flatten)]
    pub message: MessageArgs,
}

#[derive(Debug, Args)]
pub struct HelloRecvArgs {
    /// Queue to declare and consume from
    #[arg(long, value_name = "NAME", default_value = "hello")]
    pub queue: String,
    #[command(flatten)]
    pub queue_type: QueueTypeArg,
    #[command(flatten)]
    pub consume: ConsumeArgs,
}

#[derive(Debug, Args)]
pub struct TaskNewArgs {
    /// Durable queue to declare and publish to
    #[arg(long, value_name = "NAME", default_value = "task_queue")]
    pub queue: String,
    #[command(flatten)]
    pub queue_type: QueueTypeArg,
    #[command(flatten)]
    pub message: MessageArgs,
}

#[derive(Debug, Args)]
pub struct TaskWorkArgs {
    /// Durable queue to declare and take tasks from
    #[arg(long, value_name = "NAME", default_value = "task_queue")]
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
    /// Run COMMAND through `sh -c` for each task, the body on its stdin, instead of sleeping.
    /// Exit 0 acks the task; any other exit rejects it: requeued the first time, dropped (or
    /// dead-lettered, if the queue has a dead-letter exchange) when it fails again
    #[arg(long, value_name = "COMMAND")]
    pub exec: Option<String>,
    #[command(flatten)]
    pub consume: ConsumeArgs,
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

#[derive(Debug, Args)]
pub struct MessageArgs {
    /// The message: the words joined with single spaces [default: Hello World!; pubsub emit:
    /// info: Hello World!]
    #[arg(value_name = "WORDS", conflicts_with = "file")]
    pub words: Vec<String>,
    /// Publish one message per line of PATH (`-` reads stdin); stdin is never read otherwise
    #[arg(short, long, value_name = "PATH")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Exit 0 after N messages
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
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
    /// ` [x] Received MESSAGE`, as the tutorial prints
    Text,
    /// each body exactly, then a newline
    Body,
    /// one JSON object per line: body, exchange, routing_key, redelivered, delivery_tag, properties
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }
}
