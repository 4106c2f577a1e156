//! The secrets that live inside the config files harun edits: ACL tokens, gossip keys,
//! passwords, seal credentials. harun does not know their values (they are not in its
//! Secrets), so what shows a config file's content (a plan's diff) masks them by the
//! attribute's name, taken from the Consul, Nomad and Vault configuration references:
//! - `token`, `*_token` (Consul's `acl_token`, Nomad's `vault { token }`, `consul { token }`,
//!   `replication_token`, Vault's `service_registration "consul" { token }`, `seal
//!   "transit" { token }`, `session_token`);
//! - every member of a `tokens { ... }` block (Consul's `acl { tokens { agent, default,
//!   master, initial_management, agent_recovery, replication } }`);
//! - `encrypt` (Consul's and Nomad's gossip key), `password`, `*_password`, `secret`,
//!   `*_secret` (`client_secret`), `secret_id`;
//! - `*_key` with an inline value (`access_key`, `secret_key`, Vault's inline
//!   `leader_client_key`); `*_key_file` is a path and stays visible;
//! - `pin` and `*_pin` (Vault's `seal "pkcs11" { pin }`);
//! - any value that is a URL with a password in it (`connection_url =
//!   "postgres://vault:pw@db/vault"`), whatever its attribute's name;
//! - and every name the topology adds (`secret_attributes`).
//!
//! A masked value says whether it changed: `"<secret>"`, or `"<secret, changed>"` on the
//! new side when the same attribute held another value before. So a plan still shows
//! which lines change, and nothing of what they hold.

use std::collections::HashMap;

/// The marker of a masked value that is the same before and after.
pub const MASKED: &str = "\"<secret>\"";
/// The marker of a masked value that changed.
pub const MASKED_CHANGED: &str = "\"<secret, changed>\"";

/// Whether the attribute `name`, inside the blocks `blocks` (outermost first), holds a
/// secret.
pub fn is_secret_attribute(name: &str, blocks: &[String], extra: &[String]) -> bool {
    let name = name.trim_matches('"').to_ascii_lowercase();
    if extra.iter().any(|e| e.eq_ignore_ascii_case(&name)) {
        return true;
    }
    if blocks.last().is_some_and(|b| b == "tokens") {
        return true;
    }
    name == "token"
        || name.ends_with("_token")
        || name == "encrypt"
        || name == "password"
        || name.ends_with("_password")
        || name == "secret"
        || name.ends_with("_secret")
        || name == "secret_id"
        || name.ends_with("_key")
        || name == "pin"
        || name.ends_with("_pin")
}

/// Whether `value` holds a URL with a password in its userinfo (`scheme://user:pw@host`).
fn has_url_password(value: &str) -> bool {
    value.match_indices("://").any(|(at, sep)| {
        let authority = value[at + sep.len()..]
            .split(['/', '"', '?', '#', ' '])
            .next()
            .unwrap_or_default();
        authority
            .rsplit_once('@')
            .is_some_and(|(userinfo, _)| userinfo.contains(':'))
    })
}

/// One secret attribute found in a text: where (its block path, name and how many of the
/// same came before) and its value.
#[derive(Debug)]
struct Found {
    key: String,
    value: String,
    /// The line's byte range of the value, in the line.
    line: usize,
    start: usize,
    /// For a heredoc, the lines of its body (masked away).
    body_lines: usize,
    /// A line of several attributes, masked whole from `start` (its indentation) on.
    whole_line: bool,
}

