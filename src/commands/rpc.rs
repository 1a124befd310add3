//! Tutorial 6, "RPC": a server that answers requests from `rpc_queue` with fib(N) (or with any
//! command's output, `--exec`), and a client that sends requests and waits for their replies.

use super::{
    exec::{self, unless_aborted},
    named_queue,
    receive::{Out, Receive, WAITING_LINE, receive, stdout},
    send::{input_file, one_message},
};
use crate::{
    amqp::{
        consume::{Handler, Outcome},
        rpc::{Call, Replies, Reply, ReplyQueue, call_all},
        topology::Topology,
    },
    cli::{OutputFormat, ReplyFormat, ReplyQueueKind, RpcCommand},
    context::{Context, Status},
    error::{Error, Result},
    exit::Exit,
    input::Messages,
    message::exec_environment,
    output::{Received, TextLine, to_json, write_received},
    signals::Interrupts,
};
use lapin::{
    message::Delivery,
    types::{AMQPValue, FieldTable},
};
use num_bigint::BigUint;
use std::{io::Write, os::unix::process::ExitStatusExt, time::Duration};

/// The largest N the fib server answers: fib(100000) has 20,899 digits.
pub const MAX_N: u32 = 100_000;

/// The header of a reply that carries no result, with the reason.
const ERROR_HEADER: &str = "x-error";
/// The header with an `--exec` command's exit status.
const EXIT_CODE_HEADER: &str = "x-exit-code";

pub async fn run(ctx: &Context, command: RpcCommand) -> Result<Exit> {
    match command {
        RpcCommand::Serve(args) => {
            let spec = Receive {
                connection_name: "rmqlab rpc serve",
                topology: Topology::queue(named_queue(&args.queue, args.queue_type.queue_type)),
                prefetch: args.prefetch,
            };
            if let Some(command) = &args.exec {
                // Refused before any request is taken.
                exec::check_startable(command).map_err(|reason| Error::ExecNotStarted {
                    command: command.clone(),
                    reason,
                })?;
            }
            let mut server = Server {
                out: stdout(args.consume.output),
                format: args.consume.output,
                status: ctx.status,
                exec: args.exec,
            };
            receive(ctx, spec, &args.consume, &mut server).await
        }
        RpcCommand::Call(args) => {
            // Open the input before connecting: a missing file is reported first.
            let form = super::send::form_for(ctx, &args.properties);
            let file = input_file(args.file.as_ref(), args.request.is_none(), form.input);
            let mut messages = match &file {
                Some(path) => Messages::read(path, args.max_message_size, form)?,
                None => {
                    let request = args.request.unwrap_or_else(|| "30".into()).into_bytes();
                    Messages::single(one_message(&form, request)?)
                }
            };
            let call = Call {
                connection_name: "rmqlab rpc call",
                queue: &args.queue,
                reply_queue: match args.reply_queue {
                    ReplyQueueKind::Direct => ReplyQueue::DirectReplyTo,
                    ReplyQueueKind::Exclusive => ReplyQueue::Exclusive,
                },
                timeout: args.timeout,
                concurrency: args.concurrency.into(),
            };
            let mut printer = ReplyPrinter {
                out: stdout(match args.output {
                    // Text is shown as text; a body or JSON stays exact.
                    ReplyFormat::Text => OutputFormat::Text,
                    ReplyFormat::Body | ReplyFormat::Json => OutputFormat::Body,
                }),
                format: args.output,
                status: ctx.status,
                failure: None,
            };
            let called = call_all(ctx, &ctx.status, &call, &mut messages, &mut printer).await?;
            if called.ignored > 0 {
                ctx.status.debug(format_args!(
                    "ignored {} reply(ies) with an unknown correlation id",
                    called.ignored
                ));
            }
            ctx.status
                .debug(format_args!("{} reply(ies) received", called.replied));
            match printer.failure {
                None => Ok(Exit::Success),
                Some(Failure::Refused { number, reason }) => {
                    Err(Error::ServerError { number, reason })
                }
                Some(Failure::Exited(code)) => Ok(Exit::Relayed(code)),
            }
        }
    }
}

/// Tutorial 6's server: each request answered, the reply confirmed, then the request acked.
struct Server {
    out: Out,
    format: OutputFormat,
    status: Status,
    exec: Option<String>,
}

