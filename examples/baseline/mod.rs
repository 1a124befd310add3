//! What the baseline publisher and consumer share: the connection, and what they declare.

use lapin::{
    Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};

/// Where the baseline publishes to or consumes from.
pub enum Target {
    /// A durable queue, through the default exchange: classic, or quorum (`--quorum`).
    Queue { name: String, quorum: bool },
    /// A fanout exchange, as `rmqlab pubsub` uses.
    Fanout(String),
}

impl Target {
    /// `[--quorum] NAME` or `--exchange NAME` from the command line; the rest stays in `args`.
    pub fn from_args(args: &mut impl Iterator<Item = String>, usage: &str) -> Target {
        match args.next().expect(usage) {
            flag if flag == "--exchange" => Target::Fanout(args.next().expect(usage)),
            flag if flag == "--quorum" => Target::Queue {
                name: args.next().expect(usage),
                quorum: true,
            },
            name => Target::Queue {
                name,
                quorum: false,
            },
        }
    }
}

/// Connects to RMQLAB_URL, opens a channel and declares the target.
pub async fn open(target: &Target) -> lapin::Result<(Connection, Channel)> {
    let url = std::env::var("RMQLAB_URL").unwrap_or_else(|_| "amqp://127.0.0.1:5672/%2f".into());
    let connection = Connection::connect(&url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    match target {
        Target::Queue { name, quorum } => {
            let durable = QueueDeclareOptions {
                durable: true,
                ..Default::default()
            };
            let mut arguments = FieldTable::default();
            if *quorum {
                arguments.insert(
                    "x-queue-type".into(),
                    AMQPValue::LongString("quorum".into()),
                );
            }
            channel
                .queue_declare(name.as_str().into(), durable, arguments)
                .await?;
        }
        Target::Fanout(exchange) => {
            channel
                .exchange_declare(
                    exchange.as_str().into(),
                    ExchangeKind::Fanout,
                    ExchangeDeclareOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
    }
    Ok((connection, channel))
}
