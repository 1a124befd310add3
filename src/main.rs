use clap::Parser;
use rmqlab::{Error, Exit, cli::Cli};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let color = rmqlab::terminal::stderr_color(cli.global.color);
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)
        .and_then(|runtime| runtime.block_on(rmqlab::run(cli)));
    match result {
        Ok(Exit::Stopped(signal)) => end_by(signal.number(), Exit::Stopped(signal)),
        Ok(exit) => ExitCode::from(exit.status()),
        Err(error) if error.is_broken_pipe() => ExitCode::SUCCESS,
        Err(error) => {
            eprint!("{}", rmqlab::terminal::render_error(&error, color));
            ExitCode::from(error.exit_code().value())
        }
    }
}

/// After a clean stop on a signal, ends by that signal, so that the calling shell sees it (a
/// `while` loop around rmqlab stops on Ctrl-C). The exit code is the fallback.
fn end_by(signal: i32, exit: Exit) -> ExitCode {
    // SAFETY: resetting a handler to the default and raising a signal in the one thread left
    // (the runtime is gone) touch no Rust state.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
    ExitCode::from(exit.status())
}
