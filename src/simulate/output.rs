//! File outputs of the simulator: CSV in the Kaggle `fraudTrain.csv` layout
//! (with its unnamed leading index column) and Parquet in the record schema.

use std::fs::File;
use std::path::Path;

use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::record::{self, Transaction, TransactionBatchBuilder, FIELDS};

/// Errors writing simulator output.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot write {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("cannot write CSV {path}: {source}")]
    Csv { path: String, source: csv::Error },
    #[error("cannot write Parquet {path}: {source}")]
    Parquet { path: String, source: parquet::errors::ParquetError },
}

/// Anything transactions can be written to.
pub trait TransactionWriter {
    fn write(&mut self, t: &Transaction) -> Result<(), OutputError>;
    fn finish(self: Box<Self>) -> Result<(), OutputError>;
}

/// CSV in the Kaggle layout: header `,trans_date_trans_time,cc_num,...`.
pub struct CsvWriter {
    path: String,
    inner: csv::Writer<File>,
    index: u64,
}

impl CsvWriter {
    pub fn create(path: &Path) -> Result<Self, OutputError> {
        let name = path.display().to_string();
        let file = File::create(path).map_err(|source| OutputError::Io { path: name.clone(), source })?;
        // The header is written by hand: serde would omit the index column.
        // csv buffers on its own; a BufWriter below it would copy twice.
        let mut inner = csv::WriterBuilder::new().has_headers(false).buffer_capacity(1 << 20).from_writer(file);
        let header = std::iter::once("").chain(FIELDS.iter().map(|f| f.name));
        inner.write_record(header).map_err(|source| OutputError::Csv { path: name.clone(), source })?;
        Ok(Self { path: name, inner, index: 0 })
    }
}

impl TransactionWriter for CsvWriter {
    fn write(&mut self, t: &Transaction) -> Result<(), OutputError> {
        let index = self.index.to_string();
        let result = self.inner.write_field(index).and_then(|()| self.inner.serialize(t));
        result.map_err(|source| OutputError::Csv { path: self.path.clone(), source })?;
        self.index += 1;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), OutputError> {
        self.inner.flush().map_err(|source| OutputError::Io { path: self.path.clone(), source })
    }
}

/// Parquet in the record schema, snappy-compressed, 64k-row batches.
pub struct ParquetWriter {
    path: String,
    inner: ArrowWriter<File>,
    builder: TransactionBatchBuilder,
}

const PARQUET_BATCH: usize = 65_536;

impl ParquetWriter {
    pub fn create(path: &Path) -> Result<Self, OutputError> {
        let name = path.display().to_string();
        let file = File::create(path).map_err(|source| OutputError::Io { path: name.clone(), source })?;
        let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
        let inner = ArrowWriter::try_new(file, record::schema(), Some(props))
            .map_err(|source| OutputError::Parquet { path: name.clone(), source })?;
        Ok(Self { path: name, inner, builder: TransactionBatchBuilder::with_capacity(PARQUET_BATCH) })
    }

    fn flush_batch(&mut self) -> Result<(), OutputError> {
        if !self.builder.is_empty() {
            let batch = self.builder.finish();
            self.inner.write(&batch).map_err(|source| OutputError::Parquet { path: self.path.clone(), source })?;
        }
        Ok(())
    }
}

impl TransactionWriter for ParquetWriter {
    fn write(&mut self, t: &Transaction) -> Result<(), OutputError> {
        self.builder.append(t);
        if self.builder.len() >= PARQUET_BATCH {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), OutputError> {
        self.flush_batch()?;
        self.inner.close().map_err(|source| OutputError::Parquet { path: self.path.clone(), source })?;
        Ok(())
    }
}

/// Writes `count` transactions from `source` to every writer.
pub fn write_all(
    source: impl Iterator<Item = Transaction>,
    count: usize,
    mut writers: Vec<Box<dyn TransactionWriter>>,
) -> Result<(), OutputError> {
    for t in source.take(count) {
        for w in writers.iter_mut() {
            w.write(&t)?;
        }
    }
    writers.into_iter().try_for_each(|w| w.finish())
}
