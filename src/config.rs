//! Named brokers: the config file's `[broker.NAME]` sections, and the connection settings a
//! command uses, each with where it came from. First to last: an option on the command line,
//! the section `--broker` (or RMQLAB_BROKER) picks, the environment, the default. Nothing here
//! parses a URL or prints: [`crate::context::Context`] does that with what [`Settings`] holds.

use crate::{
    cli::GlobalArgs,
    error::{Error, Result},
    uri::UrlDefaults,
};
use serde::{Deserialize, Deserializer, de};
use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_RECONNECT_TIMEOUT: Duration = Duration::from_secs(300);

/// The environment variables that say where to connect: with RMQLAB_BROKER also in the
/// environment, which one the user meant is not clear.
const ADDRESS_VARIABLES: [&str; 3] = ["RMQLAB_URL", "RMQLAB_API_URL", "RMQLAB_STREAM_URL"];

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// An option on the command line (`--url`).
    Flag(&'static str),
    /// The `[broker.NAME]` section in use.
    Section {
        broker: String,
        file: PathBuf,
    },
    /// A variable of the environment.
    Env(&'static str),
    Default,
}

impl Origin {
    /// `flag`, `section`, `env` or `default`.
    pub fn kind(&self) -> &'static str {
        match self {
            Origin::Flag(_) => "flag",
            Origin::Section { .. } => "section",
            Origin::Env(_) => "env",
            Origin::Default => "default",
        }
    }

    /// The option, section or variable: `--url`, `broker.prod`, `RMQLAB_URL`.
    pub fn name(&self) -> Option<String> {
        match self {
            Origin::Flag(name) | Origin::Env(name) => Some(name.to_string()),
            Origin::Section { broker, .. } => Some(format!("broker.{broker}")),
            Origin::Default => None,
        }
    }

    /// How an error names a value of `key` from here: `--url`, `RMQLAB_URL`, `urls of
    /// [broker.prod] in /home/me/.config/rmqlab/config.toml`.
    pub fn label(&self, key: &str) -> String {
        match self {
            Origin::Section { broker, file } => {
                format!("{key} of [broker.{broker}] in {}", file.display())
            }
            Origin::Default => "the default".into(),
            other => other.name().unwrap_or_default(),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{} {name}", self.kind()),
            None => f.write_str(self.kind()),
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    pub value: T,
    pub origin: Origin,
}

/// The first layer that has a value, strongest first.
fn first<T, const N: usize>(layers: [(Option<T>, Origin); N]) -> Option<Setting<T>> {
    layers
        .into_iter()
        .find_map(|(value, origin)| value.map(|value| Setting { value, origin }))
}

/// The first layer that has a value, else the default.
fn first_or<T, const N: usize>(layers: [(Option<T>, Origin); N], default: T) -> Setting<T> {
    first(layers).unwrap_or(Setting {
        value: default,
        origin: Origin::Default,
    })
}

/// The connection settings of one run, each with its origin; URLs still raw.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The config file read, if any.
    pub file: Option<PathBuf>,
    /// The section's names in the file read.
    pub brokers: Vec<String>,
    /// The section in use, and what picked it (`--broker`, RMQLAB_BROKER).
    pub broker: Option<Setting<String>>,
    /// Each a comma-separated list, as `--url` takes.
    pub urls: Setting<Vec<String>>,
    /// `None`: beside the URL in use.
    pub api_url: Option<Setting<String>>,
    /// `None`: beside the URL in use.
    pub stream_url: Option<Setting<String>>,
    /// What the section gives the URLs that name no user, password or vhost.
    pub url_defaults: UrlDefaults,
    pub tls_ca_file: Option<Setting<PathBuf>>,
    pub tls_cert_file: Option<Setting<PathBuf>>,
    pub tls_key_file: Option<Setting<PathBuf>>,
    pub tls_insecure: Setting<bool>,
    pub connect_timeout: Setting<Duration>,
    pub api_timeout: Setting<Duration>,
    pub reconnect_timeout: Setting<Duration>,
    pub shuffle_urls: Setting<bool>,
    /// Said on stderr by whoever uses these settings (a password other users can read).
    pub warnings: Vec<String>,
}

impl Settings {
    /// The settings of the global options, the process's environment and the config file.
    pub fn new(global: &GlobalArgs) -> Result<Settings> {
        Settings::resolve(global, &process_env, false)
    }

    /// `config show`: as [`Settings::new`], and the default config file is read when it
    /// exists even without --broker, to list its brokers.
    pub fn for_show(global: &GlobalArgs) -> Result<Settings> {
        Settings::resolve(global, &process_env, true)
    }

    /// The settings from `global`, the environment `env` and the config file. The file is
    /// read when --broker, --config or their variables ask for it, or when `list_brokers` and
    /// it exists.
    pub fn resolve(
        global: &GlobalArgs,
        env: &dyn Fn(&str) -> Option<String>,
        list_brokers: bool,
    ) -> Result<Settings> {
        let broker = first([
            (global.broker.clone(), Origin::Flag("--broker")),
            (env("RMQLAB_BROKER"), Origin::Env("RMQLAB_BROKER")),
        ]);
        if let Some(Setting {
            value: name,
            origin: Origin::Env(_),
        }) = &broker
        {
            refuse_contradicting_variables(name, global, env)?;
        }
        let given_file = first([
            (global.config.clone(), Origin::Flag("--config")),
            (
                env("RMQLAB_CONFIG").map(PathBuf::from),
                Origin::Env("RMQLAB_CONFIG"),
            ),
        ]);
        let file = match (&given_file, &broker) {
            (Some(given), _) => Some(ConfigFile::read(&given.value)?),
            (None, Some(_)) => match default_path(env) {
                Some(path) => Some(ConfigFile::read(&path)?),
                None => return Err(Error::ConfigNotFound),
            },
            (None, None) => match default_path(env).filter(|path| list_brokers && path.exists()) {
                Some(path) => Some(ConfigFile::read(&path)?),
                None => None,
            },
        };
        let section = match (&broker, &file) {
            (Some(broker), Some(file)) => Some(file.section(&broker.value)?),
            _ => None,
        };
        let from_section = || Origin::Section {
            broker: broker.as_ref().map(|b| b.value.clone()).unwrap_or_default(),
            file: file.as_ref().map(|f| f.path.clone()).unwrap_or_default(),
        };
        let empty = Section::default();
        let section_values = section.unwrap_or(&empty);
        // A section with URLs owns the addresses: the API and stream URLs of the environment
        // would be another broker's.
        let env_address = |name: &'static str| match section_values.urls {
            Some(_) => (None, Origin::Env(name)),
            None => (env(name), Origin::Env(name)),
        };
        let tls_file = |flag: &Option<PathBuf>, name: &'static str, key: &Option<PathBuf>, var| {
            first([
                (flag.clone(), Origin::Flag(name)),
                (key.clone(), from_section()),
                (env(var).map(PathBuf::from), Origin::Env(var)),
            ])
        };
        Ok(Settings {
            urls: first_or(
                [
                    (
                        (!global.url.is_empty()).then(|| global.url.clone()),
                        Origin::Flag("--url"),
                    ),
                    (section_values.urls.clone(), from_section()),
                    (
                        env("RMQLAB_URL").map(|url| vec![url]),
                        Origin::Env("RMQLAB_URL"),
                    ),
                    (
                        env("AMQP_URL").map(|url| vec![url]),
                        Origin::Env("AMQP_URL"),
                    ),
                ],
                vec![crate::uri::DEFAULT_URL.to_string()],
            ),
            api_url: first([
                (
                    global.api_url.clone().filter(|url| !url.is_empty()),
                    Origin::Flag("--api-url"),
                ),
                (
                    section_values.api_url.as_ref().map(|urls| urls.join(",")),
                    from_section(),
                ),
                env_address("RMQLAB_API_URL"),
            ]),
            stream_url: first([
                (
                    global.stream_url.clone().filter(|url| !url.is_empty()),
                    Origin::Flag("--stream-url"),
                ),
                (section_values.stream_url.clone(), from_section()),
                env_address("RMQLAB_STREAM_URL"),
            ]),
            url_defaults: UrlDefaults {
                user: section_values.user.clone(),
                password: section_values.password.clone(),
                vhost: section_values.vhost.clone(),
            },
            tls_ca_file: tls_file(
                &global.tls_ca_file,
                "--tls-ca-file",
                &section_values.tls_ca_file,
                "RMQLAB_TLS_CA_FILE",
            ),
            tls_cert_file: tls_file(
                &global.tls_cert_file,
                "--tls-cert-file",
                &section_values.tls_cert_file,
                "RMQLAB_TLS_CERT_FILE",
            ),
            tls_key_file: tls_file(
                &global.tls_key_file,
                "--tls-key-file",
                &section_values.tls_key_file,
                "RMQLAB_TLS_KEY_FILE",
            ),
            tls_insecure: first_or(
                [
                    (
                        global.tls_insecure.then_some(true),
                        Origin::Flag("--tls-insecure"),
                    ),
                    (section_values.tls_insecure, from_section()),
                    (
                        env("RMQLAB_TLS_INSECURE")
                            .map(|value| boolish(&value))
                            .transpose()?,
                        Origin::Env("RMQLAB_TLS_INSECURE"),
                    ),
                ],
                false,
            ),
            connect_timeout: first_or(
                [
                    (global.connect_timeout, Origin::Flag("--connect-timeout")),
                    (section_values.connect_timeout, from_section()),
                ],
                DEFAULT_CONNECT_TIMEOUT,
            ),
            api_timeout: first_or(
                [
                    (global.api_timeout, Origin::Flag("--api-timeout")),
                    (section_values.api_timeout, from_section()),
                ],
                DEFAULT_API_TIMEOUT,
            ),
            reconnect_timeout: first_or(
                [
                    (
                        global.reconnect_timeout,
                        Origin::Flag("--reconnect-timeout"),
                    ),
                    (section_values.reconnect_timeout, from_section()),
                ],
                DEFAULT_RECONNECT_TIMEOUT,
            ),
            shuffle_urls: first_or(
                [
                    (
                        global.shuffle_urls.then_some(true),
                        Origin::Flag("--shuffle-urls"),
                    ),
                    (section_values.shuffle_urls, from_section()),
                ],
                false,
            ),
            warnings: file
                .iter()
                .filter_map(ConfigFile::exposure_warning)
                .collect(),
            brokers: file.as_ref().map(ConfigFile::names).unwrap_or_default(),
            file: file.map(|file| file.path),
            broker,
        })
    }

    /// Where the vhost comes from: the section when it gave the vhost to the first URL (which
    /// names none), else the URLs.
    pub fn vhost_origin(&self) -> Origin {
        match (&self.url_defaults.vhost, self.urls.value.first()) {
            (Some(_), Some(first))
                if crate::uri::names_no_vhost(crate::uri::split_list(first)[0]) =>
            {
                Origin::Section {
                    broker: self
                        .broker
                        .as_ref()
                        .map(|b| b.value.clone())
                        .unwrap_or_default(),
                    file: self.file.clone().unwrap_or_default(),
                }
            }
            _ => self.urls.origin.clone(),
        }
    }
}

