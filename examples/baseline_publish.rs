//! Benchmark baseline: the least a lapin publisher can do. Reads lines from stdin, publishes
//! them persistent to a durable queue with 512 confirms in flight. Used by scripts/bench.
//! Usage: baseline_publish QUEUE < lines

use lapin::{
    BasicProperties, Connection, ConnectionProperties,
    options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions},
    types::FieldTable,
};
use std::{collections::VecDeque, io::BufRead};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let queue = std::env::args()
        .nth(1)
        .expect("usage: baseline_publish QUEUE");
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
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut in_flight = VecDeque::with_capacity(512);
    for line in std::io::stdin().lock().lines() {
        if in_flight.len() == 512 {
            let confirm: lapin::PublisherConfirm = in_flight.pop_front().unwrap();
            assert!(confirm.await?.is_ack());
        }
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                line?.as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?;
        in_flight.push_back(confirm);
    }
    for confirm in in_flight {
        assert!(confirm.await?.is_ack());
    }
    connection.close(200, "OK".into()).await?;
    Ok(())
}
