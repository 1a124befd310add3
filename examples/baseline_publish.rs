//! Benchmark baseline: the least a lapin publisher can do. Reads lines from stdin and publishes
//! them with 512 confirms in flight: persistent to a durable queue (classic, or quorum with
//! `--quorum`), or (`--exchange`) transient to a fanout exchange, as `rmqlab pubsub emit` does.
//! Used by scripts/bench.
//! Usage: baseline_publish [--quorum] QUEUE < lines
//!        baseline_publish --exchange EXCHANGE < lines

mod baseline;

use baseline::Target;
use lapin::{
    BasicProperties,
    options::{BasicPublishOptions, ConfirmSelectOptions},
};
use std::{collections::VecDeque, io::BufRead};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: baseline_publish [--quorum] QUEUE | baseline_publish --exchange EXCHANGE";
    let target = Target::from_args(&mut std::env::args().skip(1), usage);
    let (connection, channel) = baseline::open(&target).await?;
    let (exchange, routing_key, properties) = match &target {
        Target::Queue { name, .. } => (
            "",
            name.as_str(),
            BasicProperties::default().with_delivery_mode(2),
        ),
        Target::Fanout(exchange) => (exchange.as_str(), "", BasicProperties::default()),
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
