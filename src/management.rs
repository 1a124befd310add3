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
use percent_encoding::percent_decode_str;
use reqwest::{Client, RequestBuilder, Response, StatusCode};
use serde::{Deserialize, Serialize};
use std::{sync::Arc, time::Duration};
use url::Url;

/// The default port of the management plugin.
const API_PORT: u16 = 15672;
/// Queues asked for per request.
pub const PAGE_SIZE: u32 = 500;

/// One queue as `queues list` shows it; the field names are the API's.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct QueueRow {
    pub vhost: String,
    pub name: String,
    #[serde(default)]
    pub messages_ready: Option<u64>,
    #[serde(default)]
    pub messages_unacknowledged: Option<u64>,
    #[serde(default)]
    pub consumers: Option<u64>,
}

/// The fields `queues list` asks for (`columns=`).
const QUEUE_COLUMNS: &str = "vhost,name,messages_ready,messages_unacknowledged,consumers";

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
        let url = self.endpoint(&["whoami"]);
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
            user,
            password,
        })
    }

    /// The URL of an API path, each segment percent-encoded (`/` in a vhost becomes `%2F`).
    fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("http(s) URLs have a path")
            .pop_if_empty()
            .push("api")
            .extend(segments);
        url
    }

    fn request(&self, method: reqwest::Method, url: Url) -> RequestBuilder {
        self.client
            .request(method, url)
            .basic_auth(&self.user, Some(&self.password))
    }

    /// Every queue (of `vhost`, or of all vhosts), optionally only those whose name matches the
    /// regular expression `filter`. The first page tells how many there are; the others are
    /// fetched concurrently.
    pub async fn list_queues(
        &self,
        vhost: Option<&str>,
        filter: Option<&str>,
    ) -> Result<Vec<QueueRow>> {
        let what = match vhost {
            Some(vhost) => format!("vhost '{vhost}'"),
            None => "queues".into(),
        };
        let page_request = |page: u32| {
            let mut url = match vhost {
                Some(vhost) => self.endpoint(&["queues", vhost]),
                None => self.endpoint(&["queues"]),
            };
            {
                let mut query = url.query_pairs_mut();
                query
                    .append_pair("page", &page.to_string())
                    .append_pair("page_size", &PAGE_SIZE.to_string())
                    .append_pair("columns", QUEUE_COLUMNS);
                if let Some(filter) = filter {
                    query
                        .append_pair("name", filter)
                        .append_pair("use_regex", "true");
                }
            }
            self.request(reqwest::Method::GET, url)
        };
        let mut pages = tokio::task::JoinSet::new();
        let mut spawn = |page: u32| {
            let request = page_request(page);
            let api = self.caller.clone();
            let what = what.clone();
            pages.spawn(async move {
                let page_rows = api.fetch::<Page<QueueRow>>(request, &what).await;
                (page, page_rows.map(|page_rows| page_rows.items))
            });
        };
        // Each page costs the broker a walk over every queue: ask for the second page before
        // the first tells whether there is one. When there is not, its answer (an error: "page
        // out of range") is dropped.
        spawn(2);
        let first: Page<QueueRow> = self.fetch(page_request(1), &what).await?;
        for page in 3..=first.page_count {
            spawn(page);
        }
        let mut rows = first.items;
        let mut later = Vec::new();
        while let Some(joined) = pages.join_next().await {
            let (page, items) = joined.expect("a page request panicked");
            if page <= first.page_count {
                later.push((page, items?));
            }
        }
        later.sort_by_key(|(page, _)| *page);
        rows.extend(later.into_iter().flat_map(|(_, items)| items));
        Ok(rows)
    }

    /// Removes every ready message of a queue.
    pub async fn purge_queue(&self, vhost: &str, name: &str) -> Result<()> {
        let url = self.endpoint(&["queues", vhost, name, "contents"]);
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
        let mut url = self.endpoint(&["queues", vhost, name]);
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
        let url = self.endpoint(&["queues", vhost, name]);
        let what = format!("queue '{name}' in vhost '{vhost}'");
        let queue: serde_json::Value = self
            .fetch(self.request(reqwest::Method::GET, url), &what)
            .await?;
        Ok(dead_letter_exchange_of(&queue))
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
        let body: ApiError = serde_json::from_slice(&body).unwrap_or_default();
        if status == StatusCode::NOT_FOUND {
            // A path that is not the API's (a wrong --api-url) is a 404 as well.
            self.is_rabbitmq().await?;
        }
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
        sent.map_err(Error::Interrupted)?.map_err(|source| {
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
        })
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

    #[test]
    fn missing_numbers_are_none() {
        let row: QueueRow = serde_json::from_str(r#"{"name":"q","vhost":"/"}"#).unwrap();
        assert_eq!(row.messages_ready, None);
        assert_eq!(row.consumers, None);
    }
}
