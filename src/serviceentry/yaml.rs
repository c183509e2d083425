//! ServiceEntry YAML: multi-document files and `kind: List`, parsed with libyaml for the usual
//! file and with a budgeted parser for what libyaml cannot be trusted with.

use super::*;

/// Parses one YAML file's text: multi-document, `kind: List` and non-ServiceEntry documents allowed.
/// A syntax error fails the whole file (the caller keeps the last good content); an object that does
/// not fit the model is reported as a problem and skipped, the rest is kept.
///
/// Two parsers with the rules above: libyaml (`yaml_serde`, about 1.5 times as fast) for the usual
/// file, and the budgeted `serde_saphyr` for what libyaml cannot be trusted with (see
/// `fits_libyaml`). Both read YAML 1.2 booleans only: `namespace: n`, `no` or `off` stay strings.
pub fn parse_yaml(text: &str, origin: &str) -> Result<Vec<Result<ServiceEntry, Problem>>, String> {
    // A leading byte-order mark throws libyaml's columns off (every key after the first fails).
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // YAML allows no control character but tab and line breaks. libyaml refuses them; the
    // bounded parser takes a NUL for the end of the text, which would drop the rest silently.
    if let Some(i) = text
        .bytes()
        .position(|b| (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) || b == 0x7f)
    {
        return Err(format!(
            "{origin}: control character 0x{:02x} at byte {i} (YAML allows none)",
            text.as_bytes()[i]
        ));
    }
    if !fits_libyaml(text) {
        return parse_yaml_bounded(text, origin);
    }
    // The usual file holds ServiceEntries only: deserialised straight into the model. Anything else
    // (lists, other kinds, an object that does not fit) takes the general path below, which reports
    // problems object by object.
    if let Ok(Some(entries)) = parse_service_entries(text) {
        return Ok(entries.into_iter().map(Ok).collect());
    }
    let mut out = Vec::new();
    for doc in yaml_serde::Deserializer::from_str(text) {
        // Through yaml_serde's own tree, which refuses a repeated key as the bounded parser does.
        let value = yaml_serde::Value::deserialize(doc)
            .and_then(|v| serde_json::to_value(v).map_err(de::Error::custom))
            .map_err(|e| format!("{origin}: YAML error: {e}"))?;
        collect_objects(value, origin, &mut out);
    }
    Ok(out)
}

/// Flow nesting (`[`, `{`) handed to libyaml at most: its scanner's work per token grows with the
/// nesting (100,000 nested `{a: ` take minutes); at these bounds the worst stays above 5 MB/s.
pub(super) const LIBYAML_MAX_FLOW_DEPTH: u32 = 16;
/// Opening brackets in one document below which its nesting needs no closer look.
pub(super) const LIBYAML_MAX_DOC_BRACKETS: u32 = 32;

/// Whether `text` can go to libyaml. It cannot bound alias expansion (billion laughs), does not
/// apply merge keys and is slow on deep flow nesting: a file with an anchor (`&`) or `<<` goes to
/// the bounded parser, and so does one with a document whose nesting could be deep. That bound is
/// read on bytes, per document (between `---` or `...` lines), and holds when either the document
/// has few opening brackets, or their running count (which over-counts inside scalars and could
/// under-count only on a closing bracket inside a quoted scalar, comment or tag) stays shallow with
/// no quote, `#` or `!` inside brackets. A file sent to the bounded path is parsed slower, and under
/// serde_saphyr's budgets (1,024 documents, 250,000 nodes), which the libyaml path does without.
pub(super) fn fits_libyaml(text: &str) -> bool {
    let bytes = text.as_bytes();
    let (mut brackets, mut depth, mut shallow) = (0u32, 0u32, true);
    let mut prev = b'\n';
    for (i, &b) in bytes.iter().enumerate() {
        if prev == b'\n' && is_document_marker(&bytes[i..]) {
            // Nesting cannot carry over: a marker inside brackets is a syntax error for libyaml.
            (brackets, depth, shallow) = (0, 0, true);
        }
        match b {
            b'&' => return false,
            b'<' if prev == b'<' => return false,
            b'[' | b'{' => {
                brackets += 1;
                depth += 1;
                shallow &= depth <= LIBYAML_MAX_FLOW_DEPTH;
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'"' | b'\'' | b'#' | b'!' if depth > 0 => shallow = false,
            _ => {}
        }
        if !shallow && brackets > LIBYAML_MAX_DOC_BRACKETS {
            return false;
        }
        prev = b;
    }
    true
}

/// `---` or `...` followed by a blank or the end: a document marker at the start of a line.
pub(super) fn is_document_marker(rest: &[u8]) -> bool {
    (rest.starts_with(b"---") || rest.starts_with(b"..."))
        && rest
            .get(3)
            .is_none_or(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

/// Every document straight into the model; None when one is of another kind.
pub(super) fn parse_service_entries(
    text: &str,
) -> Result<Option<Vec<ServiceEntry>>, yaml_serde::Error> {
    let mut out = Vec::new();
    // The iterator yields one deserialiser per document; the first error (syntax included) ends it.
    for doc in yaml_serde::Deserializer::from_str(text) {
        match Option::<ServiceEntry>::deserialize(doc)? {
            Some(se) if se.kind == "ServiceEntry" => out.push(se),
            Some(_) => return Ok(None),
            None => {}
        }
    }
    Ok(Some(out))
}

/// [`parse_yaml`] with serde_saphyr, whose budgets bound alias expansion, nesting and size.
pub(super) fn parse_yaml_bounded(
    text: &str,
    origin: &str,
) -> Result<Vec<Result<ServiceEntry, Problem>>, String> {
    // YAML 1.2 booleans only: under 1.1 rules `namespace: n` or `no` would turn into `false`.
    let options = serde_saphyr::Options {
        strict_booleans: true,
        ..Default::default()
    };
    if let Ok(docs) =
        serde_saphyr::from_multiple_with_options::<Option<ServiceEntry>>(text, options.clone())
    {
        if docs
            .iter()
            .all(|d| d.as_ref().is_none_or(|se| se.kind == "ServiceEntry"))
        {
            return Ok(docs.into_iter().flatten().map(Ok).collect());
        }
    }
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple_with_options(text, options)
        .map_err(|e| format!("{origin}: YAML error: {e}"))?;
    let mut out = Vec::new();
    for doc in docs {
        collect_objects(doc, origin, &mut out);
    }
    Ok(out)
}

pub(super) fn collect_objects(
    mut doc: serde_json::Value,
    origin: &str,
    out: &mut Vec<Result<ServiceEntry, Problem>>,
) {
    let kind = doc.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
    match kind {
        _ if doc.is_null() => {}
        "List" | "ServiceEntryList" => {
            if let Some(serde_json::Value::Array(items)) =
                doc.get_mut("items").map(serde_json::Value::take)
            {
                for item in items {
                    collect_objects(item, origin, out);
                }
            }
        }
        "ServiceEntry" => {
            let name = doc
                .pointer("/metadata/name")
                .and_then(|n| n.as_str())
                .unwrap_or("<unnamed>")
                .to_string();
            out.push(
                serde_json::from_value::<ServiceEntry>(doc).map_err(|e| Problem {
                    object: format!("{origin}: ServiceEntry {name}"),
                    message: format!("does not fit the ServiceEntry schema: {e}"),
                    skipped_object: true,
                }),
            );
        }
        // Other kinds (Services, ConfigMaps…) may share the directory: not ours, not an error.
        _ => {}
    }
}
