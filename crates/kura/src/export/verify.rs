//! `kura export verify`: checks a bundle written by [`super::export`] (see the module
//! documentation there for what is and is not proven).

use super::derive::{self, Rows, TABLES};
use super::{render_csv, render_jsonl, render_row_json, FORMAT, MANIFEST, RECORDS};
use crate::audit;
use anyhow::{anyhow, bail, Context, Result};
use kura_engine::codec::{self, Entry};
use kura_proofs::tlog;
use kura_proofs::Hash;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Largest manifest read.
const MANIFEST_MAX: u64 = 64 << 20;

/// What [`verify`] found.
#[derive(Clone, Debug, Default)]
pub struct VerifyReport {
    /// The checkpoint's origin (the log's name) and size.
    pub origin: String,
    pub checkpoint_size: u64,
    /// Whether the signature was checked with a key the caller supplied (rather than
    /// the one the bundle carries).
    pub key_supplied: bool,
    /// The verifier key the signature was checked with.
    pub key: String,
    pub records: u64,
    pub rows: u64,
    pub files: u64,
    /// Every check that failed, each naming the file, the row and what differs.
    pub failures: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }
}

fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut out)
        .with_context(|| format!("reading {}", path.display()))?;
    if out.len() as u64 > max {
        bail!("{} is larger than {max} bytes", path.display());
    }
    Ok(out)
}

fn hash32(v: &Value, what: &str) -> Result<Hash> {
    let s = v
        .as_str()
        .ok_or_else(|| anyhow!("{what} is not a hex string"))?;
    let mut h = [0u8; 32];
    hex::decode_to_slice(s, &mut h).map_err(|_| anyhow!("{what} is not 32 bytes of hex"))?;
    Ok(h)
}

/// One record line, parsed and checked against the checkpoint.
struct Rec {
    seq: u64,
    entry: Entry,
    outcome: String,
    issuer: Option<u32>,
    key: Option<String>,
    events: Vec<Value>,
}

fn parse_record(line: &str, size: u64, root: &Hash) -> Result<Rec> {
    let v: Value = serde_json::from_str(line).map_err(|e| anyhow!("not JSON: {e}"))?;
    if serde_json::to_string(&v)? != line {
        bail!("not in the canonical form the exporter writes (its bytes were changed)");
    }
    let seq = v
        .get("seq")
        .and_then(Value::as_u64)
        .ok_or_else(|| anyhow!("no `seq`"))?;
    if seq == 0 || seq > size {
        bail!("seq {seq} is not covered by the checkpoint (records 1..={size})");
    }
    let payload = hex::decode(
        v.get("payload")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("no `payload`"))?,
    )
    .map_err(|_| anyhow!("`payload` is not hex"))?;
    let leaf = audit::record_leaf_hash(seq, &payload);
    let given = hash32(v.get("leaf_hash").unwrap_or(&Value::Null), "`leaf_hash`")?;
    if given != leaf {
        bail!(
            "record {seq}: the payload does not hash to `leaf_hash` (payload or leaf hash \
             changed)"
        );
    }
    let proof = v
        .get("proof")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("no `proof` list"))?
        .iter()
        .enumerate()
        .map(|(i, h)| hash32(h, &format!("proof[{i}]")))
        .collect::<Result<Vec<_>>>()?;
    tlog::verify_inclusion(&leaf, seq - 1, size, &proof, root).map_err(|e| {
        anyhow!(
            "record {seq}: its inclusion proof does not lead to the checkpoint's root ({e}): \
             the record is not the one the signed log holds at seq {seq}"
        )
    })?;
    let entry = codec::decode(&payload)
        .map_err(|e| anyhow!("record {seq}: the payload does not decode: {e}"))?;
    let time = v.get("time").and_then(Value::as_str).unwrap_or_default();
    if time != derive::time_text(entry.ctx_timestamp_ms) {
        bail!(
            "record {seq}: `time` {time:?} is not the payload's time {}",
            derive::time_text(entry.ctx_timestamp_ms)
        );
    }
    let outcome = v
        .get("outcome")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("record {seq}: no `outcome`"))?
        .to_owned();
    let issuer = match v.get("issuer") {
        None | Some(Value::Null) => None,
        Some(x) => Some(
            x.as_u64()
                .and_then(|u| u32::try_from(u).ok())
                .ok_or_else(|| anyhow!("record {seq}: `issuer` is not a user id"))?,
        ),
    };
    let key = match v.get("key") {
        None | Some(Value::Null) => None,
        Some(x) => Some(
            x.as_str()
                .ok_or_else(|| anyhow!("record {seq}: `key` is not a string"))?
                .to_owned(),
        ),
    };
    let events = v
        .get("events")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("record {seq}: no `events` list"))?
        .clone();
    Ok(Rec {
        seq,
        entry,
        outcome,
        issuer,
        key,
        events,
    })
}