/// RMQLAB_BROKER and an address variable together: neither says it overrides the other.
fn refuse_contradicting_variables(
    broker: &str,
    global: &GlobalArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<()> {
    let overridden = [
        !global.url.is_empty(),
        global.api_url.is_some(),
        global.stream_url.is_some(),
    ];
    let variables: Vec<&'static str> = ADDRESS_VARIABLES
        .into_iter()
        .zip(overridden)
        .filter(|(name, overridden)| !overridden && env(name).is_some())
        .map(|(name, _)| name)
        .collect();
    match variables.is_empty() {
        true => Ok(()),
        false => Err(Error::BrokerAndAddressInEnv {
            broker: broker.to_string(),
            variables,
        }),
    }
}

/// A variable's value, unless it is unset or empty.
fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// `$XDG_CONFIG_HOME/rmqlab/config.toml`, else `~/.config/rmqlab/config.toml`.
pub fn default_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    // The XDG base directory specification: a relative XDG_CONFIG_HOME is to be ignored.
    env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .or_else(|| env("HOME").map(|home| Path::new(&home).join(".config")))
        .map(|dir| dir.join("rmqlab").join("config.toml"))
}

/// A yes or no from the environment, as clap reads one for a flag (and a little more).
fn boolish(value: &str) -> Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(Error::InvalidVariable {
            name: "RMQLAB_TLS_INSECURE",
            reason: format!("'{value}' is not true or false"),
        }),
    }
}