impl Handler for Server {
    fn consuming(&mut self, _queue: &str, resumed: bool) {
        match (self.format, resumed) {
            (_, true) => {}
            // The tutorial's line is part of its output.
            (OutputFormat::Text, false) => {
                let _ = self
                    .out
                    .write_all(b" [x] Awaiting RPC requests\n")
                    .and_then(|()| self.out.flush());
            }
            (_, false) => self.status.info(WAITING_LINE),
        }
    }

    async fn handle(
        &mut self,
        delivery: &Delivery,
        interrupts: &mut Interrupts,
    ) -> Result<Outcome> {
        let request = parse_request(&delivery.data);
        match (self.format, &self.exec, &request) {
            (OutputFormat::Text, None, Ok(n)) => writeln!(self.out, " [.] fib({n})"),
            (OutputFormat::Text, None, Err(_)) => Ok(()),
            (OutputFormat::Text, Some(_), _) => write_received(
                &mut self.out,
                OutputFormat::Text,
                TextLine::Body(" [.] "),
                &Received::from(delivery),
            ),
            (format, _, _) => write_received(
                &mut self.out,
                format,
                TextLine::Body(""),
                &Received::from(delivery),
            ),
        }
        .map_err(Error::Output)?;
        let Some(to) = delivery.properties.reply_to().as_ref() else {
            self.flush()?;
            self.status.warn(format_args!(
                " [!] A request without reply_to (delivery {}): nothing to answer, acked",
                delivery.delivery_tag
            ));
            return Ok(Outcome::AckNow);
        };
        let mut reply = Reply {
            to: to.to_string(),
            correlation_id: delivery.properties.correlation_id().clone(),
            ..Reply::default()
        };
        match self.exec.clone() {
            None => match request {
                Ok(n) => reply.body = fib(n).to_string().into_bytes(),
                Err(reason) => {
                    self.status
                        .warn(format_args!(" [!] {reason}: answered with {ERROR_HEADER}"));
                    reply.headers = header(ERROR_HEADER, AMQPValue::LongString(reason.into()));
                }
            },
            Some(command) => {
                // The command may take a while: show what it works on first.
                self.flush()?;
                let status = self.status;
                let cannot_run = |source| Error::Exec {
                    command: command.clone(),
                    source,
                };
                // A handler error ends the run unacked: the request goes back to the queue.
                let mut running =
                    exec::start(&command, &exec_environment(delivery), true).map_err(cannot_run)?;
                let bar = status.progress.running();
                let run = running.finish(&delivery.data, &bar);
                let done = unless_aborted(status, interrupts, run, &bar, "request").await;
                if done.is_none() {
                    running.end_group(interrupts).await;
                }
                bar.finish_and_clear();
                let Some(finished) = done else {
                    return Ok(Outcome::Aborted);
                };
                let finished = finished.map_err(cannot_run)?;
                if finished.not_started() {
                    return Err(Error::ExecNotStarted {
                        command,
                        reason: format!(
                            "sh ended with {}; the request is back in the queue",
                            finished.describe()
                        ),
                    });
                }
                // As a shell reports it: 128 + N for a command killed by signal N.
                let code = finished
                    .status
                    .code()
                    .unwrap_or_else(|| 128 + finished.status.signal().unwrap_or_default());
                if !finished.status.success() {
                    status.info(format_args!(
                        " [!] --exec command ended with {}: the reply says so",
                        finished.describe()
                    ));
                }
                reply.headers = header(EXIT_CODE_HEADER, AMQPValue::LongInt(code));
                reply.body = finished.stdout;
            }
        }
        Ok(Outcome::Reply(reply))
    }

    fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(Error::Output)
    }
}

fn header(name: &str, value: AMQPValue) -> FieldTable {
    let mut headers = FieldTable::default();
    headers.insert(name.into(), value);
    headers
}

/// The N of a request: an integer from 0 to [`MAX_N`], surrounded by white space or not.
fn parse_request(body: &[u8]) -> std::result::Result<u32, String> {
    let text = String::from_utf8_lossy(body);
    let shown: String = match text.chars().count() {
        0..=40 => text.to_string(),
        _ => format!("{}...", text.chars().take(40).collect::<String>()),
    };
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| *n <= u64::from(MAX_N))
        .map(|n| n as u32)
        .ok_or_else(|| format!("'{shown}' is not an integer from 0 to {MAX_N}"))
}

/// The n-th Fibonacci number, computed as the tutorial does (iteratively), exactly.
pub fn fib(n: u32) -> BigUint {
    let (mut a, mut b) = (BigUint::ZERO, BigUint::from(1u32));
    for _ in 0..n {
        a += &b;
        std::mem::swap(&mut a, &mut b);
    }
    a
}

