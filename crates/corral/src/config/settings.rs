//! Every setting, read from its one declaration: the serde structs of [`Config`] and their doc
//! comments, through the JSON schema `schemars` derives from them. From that catalog come the
//! commented TOML of `corral config` ([`render`]), the table in `docs/operations.md`
//! ([`markdown`]), an environment variable for every key ([`from_environment`]) and `--set`
//! ([`set`]). A new field is documented and configurable everywhere by being declared.

use super::Config;
use anyhow::{Context, anyhow};
use serde_json::Value as Json;
use std::collections::HashSet;

/// One key of the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    /// The key as in the TOML file: `data_dir`, `coap.max_observers`, `rules.outbox.timeout_ms`.
    pub key: String,
    /// The field's doc comment, on one line.
    pub doc: String,
    /// The JSON schema types of its value (`string`, `integer`, `boolean`, `array`, `null`...).
    types: Vec<String>,
}

impl Setting {
    /// Its environment variable: `CORRAL_` + the key in upper case with `.` as `_`.
    pub fn env(&self) -> String {
        format!("CORRAL_{}", self.key.replace('.', "_").to_uppercase())
    }

    fn table(&self) -> &str {
        self.key.rsplit_once('.').map_or("", |(table, _)| table)
    }

    fn is(&self, kind: &str) -> bool {
        self.types.iter().any(|t| t == kind)
    }

    /// A value given as text (an environment variable, `--set`), typed as the setting wants.
    fn parse(&self, raw: &str) -> anyhow::Result<toml::Value> {
        let raw = raw.trim();
        Ok(if self.is("string") {
            toml::Value::String(raw.to_string())
        } else if self.is("boolean") {
            toml::Value::Boolean(raw.parse().map_err(|_| anyhow!("{}: expects true or false, not {raw:?}", self.key))?)
        } else if self.is("integer") {
            toml::Value::Integer(raw.parse().map_err(|_| anyhow!("{}: expects a whole number, not {raw:?}", self.key))?)
        } else if self.is("array") && !raw.starts_with('[') {
            // `a,b,c` as well as TOML's ["a", "b", "c"].
            toml::Value::Array(raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| s.into()).collect())
        } else {
            let table: toml::Table = toml::from_str(&format!("v = {raw}")).with_context(|| format!("{}: {raw:?}", self.key))?;
            table["v"].clone()
        })
    }
}

/// Every setting and every table (with its doc), in the order of the declarations.
pub fn catalog() -> (Vec<Setting>, Vec<(String, String)>) {
    let root = serde_json::to_value(schemars::schema_for!(Config)).expect("the config schema is JSON");
    let (mut settings, mut tables) = (Vec::new(), Vec::new());
    walk(&root, &root, "", &mut settings, &mut tables);
    // The schema's maps are sorted by name; the TOML of the defaults has the declaration order.
    let order: Vec<String> = toml_keys(&toml::to_string(&Config::default()).expect("the defaults serialize"));
    let position = |s: &Setting| {
        // An unset optional key goes right after the last key of its table.
        let table_end =
            || order.iter().rposition(|k| k.rsplit_once('.').map_or("", |(t, _)| t) == s.table()).map_or(0, |p| 2 * p + 1);
        order.iter().position(|k| *k == s.key).map_or_else(table_end, |p| 2 * p)
    };
    settings.sort_by_key(|s| (position(s), s.key.clone()));
    (settings, tables)
}

fn walk(root: &Json, node: &Json, prefix: &str, settings: &mut Vec<Setting>, tables: &mut Vec<(String, String)>) {
    let Some(properties) = node.get("properties").and_then(Json::as_object) else { return };
    for (name, property) in properties {
        let key = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
        let resolved = resolve(root, property);
        let doc = [property, resolved].iter().find_map(|n| n.get("description").and_then(Json::as_str)).unwrap_or_default();
        let doc = doc.split_whitespace().collect::<Vec<_>>().join(" ");
        if resolved.get("properties").is_some() {
            tables.push((key.clone(), doc));
            walk(root, resolved, &key, settings, tables);
        } else {
            let types = match resolved.get("type") {
                Some(Json::String(t)) => vec![t.clone()],
                Some(Json::Array(ts)) => ts.iter().filter_map(|t| t.as_str().map(str::to_string)).collect(),
                _ => Vec::new(),
            };
            settings.push(Setting { key, doc, types });
        }
    }
}

