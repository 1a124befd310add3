//! What rmqlab shows a person at a terminal: colour on stderr's status markers and progress
//! bars on stderr. Neither ever reaches stdout, a pipe or a file.

use crate::{cli::ColorChoice, error::Error};
use indicatif::{HumanCount, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::{
    borrow::Cow,
    io::{self, IsTerminal, Write},
    time::Duration,
};

/// The width of the terminal tables are fitted to; `None` when it is unknown, which is also
/// what a terminal reporting 0 columns (`stty cols 0`, a fresh pseudo-terminal) means.
pub fn table_width() -> Option<u16> {
    known_width(comfy_table::Table::new().width())
}

fn known_width(reported: Option<u16>) -> Option<u16> {
    reported.filter(|&width| width > 0)
}

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
    let text = |text: String| escape_controls(&text, false).into_owned();
    let mut report = format!(
        "{} {}\n",
        paint_error_label("rmqlab: error:", color),
        text(error.to_string())
    );
    for cause in error.causes() {
        report.push_str(&format!("  caused by: {}\n", text(cause)));
    }
    if let Some(hint) = error.hint() {
        report.push_str(&format!(
            "  {} {}\n",
            paint_error_label("hint:", color),
            text(hint)
        ));
    }
    report
}

/// What a panic shows: rmqlab has a bug; the user should report it.
pub fn render_panic(message: &str, location: Option<String>, color: bool) -> String {
    let at = location.map(|at| format!(" (at {at})")).unwrap_or_default();
    format!(
        "{} internal error: {}{at}\n  {} this is a bug in rmqlab {}: please report it, with the \
         command line that led to it and this message\n",
        paint_error_label("rmqlab: error:", color),
        escape_controls(message, false),
        paint_error_label("hint:", color),
        env!("CARGO_PKG_VERSION"),
    )
}

/// `text` with its control characters shown as escapes (`\x1b`, `\a`, `\r`...), so that a name
/// or body from the broker cannot drive the terminal it is shown on (retitle it, clear it, move
/// the cursor, fake a line). Tabs stay; newlines stay only when `newlines` allows.
pub fn escape_controls(text: &str, newlines: bool) -> Cow<'_, str> {
    let kept = |c: char| c == '\t' || (newlines && c == '\n');
    let escapes = |c: char| (c.is_control() || is_bidi_control(c)) && !kept(c);
    if !text.chars().any(escapes) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if !escapes(c) => escaped.push(c),
            '\x07' => escaped.push_str("\\a"),
            '\x08' => escaped.push_str("\\b"),
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            c if (c as u32) < 0x100 => escaped.push_str(&format!("\\x{:02x}", c as u32)),
            c => escaped.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    Cow::Owned(escaped)
}

/// A character that reorders the text shown around it (a right-to-left override, say): it
/// would make a name or message look like another one.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Writes to stderr and never fails: a stderr that cannot be written (`2>/dev/full`, a closed
/// descriptor) loses the text, but must not stop (or panic) rmqlab as `eprintln!` would.
pub fn write_stderr(text: &str) {
    let _ = io::stderr().lock().write_all(text.as_bytes());
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
    /// is known, else a counter; both with the count and the rate in messages per second (see
    /// [`show_confirmed`]).
    pub fn publishing(&self, input_bytes: Option<u64>) -> ProgressBar {
        let bar = match input_bytes {
            Some(bytes) => self.bar(
                Some(bytes),
                "{spinner} [{bar:30}] {percent:>3}%  {msg}  eta {eta}",
            ),
            None => self.bar(None, "{spinner} {msg}  {elapsed}"),
        };
        show_confirmed(&bar, 0);
        bar
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

/// Text for stdout that shows control characters escaped when stdout is a terminal (see
/// [`escape_controls`]; newlines and tabs stay), so that a message cannot drive the terminal;
/// into a pipe or a file it passes bytes as they are. Each write must be whole UTF-8 text, as
/// the tutorial's lines are written: it sits in front of any buffer.
pub struct TerminalText<W> {
    inner: W,
    escape: bool,
}

impl<W: Write> TerminalText<W> {
    /// Escapes when stdout is a terminal.
    pub fn new(inner: W) -> Self {
        TerminalText {
            inner,
            escape: io::stdout().is_terminal(),
        }
    }

    /// Never escapes: for output that must stay byte-exact (`-o body`, JSON).
    pub fn exact(inner: W) -> Self {
        TerminalText {
            inner,
            escape: false,
        }
    }
}

impl<W: Write> Write for TerminalText<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.escape {
            return self.inner.write(buf);
        }
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if !self.escape {
            return self.inner.write_all(buf);
        }
        let text = String::from_utf8_lossy(buf);
        self.inner
            .write_all(escape_controls(&text, true).as_bytes())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Shows `count` confirmed messages and their rate on a publishing bar (the bar's position may
/// count bytes).
pub fn show_confirmed(bar: &ProgressBar, count: u64) {
    if bar.is_hidden() {
        return;
    }
    let seconds = bar.elapsed().as_secs_f64();
    let rate = match seconds > 0.0 {
        true => HumanCount((count as f64 / seconds) as u64).to_string(),
        false => "-".into(),
    };
    bar.set_message(format!("{} confirmed  {rate} msg/s", HumanCount(count)));
}

/// Ends a publishing bar: its last frame shows the real total, then it is cleared.
pub fn finish_publishing(bar: &ProgressBar, count: u64) {
    show_confirmed(bar, count);
    bar.force_draw();
    bar.finish_and_clear();
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
    fn control_characters_are_escaped() {
        let hostile = "a\x1b]0;PWNED\x07\x1b[2Jb\tc\nd\r\u{9b}e\x7f";
        assert_eq!(
            escape_controls(hostile, false),
            "a\\x1b]0;PWNED\\a\\x1b[2Jb\tc\\nd\\r\\x9be\\x7f"
        );
        assert_eq!(escape_controls("x\ny", true), "x\ny");
        assert!(matches!(escape_controls("plain", false), Cow::Borrowed(_)));
        // A right-to-left override would show `txt.exe` as `exe.txt`.
        assert_eq!(
            escape_controls("invoice\u{202e}txt.exe", false),
            "invoice\\u{202e}txt.exe"
        );
    }

    #[test]
    fn a_panic_is_reported_as_an_internal_error() {
        let shown = render_panic("boom\x1b[2J", Some("src/x.rs:1:2".into()), false);
        assert!(
            shown.starts_with("rmqlab: error: internal error: boom\\x1b[2J (at src/x.rs:1:2)\n"),
            "{shown}"
        );
        assert!(shown.contains("hint: this is a bug in rmqlab"), "{shown}");
        assert!(shown.contains("please report it"), "{shown}");
    }

    #[test]
    fn hidden_progress_draws_nothing() {
        let progress = Progress { allowed: false };
        assert!(progress.publishing(Some(10)).is_hidden());
        assert!(progress.working(3).is_hidden());
    }

    #[test]
    fn a_terminal_of_zero_columns_has_no_known_width() {
        assert_eq!(super::known_width(Some(0)), None);
        assert_eq!(super::known_width(None), None);
        assert_eq!(super::known_width(Some(80)), Some(80));
    }
}