/// Why `rpc call` does not exit 0, from the first reply that failed.
enum Failure {
    /// A reply with `x-error`: the server could not answer.
    Refused { number: u64, reason: String },
    /// A reply with a non-zero `x-exit-code`.
    Exited(u8),
}

/// Prints the replies, in request order.
struct ReplyPrinter {
    out: Out,
    format: ReplyFormat,
    status: Status,
    failure: Option<Failure>,
}

impl Replies for ReplyPrinter {
    fn awaiting(&mut self, _number: u64, request: &[u8]) -> Result<()> {
        if self.format == ReplyFormat::Text {
            self.out
                .write_all(b" [x] Requesting fib(")
                .and_then(|()| self.out.write_all(request))
                .and_then(|()| self.out.write_all(b")\n"))
                .map_err(Error::Output)?;
        }
        Ok(())
    }

    fn replied(
        &mut self,
        number: u64,
        request: &[u8],
        reply: &Delivery,
        round_trip: Duration,
    ) -> Result<()> {
        let headers = reply.properties.headers().as_ref();
        let error = headers
            .and_then(|h| h.inner().get(ERROR_HEADER))
            .map(header_text);
        let exit_code = headers
            .and_then(|h| h.inner().get(EXIT_CODE_HEADER))
            .and_then(crate::message::header_int)
            .unwrap_or(0);
        match self.format {
            ReplyFormat::Text if error.is_some() => {}
            ReplyFormat::Text => write_received(
                &mut self.out,
                OutputFormat::Text,
                TextLine::Body(" [.] Got "),
                &Received::from(reply),
            )
            .map_err(Error::Output)?,
            ReplyFormat::Body => {
                let newline = !reply.data.ends_with(b"\n");
                self.out
                    .write_all(&reply.data)
                    .and_then(|()| match newline {
                        true => self.out.write_all(b"\n"),
                        false => Ok(()),
                    })
                    .map_err(Error::Output)?;
            }
            ReplyFormat::Json => {
                let mut json = to_json(&Received::from(reply));
                json["request"] = String::from_utf8_lossy(request).into_owned().into();
                json["round_trip_ms"] = (round_trip.as_secs_f64() * 1000.0).into();
                serde_json::to_writer(&mut self.out, &json).map_err(|e| Error::Output(e.into()))?;
                self.out.write_all(b"\n").map_err(Error::Output)?;
            }
        }
        if let Some(reason) = error {
            // The first failure ends up as the error; later ones are said as they come.
            match self.failure {
                None => self.failure = Some(Failure::Refused { number, reason }),
                Some(_) => self.status.warn(format_args!(
                    " [!] Request {number} ({}): {reason}",
                    String::from_utf8_lossy(request)
                )),
            }
        } else if exit_code != 0 {
            // An exit status a shell can see: 1 to 255 as they are, anything else as 1.
            let code = u8::try_from(exit_code)
                .ok()
                .filter(|c| *c != 0)
                .unwrap_or(1);
            self.failure.get_or_insert(Failure::Exited(code));
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(Error::Output)
    }
}

fn header_text(value: &AMQPValue) -> String {
    match value {
        AMQPValue::LongString(text) => String::from_utf8_lossy(text.as_bytes()).into_owned(),
        AMQPValue::ShortString(text) => text.to_string(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fib_is_exact() {
        let firsts: Vec<String> = (0..10).map(|n| fib(n).to_string()).collect();
        assert_eq!(
            firsts,
            ["0", "1", "1", "2", "3", "5", "8", "13", "21", "34"]
        );
        assert_eq!(fib(30).to_string(), "832040");
        assert_eq!(fib(100).to_string(), "354224848179261915075");
        assert_eq!(fib(MAX_N).to_string().len(), 20_899);
    }

    #[test]
    fn requests_are_integers_from_0_to_the_maximum() {
        assert_eq!(parse_request(b"30"), Ok(30));
        assert_eq!(parse_request(b" 7\n"), Ok(7));
        assert_eq!(parse_request(b"100000"), Ok(MAX_N));
        for bad in [
            &b""[..],
            b"-1",
            b"abc",
            b"100001",
            b"3.5",
            b"99999999999999999999999",
        ] {
            let reason = parse_request(bad).unwrap_err();
            assert!(
                reason.contains("is not an integer from 0 to 100000"),
                "{reason}"
            );
        }
        let long = parse_request(&[b'x'; 100]).unwrap_err();
        assert!(
            long.starts_with(&format!("'{}...'", "x".repeat(40))),
            "{long}"
        );
    }
}
