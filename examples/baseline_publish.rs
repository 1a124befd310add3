//! Benchmark baseline: the least a lapin publisher can do. Reads lines from stdin and publishes
//! them with 512 confirms in flight: persistent to a durable queue, or (`--exchange`) transient
//! to a fanout exchange, as `rmqlab pubsub emit` does. Used by scripts/bench.
//! Usage: baseline_publish QUEUE < lines
//!        baseline_publish --exchange EXCHANGE < lines

use lapin::{
    BasicProperties, Connection, ConnectionProperties, ExchangeKind,
    options::{
        BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueDeclareOptions,
    },
    types::FieldTable,
};
use std::{collections::VecDeque, io::BufRead};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: baseline_publish QUEUE | baseline_publish --exchange EXCHANGE";
    let mut args = std::env::args().skip(1);
    let first = args.next().expect(usage);
    let fanout = first == "--exchange";
    let name = if fanout {
        args.next().expect(usage)
    } else {
        first
    };
    let url = std::env::var("RMQLAB_URL").unwrap_or_else(|_| "amqp://127.0.0.1:5672/%2f".into());
    let connection = Connection::connect(&url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let (exchange, routing_key, properties) = if fanout {
        channel
            .exchange_declare(
                name.as_str().into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await?;
        (name.as_str(), "", BasicProperties::default())
    } else {
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .queue_declare(name.as_str().into(), durable, FieldTable::default())
            .await?;
        (
            "",
            name.as_str(),
            BasicProperties::default().with_delivery_mode(2),
        )
    };
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
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                line?.as_bytes(),
                properties.clone(),
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
