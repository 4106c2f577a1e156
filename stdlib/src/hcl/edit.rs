//! Editing users' HCL config files in place: every comment, blank line and alignment that
//! the edit does not touch stays byte for byte (hcl-edit keeps the decor of every node).
//!
//! Places are named by paths: `bootstrap_expect`, `server.bootstrap_expect`,
//! `storage[raft].path`, `service_registration[consul]`. A segment is a block identifier
//! with its labels in brackets; the last segment of an attribute path is the attribute.
//! New nodes are formatted by hcl-rs (which indents), re-parsed by hcl-edit and indented
//! like their new siblings.

use hcl_edit::expr::Expression;
use hcl_edit::repr::Decorate;
use hcl_edit::structure::{Attribute, Block, Body, Structure};

/// One step of a path: a block identifier and its labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    pub ident: String,
    pub labels: Vec<String>,
}

/// Parses `storage[raft].retry_join` into segments.
pub fn parse_path(path: &str) -> Result<Vec<Segment>, String> {
    let mut segments = Vec::new();
    let mut rest = path.trim();
    if rest.is_empty() {
        return Err("an empty path".into());
    }
    while !rest.is_empty() {
        let end = rest.find(['.', '[']).unwrap_or(rest.len());
        let ident = &rest[..end];
        if ident.is_empty()
            || !ident
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!("`{path}` is not a path like `storage[raft].path`"));
        }
        rest = &rest[end..];
        let mut labels = Vec::new();
        if let Some(inner) = rest.strip_prefix('[') {
            let close = inner
                .find(']')
                .ok_or_else(|| format!("`{path}`: a `[` without `]`"))?;
            labels = inner[..close]
                .split(',')
                .map(|l| l.trim().trim_matches('"').to_string())
                .filter(|l| !l.is_empty())
                .collect();
            rest = &inner[close + 1..];
        }
        segments.push(Segment {
            ident: ident.to_string(),
            labels,
        });
        if let Some(next) = rest.strip_prefix('.') {
            rest = next;
            if rest.is_empty() {
                return Err(format!("`{path}` ends with a dot"));
            }
        } else if !rest.is_empty() {
            return Err(format!("`{path}` is not a path like `storage[raft].path`"));
        }
    }
    Ok(segments)
}

fn block_index(body: &Body, segment: &Segment) -> Option<usize> {
    body.iter().position(|s| match s {
        Structure::Block(b) => {
            b.ident.as_str() == segment.ident
                && b.labels.len() == segment.labels.len()
                && b.labels
                    .iter()
                    .zip(&segment.labels)
                    .all(|(l, want)| l.as_str() == want)
        }
        Structure::Attribute(_) => false,
    })
}

fn attribute_index(body: &Body, key: &str) -> Option<usize> {
    body.iter()
        .position(|s| matches!(s, Structure::Attribute(a) if a.key.as_str() == key))
}

/// The indentation of a body's items: taken from an existing item, else one step deeper
/// than the block that holds the body.
fn indentation(body: &Body, depth: usize) -> String {
    for s in body.iter() {
        let prefix = match s {
            Structure::Attribute(a) => a.decor().prefix(),
            Structure::Block(b) => b.decor().prefix(),
        };
        if let Some(prefix) = prefix {
            let text: &str = prefix;
            let last = text.rsplit('\n').next().unwrap_or("");
            if last.chars().all(|c| c == ' ' || c == '\t') {
                return last.to_string();
            }
        }
    }
    "  ".repeat(depth)
}

/// A parsed document, edited in place.
#[derive(Clone, Debug)]
pub struct Document {
    body: Body,
}

impl Document {
    /// Parses `text`; an error names the line and column.
    pub fn parse(text: &str) -> Result<Document, String> {
        let body = hcl_edit::parser::parse_body(text).map_err(|e| {
            format!(
                "line {}, column {}: {}",
                e.location().line(),
                e.location().column(),
                e.message()
            )
        })?;
        Ok(Document { body })
    }

    pub fn render(&self) -> String {
        self.body.to_string()
    }

    /// The body at `segments` (blocks only); `create` adds missing blocks.
    fn body_mut(
        &mut self,
        segments: &[Segment],
        create: bool,
    ) -> Result<Option<(&mut Body, usize)>, String> {
        let mut body = &mut self.body;
        for (depth, segment) in segments.iter().enumerate() {
            let index = match block_index(body, segment) {
                Some(i) => i,
                None if create => {
                    let indent = indentation(body, depth);
                    let block = new_block(segment, &hcl::Body::default(), &indent)?;
                    push_block(body, block, &indent);
                    body.len() - 1
                }
                None => return Ok(None),
            };
            body = &mut body
                .get_mut(index)
                .and_then(Structure::as_block_mut)
                .expect("index of a block")
                .body;
        }
        Ok(Some((body, segments.len())))
    }

