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

/// Every error code the sources or scripts name (`harun::...`) is in `harun doc`'s table
/// of codes, with what it means: a code thrown without a catalogue entry fails here.
#[test]
fn harun_doc_lists_every_code_the_sources_use() {
    let doc = Test::new().args(["doc"]).run().status(0).stdout;
    let table = &doc[doc.find("## Error codes").expect("a table of codes")..];
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut used = std::collections::BTreeSet::new();
    let mut files = Vec::new();
    for dir in [
        "runtime/src",
        "stdlib/src",
        "src",
        "repl/src",
        "lab/src",
        "scripts",
    ] {
        collect(&root.join(dir), &mut files);
    }
    files.push(root.join("README.md"));
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("harun::") {
            let code: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_' || *c == ':')
                .collect();
            let code = code.trim_end_matches(':').to_string();
            rest = &rest[at + code.len()..];
            // `harun::` alone (a path written in prose) names no code.
            if code != "harun" {
                used.insert(code);
            }
        }
    }
    assert!(used.len() > 40, "only {} codes found: {used:?}", used.len());
    let missing: Vec<&String> = used
        .iter()
        .filter(|c| !table.contains(&format!("| `{c}` | ")))
        .collect();
    assert!(missing.is_empty(), "codes not in `harun doc`: {missing:?}");
}

fn collect(dir: &std::path::Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs" || e == "rhai") {
            files.push(path);
        }
    }
}
