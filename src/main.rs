use clap::Parser;
use rmqlab::{Error, cli::Cli};
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
        Ok(exit) => ExitCode::from(exit.code()),
        Err(error) if error.is_broken_pipe() => ExitCode::SUCCESS,
        Err(error) => {
            eprint!("{}", error.report(color));
            ExitCode::from(error.exit_code())
        }
    }
}
