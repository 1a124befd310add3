//! `queues list/purge/delete`: queue depth and housekeeping through the management HTTP API.

use super::{print, print_text};
use crate::{
    amqp::Session,
    cli::{QueueColumn, QueuesCommand, QueuesListArgs, TableFormat},
    context::Context,
    error::{Error, Result},
    exit::Exit,
    management::{Api, QueueListing, QueueRow, is_dot_name},
    output::{QueueTable, default_queue_columns, render_queues, sort_queues, sparkline},
    signals::{Interrupts, Stop},
    terminal::escape_controls,
};
use std::{
    collections::{HashMap, VecDeque},
    io::{self, IsTerminal},
    time::SystemTime,
};
use tokio::time::Instant;

pub async fn run(ctx: &Context, command: QueuesCommand) -> Result<Exit> {
    let api = Api::new(ctx).await?;
    match command {
        QueuesCommand::List(args) => list(ctx, &api, &args).await,
        QueuesCommand::Peek(args) => super::peek::run(ctx, &api, args).await,
        QueuesCommand::Move(args) => super::moving::run(ctx, args).await,
        QueuesCommand::DeadLetters(args) => super::dead_letters::run(ctx, &api, args).await,
        QueuesCommand::Purge(args) => {
            let vhost = args.vhost.as_deref().unwrap_or(ctx.url().vhost());
            let spinner = ctx.status.progress.waiting("purging");
            let purged = match is_dot_name(&args.name) || is_dot_name(vhost) {
                true => purge_over_amqp(ctx, vhost, &args.name).await,
                false => api.purge_queue(vhost, &args.name).await,
            };
            spinner.finish_and_clear();
            purged?;
            confirm(&format!(
                " [x] Purged queue '{}' in vhost '{vhost}'",
                args.name
            ))
        }
        QueuesCommand::Delete(args) => {
            let vhost = args.queue.vhost.as_deref().unwrap_or(ctx.url().vhost());
            let spinner = ctx.status.progress.waiting("deleting");
            let name = &args.queue.name;
            let deleted = match is_dot_name(name) || is_dot_name(vhost) {
                true => {
                    delete_over_amqp(ctx, vhost, name, args.if_empty, args.if_unused, None).await
                }
                false => {
                    api.delete_queue(vhost, name, args.if_empty, args.if_unused)
                        .await
                }
            };
            let deleted = match deleted {
                Err(Error::ApiStatus {
                    status: 400,
                    reason,
                    ..
                }) if reason.contains("not supported by quorum queues") => {
                    delete_quorum_queue_if(ctx, &api, vhost, name, args.if_empty, args.if_unused)
                        .await
                }
                other => other,
            };
            spinner.finish_and_clear();
            deleted.map_err(|error| refusal(error, name))?;
            confirm(&format!(
                " [x] Deleted queue '{}' in vhost '{vhost}'",
                args.queue.name
            ))
        }
    }
}

/// `--if-empty` and `--if-unused` for a quorum queue, which takes neither: its messages and
/// consumers are counted over AMQP (live, unlike the API's statistics) just before the delete;
/// what arrives in between is not seen.
async fn delete_quorum_queue_if(
    ctx: &Context,
    api: &Api,
    vhost: &str,
    name: &str,
    if_empty: bool,
    if_unused: bool,
) -> Result<()> {
    delete_over_amqp(ctx, vhost, name, if_empty, if_unused, Some(api)).await
}

/// A session in `vhost` (which may differ from the one of `--url`).
async fn session_in(ctx: &Context, vhost: &str, connection_name: &str) -> Result<Session> {
    let in_vhost = Context {
        urls: ctx.urls.with_vhost(vhost),
        ..ctx.clone()
    };
    Session::connect(&in_vhost, connection_name, &ctx.status).await
}

/// Purges a queue the management API cannot address (named `.` or `..`, or in such a vhost)
/// over AMQP; a queue that does not exist is refused as the API would refuse it.
async fn purge_over_amqp(ctx: &Context, vhost: &str, name: &str) -> Result<()> {
    let session = session_in(ctx, vhost, "rmqlab queues purge").await?;
    let purged = async {
        session.inspect_queue(name).await?;
        session.purge_queue(name).await
    }
    .await;
    session.close().await;
    purged.map(drop)
}

