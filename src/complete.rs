//! Shell completion, done by rmqlab itself: the scripts under `completions/` (from
//! [`registration`]) call `RMQLAB_COMPLETE=<shell> rmqlab -- <words>` at each Tab, and clap
//! answers from the command-line definition. Queue, stream and exchange names come live from
//! the management API of the broker that the words being completed (or the environment) name,
//! asked with a short timeout; any failure completes nothing rather than waiting or printing.

use crate::{cli::Cli, context::Context, management::Api};
use clap::{CommandFactory, FromArgMatches};
use clap_complete::{
    ArgValueCompleter, CompletionCandidate,
    env::{Bash, Elvish, EnvCompleter, Fish, Powershell, Zsh},
};
use std::{ffi::OsStr, time::Duration};

/// The variable that turns a run of rmqlab into a completion request.
pub const VAR: &str = "RMQLAB_COMPLETE";

/// How long a Tab may wait for the broker's names.
const NAMES_TIMEOUT: Duration = Duration::from_millis(800);

/// Answers a completion request and exits when [`VAR`] is set; returns otherwise.
pub fn answer_if_asked() {
    clap_complete::CompleteEnv::with_factory(command)
        .var(VAR)
        .completer("rmqlab")
        .complete();
}

/// rmqlab's clap command with the live-name completers attached.
pub fn command() -> clap::Command {
    with_live_names(Cli::command(), &[])
}

/// The script that registers rmqlab's completion with `shell`.
pub fn registration(shell: clap_complete::Shell) -> Vec<u8> {
    let completer: &dyn EnvCompleter = match shell {
        clap_complete::Shell::Bash => &Bash,
        clap_complete::Shell::Zsh => &Zsh,
        clap_complete::Shell::Fish => &Fish,
        clap_complete::Shell::Elvish => &Elvish,
        clap_complete::Shell::PowerShell => &Powershell,
        _ => &Bash,
    };
    let mut script = Vec::new();
    completer
        .write_registration(VAR, "rmqlab", "rmqlab", "rmqlab", &mut script)
        .expect("writing into memory cannot fail");
    script
}

/// What a name argument names, for its completer.
#[derive(Clone, Copy)]
enum Names {
    Queues,
    Streams,
    Exchanges,
}

/// Attaches a completer to every argument that names a queue, stream or exchange.
fn with_live_names(command: clap::Command, path: &[&str]) -> clap::Command {
    let under_queues = path.first() == Some(&"queues");
    let command = command.mut_args(|arg| {
        let names = match arg.get_id().as_str() {
            "queue" | "source" | "destination" | "from_queue" => Names::Queues,
            "name" if under_queues && arg.is_positional() => Names::Queues,
            "stream" => Names::Streams,
            "exchange" | "to_exchange" => Names::Exchanges,
            _ => return arg,
        };
        arg.add(ArgValueCompleter::new(move |current: &OsStr| {
            complete_names(names, current)
        }))
    });
    let subcommands: Vec<String> = command
        .get_subcommands()
        .map(|sub| sub.get_name().to_string())
        .collect();
    subcommands.iter().fold(command, |command, name| {
        let mut sub_path = path.to_vec();
        sub_path.push(name);
        command.mut_subcommand(name, |sub| with_live_names(sub, &sub_path))
    })
}

fn complete_names(names: Names, current: &OsStr) -> Vec<CompletionCandidate> {
    let prefix = current.to_string_lossy();
    let Some(ctx) = context_of_command_line() else {
        return Vec::new();
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    let asked = async {
        let api = Api::new(&ctx).await.ok()?;
        match names {
            Names::Queues => api.names("queues", None).await,
            Names::Streams => api.names("queues", Some("stream")).await,
            Names::Exchanges => api.names("exchanges", None).await,
        }
        .ok()
    };
    // The timer is made inside the runtime: tokio's timers need one to exist.
    let listed = runtime
        .block_on(async { tokio::time::timeout(NAMES_TIMEOUT, asked).await })
        .ok()
        .flatten();
    let mut listed: Vec<String> = listed
        .unwrap_or_default()
        .into_iter()
        .filter(|name| !name.is_empty() && name.starts_with(&*prefix))
        // A name that a shell would mangle (spaces, control characters) is not offered.
        .filter(|name| !name.chars().any(|c| c.is_whitespace() || c.is_control()))
        .collect();
    listed.sort();
    listed.into_iter().map(CompletionCandidate::new).collect()
}

/// The settings of the command line being completed: its global options that take a value
/// (`--url`, `--api-url`, TLS files...), with the environment and defaults as for a real run,
/// and short timeouts. `None` when they do not make sense yet.
fn context_of_command_line() -> Option<Context> {
    let words: Vec<String> = std::env::args()
        .skip_while(|word| word != "--")
        .skip(2)
        .collect();
    let command = Cli::command();
    let globals: Vec<String> = command
        .get_arguments()
        .filter(|arg| arg.is_global_set() && arg.get_action().takes_values())
        .filter_map(|arg| arg.get_long().map(|long| format!("--{long}")))
        .collect();
    let mut forwarded = vec!["rmqlab".to_string(), "--quiet".to_string()];
    let mut words = words.iter().peekable();
    while let Some(word) = words.next() {
        for global in &globals {
            if word == global {
                forwarded.push(word.clone());
                forwarded.push(words.peek().map(|next| next.to_string())?);
            } else if word.starts_with(&format!("{global}=")) {
                forwarded.push(word.clone());
            }
        }
    }
    forwarded.extend(["completions".to_string(), "bash".to_string()]);
    let matches = command.try_get_matches_from(forwarded).ok()?;
    let cli = Cli::from_arg_matches(&matches).ok()?;
    let mut ctx = Context::new(&cli.global).ok()?;
    ctx.connect_timeout = NAMES_TIMEOUT;
    ctx.api_timeout = NAMES_TIMEOUT;
    Some(ctx)
}
