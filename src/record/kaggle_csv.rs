//! Reading transaction files in the Kaggle / Sparkov `fraudTrain.csv` layout:
//! a header row, an unnamed leading index column, integer card numbers,
//! `trans_date_trans_time` text. Extra columns are ignored; a row that does
//! not decode is reported with its line number, never skipped silently.

use std::fs::File;
use std::path::Path;

use crate::record::Transaction;

/// A row that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot open {path}: {source}")]
    Open { path: String, source: std::io::Error },
    #[error("{path} line {line}: {message}")]
    Row { path: String, line: u64, message: String },
}

/// Iterates the transactions of a Kaggle-layout CSV file.
pub struct KaggleCsv<R: std::io::Read> {
    path: String,
    reader: csv::Reader<R>,
    /// Column name -> position, from the header row.
    columns: std::collections::HashMap<String, usize>,
    header_error: Option<String>,
    row: csv::StringRecord,
}

impl KaggleCsv<File> {
    pub fn open(path: &Path) -> Result<Self, ReplayError> {
        let shown = path.display().to_string();
        let file = File::open(path).map_err(|source| ReplayError::Open { path: shown.clone(), source })?;
        Ok(Self::from_reader(file, shown))
    }
}

impl<R: std::io::Read> KaggleCsv<R> {
    pub fn from_reader(reader: R, name: String) -> Self {
        let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(reader);
        let (columns, header_error) = match reader.headers() {
            Ok(h) => (h.iter().enumerate().map(|(i, n)| (n.trim().to_string(), i)).collect(), None),
            Err(e) => (Default::default(), Some(e.to_string())),
        };
        Self { path: name, reader, columns, header_error, row: csv::StringRecord::new() }
    }
}

impl<R: std::io::Read> Iterator for KaggleCsv<R> {
    type Item = Result<Transaction, ReplayError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(message) = self.header_error.take() {
            return Some(Err(ReplayError::Row { path: self.path.clone(), line: 1, message }));
        }
        let line = self.reader.position().line();
        match self.reader.read_record(&mut self.row) {
            Ok(false) => None,
            Ok(true) => {
                let (row, columns) = (&self.row, &self.columns);
                let line = row.position().map_or(line, |p| p.line());
                Some(
                    Transaction::from_text(|name| columns.get(name).and_then(|&i| row.get(i)))
                        .map_err(|e| ReplayError::Row { path: self.path.clone(), line, message: e.to_string() }),
                )
            }
            Err(e) => Some(Err(ReplayError::Row {
                path: self.path.clone(),
                line: e.position().map_or(line, |p| p.line()),
                message: e.to_string(),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::output::{write_all, CsvWriter, TransactionWriter};
    use crate::simulate::{SimConfig, Simulator};

    /// Two rows of the public Kaggle fraudTrain.csv, verbatim.
    const KAGGLE: &str = "\
,trans_date_trans_time,cc_num,merchant,category,amt,first,last,gender,street,city,state,zip,lat,long,city_pop,job,dob,trans_num,unix_time,merch_lat,merch_long,is_fraud
0,2019-01-01 00:00:18,2703186189652095,\"fraud_Rippin, Kub and Mann\",misc_net,4.97,Jennifer,Banks,F,561 Perry Cove,Moravian Falls,NC,28654,36.0788,-81.1781,3495,\"Psychologist, counselling\",1988-03-09,0b242abb623afc578575680df30655b9,1325376018,36.011293,-82.048315,0
1,2019-01-01 00:00:44,630423337322,fraud_Heller-Gutmann-Zieme,grocery_pos,107.23,Stephanie,Gill,F,43039 Riley Greens Suite 393,Orient,WA,99160,48.8878,-118.2105,149,Special educational needs teacher,1978-06-21,1f76529f8574734946361c461b024d99,1325376044,49.159047,-118.186462,0
";

    #[test]
    fn reads_the_kaggle_layout_as_published() {
        let rows: Vec<_> =
            KaggleCsv::from_reader(KAGGLE.as_bytes(), "kaggle".into()).collect::<Result<_, _>>().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].cc_num, "2703186189652095");
        assert_eq!(rows[0].merchant.as_deref(), Some("fraud_Rippin, Kub and Mann"));
        assert_eq!(rows[0].trans_date_trans_time.as_deref(), Some("2019-01-01 00:00:18"));
        assert_eq!(rows[1].cc_num, "630423337322");
        assert_eq!(rows[1].zip.as_deref(), Some("99160"));
        assert_eq!(rows[1].amt, 107.23);
        assert_eq!(rows[1].is_fraud, Some(0));
    }

    #[test]
    fn simulator_csv_reads_back_identically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sim.csv");
        let txns: Vec<_> = Simulator::new(SimConfig::default()).take(500).collect();
        let w: Box<dyn TransactionWriter> = Box::new(CsvWriter::create(&path).unwrap());
        write_all(txns.iter().cloned(), txns.len(), vec![w]).unwrap();
        let back: Vec<_> = KaggleCsv::open(&path).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(back, txns);
    }

    #[test]
    fn a_bad_row_names_its_line_and_the_rest_still_reads() {
        let bad = KAGGLE.replacen("4.97", "four dollars", 1);
        let rows: Vec<_> = KaggleCsv::from_reader(bad.as_bytes(), "bad.csv".into()).collect();
        let err = rows[0].as_ref().unwrap_err().to_string();
        assert!(err.starts_with("bad.csv line 2:"), "{err}");
        assert!(rows[1].is_ok());
    }
}
