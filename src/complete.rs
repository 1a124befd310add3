//! Shell completion, done by rmqlab itself: the scripts under `completions/` (from
//! [`registration`]) call `RMQLAB_COMPLETE=<shell> rmqlab -- <words>` at each Tab, and clap
//! answers from the command-line definition. Queue, stream and exchange names come live from
//! the management API of the broker that the words being completed (or the environment) name,
//! asked with a short timeout; any failure completes nothing rather than waiting or printing.

use crate::{
    cli::Cli,
    config::Settings,
    context::{Context, Status},
    management::Api,
};
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
    let complete = clap_complete::CompleteEnv::with_factory(command)
        .var(VAR)
        .completer("rmqlab");
    if std::env::var(VAR).as_deref() != Ok("bash") {
        complete.complete();
        return;
    }
    // bash splits the words at `:` and `=`: join them again, and point at the same word.
    let mut args: Vec<String> = std::env::args().collect();
    let Some(dash) = args.iter().position(|arg| arg == "--") else {
        complete.complete();
        return;
    };
    let words = args.split_off(dash + 1);
    let index: Option<usize> = std::env::var("_CLAP_COMPLETE_INDEX")
        .ok()
        .and_then(|index| index.parse().ok());
    let (words, index) = rejoined_at(words, index);
    if let Some(index) = index {
        // SAFETY: still single-threaded: nothing else reads or writes the environment yet.
        unsafe { std::env::set_var("_CLAP_COMPLETE_INDEX", index.to_string()) };
    }
    args.extend(words);
    let current_dir = std::env::current_dir().ok();
    match complete.try_complete(args, current_dir.as_deref()) {
        Ok(true) => std::process::exit(0),
        Ok(false) => {}
        Err(error) => error.exit(),
    }
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
        // The shell puts a candidate on the command line as it is: a name it would read as
        // more than a word (`;`, `$(...)`, quotes, spaces) could run a command when the user
        // presses Enter. Only names made of plainly safe characters are offered.
        .filter(|name| name.chars().all(is_shell_safe))
        .collect();
    listed.sort();
    listed.into_iter().map(CompletionCandidate::new).collect()
}

/// A character that no shell reads as anything but itself in a word.
fn is_shell_safe(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | '+' | '@' | '%' | ',')
}

/// The words of the command line being completed, with what bash split off at `:` and `=`
/// (its COMP_WORDBREAKS: `amqp://h:5672` arrives as `amqp`, `:`, `//h`, `:`, `5672`) joined
/// again.
fn rejoined(words: impl IntoIterator<Item = String>) -> Vec<String> {
    rejoined_at(words, None).0
}

/// [`rejoined`], and where the word at `index` went.
fn rejoined_at(
    words: impl IntoIterator<Item = String>,
    index: Option<usize>,
) -> (Vec<String>, Option<usize>) {
    let mut joined: Vec<String> = Vec::new();
    let mut glue = false;
    let mut moved = None;
    for (at, word) in words.into_iter().enumerate() {
        match joined.last_mut() {
            Some(last) if glue || word == ":" || word == "=" => {
                glue = word == ":" || word == "=";
                last.push_str(&word);
            }
            _ => {
                glue = false;
                joined.push(word);
            }
        }
        if Some(at) == index {
            moved = Some(joined.len() - 1);
        }
    }
    (joined, moved.or(index))
}

/// The settings of the command line being completed: its global options that take a value
/// (`--url`, `--api-url`, TLS files...), with the environment and defaults as for a real run,
/// and short timeouts. `None` when they do not make sense yet.
fn context_of_command_line() -> Option<Context> {
    let words = rejoined(std::env::args().skip_while(|word| word != "--").skip(2));
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
    // Silent: a warning (a config file others can read, say) at every Tab would garble the
    // command line being edited.
    let settings = Settings::new(&cli.global).ok()?;
    let mut ctx = Context::from_settings(&settings, Status::silent()).ok()?;
    ctx.connect_timeout = NAMES_TIMEOUT;
    ctx.api_timeout = NAMES_TIMEOUT;
    Some(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bash_word_breaks_are_joined_again() {
        let words = [
            "rmqlab",
            "--url",
            "amqp",
            ":",
            "//guest",
            ":",
            "pw@h",
            ":",
            "5672/%2f",
            "--api-url",
            "=",
            "http",
            ":",
            "//h",
            ":",
            "15672",
            "queues",
            "purge",
            "or",
        ];
        assert_eq!(
            rejoined(words.map(String::from)),
            [
                "rmqlab",
                "--url",
                "amqp://guest:pw@h:5672/%2f",
                "--api-url=http://h:15672",
                "queues",
                "purge",
                "or"
            ]
        );
    }

    #[test]
    fn the_word_being_completed_is_found_after_joining() {
        let words = [
            "rmqlab", "--url", "amqp", ":", "//h", "queues", "purge", "or",
        ];
        let (joined, index) = rejoined_at(words.map(String::from), Some(7));
        assert_eq!(joined[index.unwrap()], "or");
        assert_eq!(index, Some(5));
    }

    #[test]
    fn only_plainly_safe_names_are_offered() {
        for safe in ["orders", "orders.dlq", "a-b_c/d+e@f%g,h"] {
            assert!(safe.chars().all(is_shell_safe), "{safe}");
        }
        for unsafe_name in [
            "pwn;touch${IFS}x",
            "orders$(id)",
            "o'q",
            "a b",
            "x\u{202e}y",
            "a:b",
        ] {
            assert!(!unsafe_name.chars().all(is_shell_safe), "{unsafe_name}");
        }
    }
}