/// Deletes a queue over AMQP after checking `--if-empty` and `--if-unused` by the counts the
/// broker gives now (what arrives in between is not seen); with `api` the delete itself goes
/// through the API, else over AMQP too (a queue the API cannot address: see [`is_dot_name`]).
async fn delete_over_amqp(
    ctx: &Context,
    vhost: &str,
    name: &str,
    if_empty: bool,
    if_unused: bool,
    api: Option<&Api>,
) -> Result<()> {
    let session = session_in(ctx, vhost, "rmqlab queues delete").await?;
    let inspected = session.inspect_queue(name).await;
    let (messages, consumers) = match inspected {
        Ok(counts) => counts,
        Err(error) => {
            session.close().await;
            return Err(error);
        }
    };
    let refused = |reason: String| {
        Err(Error::DeleteRefused {
            queue: name.to_string(),
            reason,
        })
    };
    let refusal = if if_empty && messages > 0 {
        Some(format!("it holds {messages} ready message(s) (--if-empty)"))
    } else if if_unused && consumers > 0 {
        Some(format!("it has {consumers} consumer(s) (--if-unused)"))
    } else {
        None
    };
    let deleted = match (refusal, api) {
        (Some(reason), _) => refused(reason),
        (None, Some(api)) => {
            session.close().await;
            return api.delete_queue(vhost, name, false, false).await;
        }
        (None, None) => session.delete_queue(name).await.map(drop),
    };
    session.close().await;
    deleted
}

/// The one confirmation line of purge and delete: data, so it goes to stdout.
fn confirm(line: &str) -> Result<Exit> {
    print_text(format!("{line}\n").as_bytes())?;
    Ok(Exit::Success)
}

/// The broker answers a delete refused by `--if-empty` / `--if-unused` with a 400.
fn refusal(error: Error, queue: &str) -> Error {
    match error {
        Error::ApiStatus {
            status: 400,
            reason,
            ..
        } => Error::DeleteRefused {
            queue: queue.to_string(),
            reason,
        },
        other => other,
    }
}

