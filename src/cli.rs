//! Every clap type of rmqlab, in one place. The interface is fixed in CLI.md.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::{path::PathBuf, time::Duration};

const EXIT_CODES: &str = "\
Exit codes:
  0    success (also when stdout is closed early, as by `| head`)
  2    usage error: unknown option, bad URI, bad duration
  65   data error: queue property mismatch, message nacked or unroutable
  66   the -f input cannot be read
  69   broker unreachable
  71   the --exec command cannot be started
  74   standard output cannot be written
  75   temporary failure: timeout, connection lost
  77   access refused: credentials, vhost permissions
  130  interrupted (Ctrl-C or SIGTERM) after a clean shutdown";

#[derive(Debug, Parser)]
#[command(
    name = "rmqlab",
    version,
    about = "Learn and script RabbitMQ: the RabbitMQ tutorials as one fast command-line tool",
    after_help = EXIT_CODES,
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

    /// Give up connecting after this long (500ms, 5s, 1m)
    #[arg(
        long,
        global = true,
        value_name = "DURATION",
        default_value = "10s",
        value_parser = humantime::parse_duration
    )]
    pub connect_timeout: Duration,

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
exits 130; a second Ctrl-C aborts that task, which the broker then gives to another worker.")]
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
    /// Type of the queue when rmqlab creates it (queues are always durable)
    #[arg(long, value_enum, value_name = "TYPE", default_value_t = QueueType::Classic)]
    pub queue_type: QueueType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueueType {
    Classic,
    Quorum,
}

#[derive(Debug, Args)]
pub struct MessageArgs {
    /// The message: the words joined with single spaces [default: Hello World!]
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