/// One `[broker.NAME]` section. Every key is a global option of the same name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    #[serde(default, alias = "url", deserialize_with = "one_or_many")]
    urls: Option<Vec<String>>,
    #[serde(default, alias = "api_urls", deserialize_with = "one_or_many")]
    api_url: Option<Vec<String>>,
    stream_url: Option<String>,
    vhost: Option<String>,
    user: Option<String>,
    password: Option<String>,
    tls_ca_file: Option<PathBuf>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    tls_insecure: Option<bool>,
    #[serde(default, deserialize_with = "timeout")]
    connect_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "timeout")]
    api_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    reconnect_timeout: Option<Duration>,
    shuffle_urls: Option<bool>,
}

impl Section {
    /// Whether a password is written in it, as a key or inside a URL.
    fn holds_password(&self) -> bool {
        let in_url = |raw: &String| {
            crate::uri::split_list(raw)
                .into_iter()
                .any(|item| url::Url::parse(item).is_ok_and(|url| url.password().is_some()))
        };
        self.password.is_some()
            || self.urls.iter().flatten().any(in_url)
            || self.api_url.iter().flatten().any(in_url)
            || self.stream_url.iter().any(in_url)
    }

    /// Relative TLS paths are the config file's neighbours; `~/` is the home directory.
    fn anchor_paths(&mut self, dir: &Path, home: Option<&Path>) {
        for path in [
            &mut self.tls_ca_file,
            &mut self.tls_cert_file,
            &mut self.tls_key_file,
        ]
        .into_iter()
        .flatten()
        {
            if let (Ok(rest), Some(home)) = (path.strip_prefix("~"), home) {
                *path = home.join(rest);
            } else if path.is_relative() {
                *path = dir.join(&*path);
            }
        }
    }
}

