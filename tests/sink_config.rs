//! The documented example config parses and validates, sink keys included, and sink config
//! mistakes are named at load.

use logtide::config::{Config, SinkConfig};
use std::path::Path;

#[test]
fn example_config_documents_every_sink_and_loads() {
    let cfg = Config::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/example.toml"
    )))
    .expect("config/example.toml is valid");
    let kinds: Vec<&str> = cfg
        .sinks
        .iter()
        .map(|s| match s {
            SinkConfig::Stdout(_) => "stdout",
            SinkConfig::File(_) => "file",
            SinkConfig::Http(_) => "http",
            SinkConfig::Segment(_) => "segment",
            SinkConfig::Nats(_) => "nats",
        })
        .collect();
    for k in ["http", "segment", "nats"] {
        assert!(kinds.contains(&k), "example config lacks a {k} sink");
    }
}

fn parse(sink: &str) -> String {
    let text = format!(
        "[[sources]]\nkind = \"postgres\"\nname = \"app\"\nuser = \"u\"\ndatabase = \"d\"\n[[sinks]]\n{sink}"
    );
    match Config::parse(&text, Path::new("t.toml")) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn sink_config_mistakes_are_named() {
    assert_eq!(parse("kind = \"http\"\nurl = \"https://x\""), "");
    assert!(parse("kind = \"http\"\nurl = \"https://x\"\nurll = 1").contains("urll"));
    assert!(parse("kind = \"http\"\nurl = \"ftp://x\"").contains("http://"));
    assert!(
        parse("kind = \"http\"\nurl = \"https://x\"\nbatch = { max_events = 0 }")
            .contains("max_events")
    );
    assert!(parse("kind = \"http\"\nurl = \"https://x\"\nformat = \"xml\"").contains("xml"));
    assert!(parse("kind = \"segment\"\nwrite_key_env = \"K\"").contains("mappings"));
    let e = parse("kind = \"segment\"\nwrite_key_env = \"K\"\n[[sinks.mappings]]\ntable = \"public.t\"\ncall = \"page\"\nuser_id_column = \"id\"");
    assert!(e.contains("name"), "{e}");
    let e = parse("kind = \"segment\"\nwrite_key_env = \"K\"\n[[sinks.mappings]]\ntable = \"public.t\"\ncall = \"track\"\nuser_id_column = \"id\"");
    assert!(e.contains("event"), "{e}");
    assert!(parse("kind = \"nats\"\nretry = { max_retry = 3 }").contains("max_retry"));
}
