//! Benchmark baseline: the least a lapin consumer can do. Consumes COUNT messages with prefetch
//! PREFETCH, acking each one: from a durable QUEUE (declared classic, or quorum with `--quorum`),
//! or (`--exchange`) through an exclusive server-named queue bound to a fanout exchange, as
//! `rmqlab pubsub listen` does. Prints `ready` on stdout once consuming. Used by scripts/bench.
//! Usage: baseline_consume [--quorum] QUEUE COUNT PREFETCH
//!        baseline_consume --exchange EXCHANGE COUNT PREFETCH

mod baseline;

use baseline::Target;
use futures_lite::StreamExt;
use lapin::{
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions,
        QueueDeclareOptions,
    },
    types::FieldTable,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: baseline_consume [--quorum | --exchange] NAME COUNT PREFETCH";
    let mut args = std::env::args().skip(1);
    let target = Target::from_args(&mut args, usage);
    let count: u64 = args.next().expect(usage).parse()?;
    let prefetch: u16 = args.next().expect(usage).parse()?;
    let (connection, channel) = baseline::open(&target).await?;
    let queue = match target {
        Target::Queue { name, .. } => name,
        Target::Fanout(exchange) => {
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
                    exchange.as_str().into(),
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            queue
        }
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