/// Finds the secret attributes of an HCL (or JSON) config text, line by line: `name =
/// value` and `"name": value`, blocks tracked by their braces, heredocs (`<<EOF`) whole.
fn scan(text: &str, extra: &[String]) -> Vec<Found> {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks: Vec<String> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let code = strip_comment(line);
        let trimmed = code.trim();
        // Several attributes on one line (`tokens { agent = "x" }`, compact JSON): when any
        // of them is a secret, or sits in a `tokens` block opened on the line, the whole
        // line is masked.
        if let Some(names) = inline_attributes(trimmed) {
            let secret = names.iter().any(|(n, opened)| {
                let mut path = blocks.clone();
                path.extend(opened.iter().cloned());
                is_secret_attribute(n, &path, extra)
            });
            if secret {
                let path = format!("{}/#line", blocks.join("/"));
                let n = seen.entry(path.clone()).or_insert(0);
                found.push(Found {
                    key: format!("{path}#{n}"),
                    value: trimmed.to_string(),
                    line: i,
                    start: line.len() - line.trim_start().len(),
                    body_lines: 0,
                    whole_line: true,
                });
                *n += 1;
            }
            track_braces(trimmed, &mut blocks, None);
            i += 1;
            continue;
        }
        if let Some((name, start)) = attribute(code) {
            let value_text = code[start..].trim_end();
            let value_trimmed = value_text.trim_end_matches(',').trim();
            // A block opened on the same line (`tokens = {` or `"acl": {`) is a block.
            if value_trimmed == "{" {
                blocks.push(name.trim_matches('"').to_string());
                i += 1;
                continue;
            }
            if (is_secret_attribute(&name, &blocks, extra) || has_url_password(value_trimmed))
                && !value_trimmed.starts_with('{')
            {
                let path = format!("{}/{}", blocks.join("/"), name.trim_matches('"'));
                let n = seen.entry(path.clone()).or_insert(0);
                let key = format!("{path}#{n}");
                *n += 1;
                let mut body_lines = 0;
                let mut value = value_trimmed.to_string();
                if let Some(marker) = value_trimmed
                    .strip_prefix("<<-")
                    .or_else(|| value_trimmed.strip_prefix("<<"))
                {
                    let marker = marker.trim();
                    let mut body = String::new();
                    let mut j = i + 1;
                    while j < lines.len() && lines[j].trim() != marker {
                        body.push_str(lines[j]);
                        body.push('\n');
                        j += 1;
                    }
                    body_lines = j.saturating_sub(i);
                    value = body;
                }
                found.push(Found {
                    key,
                    value,
                    line: i,
                    start,
                    body_lines,
                    whole_line: false,
                });
                i += 1 + body_lines;
                continue;
            }
        } else {
            // `name "label" {`, `name {`, `{` (a JSON object), `}`
            let head = trimmed.trim_end_matches('{').trim();
            let ident = head
                .split_whitespace()
                .next()
                .unwrap_or("")
                .trim_matches('"')
                .to_string();
            track_braces(trimmed, &mut blocks, Some(ident));
        }
        i += 1;
    }
    found
}

/// Keeps the block path in step with a line's braces outside strings: a block left open
/// at the end of the line is entered (named `name`), each brace closing one is left.
fn track_braces(line: &str, blocks: &mut Vec<String>, name: Option<String>) {
    let mut depth: i64 = 0;
    let mut in_string = false;
    let mut escaped = false;
    for c in line.chars() {
        match c {
            '\\' if in_string => {
                escaped = !escaped;
                continue;
            }
            '"' if !escaped => in_string = !in_string,
            '{' if !in_string => depth += 1,
            '}' if !in_string => depth -= 1,
            _ => {}
        }
        escaped = false;
    }
    if depth > 0 {
        for _ in 0..depth {
            blocks.push(name.clone().unwrap_or_default());
        }
    } else {
        for _ in 0..-depth {
            blocks.pop();
        }
    }
}

/// The attributes of a line that holds more than one, or one inside braces opened on the
/// same line, each with the blocks opened before it on the line; None for an ordinary line.
fn inline_attributes(line: &str) -> Option<Vec<(String, Vec<String>)>> {
    let mut found: Vec<(String, Vec<String>)> = Vec::new();
    let mut open: Vec<String> = Vec::new();
    let mut piece = String::new();
    let mut in_string = false;
    let mut escaped = false;
    let mut braces = 0;
    for c in line.chars() {
        if in_string {
            piece.push(c);
            match c {
                '\\' => escaped = !escaped,
                '"' if !escaped => in_string = false,
                _ => escaped = false,
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                piece.push(c);
            }
            '{' | '}' | ',' => {
                match attribute(&piece) {
                    Some((name, _)) if c != '{' => {
                        found.push((name.trim_matches('"').to_string(), open.clone()))
                    }
                    // `tokens {`, `tokens = {`, `"tokens": {`: a block opened on the line.
                    _ if c == '{' => {
                        let head = piece.trim().trim_end_matches(['=', ':']).trim();
                        let head = head.split_whitespace().next().unwrap_or("");
                        open.push(head.trim_matches('"').to_string());
                    }
                    _ => {}
                }
                if c == '{' {
                    braces += 1;
                } else if c == '}' {
                    open.pop();
                }
                piece.clear();
            }
            _ => piece.push(c),
        }
    }
    if let Some((name, _)) = attribute(&piece) {
        found.push((name.trim_matches('"').to_string(), open.clone()));
    }
    // `name {`, `name = {` or `{` alone opens a block: an ordinary line.
    (found.len() > 1 || (braces > 0 && !found.is_empty())).then_some(found)
}

