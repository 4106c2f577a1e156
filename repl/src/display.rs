//! Results as a person reads them: arrays of maps as tables (one row per item, a column per
//! key), maps as key/value tables, scalars as themselves.

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use rhai::{Array, Dynamic, Map};

pub fn render(value: &Dynamic) -> String {
    if let Some(array) = value.read_lock::<Array>() {
        if !array.is_empty() && array.iter().all(Dynamic::is_map) {
            return records(&array);
        }
        if !array.is_empty() {
            let mut table = table(vec!["#".into(), "value".into()]);
            for (i, item) in array.iter().enumerate() {
                table.add_row(vec![i.to_string(), cell(item)]);
            }
            return table.to_string();
        }
        return "[]".into();
    }
    if let Some(map) = value.read_lock::<Map>() {
        if map.is_empty() {
            return "#{}".into();
        }
        let mut table = table(vec!["key".into(), "value".into()]);
        for (k, v) in map.iter() {
            table.add_row(vec![k.to_string(), cell(v)]);
        }
        return table.to_string();
    }
    harun_runtime::json::to_text(value)
}

fn records(items: &Array) -> String {
    let mut columns: Vec<String> = Vec::new();
    for item in items {
        if let Some(map) = item.read_lock::<Map>() {
            for key in map.keys() {
                if !columns.iter().any(|c| c == key.as_str()) {
                    columns.push(key.to_string());
                }
            }
        }
    }
    let mut table = table(columns.clone());
    for item in items {
        if let Some(map) = item.read_lock::<Map>() {
            table.add_row(
                columns
                    .iter()
                    .map(|c| map.get(c.as_str()).map_or(String::new(), cell))
                    .collect::<Vec<_>>(),
            );
        }
    }
    table.to_string()
}

fn table(header: Vec<String>) -> Table {
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED).set_header(header);
    table
}

/// A value inside a table cell: nested maps and arrays as compact JSON.
fn cell(value: &Dynamic) -> String {
    if value.is_map() || value.is_array() {
        serde_json::to_string(&harun_runtime::json::to_json(value)).unwrap_or_default()
    } else if value.is_unit() {
        String::new()
    } else {
        harun_runtime::json::to_text(value)
    }
}
