//! rmqlab against a live broker, in one test binary with a module per area (see the `mod`
//! lines below). Filter by module: `cargo test --test live queues::`.
//!
//! The broker under test is chosen by the environment (see the harness, `tests/common/mod.rs`):
//! `RMQLAB_TEST_URL`, `RMQLAB_TEST_API_URL` and `RMQLAB_TEST_CTL`; unset, the local node on
//! 127.0.0.1:5672 (API 15672) and `rabbitmqctl`. For example, against a second node:
//!
//! ```sh
//! RMQLAB_TEST_URL=amqp://guest:guest@127.0.0.1:5741/%2f \
//! RMQLAB_TEST_API_URL=http://127.0.0.1:15741 \
//! RMQLAB_TEST_CTL='rabbitmqctl -n rmq4@localhost' cargo test --test live
//! ```

#[path = "../common/mod.rs"]
mod common;

mod broker;
mod completion;
mod config;
mod confirms;
mod declarations;
mod hardening;
mod messages;
mod publisher;
mod pubsub;
mod queues;
mod routing;
mod rpc;
mod stream;
mod terminal;
mod toolkit;
mod topics;
mod urls;
mod worker;
