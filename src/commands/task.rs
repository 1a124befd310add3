//! Tutorial 2, "Work Queues": persistent tasks in a durable queue, manual acks after the work,
//! fair dispatch with a prefetch of 1.

use super::{
    exec::{self, Finished, unless_aborted},
    named_queue,
    receive::{Out, Receive, Republishing, announce, receive_republishing, stdout},
    send::{Send, send},
};
use crate::{
    amqp::{
        consume::{Handler, Outcome},
        publish::{Publication, RoutingKey, Unroutable},
        topology::{Queue, QueueType, Topology},
        transfer::headers_to_copy,
    },
    cli::{OnFailure, OutputFormat, TaskCommand, TaskWorkArgs},
    context::{Context, Status},
    error::{Error, Result},
    exit::Exit,
    management::Api,
    message::exec_environment,
    output::{Received, TextLine, write_received},
    signals::Interrupts,
};
use lapin::{
    message::Delivery,
    types::{AMQPValue, FieldTable, ShortString},
};
use std::{
    io::Write,
    time::{Duration, SystemTime},
};

/// The header that counts a task's failures: it travels with the task, whatever the queue type,
/// and only rmqlab's own failures raise it (the broker's `redelivered` flag and a quorum queue's
/// `x-delivery-count` also count a crashed worker or one stopped while holding tasks).
pub const FAILURES_HEADER: &str = "x-rmqlab-failures";
/// The `task work --exec` variable with the task's failures so far.
pub const FAILURES_VARIABLE: &str = "RMQLAB_MSG_FAILURES";

/// The header of a parked task that names the queue it failed in.
pub const QUEUE_HEADER: &str = "x-rmqlab-queue";
/// The header of a parked task that says when it was parked (RFC 3339).
pub const FAILED_AT_HEADER: &str = "x-rmqlab-failed-at";

pub async fn run(ctx: &Context, command: TaskCommand) -> Result<Exit> {
    match command {
        TaskCommand::New(args) => {
            let spec = Send {
                connection_name: "rmqlab task new",
                topology: Topology::queue(named_queue(&args.queue, args.queue_type.queue_type)),
                target: Publication {
                    exchange: "",
                    routing_key: RoutingKey::Fixed(&args.queue),
                    persistent: true,
                    unroutable: Unroutable::Fails,
                },
                default_message: "Hello World!",
                show_key: false,
            };
            send(ctx, spec, &args.message, &args.properties).await
        }
        TaskCommand::Work(args) => work(ctx, args).await,
    }
}

async fn work(ctx: &Context, args: TaskWorkArgs) -> Result<Exit> {
    let exec = match &args.exec {
        None => None,
        Some(command) => {
            // Refused before any task is taken.
            exec::check_startable(command).map_err(|reason| Error::ExecNotStarted {
                command: command.clone(),
                reason,
            })?;
            if args.on_failure == OnFailure::DeadLetter {
                require_dead_letter_exchange(ctx, &args.queue).await?;
            }
            Some(Exec {
                command: command.clone(),
                queue: args.queue.clone(),
                retries: args.retries,
                on_failure: args.on_failure,
                failure: None,
                parked: 0,
                dead_lettered: 0,
                fatal: None,
            })
        }
    };
    // Parked tasks go to a queue declared as every other: created durable quorum when absent,
    // used as it is when present.
    let parking = match &exec {
        Some(exec) if exec.on_failure == OnFailure::Park => Some(Topology::queue(Queue::Named {
            name: exec.parking_queue(),
            queue_type: QueueType::Quorum,
            explicit_type: false,
        })),
        _ => None,
    };
    let spec = Receive {
        connection_name: "rmqlab task work",
        topology: Topology::queue(named_queue(&args.queue, args.queue_type.queue_type)),
        prefetch: args.prefetch,
    };
    let republishing = Republishing {
        retries: exec.is_some(),
        parking: parking.as_ref(),
    };
    let mut worker = Worker {
        out: stdout(args.consume.output),
        format: args.consume.output,
        status: ctx.status,
        dot_duration: args.dot_duration,
        exec,
    };
    let exit = receive_republishing(ctx, spec, &args.consume, &mut worker, republishing).await?;
    let Some(exec) = worker.exec else {
        return Ok(exit);
    };
    if let Some(fatal) = exec.fatal {
        return Err(fatal);
    }
    if exec.parked + exec.dead_lettered == 0 {
        return Ok(exit);
    }
    let failed = Error::TasksFailed {
        parked: exec.parked,
        dead_lettered: exec.dead_lettered,
        parking_queue: exec.parking_queue(),
    };
    match exit {
        // Stopped by a signal: rmqlab ends by it, and still tells what failed.
        Exit::Stopped(_) => {
            ctx.status.warn(format_args!(" [!] {failed}"));
            Ok(exit)
        }
        // A worker never answers "no".
        Exit::Success | Exit::No | Exit::Relayed(_) => Err(failed),
    }
}

