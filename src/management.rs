//! A small client for the RabbitMQ management HTTP API: just what `rmqlab queues` needs.
//!
//! Follows the RabbitMQ 4.x API documentation, which 3.x brokers also serve: list endpoints are
//! paged (`page`, `page_size`), filtered by name (`name`, `use_regex`) and trimmed to the fields
//! asked for (`columns`). Numbers a queue does not report yet (a new queue has no statistics,
//! 4.x omits some fields) are `None`, never an error.

use crate::{
    context::Context,
    error::{Error, Result},
    signals::unless_interrupted,
    tls::INSECURE_WARNING,
    uri::{BrokerUrl, InvalidUrl, list_items},
};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use reqwest::{Client, RequestBuilder, Response, StatusCode};
use serde::{Deserialize, Serialize};
use std::{collections::HashMap, sync::Arc, time::Duration};
use url::Url;

/// The default port of the management plugin.
const API_PORT: u16 = 15672;

/// Whether a name is `.` or `..`, which the management API's URLs cannot carry (see
/// [`Api::endpoint`]): such a queue is purged or deleted over AMQP instead.
pub fn is_dot_name(name: &str) -> bool {
    name == "." || name == ".."
}

/// What stays as it is in a path segment of an API URL: RFC 3986's unreserved characters.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// Queues asked for per request.
pub const PAGE_SIZE: u32 = 500;

/// One queue as `queues list` shows it; the field names are the API's. A field the listing did
/// not ask for, or that the broker does not report for this queue (type), is `None`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct QueueRow {
    pub vhost: String,
    pub name: String,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Usually `running`; some states are Erlang terms, shown as the API's JSON.
    #[serde(default, deserialize_with = "text_or_json")]
    pub state: Option<String>,
    #[serde(default)]
    pub durable: Option<bool>,
    #[serde(default)]
    pub messages: Option<u64>,
    #[serde(default)]
    pub messages_ready: Option<u64>,
    #[serde(default)]
    pub messages_unacknowledged: Option<u64>,
    #[serde(default)]
    pub consumers: Option<u64>,
    #[serde(default)]
    pub memory: Option<u64>,
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub leader: Option<String>,
    #[serde(default)]
    pub members: Option<Vec<String>>,
    #[serde(default)]
    pub online: Option<Vec<String>>,
    /// The rates of the broker's statistics (`message_stats`), when asked for.
    #[serde(default)]
    pub message_stats: Option<MessageStats>,
}

/// The rates a queue's statistics report; a rate the broker has no sample of yet is `None`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct MessageStats {
    #[serde(default)]
    pub publish_details: Option<Rate>,
    #[serde(default)]
    pub deliver_get_details: Option<Rate>,
    #[serde(default)]
    pub ack_details: Option<Rate>,
}

/// Messages per second, over the broker's last statistics sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
pub struct Rate {
    pub rate: f64,
}

impl QueueRow {
    /// A replicated queue (quorum, stream) some of whose members are not running.
    pub fn degraded(&self) -> bool {
        matches!((&self.members, &self.online), (Some(members), Some(online)) if online.len() < members.len())
    }

    /// Fills what this row lacks from `other`, a later answer about the same queue.
    fn fill_from(&mut self, other: QueueRow) {
        fn fill<T>(mine: &mut Option<T>, theirs: Option<T>) {
            if mine.is_none() {
                *mine = theirs;
            }
        }
        fill(&mut self.kind, other.kind);
        fill(&mut self.state, other.state);
        fill(&mut self.durable, other.durable);
        fill(&mut self.messages, other.messages);
        fill(&mut self.messages_ready, other.messages_ready);
        fill(
            &mut self.messages_unacknowledged,
            other.messages_unacknowledged,
        );
        fill(&mut self.consumers, other.consumers);
        fill(&mut self.memory, other.memory);
        fill(&mut self.node, other.node);
        fill(&mut self.leader, other.leader);
        fill(&mut self.members, other.members);
        fill(&mut self.online, other.online);
        fill(&mut self.message_stats, other.message_stats);
    }
}

fn text_or_json<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<String>, D::Error> {
    Ok(
        match Option::<serde_json::Value>::deserialize(deserializer)? {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(text)) => Some(text),
            Some(other) => Some(other.to_string()),
        },
    )
}

/// What `queues list` asks for.
pub struct QueueListing<'a> {
    /// One vhost, or every vhost.
    pub vhost: Option<&'a str>,
    /// A regular expression on the name, matched as the broker matches it (PCRE, caseless).
    pub filter: Option<&'a str>,
    /// The API's names of the fields wanted (vhost and name come always).
    pub fields: &'a [&'static str],
    /// Ask for every queue's statistics (memory): slower, and about 5 s behind.
    pub stats: bool,
}

/// Fields that a stream reports only in its statistics.
const STREAM_STATS_FIELDS: [&str; 7] = [
    "messages",
    "messages_ready",
    "messages_unacknowledged",
    "node",
    "leader",
    "members",
    "online",
];