/// `name = ...` or `"name": ...`: the attribute's name and where its value starts.
fn attribute(code: &str) -> Option<(String, usize)> {
    let indent = code.len() - code.trim_start().len();
    let rest = &code[indent..];
    let name_len = if let Some(quoted) = rest.strip_prefix('"') {
        quoted.find('"')? + 2
    } else {
        rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(rest.len())
    };
    if name_len == 0 {
        return None;
    }
    let name = &rest[..name_len];
    let after = &rest[name_len..];
    let sep = after.len() - after.trim_start().len();
    let after_sep = after.trim_start();
    let op = if after_sep.starts_with("==") {
        return None;
    } else if after_sep.starts_with('=') || after_sep.starts_with(':') {
        1
    } else {
        return None;
    };
    let start = indent + name_len + sep + op;
    Some((name.to_string(), start))
}

/// The line without a trailing `#` or `//` comment outside a string.
fn strip_comment(line: &str) -> &str {
    let mut in_string = false;
    let mut escaped = false;
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\\' if in_string => {
                escaped = !escaped;
                continue;
            }
            b'"' if !escaped => in_string = !in_string,
            b'#' if !in_string => return &line[..i],
            b'/' if !in_string && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
        escaped = false;
    }
    line
}

/// `old` and `new` with every secret attribute's value masked: `"<secret>"`, and on the
/// new side `"<secret, changed>"` where the same attribute held another value in `old`.
pub fn mask_pair(old: &str, new: &str, extra: &[String]) -> (String, String) {
    let old_found = scan(old, extra);
    let before: HashMap<&str, &str> = old_found
        .iter()
        .map(|f| (f.key.as_str(), f.value.as_str()))
        .collect();
    let old_masked = apply(old, &old_found, |_| MASKED);
    let new_found = scan(new, extra);
    let new_masked = apply(new, &new_found, |f| match before.get(f.key.as_str()) {
        Some(v) if *v == f.value => MASKED,
        _ if old.is_empty() => MASKED,
        _ => MASKED_CHANGED,
    });
    (old_masked, new_masked)
}

/// The line's own ending (`\r\n`, `\n` or none), kept on a masked line.
fn terminator(line: &str) -> &str {
    if line.ends_with("\r\n") {
        "\r\n"
    } else if line.ends_with('\n') {
        "\n"
    } else {
        ""
    }
}

fn apply(text: &str, found: &[Found], marker: impl Fn(&Found) -> &'static str) -> String {
    let by_line: HashMap<usize, &Found> = found.iter().map(|f| (f.line, f)).collect();
    let mut out = String::with_capacity(text.len());
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        match by_line.get(&i) {
            Some(f) if f.whole_line => {
                out.push_str(&line[..f.start]);
                out.push_str(if marker(f) == MASKED {
                    "<a line with a secret>"
                } else {
                    "<a line with a secret, changed>"
                });
                out.push_str(terminator(line));
                i += 1;
            }
            Some(f) => {
                let code = strip_comment(line.trim_end_matches('\n'));
                let comma = if code.trim_end().ends_with(',') {
                    ","
                } else {
                    ""
                };
                out.push_str(&line[..f.start]);
                out.push(' ');
                out.push_str(marker(f));
                out.push_str(comma);
                out.push_str(terminator(line));
                // A heredoc's body and its terminator line go with it.
                i += 1 + f.body_lines;
            }
            None => {
                out.push_str(line);
                i += 1;
            }
        }
    }
    out
}

/// What a diff of a private file (mode 0600, or a path the topology marks secret) shows:
/// which lines change, never their content.
pub fn private_diff(path: &str, old: &str, new: &str) -> String {
    let path = path.trim_start_matches('/');
    let diff = similar::TextDiff::from_lines(old, new);
    let mut out = format!("--- a/{path}\n+++ b/{path}\n");
    for group in diff.grouped_ops(0) {
        for op in group {
            let (tag, old_range, new_range) = op.as_tag_tuple();
            let what = match tag {
                similar::DiffTag::Equal => continue,
                similar::DiffTag::Delete => "removed",
                similar::DiffTag::Insert => "added",
                similar::DiffTag::Replace => "changed",
            };
            out.push_str(&format!(
                "@@ -{} +{} @@ {} (a private file: its content is not shown)\n",
                range(old_range),
                range(new_range),
                what
            ));
        }
    }
    out
}

