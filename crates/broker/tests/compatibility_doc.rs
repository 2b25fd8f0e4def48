//! docs/compatibility.md's table of Kafka APIs is made from the code: the
//! versions the broker implements ([`SUPPORTED_APIS`], which ApiVersions
//! advertises) beside the versions Kafka defines (as kafka-protocol knows
//! them). This test fails when the document and the code part;
//! `KEEL_WRITE_DOCS=1 cargo test -p keel-broker --test compatibility_doc`
//! rewrites the table. docs/protocol.md describes each implemented API by
//! hand; its versions are checked against the same list.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use kafka_protocol::messages::ApiKey;
use keel_broker::api::SUPPORTED_APIS;

const BEGIN: &str = "<!-- api-table:begin -->";
const END: &str = "<!-- api-table:end -->";

fn doc_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/compatibility.md")
}

fn render() -> String {
    let mut lines = vec![
        "| API | key | Kafka versions | Keel versions |".to_string(),
        "|---|---|---|---|".to_string(),
    ];
    for api in ApiKey::iter() {
        let kafka = api.valid_versions();
        let keel = SUPPORTED_APIS
            .iter()
            .find(|(key, _, _)| *key == api)
            .map_or("no".to_string(), |(_, min, max)| format!("{min}-{max}"));
        lines.push(format!(
            "| {api:?} | {} | {}-{} | {keel} |",
            api as i16, kafka.min, kafka.max
        ));
    }
    lines.join("\n")
}

#[test]
fn the_api_table_is_the_one_the_broker_implements() {
    let path = doc_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let (head, rest) = text.split_once(BEGIN).expect("the table's begin marker");
    let (table, tail) = rest.split_once(END).expect("the table's end marker");
    let wanted = render();
    if std::env::var_os("KEEL_WRITE_DOCS").is_some() {
        std::fs::write(&path, format!("{head}{BEGIN}\n{wanted}\n{END}{tail}")).unwrap();
        return;
    }
    assert_eq!(
        table.trim_matches('\n'),
        wanted,
        "docs/compatibility.md's API table is stale: run KEEL_WRITE_DOCS=1 cargo test -p \
         keel-broker --test compatibility_doc"
    );
}

#[test]
fn the_protocol_notes_describe_every_implemented_version() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/protocol.md");
    let text = std::fs::read_to_string(path).unwrap();
    let documented: Vec<(String, String)> = text
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            // | API | key | versions | notes |
            (cells.len() >= 5 && cells[2].parse::<i16>().is_ok())
                .then(|| (cells[1].to_string(), cells[3].to_string()))
        })
        .collect();
    let implemented: Vec<(String, String)> = SUPPORTED_APIS
        .iter()
        .map(|(api, min, max)| {
            let versions = if min == max {
                min.to_string()
            } else {
                format!("{min}\u{2013}{max}")
            };
            (format!("{api:?}"), versions)
        })
        .collect();
    let mut documented_sorted = documented.clone();
    documented_sorted.sort();
    let mut implemented_sorted = implemented;
    implemented_sorted.sort();
    assert_eq!(
        documented_sorted, implemented_sorted,
        "docs/protocol.md's table of APIs and versions differs from SUPPORTED_APIS"
    );
}
