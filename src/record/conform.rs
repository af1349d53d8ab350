//! Schema conformance: turns any client's Arrow batch into a batch of the one
//! transaction schema ([`crate::record::schema`]).
//!
//! Clients differ in how they type the same data: pandas gives `int64` card
//! numbers, pyarrow may give `large_string` or dictionary-encoded categories,
//! Spark gives `int32` hours. Lossless casts are applied; anything else is a
//! [`SchemaError`] naming the column, so a client sees exactly what to fix.
//! Extra columns are ignored; missing optional columns become nulls.

use arrow::array::{new_null_array, ArrayRef};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;

use crate::record::{self, Kind, Presence, FIELDS};

/// Why a batch does not fit the transaction schema.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchemaError {
    #[error("missing required column `{0}`")]
    MissingColumn(&'static str),
    #[error("missing time column: one of `unix_time` or `trans_date_trans_time` is required")]
    MissingTime,
    #[error("column `{column}` has type {found}, expected {expected}")]
    WrongType { column: &'static str, found: DataType, expected: DataType },
}

/// Returns the batch with exactly the record schema's columns and types.
pub fn conform(batch: &RecordBatch) -> Result<RecordBatch, SchemaError> {
    let schema = batch.schema();
    let has = |name: &str| schema.column_with_name(name).is_some();
    if !has(record::column::unix_time) && !has(record::column::trans_date_trans_time) {
        return Err(SchemaError::MissingTime);
    }
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(FIELDS.len());
    for spec in FIELDS {
        let expected = spec.kind.data_type();
        let column = match batch.column_by_name(spec.name) {
            None if spec.presence == Presence::Required => return Err(SchemaError::MissingColumn(spec.name)),
            None => new_null_array(&expected, batch.num_rows()),
            Some(array) if array.data_type() == &expected => array.clone(),
            Some(array) if castable(array.data_type(), spec.kind) => {
                cast(array, &expected).map_err(|_| SchemaError::WrongType {
                    column: spec.name,
                    found: array.data_type().clone(),
                    expected: expected.clone(),
                })?
            }
            Some(array) => {
                return Err(SchemaError::WrongType { column: spec.name, found: array.data_type().clone(), expected })
            }
        };
        columns.push(column);
    }
    Ok(RecordBatch::try_new(record::schema(), columns).expect("columns follow the record schema"))
}

/// The casts that cannot lose or invent information.
fn castable(from: &DataType, to: Kind) -> bool {
    use DataType::*;
    let text = |t: &DataType| matches!(t, Utf8 | LargeUtf8 | Utf8View);
    match (from, to) {
        (Null, _) => true,
        (Dictionary(_, value), kind) => castable(value, kind),
        (t, Kind::Str) => text(t) || t.is_integer(),
        (t, Kind::F64) => t.is_integer() || t.is_floating(),
        (t, Kind::I64) => t.is_integer(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, Float32Array, Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    use super::*;

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        let fields: Vec<Field> = columns.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), true)).collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns.into_iter().map(|(_, a)| a).collect()).unwrap()
    }

    fn minimal() -> Vec<(&'static str, ArrayRef)> {
        let s = |v: &str| Arc::new(StringArray::from(vec![v])) as ArrayRef;
        let f = |v: f64| Arc::new(arrow::array::Float64Array::from(vec![v])) as ArrayRef;
        vec![
            ("trans_num", s("t1")),
            ("cc_num", Arc::new(Int64Array::from(vec![4_111_111_111_111_111])) as ArrayRef),
            ("unix_time", Arc::new(Int64Array::from(vec![1_700_000_000])) as ArrayRef),
            ("category", s("misc_net")),
            ("amt", Arc::new(Float32Array::from(vec![12.5f32])) as ArrayRef),
            ("lat", f(40.0)),
            ("long", f(-74.0)),
            ("merch_lat", f(41.0)),
            ("merch_long", f(-75.0)),
            ("dob", s("1980-01-01")),
            ("extra", s("ignored")),
        ]
    }

    #[test]
    fn casts_losslessly_and_fills_optional_columns() {
        let out = conform(&batch(minimal())).unwrap();
        assert_eq!(out.schema(), record::schema());
        let cc = out.column_by_name("cc_num").unwrap();
        assert_eq!(cc.as_any().downcast_ref::<StringArray>().unwrap().value(0), "4111111111111111");
        assert!(out.column_by_name("gender").unwrap().is_null(0));
    }

    #[test]
    fn missing_or_mistyped_columns_are_named() {
        let without_amt: Vec<_> = minimal().into_iter().filter(|(n, _)| *n != "amt").collect();
        assert_eq!(conform(&batch(without_amt)), Err(SchemaError::MissingColumn("amt")));
        let untimed: Vec<_> = minimal().into_iter().filter(|(n, _)| *n != "unix_time").collect();
        assert_eq!(conform(&batch(untimed)), Err(SchemaError::MissingTime));
        let mut text_amt = minimal();
        text_amt[4].1 = Arc::new(StringArray::from(vec!["12.5"]));
        let err = conform(&batch(text_amt)).unwrap_err();
        assert!(err.to_string().contains("`amt` has type Utf8"), "{err}");
    }
}
