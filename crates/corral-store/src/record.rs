//! The WAL record: one request's batches, encoded compactly. Field and tag names are written once
//! per batch and referred to by index, so a 10-field JSON message costs little more than its values.

use corral_model::{Batch, FieldValue, Row, TableName};

const VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
#[error("corrupt WAL record: {0}")]
pub struct DecodeError(&'static str);

#[cfg(test)]
pub fn encode(batches: &[Batch]) -> Vec<u8> {
    encode_with_sizes(batches.iter()).0
}

/// Encodes (the batches of one or several requests) and also returns how many bytes each batch
/// took (per-table ingest metrics).
pub fn encode_with_sizes<'a>(batches: impl Iterator<Item = &'a Batch> + Clone) -> (Vec<u8>, Vec<usize>) {
    let count = batches.clone().count();
    let mut sizes = Vec::with_capacity(count);
    let mut out = Vec::with_capacity(64 + batches.clone().map(|b| b.rows.len() * 64).sum::<usize>());
    out.push(VERSION);
    put_u32(&mut out, count as u32);
    for batch in batches {
        let start = out.len();
        put_str(&mut out, batch.table.as_str());
        // Name dictionary for this batch: tags and fields share it.
        let mut names: Vec<&str> = Vec::new();
        let mut index = std::collections::HashMap::<&str, u32>::new();
        for row in &batch.rows {
            for name in row.tags.iter().map(|(k, _)| k).chain(row.fields.iter().map(|(k, _)| k)) {
                index.entry(name.as_str()).or_insert_with(|| {
                    names.push(name);
                    names.len() as u32 - 1
                });
            }
        }
        put_u32(&mut out, names.len() as u32);
        for name in &names {
            put_str(&mut out, name);
        }
        put_u32(&mut out, batch.rows.len() as u32);
        for row in &batch.rows {
            out.extend_from_slice(&row.time_ns.to_le_bytes());
            put_str(&mut out, &row.device);
            put_u32(&mut out, row.tags.len() as u32);
            for (k, v) in &row.tags {
                put_u32(&mut out, index[k.as_str()]);
                put_str(&mut out, v);
            }
            put_u32(&mut out, row.fields.len() as u32);
            for (k, v) in &row.fields {
                put_u32(&mut out, index[k.as_str()]);
                match v {
                    FieldValue::Float(x) => {
                        out.push(0);
                        out.extend_from_slice(&x.to_le_bytes());
                    }
                    FieldValue::Int(x) => {
                        out.push(1);
                        out.extend_from_slice(&x.to_le_bytes());
                    }
                    FieldValue::UInt(x) => {
                        out.push(2);
                        out.extend_from_slice(&x.to_le_bytes());
                    }
                    FieldValue::Bool(x) => out.push(if *x { 4 } else { 3 }),
                    FieldValue::Str(s) => {
                        out.push(5);
                        put_str(&mut out, s);
                    }
                }
            }
        }
        sizes.push(out.len() - start);
    }
    (out, sizes)
}

pub fn decode(bytes: &[u8]) -> Result<Vec<Batch>, DecodeError> {
    let mut r = Reader { bytes, pos: 0 };
    if r.u8()? != VERSION {
        return Err(DecodeError("unknown record version"));
    }
    let n_batches = r.u32()?;
    let mut batches = Vec::new();
    for _ in 0..n_batches {
        let table = TableName::new(r.str()?).map_err(|_| DecodeError("bad table name"))?;
        let n_names = r.u32()? as usize;
        let mut names = Vec::with_capacity(n_names.min(4096));
        for _ in 0..n_names {
            names.push(r.str()?.to_string());
        }
        let name = |i: u32| names.get(i as usize).cloned().ok_or(DecodeError("name index out of range"));
        let n_rows = r.u32()? as usize;
        let mut rows = Vec::with_capacity(n_rows.min(65536));
        for _ in 0..n_rows {
            let time_ns = r.i64()?;
            let mut row = Row::new(time_ns, r.str()?);
            for _ in 0..r.u32()? {
                let k = name(r.u32()?)?;
                row.tags.push((k, r.str()?.to_string()));
            }
            for _ in 0..r.u32()? {
                let k = name(r.u32()?)?;
                let v = match r.u8()? {
                    0 => FieldValue::Float(f64::from_le_bytes(r.take8()?)),
                    1 => FieldValue::Int(i64::from_le_bytes(r.take8()?)),
                    2 => FieldValue::UInt(u64::from_le_bytes(r.take8()?)),
                    3 => FieldValue::Bool(false),
                    4 => FieldValue::Bool(true),
                    5 => FieldValue::Str(r.str()?.to_string()),
                    _ => return Err(DecodeError("unknown value type")),
                };
                row.fields.push((k, v));
            }
            rows.push(row);
        }
        batches.push(Batch { table, rows });
    }
    if r.pos != bytes.len() {
        return Err(DecodeError("trailing bytes"));
    }
    Ok(batches)
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or(DecodeError("truncated"))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn take8(&mut self) -> Result<[u8; 8], DecodeError> {
        Ok(self.take(8)?.try_into().expect("8 bytes"))
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.take8()?))
    }
    fn str(&mut self) -> Result<&'a str, DecodeError> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| DecodeError("invalid UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_value_type() {
        let row = Row::new(-5, "dev-1")
            .tag("fleet", "north")
            .field("f", FieldValue::Float(1.5))
            .field("i", FieldValue::Int(-7))
            .field("u", FieldValue::UInt(u64::MAX))
            .field("b", FieldValue::Bool(true))
            .field("s", FieldValue::Str("héllo".into()));
        let batches = vec![
            Batch { table: TableName::telemetry(), rows: vec![row.clone(), Row::new(9, "d2")] },
            Batch { table: TableName::new("other").unwrap(), rows: vec![row] },
        ];
        assert_eq!(decode(&encode(&batches)).unwrap(), batches);
    }

    #[test]
    fn truncated_records_are_errors_not_panics() {
        let batches =
            vec![Batch { table: TableName::telemetry(), rows: vec![Row::new(1, "d").field("x", FieldValue::Str("abc".into()))] }];
        let bytes = encode(&batches);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