    fn body_ref(&self, segments: &[Segment]) -> Option<&Body> {
        let mut body = &self.body;
        for segment in segments {
            let index = block_index(body, segment)?;
            body = &body.get(index)?.as_block()?.body;
        }
        Some(body)
    }

    /// The value of the attribute at `path`, as hcl-rs reads it.
    pub fn get(&self, path: &str) -> Result<Option<hcl::Value>, String> {
        let segments = parse_path(path)?;
        let (last, parents) = segments.split_last().expect("paths have a segment");
        let Some(body) = self.body_ref(parents) else {
            return Ok(None);
        };
        let Some(i) = attribute_index(body, &last.ident) else {
            return Ok(None);
        };
        let attr = body
            .get(i)
            .and_then(Structure::as_attribute)
            .expect("an attribute");
        let text = format!("v = {}\n", attr.value);
        let value: hcl::Map<String, hcl::Value> =
            hcl::from_str(&text).map_err(|e| format!("`{path}` cannot be read: {e}"))?;
        Ok(value.get("v").cloned())
    }

    /// True when the block at `path` exists.
    pub fn has_block(&self, path: &str) -> Result<bool, String> {
        let segments = parse_path(path)?;
        Ok(self.body_ref(&segments).is_some())
    }

    /// Sets the attribute at `path` to `value`, keeping its comment; adds it (and missing
    /// blocks on the way) when absent. Returns true when the text changed.
    pub fn set(&mut self, path: &str, value: &hcl::Value) -> Result<bool, String> {
        let before = self.render();
        let segments = parse_path(path)?;
        let (last, parents) = segments.split_last().expect("paths have a segment");
        if !last.labels.is_empty() {
            return Err(format!("`{path}`: an attribute has no labels"));
        }
        let (body, depth) = self.body_mut(parents, true)?.expect("created");
        let mut expr = expression(value)?;
        match attribute_index(body, &last.ident) {
            Some(i) => {
                let attr = body
                    .get_mut(i)
                    .and_then(Structure::as_attribute_mut)
                    .expect("an attribute");
                expr.decorate(attr.value.decor().clone());
                attr.value = expr;
            }
            None => {
                let indent = indentation(body, depth);
                let mut attr = Attribute::new(hcl_edit::Ident::new(last.ident.clone()), expr);
                attr.decorate((indent, ""));
                // After the last attribute, so attributes stay together above blocks.
                match attribute_index_last(body) {
                    Some(i) => body.insert(i + 1, attr),
                    None => body.push(attr),
                }
            }
        }
        Ok(self.render() != before)
    }