/// The definition a `$ref` points to (`#/$defs/Name`), or the node itself.
fn resolve<'a>(root: &'a Json, node: &'a Json) -> &'a Json {
    match node.get("$ref").and_then(Json::as_str).and_then(|r| r.strip_prefix("#/$defs/")) {
        Some(name) => &root["$defs"][name],
        None => node,
    }
}

/// The keys of a TOML document (`table.key`), in the order they appear.
fn toml_keys(text: &str) -> Vec<String> {
    let mut table = String::new();
    let mut keys = Vec::new();
    for line in text.lines() {
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            table = header.to_string();
        } else if let Some((key, _)) = line.split_once(" = ") {
            keys.push(if table.is_empty() { key.to_string() } else { format!("{table}.{key}") });
        }
    }
    keys
}

/// Sets one key; the result is checked as the file would be (types, unknown keys).
pub fn set(config: Config, key: &str, raw: &str) -> anyhow::Result<Config> {
    let (settings, _) = catalog();
    let setting =
        settings.iter().find(|s| s.key == key).ok_or_else(|| anyhow!("unknown setting `{key}`; `corral config` lists them"))?;
    set_one(config, setting, raw)
}

fn set_one(config: Config, setting: &Setting, raw: &str) -> anyhow::Result<Config> {
    let (key, value) = (setting.key.as_str(), setting.parse(raw)?);
    let mut tree = toml::Value::try_from(&config).context("serializing the config")?;
    let mut table = tree.as_table_mut().expect("the config is a table");
    let mut path: Vec<&str> = key.split('.').collect();
    let last = path.pop().expect("a key has a name");
    for part in path {
        table = table.entry(part).or_insert_with(|| toml::Value::Table(Default::default())).as_table_mut().expect("a table");
    }
    table.insert(last.to_string(), value);
    tree.try_into().map_err(|e| anyhow!("{key}: {e}"))
}

