//! Every exit status rmqlab can end with, in one table: it produces the codes, the `--help`
//! epilogue, the man page's EXIT STATUS and README's list; and how a command ended ([`Exit`]).

use crate::signals::Stop;

/// How a command that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success,
    /// A question-like command's answer is no (`topics match`: a key does not match).
    No,
    /// Stopped cleanly by Ctrl-C or SIGTERM: rmqlab then ends by that signal.
    Stopped(Stop),
    /// The exit status an RPC server relayed (`x-exit-code`), passed on as `ssh` does.
    Relayed(u8),
}

impl Exit {
    /// The status a shell sees.
    pub fn status(self) -> u8 {
        match self {
            Exit::Success => Code::Success.value(),
            Exit::No => Code::No.value(),
            Exit::Stopped(Stop::Interrupt) => Code::Interrupted.value(),
            Exit::Stopped(Stop::Terminate) => Code::Terminated.value(),
            Exit::Relayed(status) => status,
        }
    }
}

/// An exit status and what it means (sysexits where one fits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Success,
    No,
    Usage,
    Data,
    NoInput,
    Unavailable,
    Software,
    Os,
    Io,
    Temporary,
    NoPermission,
    Config,
    Interrupted,
    Terminated,
}

impl Code {
    /// Every code, in numeric order.
    pub const ALL: [Code; 14] = [
        Code::Success,
        Code::No,
        Code::Usage,
        Code::Data,
        Code::NoInput,
        Code::Unavailable,
        Code::Software,
        Code::Os,
        Code::Io,
        Code::Temporary,
        Code::NoPermission,
        Code::Config,
        Code::Interrupted,
        Code::Terminated,
    ];

    pub const fn value(self) -> u8 {
        match self {
            Code::Success => 0,
            Code::No => 1,
            Code::Usage => 2,
            Code::Data => 65,
            Code::NoInput => 66,
            Code::Unavailable => 69,
            Code::Software => 70,
            Code::Os => 71,
            Code::Io => 74,
            Code::Temporary => 75,
            Code::NoPermission => 77,
            Code::Config => 78,
            Code::Interrupted => 130,
            Code::Terminated => 143,
        }
    }

    pub const fn meaning(self) -> &'static str {
        match self {
            Code::Success => "success (also when stdout is closed early, as by head(1))",
            Code::No => "no: `topics match` found a key the pattern does not match",
            Code::Usage => {
                "usage error: unknown option, bad URI, bad duration, a key over 255 bytes, a \
                 listen without keys, RMQLAB_BROKER set with RMQLAB_URL (see `config show --help`)"
            }
            Code::Data => {
                "data error: an exchange of another kind (or internal, to a publisher), a queue that contradicts an explicit \
                 --queue-type, a message nacked or returned unroutable, an input line longer \
                 than --max-message-size or not a message (--input json), a queue or vhost not found, a delete refused by \
                 --if-empty/--if-unused, tasks that failed on every try (parked, dead-lettered, \
                 --on-failure stop), a queue with no dead-letter exchange for --on-failure \
                 dead-letter, an RPC request no queue takes or a reply with x-error, a quorum \
                 queue peeked without --force, a message `queues move` or --redrive could not \
                 publish"
            }
            Code::NoInput => {
                "an input file cannot be read (-f, --tls-ca-file, --tls-cert-file, --tls-key-file, \
                 the config file of --config or --broker)"
            }
            Code::Unavailable => {
                "broker or management API unreachable, or its TLS certificate not accepted"
            }
            Code::Software => {
                "internal error: a bug in rmqlab, or an answer it does not understand"
            }
            Code::Os => {
                "the --exec command cannot be started (not found, not executable); the task is \
                 put back in the queue"
            }
            Code::Io => {
                "standard output cannot be written (a publisher still publishes every line \
                 first)"
            }
            Code::Temporary => {
                "temporary failure: connect timeout, connection lost and not recovered within \
                 --reconnect-timeout, no confirm within --confirm-timeout, no RPC reply within \
                 --timeout"
            }
            Code::NoPermission => {
                "access refused: credentials, vhost permissions, a user without the management tag"
            }
            Code::Config => {
                "configuration error: the config file has a TOML syntax error, a key or value \
                 rmqlab does not know (shown as FILE:LINE), or no section --broker names"
            }
            Code::Interrupted => {
                "interrupted by Ctrl-C (SIGINT) after a clean shutdown; rmqlab ends by the signal"
            }
            Code::Terminated => {
                "stopped by SIGTERM after a clean shutdown; rmqlab ends by the signal"
            }
        }
    }
}

/// The list for `--help`: one line a code.
pub fn help_list() -> String {
    let mut help = String::from("Exit codes:");
    for code in Code::ALL {
        help.push_str(&format!("\n  {:<4} {}", code.value(), code.meaning()));
    }
    help
}

/// The Markdown table README.md shows.
pub fn markdown_table() -> String {
    let mut table = String::from("| code | meaning |\n|---|---|\n");
    for code in Code::ALL {
        table.push_str(&format!("| {} | {} |\n", code.value(), code.meaning()));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_listed_once_in_order() {
        let values: Vec<u8> = Code::ALL.iter().map(|code| code.value()).collect();
        let mut sorted = values.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(values, sorted);
    }
}
