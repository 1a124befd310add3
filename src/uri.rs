//! The broker address given by `--url`: parsed once, shown only with its password masked.

use lapin::uri::{AMQPScheme, AMQPUri};
use std::{
    fmt,
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};
use url::Url;

/// The default broker: RabbitMQ's out-of-the-box user on this machine, default vhost `/`.
pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// What a vhost's name is percent-encoded with in a URI's path (`/` is `%2F`).
const VHOST: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// What replaces a password wherever a URI is shown.
const MASK: &str = "****";

/// A parsed AMQP URI together with the form of it that is safe to print.
#[derive(Clone, Debug)]
pub struct BrokerUrl {
    uri: AMQPUri,
    shown: String,
}

/// Why `--url` was not accepted. Its text never contains the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidUrl {
    /// Which option it was: "broker URI" or "management API URL".
    pub what: &'static str,
    /// The input with its password masked, when its shape allowed finding the password.
    pub shown: Option<String>,
    /// Which item of a list it was ("URL 2 of 3 in RMQLAB_URL"); `None` for a single URL.
    pub item: Option<String>,
    pub reason: String,
    /// A `/`, `?` or `#` in the user name or password, which ends that part of a URL unless
    /// percent-encoded: the likely cause.
    pub unencoded: Option<char>,
}

impl InvalidUrl {
    /// An error about `raw` whose text shows neither `raw` nor its password.
    pub fn new(what: &'static str, raw: &str, reason: &str) -> Self {
        InvalidUrl {
            what,
            shown: mask_password(raw),
            item: None,
            reason: scrub(reason, raw),
            unencoded: userinfo_of(raw)
                .and_then(|userinfo| userinfo.chars().find(|c| "/?#".contains(*c))),
        }
    }

    /// How to write the character that ended the user name or password early.
    pub fn hint(&self) -> Option<String> {
        let unencoded = self.unencoded?;
        Some(format!(
            "percent-encode a '{unencoded}' in the user name or password: write it %{:02X}",
            u32::from(unencoded)
        ))
    }
}

