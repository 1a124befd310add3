//! Tutorial 5, "Topics": a topic exchange routes by pattern (`*` one word, `#` zero or more).
//! Emitting and listening work as in tutorial 4 (`routing`); `match` says which keys a pattern
//! routes, by rmqlab's own matcher and, with `--live`, by the broker.

use super::routing::{Routed, emit, listen};
use crate::{
    amqp::{
        publish::{
            Confirmations, Plan, Publication, RoutingKey, Start, Unroutable, Watch, publish_all,
        },
        topology::{Binding, Exchange, ExchangeKind, Queue, Topology},
    },
    cli::{TopicsCommand, TopicsMatchArgs},
    context::{Context, Status},
    error::{Error, Result},
    exit::Exit,
    input::{Messages, ReadError},
    message::Message,
    signals::{Interrupts, Stop},
    topic,
};
use std::collections::HashSet;

pub async fn run(ctx: &Context, command: TopicsCommand) -> Result<Exit> {
    match command {
        TopicsCommand::Emit(args) => {
            if args.routing_key.contains(['*', '#']) {
                ctx.status.warn(format_args!(
                    " [!] routing key '{}' is taken literally: `*` and `#` are wildcards in \
                     binding keys only",
                    args.routing_key
                ));
            }
            let exchange = Routed {
                command: "rmqlab topics emit",
                exchange: &args.exchange,
                kind: ExchangeKind::Topic,
            };
            emit(
                ctx,
                &exchange,
                &args.routing_key,
                &args.message,
                &args.properties,
            )
            .await
        }
        TopicsCommand::Listen(args) => {
            for key in &args.binding_keys {
                warn_literal_wildcards(ctx.status, key);
            }
            let exchange = Routed {
                command: "rmqlab topics listen",
                exchange: &args.exchange,
                kind: ExchangeKind::Topic,
            };
            listen(
                ctx,
                &exchange,
                &args.binding_keys,
                &args.queue,
                &args.consume,
            )
            .await
        }
        TopicsCommand::Match(args) => match_live(ctx, &args).await,
    }
}

/// Warns about `*` or `#` inside a word of a binding key: RabbitMQ takes them literally.
fn warn_literal_wildcards(status: Status, binding_key: &str) {
    for word in topic::literal_wildcard_words(binding_key) {
        status.warn(format_args!(
            " [!] binding key '{binding_key}': '{word}' is a literal word; `*` and `#` are \
             wildcards only as whole words"
        ));
    }
}

/// `topics match` without `--live`: rmqlab's matcher alone, no broker.
pub async fn match_offline(status: Status, args: &TopicsMatchArgs) -> Result<Exit> {
    warn_literal_wildcards(status, &args.pattern);
    let keys = keys(args).await?;
    let matched: Vec<bool> = keys
        .iter()
        .map(|key| topic::matches(&args.pattern, key))
        .collect();
    answer(&args.pattern, &keys, &matched)
}

