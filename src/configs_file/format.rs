//! Reading a configs file: YAML or JSON by extension, a top-level `configs:` list of
//! create bodies, each validated by the management API's own create validation. Every
//! error is collected (not just the first) and names its place: the line and column of
//! a syntax error, `configs[3] (virtual_key vk-1 gpt-4o): rate_limit…` for the rest.

use super::spec::{label, label_parts};
use super::strict::Strict;
use crate::model::ModelConfig;
use crate::model::config::CreateModelConfig;
use crate::model::validate::create_config;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

impl Format {
    /// By extension: `.yaml`/`.yml` or `.json` (any letter case).
    pub fn of(path: &Path) -> Result<Format, String> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("yaml" | "yml") => Ok(Format::Yaml),
            Some("json") => Ok(Format::Json),
            _ => Err(format!(
                "{}: a configs file is YAML or JSON, named *.yaml, *.yml or *.json",
                path.display()
            )),
        }
    }
}

/// One problem in a file, and where it is (`place` empty: the file as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub place: String,
    pub message: String,
}

impl FileError {
    fn at(place: impl Into<String>, message: impl Into<String>) -> Self {
        FileError {
            place: place.into(),
            message: message.into(),
        }
    }

    pub fn whole(message: impl Into<String>) -> Self {
        FileError::at("", message)
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.place.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.place, self.message)
        }
    }
}

/// A config the file asks for.
#[derive(Debug, Clone)]
pub struct Desired {
    /// Its position in the file's `configs` list.
    pub index: usize,
    /// As the management API's create would make it (its ids and times are the parse's).
    pub config: ModelConfig,
    /// The create body as written.
    pub body: Value,
}

impl Desired {
    pub fn identity(&self) -> String {
        self.config.identity()
    }

    /// `configs[3] (virtual_key vk-1 gpt-4o)`.
    pub fn place(&self) -> String {
        format!("configs[{}] ({})", self.index, label(&self.config))
    }
}

/// Reads and validates the file at `path`.
pub fn read(path: &Path, now: DateTime<Utc>) -> Result<Vec<Desired>, Vec<FileError>> {
    let format = Format::of(path).map_err(|e| vec![FileError::whole(e)])?;
    let bytes = std::fs::read(path).map_err(|e| {
        vec![FileError::whole(format!(
            "cannot read {}: {e}",
            path.display()
        ))]
    })?;
    parse(&bytes, format, now)
}

/// Validates a file's content.
pub fn parse(
    bytes: &[u8],
    format: Format,
    now: DateTime<Utc>,
) -> Result<Vec<Desired>, Vec<FileError>> {
    let root = syntax(bytes, format).map_err(|e| vec![e])?;
    let items = configs_list(root).map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    let mut desired = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        match entry(index, item, now) {
            Ok(d) => desired.push(d),
            Err(mut e) => errors.append(&mut e),
        }
    }
    let mut first: HashMap<String, &Desired> = HashMap::new();
    for d in &desired {
        if let Some(earlier) = first.get(&d.identity()) {
            errors.push(FileError::at(
                d.place(),
                format!(
                    "same scope, scope_id, model_name and provider as configs[{}]; one config per identity",
                    earlier.index
                ),
            ));
        } else {
            first.insert(d.identity(), d);
        }
    }
    if errors.is_empty() {
        Ok(desired)
    } else {
        Err(errors)
    }
}

fn syntax(bytes: &[u8], format: Format) -> Result<Value, FileError> {
    let parsed = match format {
        Format::Json => serde_json::from_slice::<Strict>(bytes).map_err(|e| e.to_string()),
        Format::Yaml => serde_yaml_ng::from_slice::<Strict>(bytes).map_err(|e| e.to_string()),
    };
    let kind = match format {
        Format::Json => "JSON",
        Format::Yaml => "YAML",
    };
    parsed
        .map(|Strict(v)| v)
        .map_err(|e| FileError::whole(format!("invalid {kind}: {e}")))
}

/// The top level: exactly one key, `configs`, a list. A file without it is an error, not
/// an empty set (with prune it would delete every config).
fn configs_list(root: Value) -> Result<Vec<Value>, FileError> {
    const SHAPE: &str =
        "a configs file is a mapping with one key, `configs`: a list of model configs";
    let Value::Object(mut top) = root else {
        return Err(FileError::whole(SHAPE));
    };
    if let Some(other) = top.keys().find(|k| *k != "configs") {
        return Err(FileError::at(
            other.clone(),
            format!("unknown key; {SHAPE}"),
        ));
    }
    match top.remove("configs") {
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(FileError::at("configs", "must be a list of model configs")),
        None => Err(FileError::at("configs", format!("missing; {SHAPE}"))),
    }
}

/// One create body: its JSON types, unknown keys (a typo must not drop a limit silently)
/// and the create validation.
fn entry(index: usize, item: Value, now: DateTime<Utc>) -> Result<Desired, Vec<FileError>> {
    let Value::Object(fields) = &item else {
        return Err(vec![FileError::at(
            format!("configs[{index}]"),
            "must be a mapping: a create body of the management API",
        )]);
    };
    let place = format!("configs[{index}] ({})", raw_label(fields));
    let mut unknown = Vec::new();
    let typed = serde_path_to_error::deserialize::<_, CreateModelConfig>(
        serde_ignored::Deserializer::new(item.clone(), &mut |path: serde_ignored::Path| {
            unknown.push(field_path(&path))
        }),
    );
    let mut errors: Vec<FileError> = unknown
        .into_iter()
        .map(|field| FileError::at(&place, format!("{field}: unknown field")))
        .collect();
    let body = match typed {
        Ok(body) => body,
        Err(e) => {
            let path = e.path().to_string();
            let message = match path.as_str() {
                "." => e.into_inner().to_string(),
                _ => format!("{path}: {}", e.into_inner()),
            };
            errors.push(FileError::at(&place, message));
            return Err(errors);
        }
    };
    match create_config(body, now) {
        Ok(config) if errors.is_empty() => Ok(Desired {
            index,
            config,
            body: item,
        }),
        Ok(_) => Err(errors),
        Err(e) => {
            errors.push(FileError::at(&place, e.0));
            Err(errors)
        }
    }
}