impl fmt::Display for InvalidUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}", self.what)?;
        if let Some(shown) = &self.shown {
            write!(f, " '{shown}'")?;
        }
        if let Some(item) = &self.item {
            write!(f, " ({item})")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// The first segment of a URL's raw path that is `.` or `..` once percent-decoded (URLs resolve
/// those as path steps, so the parsed URL no longer holds them).
fn dot_segment(raw: &str) -> Option<String> {
    let after_scheme = &raw[raw.find("://")? + 3..];
    let path = &after_scheme[after_scheme.find(['/', '?', '#'])?..];
    let path = path.strip_prefix('/')?;
    let path = &path[..path.find(['?', '#']).unwrap_or(path.len())];
    path.split('/')
        .map(|segment| percent_encoding::percent_decode_str(segment).decode_utf8_lossy())
        .find(|segment| segment == "." || segment == "..")
        .map(|segment| segment.into_owned())
}

impl BrokerUrl {
    pub fn parse(raw: &str) -> Result<Self, InvalidUrl> {
        let invalid = |reason: String| InvalidUrl::new("broker URI", raw, &reason);
        let url = Url::parse(raw).map_err(|e| invalid(e.to_string()))?;
        if url.scheme() != "amqp" && url.scheme() != "amqps" {
            return Err(invalid(format!(
                "unknown scheme '{}': use amqp:// or amqps://",
                url.scheme()
            )));
        }
        if url.cannot_be_a_base() || url.host_str().is_none_or(str::is_empty) {
            return Err(invalid(
                "expected amqp://[user[:password]@]host[:port][/vhost]".into(),
            ));
        }
        if let Some(step) = dot_segment(raw) {
            // The URL has already dropped it: AMQPUri would see another vhost (or none).
            return Err(invalid(format!(
                "a vhost named '{step}' cannot be written in a URI: URLs read '{step}' \
                 (encoded or not) as a step in the path"
            )));
        }
        let mut uri = AMQPUri::from_str(raw).map_err(invalid)?;
        if uri.vhost.is_empty() {
            return Err(invalid(
                "the vhost (the URI's path) is empty: write the default vhost '/' as %2f \
                 (amqp://host:5672/%2f), or leave the path out"
                    .into(),
            ));
        }
        crate::cli::short_string(&uri.vhost)
            .map_err(|reason| invalid(format!("the vhost is too long: {reason}")))?;
        // amq-protocol takes the host from `Url::domain()`, which is empty for IP addresses and
        // would silently send `amqp://10.0.0.1` to localhost; the URL's host is the right one.
        let host = url.host_str().unwrap_or_default();
        uri.authority.host = host.trim_start_matches('[').trim_end_matches(']').into();

        let mut shown = url.clone();
        if shown.password().is_some() {
            // Setting a password only fails on URLs without a host, excluded above.
            let _ = shown.set_password(Some(MASK));
        }
        Ok(BrokerUrl {
            uri,
            shown: shown.to_string(),
        })
    }

    pub fn amqp_uri(&self) -> &AMQPUri {
        &self.uri
    }

    pub fn user(&self) -> &str {
        &self.uri.authority.userinfo.username
    }

    /// The password, for authenticating only: never print it.
    pub fn password(&self) -> &str {
        &self.uri.authority.userinfo.password
    }

    pub fn vhost(&self) -> &str {
        &self.uri.vhost
    }

    /// The same broker and credentials, another vhost.
    pub fn with_vhost(&self, vhost: &str) -> BrokerUrl {
        let mut uri = self.uri.clone();
        uri.vhost = vhost.to_string();
        let shown = match Url::parse(&self.shown) {
            Ok(mut shown) => {
                shown.set_path(&percent_encoding::utf8_percent_encode(vhost, VHOST).to_string());
                shown.to_string()
            }
            Err(_) => self.shown.clone(),
        };
        BrokerUrl { uri, shown }
    }

    pub fn host(&self) -> &str {
        &self.uri.authority.host
    }

    pub fn is_tls(&self) -> bool {
        self.uri.scheme == AMQPScheme::AMQPS
    }

    /// Whether the host is this machine (RabbitMQ lets `guest` log in only from there).
    pub fn is_loopback(&self) -> bool {
        let host = self.host();
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

/// Splits a comma-separated list of URLs, each item trimmed. A comma splits only where a new
/// URL starts after it (`scheme://`) or nothing follows: a comma inside an item (in a
/// password, say) stays in it, and so never cuts a password in two where an error would show
/// half of it.
pub fn split_list(value: &str) -> Vec<&str> {
    let starts_url = |rest: &str| {
        let rest = rest.trim_start();
        rest.is_empty()
            || rest.starts_with(',')
            || rest.split_once("://").is_some_and(|(scheme, _)| {
                scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            })
    };
    let mut items = Vec::new();
    let mut start = 0;
    for (at, _) in value.match_indices(',') {
        if starts_url(&value[at + 1..]) {
            items.push(value[start..at].trim());
            start = at + 1;
        }
    }
    items.push(value[start..].trim());
    items
}

/// The items of comma-separated lists (`--url a,b --url c`, `RMQLAB_URL=a,b`), each trimmed, a
/// trailing comma allowed, with how to name each in an error ("URL 2 of 3 in --url"; `None`
/// when there is only one). `source` names where the values came from. A comma inside an item
/// (in a password) is written `%2C`.
pub fn list_items<'a>(
    values: &'a [String],
    what: &'static str,
    source: &str,
) -> Result<Vec<(&'a str, Option<String>)>, InvalidUrl> {
    let mut items = Vec::new();
    for value in values {
        let mut parts = split_list(value);
        if parts.len() > 1 && parts.last() == Some(&"") {
            parts.pop();
        }
        items.extend(parts);
    }
    let count = items.len();
    let label = |number: usize| (count > 1).then(|| format!("URL {number} of {count} in {source}"));
    if items.iter().all(|item| item.is_empty()) {
        return Err(InvalidUrl {
            what,
            shown: None,
            item: None,
            reason: format!("{source} lists no URL"),
            unencoded: None,
        });
    }
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| match item {
            "" => Err(InvalidUrl {
                what,
                shown: None,
                item: label(index + 1),
                reason: "it is empty (two commas in a row?)".into(),
                unencoded: None,
            }),
            item => Ok((item, label(index + 1))),
        })
        .collect()
}

/// What a `[broker.NAME]` section gives the URLs that do not name their own: a user, a
/// password, a vhost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UrlDefaults {
    pub user: Option<String>,
    pub password: Option<String>,
    pub vhost: Option<String>,
}