/// `topics match --live`: each key published, mandatory and confirmed, to a temporary topic
/// exchange with one queue bound with the pattern. The broker returns a message no binding
/// takes before it confirms it, so once every key is confirmed, the keys not returned are the
/// matches: nothing waits for deliveries.
async fn match_live(ctx: &Context, args: &TopicsMatchArgs) -> Result<Exit> {
    warn_literal_wildcards(ctx.status, &args.pattern);
    let keys = keys(args).await?;
    let exchange = format!(
        "rmqlab.topics.match.{}.{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    let topology = Topology {
        // Deleted by the broker with its binding, when the exclusive queue goes.
        exchanges: vec![Exchange {
            auto_delete: true,
            ..Exchange::tutorial(&exchange, ExchangeKind::Topic)
        }],
        queue: Some(Queue::Exclusive),
        bindings: vec![Binding {
            exchange: exchange.clone(),
            key: args.pattern.clone(),
        }],
    };
    let target = Publication {
        exchange: &exchange,
        routing_key: RoutingKey::Body,
        persistent: false,
        unroutable: Unroutable::IsDropped,
    };
    let plan = Plan {
        connection_name: "rmqlab topics match --live",
        topology: &topology,
        target: &target,
    };
    let mut messages = Messages::all(keys.iter().map(|key| key.clone().into_bytes()).collect());
    let mut returned = Returned::default();
    let mut interrupts = Interrupts::install().map_err(Error::Runtime)?;
    let mut watch = Watch::new(&mut interrupts, None);
    let published = publish_all(
        ctx,
        &ctx.status,
        &plan,
        &mut messages,
        &mut returned,
        Start::Connect,
        &mut watch,
    )
    .await?;
    if published.stopped {
        // Stopped by a signal: no answer is complete.
        return Ok(Exit::Stopped(interrupts.first().unwrap_or(Stop::Interrupt)));
    }
    let matched: Vec<bool> = keys.iter().map(|key| !returned.0.contains(key)).collect();
    let mut disagreements = 0;
    for (key, &matched) in keys.iter().zip(&matched) {
        if matched != topic::matches(&args.pattern, key) {
            disagreements += 1;
            ctx.status.warn(format_args!(
                " [!] the broker says '{}' {} '{key}'; rmqlab's matcher says the opposite",
                args.pattern,
                verb(matched)
            ));
        }
    }
    let exit = answer(&args.pattern, &keys, &matched)?;
    match disagreements {
        0 => Ok(exit),
        count => Err(Error::MatcherDisagrees { count }),
    }
}

/// The keys to test: the arguments, or the lines of `--file`, each checked as a routing key.
async fn keys(args: &TopicsMatchArgs) -> Result<Vec<String>> {
    let Some(path) = &args.file else {
        return Ok(args.keys.clone());
    };
    // A line past the longest key is refused as one (its length named), not read to its end.
    let mut lines = Messages::lines_of(path, topic::MAX_KEY_BYTES as u64 + 1)?;
    let mut keys = Vec::new();
    loop {
        let batch = match lines.next().await {
            Ok(batch) => batch,
            Err(ReadError::TooLong { line, limit }) => {
                return Err(Error::InvalidKey {
                    input: lines.name.clone(),
                    line,
                    reason: format!(
                        "it is over {} bytes: a routing or binding key has at most {}",
                        limit - 1,
                        limit - 1
                    ),
                });
            }
            Err(error) => return Err(lines.error(error)),
        };
        if batch.is_empty() {
            return Ok(keys);
        }
        for line in batch {
            let invalid = |reason: String| Error::InvalidKey {
                input: lines.name.clone(),
                line: keys.len() as u64 + 1,
                reason,
            };
            let key =
                String::from_utf8(line.body).map_err(|_| invalid("it is not UTF-8".into()))?;
            topic::check_length(&key).map_err(|too_long| invalid(too_long.to_string()))?;
            keys.push(key);
        }
    }
}

fn verb(matched: bool) -> &'static str {
    match matched {
        true => "matches",
        false => "does not match",
    }
}

/// Prints one line per key and answers as grep does: yes (0) when every key matched.
fn answer(pattern: &str, keys: &[String], matched: &[bool]) -> Result<Exit> {
    let mut out = String::new();
    for (key, &matched) in keys.iter().zip(matched) {
        out.push_str(&format!("'{pattern}' {} '{key}'\n", verb(matched)));
    }
    match super::print_text(out.as_bytes()) {
        // A reader gone early (`| head`) does not change the answer.
        Err(error) if error.is_broken_pipe() => {}
        printed => printed?,
    }
    Ok(match matched.iter().all(|&matched| matched) {
        true => Exit::Success,
        false => Exit::No,
    })
}

/// The keys the broker returned: those the binding does not route. (A set, since lapin may
/// report a return with another message's confirm; the answer depends on the key alone.)
#[derive(Default)]
struct Returned(HashSet<String>);

impl Confirmations for Returned {
    fn confirmed(&mut self, _number: u64, _key: &Message) -> Result<()> {
        Ok(())
    }

    fn dropped(&mut self, routing_key: &str) {
        self.0.insert(routing_key.to_string());
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}