/// Lays over `config` every `CORRAL_<KEY>` variable `env` knows. The top-level keys are left to
/// their named flags, which read the same variables.
pub fn from_environment(mut config: Config, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Config> {
    for setting in catalog().0.iter().filter(|s| s.key.contains('.')) {
        if let Some(raw) = env(&setting.env()) {
            config = set_one(config, setting, &raw).with_context(|| setting.env())?;
        }
    }
    Ok(config)
}

/// The effective config as commented TOML: each key under its doc comment, unset optional keys
/// commented out.
pub fn render(config: &Config) -> String {
    let (settings, tables) = catalog();
    let body = toml::to_string(config).expect("the config serializes");
    let mut out = String::from("# Corral effective configuration (--set > flag > CORRAL_* env > this file > default)\n");
    let (mut table, mut seen) = (String::new(), HashSet::new());
    let unset = |out: &mut String, table: &str, seen: &HashSet<String>| {
        for s in settings.iter().filter(|s| s.table() == table && !seen.contains(&s.key)) {
            comment(out, &s.doc);
            out.push_str(&format!("# {} = (unset)\n", s.key.rsplit('.').next().unwrap_or_default()));
        }
    };
    for line in body.lines() {
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            unset(&mut out, &table, &seen);
            table = header.to_string();
            out.push('\n');
            comment(&mut out, tables.iter().find(|(t, _)| *t == table).map_or("", |(_, doc)| doc));
        } else if let Some((name, _)) = line.split_once(" = ") {
            let key = if table.is_empty() { name.to_string() } else { format!("{table}.{name}") };
            comment(&mut out, settings.iter().find(|s| s.key == key).map_or("", |s| &s.doc));
            seen.insert(key);
        } else if line.is_empty() {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    unset(&mut out, &table, &seen);
    out
}

/// `doc` as `#` lines of at most about 100 characters.
fn comment(out: &mut String, doc: &str) {
    let mut line = String::from("#");
    for word in doc.split_whitespace() {
        if line.len() + word.len() > 100 {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    if line.len() > 1 {
        out.push_str(&line);
        out.push('\n');
    }
}

/// Every setting as a Markdown table: key, environment variable, default, meaning.
pub fn markdown() -> String {
    let defaults = toml::Value::try_from(Config::default()).expect("the defaults serialize");
    let mut out = String::from("| key | environment variable | default | meaning |\n|---|---|---|---|\n");
    for s in catalog().0 {
        let default =
            s.key.split('.').try_fold(&defaults, |v, part| v.get(part)).map_or("unset".to_string(), |v| format!("`{v}`"));
        out.push_str(&format!("| `{}` | `{}` | {default} | {} |\n", s.key, s.env(), s.doc.replace('|', "\\|")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_is_documented_and_has_a_distinct_variable() {
        let (settings, tables) = catalog();
        assert!(settings.len() > 40, "{} settings", settings.len());
        for s in &settings {
            assert!(s.doc.len() > 10, "{} needs a doc comment: it is its documentation everywhere", s.key);
        }
        for (table, doc) in &tables {
            assert!(!doc.is_empty(), "[{table}] needs a doc comment");
        }
        let envs: HashSet<String> = settings.iter().map(Setting::env).collect();
        assert_eq!(envs.len(), settings.len());
        assert_eq!(settings[0].key, "data_dir", "declaration order");
    }

    #[test]
    fn each_key_has_its_environment_variable() {
        let env = |name: &str| match name {
            "CORRAL_COAP_MAX_OBSERVERS" => Some("77".to_string()),
            "CORRAL_MQTT_ALLOW_ANONYMOUS" => Some("true".to_string()),
            "CORRAL_RULES_OUTBOX_TIMEOUT_MS" => Some("1500".to_string()),
            "CORRAL_MQTT_LISTEN" => Some("off".to_string()),
            _ => None,
        };
        let config = from_environment(Config::default(), env).unwrap();
        assert_eq!(
            (config.coap.max_observers, config.mqtt.allow_anonymous, config.rules.outbox.timeout_ms, config.mqtt.listen.as_str()),
            (77, true, 1500, "off")
        );
        let err = from_environment(Config::default(), |n| (n == "CORRAL_LIMITS_MAX_QUERY_ROWS").then(|| "lots".into()));
        assert!(format!("{:#}", err.unwrap_err()).contains("CORRAL_LIMITS_MAX_QUERY_ROWS"));
    }

    #[test]
    fn the_rendered_file_reads_back_and_keeps_unset_keys_visible() {
        let mut config = Config::default();
        config.rules.webhooks.allow = vec!["hooks.example".into()];
        let text = render(&config);
        let again: Config = toml::from_str(&text).unwrap();
        assert_eq!(render(&again), text);
        assert!(text.contains("# tls_cert = (unset)"), "{text}");
        assert!(text.contains("# Largest request body, whole or assembled from Block1 blocks"), "{text}");
    }

    /// The settings table of docs/operations.md is generated; this keeps it in step.
    #[test]
    fn the_operations_guide_lists_every_setting_as_declared() {
        let guide = include_str!("../../../../docs/operations.md");
        let (begin, end) = ("<!-- settings: generated by `corral config --markdown` -->\n", "<!-- /settings -->");
        let start = guide.find(begin).expect("docs/operations.md has the settings markers") + begin.len();
        let stop = guide[start..].find(end).expect("end marker") + start;
        assert_eq!(
            &guide[start..stop],
            markdown(),
            "docs/operations.md is stale: replace its settings table with `cargo run -- config --markdown`"
        );
    }
}