/// How long the management API may take to show a queue's policy (its statistics interval).
const POLICY_REFRESH: Duration = Duration::from_secs(6);

/// `--on-failure dead-letter` rejects failed tasks to the queue's dead-letter exchange: without
/// one they would be dropped. Only the management API shows a queue's policy, so it is asked.
async fn require_dead_letter_exchange(ctx: &Context, queue: &str) -> Result<()> {
    let api = Api::new(ctx).await?;
    // A policy shows in the API with the queue's statistics, which the broker refreshes every
    // few seconds: a queue created (or a policy set) a moment ago is asked again before it is
    // taken to have no dead-letter exchange.
    let deadline = tokio::time::Instant::now() + POLICY_REFRESH;
    let found = loop {
        match api.dead_letter_exchange(ctx.url().vhost(), queue).await {
            Ok(None) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            found => break found,
        }
    };
    match found {
        Ok(Some(exchange)) => {
            ctx.status.debug(format_args!(
                "queue '{queue}' dead-letters to exchange '{exchange}'"
            ));
            Ok(())
        }
        Ok(None) => Err(Error::NoDeadLetterExchange {
            queue: queue.to_string(),
            exists: true,
        }),
        Err(Error::ApiNotFound { .. }) => Err(Error::NoDeadLetterExchange {
            queue: queue.to_string(),
            exists: false,
        }),
        Err(error) => Err(error),
    }
}

/// Tutorial 2's worker: print, work (sleep per `.` or run a command), then ack.
struct Worker {
    out: Out,
    format: OutputFormat,
    status: Status,
    dot_duration: Duration,
    exec: Option<Exec>,
}

/// `--exec` and what became of its failures.
struct Exec {
    command: String,
    queue: String,
    retries: u32,
    on_failure: OnFailure,
    /// The failure whose outcome the engine is carrying out, for the report.
    failure: Option<Failure>,
    parked: u64,
    dead_lettered: u64,
    /// Why the run ends with an error once consuming stopped (the task is back in the queue).
    fatal: Option<Error>,
}

struct Failure {
    /// Failures of the task so far, this one included.
    count: u32,
    reason: String,
}

impl Exec {
    fn parking_queue(&self) -> String {
        format!("{}.failed", self.queue)
    }