impl UrlDefaults {
    /// A comma-separated list with [`UrlDefaults::fill`] done on each item.
    pub fn fill_list(&self, list: &str) -> String {
        split_list(list)
            .into_iter()
            .map(|item| self.fill(item))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `raw` with the user, password and vhost it does not name filled in (a password alone
    /// goes with the user `guest`, as an AMQP URL without a user means). `raw` itself when
    /// nothing is to be filled in, or when it does not parse (its error comes later).
    pub fn fill(&self, raw: &str) -> String {
        let Ok(mut url) = Url::parse(raw) else {
            return raw.to_string();
        };
        if url.cannot_be_a_base() || url.host_str().is_none_or(str::is_empty) {
            return raw.to_string();
        }
        // Encoded here: the url crate leaves `%` and `,` as they are, and a `,` would split a list.
        let encode = |text: &str| percent_encoding::utf8_percent_encode(text, VHOST).to_string();
        let mut changed = false;
        if url.username().is_empty()
            && let Some(user) = self
                .user
                .as_deref()
                .or(self.password.as_ref().map(|_| "guest"))
        {
            changed |= url.set_username(&encode(user)).is_ok();
        }
        if url.password().is_none()
            && let Some(password) = &self.password
        {
            changed |= url.set_password(Some(&encode(password))).is_ok();
        }
        if let Some(vhost) = self.vhost.as_deref().filter(|_| names_no_vhost(raw)) {
            url.set_path(&format!(
                "/{}",
                percent_encoding::utf8_percent_encode(vhost, VHOST)
            ));
            changed = true;
        }
        match changed {
            true => url.to_string(),
            false => raw.to_string(),
        }
    }
}

/// Whether an AMQP or stream URL has no path, and so no vhost of its own.
pub fn names_no_vhost(raw: &str) -> bool {
    Url::parse(raw.trim()).is_ok_and(|url| url.path().is_empty())
}

/// The broker URIs of `--url` (repeatable, or a comma-separated list): the nodes of one
/// cluster, tried in order. Never empty; all of them name the same vhost. Clones share which
/// one is in use: a connection made through one clone shows in all.
#[derive(Clone, Debug)]
pub struct BrokerUrls {
    list: Arc<[BrokerUrl]>,
    /// The index of the URL connected to last (before any connection, the first).
    in_use: Arc<AtomicUsize>,
}

impl BrokerUrls {
    /// Parses `values`, each a comma-separated list, that came from `source` (`--url`,
    /// `RMQLAB_URL`...), with `defaults` filled in where an item names no user, password or
    /// vhost. Errors name the item and never show a password.
    pub fn parse(
        values: &[String],
        source: &str,
        defaults: &UrlDefaults,
    ) -> Result<Self, InvalidUrl> {
        let mut list: Vec<BrokerUrl> = Vec::new();
        for (raw, item) in list_items(values, "broker URI", source)? {
            let url = BrokerUrl::parse(&defaults.fill(raw)).map_err(|error| InvalidUrl {
                item: item.clone(),
                ..error
            })?;
            if let Some(first) = list.first().filter(|first| first.vhost() != url.vhost()) {
                return Err(InvalidUrl {
                    what: "broker URI",
                    shown: Some(url.to_string()),
                    item,
                    reason: format!(
                        "its vhost '{}' is not '{}', the first URL's: the URLs of a list are \
                         the nodes of one cluster and name the same vhost (another vhost holds \
                         other queues)",
                        url.vhost(),
                        first.vhost()
                    ),
                    unencoded: None,
                });
            }
            list.push(url);
        }
        Ok(BrokerUrls::from_list(list))
    }

    fn from_list(list: Vec<BrokerUrl>) -> Self {
        BrokerUrls {
            list: list.into(),
            in_use: Arc::default(),
        }
    }

    /// One URL alone.
    pub fn single(url: BrokerUrl) -> Self {
        BrokerUrls::from_list(vec![url])
    }

    /// The same URLs in an order drawn from `seed` (`--shuffle-urls`: clients started alike
    /// spread over the nodes).
    pub fn shuffled(&self, mut seed: u64) -> Self {
        let mut list = self.list.to_vec();
        // Fisher-Yates with xorshift64*: a few URLs need no better randomness.
        seed |= 1;
        for last in (1..list.len()).rev() {
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            let draw = seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
            list.swap(last, (draw % (last as u64 + 1)) as usize);
        }
        BrokerUrls::from_list(list)
    }

    /// How many URLs (one or more).
    pub fn count(&self) -> usize {
        self.list.len()
    }

    /// The URL connected to last; before any connection, the first.
    pub fn in_use(&self) -> &BrokerUrl {
        &self.list[self.in_use.load(Ordering::Relaxed)]
    }

    /// The URLs in the order a connection tries them: from the one in use on, around the list
    /// (at start, the list's order).
    pub fn attempt_order(&self) -> impl Iterator<Item = (usize, &BrokerUrl)> {
        let start = self.in_use.load(Ordering::Relaxed);
        (0..self.list.len())
            .map(move |step| (start + step) % self.list.len())
            .map(|index| (index, &self.list[index]))
    }

    /// After a lost connection: the next URL first, the one just lost last.
    pub fn move_past_in_use(&self) {
        let next = (self.in_use.load(Ordering::Relaxed) + 1) % self.list.len();
        self.in_use.store(next, Ordering::Relaxed);
    }

    /// Marks the URL at `index` (of [`Self::attempt_order`]) as the one in use.
    pub fn use_index(&self, index: usize) {
        self.in_use.store(index, Ordering::Relaxed);
    }

    pub fn iter(&self) -> impl Iterator<Item = &BrokerUrl> {
        self.list.iter()
    }

    /// The same nodes, another vhost; the one in use stays in use.
    pub fn with_vhost(&self, vhost: &str) -> Self {
        BrokerUrls {
            list: self.list.iter().map(|url| url.with_vhost(vhost)).collect(),
            in_use: Arc::new(AtomicUsize::new(self.in_use.load(Ordering::Relaxed))),
        }
    }
}

/// Masks the password of a `scheme://user:password@host...` string, even a malformed one: an
/// input that did not parse may hold a password with an unencoded `/`, `?`, `#` or `@`, so
/// everything between `://` and the last `@` counts as user and password. Returns `None` when
/// the input has no recognisable authority: then it is not shown at all.
pub fn mask_password(raw: &str) -> Option<String> {
    let (scheme, rest) = raw.split_once("://")?;
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return Some(raw.to_string());
    };
    let user = match userinfo.split_once(':') {
        // A user name that holds a delimiter is not surely a user name: hide it as well.
        Some((user, _password)) if !user.contains(['/', '?', '#', '@']) => {
            format!("{user}:{MASK}")
        }
        Some(_) => MASK.to_string(),
        None => userinfo.to_string(),
    };
    Some(format!("{scheme}://{user}@{host}"))
}

/// Removes the raw input, and so its password, from a library's message that echoes it.
fn scrub(message: &str, raw: &str) -> String {
    let masked = mask_password(raw).unwrap_or_else(|| "the URI".into());
    let mut message = message.replace(raw, &masked);
    if let Some(userinfo) = userinfo_of(raw).filter(|userinfo| userinfo.contains(':')) {
        message = message.replace(userinfo, MASK);
    }
    message
}

/// Everything between `://` and the last `@`.
fn userinfo_of(raw: &str) -> Option<&str> {
    let rest = raw.split_once("://").map_or(raw, |(_, rest)| rest);
    rest.rsplit_once('@').map(|(userinfo, _)| userinfo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comma_splits_a_list_only_where_a_url_starts() {
        assert_eq!(
            split_list("amqp://a:Top,Secret@h1/%2f, amqps://h2/%2f ,"),
            ["amqp://a:Top,Secret@h1/%2f", "amqps://h2/%2f", ""]
        );
        assert_eq!(split_list("amqp://app:1234,x@h"), ["amqp://app:1234,x@h"]);
        assert_eq!(split_list(" , "), ["", ""]);
        assert_eq!(
            split_list("amqp://h1,,amqp://h3"),
            ["amqp://h1", "", "amqp://h3"]
        );
    }

    #[test]
    fn stream_urls_default_to_the_broker_and_hide_the_password() {
        let broker = BrokerUrl::parse("amqp://bob:secret@rabbit.example:5672/prod").unwrap();
        let stream = StreamUrl::from_broker(&broker);
        assert_eq!(
            (stream.host.as_str(), stream.port, stream.user.as_str()),
            ("rabbit.example", 5552, "bob")
        );
        assert_eq!(
            (stream.password.as_str(), stream.vhost.as_str()),
            ("secret", "prod")
        );
        assert_eq!(
            stream.to_string(),
            "rabbitmq-stream://bob:****@rabbit.example:5552/prod"
        );
        let parsed = StreamUrl::parse("rabbitmq-stream+tls://u:p%40ss@h:6000/%2f").unwrap();
        assert_eq!((parsed.port, parsed.tls), (6000, true));
        assert_eq!(
            (parsed.password.as_str(), parsed.vhost.as_str()),
            ("p@ss", "/")
        );
        assert!(!parsed.to_string().contains("p%40ss"));
        let bare = StreamUrl::parse("rabbitmq-stream://localhost").unwrap();
        assert_eq!(
            (bare.port, bare.vhost.as_str(), bare.user.as_str()),
            (5552, "/", "guest")
        );
        assert!(StreamUrl::parse("amqp://localhost").is_err());
    }

    fn urls(values: &[&str], source: &str) -> Result<BrokerUrls, InvalidUrl> {
        let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        BrokerUrls::parse(&values, source, &UrlDefaults::default())
    }

    fn shown(urls: &BrokerUrls) -> Vec<String> {
        urls.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_list_takes_spaces_and_a_trailing_comma() {
        let list = urls(
            &[" amqp://a:pw1@h1:5701/%2f , amqp://b:pw2@h2:5702 ,"],
            "RMQLAB_URL",
        )
        .unwrap();
        assert_eq!(
            shown(&list),
            ["amqp://a:****@h1:5701/%2f", "amqp://b:****@h2:5702"]
        );
        assert_eq!((list.count(), list.in_use().user()), (2, "a"));
        let repeated = urls(&["amqp://h1", "amqp://h2,amqp://h3"], "--url").unwrap();
        assert_eq!(repeated.count(), 3);
        assert_eq!(urls(&["amqp://h1,"], "--url").unwrap().count(), 1);
        let encoded = urls(&["amqp://u:a%2Cb@h1,amqp://h2"], "--url").unwrap();
        assert_eq!((encoded.count(), encoded.in_use().password()), (2, "a,b"));
    }

    #[test]
    fn a_bad_item_is_named_with_its_password_masked() {
        let err = urls(
            &["amqp://u:pw@h1/%2f,amqp://u:hunter2@h2:99999/%2f"],
            "RMQLAB_URL",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "invalid broker URI 'amqp://u:****@h2:99999/%2f' (URL 2 of 2 in RMQLAB_URL): invalid \
             port number"
        );
        let err = urls(&["amqp://h1", "http://u:hunter2@h2"], "--url")
            .unwrap_err()
            .to_string();
        assert!(err.contains("(URL 2 of 2 in --url)"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = urls(&["amqp://h1,,amqp://h3"], "--url")
            .unwrap_err()
            .to_string();
        assert!(err.contains("(URL 2 of 3 in --url): it is empty"), "{err}");
    }

    #[test]
    fn an_empty_list_is_refused() {
        for value in ["", ",", " , "] {
            let err = urls(&[value], "AMQP_URL").unwrap_err().to_string();
            assert_eq!(
                err, "invalid broker URI: AMQP_URL lists no URL",
                "{value:?}"
            );
        }
    }

    #[test]
    fn every_url_of_a_list_names_the_same_vhost() {
        let err = urls(
            &["amqp://u:hunter2@h1/%2f, amqp://u:hunter2@h2/other"],
            "--url",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(
                "invalid broker URI 'amqp://u:****@h2/other' (URL 2 of 2 in --url): its vhost \
                 'other' is not '/'"
            ),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
        // The default vhost written two ways is one vhost; credentials may differ.
        assert!(urls(&["amqp://a:x@h1, amqp://b:y@h2/%2F"], "--url").is_ok());
    }

    #[test]
    fn attempts_start_at_the_url_in_use_and_after_a_loss_past_it() {
        let list = urls(&["amqp://h0,amqp://h1,amqp://h2"], "--url").unwrap();
        let order = || {
            list.attempt_order()
                .map(|(index, _)| index)
                .collect::<Vec<_>>()
        };
        assert_eq!(order(), [0, 1, 2]);
        list.move_past_in_use();
        assert_eq!(order(), [1, 2, 0]);
        list.clone().use_index(2);
        assert_eq!(list.in_use().host(), "h2");
        list.move_past_in_use();
        assert_eq!(order(), [0, 1, 2]);
        assert_eq!(list.with_vhost("v").in_use().vhost(), "v");
    }

    #[test]
    fn shuffling_keeps_every_url_and_varies_with_the_seed() {
        let list = urls(&["amqp://h0,amqp://h1,amqp://h2,amqp://h3"], "--url").unwrap();
        let orders: std::collections::HashSet<Vec<String>> = (0..50u64)
            .map(|seed| {
                let mut hosts = shown(&list.shuffled(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
                let order = hosts.clone();
                hosts.sort();
                assert_eq!(hosts, shown(&list));
                order
            })
            .collect();
        assert!(orders.len() > 5, "{orders:?}");
    }

    #[test]
    fn a_section_fills_in_what_a_url_does_not_name() {
        let defaults = UrlDefaults {
            user: Some("app".into()),
            password: Some("p,w@/".into()),
            vhost: Some("shop/eu".into()),
        };
        let list = BrokerUrls::parse(
            &["amqp://h1, amqp://bob@h2, amqp://eve:own@h3/shop%2Feu".into()],
            "urls",
            &defaults,
        )
        .unwrap();
        let users: Vec<(&str, &str, &str)> = list
            .iter()
            .map(|url| (url.user(), url.password(), url.vhost()))
            .collect();
        assert_eq!(
            users,
            [
                ("app", "p,w@/", "shop/eu"),
                ("bob", "p,w@/", "shop/eu"),
                ("eve", "own", "shop/eu")
            ]
        );
        assert_eq!(shown(&list)[0], "amqp://app:****@h1/shop%2Feu");
        let only_password = UrlDefaults {
            password: Some("pw".into()),
            ..UrlDefaults::default()
        };
        assert_eq!(only_password.fill("amqp://h"), "amqp://guest:pw@h");
        assert_eq!(UrlDefaults::default().fill("amqp://H"), "amqp://H");
        // An API URL takes the credentials, never a vhost; a list stays a list.
        assert_eq!(
            defaults.fill_list("http://h1:15672, https://u:own@h2"),
            "http://app:p%2Cw%40%2F@h1:15672/,https://u:own@h2"
        );
        assert_eq!(defaults.fill("amqp:x"), "amqp:x");
    }

    #[test]
    fn default_url_parses_to_the_default_vhost() {
        let url = BrokerUrl::parse(DEFAULT_URL).unwrap();
        assert_eq!(url.vhost(), "/");
        assert_eq!(url.user(), "guest");
        assert_eq!(url.host(), "127.0.0.1");
        assert_eq!(url.to_string(), "amqp://guest:****@127.0.0.1:5672/%2f");
        assert!(url.is_loopback());
    }

    #[test]
    fn ip_hosts_are_kept() {
        let url = BrokerUrl::parse("amqp://u:p@10.1.2.3:5673/v").unwrap();
        assert_eq!(url.host(), "10.1.2.3");
        assert_eq!(url.amqp_uri().authority.port, 5673);
        assert!(!url.is_loopback());
        let url = BrokerUrl::parse("amqp://[::1]/%2f").unwrap();
        assert_eq!(url.host(), "::1");
        assert!(url.is_loopback());
    }

    #[test]
    fn amqps_defaults_to_port_5671() {
        let url = BrokerUrl::parse("amqps://broker.example").unwrap();
        assert!(url.is_tls());
        assert_eq!(url.amqp_uri().authority.port, 5671);
    }

    #[test]
    fn errors_never_contain_the_password() {
        for raw in [
            "amqp://user:hunter2@host:99999/%2f",
            "http://user:hunter2@host/",
            "amqp:user:hunter2@x",
            "amqp://user:hunter2@host/?heartbeat=abc",
            "amqp://user:hunter2@/",
        ] {
            let err = BrokerUrl::parse(raw).unwrap_err();
            assert!(!err.to_string().contains("hunter2"), "{raw} -> {err}");
        }
    }

    #[test]
    fn error_reasons_name_the_problem() {
        let err = BrokerUrl::parse("amqp://u:p@host:99999").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid broker URI 'amqp://u:****@host:99999': invalid port number"
        );
        let err = BrokerUrl::parse("http://host").unwrap_err();
        assert!(err.reason.contains("unknown scheme 'http'"), "{err}");
        let err = BrokerUrl::parse("amqp:x").unwrap_err();
        assert!(err.reason.contains("expected amqp://"), "{err}");
    }

    #[test]
    fn scrub_removes_echoed_input() {
        let raw = "amqp://u:hunter2@h/";
        assert_eq!(
            scrub(&format!("Invalid URL: '{raw}'"), raw),
            "Invalid URL: 'amqp://u:****@h/'"
        );
        assert_eq!(scrub("bad u:hunter2 here", raw), "bad **** here");
        assert_eq!(
            scrub("invalid port number", "amqp://u:p@h:99999"),
            "invalid port number"
        );
    }

    #[test]
    fn mask_password_handles_odd_shapes() {
        assert_eq!(
            mask_password("amqp://a:b@c@host/x").as_deref(),
            Some("amqp://a:****@host/x")
        );
        assert_eq!(
            mask_password("amqp://host/x").as_deref(),
            Some("amqp://host/x")
        );
        assert_eq!(mask_password("amqp:secret"), None);
    }

    #[test]
    fn passwords_with_delimiters_are_masked_up_to_the_last_at() {
        for (raw, shown) in [
            (
                "amqp://user:pa/ss@127.0.0.1:5672/%2f",
                "amqp://user:****@127.0.0.1:5672/%2f",
            ),
            ("http://u:SEC/RET@h:15672/", "http://u:****@h:15672/"),
            ("amqp://u:a?b#c@h/", "amqp://u:****@h/"),
        ] {
            assert_eq!(mask_password(raw).as_deref(), Some(shown));
            let err = BrokerUrl::parse(raw).unwrap_err().to_string();
            for secret in ["pa/ss", "SEC/RET", "a?b#c", "pw"] {
                assert!(!err.contains(secret), "{raw} -> {err}");
            }
        }
    }

    #[test]
    fn a_user_name_with_a_delimiter_is_masked_too() {
        assert_eq!(
            mask_password("amqp://us/er:pw@h:x/").as_deref(),
            Some("amqp://****@h:x/")
        );
    }

    #[test]
    fn an_empty_vhost_is_refused() {
        let err = BrokerUrl::parse("amqp://u:p@h:5672/").unwrap_err();
        assert!(err.reason.contains("%2f"), "{err}");
        assert_eq!(BrokerUrl::parse("amqp://u:p@h:5672").unwrap().vhost(), "/");
    }

    #[test]
    fn a_vhost_over_255_bytes_is_refused() {
        let raw = format!("amqp://u:p@h/{}", "v".repeat(256));
        let err = BrokerUrl::parse(&raw).unwrap_err();
        assert!(err.reason.contains("256 bytes"), "{err}");
    }
}

/// The stream protocol's port, for `rabbitmq-stream://` URLs without one.
pub const STREAM_PORT: u16 = 5552;
/// The stream protocol's TLS port, for `rabbitmq-stream+tls://` URLs without one.
pub const STREAM_TLS_PORT: u16 = 5551;

/// Where the stream protocol listens (`--stream-url`): `rabbitmq-stream://user:password@host:port/vhost`,
/// or `rabbitmq-stream+tls://` for TLS.
#[derive(Debug, Clone)]
pub struct StreamUrl {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// For authenticating only: never print it.
    pub password: String,
    pub vhost: String,
    pub tls: bool,
    shown: String,
}

impl StreamUrl {
    pub fn parse(raw: &str) -> Result<Self, InvalidUrl> {
        let invalid = |reason: String| InvalidUrl::new("stream URL", raw, &reason);
        let url = Url::parse(raw).map_err(|e| invalid(e.to_string()))?;
        let tls = match url.scheme() {
            "rabbitmq-stream" => false,
            "rabbitmq-stream+tls" => true,
            other => {
                return Err(invalid(format!(
                    "unknown scheme '{other}': use rabbitmq-stream:// or rabbitmq-stream+tls://"
                )));
            }
        };
        let host = url
            .host_str()
            .filter(|host| !host.is_empty())
            .ok_or_else(|| {
                invalid("expected rabbitmq-stream://[user[:password]@]host[:port][/vhost]".into())
            })?;
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8_lossy()
                .into_owned()
        };
        if let Some(step) = dot_segment(raw) {
            // The URL has already dropped it: the path would name another vhost (or '/').
            return Err(invalid(format!(
                "a vhost named '{step}' cannot be written in a URL: URLs read '{step}' \
                 (encoded or not) as a step in the path"
            )));
        }
        let vhost = match url.path() {
            "" | "/" => "/".to_string(),
            path => decode(&path[1..]),
        };
        let user = match url.username() {
            "" => "guest".to_string(),
            user => decode(user),
        };
        let password = url.password().map_or_else(|| "guest".to_string(), decode);
        let mut shown = url.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some(MASK));
        }
        Ok(StreamUrl {
            host: host.trim_start_matches('[').trim_end_matches(']').into(),
            port: url
                .port()
                .unwrap_or(if tls { STREAM_TLS_PORT } else { STREAM_PORT }),
            user,
            password,
            vhost,
            tls,
            shown: shown.to_string(),
        })
    }

    /// The default: the host, user, password and vhost of `--url`, on the stream port.
    pub fn from_broker(broker: &BrokerUrl) -> Self {
        let tls = broker.is_tls();
        let port = if tls { STREAM_TLS_PORT } else { STREAM_PORT };
        let scheme = if tls {
            "rabbitmq-stream+tls"
        } else {
            "rabbitmq-stream"
        };
        let host = broker.host();
        let host_shown = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let vhost = percent_encoding::utf8_percent_encode(broker.vhost(), VHOST);
        let user = percent_encoding::utf8_percent_encode(broker.user(), VHOST);
        StreamUrl {
            host: host.to_string(),
            port,
            user: broker.user().to_string(),
            password: broker.password().to_string(),
            vhost: broker.vhost().to_string(),
            tls,
            shown: format!("{scheme}://{user}:{MASK}@{host_shown}:{port}/{vhost}"),
        }
    }
}

impl fmt::Display for StreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}
