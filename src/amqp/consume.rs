//! The consumer loop shared by every receiving command: manual acks after the work (batched with
//! `multiple` when the work is instant), `--count`, `--idle-timeout`, and a clean stop on Ctrl-C.

use crate::{
    amqp::{Session, Status},
    cli::OutputFormat,
    error::{Error, Result},
    output::{Received, write_received},
    signals::Interrupts,
};
use futures_lite::{StreamExt, future::poll_once};
use indicatif::ProgressBar;
use lapin::{
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions,
        BasicRejectOptions,
    },
    types::FieldTable,
};
use std::{future::Future, io::Write, pin::pin, process::ExitStatus, time::Duration};
use tokio::io::AsyncWriteExt;

pub const WAITING_LINE: &str = " [*] Waiting for messages. To exit press CTRL+C";

/// When a consumer stops on its own.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub count: Option<u64>,
    pub idle_timeout: Option<Duration>,
}

/// What is done with each delivery.
#[derive(Debug, Clone)]
pub enum Handling {
    /// Print it, then ack it once the output is flushed (tutorials 1 and 3).
    Print { text_prefix: &'static str },
    /// Tutorial 2's worker: print, work (sleep per `.` or run a command), then ack.
    Work {
        dot_duration: Duration,
        exec: Option<String>,
    },
}

/// How a consumer ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// `--count` reached or `--idle-timeout` passed.
    Finished,
    /// Ctrl-C or SIGTERM: stopped cleanly, nothing in progress was lost.
    Interrupted,
}

pub struct Consumer<W: Write> {
    pub prefetch: u16,
    pub limits: Limits,
    pub format: OutputFormat,
    pub handling: Handling,
    pub status: Status,
    pub interrupts: Interrupts,
    pub out: W,
    /// Deliveries acked or rejected so far, across reconnections: what `--count` counts.
    pub done: u64,
}

/// Deliveries printed but not yet acked; acked together with `multiple` once output is flushed.
#[derive(Default)]
struct PendingAcks {
    last_tag: Option<u64>,
    count: u16,
}

/// What became of one delivery.
enum Outcome {
    /// Done: ack it now (work took time; acking later would risk redoing it).
    AckNow,
    /// Done instantly: ack it with the next batch.
    AckLater,
    /// The work failed and the delivery was rejected.
    Rejected,
    /// A second interrupt aborted the work: leave it unacked for the broker to requeue.
    Aborted,
}

impl<W: Write> Consumer<W> {
    /// Consumes from `queue` on `session` until the limits or an interrupt end it. A lost
    /// connection is an error after which `run` may be called again on a new session: what was
    /// printed but not acked then comes again, and is not counted twice.
    pub async fn run(&mut self, session: &Session, queue: &str) -> Result<Ending> {
        let channel = &session.channel;
        channel
            .basic_qos(self.prefetch, BasicQosOptions { global: false })
            .await
            .map_err(Error::broker("cannot set the prefetch (basic.qos)"))?;
        let tag = format!("rmqlab.{}", std::process::id());
        let mut deliveries = channel
            .basic_consume(
                queue.into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(Error::broker(format!(
                "cannot consume from queue '{queue}'"
            )))?;
        self.status.info(WAITING_LINE);

        let mut pending = PendingAcks::default();
        let ending = loop {
            let handled = self.done + u64::from(pending.count);
            if self.limits.count.is_some_and(|count| handled >= count) {
                break Ending::Finished;
            }
            if self.interrupts.received() > 0 {
                break Ending::Interrupted;
            }
            let next = match poll_once(deliveries.next()).await {
                Some(next) => next,
                None => {
                    // Nothing buffered: a good moment to flush output and settle acks.
                    self.settle(session, &mut pending).await?;
                    let idle = async {
                        match self.limits.idle_timeout {
                            Some(timeout) => tokio::time::sleep(timeout).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        next = deliveries.next() => next,
                        () = self.interrupts.wait_for(1) => break Ending::Interrupted,
                        () = idle => break Ending::Finished,
                    }
                }
            };
            let delivery = match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(source)) => {
                    return Err(Error::broker(format!(
                        "stopped receiving from queue '{queue}'"
                    ))(source));
                }
                None if !session.is_connected() => {
                    return Err(Error::ConnectionLost {
                        context: format!("stopped receiving from queue '{queue}'"),
                    });
                }
                None => {
                    return Err(Error::ConsumerCancelled {
                        queue: queue.to_string(),
                    });
                }
            };
            match self.handle(session, &delivery).await? {
                Outcome::AckNow => {
                    self.settle(session, &mut pending).await?;
                    channel
                        .basic_ack(delivery.delivery_tag, BasicAckOptions::default())
                        .await
                        .map_err(Error::broker("cannot acknowledge a message"))?;
                    self.done += 1;
                }
                Outcome::AckLater => {
                    pending.last_tag = Some(delivery.delivery_tag);
                    pending.count += 1;
                    // Ack before the prefetch window is used up, so the broker keeps sending.
                    if pending.count >= self.prefetch.div_ceil(2) {
                        self.settle(session, &mut pending).await?;
                    }
                }
                Outcome::Rejected => self.done += 1,
                Outcome::Aborted => break Ending::Interrupted,
            }
        };
        self.settle(session, &mut pending).await?;
        // Unprocessed deliveries still buffered go back to the queue when the channel closes.
        let _ = channel
            .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
            .await;
        Ok(ending)
    }

