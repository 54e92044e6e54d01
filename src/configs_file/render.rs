//! Writing a configs file (what `tollgate configs export` prints): each config's spec,
//! sorted by identity so that two exports of one fleet are equal and diff well, with
//! the fields people read first first.

use super::format::Format;
use super::spec::spec;
use crate::model::ModelConfig;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

/// Keys in this order, then any others alphabetically.
const ORDER: &[&str] = &[
    "model_name",
    "provider",
    "scope",
    "scope_id",
    "calendar_aligned",
    "budgets",
    "rate_limit",
];

/// A spec that serializes its keys in `ORDER`.
struct Ordered<'a>(&'a Map<String, Value>);

impl Serialize for Ordered<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        let known = ORDER.iter().filter_map(|k| self.0.get_key_value(*k));
        let rest = self.0.iter().filter(|(k, _)| !ORDER.contains(&k.as_str()));
        for (k, v) in known.chain(rest) {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[derive(serde::Serialize)]
struct File<'a> {
    configs: Vec<Ordered<'a>>,
}

/// The configs file holding `configs`.
pub fn render(configs: &[ModelConfig], format: Format) -> Result<String, String> {
    let mut specs: Vec<(String, Map<String, Value>)> =
        configs.iter().map(|c| (c.identity(), spec(c))).collect();
    specs.sort_by(|a, b| a.0.cmp(&b.0));
    let file = File {
        configs: specs.iter().map(|(_, s)| Ordered(s)).collect(),
    };
    match format {
        Format::Yaml => serde_yaml_ng::to_string(&file).map_err(|e| e.to_string()),
        Format::Json => serde_json::to_string_pretty(&file)
            .map(|s| s + "\n")
            .map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configs_file::format::parse;
    use crate::configs_file::spec::same_spec;
    use chrono::Utc;

    #[test]
    fn a_rendered_file_reads_back_as_the_same_configs() {
        let yaml = r#"
configs:
  - model_name: gpt-4o
    provider: openai
    scope: virtual_key
    scope_id: vk-1
    calendar_aligned: true
    budgets: [{max_limit: 25.5, reset_duration: monthly}, {max_limit: 1, reset_duration: 1d}]
    rate_limit: {token_max_limit: 50000, token_reset_duration: 1h}
  - model_name: "*"
"#;
        let first = parse(yaml.as_bytes(), Format::Yaml, Utc::now()).unwrap();
        let configs: Vec<ModelConfig> = first.iter().map(|d| d.config.clone()).collect();
        for format in [Format::Yaml, Format::Json] {
            let text = render(&configs, format).unwrap();
            let again = parse(text.as_bytes(), format, Utc::now()).unwrap();
            assert_eq!(again.len(), 2, "{text}");
            for d in &again {
                let same = configs
                    .iter()
                    .find(|c| c.identity() == d.identity())
                    .unwrap();
                assert!(same_spec(same, &d.config), "{text}");
            }
        }
        let text = render(&configs, Format::Yaml).unwrap();
        assert!(
            text.find("model_name: gpt-4o").unwrap() < text.find("provider: openai").unwrap(),
            "{text}"
        );
        let ids = text
            .lines()
            .filter(|l| l.trim_start_matches([' ', '-']).starts_with("id:"));
        assert_eq!(ids.count(), 0, "{text}");
        assert!(!text.contains("created_at"), "{text}");
    }
}