/// The whole file: `[broker.NAME]` sections and nothing else.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileContent {
    #[serde(default)]
    broker: BTreeMap<String, Section>,
}

/// A config file, read and checked.
#[derive(Debug)]
pub struct ConfigFile {
    pub path: PathBuf,
    sections: BTreeMap<String, Section>,
    /// Group or others may read it.
    readable_by_others: bool,
}

impl ConfigFile {
    pub fn read(path: &Path) -> Result<ConfigFile> {
        use std::os::unix::fs::PermissionsExt;
        let unreadable = |source| Error::ConfigUnreadable {
            path: path.display().to_string(),
            source,
        };
        let text = std::fs::read_to_string(path).map_err(unreadable)?;
        let mode = std::fs::metadata(path)
            .map_err(unreadable)?
            .permissions()
            .mode();
        let mut file = ConfigFile::parse(path, &text)?;
        file.readable_by_others = mode & 0o044 != 0;
        Ok(file)
    }

    /// Checks `text`: an error names the file and line, never a value (it may be a password).
    pub fn parse(path: &Path, text: &str) -> Result<ConfigFile> {
        let content: FileContent = toml::from_str(text).map_err(|error| Error::Config {
            path: path.display().to_string(),
            line: error
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1),
            message: without_values(error.message()),
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let mut sections = content.broker;
        for section in sections.values_mut() {
            section.anchor_paths(dir, home.as_deref());
        }
        Ok(ConfigFile {
            path: path.to_path_buf(),
            sections,
            readable_by_others: false,
        })
    }

    pub fn names(&self) -> Vec<String> {
        self.sections.keys().cloned().collect()
    }

    fn section(&self, name: &str) -> Result<&Section> {
        self.sections.get(name).ok_or_else(|| Error::UnknownBroker {
            name: name.to_string(),
            path: self.path.display().to_string(),
            known: self.names(),
        })
    }

    /// A password that other users can read: say so, and how to stop it.
    fn exposure_warning(&self) -> Option<String> {
        let holds_password = self.sections.values().any(Section::holds_password);
        (self.readable_by_others && holds_password).then(|| {
            let path = self.path.display();
            format!(" [!] {path} holds a password and other users can read it: chmod 600 {path}")
        })
    }
}

/// A TOML or serde message without the value it quotes: "invalid type: string \"...\",
/// expected a boolean" becomes "invalid type: string, expected a boolean".
fn without_values(message: &str) -> String {
    let message = message.trim();
    for prefix in ["invalid type: ", "invalid value: ", "invalid length "] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((found, expected)) = rest.split_once(", expected")
        {
            let kind = found.split([' ', '`', '"']).next().unwrap_or_default();
            return format!("{prefix}{kind}, expected{expected}");
        }
    }
    message.replacen("unknown field", "unknown key", 1)
}

/// `urls = "amqp://..."` or `urls = ["amqp://...", ...]`.
fn one_or_many<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<String>>, D::Error> {
    struct OneOrMany;
    impl<'de> de::Visitor<'de> for OneOrMany {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a URL or a list of URLs")
        }
        fn visit_str<E: de::Error>(self, value: &str) -> Result<Vec<String>, E> {
            Ok(vec![value.to_string()])
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut urls = Vec::new();
            while let Some(url) = seq.next_element::<String>()? {
                urls.push(url);
            }
            match urls.is_empty() {
                true => Err(de::Error::custom("the list of URLs is empty")),
                false => Ok(urls),
            }
        }
    }
    deserializer.deserialize_any(OneOrMany).map(Some)
}

