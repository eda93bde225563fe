//! Query results as files, written while they are computed: [`FileWriter`] encodes one batch at
//! a time into [`Pending`], and the caller takes the bytes out after each batch (into an HTTP
//! body, a multipart upload). Only one batch and, for Parquet, the row group being filled are
//! held, so a hundred million rows need no more memory than a hundred.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::sync::{Arc, Mutex};

/// Rows per Parquet row group: what the writer holds before it writes them out.
const ROW_GROUP_ROWS: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Parquet,
    Csv,
}

impl Format {
    pub fn parse(text: &str) -> Result<Format, String> {
        match text {
            "csv" => Ok(Format::Csv),
            "parquet" => Ok(Format::Parquet),
            other => Err(format!("format {other:?}: write csv or parquet")),
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Parquet => "parquet",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Parquet => "application/vnd.apache.parquet",
        }
    }
}

/// Boxed: each writer is hundreds of bytes, and only one is made per file.
pub enum FileWriter {
    Csv(Box<arrow::csv::Writer<Pending>>),
    Parquet(Box<ArrowWriter<Pending>>),
}

impl FileWriter {
    /// A writer of `schema`'s rows into `out`; a CSV file starts with its header, so a result
    /// without rows is still a valid file.
    pub fn new(format: Format, schema: SchemaRef, out: Pending) -> Result<FileWriter, String> {
        match format {
            Format::Csv => {
                let mut writer = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .with_timestamp_tz_format("%Y-%m-%dT%H:%M:%S%.fZ".to_string())
                    .build(out);
                writer.write(&RecordBatch::new_empty(schema)).map_err(|e| e.to_string())?;
                Ok(FileWriter::Csv(Box::new(writer)))
            }
            Format::Parquet => {
                let properties = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
                    .build();
                let writer = ArrowWriter::try_new(out, schema, Some(properties)).map_err(|e| e.to_string())?;
                Ok(FileWriter::Parquet(Box::new(writer)))
            }
        }
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), String> {
        match self {
            FileWriter::Csv(writer) => writer.write(batch).map_err(|e| e.to_string()),
            FileWriter::Parquet(writer) => writer.write(batch).map_err(|e| e.to_string()),
        }
    }

    /// The Parquet footer (CSV has none).
    pub fn finish(&mut self) -> Result<(), String> {
        match self {
            FileWriter::Csv(_) => Ok(()),
            FileWriter::Parquet(writer) => writer.finish().map(|_| ()).map_err(|e| e.to_string()),
        }
    }
}

/// Bytes written and not yet sent: the writers write here, the caller takes them.
#[derive(Clone, Default)]
pub struct Pending(Arc<Mutex<Vec<u8>>>);

impl Pending {
    pub fn take(&self) -> Bytes {
        Bytes::from(std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner())))
    }
}

impl Write for Pending {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
