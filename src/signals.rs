//! Ctrl-C and SIGTERM, counted: the first asks for a clean stop, the second aborts the work.
//! The first one is remembered, so that rmqlab can end by it after the clean stop.

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

/// Counts the interrupt signals (SIGINT, SIGTERM) received since it was installed.
#[derive(Clone)]
pub struct Interrupts {
    /// How many arrived, and which came first.
    state: watch::Receiver<(u32, Option<Stop>)>,
}

impl Interrupts {
    /// Starts listening. Must be called inside the runtime.
    pub fn install() -> std::io::Result<Self> {
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let (sender, state) = watch::channel((0, None));
        tokio::spawn(async move {
            loop {
                let stop = tokio::select! {
                    Some(()) = sigint.recv() => Stop::Interrupt,
                    Some(()) = sigterm.recv() => Stop::Terminate,
                    else => break,
                };
                sender.send_modify(|(count, first)| {
                    *count += 1;
                    first.get_or_insert(stop);
                });
            }
        });
        Ok(Interrupts { state })
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
