//! What a command needs on the broker, as values: exchanges, a queue, bindings. Every command
//! builds a [`Topology`]; this file alone turns it into declarations, for lapin and for the
//! one-message path alike, and decides what a refused declaration means.
//!
//! The rule: what rmqlab describes is created when it is absent; what exists is used as it is.
//! A named queue is declared as described (durable, with its type) and, when the broker refuses
//! that (406: it exists with other properties), declared passively instead, unless the user chose
//! the queue type explicitly. An exchange of the described kind is used whatever its durability;
//! an exchange of another kind is an error, since it would route differently.

use super::{
    Session,
    events::{Event, Observer},
};
pub use crate::error::ObjectKind;
use crate::error::{Error, Result, amqp_error, describe_mismatch};
use amq_protocol::protocol::{AMQPClass, exchange, queue};
use lapin::{
    ExchangeKind as LapinExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    protocol::{AMQPErrorKind, AMQPSoftError},
    types::{AMQPValue, FieldTable},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
}

impl ExchangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub name: String,
    pub kind: ExchangeKind,
    /// Only when rmqlab creates it: an existing exchange keeps its own durability.
    pub durable: bool,
    /// Deleted by the broker once its last binding goes: a temporary exchange, gone with the
    /// exclusive queue bound to it.
    pub auto_delete: bool,
}

impl Exchange {
    /// An exchange as the tutorials declare theirs: non-durable, so that the tutorials' own
    /// programs can share it.
    pub fn tutorial(name: &str, kind: ExchangeKind) -> Exchange {
        Exchange {
            name: name.to_string(),
            kind,
            durable: false,
            auto_delete: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    Classic,
    Quorum,
}

impl QueueType {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Queue {
    /// A durable queue with a name: created with `queue_type` when absent, used as it is when
    /// present, unless the type was given explicitly and differs.
    Named {
        name: String,
        queue_type: QueueType,
        explicit_type: bool,
    },
    /// A classic queue named by the broker and exclusive to this connection: deleted when it
    /// closes.
    Exclusive,
}

/// A binding of the topology's queue to an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub exchange: String,
    pub key: String,
}

/// Everything one command declares, in the order it is declared: exchanges, the queue, then its
/// bindings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    pub exchanges: Vec<Exchange>,
    pub queue: Option<Queue>,
    pub bindings: Vec<Binding>,
}

/// The outcome of declaring a topology.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Declared {
    /// The queue's name (the broker's choice for an exclusive queue).
    pub queue: Option<String>,
    /// An object was used as it is after a refusal: the channel was opened again.
    pub adopted: bool,
    /// A queue whose type the user gave explicitly, adopted after a refusal that named another
    /// difference first (the broker names only one): its type is still to be checked, with the
    /// type asked for and the broker's reason.
    pub type_unchecked: Option<(String, QueueType, String)>,
}

