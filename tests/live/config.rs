//! Named brokers against the live broker: a `[broker.NAME]` section is what the AMQP commands
//! and the management API connect to, over the connection variables of the environment, and
//! under the options of the command line. No password is ever shown.

use crate::common::{
    TestQueue, api_base, assert_code, assert_hidden, broker, broker_address, broker_url,
    eventually, rmqlab, scratch_dir, text,
};
use std::{fs, os::unix::fs::PermissionsExt, path::PathBuf, process::Output, time::Duration};

/// The password of the unreachable first URL of the section: never to be shown.
const SECRET: &str = "Sekr1t-config-pw";

/// Where nothing listens: what RMQLAB_URL and RMQLAB_API_URL point at in these tests, so that
/// a command that followed them instead of the section would fail.
const NOWHERE: &str = "amqp://guest:Sekr1t-config-pw@127.0.0.1:1/%2f";
const API_NOWHERE: &str = "http://guest:Sekr1t-config-pw@127.0.0.1:1/";

/// A config file (0600) with a section `live`: an unreachable node first (with a password of its
/// own), then the broker under test without credentials or vhost (the section's user and
/// password give them), and the API of the broker under test.
fn config_file(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("config.toml");
    let content = format!(
        "[broker.live]\n\
         urls = [\"amqp://guest:{SECRET}@127.0.0.1:1\", \"amqp://{}\"]\n\
         user = \"guest\"\n\
         password = \"guest\"\n\
         vhost = \"/\"\n\
         api_url = \"{}\"\n\
         connect_timeout = \"5s\"\n\
         \n\
         [broker.nowhere]\n\
         url = \"amqp://guest:{SECRET}@127.0.0.1:1/%2f\"\n",
        broker_address(),
        api_base(),
    );
    fs::write(&path, content).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// rmqlab with the environment pointing nowhere, so that only the section can connect.
fn with_config(path: &PathBuf, args: &[&str]) -> Output {
    rmqlab()
        .env("RMQLAB_URL", NOWHERE)
        .env("RMQLAB_API_URL", API_NOWHERE)
        .arg("--config")
        .arg(path)
        .args(args)
        .output()
        .unwrap()
}

/// Neither the unreachable node's password nor the broker's (`guest`, also the user name,
/// shows as `guest:guest` in a URL) is shown.
fn assert_no_password(output: &Output) {
    assert_hidden(output, SECRET);
    assert_hidden(output, "guest:guest");
}

#[test]
fn a_section_is_what_amqp_commands_and_the_api_connect_to_over_the_environment() {
    let dir = scratch_dir();
    let path = config_file(&dir);
    let q = TestQueue::new("config-section");
    let output = with_config(
        &path,
        &[
            "--broker",
            "live",
            "hello",
            "send",
            "--queue",
            q.name(),
            "via the section",
        ],
    );
    assert_code(&output, 0);
    assert_eq!(text(&output.stdout), " [x] Sent 'via the section'\n");
    assert_no_password(&output);
    assert_eq!(broker::ready(q.name()), 1);

    // The management API of the section, not RMQLAB_API_URL (which leads nowhere).
    eventually(
        Duration::from_secs(30),
        "queues list shows the message",
        || {
            let output = with_config(
                &path,
                &[
                    "--broker",
                    "live",
                    "queues",
                    "list",
                    "--filter",
                    &format!("^{}$", regex_escape(q.name())),
                    "-o",
                    "tsv",
                    "--no-headers",
                ],
            );
            assert_code(&output, 0);
            assert_no_password(&output);
            // The section's vhost is the one listed: no vhost column.
            text(&output.stdout) == format!("{}\t1\t0\t0\n", q.name())
        },
    );

    let output = with_config(
        &path,
        &[
            "--broker",
            "live",
            "hello",
            "recv",
            "--queue",
            q.name(),
            "--count",
            "1",
        ],
    );
    assert_code(&output, 0);
    assert_eq!(text(&output.stdout), " [x] Received via the section\n");
    assert_no_password(&output);
    assert_eq!(broker::ready(q.name()), 0);
}

/// Queue names of the tests hold dots: a --filter matches them literally.
fn regex_escape(name: &str) -> String {
    name.replace('.', "\\.")
}

#[test]
fn an_option_beats_the_section() {
    let dir = scratch_dir();
    let path = config_file(&dir);
    let q = TestQueue::new("config-flag");
    // The section `nowhere` alone cannot connect...
    let output = with_config(
        &path,
        &["--broker", "nowhere", "hello", "send", "--queue", q.name()],
    );
    assert_code(&output, 69);
    assert!(
        text(&output.stderr).contains("127.0.0.1:1"),
        "{}",
        text(&output.stderr)
    );
    assert_no_password(&output);
    // ...--url on the command line replaces its URLs.
    let output = with_config(
        &path,
        &[
            "--broker",
            "nowhere",
            "--url",
            &broker_url(),
            "hello",
            "send",
            "--queue",
            q.name(),
            "flag",
        ],
    );
    assert_code(&output, 0);
    assert_no_password(&output);
    assert_eq!(broker::get(q.name()).unwrap().data, b"flag");
}

#[test]
fn the_broker_variable_picks_the_section_and_an_address_variable_with_it_is_refused() {
    let dir = scratch_dir();
    let path = config_file(&dir);
    let q = TestQueue::new("config-env");
    let send = |with_url: bool| {
        let mut command = rmqlab();
        command
            .env("RMQLAB_CONFIG", &path)
            .env("RMQLAB_BROKER", "live")
            .env_remove("RMQLAB_API_URL");
        match with_url {
            true => command.env("RMQLAB_URL", NOWHERE),
            false => command.env_remove("RMQLAB_URL"),
        };
        command
            .args(["hello", "send", "--queue", q.name(), "env"])
            .output()
            .unwrap()
    };
    let output = send(true);
    assert_code(&output, 2);
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with(
            "rmqlab: error: RMQLAB_BROKER=live and RMQLAB_URL are both set in the environment"
        ),
        "{stderr}"
    );
    assert_no_password(&output);
    assert!(!broker::exists(q.name()), "nothing may be sent");
    let output = send(false);
    assert_code(&output, 0);
    assert_no_password(&output);
    assert_eq!(broker::get(q.name()).unwrap().data, b"env");
}