    /// Decides what becomes of a task whose command failed.
    fn failed(&mut self, delivery: &Delivery, finished: &Finished) -> Outcome {
        let reason = finished.describe();
        if finished.not_started() {
            let what = match finished.status.code() {
                Some(127) => "not found",
                _ => "not executable",
            };
            self.fatal = Some(Error::ExecNotStarted {
                command: self.command.clone(),
                reason: format!("sh ended with {reason} ({what}); the task is back in the queue"),
            });
            return Outcome::GiveBack;
        }
        let mut headers = copied_headers(delivery);
        let count = failures(delivery).saturating_add(1);
        self.failure = Some(Failure {
            count,
            reason: reason.clone(),
        });
        headers.insert(FAILURES_HEADER.into(), AMQPValue::LongLongInt(count.into()));
        if count <= self.retries {
            return Outcome::Republish { headers };
        }
        match self.on_failure {
            OnFailure::Park => {
                let text = |value: &str| AMQPValue::LongString(value.into());
                let mut put = |name: &str, value: AMQPValue| {
                    headers.insert(ShortString::from(name), value);
                };
                put("x-rmqlab-reason", text(&reason));
                match (
                    finished.status.code(),
                    std::os::unix::process::ExitStatusExt::signal(&finished.status),
                ) {
                    (Some(code), _) => {
                        put("x-rmqlab-exit-status", AMQPValue::LongLongInt(code.into()))
                    }
                    (None, Some(signal)) => {
                        put("x-rmqlab-signal", text(&exec::signal_name(signal)))
                    }
                    (None, None) => {}
                }
                put("x-rmqlab-stderr", text(&finished.stderr_tail));
                put("x-rmqlab-command", text(&self.command));
                put(QUEUE_HEADER, text(&self.queue));
                put(
                    FAILED_AT_HEADER,
                    text(&humantime::format_rfc3339_seconds(SystemTime::now()).to_string()),
                );
                Outcome::Park { headers }
            }
            OnFailure::DeadLetter => Outcome::Reject { requeue: false },
            OnFailure::Requeue => Outcome::Reject { requeue: true },
            OnFailure::Stop => {
                self.fatal = Some(Error::TaskStopped {
                    reason: format!("{count} tries, the last: {reason}"),
                });
                Outcome::GiveBack
            }
        }
    }

    /// Says what became of a failed task, once the engine did it.
    fn report(&mut self, status: Status, outcome: &Outcome) {
        let Some(Failure { count, reason }) = self.failure.take() else {
            return;
        };
        let tries = self.retries + 1;
        match outcome {
            Outcome::Republish { .. } => status.info(format_args!(
                " [!] Task failed (--exec command {reason}): queued again for try {} of {tries}",
                count + 1
            )),
            Outcome::Park { .. } => {
                self.parked += 1;
                status.warn(format_args!(
                    " [!] Task parked in queue '{}' after {count} tries (--exec command \
                     {reason})",
                    self.parking_queue()
                ));
            }
            Outcome::Reject { requeue: false } => {
                self.dead_lettered += 1;
                status.warn(format_args!(
                    " [!] Task dead-lettered after {count} tries (--exec command {reason})"
                ));
            }
            Outcome::Reject { requeue: true } => status.info(format_args!(
                " [!] Task failed again (--exec command {reason}): requeued as it is \
                 (--on-failure requeue)"
            )),
            _ => {}
        }
    }
}

/// The prefix of the headers rmqlab keeps a task's failures in.
const BOOKKEEPING_PREFIX: &str = "x-rmqlab-";

/// The task's headers, to publish it again: all but the broker's own delivery count and
/// rmqlab's bookkeeping of earlier tries (written again by the caller), so that a task parked,
/// then redriven or moved back, does not carry the headers of its old park.
fn copied_headers(delivery: &Delivery) -> FieldTable {
    let mut headers = headers_to_copy(&delivery.properties).inner().clone();
    headers.retain(|name, _| !name.as_str().starts_with(BOOKKEEPING_PREFIX));
    FieldTable::from(headers)
}