async fn list(ctx: &Context, api: &Api, args: &QueuesListArgs) -> Result<Exit> {
    let on_terminal = io::stdout().is_terminal();
    let vhost = args.vhost.as_deref().or(ctx.default_vhost.as_deref());
    let columns = match args.columns.is_empty() {
        // JSON objects always name their vhost, as they did before columns could be chosen.
        true => {
            let mut columns =
                default_queue_columns(vhost.is_none() || args.output == TableFormat::Json);
            if args.watch.is_some() {
                // Watching is about movement: the broker's rates too.
                columns.extend([
                    QueueColumn::PublishRate,
                    QueueColumn::DeliverRate,
                    QueueColumn::AckRate,
                ]);
            }
            columns
        }
        false => args.columns.clone(),
    };
    let mut fields: Vec<&'static str> = columns.iter().map(|c| c.api_field()).collect();
    // The `!` of a degraded queue compares the two lists.
    for (shown, other) in [
        (QueueColumn::Online, QueueColumn::Members),
        (QueueColumn::Members, QueueColumn::Online),
    ] {
        if columns.contains(&shown) {
            fields.push(other.api_name());
        }
    }
    fields.extend(args.sort.map(QueueColumn::api_field));
    if args.watch.is_some() {
        // The change shown at each refresh is the change in ready messages.
        fields.push(QueueColumn::MessagesReady.api_name());
    }
    let listing = QueueListing {
        vhost,
        filter: args.filter.as_deref(),
        fields: &fields,
        stats: columns.iter().chain(&args.sort).any(|c| c.needs_stats()),
    };
    let table = QueueTable {
        columns: &columns,
        format: args.output,
        headers: !args.no_headers,
        width: on_terminal.then(terminal_width).flatten(),
        ready_change: None,
        depth: None,
    };
    // TSV escapes a name's tabs, newlines and backslashes itself: on a terminal, its other
    // control characters are shown escaped in the rendered text, never escaped twice.
    let shown = |rendered: String| match on_terminal && args.output == TableFormat::Tsv {
        true => escape_controls(&rendered, true).into_owned(),
        false => rendered,
    };
    let fetch = || async {
        let mut rows = api.list_queues(&listing).await?;
        sort_queues(&mut rows, args.sort, args.reverse);
        // Names are the broker's data: they must not drive a terminal. A table is for people
        // (and reaches one through `| less -R` too): always escaped, a tab as well, which
        // would break its columns. TSV is data: escaped on a terminal only, once, after its
        // own escaping (see `shown`).
        if args.output == TableFormat::Table {
            let escape = |text: &str| escape_controls(text, false).replace('\t', "\\t");
            for row in &mut rows {
                row.vhost = escape(&row.vhost);
                row.name = escape(&row.name);
            }
        }
        Ok::<_, Error>(rows)
    };
    let Some(interval) = args.watch else {
        let rows = fetch().await?;
        print(shown(render_queues(&rows, &table)).as_bytes())?;
        return Ok(Exit::Success);
    };

    // Before the first request: Ctrl-C during any request or wait is a clean stop.
    let mut interrupts = Interrupts::install().map_err(Error::Runtime)?;
    let every = humantime::format_duration(interval);
    let mut previous: Option<HashMap<(String, String), u64>> = None;
    // Each queue's ready messages at the last refreshes, for its sparkline on a terminal.
    let mut history: HashMap<(String, String), VecDeque<u64>> = HashMap::new();
    // When refreshing started to fail: it may for up to --reconnect-timeout.
    let mut failing_since: Option<Instant> = None;
    loop {
        match fetch().await {
            Ok(rows) => {
                failing_since = None;
                let stamp = humantime::format_rfc3339_seconds(SystemTime::now());
                // A count the broker does not report (a queue just after a restart, say) is
                // unknown: no change is made up from it, and the last known one is kept.
                let mut current: HashMap<(String, String), u64> = rows
                    .iter()
                    .filter_map(|row| Some((key(row), row.messages_ready?)))
                    .collect();
                if let Some(previous) = &previous {
                    for row in rows.iter().filter(|row| row.messages_ready.is_none()) {
                        if let Some(&known) = previous.get(&key(row)) {
                            current.insert(key(row), known);
                        }
                    }
                }
                let change = |row: &QueueRow| {
                    let before = previous.as_ref()?.get(&key(row))?;
                    Some(row.messages_ready? as i64 - *before as i64)
                };
                let changes: Vec<Option<i64>> = rows.iter().map(change).collect();
                let listed: std::collections::HashSet<(String, String)> =
                    rows.iter().map(key).collect();
                history.retain(|queue, _| listed.contains(queue));
                let depth: Vec<String> = rows
                    .iter()
                    .map(|row| {
                        let past = history.entry(key(row)).or_default();
                        if let Some(ready) = row.messages_ready {
                            if past.len() == DEPTH_HISTORY {
                                past.pop_front();
                            }
                            past.push_back(ready);
                        }
                        sparkline(past.iter().copied())
                    })
                    .collect();
                let table = QueueTable {
                    ready_change: (table.format != TableFormat::Json).then_some(changes.as_slice()),
                    depth: (on_terminal && table.format == TableFormat::Table)
                        .then_some(depth.as_slice()),
                    ..table
                };
                let block = shown(render_queues(&rows, &table));
                let screen = match (on_terminal, table.format) {
                    // Home the cursor and clear the screen: redraw in place, as watch(1) does.
                    (true, _) => format!(
                        "\x1b[H\x1b[2JEvery {every}: rmqlab queues list    {stamp}\n\n{block}"
                    ),
                    // One JSON document per refresh, for `jq` and the like.
                    (false, TableFormat::Json) => block,
                    (false, _) => format!("{block}\n"),
                };
                if !on_terminal {
                    // The time of each refresh is not data: stdout stays parseable.
                    ctx.status.info(format_args!("# {stamp}"));
                }
                print(screen.as_bytes())?;
                previous = Some(current);
            }
            // The first answer tells whether the API is there at all; after it, like a
            // consumer, keep going through failures for up to --reconnect-timeout.
            Err(error) if previous.is_some() && error.is_transient() => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= ctx.reconnect_timeout {
                    return Err(Error::RefreshFailed {
                        after: ctx.reconnect_timeout,
                        source: Box::new(error),
                    });
                }
                ctx.status.warn(format_args!(
                    " [!] refresh failed: {}; trying again in {every}",
                    error.one_line()
                ));
            }
            Err(error) => return Err(error),
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = interrupts.wait_for(1) => {
                return Ok(Exit::Stopped(interrupts.first().unwrap_or(Stop::Interrupt)));
            }
        }
    }
}

/// How many refreshes a queue's sparkline shows.
const DEPTH_HISTORY: usize = 20;

fn key(row: &QueueRow) -> (String, String) {
    (row.vhost.clone(), row.name.clone())
}

fn terminal_width() -> Option<u16> {
    crate::terminal::table_width()
}
