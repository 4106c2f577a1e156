//! `harun doc`: every built-in has a doc comment, and the reference prints it.

use crate::common;

use common::Test;

#[test]
fn every_built_in_has_a_doc_comment() {
    let out = Test::new()
        .args(["doc", "--format", "json"])
        .run()
        .status(0);
    let meta: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let mut functions: Vec<(String, &serde_json::Value)> = Vec::new();
    for f in meta["functions"].as_array().unwrap() {
        functions.push((String::new(), f));
    }
    for (module, m) in meta["modules"].as_object().unwrap() {
        for f in m["functions"].as_array().unwrap() {
            functions.push((format!("{module}::"), f));
        }
    }
    assert!(functions.len() > 20, "only {} built-ins", functions.len());
    let undocumented: Vec<String> = functions
        .iter()
        .filter(|(_, f)| {
            f["docComments"]
                .as_array()
                .is_none_or(|d| d.iter().all(|l| l.as_str().unwrap_or("").trim() == "///"))
        })
        .map(|(prefix, f)| format!("{prefix}{}", f["signature"].as_str().unwrap_or("?")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "undocumented built-ins: {undocumented:?}"
    );
}

#[test]
fn markdown_reference_lists_modules_and_functions() {
    Test::new()
        .args(["doc"])
        .run()
        .status(0)
        .stdout_has("## Module `log`")
        .stdout_has("### `log::info(message: Dynamic)`\n\nLogs progress; shown with `-v`.")
        .stdout_has("### `critical(message: Dynamic)`");
}
