//! What rmqlab shows a person at a terminal: colour on stderr's status markers and progress
//! bars on stderr. Neither ever reaches stdout, a pipe or a file.

use crate::{cli::ColorChoice, error::Error};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::{
    borrow::Cow,
    io::{self, IsTerminal, Write},
    time::Duration,
};

/// Whether stderr gets colour: `always`, `never`, or (auto) on a terminal unless `NO_COLOR` is
/// set to something.
pub fn stderr_color(choice: ColorChoice) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
                && io::stderr().is_terminal()
        }
    }
}

/// Whether progress may be drawn: stderr is a terminal and `--quiet` was not given.
pub fn progress_allowed(quiet: bool) -> bool {
    !quiet && io::stderr().is_terminal()
}

const RESET: &str = "\x1b[0m";

/// Colours the tutorial's marker at the start of a status line (` [*]`, ` [x]`, ` [!]`).
pub fn paint_marker(line: &str, color: bool) -> Cow<'_, str> {
    let code = match line.get(..4) {
        Some(" [*]") => "\x1b[36m",
        Some(" [x]") => "\x1b[32m",
        Some(" [!]") => "\x1b[33m",
        _ => return Cow::Borrowed(line),
    };
    if !color {
        return Cow::Borrowed(line);
    }
    Cow::Owned(format!("{code}{}{RESET}{}", &line[..4], &line[4..]))
}

/// Colours a word of an error report (`rmqlab: error:` red, `hint:` cyan).
pub fn paint_error_label(label: &str, color: bool) -> Cow<'_, str> {
    if !color {
        return Cow::Borrowed(label);
    }
    let code = if label.starts_with("hint") {
        "\x1b[36m"
    } else {
        "\x1b[1;31m"
    };
    Cow::Owned(format!("{code}{label}{RESET}"))
}

/// The whole report of an error: `rmqlab: error: ...`, one `caused by:` line per source, then a
/// hint.
pub fn render_error(error: &Error, color: bool) -> String {
    let mut report = format!("{} {error}\n", paint_error_label("rmqlab: error:", color));
    for cause in error.causes() {
        report.push_str(&format!("  caused by: {cause}\n"));
    }
    if let Some(hint) = error.hint() {
        report.push_str(&format!("  {} {hint}\n", paint_error_label("hint:", color)));
    }
    report
}

/// Progress bars, or nothing at all when they are not allowed.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub allowed: bool,
}

const TICK: Duration = Duration::from_millis(100);

impl Progress {
    fn bar(&self, length: Option<u64>, template: &str) -> ProgressBar {
        if !self.allowed {
            return ProgressBar::hidden();
        }
        let style = ProgressStyle::with_template(template)
            .expect("progress templates are valid")
            .progress_chars("=> ");
        let bar =
            ProgressBar::with_draw_target(length, ProgressDrawTarget::stderr()).with_style(style);
        bar.enable_steady_tick(TICK);
        bar
    }

    /// Confirmed messages while publishing: a bar with ETA over the input's bytes when its size
    /// is known, else a counter with the rate.
    pub fn publishing(&self, input_bytes: Option<u64>) -> ProgressBar {
        match input_bytes {
            Some(bytes) => self
                .bar(
                    Some(bytes),
                    "{spinner} [{bar:30}] {percent:>3}%  {msg} confirmed  {binary_bytes_per_sec}  eta {eta}",
                )
                .with_message("0"),
            None => self.bar(None, "{spinner} {human_pos} confirmed  {per_sec}  {elapsed}"),
        }
    }

    /// `total` messages to confirm, known up front: a bar with the rate and ETA.
    pub fn counting(&self, total: u64, what: &str) -> ProgressBar {
        self.bar(
            Some(total),
            "{spinner} {msg:<10} [{bar:30}] {human_pos}/{human_len} confirmed  {per_sec}  eta {eta}",
        )
        .with_message(what.to_string())
    }

    /// A task being worked on: elapsed time and dots done.
    pub fn working(&self, dots: u32) -> ProgressBar {
        self.bar(
            Some(dots.into()),
            "{spinner} working {elapsed}  dot {pos}/{len}",
        )
    }

    /// A task handed to `--exec`.
    pub fn running(&self) -> ProgressBar {
        self.bar(None, "{spinner} running --exec {elapsed}")
    }

    /// Anything else that may take more than a moment.
    pub fn waiting(&self, what: &'static str) -> ProgressBar {
        self.bar(None, "{spinner} {msg} {elapsed}")
            .with_message(what)
    }
}

/// A writer that hides the progress bar while it writes, so lines on a terminal stdout do not
/// tear the bar on the same screen.
pub struct AroundProgress<W> {
    pub bar: ProgressBar,
    pub inner: W,
}

impl<W: Write> Write for AroundProgress<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let AroundProgress { bar, inner } = self;
        bar.suspend(|| inner.write(buf))
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let AroundProgress { bar, inner } = self;
        bar.suspend(|| inner.write_all(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        let AroundProgress { bar, inner } = self;
        bar.suspend(|| inner.flush())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_coloured_only_when_asked() {
        assert_eq!(paint_marker(" [*] Waiting", false), " [*] Waiting");
        assert_eq!(
            paint_marker(" [!] dropped", true),
            "\x1b[33m [!]\x1b[0m dropped"
        );
        assert_eq!(paint_marker("plain", true), "plain");
    }

    #[test]
    fn hidden_progress_draws_nothing() {
        let progress = Progress { allowed: false };
        assert!(progress.publishing(Some(10)).is_hidden());
        assert!(progress.working(3).is_hidden());
    }
}