fn range(r: std::ops::Range<usize>) -> String {
    format!("{},{}", r.start + 1, r.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSUL: &str = r#"datacenter = "homelab"
encrypt = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s="  # gossip
bootstrap_expect = 1

acl {
  enabled = true
  tokens {
    agent  = "3a1b6b8e-agent"
    master = "9f0c-master"
  }
}
"#;

    #[test]
    fn masks_tokens_and_the_gossip_key_and_says_which_changed() {
        let new = CONSUL
            .replace("bootstrap_expect = 1", "bootstrap_expect = 3")
            .replace("3a1b6b8e-agent", "new-agent-token");
        let (old_m, new_m) = mask_pair(CONSUL, &new, &[]);
        for text in [&old_m, &new_m] {
            assert!(!text.contains("pUqJ"), "{text}");
            assert!(
                !text.contains("agent-token") && !text.contains("3a1b6b8e"),
                "{text}"
            );
            assert!(!text.contains("9f0c"), "{text}");
            assert!(text.contains("enabled = true"));
        }
        assert!(new_m.contains(r#"agent  = "<secret, changed>""#), "{new_m}");
        assert!(new_m.contains(r#"master = "<secret>""#), "{new_m}");
        assert!(new_m.contains(r#"encrypt = "<secret>""#), "{new_m}");
        assert!(new_m.contains("bootstrap_expect = 3"));
    }

    #[test]
    fn masks_vault_and_nomad_secrets_and_keeps_paths() {
        let text = r#"service_registration "consul" {
  address = "127.0.0.1:8501"
  token   = "s3cr3t"
}
seal "awskms" {
  access_key = "AKIA123"
  secret_key = "abc/def"
}
listener "tcp" {
  tls_key_file = "/etc/vault.d/key.pem"
}
storage "raft" {
  retry_join {
    leader_client_key = <<EOF
-----BEGIN PRIVATE KEY-----
MIIBVwIBADANBgkq
-----END PRIVATE KEY-----
EOF
  }
}
vault {
  token = "hvs.xyz"
}
seal "pkcs11" {
  pin = "8642"
}
storage "postgresql" {
  connection_url = "postgres://vault:pgpass@db.home.arpa:5432/vault"
  ha_table       = "vault_ha_locks"
}
"#;
        let masked = mask_pair(text, text, &[]).1;
        for leak in [
            "8642",
            "pgpass",
            "s3cr3t",
            "AKIA123",
            "abc/def",
            "MIIBVwIBADANBgkq",
            "hvs.xyz",
        ] {
            assert!(!masked.contains(leak), "{leak} in {masked}");
        }
        assert!(masked.contains("/etc/vault.d/key.pem"));
        assert!(masked.contains(r#"address = "127.0.0.1:8501""#));
        assert!(masked.contains("storage \"raft\" {"));
        assert!(masked.contains(r#"ha_table       = "vault_ha_locks""#));
        assert!(!has_url_password("https://127.0.0.1:8501"));
        assert!(!has_url_password("https://user@host:8200"));
    }

    #[test]
    fn json_configs_and_extra_names() {
        let text = "{\n  \"acl\": {\n    \"tokens\": {\n      \"agent\": \"abc\"\n    }\n  },\n  \"license\": \"LIC\"\n}\n";
        let masked = mask_pair(text, text, &["license".to_string()]).1;
        assert!(
            !masked.contains("abc") && !masked.contains("LIC"),
            "{masked}"
        );
    }

    #[test]
    fn one_line_blocks_and_compact_json_are_masked_whole() {
        for text in [
            "acl {\n  tokens { agent = \"x1secret\" }\n  enabled = true\n}\n",
            "acl = { tokens = { agent = \"x1secret\" } }\nserver = true\n",
            "{\"acl\": {\"tokens\": {\"agent\": \"x1secret\"}}}\n",
            "{\"encrypt\": \"x1secret\", \"server\": true}\n",
            "{\n  \"datacenter\": \"dc1\", \"encrypt\": \"x1secret\"\n}\n",
        ] {
            let masked = mask_pair(text, text, &[]).1;
            assert!(!masked.contains("x1secret"), "{text} gave {masked}");
        }
        // The block stack survives a one-line block: what follows is still seen.
        let text = "acl {\n  tokens { agent = \"a\" }\n}\nencrypt = \"k2\"\n";
        assert!(!mask_pair(text, text, &[]).1.contains("k2"));
    }

    #[test]
    fn line_endings_are_kept() {
        let text = "token = \"a\"\r\nserver = true\r\nencrypt = \"b\"";
        let masked = mask_pair(text, text, &[]).1;
        assert_eq!(
            masked,
            "token = \"<secret>\"\r\nserver = true\r\nencrypt = \"<secret>\""
        );
    }

    #[test]
    fn private_files_show_only_which_lines_change() {
        let diff = private_diff("/etc/x", "a\nsecret1\nc\n", "a\nsecret2\nc\nd\n");
        assert!(!diff.contains("secret"), "{diff}");
        assert!(diff.contains("@@ -2,1 +2,1 @@ changed"), "{diff}");
        assert!(diff.contains("added"), "{diff}");
    }
}
