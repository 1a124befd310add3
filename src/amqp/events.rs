//! What the engine reports as it goes. The engine never prints: it tells an [`Observer`], and the
//! command that runs it decides what the user sees.

use crate::{
    error::{Error, ObjectKind},
    uri::BrokerUrl,
};

/// Something that happened on the way to the broker and back.
#[derive(Debug)]
pub enum Event<'a> {
    /// A connection attempt starts; `how` says which path ("pipelined" for one message).
    Connecting {
        url: &'a BrokerUrl,
        name: &'a str,
        how: &'a str,
    },
    /// Of several URLs, this one failed (`error`): the next is tried.
    Skipped {
        url: &'a BrokerUrl,
        error: &'a Error,
    },
    /// Of several URLs, this one answered.
    Connected { url: &'a BrokerUrl },
    /// `--tls-insecure`: the server's certificate is not verified.
    TlsUnverified,
    /// An exchange or queue was declared as rmqlab describes it (created, or found equal).
    Declared {
        kind: ObjectKind,
        name: &'a str,
        description: &'a str,
    },
    /// An existing exchange or queue differs from rmqlab's description and is used as it is;
    /// `reason` is the broker's own words.
    Adopted {
        kind: ObjectKind,
        name: &'a str,
        reason: &'a str,
    },
    /// A queue was bound to an exchange.
    Bound {
        queue: &'a str,
        exchange: &'a str,
        key: &'a str,
    },
    /// The one-message path gave the message to the general one.
    HandedOver { reason: &'a str },
    /// The connection was lost (or an attempt failed); attempt `attempt` to reconnect starts,
    /// at `url`, the first to try of `urls` URLs.
    Reconnecting {
        attempt: u32,
        error: &'a Error,
        /// Where to, as shown (the password masked): with several URLs, the first tried.
        url: &'a str,
        /// How many URLs are tried in turn.
        urls: usize,
    },
    /// Connected again, with everything declared again.
    Reconnected,
    /// After reconnecting, a publisher sends again messages that were not confirmed.
    Resending { count: u64 },
    /// The broker blocks this connection's publishes (`connection.blocked`: a resource alarm,
    /// low on disk or memory); `reason` is the broker's own words.
    Blocked { reason: &'a str },
    /// The broker accepts publishes again (`connection.unblocked`).
    Unblocked,
    /// A publisher stopped by its first signal waits up to `grace` for the broker to confirm
    /// the messages in flight.
    Stopping { grace: std::time::Duration },
}

/// Told of each [`Event`].
pub trait Observer {
    fn observe(&self, event: Event<'_>);
}