fn seq_of(row: &[String]) -> &str {
    row.first().map_or("?", String::as_str)
}

/// The first difference between the rows a file holds and the rows the records give.
fn compare_rows(
    file: &str,
    columns: &[&str],
    expected: &[Vec<String>],
    actual: &[Vec<String>],
) -> Option<String> {
    let n = expected.len().max(actual.len());
    for i in 0..n {
        let (e, a) = (expected.get(i), actual.get(i));
        if e == a {
            continue;
        }
        let no = i + 1;
        if let (Some(e0), Some(a0), Some(e1), Some(a1)) =
            (e, a, expected.get(i + 1), actual.get(i + 1))
        {
            if e0 == a1 && e1 == a0 {
                return Some(format!(
                    "{file}: rows {no} and {} are out of order (swapped: seq {} and seq {})",
                    no + 1,
                    seq_of(e0),
                    seq_of(e1)
                ));
            }
        }
        if actual.len() < expected.len() && expected.get(i + 1) == a {
            let e = e.map(|r| render_row_json(columns, r)).unwrap_or_default();
            return Some(format!(
                "{file}: row {no} was removed (the records give {e})"
            ));
        }
        if actual.len() > expected.len() && actual.get(i + 1) == e {
            let a = a.map(|r| render_row_json(columns, r)).unwrap_or_default();
            return Some(format!(
                "{file}: row {no} was added; no record gives it ({a})"
            ));
        }
        return Some(match (e, a) {
            (Some(e), Some(a)) if e.len() == a.len() => {
                let diffs: Vec<String> = columns
                    .iter()
                    .zip(e.iter().zip(a))
                    .filter(|(_, (x, y))| x != y)
                    .map(|(c, (x, y))| format!("column `{c}` is {y:?}, the records give {x:?}"))
                    .collect();
                format!(
                    "{file}: row {no} (seq {}) was changed: {}",
                    seq_of(e),
                    diffs.join("; ")
                )
            }
            (Some(e), Some(a)) => format!(
                "{file}: row {no} (seq {}) has {} cells, not {}",
                seq_of(e),
                a.len(),
                e.len()
            ),
            (Some(e), None) => format!(
                "{file}: row {no} is missing (the file ends early; the records give {})",
                render_row_json(columns, e)
            ),
            (None, Some(a)) => format!(
                "{file}: row {no} was added; no record gives it ({})",
                render_row_json(columns, a)
            ),
            (None, None) => continue,
        });
    }
    None
}

/// The line number and byte offset where two renderings first differ.
fn first_byte_difference(a: &[u8], b: &[u8]) -> String {
    let at = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let line = a[..at].iter().filter(|&&c| c == b'\n').count() + 1;
    format!("byte {at}, line {line}")
}

fn check_csv(
    dir: &Path,
    name: &str,
    columns: &[&str],
    expected: &[Vec<String>],
    failures: &mut Vec<String>,
) -> Result<()> {
    let bytes = match std::fs::read(dir.join(name)) {
        Ok(b) => b,
        Err(e) => {
            failures.push(format!("{name}: cannot be read: {e}"));
            return Ok(());
        }
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(&bytes[..]);
    let mut rows = Vec::new();
    for (i, r) in reader.records().enumerate() {
        match r {
            Ok(r) => rows.push(r.iter().map(str::to_owned).collect::<Vec<_>>()),
            Err(e) => {
                failures.push(format!("{name}: not valid CSV at record {i}: {e}"));
                return Ok(());
            }
        }
    }
    let header: Vec<String> = columns.iter().map(|c| (*c).to_owned()).collect();
    if rows.first() != Some(&header) {
        failures.push(format!("{name}: the header is not `{}`", columns.join(",")));
        return Ok(());
    }
    if let Some(d) = compare_rows(name, columns, expected, &rows[1..]) {
        failures.push(d);
        return Ok(());
    }
    let canonical = render_csv(columns, expected)?;
    if canonical != bytes {
        failures.push(format!(
            "{name}: the rows are right but the bytes are not the exporter's rendering \
             (first difference at {})",
            first_byte_difference(&bytes, &canonical)
        ));
    }
    Ok(())
}

fn check_jsonl(
    dir: &Path,
    name: &str,
    columns: &[&str],
    expected: &[Vec<String>],
    failures: &mut Vec<String>,
) {
    let bytes = match std::fs::read(dir.join(name)) {
        Ok(b) => b,
        Err(e) => {
            failures.push(format!("{name}: cannot be read: {e}"));
            return;
        }
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        failures.push(format!("{name}: not UTF-8 text"));
        return;
    };
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let v: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{name}: line {} is not JSON: {e}", i + 1));
                return;
            }
        };
        let Some(obj) = v.as_object() else {
            failures.push(format!("{name}: line {} is not a JSON object", i + 1));
            return;
        };
        let mut row = Vec::with_capacity(columns.len());
        for c in columns {
            match obj.get(*c) {
                Some(Value::String(s)) => row.push(s.clone()),
                _ => {
                    failures.push(format!("{name}: row {} has no string column `{c}`", i + 1));
                    return;
                }
            }
        }
        if obj.len() != columns.len() {
            failures.push(format!(
                "{name}: row {} has columns other than {}",
                i + 1,
                columns.join(",")
            ));
            return;
        }
        rows.push(row);
    }
    if let Some(d) = compare_rows(name, columns, expected, &rows) {
        failures.push(d);
        return;
    }
    let canonical = render_jsonl(columns, expected);
    if canonical != bytes {
        failures.push(format!(
            "{name}: the rows are right but the bytes are not the exporter's rendering \
             (first difference at {})",
            first_byte_difference(&bytes, &canonical)
        ));
    }
}

