//! The configuration as the inspector shows it: every value that came from `${VAR}` shown as
//! the reference, URL passwords masked, and any setting or super property whose key is
//! sensitive (the default redaction names and patterns: `password`, `token`, `api_key`,
//! `*secret*`, ...) replaced whatever its origin.

use serde_json::{Map, Value, json};

use crate::config::{Config, DestinationConfig, RedactConfig};
use crate::diag::mask_userinfo;
use crate::redact::Redactor;

/// What replaces a sensitive value.
const MASK: &str = "***";

/// `config` as JSON for the page, secrets masked.
pub(crate) fn masked(config: &Config) -> Value {
    let sensitive = Redactor::new(&RedactConfig::default());
    let destinations: Vec<Value> = config
        .destinations
        .iter()
        .map(|d| destination(d, &sensitive))
        .collect();
    let mut properties = serde_json::to_value(&config.properties).unwrap_or_default();
    mask_keys(&mut properties, &sensitive);
    json!({
        "enabled": config.enabled,
        "debug": config.debug,
        "destinations": destinations,
        "sampling": format!("{:?}", config.sampling),
        "requests": format!("{:?}", config.requests),
        "redact": format!("{:?}", config.redact),
        "limits": format!("{:?}", config.limits),
        "properties": properties,
    })
}

fn destination(d: &DestinationConfig, sensitive: &Redactor) -> Value {
    let settings = &d.settings;
    // Through text, as the settings' `Debug` does: `${VAR}` values and URL passwords out.
    let text = serde_json::to_string(&settings.values).unwrap_or_default();
    let text = settings.substitutions.scrub(&text);
    let text = mask_userinfo(&text);
    let mut values: Value =
        serde_json::from_str(&text).unwrap_or_else(|_| Value::Object(Map::new()));
    mask_keys(&mut values, sensitive);
    let scrub = |s: &str| settings.substitutions.scrub(s).into_owned();
    let mut out = json!({
        "name": d.name,
        "type": d.kind.as_deref().map(scrub).unwrap_or_else(|| d.name.clone()),
        "enabled": d.enabled,
        "events": d.events.as_ref().map(|globs| globs.iter().map(|g| scrub(g)).collect::<Vec<_>>()),
        "sample_rate": d.sample_rate,
        "delivery": format!("{:?}", d.delivery),
        "allow_properties": d.allow_properties,
        "drop_properties": d.drop_properties,
        "settings": values,
    });
    #[cfg(feature = "spool")]
    if let (Some(spool), Some(map)) = (&d.spool, out.as_object_mut()) {
        map.insert("spool".into(), Value::String(scrub(&format!("{spool:?}"))));
    }
    if let Some(map) = out.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    out
}

/// Replaces the value of every key `sensitive` matches, at any depth.
fn mask_keys(value: &mut Value, sensitive: &Redactor) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if sensitive.matches(k) {
                    *v = Value::String(MASK.into());
                } else {
                    mask_keys(v, sensitive);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| mask_keys(v, sensitive)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_reach_the_page() {
        let yaml = r#"
telemetry:
  properties:
    service: shop
    api_token: literal-secret-1
  destinations:
    hook:
      type: webhook
      url: https://user:hunter2@hooks.example/in
      secret: ${HOOK_SECRET}
      events: [order.*]
      headers:
        x-api-key: literal-secret-2
    plain:
      type: memory
"#;
        let env = |name: &str| (name == "HOOK_SECRET").then(|| "whsec_c2VjcmV0LXZhbHVl".to_owned());
        let config = Config::from_yaml_str_with_env(yaml, env).unwrap();
        let shown = masked(&config).to_string();
        for secret in [
            "literal-secret-1",
            "literal-secret-2",
            "hunter2",
            "whsec_c2Vj",
        ] {
            assert!(!shown.contains(secret), "{secret} shown in {shown}");
        }
        let v = masked(&config);
        let hook = &v["destinations"][0];
        assert_eq!(hook["name"], "hook");
        assert_eq!(hook["type"], "webhook");
        assert_eq!(hook["events"], json!(["order.*"]));
        assert_eq!(hook["settings"]["url"], "https://user:***@hooks.example/in");
        assert_eq!(hook["settings"]["headers"]["x-api-key"], MASK);
        assert_eq!(v["properties"]["service"], "shop");
        assert_eq!(v["properties"]["api_token"], MASK);
        assert_eq!(v["destinations"][1]["type"], "memory");
    }
}