/// `connect_timeout = "5s"`, as the options take it.
fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text)
        .map(Some)
        .map_err(|error| de::Error::custom(format!("'{text}' is not a duration (5s, 1m): {error}")))
}

/// `connect_timeout = "5s"`: a limit, more than 0, as the options take it.
fn timeout<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(|error| {
        de::Error::custom(format!("'{text}' is not a duration (5s, 1m): {error}"))
    })?;
    crate::cli::timeout(&text)
        .map(Some)
        .map_err(|error| de::Error::custom(format!("'{text}': {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn global(args: &[&str]) -> GlobalArgs {
        let mut line = vec!["rmqlab"];
        line.extend(args);
        line.extend(["queues", "list"]);
        crate::cli::Cli::try_parse_from(line).unwrap().global
    }

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        }
    }

    fn parse(text: &str) -> Result<ConfigFile> {
        ConfigFile::parse(Path::new("/etc/rmqlab.toml"), text)
    }

    #[test]
    fn a_syntax_error_names_the_line_and_not_the_value() {
        let error = parse("[broker.a]\nurls = [\"amqp://h\"]\npassword = hunter2\n").unwrap_err();
        let text = error.to_string();
        assert!(text.starts_with("/etc/rmqlab.toml:3: "), "{text}");
        assert!(!text.contains("hunter2") && !text.contains('\n'), "{text}");
        assert_eq!(error.exit_code(), crate::exit::Code::Config);
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let text = parse("[broker.a]\nurls = \"amqp://h\"\n\nurlz = \"amqp://x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            text.starts_with("/etc/rmqlab.toml:4: unknown key `urlz`, expected one of"),
            "{text}"
        );
        let text = parse("[brokers.a]\n").unwrap_err().to_string();
        assert!(text.contains("unknown key `brokers`"), "{text}");
    }

    #[test]
    fn a_value_of_the_wrong_type_is_not_shown() {
        for (line, needle) in [
            (
                "tls_insecure = \"hunter2\"",
                "invalid type: string, expected a boolean",
            ),
            (
                "password = 123456789",
                "invalid type: integer, expected a string",
            ),
            (
                "urls = 5",
                "invalid type: integer, expected a URL or a list of URLs",
            ),
            ("connect_timeout = \"soon\"", "'soon' is not a duration"),
            ("api_timeout = \"0s\"", "'0s': it must be more than 0"),
            ("urls = []", "the list of URLs is empty"),
        ] {
            let text = parse(&format!("[broker.a]\n{line}\n"))
                .unwrap_err()
                .to_string();
            assert!(text.contains(needle), "{line}: {text}");
            assert!(
                !text.contains("hunter2") && !text.contains("123456789"),
                "{text}"
            );
        }
    }

    #[test]
    fn urls_are_one_string_or_a_list_and_paths_live_beside_the_file() {
        let file = parse(
            "[broker.one]\nurl = \"amqp://h1\"\ntls_ca_file = \"ca.pem\"\n\
             [broker.two]\nurls = [\"amqp://h1\", \"amqp://h2\"]\napi_urls = \"http://h1:15672\"\n",
        )
        .unwrap();
        assert_eq!(file.names(), ["one", "two"]);
        let one = file.section("one").unwrap();
        assert_eq!(one.urls.as_deref(), Some(&["amqp://h1".to_string()][..]));
        assert_eq!(one.tls_ca_file.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert_eq!(file.section("two").unwrap().urls.as_ref().unwrap().len(), 2);
        let mut section = Section {
            tls_cert_file: Some("~/certs/me.pem".into()),
            tls_key_file: Some("/abs/me.key".into()),
            ..Section::default()
        };
        section.anchor_paths(Path::new("/etc"), Some(Path::new("/home/me")));
        assert_eq!(
            (
                section.tls_cert_file.unwrap(),
                section.tls_key_file.unwrap()
            ),
            ("/home/me/certs/me.pem".into(), "/abs/me.key".into())
        );
        let error = file.section("three").unwrap_err().to_string();
        assert!(error.contains("one, two"), "{error}");
    }

    #[test]
    fn a_password_in_a_key_or_a_url_is_found() {
        let holds = |text: &str| {
            parse(text)
                .unwrap()
                .sections
                .values()
                .any(Section::holds_password)
        };
        assert!(holds("[broker.a]\npassword = \"x\"\n"));
        assert!(holds(
            "[broker.a]\nurls = [\"amqp://h1\", \"amqp://u:pw@h2\"]\n"
        ));
        assert!(holds(
            "[broker.a]\napi_url = \"http://h1, http://u:pw@h2\"\n"
        ));
        assert!(!holds("[broker.a]\nurls = \"amqp://u@h1\"\nuser = \"u\"\n"));
    }

    #[test]
    fn without_a_broker_the_environment_and_defaults_apply() {
        let settings = Settings::resolve(
            &global(&["--connect-timeout", "3s"]),
            &env_of(&[("AMQP_URL", "amqp://h"), ("RMQLAB_TLS_INSECURE", "yes")]),
            false,
        )
        .unwrap();
        assert_eq!(settings.urls.origin, Origin::Env("AMQP_URL"));
        assert_eq!(
            settings.connect_timeout.origin,
            Origin::Flag("--connect-timeout")
        );
        assert_eq!(settings.api_timeout.value, DEFAULT_API_TIMEOUT);
        assert!(settings.tls_insecure.value);
        assert!(settings.file.is_none() && settings.api_url.is_none());
    }

    #[test]
    fn the_broker_variable_and_an_address_variable_contradict() {
        let env = env_of(&[("RMQLAB_BROKER", "dev"), ("RMQLAB_URL", "amqp://h")]);
        let error = Settings::resolve(&global(&[]), &env, false).unwrap_err();
        assert_eq!(error.exit_code(), crate::exit::Code::Usage);
        assert!(error.to_string().contains("RMQLAB_URL"), "{error}");
        // An option settles it: --url names the URL, and the file is what is missing then.
        let error = Settings::resolve(&global(&["--url", "amqp://h"]), &env, false).unwrap_err();
        assert!(
            !matches!(error, Error::BrokerAndAddressInEnv { .. }),
            "{error}"
        );
    }

    #[test]
    fn every_key_of_a_section_is_a_setting_of_the_section() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "[broker.all]\nurls = \"amqp://h1\"\napi_url = [\"http://h1:15672\"]\n\
             stream_url = \"rabbitmq-stream://h1\"\nvhost = \"v\"\nuser = \"u\"\n\
             password = \"p\"\ntls_ca_file = \"/ca\"\ntls_cert_file = \"/cert\"\n\
             tls_key_file = \"/key\"\ntls_insecure = true\nconnect_timeout = \"1s\"\n\
             api_timeout = \"2s\"\nreconnect_timeout = \"3s\"\nshuffle_urls = true\n",
        )
        .unwrap();
        let global = global(&["--config", path.to_str().unwrap(), "--broker", "all"]);
        let settings = Settings::resolve(&global, &env_of(&[]), false).unwrap();
        let section = Origin::Section {
            broker: "all".into(),
            file: path.clone(),
        };
        let origins = [
            &settings.urls.origin,
            &settings.api_url.as_ref().unwrap().origin,
            &settings.stream_url.as_ref().unwrap().origin,
            &settings.tls_ca_file.as_ref().unwrap().origin,
            &settings.tls_cert_file.as_ref().unwrap().origin,
            &settings.tls_key_file.as_ref().unwrap().origin,
            &settings.tls_insecure.origin,
            &settings.connect_timeout.origin,
            &settings.api_timeout.origin,
            &settings.reconnect_timeout.origin,
            &settings.shuffle_urls.origin,
        ];
        assert!(
            origins.iter().all(|origin| **origin == section),
            "{origins:?}"
        );
        assert_eq!(settings.vhost_origin(), section);
        assert_eq!(
            (settings.tls_insecure.value, settings.shuffle_urls.value),
            (true, true)
        );
        assert_eq!(
            settings.reconnect_timeout.value + settings.api_timeout.value,
            Duration::from_secs(5)
        );
        assert_eq!(
            settings.url_defaults,
            UrlDefaults {
                user: Some("u".into()),
                password: Some("p".into()),
                vhost: Some("v".into())
            }
        );
    }

    #[test]
    fn the_default_file_follows_xdg() {
        let path = default_path(&env_of(&[("XDG_CONFIG_HOME", "/x"), ("HOME", "/h")]));
        assert_eq!(path.unwrap(), Path::new("/x/rmqlab/config.toml"));
        let path = default_path(&env_of(&[("XDG_CONFIG_HOME", "rel"), ("HOME", "/h")]));
        assert_eq!(path.unwrap(), Path::new("/h/.config/rmqlab/config.toml"));
    }
}