/// One object of a topology.
#[derive(Debug, Clone, Copy)]
pub enum Object<'a> {
    Exchange(&'a Exchange),
    Queue(&'a Queue),
    Binding(&'a Binding),
}

/// What a refused declaration means.
#[derive(Debug)]
pub enum Refusal {
    /// The object may exist with other properties (or without the user's permission to declare
    /// it): use it as it is, when a passive declaration finds it; the broker's reason. When it
    /// does not, the error is `otherwise`, or the passive declaration's own.
    Adopt {
        reason: String,
        otherwise: Option<Error>,
    },
    /// A definite error.
    Fail(Error),
}

impl Topology {
    /// A durable named queue and nothing else (tutorials 1 and 2).
    pub fn queue(queue: Queue) -> Topology {
        Topology {
            queue: Some(queue),
            ..Topology::default()
        }
    }

    /// An exchange and nothing else (a publisher to an exchange).
    pub fn exchange(exchange: Exchange) -> Topology {
        Topology {
            exchanges: vec![exchange],
            ..Topology::default()
        }
    }

    /// The objects in declaration order.
    pub fn objects(&self) -> Vec<Object<'_>> {
        self.exchanges
            .iter()
            .map(Object::Exchange)
            .chain(self.queue.iter().map(Object::Queue))
            .chain(self.bindings.iter().map(Object::Binding))
            .collect()
    }

    /// The declaration methods, for a topology whose queue (if any) has a name: the one-message
    /// path sends them as frames.
    pub fn methods(&self) -> Option<Vec<AMQPClass>> {
        let queue = match &self.queue {
            Some(Queue::Exclusive) => return None,
            Some(Queue::Named { name, .. }) => name.as_str(),
            None => "",
        };
        Some(
            self.objects()
                .into_iter()
                .map(|object| object.method(queue, false))
                .collect(),
        )
    }

    /// Declares every object over lapin, adopting what exists (see the module's rule). Each
    /// declaration and adoption is reported to `observer`.
    pub async fn declare(
        &self,
        session: &mut Session,
        observer: &dyn Observer,
    ) -> Result<Declared> {
        let mut declared = Declared::default();
        for object in self.objects() {
            let queue = declared.queue.as_deref().unwrap_or_default();
            match apply(session, object.method(queue, false)).await {
                Ok(name) => {
                    if let Object::Queue(_) = object {
                        declared.queue = name;
                    }
                    object.report_declared(declared.queue.as_deref(), observer);
                }
                Err(source) => match object.refusal(source) {
                    Refusal::Fail(error) => return Err(error),
                    Refusal::Adopt { reason, otherwise } => {
                        // A refused declaration closes the channel.
                        session.reopen_channel().await?;
                        let name = apply(session, object.method(queue, true))
                            .await
                            .map_err(|source| otherwise.unwrap_or_else(|| object.error(source)))?;
                        if let Object::Queue(_) = object {
                            declared.queue = name;
                        }
                        declared.adopted = true;
                        if let Object::Queue(Queue::Named {
                            name,
                            queue_type,
                            explicit_type: true,
                        }) = object
                        {
                            declared.type_unchecked =
                                Some((name.clone(), *queue_type, reason.clone()));
                        }
                        if let Some((kind, name)) = object.identity() {
                            observer.observe(Event::Adopted {
                                kind,
                                name,
                                reason: &reason,
                            });
                        }
                    }
                },
            }
        }
        Ok(declared)
    }
}

impl Object<'_> {
    /// The AMQP method that declares (or, `passive`, only checks) this object. `queue` names the
    /// topology's queue, for a binding.
    pub fn method(&self, queue: &str, passive: bool) -> AMQPClass {
        match *self {
            Object::Exchange(exchange) => {
                AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
                    exchange: exchange.name.as_str().into(),
                    kind: exchange.kind.as_str().into(),
                    passive,
                    durable: exchange.durable,
                    auto_delete: exchange.auto_delete,
                    internal: false,
                    nowait: false,
                    arguments: FieldTable::default(),
                }))
            }
            Object::Queue(Queue::Named {
                name, queue_type, ..
            }) => AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: name.as_str().into(),
                passive,
                durable: true,
                exclusive: false,
                auto_delete: false,
                nowait: false,
                arguments: queue_arguments(*queue_type),
            })),
            Object::Queue(Queue::Exclusive) => {
                AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                    queue: "".into(),
                    passive,
                    durable: false,
                    exclusive: true,
                    auto_delete: false,
                    nowait: false,
                    arguments: FieldTable::default(),
                }))
            }
            Object::Binding(binding) => AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
                queue: queue.into(),
                exchange: binding.exchange.as_str().into(),
                routing_key: binding.key.as_str().into(),
                nowait: false,
                arguments: FieldTable::default(),
            })),
        }
    }

    /// The kind and name of a declared object (a binding has none).
    fn identity(&self) -> Option<(ObjectKind, &str)> {
        match self {
            Object::Exchange(exchange) => Some((ObjectKind::Exchange, &exchange.name)),
            Object::Queue(Queue::Named { name, .. }) => Some((ObjectKind::Queue, name)),
            Object::Queue(Queue::Exclusive) => Some((ObjectKind::Queue, "")),
            Object::Binding(_) => None,
        }
    }

    fn report_declared(&self, queue: Option<&str>, observer: &dyn Observer) {
        let queue = queue.unwrap_or_default();
        let event = match self {
            Object::Exchange(exchange) => Event::Declared {
                kind: ObjectKind::Exchange,
                name: &exchange.name,
                description: exchange.kind.as_str(),
            },
            Object::Queue(Queue::Named { queue_type, .. }) => Event::Declared {
                kind: ObjectKind::Queue,
                name: queue,
                description: match queue_type {
                    QueueType::Classic => "durable classic",
                    QueueType::Quorum => "durable quorum",
                },
            },
            Object::Queue(Queue::Exclusive) => Event::Declared {
                kind: ObjectKind::Queue,
                name: queue,
                description: "exclusive",
            },
            Object::Binding(binding) => Event::Bound {
                queue,
                exchange: &binding.exchange,
                key: &binding.key,
            },
        };
        observer.observe(event);
    }

    /// What the broker's refusal of this object's declaration means.
    pub fn refusal(&self, source: lapin::Error) -> Refusal {
        let Some((kind, reason)) =
            amqp_error(&source).map(|amqp| (amqp.kind().clone(), amqp.get_message().to_string()))
        else {
            return Refusal::Fail(self.error(source));
        };
        let declared = matches!(
            self,
            Object::Exchange(_) | Object::Queue(Queue::Named { .. })
        );
        if kind == AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) && declared {
            // No configure permission: a passive declaration needs none, so an object that
            // exists can still be used; one that does not is this error.
            return Refusal::Adopt {
                reason,
                otherwise: Some(self.error(source)),
            };
        }
        if kind != AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED) {
            return Refusal::Fail(self.error(source));
        }
        let adopt = match self {
            // Another kind of exchange routes differently: using it would mislead.
            Object::Exchange(_) => !reason.contains("inequivalent arg 'type'"),
            // Only an explicit type that the queue does not have is an error; other arguments
            // (a length limit, a TTL...) are the queue's own.
            Object::Queue(Queue::Named { explicit_type, .. }) => {
                !(*explicit_type && reason.contains("inequivalent arg 'x-queue-type'"))
            }
            Object::Queue(Queue::Exclusive) | Object::Binding(_) => false,
        };
        if adopt {
            return Refusal::Adopt {
                reason,
                otherwise: None,
            };
        }
        Refusal::Fail(match self.identity() {
            Some((kind, name)) => Error::Mismatch {
                kind,
                name: name.to_string(),
                difference: describe_mismatch(&reason),
                source: Box::new(source),
            },
            None => self.error(source),
        })
    }

    /// A failed declaration, with what it was about.
    fn error(&self, source: lapin::Error) -> Error {
        let context = match self {
            Object::Exchange(exchange) => format!("cannot declare exchange '{}'", exchange.name),
            Object::Queue(Queue::Named { name, .. }) => format!("cannot declare queue '{name}'"),
            Object::Queue(Queue::Exclusive) => "cannot declare an exclusive queue".into(),
            Object::Binding(binding) => format!(
                "cannot bind the queue to exchange '{}' with key '{}'",
                binding.exchange, binding.key
            ),
        };
        Error::broker(context)(source)
    }
}