/// How many streams' statistics are asked for at once.
const STREAM_REQUESTS: usize = 8;

/// A consumer in `/api/consumers`, trimmed to its queue.
#[derive(Deserialize)]
struct ConsumerRow {
    queue: QueueRef,
}

#[derive(Deserialize, PartialEq, Eq, Hash)]
struct QueueRef {
    vhost: String,
    name: String,
}

#[derive(Deserialize)]
struct Page<T> {
    items: Vec<T>,
    page_count: u32,
}

#[derive(Deserialize, Default)]
struct ApiError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    reason: String,
}

pub struct Api {
    client: Client,
    base: Url,
    /// The vhost of `--url`.
    vhost: String,
    user: String,
    password: String,
    caller: ApiCaller,
}

impl Api {
    /// The API at `--api-url` (default `http://<host of the --url in use>:15672`), with the
    /// credentials of the API URL when it carries some, else those of that `--url`. Of several
    /// (a list in `--api-url`, or several `--url`), the first that answers, from the one in
    /// use on.
    pub async fn new(ctx: &Context) -> Result<Api> {
        let candidates = match &ctx.api_url {
            Some(raw) => {
                let values = [raw.clone()];
                let items =
                    list_items(&values, "API URL", "--api-url").map_err(Error::InvalidUrl)?;
                items
                    .into_iter()
                    .map(|(raw, item)| {
                        parse_api_url(raw).map_err(|error| match error {
                            Error::InvalidUrl(invalid) => {
                                Error::InvalidUrl(InvalidUrl { item, ..invalid })
                            }
                            other => other,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?
            }
            None => ctx
                .urls
                .attempt_order()
                .inspect(|(_, url)| {
                    // A broker on another AMQP port than the default is likely one of several
                    // on its host: port 15672 may well be another broker's API.
                    let port = url.amqp_uri().authority.port;
                    if !matches!(port, 5672 | 5671) {
                        ctx.status.warn(format_args!(
                            " [!] no --api-url: trying the management API on port {API_PORT} of \
                             the host of {url}, whose AMQP port is {port}; give --api-url if that \
                             is another broker's"
                        ));
                    }
                })
                .map(|(_, url)| {
                    let (base, _, _) = default_api_url(url)?;
                    Ok((
                        base,
                        Some(url.user().to_string()),
                        Some(url.password().to_string()),
                    ))
                })
                .collect::<Result<Vec<_>>>()?,
        };
        // Nodes on one host share its API (the same user twice needs one try).
        let mut candidates = candidates;
        let mut seen = Vec::new();
        candidates.retain(|candidate| match seen.contains(candidate) {
            true => false,
            false => {
                seen.push(candidate.clone());
                true
            }
        });
        if let [(base, user, password)] = &candidates[..] {
            let api = Api::at(ctx, base.clone(), user.clone(), password.clone())?;
            ctx.status
                .debug(format_args!("management API at {}", api.base));
            return Ok(api);
        }
        let mut failures = Vec::new();
        for (base, user, password) in candidates {
            let api = Api::at(ctx, base, user, password)?;
            match api.answers().await {
                Ok(()) => {
                    ctx.status
                        .debug(format_args!("management API at {}", api.base));
                    return Ok(api);
                }
                Err(error @ Error::Interrupted(_)) => return Err(error),
                Err(error) => {
                    ctx.status.debug(format_args!(
                        "skipping the management API at {}: {}",
                        api.base,
                        error.one_line()
                    ));
                    failures.push(error);
                }
            }
        }
        Err(Error::no_url_connected("management API URLs", failures))
    }

    /// Whether the API answers this user (`/api/whoami`: cheap however big the broker).
    async fn answers(&self) -> Result<()> {
        let url = self.endpoint(&["whoami"])?;
        self.send(self.request(reqwest::Method::GET, url), "the API")
            .await
            .map(drop)
    }

    /// The API at `base`; without credentials of its own, with those of the `--url` in use.
    fn at(ctx: &Context, base: Url, user: Option<String>, password: Option<String>) -> Result<Api> {
        let mut client = Client::builder();
        if base.scheme() == "https" {
            if ctx.tls.insecure {
                ctx.status.warn(INSECURE_WARNING);
            }
            client = client.use_preconfigured_tls(ctx.tls.client_config()?);
        } else {
            // Plain HTTP needs no certificates: reading and parsing the system's roots took
            // longer than the rest of rmqlab's own part of a `queues list`.
            client = client.tls_built_in_root_certs(false);
        }
        let client = client
            .connect_timeout(ctx.connect_timeout)
            .timeout(ctx.api_timeout)
            .user_agent(concat!("rmqlab/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| Error::Api {
                url: base.to_string(),
                source,
            })?;
        let user = user.unwrap_or_else(|| ctx.url().user().to_string());
        let password = password.unwrap_or_else(|| ctx.url().password().to_string());
        let mut overview = base.clone();
        overview
            .path_segments_mut()
            .expect("http(s) URLs have a path")
            .pop_if_empty()
            .extend(["api", "overview"]);
        Ok(Api {
            caller: ApiCaller {
                base: base.as_str().into(),
                user: user.as_str().into(),
                password: password.as_str().into(),
                client: client.clone(),
                overview,
                api_timeout: ctx.api_timeout,
                connect_timeout: ctx.connect_timeout,
            },
            client,
            base,
            vhost: ctx.url().vhost().to_string(),
            user,
            password,
        })
    }

    /// The URL of an API path, each segment percent-encoded (`/` in a vhost becomes `%2F`).
    /// Everything but unreserved characters is encoded: the `url` crate leaves `[`, `]` and
    /// others as they are, which the broker's HTTP server refuses (400). A segment `.` or `..`
    /// (as the name of a queue, exchange or vhost) is refused: URLs resolve it, encoded (`%2E`)
    /// or not, as a step in the path, so the request would reach another object.
    fn endpoint(&self, segments: &[&str]) -> Result<Url> {
        let mut url = self.base.clone();
        let mut path = url.path().trim_end_matches('/').to_string();
        path.push_str("/api");
        for segment in segments {
            if is_dot_name(segment) {
                return Err(Error::ApiDotName {
                    name: segment.to_string(),
                });
            }
            path.push('/');
            path.extend(utf8_percent_encode(segment, PATH_SEGMENT));
        }
        url.set_path(&path);
        Ok(url)
    }

    fn request(&self, method: reqwest::Method, url: Url) -> RequestBuilder {
        self.client
            .request(method, url)
            .basic_auth(&self.user, Some(&self.password))
    }

    /// The queues `listing` asks for. Without statistics the broker answers from its queue
    /// records alone, at once however many queues there are (a classic queue's counts are its
    /// own, exact); the consumer counts come from the list of consumers, asked at the same time,
    /// and streams, which report their counts only in their statistics, are asked about one by
    /// one. The answer is read one queue at a time: only the rows kept are held.
    pub async fn list_queues(&self, listing: &QueueListing<'_>) -> Result<Vec<QueueRow>> {
        let what = match listing.vhost {
            Some(vhost) => format!("vhost '{vhost}'"),
            None => "queues".into(),
        };
        let mut columns = vec!["vhost", "name", "type"];
        let wants_node = listing.fields.contains(&"node");
        if wants_node {
            // A quorum queue's node is its leader's; 3.x leaves it out of the stats-free listing.
            columns.push("leader");
        }
        for field in listing.fields {
            if !columns.contains(field) {
                columns.push(field);
            }
        }
        let mut url = match listing.vhost {
            Some(vhost) => self.endpoint(&["queues", vhost])?,
            None => self.endpoint(&["queues"])?,
        };
        {
            let mut query = url.query_pairs_mut();
            if !listing.stats {
                query
                    .append_pair("disable_stats", "true")
                    .append_pair("enable_queue_totals", "true");
            }
            query.append_pair("columns", &columns.join(","));
        }
        let queues = async {
            match listing
                .filter
                .map(|pattern| (pattern, name_matcher(pattern)))
            {
                // Only a paged request is filtered by the broker; each page costs it a sort of
                // every queue, so this is kept for what rmqlab cannot match itself.
                Some((pattern, None)) => self.list_pages(&url, pattern, &what).await,
                matcher => {
                    let matcher = matcher.and_then(|(_, matcher)| matcher);
                    let mut rows = Vec::new();
                    let request = self.request(reqwest::Method::GET, url.clone());
                    self.caller
                        .each(request, &what, |row: QueueRow| {
                            if matcher
                                .as_ref()
                                .is_none_or(|matcher| matcher.is_match(row.name.as_bytes()))
                            {
                                rows.push(row);
                            }
                        })
                        .await?;
                    Ok(rows)
                }
            }
        };
        let count_consumers = !listing.stats && listing.fields.contains(&"consumers");
        let consumers = async {
            match count_consumers {
                true => self.consumer_counts(listing.vhost, &what).await.map(Some),
                false => Ok(None),
            }
        };
        let (rows, counts) = tokio::join!(queues, consumers);
        let mut rows = rows?;
        if let Some(counts) = counts? {
            for row in &mut rows {
                let key = (row.vhost.clone(), row.name.clone());
                row.consumers = Some(counts.get(&key).copied().unwrap_or(0));
            }
        }
        if !listing.stats {
            self.fill_streams(&mut rows, listing.fields, &what).await?;
        }
        if wants_node {
            for row in rows.iter_mut().filter(|row| row.node.is_none()) {
                row.node.clone_from(&row.leader);
            }
        }
        Ok(rows)
    }

    /// The queues of `url` whose name matches `pattern`, filtered by the broker: every page is
    /// asked for at once, as soon as the first tells how many there are.
    async fn list_pages(&self, url: &Url, pattern: &str, what: &str) -> Result<Vec<QueueRow>> {
        let page_request = |page: u32| {
            let mut url = url.clone();
            url.query_pairs_mut()
                .append_pair("page", &page.to_string())
                .append_pair("page_size", &PAGE_SIZE.to_string())
                .append_pair("name", pattern)
                .append_pair("use_regex", "true");
            self.request(reqwest::Method::GET, url)
        };
        let mut pages = tokio::task::JoinSet::new();
        let mut spawn = |page: u32| {
            let request = page_request(page);
            let api = self.caller.clone();
            let what = what.to_string();
            pages.spawn(async move {
                let page_rows = api.fetch::<Page<QueueRow>>(request, &what).await;
                (page, page_rows.map(|page_rows| page_rows.items))
            });
        };
        let first: Page<QueueRow> = self.fetch(page_request(1), what).await?;
        for page in 2..=first.page_count {
            spawn(page);
        }
        let mut rows = first.items;
        let mut later = Vec::new();
        while let Some(joined) = pages.join_next().await {
            let (page, items) = joined.expect("a page request panicked");
            later.push((page, items?));
        }
        later.sort_by_key(|(page, _)| *page);
        rows.extend(later.into_iter().flat_map(|(_, items)| items));
        Ok(rows)
    }

    /// The names of the queues (of type `of_type` only, when given) or exchanges (`kind`:
    /// `queues` or `exchanges`) of the vhost of `--url`: one small request, for completion.
    pub async fn names(&self, kind: &str, of_type: Option<&str>) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Named {
            name: String,
            #[serde(default, rename = "type")]
            kind: Option<String>,
        }
        let mut url = self.endpoint(&[kind, &self.vhost])?;
        url.query_pairs_mut()
            .append_pair("columns", "name,type")
            .append_pair("disable_stats", "true");
        let named: Vec<Named> = self
            .fetch(self.request(reqwest::Method::GET, url), kind)
            .await?;
        Ok(named
            .into_iter()
            .filter(|named| of_type.is_none_or(|wanted| named.kind.as_deref() == Some(wanted)))
            .map(|named| named.name)
            .collect())
    }

    /// How many consumers each queue (vhost, name) has, from the list of consumers.
    async fn consumer_counts(
        &self,
        vhost: Option<&str>,
        what: &str,
    ) -> Result<HashMap<(String, String), u64>> {
        let mut url = match vhost {
            Some(vhost) => self.endpoint(&["consumers", vhost])?,
            None => self.endpoint(&["consumers"])?,
        };
        url.query_pairs_mut()
            .append_pair("columns", "queue.name,queue.vhost");
        let mut counts = HashMap::new();
        let request = self.request(reqwest::Method::GET, url);
        self.caller
            .each(request, what, |consumer: ConsumerRow| {
                *counts
                    .entry((consumer.queue.vhost, consumer.queue.name))
                    .or_insert(0) += 1;
            })
            .await?;
        Ok(counts)
    }

    /// Fills the fields of `fields` that streams report only in their statistics, asking for
    /// each stream's (a few at a time). A stream deleted meanwhile keeps what it had.
    async fn fill_streams(
        &self,
        rows: &mut [QueueRow],
        fields: &[&'static str],
        what: &str,
    ) -> Result<()> {
        let mut columns = vec!["vhost", "name"];
        columns.extend(fields.iter().filter(|f| STREAM_STATS_FIELDS.contains(f)));
        if columns.len() == 2 {
            return Ok(());
        }
        let columns = columns.join(",");
        let mut streams = rows
            .iter()
            .enumerate()
            .filter(|(_, row)| row.kind.as_deref() == Some("stream"))
            // A stream named `.` or `..` cannot be asked for: it keeps what the listing had.
            .filter_map(|(index, row)| {
                let mut url = self.endpoint(&["queues", &row.vhost, &row.name]).ok()?;
                url.query_pairs_mut().append_pair("columns", &columns);
                Some((index, self.request(reqwest::Method::GET, url)))
            })
            .collect::<Vec<_>>()
            .into_iter();
        let mut running = tokio::task::JoinSet::new();
        loop {
            while running.len() < STREAM_REQUESTS {
                let Some((index, request)) = streams.next() else {
                    break;
                };
                let api = self.caller.clone();
                let what = what.to_string();
                running.spawn(async move { (index, api.fetch::<QueueRow>(request, &what).await) });
            }
            let Some(joined) = running.join_next().await else {
                return Ok(());
            };
            match joined.expect("a stream request panicked") {
                (index, Ok(stats)) => rows[index].fill_from(stats),
                (_, Err(Error::ApiNotFound { .. })) => {}
                (_, Err(error)) => return Err(error),
            }
        }
    }

    /// Removes every ready message of a queue.
    pub async fn purge_queue(&self, vhost: &str, name: &str) -> Result<()> {
        let url = self.endpoint(&["queues", vhost, name, "contents"])?;
        let what = format!("queue '{name}' in vhost '{vhost}'");
        self.send(self.request(reqwest::Method::DELETE, url), &what)
            .await
            .map(drop)
    }

    /// Deletes a queue; with `if_empty` / `if_unused` the broker refuses when it holds messages
    /// / has consumers (quorum queues refuse `if_unused` itself: see `queues delete`).
    pub async fn delete_queue(
        &self,
        vhost: &str,
        name: &str,
        if_empty: bool,
        if_unused: bool,
    ) -> Result<()> {
        let mut url = self.endpoint(&["queues", vhost, name])?;
        if if_empty {
            url.query_pairs_mut().append_pair("if-empty", "true");
        }
        if if_unused {
            url.query_pairs_mut().append_pair("if-unused", "true");
        }
        let what = format!("queue '{name}' in vhost '{vhost}'");
        self.send(self.request(reqwest::Method::DELETE, url), &what)
            .await
            .map(drop)
    }

    /// The dead-letter exchange of a queue, from its arguments (`x-dead-letter-exchange`) or
    /// its effective policy (`dead-letter-exchange`); `None` when it has none (`""`, the
    /// default exchange, is one). A queue that does not exist is [`Error::ApiNotFound`].
    pub async fn dead_letter_exchange(&self, vhost: &str, name: &str) -> Result<Option<String>> {
        Ok(dead_letter_exchange_of(&self.queue(vhost, name).await?))
    }

    /// What the API knows of one queue, as it describes it.
    async fn queue(&self, vhost: &str, name: &str) -> Result<serde_json::Value> {
        let url = self.endpoint(&["queues", vhost, name])?;
        let what = format!("queue '{name}' in vhost '{vhost}'");
        self.fetch(self.request(reqwest::Method::GET, url), &what)
            .await
    }

    /// A queue's type and message TTL; a queue that does not exist is [`Error::ApiNotFound`].
    pub async fn queue_facts(&self, vhost: &str, name: &str) -> Result<QueueFacts> {
        Ok(QueueFacts::of(&self.queue(vhost, name).await?))
    }

    /// The RabbitMQ version of the broker behind the API (`3.10.8`, `4.0.5`).
    pub async fn rabbitmq_version(&self) -> Result<String> {
        let mut url = self.endpoint(&["overview"])?;
        url.query_pairs_mut()
            .append_pair("columns", "rabbitmq_version");
        let overview: serde_json::Value = self
            .fetch(self.request(reqwest::Method::GET, url), "the overview")
            .await?;
        Ok(overview["rabbitmq_version"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    async fn fetch<T: serde::de::DeserializeOwned>(
        &self,
        request: RequestBuilder,
        what: &str,
    ) -> Result<T> {
        self.caller.fetch(request, what).await
    }

    async fn send(&self, request: RequestBuilder, what: &str) -> Result<Response> {
        self.caller.send(request, what).await
    }
}

/// Sends requests and turns failures into rmqlab errors; cheap to clone into a concurrent task.
#[derive(Clone)]
struct ApiCaller {
    base: Arc<str>,
    user: Arc<str>,
    password: Arc<str>,
    client: Client,
    /// `/api/overview`, asked when an answer makes rmqlab doubt it is talking to RabbitMQ.
    overview: Url,
    api_timeout: Duration,
    connect_timeout: Duration,
}

impl ApiCaller {
    async fn fetch<T: serde::de::DeserializeOwned>(
        &self,
        request: RequestBuilder,
        what: &str,
    ) -> Result<T> {
        let response = self.send(request, what).await?;
        let decoded = unless_interrupted(response.json()).await;
        match decoded.map_err(Error::Interrupted)? {
            Ok(decoded) => Ok(decoded),
            Err(source) => {
                self.is_rabbitmq().await?;
                Err(Error::Api {
                    url: self.base.to_string(),
                    source: source.without_url(),
                })
            }
        }
    }

    /// Sends a request whose answer is a JSON array and hands each element to `each` as it
    /// arrives: however long the list, only one element at a time is held as text.
    async fn each<T: serde::de::DeserializeOwned>(
        &self,
        request: RequestBuilder,
        what: &str,
        mut each: impl FnMut(T),
    ) -> Result<()> {
        let mut response = self.send(request, what).await?;
        let mut array = JsonArray::default();
        let mut parsed = Ok(());
        while parsed.is_ok() {
            let chunk = unless_interrupted(response.chunk()).await;
            let Some(chunk) = chunk
                .map_err(Error::Interrupted)?
                .map_err(|source| self.transport_error(source))?
            else {
                parsed = array.finish();
                break;
            };
            parsed = array.push(&chunk, |element| {
                each(serde_json::from_slice(element).map_err(|e| e.to_string())?);
                Ok(())
            });
        }
        if let Err(reason) = parsed {
            self.is_rabbitmq().await?;
            return Err(Error::ApiAnswer {
                url: self.base.to_string(),
                reason,
            });
        }
        Ok(())
    }

    /// `Ok` when `/api/overview` describes a RabbitMQ broker, else [`Error::NotManagementApi`].
    async fn is_rabbitmq(&self) -> Result<()> {
        let not_rabbitmq = |reason: String| Error::NotManagementApi {
            url: self.base.to_string(),
            reason,
        };
        let request = self
            .client
            .get(self.overview.clone())
            .basic_auth(&*self.user, Some(&*self.password));
        let response = self.send_only(request).await?;
        let status = response.status();
        if !status.is_success() {
            return Err(not_rabbitmq(format!(
                "{} answered {status}",
                self.overview.path()
            )));
        }
        let overview: serde_json::Value = unless_interrupted(response.json())
            .await
            .map_err(Error::Interrupted)?
            .unwrap_or_default();
        match overview
            .get("management_version")
            .or(overview.get("rabbitmq_version"))
        {
            Some(_) => Ok(()),
            None => Err(not_rabbitmq(format!(
                "{} does not describe a RabbitMQ broker",
                self.overview.path()
            ))),
        }
    }

    async fn send(&self, request: RequestBuilder, what: &str) -> Result<Response> {
        let response = self.send_only(request).await?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = unless_interrupted(response.bytes()).await;
        let body = body.map_err(Error::Interrupted)?.unwrap_or_default();
        let parsed = serde_json::from_slice::<ApiError>(&body);
        if matches!(
            status,
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
        ) || (parsed.is_err() && !matches!(status.as_u16(), 401 | 403 | 500..))
        {
            // A path that is not the API's (a wrong --api-url) is a 404 as well, or a 405 to a
            // DELETE, or an answer that is not the API's JSON.
            self.is_rabbitmq().await?;
        }
        let body = parsed.unwrap_or_default();
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::ApiRefused {
                url: self.base.to_string(),
                user: self.user.to_string(),
                reason: body.reason,
            },
            StatusCode::NOT_FOUND => Error::ApiNotFound {
                what: what.to_string(),
            },
            _ => Error::ApiStatus {
                url: self.base.to_string(),
                status: status.as_u16(),
                reason: if body.reason.is_empty() {
                    body.error
                } else {
                    body.reason
                },
            },
        })
    }

    /// Sends a request and waits for the answer's head, unless Ctrl-C comes first.
    async fn send_only(&self, request: RequestBuilder) -> Result<Response> {
        let sent = unless_interrupted(request.send()).await;
        sent.map_err(Error::Interrupted)?
            .map_err(|source| self.transport_error(source))
    }

    /// A request that got no (whole) answer: a timeout, or an API out of reach.
    fn transport_error(&self, source: reqwest::Error) -> Error {
        if source.is_timeout() {
            let (after, option) = match source.is_connect() {
                true => (self.connect_timeout, "--connect-timeout"),
                false => (self.api_timeout, "--api-timeout"),
            };
            Error::ApiTimeout {
                url: self.base.to_string(),
                after,
                option,
            }
        } else {
            Error::ApiUnreachable {
                url: self.base.to_string(),
                source: source.without_url(),
            }
        }
    }
}

/// Splits a JSON array arriving in chunks into the text of its elements.
#[derive(Default)]
struct JsonArray {
    /// The element being read.
    element: Vec<u8>,
    /// 0 before `[` and after `]`, 1 between elements, more inside one.
    depth: u32,
    in_string: bool,
    escaped: bool,
    opened: bool,
    after_comma: bool,
}

impl JsonArray {
    fn push(
        &mut self,
        chunk: &[u8],
        mut each: impl FnMut(&[u8]) -> std::result::Result<(), String>,
    ) -> std::result::Result<(), String> {
        for &byte in chunk {
            if self.in_string {
                self.element.push(byte);
                match byte {
                    _ if self.escaped => self.escaped = false,
                    b'\\' => self.escaped = true,
                    b'"' => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match (self.depth, byte) {
                (_, b' ' | b'\n' | b'\r' | b'\t') if self.depth <= 1 => {}
                (0, b'[') if !self.opened => {
                    self.opened = true;
                    self.depth = 1;
                }
                (0, _) => return Err("the answer is not a JSON array".into()),
                (1, b',' | b']') => {
                    if self.element.is_empty() {
                        if byte == b',' || self.after_comma {
                            return Err("an empty element in a JSON array".into());
                        }
                    } else {
                        each(&self.element)?;
                        self.element.clear();
                    }
                    self.after_comma = byte == b',';
                    self.depth -= u32::from(byte == b']');
                }
                (_, b'"') => {
                    self.in_string = true;
                    self.element.push(byte);
                }
                (_, b'{' | b'[') => {
                    self.depth += 1;
                    self.element.push(byte);
                }
                (_, b'}' | b']') => {
                    self.depth -= 1;
                    self.element.push(byte);
                }
                _ => self.element.push(byte),
            }
        }
        Ok(())
    }

    /// `Ok` when the array was closed.
    fn finish(&self) -> std::result::Result<(), String> {
        match self.opened && self.depth == 0 {
            true => Ok(()),
            false => Err("the answer ended before its JSON array did".into()),
        }
    }
}

/// The broker matches `--filter` with Erlang's `re`, caseless, on the name's bytes. The same
/// here when the pattern is in what the `regex` crate takes (look-around and backreferences are
/// not): `None` then, and the broker filters.
fn name_matcher(pattern: &str) -> Option<regex::bytes::Regex> {
    regex::bytes::RegexBuilder::new(pattern)
        .unicode(false)
        .case_insensitive(true)
        .build()
        .ok()
}

/// What `queues peek`, `move` and `dead-letters` need to know of a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueFacts {
    /// `classic`, `quorum` or `stream`.
    pub queue_type: String,
    /// Milliseconds a message may stay in it, by argument (`x-message-ttl`, which wins) or
    /// policy (`message-ttl`).
    pub message_ttl: Option<u64>,
    /// Deliveries a quorum queue allows a message (`x-delivery-limit` or the policy's
    /// `delivery-limit`, the lower of both); `None` when neither sets one, `Some(None)` when one
    /// of them says unlimited (a negative number, RabbitMQ 4.x).
    pub delivery_limit: Option<Option<u64>>,
}

impl QueueFacts {
    fn of(queue: &serde_json::Value) -> QueueFacts {
        let number = |object: &str, key: &str| queue.get(object)?.get(key)?.as_u64();
        QueueFacts {
            queue_type: queue["type"].as_str().unwrap_or("classic").to_string(),
            message_ttl: number("arguments", "x-message-ttl")
                .or_else(|| number("effective_policy_definition", "message-ttl")),
            delivery_limit: {
                let limit = |object: &str, key: &str| {
                    let limit = queue.get(object)?.get(key)?.as_i64()?;
                    Some(u64::try_from(limit).ok())
                };
                match (
                    limit("arguments", "x-delivery-limit"),
                    limit("effective_policy_definition", "delivery-limit"),
                ) {
                    (Some(Some(a)), Some(Some(b))) => Some(Some(a.min(b))),
                    (Some(Some(a)), _) | (_, Some(Some(a))) => Some(Some(a)),
                    (a, b) => a.or(b),
                }
            },
        }
    }
}

/// The dead-letter exchange a queue's API object names; a queue argument wins over a policy, as
/// in RabbitMQ. A queue without a policy may show `effective_policy_definition` as `[]`.
fn dead_letter_exchange_of(queue: &serde_json::Value) -> Option<String> {
    let named = |object: &str, key: &str| {
        queue
            .get(object)
            .and_then(|table| table.get(key))
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
    };
    named("arguments", "x-dead-letter-exchange")
        .or_else(|| named("effective_policy_definition", "dead-letter-exchange"))
}

/// The API beside a broker: `http://<its host>:15672/`.
fn default_api_url(url: &BrokerUrl) -> Result<(Url, Option<String>, Option<String>)> {
    let host = match url.host() {
        host if host.contains(':') => format!("[{host}]"),
        host => host.to_string(),
    };
    let base = Url::parse(&format!("http://{host}:{API_PORT}/"))
        .map_err(|e| Error::InvalidUrl(InvalidUrl::new("API URL", &host, &e.to_string())))?;
    Ok((base, None, None))
}

/// The API URLs a command would try, in order, with any password masked: those of --api-url,
/// else one beside each URL of --url.
pub fn api_urls_shown(ctx: &Context) -> Result<Vec<String>> {
    let mut shown: Vec<String> = match &ctx.api_url {
        Some(raw) => list_items(std::slice::from_ref(raw), "API URL", "--api-url")
            .map_err(Error::InvalidUrl)?
            .into_iter()
            .map(|(item, _)| crate::uri::mask_password(item).unwrap_or_else(|| "****".into()))
            .collect(),
        None => ctx
            .urls
            .attempt_order()
            .map(|(_, url)| default_api_url(url).map(|(base, _, _)| base.to_string()))
            .collect::<Result<_>>()?,
    };
    shown.dedup();
    Ok(shown)
}

/// Splits an API URL into its base and the credentials it carries, if any.
fn parse_api_url(raw: &str) -> Result<(Url, Option<String>, Option<String>)> {
    let invalid = |reason: &str| Error::InvalidUrl(InvalidUrl::new("API URL", raw, reason));
    let mut url = Url::parse(raw).map_err(|e| invalid(&e.to_string()))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(invalid(&format!(
            "unknown scheme '{}': use http:// or https://",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(
            "expected http(s)://[user[:password]@]host[:port][/path]",
        ));
    }
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let (user, password) = if url.username().is_empty() {
        (None, None)
    } else {
        (
            Some(decode(url.username())),
            Some(decode(url.password().unwrap_or_default())),
        )
    };
    // Credentials travel in a header, never in a URL that an error message could show.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    Ok((url, user, password))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_url_credentials_leave_the_url() {
        let (url, user, password) =
            parse_api_url("https://ops:p%40ss@mq.example:443/rabbit/").unwrap();
        assert_eq!(url.as_str(), "https://mq.example/rabbit/");
        assert_eq!(user.as_deref(), Some("ops"));
        assert_eq!(password.as_deref(), Some("p@ss"));
    }

    #[test]
    fn bad_api_urls_hide_the_password() {
        for raw in [
            "ftp://u:hunter2@host/",
            "http://u:hunter2@host:99999/",
            "http://u:hunter2@/",
        ] {
            let err = parse_api_url(raw).unwrap_err().to_string();
            assert!(!err.contains("hunter2"), "{err}");
            assert!(err.starts_with("invalid API URL"), "{err}");
        }
    }

    #[test]
    fn a_dead_letter_exchange_comes_from_arguments_or_policy() {
        let of = |json: &str| dead_letter_exchange_of(&serde_json::from_str(json).unwrap());
        assert_eq!(
            of(r#"{"arguments":{},"effective_policy_definition":[]}"#),
            None
        );
        assert_eq!(
            of(r#"{"arguments":{"x-dead-letter-exchange":""}}"#),
            Some(String::new())
        );
        assert_eq!(
            of(r#"{"arguments":{},"effective_policy_definition":{"dead-letter-exchange":"dlx"}}"#),
            Some("dlx".into())
        );
    }

    /// Feeds `text` to a JsonArray in chunks of `size` bytes; the elements, or the error.
    fn split(text: &str, size: usize) -> std::result::Result<Vec<String>, String> {
        let mut array = JsonArray::default();
        let mut elements = Vec::new();
        for chunk in text.as_bytes().chunks(size) {
            array.push(chunk, |element| {
                elements.push(String::from_utf8(element.to_vec()).unwrap());
                Ok(())
            })?;
        }
        array.finish().map(|()| elements)
    }

    #[test]
    fn a_json_array_splits_into_its_elements_in_any_chunks() {
        let text = r#" [ {"name":"a,]}\"[","members":["x","y"]} ,
            {"name":"b","state":{"syncing":1}},7 ] "#;
        for size in [1, 2, 3, 7, 1000] {
            let elements = split(text, size).unwrap();
            assert_eq!(
                elements,
                [
                    r#"{"name":"a,]}\"[","members":["x","y"]}"#,
                    r#"{"name":"b","state":{"syncing":1}}"#,
                    "7"
                ],
                "chunks of {size}"
            );
            let row: QueueRow =
                serde_json::from_str(r#"{"vhost":"/","name":"b","state":{"syncing":1}}"#).unwrap();
            assert_eq!(row.state.as_deref(), Some(r#"{"syncing":1}"#));
        }
        assert_eq!(split("[]", 1).unwrap(), Vec::<String>::new());
        for bad in [
            "",
            "[{}",
            r#"{"error":"x"}"#,
            "[1,]",
            "[,1]",
            "[1]x",
            "<html>",
        ] {
            assert!(split(bad, 3).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_filter_matches_as_the_broker_does() {
        let matcher = name_matcher("^task\\.").unwrap();
        assert!(
            matcher.is_match(b"TASK.1"),
            "caseless, as the broker's re:run"
        );
        assert!(!matcher.is_match(b"tasks"));
        assert!(name_matcher("^é").unwrap().is_match("é-queue".as_bytes()));
        assert!(
            name_matcher("^(?!tmp)").is_none(),
            "look-ahead is left to the broker"
        );
    }

    #[test]
    fn queue_facts_take_the_type_and_a_ttl_from_arguments_or_policy() {
        let of = |json: &str| QueueFacts::of(&serde_json::from_str(json).unwrap());
        assert_eq!(
            of(r#"{"type":"quorum","arguments":{},"effective_policy_definition":[]}"#),
            QueueFacts {
                queue_type: "quorum".into(),
                message_ttl: None,
                delivery_limit: None,
            }
        );
        let limit = |json: &str| of(json).delivery_limit;
        assert_eq!(
            limit(r#"{"arguments":{"x-delivery-limit":5}}"#),
            Some(Some(5))
        );
        assert_eq!(
            limit(
                r#"{"arguments":{"x-delivery-limit":5},"effective_policy_definition":{"delivery-limit":3}}"#
            ),
            Some(Some(3))
        );
        assert_eq!(
            limit(r#"{"effective_policy_definition":{"delivery-limit":-1}}"#),
            Some(None),
            "unlimited"
        );
        let by_policy =
            of(r#"{"type":"classic","effective_policy_definition":{"message-ttl":500}}"#);
        assert_eq!(by_policy.message_ttl, Some(500));
        let both = of(
            r#"{"arguments":{"x-message-ttl":10},"effective_policy_definition":{"message-ttl":500}}"#,
        );
        assert_eq!(both.message_ttl, Some(10));
    }

    #[test]
    fn missing_numbers_are_none() {
        let row: QueueRow = serde_json::from_str(r#"{"name":"q","vhost":"/"}"#).unwrap();
        assert_eq!(row.messages_ready, None);
        assert_eq!(row.consumers, None);
    }
}
