//! Benchmark baseline: the least a lapin consumer can do. Consumes COUNT messages from QUEUE
//! with prefetch PREFETCH, acking each one. Used by scripts/bench.
//! Usage: baseline_consume QUEUE COUNT PREFETCH

use futures_lite::StreamExt;
use lapin::{
    Connection, ConnectionProperties,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions},
    types::FieldTable,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: baseline_consume QUEUE COUNT PREFETCH";
    let queue = args.next().expect(usage);
    let count: u64 = args.next().expect(usage).parse()?;
    let prefetch: u16 = args.next().expect(usage).parse()?;
    let url = std::env::var("RMQLAB_URL").unwrap_or_else(|_| "amqp://127.0.0.1:5672/%2f".into());
    let connection = Connection::connect(&url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.as_str().into(), durable, FieldTable::default())
        .await?;
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
    let mut received = 0;
    while received < count {
        let delivery = consumer.next().await.expect("consumer ended")?;
        delivery.ack(BasicAckOptions::default()).await?;
        received += 1;
    }
    connection.close(200, "OK".into()).await?;
    Ok(())
}
