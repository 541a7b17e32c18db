//! `[trace]`: OpenTelemetry traces and where they are exported.

use super::*;

/// `[trace]`: spans for polls and pass-through, exported over OTLP/HTTP.
/// Off by default (`otlp_endpoint = ""`): no exporter, no trace headers.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TraceConfig {
    /// Base URL of an OTLP/HTTP (protobuf) receiver, e.g.
    /// `http://otel-collector:4318`; spans go to `<endpoint>/v1/traces`.
    /// Empty: traces are off. `OTEL_EXPORTER_OTLP_ENDPOINT` (or the full
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) wins when set.
    #[serde(deserialize_with = "otlp_endpoint")]
    pub otlp_endpoint: String,
    /// `service.name` of the exported spans; `OTEL_SERVICE_NAME` wins when set.
    pub service_name: String,
    /// Share of new traces kept, 0.0 to 1.0; a continued trace follows the
    /// caller's sampling decision.
    #[serde(deserialize_with = "ratio")]
    pub sample_ratio: f64,
    /// How long finished spans wait to be sent in one batch.
    #[serde(with = "humantime_serde")]
    #[schemars(schema_with = "crate::config::schema::duration")]
    pub export_interval: Duration,
}

impl Default for TraceConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            service_name: "pollcast".to_owned(),
            sample_ratio: 1.0,
            export_interval: Duration::from_secs(5),
        }
    }
}

fn otlp_endpoint<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if !s.is_empty() && !s.starts_with("http://") {
        return Err(serde::de::Error::custom(
            "an http:// URL of an OTLP/HTTP receiver (https is not supported: use a collector on the node or in the pod), or \"\" for off",
        ));
    }
    Ok(s)
}

fn ratio<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let r = f64::deserialize(d)?;
    if !(0.0..=1.0).contains(&r) {
        return Err(serde::de::Error::custom("a number from 0.0 to 1.0"));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::TraceConfig;

    fn parse(text: &str) -> Result<TraceConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn off_by_default_and_checked_when_set() {
        let d = parse("").expect("defaults");
        assert_eq!(d.otlp_endpoint, "");
        assert_eq!(d.service_name, "pollcast");
        assert_eq!(d.sample_ratio, 1.0);
        let ok = parse(
            "otlp_endpoint = \"http://c:4318\"\nsample_ratio = 0.25\nexport_interval = \"200ms\"",
        )
        .expect("valid");
        assert_eq!(ok.sample_ratio, 0.25);
        assert_eq!(ok.export_interval, std::time::Duration::from_millis(200));
        let e = parse("otlp_endpoint = \"https://c:4318\"").expect_err("https refused");
        assert!(e.to_string().contains("http:// URL"), "{e}");
        let e = parse("sample_ratio = 1.5").expect_err("ratio above 1");
        assert!(e.to_string().contains("0.0 to 1.0"), "{e}");
        assert!(
            parse("endpoint = \"x\"").is_err(),
            "unknown keys are refused"
        );
    }
}
