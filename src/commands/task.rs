//! Tutorial 2, "Work Queues": persistent tasks in a durable queue, manual acks after the work,
//! fair dispatch with a prefetch of 1.

use super::{
    exec::{run_exec, unless_aborted},
    named_queue,
    receive::{Receive, announce, receive, stdout},
    send::{Send, send},
};
use crate::{
    amqp::{
        consume::{Handler, Outcome},
        publish::{Publication, Unroutable},
        topology::Topology,
    },
    cli::{OutputFormat, TaskCommand},
    context::{Context, Status},
    error::{Error, Result},
    exit::Exit,
    output::{Received, write_received},
    signals::Interrupts,
};
use lapin::message::Delivery;
use std::{
    io::{BufWriter, Stdout, Write},
    time::Duration,
};

pub async fn run(ctx: &Context, command: TaskCommand) -> Result<Exit> {
    match command {
        TaskCommand::New(args) => {
            let spec = Send {
                connection_name: "rmqlab task new",
                topology: Topology::queue(named_queue(&args.queue, &args.queue_type)),
                target: Publication {
                    exchange: "",
                    routing_key: &args.queue,
                    persistent: true,
                    unroutable: Unroutable::Fails,
                },
                default_message: "Hello World!",
            };
            send(ctx, spec, &args.message).await
        }
        TaskCommand::Work(args) => {
            let spec = Receive {
                connection_name: "rmqlab task work",
                topology: Topology::queue(named_queue(&args.queue, &args.queue_type)),
                prefetch: args.prefetch,
            };
            let mut worker = Worker {
                out: stdout(),
                format: args.consume.output,
                status: ctx.status,
                dot_duration: args.dot_duration,
                exec: args.exec,
            };
            receive(ctx, spec, &args.consume, &mut worker).await
        }
    }
}

/// Tutorial 2's worker: print, work (sleep per `.` or run a command), then ack.
struct Worker {
    out: BufWriter<Stdout>,
    format: OutputFormat,
    status: Status,
    dot_duration: Duration,
    exec: Option<String>,
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
            " [x] Received ",
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
        match self.exec.clone() {
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
            Some(command) => {
                let bar = status.progress.running();
                let run = run_exec(&command, delivery, false);
                let done = unless_aborted(status, interrupts, run, &bar, "task").await;
                bar.finish_and_clear();
                match done {
                    None => return Ok(Outcome::Aborted),
                    Some(Ok(exit)) if exit.success() => {}
                    Some(Ok(exit)) => {
                        let exit = format!("exit status: {}", exit.code);
                        // Requeued on its first delivery, dropped when it fails again.
                        let requeue = !delivery.redelivered;
                        status.info(format_args!(
                            " [!] Task failed (--exec command {exit}): {}",
                            if requeue {
                                "requeued for another try"
                            } else {
                                "failed twice, dropped (or dead-lettered)"
                            }
                        ));
                        return Ok(Outcome::Reject { requeue });
                    }
                    Some(Err(error)) => return Err(error),
                }
            }
        }
        self.write_done()?;
        Ok(Outcome::AckNow)
    }

    fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(Error::Output)
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