/// Sends one declaration method through lapin; a queue declaration returns the queue's name.
async fn apply(
    session: &Session,
    method: AMQPClass,
) -> std::result::Result<Option<String>, lapin::Error> {
    let channel = &session.channel;
    match method {
        AMQPClass::Exchange(exchange::AMQPMethod::Declare(declare)) => {
            let kind = match declare.kind.as_str() {
                "direct" => LapinExchangeKind::Direct,
                "fanout" => LapinExchangeKind::Fanout,
                "topic" => LapinExchangeKind::Topic,
                other => LapinExchangeKind::Custom(other.to_string()),
            };
            let options = ExchangeDeclareOptions {
                passive: declare.passive,
                durable: declare.durable,
                auto_delete: declare.auto_delete,
                internal: declare.internal,
                nowait: declare.nowait,
            };
            channel
                .exchange_declare(declare.exchange, kind, options, declare.arguments)
                .await
                .map(|()| None)
        }
        AMQPClass::Queue(queue::AMQPMethod::Declare(declare)) => {
            let options = QueueDeclareOptions {
                passive: declare.passive,
                durable: declare.durable,
                exclusive: declare.exclusive,
                auto_delete: declare.auto_delete,
                nowait: declare.nowait,
            };
            channel
                .queue_declare(declare.queue, options, declare.arguments)
                .await
                .map(|queue| Some(queue.name().to_string()))
        }
        AMQPClass::Queue(queue::AMQPMethod::Bind(bind)) => {
            let options = QueueBindOptions {
                nowait: bind.nowait,
            };
            channel
                .queue_bind(
                    bind.queue,
                    bind.exchange,
                    bind.routing_key,
                    options,
                    bind.arguments,
                )
                .await
                .map(|()| None)
        }
        other => unreachable!("a topology declares exchanges, queues and bindings only: {other:?}"),
    }
}

