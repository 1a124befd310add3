//! `config show`: the connection settings a command would use, passwords masked, and where each
//! comes from.

use crate::{
    cli::{ConfigCommand, ConfigShowArgs, GlobalArgs, ShowFormat},
    config::{Origin, Setting, Settings},
    context::{Context, Status},
    error::Result,
    exit::Exit,
    management,
    uri::StreamUrl,
};
use serde_json::{Value, json};

pub fn run(global: &GlobalArgs, command: ConfigCommand) -> Result<Exit> {
    match command {
        ConfigCommand::Show(args) => show(global, &args),
    }
}

fn show(global: &GlobalArgs, args: &ConfigShowArgs) -> Result<Exit> {
    let settings = Settings::for_show(global)?;
    let ctx = Context::from_settings(&settings, Status::new(global))?;
    let rows = rows(&settings, &ctx)?;
    let file = settings
        .file
        .as_ref()
        .map(|path| path.display().to_string());
    let output = match args.output {
        ShowFormat::Text => {
            let absent = crate::config::default_path(&|name| std::env::var(name).ok())
                .map(|path| format!("{NONE} (no file at {})", path.display()));
            let shown = file.clone().or(absent);
            render_text(shown.as_deref(), &settings.brokers, &rows)
        }
        ShowFormat::Json => {
            let mut object = serde_json::Map::new();
            object.insert("config_file".into(), json!(file));
            object.insert("brokers".into(), json!(settings.brokers));
            for row in &rows {
                object.insert(row.name.into(), row.to_json());
            }
            format!("{}\n", Value::Object(object))
        }
    };
    super::print(output.as_bytes())?;
    Ok(Exit::Success)
}

/// One setting as shown: its values (a list for URLs) and where they come from.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    name: &'static str,
    values: Vec<String>,
    /// `urls` and `api_url` are lists in JSON even with one item.
    list: bool,
    origin: Origin,
    /// Said after the origin (`beside the URL in use`).
    note: Option<&'static str>,
}

impl Row {
    fn new(name: &'static str, value: impl ToString, origin: &Origin) -> Row {
        Row {
            name,
            values: vec![value.to_string()],
            list: false,
            origin: origin.clone(),
            note: None,
        }
    }

    fn to_json(&self) -> Value {
        let value = match (self.list, self.values.first()) {
            (true, _) => json!(self.values),
            (false, Some(value)) if value == NONE => Value::Null,
            (false, Some(value)) => match value.as_str() {
                "true" => json!(true),
                "false" => json!(false),
                _ => json!(value),
            },
            (false, None) => Value::Null,
        };
        json!({"value": value, "from": self.origin.kind(), "name": self.origin.name()})
    }
}

/// How a setting that is not set shows in text.
const NONE: &str = "-";

fn rows(settings: &Settings, ctx: &Context) -> Result<Vec<Row>> {
    let optional_path = |name, setting: &Option<Setting<std::path::PathBuf>>| match setting {
        Some(setting) => Row::new(name, setting.value.display(), &setting.origin),
        None => Row::new(name, NONE, &Origin::Default),
    };
    let beside = |row: Row| Row {
        note: Some("beside the URL in use"),
        ..row
    };
    let duration = |name, setting: &Setting<std::time::Duration>| {
        Row::new(
            name,
            humantime::format_duration(setting.value),
            &setting.origin,
        )
    };
    let mut rows = Vec::new();
    if let Some(broker) = &settings.broker {
        rows.push(Row::new("broker", &broker.value, &broker.origin));
    }
    rows.push(Row {
        values: ctx.urls.iter().map(ToString::to_string).collect(),
        list: true,
        ..Row::new("urls", "", &settings.urls.origin)
    });
    let api = Row {
        values: management::api_urls_shown(ctx)?,
        list: true,
        ..Row::new("api_url", "", &Origin::Default)
    };
    rows.push(match &settings.api_url {
        Some(given) => Row {
            origin: given.origin.clone(),
            ..api
        },
        None => beside(api),
    });
    rows.push(match (&ctx.stream_url_given, &settings.stream_url) {
        (Some(url), Some(given)) => Row::new("stream_url", url, &given.origin),
        _ => beside(Row::new(
            "stream_url",
            StreamUrl::from_broker(ctx.url()),
            &Origin::Default,
        )),
    });
    rows.push(Row::new(
        "vhost",
        ctx.url().vhost(),
        &settings.vhost_origin(),
    ));
    rows.push(optional_path("tls_ca_file", &settings.tls_ca_file));
    rows.push(optional_path("tls_cert_file", &settings.tls_cert_file));
    rows.push(optional_path("tls_key_file", &settings.tls_key_file));
    rows.push(Row::new(
        "tls_insecure",
        settings.tls_insecure.value,
        &settings.tls_insecure.origin,
    ));
    rows.push(duration("connect_timeout", &settings.connect_timeout));
    rows.push(duration("api_timeout", &settings.api_timeout));
    rows.push(duration("reconnect_timeout", &settings.reconnect_timeout));
    rows.push(Row::new(
        "shuffle_urls",
        settings.shuffle_urls.value,
        &settings.shuffle_urls.origin,
    ));
    Ok(rows)
}

/// `NAME  VALUE  FROM`, aligned; a list takes a line per item, its origin on the first.
fn render_text(file: Option<&str>, brokers: &[String], rows: &[Row]) -> String {
    let mut lines: Vec<[String; 3]> = vec![
        [
            "config_file".into(),
            file.unwrap_or(NONE).into(),
            String::new(),
        ],
        [
            "brokers".into(),
            match brokers.is_empty() {
                true => NONE.into(),
                false => brokers.join(", "),
            },
            String::new(),
        ],
    ];
    for row in rows {
        let from = match row.note {
            Some(note) => format!("{} ({note})", row.origin),
            None => row.origin.to_string(),
        };
        for (index, value) in row.values.iter().enumerate() {
            lines.push(match index {
                0 => [row.name.into(), value.clone(), from.clone()],
                _ => [String::new(), value.clone(), String::new()],
            });
        }
    }
    let width = |column: usize| {
        lines
            .iter()
            .map(|line| line[column].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (name_width, value_width) = (width(0), width(1));
    let mut text = String::new();
    for [name, value, from] in &lines {
        let line = format!("{name:<name_width$}  {value:<value_width$}  {from}");
        text.push_str(line.trim_end());
        text.push('\n');
    }
    crate::terminal::escape_controls(&text, true).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_aligns_and_lists_take_a_line_each() {
        let section = Origin::Section {
            broker: "prod".into(),
            file: "/c.toml".into(),
        };
        let rows = [
            Row {
                values: vec!["amqp://a".into(), "amqp://bb".into()],
                list: true,
                ..Row::new("urls", "", &section)
            },
            Row::new("vhost", "shop", &Origin::Flag("--url")),
        ];
        assert_eq!(
            render_text(Some("/c.toml"), &["dev".into(), "prod".into()], &rows),
            "config_file  /c.toml\n\
             brokers      dev, prod\n\
             urls         amqp://a   section broker.prod\n\
             \x20            amqp://bb\n\
             vhost        shop       flag --url\n"
        );
        assert_eq!(
            rows[0].to_json(),
            json!({"value": ["amqp://a", "amqp://bb"], "from": "section", "name": "broker.prod"})
        );
        assert_eq!(
            Row::new("tls_ca_file", NONE, &Origin::Default).to_json(),
            json!({"value": null, "from": "default", "name": null})
        );
    }
}