/// How many times rmqlab saw this task fail before ([`FAILURES_HEADER`]). A task that was
/// parked ([`FAILED_AT_HEADER`]) and is back in a work queue (redriven, moved) starts afresh:
/// it gets its tries again.
fn failures(delivery: &Delivery) -> u32 {
    let headers = delivery.properties.headers().as_ref().map(|h| h.inner());
    if headers.is_some_and(|headers| headers.contains_key(FAILED_AT_HEADER)) {
        return 0;
    }
    let value = headers.and_then(|headers| headers.get(FAILURES_HEADER).cloned());
    let count = match value {
        Some(AMQPValue::ShortShortInt(n)) => i64::from(n),
        Some(AMQPValue::ShortShortUInt(n)) => i64::from(n),
        Some(AMQPValue::ShortInt(n)) => i64::from(n),
        Some(AMQPValue::ShortUInt(n)) => i64::from(n),
        Some(AMQPValue::LongInt(n)) => i64::from(n),
        Some(AMQPValue::LongUInt(n)) => i64::from(n),
        Some(AMQPValue::LongLongInt(n)) => n,
        _ => 0,
    };
    u32::try_from(count.max(0)).unwrap_or(u32::MAX)
}

impl Handler for Worker {
    fn consuming(&mut self, _queue: &str, resumed: bool) {
        announce(self.status, resumed, None);
    }

    async fn handle(
        &mut self,
        delivery: &Delivery,
        interrupts: &mut Interrupts,
    ) -> Result<Outcome> {
        write_received(
            &mut self.out,
            self.format,
            TextLine::Body(" [x] Received "),
            &Received::from(delivery),
        )
        .map_err(Error::Output)?;
        let dots = delivery.data.iter().filter(|&&b| b == b'.').count() as u32;
        let work_time = self.dot_duration * dots;
        if self.exec.is_none() && work_time.is_zero() {
            self.write_done()?;
            return Ok(Outcome::AckLater);
        }
        // The work takes a while: show what is being worked on first.
        self.flush()?;
        let status = self.status;
        match &mut self.exec {
            None => {
                let bar = status.progress.working(dots);
                let started = tokio::time::Instant::now();
                let dot_duration = self.dot_duration;
                let work = async {
                    for dot in 1..=dots {
                        tokio::time::sleep_until(started + dot_duration * dot).await;
                        bar.set_position(dot.into());
                    }
                };
                let done = unless_aborted(status, interrupts, work, &bar, "task").await;
                bar.finish_and_clear();
                if done.is_none() {
                    return Ok(Outcome::Aborted);
                }
            }
            Some(exec) => {
                let mut env = exec_environment(delivery);
                env.push((FAILURES_VARIABLE, failures(delivery).to_string()));
                let mut running = match exec::start(&exec.command, &env, false) {
                    Ok(running) => running,
                    Err(source) => {
                        exec.fatal = Some(Error::Exec {
                            command: exec.command.clone(),
                            source,
                        });
                        return Ok(Outcome::GiveBack);
                    }
                };
                let bar = status.progress.running();
                let run = running.finish(&delivery.data, &bar);
                let done = unless_aborted(status, interrupts, run, &bar, "task").await;
                if done.is_none() {
                    bar.suspend(|| {
                        status.info(format_args!(
                            " [*] Ending the --exec command (SIGTERM, then SIGKILL after {})",
                            humantime::format_duration(exec::GRACE)
                        ))
                    });
                    running.end_group(interrupts).await;
                }
                bar.finish_and_clear();
                match done {
                    None => return Ok(Outcome::Aborted),
                    Some(Ok(finished)) if finished.status.success() => {}
                    Some(Ok(finished)) => return Ok(exec.failed(delivery, &finished)),
                    Some(Err(source)) => {
                        exec.fatal = Some(Error::Exec {
                            command: exec.command.clone(),
                            source,
                        });
                        return Ok(Outcome::GiveBack);
                    }
                }
            }
        }
        self.write_done()?;
        Ok(Outcome::AckNow)
    }

    fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(Error::Output)
    }

    fn carried_out(&mut self, outcome: &Outcome) {
        if let Some(exec) = &mut self.exec {
            exec.report(self.status, outcome);
        }
    }
}

impl Worker {
    fn write_done(&mut self) -> Result<()> {
        if self.format == OutputFormat::Text {
            self.out.write_all(b" [x] Done\n").map_err(Error::Output)?;
        }
        Ok(())
    }
}