    /// Removes the attribute or block at `path`; true when something was removed.
    pub fn remove(&mut self, path: &str) -> Result<bool, String> {
        let segments = parse_path(path)?;
        let (last, parents) = segments.split_last().expect("paths have a segment");
        let Some((body, _)) = self.body_mut(parents, false)? else {
            return Ok(false);
        };
        let index = if last.labels.is_empty() {
            attribute_index(body, &last.ident).or_else(|| block_index(body, last))
        } else {
            block_index(body, last)
        };
        match index {
            Some(i) => {
                body.remove(i);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Adds the block at `path` with `content`, or replaces the block there, in its place
    /// and with its leading comment. Returns true when the text changed.
    pub fn set_block(&mut self, path: &str, content: &hcl::Body) -> Result<bool, String> {
        let before = self.render();
        let segments = parse_path(path)?;
        let (last, parents) = segments.split_last().expect("paths have a segment");
        let (body, depth) = self.body_mut(parents, true)?.expect("created");
        let indent = indentation(body, depth);
        let mut block = new_block(last, content, &indent)?;
        match block_index(body, last) {
            Some(i) => {
                let old = body.get(i).and_then(Structure::as_block).expect("a block");
                block.decorate(old.decor().clone());
                body.remove(i);
                body.insert(i, block);
            }
            None => push_block(body, block, &indent),
        }
        Ok(self.render() != before)
    }
}

impl Document {
    /// Replaces the block at `old` by a new block at `new` with `content`, in the old
    /// block's place and with its leading comment (storage "file" becoming storage "raft").
    /// Adds the new block when there is no old one. Returns true when the text changed.
    pub fn replace_block(
        &mut self,
        old: &str,
        new: &str,
        content: &hcl::Body,
    ) -> Result<bool, String> {
        let before = self.render();
        let old_segments = parse_path(old)?;
        let new_segments = parse_path(new)?;
        let (old_last, old_parents) = old_segments.split_last().expect("paths have a segment");
        let (new_last, new_parents) = new_segments.split_last().expect("paths have a segment");
        if old_parents != new_parents {
            return Err(format!("`{old}` and `{new}` must be in the same block"));
        }
        let (body, depth) = self.body_mut(old_parents, true)?.expect("created");
        let indent = indentation(body, depth);
        let mut block = new_block(new_last, content, &indent)?;
        match block_index(body, old_last).or_else(|| block_index(body, new_last)) {
            Some(i) => {
                let old = body.get(i).and_then(Structure::as_block).expect("a block");
                block.decorate(old.decor().clone());
                body.remove(i);
                body.insert(i, block);
                // A block at the new path elsewhere would now be a duplicate.
                if let Some(j) = block_index(body, new_last).filter(|j| *j != i) {
                    body.remove(j);
                }
            }
            None => push_block(body, block, &indent),
        }
        Ok(self.render() != before)
    }
}

/// Appends a block, a blank line after what comes before it.
fn push_block(body: &mut Body, mut block: Block, indent: &str) {
    if !body.is_empty() {
        block.decorate((format!("\n{indent}"), ""));
    }
    body.push(block);
}

fn attribute_index_last(body: &Body) -> Option<usize> {
    let positions: Vec<usize> = body
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is_attribute())
        .map(|(i, _)| i)
        .collect();
    positions.last().copied()
}

/// hcl-rs output as people write these files: `retry_join = ["a", "b", "c"]` on one line.
fn format<T: hcl::format::Format + ?Sized>(value: &T) -> Result<String, String> {
    let mut formatter = hcl::format::Formatter::builder()
        .compact_arrays(true)
        .build_vec();
    value
        .format_string(&mut formatter)
        .map_err(|e| format!("cannot format HCL: {e}"))
}

/// An hcl-edit expression for a value, formatted by hcl-rs.
fn expression(value: &hcl::Value) -> Result<Expression, String> {
    let text = format(&hcl::Expression::from(value.clone()))?;
    hcl_edit::parser::parse_expr(&text).map_err(|e| format!("cannot re-read {text}: {e}"))
}

/// A block formatted by hcl-rs, re-parsed by hcl-edit and indented by `indent`.
fn new_block(segment: &Segment, content: &hcl::Body, indent: &str) -> Result<Block, String> {
    let mut builder = hcl::Block::builder(segment.ident.clone());
    for label in &segment.labels {
        builder = builder.add_label(label.clone());
    }
    let block = builder.add_structures(content.clone()).build();
    let text = format(&hcl::Body::builder().add_block(block).build())?;
    let indented: String = text
        .lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("{indent}{l}\n")
            }
        })
        .collect();
    let body = hcl_edit::parser::parse_body(&indented)
        .map_err(|e| format!("cannot re-read the block: {e}"))?;
    body.into_iter()
        .find_map(|s| s.into_block().ok())
        .ok_or_else(|| "the formatted block is empty".to_string())
}

/// Converts a map value into a block body: maps become nested blocks, arrays of maps
/// repeated blocks (`retry_join { ... }` three times), everything else attributes. A key
/// may carry labels: `"service_registration[consul]"`.
pub fn body_from(entries: &[(String, hcl::Value)]) -> Result<hcl::Body, String> {
    let mut body = hcl::Body::builder();
    for (key, value) in entries {
        let segment = parse_path(key)?
            .into_iter()
            .next()
            .expect("one segment at least");
        match value {
            hcl::Value::Object(map) => {
                body = body.add_block(block_from(&segment, map)?);
            }
            hcl::Value::Array(items)
                if !items.is_empty() && items.iter().all(|v| v.is_object()) =>
            {
                for item in items {
                    let map = item.as_object().expect("checked above");
                    body = body.add_block(block_from(&segment, map)?);
                }
            }
            other => {
                if !segment.labels.is_empty() {
                    return Err(format!("`{key}`: an attribute has no labels"));
                }
                body = body.add_attribute((segment.ident.clone(), other.clone()));
            }
        }
    }
    Ok(body.build())
}

fn block_from(segment: &Segment, map: &hcl::Map<String, hcl::Value>) -> Result<hcl::Block, String> {
    let entries: Vec<(String, hcl::Value)> =
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut builder = hcl::Block::builder(segment.ident.clone());
    for label in &segment.labels {
        builder = builder.add_label(label.clone());
    }
    Ok(builder.add_structures(body_from(&entries)?).build())
}

#[cfg(test)]
mod tests;
