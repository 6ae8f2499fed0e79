//! `karst-jepsen check` on a real history: the fixture is the history of a short fault-free
//! run against Karst (`run --nemesis '' --time-limit 4 --rate 20 --concurrency 2
//! --active-keys 2`), so these tests pin the on-disk format the workload writes, and show that
//! removing one acknowledged value from every poll turns the verdict into a lost write.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value as Json;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fault-free/history.jsonl")
}

/// Runs `karst-jepsen check` on `history` copied into a fresh directory; returns the exit
/// code and `results.json`.
fn check(history: &str) -> (i32, Json, tempfile::TempDir) {
    let directory = tempfile::tempdir().unwrap();
    std::fs::write(directory.path().join("history.jsonl"), history).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_karst-jepsen"))
        .arg("check")
        .arg(directory.path())
        .status()
        .unwrap();
    let results = std::fs::read_to_string(directory.path().join("results.json")).unwrap();
    (
        status.code().unwrap(),
        serde_json::from_str(&results).unwrap(),
        directory,
    )
}

#[test]
fn a_recorded_fault_free_history_checks_valid_and_gets_a_timeline() {
    let history = std::fs::read_to_string(fixture()).unwrap();
    let (code, results, directory) = check(&history);
    assert_eq!(code, 0, "{results:#}");
    assert_eq!(results["valid"], true);
    assert!(results["acknowledged_sends"].as_u64().unwrap() > 0);
    assert_eq!(
        results["acknowledged_sends"],
        results["acknowledged_sends_read"]
    );
    assert!(results["has_final_reads"].as_bool().unwrap());
    let svg = std::fs::read_to_string(directory.path().join("timeline.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
}

#[test]
fn the_same_history_with_one_acknowledged_value_never_read_is_a_lost_write() {
    let history = std::fs::read_to_string(fixture()).unwrap();
    let mut ops: Vec<Json> = history
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    // The first acknowledged send at offset 0: later offsets of its key were read, so a
    // reader went past it.
    let victim = ops
        .iter()
        .find(|op| op["f"] == "send" && op["type"] == "ok" && op["offset"] == 0)
        .cloned()
        .expect("an acknowledged send at offset 0");
    let (key, value) = (victim["key"].to_string(), victim["value"].clone());
    let mut removed = 0;
    for op in ops.iter_mut().filter(|op| op["f"] == "poll") {
        let records = op
            .get_mut("reads")
            .and_then(|reads| reads.get_mut(&key))
            .and_then(Json::as_array_mut);
        if let Some(records) = records {
            let before = records.len();
            records.retain(|record| record[1] != value);
            removed += before - records.len();
        }
    }
    assert!(removed > 0, "the victim was read somewhere");
    let mutated: String = ops.iter().map(|op| format!("{op}\n")).collect();
    let (code, results, _directory) = check(&mutated);
    assert_eq!(code, 1, "{results:#}");
    assert_eq!(
        results["invalid_because"],
        serde_json::json!(["lost-write"])
    );
    assert_eq!(results["examples"]["lost-write"][0]["value"], value);
}