    /// Flushes the output, then acks every delivery it shows.
    async fn settle(&mut self, session: &Session, pending: &mut PendingAcks) -> Result<()> {
        self.out.flush().map_err(Error::Output)?;
        if let Some(tag) = pending.last_tag.take() {
            let count = std::mem::take(&mut pending.count);
            session
                .channel
                .basic_ack(tag, BasicAckOptions { multiple: true })
                .await
                .map_err(Error::broker("cannot acknowledge messages"))?;
            self.done += u64::from(count);
        }
        Ok(())
    }

    async fn handle(&mut self, session: &Session, delivery: &Delivery) -> Result<Outcome> {
        let received = Received::from(delivery);
        let (dot_duration, exec) = match &self.handling {
            Handling::Print { text_prefix } => {
                write_received(&mut self.out, self.format, text_prefix, &received)
                    .map_err(Error::Output)?;
                return Ok(Outcome::AckLater);
            }
            Handling::Work { dot_duration, exec } => (*dot_duration, exec.clone()),
        };
        write_received(&mut self.out, self.format, " [x] Received ", &received)
            .map_err(Error::Output)?;
        let dots = delivery.data.iter().filter(|&&b| b == b'.').count() as u32;
        let work_time = dot_duration * dots;
        if exec.is_none() && work_time.is_zero() {
            self.write_done()?;
            return Ok(Outcome::AckLater);
        }
        // The work takes a while: show what is being worked on first.
        self.out.flush().map_err(Error::Output)?;
        let succeeded = match exec {
            None => {
                let bar = self.status.progress.working(dots);
                let started = tokio::time::Instant::now();
                let work = async {
                    for dot in 1..=dots {
                        tokio::time::sleep_until(started + dot_duration * dot).await;
                        bar.set_position(dot.into());
                    }
                };
                let done = self.unless_aborted(work, &bar).await;
                bar.finish_and_clear();
                match done {
                    Some(()) => true,
                    None => return Ok(Outcome::Aborted),
                }
            }
            Some(command) => {
                let bar = self.status.progress.running();
                let run = run_exec(&command, delivery);
                let done = self.unless_aborted(run, &bar).await;
                bar.finish_and_clear();
                match done {
                    None => return Ok(Outcome::Aborted),
                    Some(Ok(status)) if status.success() => true,
                    Some(Ok(status)) => {
                        self.reject(session, delivery, &format!("--exec command {status}"))
                            .await?;
                        false
                    }
                    Some(Err(source)) => return Err(Error::Exec { command, source }),
                }
            }
        };
        if !succeeded {
            return Ok(Outcome::Rejected);
        }
        self.write_done()?;
        Ok(Outcome::AckNow)
    }

    fn write_done(&mut self) -> Result<()> {
        if self.format == OutputFormat::Text {
            self.out.write_all(b" [x] Done\n").map_err(Error::Output)?;
        }
        Ok(())
    }

    /// Runs the work to its end, unless a second interrupt aborts it (`None`). The first
    /// interrupt only announces that the worker stops after this task.
    async fn unless_aborted<T>(
        &mut self,
        work: impl Future<Output = T>,
        progress: &ProgressBar,
    ) -> Option<T> {
        let mut work = pin!(work);
        let mut announced = false;
        loop {
            let seen = self.interrupts.received();
            if seen >= 2 {
                progress.suspend(|| {
                    self.status
                        .info(" [!] Aborted: the broker will redeliver the task")
                });
                return None;
            }
            if seen == 1 && !announced {
                announced = true;
                progress.suspend(|| {
                    self.status.info(
                        " [*] Stopping after the current task (press CTRL+C again to abort it)",
                    )
                });
            }
            tokio::select! {
                result = &mut work => return Some(result),
                () = self.interrupts.wait_for(seen + 1) => {}
            }
        }
    }

    /// Rejects a failed task: requeued on its first delivery, dropped when it fails again.
    async fn reject(&mut self, session: &Session, delivery: &Delivery, why: &str) -> Result<()> {
        let requeue = !delivery.redelivered;
        session
            .channel
            .basic_reject(delivery.delivery_tag, BasicRejectOptions { requeue })
            .await
            .map_err(Error::broker("cannot reject a message"))?;
        self.status.info(format_args!(
            " [!] Task failed ({why}): {}",
            if requeue {
                "requeued for another try"
            } else {
                "failed twice, dropped (or dead-lettered)"
            }
        ));
        Ok(())
    }
}

/// Runs `sh -c COMMAND` with the body on its stdin.
async fn run_exec(command: &str, delivery: &Delivery) -> std::io::Result<ExitStatus> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .env(
            "RMQLAB_REDELIVERED",
            if delivery.redelivered { "1" } else { "0" },
        )
        .env("RMQLAB_ROUTING_KEY", delivery.routing_key.as_str())
        .stdin(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().expect("stdin was piped");
    let feed = async {
        // A command that does not read its stdin closes it early: that is not an error.
        let _ = stdin.write_all(&delivery.data).await;
        drop(stdin);
    };
    let (status, ()) = tokio::join!(child.wait(), feed);
    status
}
