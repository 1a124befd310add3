use clap::error::ErrorKind;
use rmqlab::{
    Error, Exit,
    cli::ColorChoice,
    exit::Code,
    terminal::{render_error, render_panic, stderr_color, write_stderr},
};
use std::{
    io::{self, Write},
    process::ExitCode,
};

fn main() -> ExitCode {
    // A Tab in a shell whose completion script calls rmqlab: answered here, then exits.
    rmqlab::complete::answer_if_asked();
    rmqlab::commands::guard_stdout();
    report_panics_as_internal_errors();
    let cli = match rmqlab::cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return parse_failure(&error),
    };
    let color = stderr_color(cli.global.color);
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)
        .and_then(|runtime| runtime.block_on(rmqlab::run(cli)));
    match result {
        Ok(Exit::Stopped(signal)) => end_by(signal.number(), Exit::Stopped(signal)),
        Ok(exit) => ExitCode::from(exit.status()),
        Err(Error::Interrupted(signal)) => end_by(signal.number(), Exit::Stopped(signal)),
        Err(error) if error.is_broken_pipe() => ExitCode::SUCCESS,
        Err(error) => {
            write_stderr(&render_error(&error, color));
            ExitCode::from(error.exit_code().value())
        }
    }
}

/// `--help` and `--version` go to stdout, checked like any output (74 when it cannot be
/// written); anything else clap reports is a usage error on stderr, which clap writes without
/// ever panicking.
fn parse_failure(error: &clap::Error) -> ExitCode {
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let printed = rmqlab::commands::check_stdout()
                .and_then(|()| error.print())
                .and_then(|()| io::stdout().flush());
            match printed {
                Ok(()) => ExitCode::SUCCESS,
                Err(source) if source.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(source) => {
                    let color = stderr_color(ColorChoice::Auto);
                    write_stderr(&render_error(&Error::Output(source), color));
                    ExitCode::from(Code::Io.value())
                }
            }
        }
        _ => {
            let _ = error.print();
            ExitCode::from(error.exit_code().clamp(0, 255) as u8)
        }
    }
}

/// A panic is a bug: say so in rmqlab's words, ask for a report, and exit 70 (not Rust's 101).
fn report_panics_as_internal_errors() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        let location = info.location().map(ToString::to_string);
        let color = stderr_color(ColorChoice::Auto);
        write_stderr(&render_panic(&message, location, color));
        std::process::exit(Code::Software.value().into());
    }));
    #[cfg(debug_assertions)]
    if std::env::var_os("RMQLAB_DEBUG_PANIC").is_some() {
        // Debug builds only: lets the tests see the hook at work.
        panic!("RMQLAB_DEBUG_PANIC is set");
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
