//! After a lost connection: connect again with backoff, within `--reconnect-timeout`, to
//! whichever URL of `--url` answers first, the one lost last.

use super::events::{Event, Observer};
use crate::{
    context::Context,
    error::{Error, Result},
    signals::Interrupts,
};
use std::{future::Future, time::Duration};
use tokio::time::Instant;

/// The first wait between two attempts; it doubles up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest wait between two attempts.
const MAX_DELAY: Duration = Duration::from_secs(5);

/// Runs `open` until it succeeds, reporting each attempt, for up to `--reconnect-timeout`
/// (each attempt, over every URL, cut to what remains), shown going to `stream_url` when given
/// (a stream's own URL), else to the context's URLs. An error that a later attempt cannot get past
/// (a refused login, say) ends it at once; so does running out of time (75).
/// `None` when an interrupt came first.
pub async fn reopen<T, Opened>(
    ctx: &Context,
    observer: &dyn Observer,
    stream_url: Option<&dyn std::fmt::Display>,
    lost: Error,
    mut interrupts: Option<&mut Interrupts>,
    mut open: impl FnMut(Context) -> Opened,
) -> Result<Option<T>>
where
    Opened: Future<Output = Result<T>>,
{
    if ctx.reconnect_timeout.is_zero() {
        return Err(lost);
    }
    let deadline = Instant::now() + ctx.reconnect_timeout;
    let mut delay = FIRST_DELAY;
    let mut last = lost;
    // A stream's own node: `open` goes back to it, the context's URLs stay as they are.
    let stream_url = stream_url.map(|url| url.to_string());
    if stream_url.is_none() {
        // The node just lost is likely down: the others first, it last.
        ctx.urls.move_past_in_use();
    }
    for attempt in 1.. {
        let (url, urls) = match &stream_url {
            Some(url) => (url.clone(), 1),
            // Where this round starts.
            None => (ctx.url().to_string(), ctx.urls.count()),
        };
        observer.observe(Event::Reconnecting {
            attempt,
            error: &last,
            url: &url,
            urls,
        });
        let remaining = deadline.saturating_duration_since(Instant::now());
        let attempt_ctx = Context {
            connect_timeout: ctx.connect_timeout.min(remaining),
            ..ctx.clone()
        };
        let interrupted = async {
            match interrupts.as_deref_mut() {
                Some(interrupts) => interrupts.wait_for(1).await,
                None => std::future::pending().await,
            }
        };
        // Several URLs are tried in turn, each within the connect timeout: the whole round
        // still ends at the deadline.
        let opened = tokio::select! {
            opened = tokio::time::timeout(remaining, open(attempt_ctx)) => opened,
            () = interrupted => return Ok(None),
        };
        let Ok(opened) = opened else {
            // What the attempts before met tells why.
            return Err(Error::ReconnectFailed {
                after: ctx.reconnect_timeout,
                source: Box::new(last),
            });
        };
        match opened {
            Ok(opened) => {
                observer.observe(Event::Reconnected);
                return Ok(Some(opened));
            }
            Err(error) if error.is_transient() && Instant::now() < deadline => {
                last = error;
                // The last attempt comes at the deadline itself.
                tokio::time::sleep_until(deadline.min(Instant::now() + delay)).await;
                delay = (delay * 2).min(MAX_DELAY);
            }
            Err(error) if error.is_transient() => {
                return Err(Error::ReconnectFailed {
                    after: ctx.reconnect_timeout,
                    source: Box::new(error),
                });
            }
            Err(error) => return Err(error),
        }
    }
    unreachable!("the attempts go on until one returns")
}
