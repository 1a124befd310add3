//! Ctrl-C and SIGTERM, counted: the first asks for a clean stop, the second aborts the work.
//! The first one is remembered, so that rmqlab can end by it after the clean stop.

use std::{cell::RefCell, future::Future};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
};

/// A signal that asks rmqlab to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGINT: Ctrl-C at a terminal.
    Interrupt,
    /// SIGTERM: `kill`, a service manager.
    Terminate,
}

impl Stop {
    /// The signal's number.
    pub fn number(self) -> i32 {
        match self {
            Stop::Interrupt => libc::SIGINT,
            Stop::Terminate => libc::SIGTERM,
        }
    }
}

thread_local! {
    /// The listener, once installed: tokio keeps its signal handler for the rest of the
    /// process, so from then on a signal stops nothing by itself and every wait must watch it.
    /// (rmqlab runs on one thread.)
    static INSTALLED: RefCell<Option<Interrupts>> = const { RefCell::new(None) };
}

/// Counts the interrupt signals (SIGINT, SIGTERM) received since it was installed.
#[derive(Clone, Debug)]
pub struct Interrupts {
    /// How many arrived, and which came first.
    state: watch::Receiver<(u32, Option<Stop>)>,
}

impl Interrupts {
    /// Starts listening (or returns the listener already started). Must be called inside the
    /// runtime.
    pub fn install() -> std::io::Result<Self> {
        if let Some(installed) = Interrupts::installed() {
            return Ok(installed);
        }
        // A SIGINT ignored when rmqlab starts (POSIX: a background job of a non-interactive
        // shell, `nohup`) stays ignored: no handler for it. SIGTERM still stops cleanly.
        let mut sigint = match ignored(libc::SIGINT) {
            true => None,
            false => Some(signal(SignalKind::interrupt())?),
        };
        let mut sigterm = signal(SignalKind::terminate())?;
        let (sender, state) = watch::channel((0, None));
        tokio::spawn(async move {
            loop {
                let interrupt = async {
                    match &mut sigint {
                        Some(sigint) => sigint.recv().await,
                        None => std::future::pending().await,
                    }
                };
                let stop = tokio::select! {
                    Some(()) = interrupt => Stop::Interrupt,
                    Some(()) = sigterm.recv() => Stop::Terminate,
                    else => break,
                };
                sender.send_modify(|(count, first)| {
                    *count += 1;
                    first.get_or_insert(stop);
                });
            }
        });
        let interrupts = Interrupts { state };
        INSTALLED.set(Some(interrupts.clone()));
        Ok(interrupts)
    }

    /// The listener, if a command installed one; without it a signal ends rmqlab by itself.
    pub fn installed() -> Option<Interrupts> {
        INSTALLED.with_borrow(Clone::clone)
    }

    pub fn received(&self) -> u32 {
        self.state.borrow().0
    }

    /// The first signal received, if any.
    pub fn first(&self) -> Option<Stop> {
        self.state.borrow().1
    }

    /// Resolves once at least `n` signals have arrived.
    pub async fn wait_for(&mut self, n: u32) {
        if self.state.wait_for(|(count, _)| *count >= n).await.is_err() {
            // The listener is gone (runtime shutting down): no signal will ever come.
            std::future::pending::<()>().await;
        }
    }
}

/// Whether `signal` is ignored (as a parent may leave it for its children).
fn ignored(signal: i32) -> bool {
    // SAFETY: sigaction with no new action only reads the current one into `current`.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut current) == 0
            && current.sa_sigaction == libc::SIG_IGN
    }
}

/// Runs `work` unless an interrupt comes first (or came already): then `Err` with the first
/// signal. For waits on the broker or the API before anything is done (connecting, a request),
/// where stopping at once is the clean stop. Without an installed listener it only runs `work`:
/// a signal then ends rmqlab by itself.
pub async fn unless_interrupted<T>(work: impl Future<Output = T>) -> Result<T, Stop> {
    let Some(interrupts) = Interrupts::installed() else {
        return Ok(work.await);
    };
    let mut waiting = interrupts.clone();
    tokio::select! {
        biased;
        () = waiting.wait_for(1) => Err(interrupts.first().unwrap_or(Stop::Interrupt)),
        done = work => Ok(done),
    }
}