/// `budgets[0].foo`, as the other errors name fields.
fn field_path(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => match field_path(parent) {
            head if head.is_empty() => key.clone(),
            head => format!("{head}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => field_path(parent),
    }
}

/// A label from whatever the entry says, valid or not.
fn raw_label(fields: &Map<String, Value>) -> String {
    let text = |k: &str| fields.get(k).and_then(Value::as_str);
    let scope = text("scope").filter(|s| !s.is_empty()).unwrap_or("global");
    let scope_id = if scope == "global" {
        None
    } else {
        text("scope_id")
    };
    label_parts(scope, scope_id, text("model_name"), text("provider"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(yaml: &str) -> Vec<String> {
        parse(yaml.as_bytes(), Format::Yaml, Utc::now())
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_valid_file_gives_one_config_per_entry() {
        let yaml = r#"
configs:
  - model_name: "*"
    rate_limit: {request_max_limit: 100, request_reset_duration: 1m}
  - model_name: gpt-4o
    provider: openai
    scope: virtual_key
    scope_id: vk-1
    budgets: [{max_limit: 25, reset_duration: monthly}]
"#;
        let d = parse(yaml.as_bytes(), Format::Yaml, Utc::now()).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[1].place(), "configs[1] (virtual_key vk-1 openai/gpt-4o)");
        assert_eq!(d[1].config.budgets[0].max_limit, 25.0);
        let json = r#"{"configs": [{"model_name": "m", "scope": "user", "scope_id": "u"}]}"#;
        assert_eq!(
            parse(json.as_bytes(), Format::Json, Utc::now())
                .unwrap()
                .len(),
            1
        );
        assert!(
            parse(b"configs: []", Format::Yaml, Utc::now())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn every_error_is_reported_with_its_place() {
        let e = errors(
            r#"
configs:
  - model_name: gpt-4o
    scope: virtual_key
    scope_id: vk-1
    rate_limit: {token_max_limit: 0, token_reset_duration: 1m}
  - model_name: m
    scope: user
  - model_name: gpt-4o
    scope: virtual_key
    scope_id: vk-1
  - model_name: x
    budgets: [{max_limit: 1, reset_duration: soon, id_: 3}]
    rate_limt: {}
  - model_name: y
    budgets: [{max_limit: lots, reset_duration: 1d}]
  - just a string
"#,
        );
        assert_eq!(e.len(), 7, "{e:#?}");
        assert!(
            e[0].starts_with("configs[0] (virtual_key vk-1 gpt-4o): rate_limit.token_max_limit"),
            "{}",
            e[0]
        );
        assert!(
            e[1].starts_with("configs[1] (user m): scope_id is required"),
            "{}",
            e[1]
        );
        assert!(
            e.iter()
                .any(|l| l == "configs[3] (global x): budgets[0].id_: unknown field"),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|l| l.starts_with("configs[3] (global x): rate_limt: unknown field")),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|l| l.starts_with("configs[3] (global x): budgets[0].reset_duration")),
            "{e:#?}"
        );
        assert!(e.iter().any(|l| l.starts_with("configs[4] (global y): budgets[0].max_limit: invalid type")), "{e:#?}");
        assert!(
            e.iter()
                .any(|l| l == "configs[5]: must be a mapping: a create body of the management API"),
            "{e:#?}"
        );
        let dup = errors(
            "configs:\n  - {model_name: a}\n  - {model_name: b}\n  - {model_name: a, scope: global}\n",
        );
        assert_eq!(dup.len(), 1);
        assert!(
            dup[0].starts_with("configs[2] (global a): same scope")
                && dup[0].contains("configs[0]"),
            "{dup:?}"
        );
    }

    #[test]
    fn syntax_and_shape_errors_name_the_line_or_the_key() {
        let e = errors("configs:\n  - model_name: a\n   bad: [\n");
        assert!(
            e[0].starts_with("invalid YAML: ") && e[0].contains("line "),
            "{e:?}"
        );
        let e = parse(b"{\"configs\": [}", Format::Json, Utc::now()).unwrap_err();
        assert!(e[0].message.contains("line 1 column"), "{e:?}");
        assert!(errors("")[0].contains("one key, `configs`"));
        assert!(errors("config: []")[0].starts_with("config: unknown key"));
        assert!(errors("configs: {}")[0].starts_with("configs: must be a list"));
        assert!(
            errors("configs:\n  - model_name: \"*\"\n    model_name: m\n")[0]
                .contains("duplicate key")
        );
    }

    #[test]
    fn the_format_comes_from_the_extension() {
        assert_eq!(Format::of(Path::new("a/b.yml")), Ok(Format::Yaml));
        assert_eq!(Format::of(Path::new("b.YAML")), Ok(Format::Yaml));
        assert_eq!(Format::of(Path::new("b.json")), Ok(Format::Json));
        assert!(Format::of(Path::new("b.toml")).is_err());
        assert!(Format::of(Path::new("configs")).is_err());
    }
}