/// Verifies the bundle in `dir`. `key`: the verifier key (or a file holding it) to
/// check the checkpoint's signature with; `None` uses the bundle's own key. Returns a
/// report whose `failures` list every check that failed; an error only when the bundle
/// cannot be read at all.
pub fn verify(dir: &Path, key: Option<&str>) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let manifest_path = dir.join(MANIFEST);
    let manifest: Value = serde_json::from_slice(&read_bounded(&manifest_path, MANIFEST_MAX)?)
        .with_context(|| format!("{} is not JSON", manifest_path.display()))?;
    if manifest.get("format").and_then(Value::as_str) != Some(FORMAT) {
        bail!("{MANIFEST}: not a {FORMAT} bundle");
    }
    let failures = &mut report.failures;

    // The checkpoint.
    let bundle_key = manifest
        .get("verifier_key")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let key_text = match key {
        Some(k) => {
            report.key_supplied = true;
            k.to_owned()
        }
        None => bundle_key.to_owned(),
    };
    let verifier = audit::parse_verifier(&key_text).with_context(|| {
        if report.key_supplied {
            "the key given with --key".to_owned()
        } else {
            format!("{MANIFEST}: `verifier_key`")
        }
    })?;
    report.key = verifier.to_string();
    if report.key_supplied && bundle_key != report.key {
        failures.push(format!(
            "{MANIFEST}: `verifier_key` {bundle_key:?} is not the key supplied ({})",
            report.key
        ));
    }
    let note = manifest
        .get("checkpoint")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("{MANIFEST}: no `checkpoint`"))?;
    let cp = match audit::open_checkpoint(note, &verifier) {
        Ok(cp) => cp,
        Err(e) => {
            failures.push(format!(
                "{MANIFEST}: the checkpoint is not signed by {} ({e:#}): it was replaced or \
                 edited",
                verifier.name()
            ));
            return Ok(report);
        }
    };
    report.origin = cp.origin.clone();
    report.checkpoint_size = cp.size;
    let journal = manifest.get("journal").cloned().unwrap_or(Value::Null);
    if journal.get("checkpoint_size").and_then(Value::as_u64) != Some(cp.size) {
        failures.push(format!(
            "{MANIFEST}: `journal.checkpoint_size` is not the signed checkpoint's size {}",
            cp.size
        ));
    }

    // The manifest's file list.
    let mut listed: BTreeMap<String, (String, u64)> = BTreeMap::new();
    for f in manifest
        .get("files")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("{MANIFEST}: no `files` list"))?
    {
        let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
        let sha = f.get("sha256").and_then(Value::as_str).unwrap_or_default();
        let rows = f.get("rows").and_then(Value::as_u64).unwrap_or(u64::MAX);
        listed.insert(name.to_owned(), (sha.to_owned(), rows));
    }
    let mut expected_files: BTreeSet<String> = BTreeSet::from([RECORDS.to_owned()]);
    for t in TABLES {
        expected_files.insert(format!("{}.csv", t.name));
        expected_files.insert(format!("{}.jsonl", t.name));
    }
    for name in &expected_files {
        if !listed.contains_key(name) {
            failures.push(format!("{MANIFEST}: {name} is not listed"));
        }
    }
    for name in listed.keys() {
        if !expected_files.contains(name) {
            failures.push(format!(
                "{MANIFEST}: lists {name:?}, which is not part of a bundle"
            ));
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n != MANIFEST && !expected_files.contains(&n) {
                failures.push(format!(
                    "{n}: not part of a bundle (added to the directory)"
                ));
            }
        }
    }

    // The records.
    let records_bytes = std::fs::read(dir.join(RECORDS))
        .with_context(|| format!("reading {}", dir.join(RECORDS).display()))?;
    let records_text =
        std::str::from_utf8(&records_bytes).map_err(|_| anyhow!("{RECORDS} is not UTF-8 text"))?;
    let mut recs = Vec::new();
    let mut last_seq = 0u64;
    for (i, line) in records_text.lines().enumerate() {
        match parse_record(line, cp.size, &cp.root) {
            Ok(r) => {
                if r.seq <= last_seq {
                    failures.push(format!(
                        "{RECORDS}: line {} (seq {}) is not after seq {last_seq}: records were \
                         reordered or repeated",
                        i + 1,
                        r.seq
                    ));
                }
                last_seq = r.seq;
                recs.push(r);
            }
            Err(e) => failures.push(format!("{RECORDS}: line {}: {e:#}", i + 1)),
        }
    }
    report.records = recs.len() as u64;
    let first = journal.get("first_seq").and_then(Value::as_u64);
    let last = journal.get("last_seq").and_then(Value::as_u64);
    if (first, last) != (recs.first().map(|r| r.seq), recs.last().map(|r| r.seq))
        || journal.get("records").and_then(Value::as_u64) != Some(recs.len() as u64)
    {
        failures.push(format!(
            "{MANIFEST}: the journal range (first_seq, last_seq, records) is not the one of \
             {RECORDS}"
        ));
    }

    // Rows, re-derived.
    let mut ctx = derive::Context::default();
    let mut rows = Rows::default();
    let mut derived = true;
    for r in &recs {
        if let Err(e) = derive::derive(
            &mut ctx,
            &derive::RecordIn {
                seq: r.seq,
                entry: &r.entry,
                outcome: &r.outcome,
                issuer: r.issuer,
                key: r.key.as_deref(),
                events: &r.events,
            },
            &mut rows,
        ) {
            failures.push(format!("{RECORDS}: {e:#}"));
            derived = false;
            break;
        }
    }
    report.rows = rows.total();
    if derived {
        for (i, t) in TABLES.iter().enumerate() {
            check_csv(
                dir,
                &format!("{}.csv", t.name),
                t.columns,
                &rows.tables[i],
                failures,
            )?;
            check_jsonl(
                dir,
                &format!("{}.jsonl", t.name),
                t.columns,
                &rows.tables[i],
                failures,
            );
        }
    }

    // Hashes and row counts.
    for (name, (sha, count)) in &listed {
        if !expected_files.contains(name) {
            continue;
        }
        let bytes = match std::fs::read(dir.join(name)) {
            Ok(b) => b,
            Err(e) => {
                failures.push(format!("{name}: cannot be read: {e}"));
                continue;
            }
        };
        report.files += 1;
        let actual = hex::encode(Sha256::digest(&bytes));
        if &actual != sha {
            failures.push(format!(
                "{name}: SHA-256 {actual} is not the manifest's {sha}: the file was changed"
            ));
        }
        let want = if name == RECORDS {
            Some(recs.len() as u64)
        } else {
            TABLES
                .iter()
                .position(|t| {
                    name == &format!("{}.csv", t.name) || name == &format!("{}.jsonl", t.name)
                })
                .map(|i| rows.tables[i].len() as u64)
        };
        if derived && want != Some(*count) {
            failures.push(format!(
                "{name}: the manifest says {count} rows, the records give {}",
                want.map_or_else(|| "?".into(), |w| w.to_string())
            ));
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn differences_are_named() {
        let cols = ["seq", "x"];
        let e = vec![r(&["1", "a"]), r(&["2", "b"]), r(&["3", "c"])];
        assert_eq!(compare_rows("f", &cols, &e, &e), None);
        let changed = vec![r(&["1", "a"]), r(&["2", "B"]), r(&["3", "c"])];
        let m = compare_rows("f", &cols, &e, &changed).expect("diff");
        assert!(
            m.contains("row 2 (seq 2) was changed: column `x` is \"B\""),
            "{m}"
        );
        let removed = vec![r(&["1", "a"]), r(&["3", "c"])];
        let m = compare_rows("f", &cols, &e, &removed).expect("diff");
        assert!(m.contains("row 2 was removed"), "{m}");
        let swapped = vec![r(&["2", "b"]), r(&["1", "a"]), r(&["3", "c"])];
        let m = compare_rows("f", &cols, &e, &swapped).expect("diff");
        assert!(m.contains("rows 1 and 2 are out of order"), "{m}");
        let added = vec![
            r(&["1", "a"]),
            r(&["9", "z"]),
            r(&["2", "b"]),
            r(&["3", "c"]),
        ];
        let m = compare_rows("f", &cols, &e, &added).expect("diff");
        assert!(m.contains("row 2 was added"), "{m}");
    }
}
