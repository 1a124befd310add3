//! Where messages to publish come from: the command's words, or the lines of a file or stdin.
//!
//! Lines are read on a thread of their own in large blocks and handed over in batches, so the
//! publisher never waits on a read while the broker could be sent more.

use crate::{
    error::{Error, Result},
    message::{Message, MessageForm},
};
use std::{
    fs::File,
    io::{self, BufRead, BufReader, Read},
    path::Path,
    thread,
};
use tokio::sync::mpsc;

/// Lines handed over at once; a few batches are buffered ahead of the publisher.
const BATCH_LINES: usize = 256;
/// A batch is handed over once its bodies reach this size, however few its lines: memory is
/// bounded by bytes, not by lines, when lines are megabytes long.
const BATCH_BYTES: usize = 4 * 1024 * 1024;
const BATCHES_AHEAD: usize = 8;
const READ_BUFFER: usize = 256 * 1024;

pub type Batch = Vec<Message>;

/// Why the input stopped before its end.
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    /// Line `line` (counting from 1) is longer than `limit` bytes; it was not read to its end.
    TooLong {
        line: u64,
        limit: u64,
    },
    /// Line `line` is not a message in the input's format (`--input json`).
    NotAMessage {
        line: u64,
        reason: String,
    },
}

/// Messages arriving in order, in batches.
pub struct Messages {
    receiver: mpsc::Receiver<Result<Batch, ReadError>>,
    /// How to name the source in an error message.
    pub name: String,
    /// The input's size in bytes, when it is a regular file.
    pub size: Option<u64>,
}

impl Messages {
    /// One message, known up front.
    pub fn single(message: Message) -> Self {
        Messages::known(vec![message])
    }

    /// Messages with these bodies, known up front.
    pub fn all(bodies: Vec<Vec<u8>>) -> Self {
        Messages::known(bodies.into_iter().map(Message::from).collect())
    }

    fn known(messages: Batch) -> Self {
        let (sender, receiver) = mpsc::channel(1);
        // Cannot fail: the channel is new and has room for one.
        let _ = sender.try_send(Ok(messages));
        Messages {
            receiver,
            name: "the command line".into(),
            size: None,
        }
    }

    /// `count` messages whose bodies are their numbers from 0, as tutorial 7 publishes them;
    /// made on a thread of their own, ahead of the publisher, like lines read from a file.
    pub fn numbered(count: u64) -> Result<Self> {
        Messages::produced("the generated messages".into(), None, move |sender| {
            let mut next = 0;
            while next < count {
                let end = count.min(next + BATCH_LINES as u64);
                let batch = (next..end)
                    .map(|n| Message::from(n.to_string().into_bytes()))
                    .collect();
                if sender.blocking_send(Ok(batch)).is_err() {
                    return;
                }
                next = end;
            }
        })
    }

    /// Messages that `produce` sends in batches from a thread of its own, ahead of the
    /// publisher.
    fn produced(
        name: String,
        size: Option<u64>,
        produce: impl FnOnce(&mpsc::Sender<Result<Batch, ReadError>>) + Send + 'static,
    ) -> Result<Self> {
        let (sender, receiver) = mpsc::channel(BATCHES_AHEAD);
        thread::Builder::new()
            .name("rmqlab-input".into())
            .spawn(move || produce(&sender))
            .map_err(|source| Error::Input {
                path: name.clone(),
                source,
            })?;
        Ok(Messages {
            receiver,
            name,
            size,
        })
    }

    /// One message per line of `path` (`-` for stdin), each at most `limit` bytes. The file is
    /// opened now, so that a missing file is reported before anything is sent.
    pub fn lines_of(path: &Path, limit: u64) -> Result<Self> {
        Messages::read(path, limit, MessageForm::default())
    }

    /// One message per line of `path` (`-` for stdin), each line at most `limit` bytes, made
    /// by `form`.
    pub fn read(path: &Path, limit: u64, form: MessageForm) -> Result<Self> {
        let name = if path == Path::new("-") {
            "standard input".to_string()
        } else {
            path.display().to_string()
        };
        let mut size = None;
        let reader: Box<dyn Read + Send> = if path == Path::new("-") {
            Box::new(io::stdin())
        } else {
            let file = File::open(path).map_err(|source| Error::Input {
                path: name.clone(),
                source,
            })?;
            size = file
                .metadata()
                .ok()
                .filter(|metadata| metadata.is_file())
                .map(|metadata| metadata.len());
            Box::new(file)
        };
        Messages::produced(name, size, move |sender| {
            read_lines(
                BufReader::with_capacity(READ_BUFFER, reader),
                limit,
                &form,
                sender,
            )
        })
    }

    /// The next batch if one is ready now: `Ok(None)` means not yet; an empty batch means the
    /// input has ended.
    pub fn try_next(&mut self) -> std::result::Result<Option<Batch>, ReadError> {
        match self.receiver.try_recv() {
            Ok(batch) => batch.map(Some),
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => Ok(Some(Vec::new())),
        }
    }

