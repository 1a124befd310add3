//! What the user sees of the engine's events: status lines on stderr.

use crate::{
    amqp::events::{Event, Observer},
    context::Status,
    tls::INSECURE_WARNING,
};

impl Observer for Status {
    fn observe(&self, event: Event<'_>) {
        match event {
            Event::Connecting { url, name, how } => {
                self.debug(format_args!("connecting to {url} as '{name}'{how}"));
            }
            Event::TlsUnverified => self.warn(INSECURE_WARNING),
            Event::Declared {
                kind,
                name,
                description,
            } => self.debug(format_args!("declared {description} {kind} '{name}'")),
            Event::Adopted { kind, name, reason } => self.debug(format_args!(
                "{kind} '{name}' exists with other properties: using it as it is (the broker \
                 said: {reason})"
            )),
            Event::Bound {
                queue,
                exchange,
                key,
            } => self.debug(format_args!(
                "bound queue '{queue}' to exchange '{exchange}' with key '{key}'"
            )),
            Event::HandedOver { reason } => {
                self.debug(format_args!("sending through lapin instead: {reason}"));
            }
            Event::Skipped { url, error } => {
                self.debug(format_args!("skipping {url}: {}", error.one_line()))
            }
            Event::Connected { url } => self.debug(format_args!("connected to {url}")),
            Event::Reconnecting {
                attempt,
                error,
                url,
                urls: 1,
            } => self.warn(format_args!(
                " [!] {}; reconnecting to {url} (attempt {attempt})",
                error.one_line()
            )),
            Event::Reconnecting {
                attempt,
                error,
                url,
                urls,
            } => self.warn(format_args!(
                " [!] {}; reconnecting to whichever of the {urls} URLs answers, from {url} on \
                 (attempt {attempt})",
                error.one_line()
            )),
            Event::Reconnected => self.info(" [*] Reconnected"),
            // Nothing was in doubt: nothing to say.
            Event::Resending { count: 0 } => {}
            Event::Resending { count } => self.info(format_args!(
                " [*] Sending again the {count} message(s) not confirmed before"
            )),
            // Both said even with --quiet: a publisher that waits must say why, and when the
            // wait ends.
            Event::Blocked { reason } => self.warn(format_args!(
                " [!] the broker is blocking publishers: {}",
                if reason.is_empty() {
                    "a resource alarm"
                } else {
                    reason
                }
            )),
            Event::Unblocked => self.warn(" [*] the broker accepts publishers again"),
            Event::Stopping { grace } => self.info(format_args!(
                " [*] Stopping: waiting up to {} for the broker to confirm what was sent (press \
                 CTRL+C again to stop at once)",
                humantime::format_duration(grace)
            )),
        }
    }
}