/// The arguments a queue of this type is created with.
fn queue_arguments(queue_type: QueueType) -> FieldTable {
    let mut arguments = FieldTable::default();
    if queue_type == QueueType::Quorum {
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
    }
    arguments
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::protocol::AMQPError;

    fn refused(code: u16, text: &str) -> lapin::Error {
        lapin::ErrorKind::ProtocolError(AMQPError::from_id(code, text.into()).unwrap()).into()
    }

    fn named(explicit_type: bool) -> Queue {
        Queue::Named {
            name: "hello".into(),
            queue_type: QueueType::Quorum,
            explicit_type,
        }
    }

    const TYPE_DIFFERS: &str = "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue \
        'hello' in vhost '/': received the value 'quorum' of type 'longstr' but current is none";

    #[test]
    fn an_existing_queue_is_adopted_unless_the_type_was_explicit() {
        let implicit = named(false);
        match Object::Queue(&implicit).refusal(refused(406, TYPE_DIFFERS)) {
            Refusal::Adopt { reason, .. } => assert!(reason.contains("x-queue-type"), "{reason}"),
            Refusal::Fail(error) => panic!("not adopted: {error}"),
        }
        let explicit = named(true);
        match Object::Queue(&explicit).refusal(refused(406, TYPE_DIFFERS)) {
            Refusal::Fail(Error::Mismatch { kind, name, .. }) => {
                assert_eq!((kind, name.as_str()), (ObjectKind::Queue, "hello"));
            }
            other => panic!("expected a mismatch, got {other:?}"),
        }
    }

    #[test]
    fn an_exchange_of_another_kind_is_an_error_and_other_durability_is_adopted() {
        let logs = Exchange::tutorial("logs", ExchangeKind::Fanout);
        let kind = "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'logs' in vhost \
            '/': received 'fanout' but current is 'direct'";
        assert!(matches!(
            Object::Exchange(&logs).refusal(refused(406, kind)),
            Refusal::Fail(Error::Mismatch { .. })
        ));
        let durable = "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange 'logs' in \
            vhost '/': received 'false' but current is 'true'";
        assert!(matches!(
            Object::Exchange(&logs).refusal(refused(406, durable)),
            Refusal::Adopt { .. }
        ));
    }

    #[test]
    fn an_explicit_type_the_queue_has_adopts_its_other_arguments() {
        let length = "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'hello' in \
            vhost '/': received none but current is the value '5' of type 'long'";
        assert!(matches!(
            Object::Queue(&named(true)).refusal(refused(406, length)),
            Refusal::Adopt {
                otherwise: None,
                ..
            }
        ));
    }

    #[test]
    fn no_configure_permission_tries_the_object_as_it_is_else_is_that_error() {
        let queue = named(false);
        assert!(matches!(
            Object::Queue(&queue).refusal(refused(403, "ACCESS_REFUSED - no access")),
            Refusal::Adopt {
                otherwise: Some(Error::Broker { .. }),
                ..
            }
        ));
        let binding = Binding {
            exchange: "logs".into(),
            key: String::new(),
        };
        assert!(matches!(
            Object::Binding(&binding).refusal(refused(403, "ACCESS_REFUSED - no access")),
            Refusal::Fail(Error::Broker { .. })
        ));
    }

    #[test]
    fn quorum_queues_carry_their_type_and_exclusive_queues_have_no_oneshot_methods() {
        let topology = Topology::queue(named(false));
        let methods = topology.methods().unwrap();
        let AMQPClass::Queue(queue::AMQPMethod::Declare(declare)) = &methods[0] else {
            panic!("{methods:?}");
        };
        assert!(declare.durable && !declare.exclusive);
        assert_eq!(
            declare.arguments.inner().get("x-queue-type"),
            Some(&AMQPValue::LongString("quorum".into()))
        );
        let listener = Topology {
            queue: Some(Queue::Exclusive),
            ..Topology::default()
        };
        assert!(listener.methods().is_none());
    }
}
