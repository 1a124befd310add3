//! Benchmark baseline: the least a lapin consumer can do. Consumes COUNT messages with prefetch
//! PREFETCH, acking each one: from a durable QUEUE, or (`--exchange`) through an exclusive
//! server-named queue bound to a fanout exchange, as `rmqlab pubsub listen` does. Prints
//! `ready` on stdout once consuming. Used by scripts/bench.
//! Usage: baseline_consume QUEUE COUNT PREFETCH
//!        baseline_consume --exchange EXCHANGE COUNT PREFETCH

use futures_lite::StreamExt;
use lapin::{
    Connection, ConnectionProperties, ExchangeKind,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ExchangeDeclareOptions,
        QueueBindOptions, QueueDeclareOptions,
    },
    types::FieldTable,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: baseline_consume [--exchange] NAME COUNT PREFETCH";
    let mut args = std::env::args().skip(1).peekable();
    let fanout = args.next_if_eq("--exchange").is_some();
    let name = args.next().expect(usage);
    let count: u64 = args.next().expect(usage).parse()?;
    let prefetch: u16 = args.next().expect(usage).parse()?;
    let url = std::env::var("RMQLAB_URL").unwrap_or_else(|_| "amqp://127.0.0.1:5672/%2f".into());
    let connection = Connection::connect(&url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let queue = if fanout {
        channel
            .exchange_declare(
                name.as_str().into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let exclusive = QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        };
        let queue = channel
            .queue_declare("".into(), exclusive, FieldTable::default())
            .await?
            .name()
            .to_string();
        channel
            .queue_bind(
                queue.as_str().into(),
                name.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        queue
    } else {
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .queue_declare(name.as_str().into(), durable, FieldTable::default())
            .await?;
        name
    };
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "baseline".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    println!("ready");
    let mut received = 0;
    while received < count {
        let delivery = consumer.next().await.expect("consumer ended")?;
        delivery.ack(BasicAckOptions::default()).await?;
        received += 1;
    }
    connection.close(200, "OK".into()).await?;
    Ok(())
}