    /// The next batch, waiting for it; an empty batch means the input has ended.
    pub async fn next(&mut self) -> std::result::Result<Batch, ReadError> {
        match self.receiver.recv().await {
            Some(batch) => batch,
            None => Ok(Vec::new()),
        }
    }

    /// The error to report for `error`, naming this input.
    pub fn error(&self, error: ReadError) -> Error {
        match error {
            ReadError::Io(source) => Error::Input {
                path: self.name.clone(),
                source,
            },
            ReadError::TooLong { line, limit } => Error::LineTooLong {
                path: self.name.clone(),
                line,
                limit,
            },
            ReadError::NotAMessage { line, reason } => Error::NotAMessage {
                path: self.name.clone(),
                line,
                reason,
            },
        }
    }
}

/// Splits the input into lines (without `\n` or `\r\n`), makes each a message by `form`, and
/// sends them in batches. A line longer than `limit` bytes is not read further, and a line that
/// is no message ends the input too: the lines before it are sent, then the error.
fn read_lines<R: Read>(
    mut reader: BufReader<R>,
    limit: u64,
    form: &MessageForm,
    sender: &mpsc::Sender<Result<Batch, ReadError>>,
) {
    let mut batch = Vec::with_capacity(BATCH_LINES);
    let mut batch_bytes = 0;
    let mut number = 0u64;
    let failure = loop {
        let mut line = Vec::new();
        // Room for the longest line allowed and its `\r\n`: reading stops one byte past it.
        match (&mut reader)
            .take(limit.saturating_add(3))
            .read_until(b'\n', &mut line)
        {
            Ok(0) => break None,
            Ok(_) => {
                number += 1;
                if line.last() == Some(&b'\n') {
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                }
                if line.len() as u64 > limit {
                    break Some(ReadError::TooLong {
                        line: number,
                        limit,
                    });
                }
                match form.line(line) {
                    Ok(message) => {
                        batch_bytes += message.body.len();
                        batch.push(message);
                    }
                    Err(reason) => {
                        break Some(ReadError::NotAMessage {
                            line: number,
                            reason,
                        });
                    }
                }
                // Hand over a full batch, or a partial one when no more input is buffered
                // (an interactive user typing lines sees each one sent at once).
                if batch.len() == BATCH_LINES
                    || batch_bytes >= BATCH_BYTES
                    || reader.buffer().is_empty()
                {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_LINES));
                    batch_bytes = 0;
                    if sender.blocking_send(Ok(full)).is_err() {
                        return;
                    }
                }
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => break Some(ReadError::Io(error)),
        }
    };
    if !batch.is_empty() && sender.blocking_send(Ok(batch)).is_err() {
        return;
    }
    if let Some(failure) = failure {
        let _ = sender.blocking_send(Err(failure));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines read with a limit, and the error that ended them, if any.
    fn read_with(input: &[u8], limit: u64) -> (Vec<Vec<u8>>, Option<ReadError>) {
        let (sender, mut receiver) = mpsc::channel(1000);
        read_lines(
            BufReader::with_capacity(7, input),
            limit,
            &MessageForm::default(),
            &sender,
        );
        drop(sender);
        let mut lines = Vec::new();
        while let Ok(batch) = receiver.try_recv() {
            match batch {
                Ok(batch) => lines.extend(batch.into_iter().map(|message| message.body)),
                Err(error) => return (lines, Some(error)),
            }
        }
        (lines, None)
    }

    fn all_lines(input: &[u8]) -> Vec<Vec<u8>> {
        let (lines, error) = read_with(input, 1 << 20);
        assert!(error.is_none(), "{error:?}");
        lines
    }

    #[test]
    fn a_line_past_the_limit_ends_the_input_after_the_lines_before_it() {
        let (lines, error) = read_with(b"abc\r\nabcd\nabcde\nnever", 4);
        assert_eq!(lines, vec![b"abc".to_vec(), b"abcd".to_vec()]);
        assert!(
            matches!(error, Some(ReadError::TooLong { line: 3, limit: 4 })),
            "{error:?}"
        );
    }

    #[test]
    fn an_endless_line_is_not_read_to_its_end() {
        // An input that never ends: the reader must stop on its own.
        let endless = io::repeat(0);
        let (sender, mut receiver) = mpsc::channel(10);
        read_lines(
            BufReader::new(endless),
            1024,
            &MessageForm::default(),
            &sender,
        );
        assert!(matches!(
            receiver.try_recv(),
            Ok(Err(ReadError::TooLong { line: 1, .. }))
        ));
    }

    #[test]
    fn lines_lose_their_terminators_only() {
        assert_eq!(
            all_lines(b"a\nb\r\n\nlast"),
            vec![b"a".to_vec(), b"b".to_vec(), b"".to_vec(), b"last".to_vec()]
        );
        assert_eq!(all_lines(b""), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn many_lines_arrive_in_order() {
        let input: String = (1..=1000).map(|i| format!("{i}\n")).collect();
        let lines = all_lines(input.as_bytes());
        assert_eq!(lines.len(), 1000);
        assert_eq!(lines[999], b"1000");
    }
}
