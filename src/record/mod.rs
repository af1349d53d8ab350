//! The transaction record: one definition of its fields, from which the Rust
//! struct, the Arrow schema, the column-name constants and the Arrow batch
//! builder are all generated.
//!
//! Field names and order are those of the public Sparkov / Kaggle
//! `fraudTrain.csv` layout (docs/architecture.md, "Contracts"), so exported
//! data replays unchanged and the CSV writer's header is the Kaggle header.
//! Every source turns its input into Arrow batches of [`schema()`]; every sink
//! consumes batches. Nothing else in the code base lists these fields again.

pub mod conform;
pub mod kaggle_csv;
pub mod limits;

use std::sync::{Arc, OnceLock};

use arrow::array::{ArrayRef, Float64Builder, Int64Builder, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

/// How a field is stored: in Rust, in Arrow and in the CSV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// UTF-8 text (`String`, Arrow `Utf8`).
    Str,
    /// 64-bit float (`f64`, Arrow `Float64`).
    F64,
    /// 64-bit integer (`i64`, Arrow `Int64`).
    I64,
}

impl Kind {
    /// The canonical Arrow type of a column of this kind.
    pub fn data_type(self) -> DataType {
        match self {
            Kind::Str => DataType::Utf8,
            Kind::F64 => DataType::Float64,
            Kind::I64 => DataType::Int64,
        }
    }
}

/// Whether a record must carry a field (docs/architecture.md, "Contracts").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Required,
    /// Optional in the record, but one of a group must be present
    /// (`unix_time` or `trans_date_trans_time`).
    OneOf,
    Optional,
}

/// Static description of one record field.
#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    pub name: &'static str,
    pub kind: Kind,
    pub presence: Presence,
}

macro_rules! rust_type {
    (Str, Required) => { String };
    (F64, Required) => { f64 };
    (I64, Required) => { i64 };
    (Str, $p:ident) => { Option<String> };
    (F64, $p:ident) => { Option<f64> };
    (I64, $p:ident) => { Option<i64> };
}

/// The field's type in [`TransactionRef`]: text borrowed from the input.
macro_rules! ref_type {
    (Str, Required) => { &'a str };
    (Str, $p:ident) => { Option<&'a str> };
    ($k:ident, $p:ident) => { rust_type!($k, $p) };
}

macro_rules! builder_type {
    (Str) => {
        StringBuilder
    };
    (F64) => {
        Float64Builder
    };
    (I64) => {
        Int64Builder
    };
}

macro_rules! new_builder {
    (Str, $rows:expr) => {
        StringBuilder::with_capacity($rows, $rows * 16)
    };
    ($k:ident, $rows:expr) => {
        <builder_type!($k)>::with_capacity($rows)
    };
}

macro_rules! append_value {
    ($b:expr, $v:expr, Str, Required) => {
        $b.append_value(&$v)
    };
    ($b:expr, $v:expr, F64, Required) => {
        $b.append_value($v)
    };
    ($b:expr, $v:expr, I64, Required) => {
        $b.append_value($v)
    };
    ($b:expr, $v:expr, Str, $p:ident) => {
        $b.append_option($v.as_deref())
    };
    ($b:expr, $v:expr, $k:ident, $p:ident) => {
        $b.append_option($v)
    };
}

macro_rules! append_ref {
    ($b:expr, $v:expr, $k:ident, Required) => {
        $b.append_value($v)
    };
    ($b:expr, $v:expr, $k:ident, $p:ident) => {
        $b.append_option($v)
    };
}

macro_rules! from_text {
    (Str, Required, $v:expr, $n:expr) => {
        $v.ok_or(TextError::Missing($n))?.to_string()
    };
    (F64, Required, $v:expr, $n:expr) => {
        parse_number::<f64>($v.ok_or(TextError::Missing($n))?, $n)?
    };
    (I64, Required, $v:expr, $n:expr) => {
        parse_number::<i64>($v.ok_or(TextError::Missing($n))?, $n)?
    };
    (Str, $p:ident, $v:expr, $n:expr) => {
        $v.filter(|s| !s.is_empty()).map(str::to_string)
    };
    (F64, $p:ident, $v:expr, $n:expr) => {
        $v.filter(|s| !s.is_empty()).map(|s| parse_number::<f64>(s, $n)).transpose()?
    };
    (I64, $p:ident, $v:expr, $n:expr) => {
        $v.filter(|s| !s.is_empty()).map(|s| parse_number::<i64>(s, $n)).transpose()?
    };
}

macro_rules! define_transaction {
    ($( $(#[$doc:meta])* $name:ident : $kind:ident, $presence:ident; )*) => {
        /// One card transaction, as on the Kafka topic and in `fraudTrain.csv`.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct Transaction {
            $( $(#[$doc])* pub $name: rust_type!($kind, $presence), )*
        }

        /// A transaction whose text borrows from the JSON it was decoded
        /// from: the fast path of [`TransactionBatchBuilder::append_json`]
        /// (no allocation per field). Text with escapes cannot be borrowed;
        /// such a record takes the owned path.
        #[derive(Debug, Deserialize)]
        #[serde(bound(deserialize = "'de: 'a"))]
        struct TransactionRef<'a> {
            $( $(#[$doc])* $name: ref_type!($kind, $presence), )*
        }

        impl Transaction {
            /// Builds a record from text fields looked up by name (a CSV row).
            /// Text stays text: a zip code "02108" keeps its leading zero,
            /// which type-guessing deserializers lose.
            pub fn from_text<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Self, TextError> {
                Ok(Self { $( $name: from_text!($kind, $presence, get(stringify!($name)), stringify!($name)), )* })
            }
        }

        /// Every field of [`Transaction`], in Kaggle column order.
        pub const FIELDS: &[FieldSpec] = &[
            $( FieldSpec { name: stringify!($name), kind: Kind::$kind, presence: Presence::$presence }, )*
        ];

        /// Column names as constants, so code that reads a column by name
        /// cannot misspell it.
        #[allow(non_upper_case_globals)]
        pub mod column {
            $( pub const $name: &str = stringify!($name); )*
        }

        /// Accumulates transactions into an Arrow batch of [`schema()`].
        pub struct TransactionBatchBuilder {
            $( $name: builder_type!($kind), )*
            rows: usize,
        }

        impl TransactionBatchBuilder {
            pub fn with_capacity(rows: usize) -> Self {
                Self { $( $name: new_builder!($kind, rows), )* rows: 0 }
            }

            pub fn append(&mut self, t: &Transaction) {
                $( append_value!(self.$name, t.$name, $kind, $presence); )*
                self.rows += 1;
            }

            #[inline]
            fn append_ref(&mut self, t: &TransactionRef) {
                $( append_ref!(self.$name, t.$name, $kind, $presence); )*
                self.rows += 1;
            }

            /// Decodes one JSON transaction (a Kafka record value) and
            /// appends it; on error nothing is appended. Same result as
            /// [`decode_json`] + [`Self::append`], without allocating per
            /// field when the text has no escapes.
            pub fn append_json(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
                // UTF-8 checked once for the whole value (std's check is
                // vectorised), not string by string as `from_slice` does.
                let borrowed =
                    std::str::from_utf8(bytes).ok().and_then(|text| serde_json::from_str::<TransactionRef>(text).ok());
                match borrowed {
                    Some(t) => self.append_ref(&t),
                    // Escaped text or a card number sent as a JSON number
                    // (or bad input: the owned path names the error).
                    None => self.append(&decode_json(bytes)?),
                }
                Ok(())
            }

            pub fn len(&self) -> usize {
                self.rows
            }

            pub fn is_empty(&self) -> bool {
                self.rows == 0
            }

            /// Builds the batch and resets the builder for reuse.
            pub fn finish(&mut self) -> RecordBatch {
                let columns: Vec<ArrayRef> = vec![ $( Arc::new(self.$name.finish()), )* ];
                self.rows = 0;
                RecordBatch::try_new(schema(), columns)
                    .expect("builder columns follow the generated schema")
            }
        }
    };
}

define_transaction! {
    /// "YYYY-MM-DD HH:MM:SS", UTC.
    trans_date_trans_time: Str, OneOf;
    /// Card number, digits only (a JSON number is accepted).
    #[serde(deserialize_with = "text_or_integer")]
    cc_num: Str, Required;
    merchant: Str, Optional;
    /// Merchant category, e.g. grocery_pos, shopping_net.
    category: Str, Required;
    /// Amount in dollars, >= 0.
    amt: F64, Required;
    first: Str, Optional;
    last: Str, Optional;
    /// "M" or "F".
    gender: Str, Optional;
    street: Str, Optional;
    city: Str, Optional;
    state: Str, Optional;
    /// Kept as text so leading zeros survive (a JSON number is accepted).
    #[serde(default, deserialize_with = "optional_text_or_integer")]
    zip: Str, Optional;
    /// Customer home latitude, degrees.
    lat: F64, Required;
    /// Customer home longitude, degrees.
    long: F64, Required;
    city_pop: I64, Optional;
    job: Str, Optional;
    /// Date of birth, "YYYY-MM-DD".
    dob: Str, Required;
    /// Unique transaction id; the key of every sink write.
    trans_num: Str, Required;
    /// Seconds since the Unix epoch, UTC.
    unix_time: I64, OneOf;
    merch_lat: F64, Required;
    merch_long: F64, Required;
    /// Ground truth when known: 0 or 1.
    is_fraud: I64, Optional;
}

/// Why a text row could not be turned into a record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TextError {
    #[error("missing column `{0}`")]
    Missing(&'static str),
    #[error("column `{field}` is {value:?}, not a number")]
    NotANumber { field: &'static str, value: String },
}

fn parse_number<T: std::str::FromStr>(text: &str, field: &'static str) -> Result<T, TextError> {
    text.trim().parse().map_err(|_| TextError::NotANumber { field, value: text.chars().take(40).collect() })
}

/// Why a JSON record could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("invalid transaction JSON: {0}")]
pub struct DecodeError(#[from] serde_json::Error);

/// Decodes one JSON transaction (a Kafka record value). Field validation
/// (ranges, formats) happens on the Arrow batch, in `score::features`.
pub fn decode_json(bytes: &[u8]) -> Result<Transaction, DecodeError> {
    Ok(serde_json::from_slice(bytes)?)
}

/// Text as [`Transaction`] (owned) or [`TransactionRef`] (borrowed) holds it.
trait Text<'de>: Sized {
    fn borrowed(v: &'de str) -> Self;
    /// Text that had to be built (escapes, a number): `&str` cannot hold it.
    fn built<E: serde::de::Error>(v: String) -> Result<Self, E>;
}

impl<'de> Text<'de> for String {
    #[inline]
    fn borrowed(v: &'de str) -> Self {
        v.to_owned()
    }

    fn built<E: serde::de::Error>(v: String) -> Result<Self, E> {
        Ok(v)
    }
}

impl<'de: 'a, 'a> Text<'de> for &'a str {
    #[inline]
    fn borrowed(v: &'de str) -> Self {
        v
    }

    fn built<E: serde::de::Error>(_: String) -> Result<Self, E> {
        Err(E::custom("text that cannot be borrowed"))
    }
}

/// Accepts a JSON string or a non-negative integer as text. A visitor, not
/// an untagged enum: serde's untagged enums buffer every value first, which
/// made these two fields a third of the JSON decode time.
struct TextOrInteger<T>(std::marker::PhantomData<T>);

impl<'de, T: Text<'de>> serde::de::Visitor<'de> for TextOrInteger<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string or a non-negative integer")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<T, E> {
        Ok(T::borrowed(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        T::built(v.to_owned())
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<T, E> {
        T::built(v)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<T, E> {
        T::built(v.to_string())
    }
}

#[inline]
fn text_or_integer<'de, D: serde::Deserializer<'de>, T: Text<'de>>(d: D) -> Result<T, D::Error> {
    d.deserialize_any(TextOrInteger(std::marker::PhantomData))
}

/// `null` or [`TextOrInteger`].
struct OptionalTextOrInteger<T>(std::marker::PhantomData<T>);

impl<'de, T: Text<'de>> serde::de::Visitor<'de> for OptionalTextOrInteger<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("null, a string or a non-negative integer")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        text_or_integer(d).map(Some)
    }
}

#[inline]
fn optional_text_or_integer<'de, D: serde::Deserializer<'de>, T: Text<'de>>(d: D) -> Result<Option<T>, D::Error> {
    d.deserialize_option(OptionalTextOrInteger(std::marker::PhantomData))
}

/// The Arrow schema of a batch of transactions: every field nullable except
/// the required ones.
pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(
                FIELDS
                    .iter()
                    .map(|f| Field::new(f.name, f.kind.data_type(), f.presence != Presence::Required))
                    .collect::<Vec<_>>(),
            ))
        })
        .clone()
}

/// Looks a field up by name.
pub fn field(name: &str) -> Option<&'static FieldSpec> {
    FIELDS.iter().find(|f| f.name == name)
}

/// Builds one batch from a slice of transactions.
pub fn to_batch(transactions: &[Transaction]) -> RecordBatch {
    let mut builder = TransactionBatchBuilder::with_capacity(transactions.len());
    for t in transactions {
        builder.append(t);
    }
    builder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_follows_kaggle_column_order() {
        let names: Vec<_> = schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names.first().map(String::as_str), Some("trans_date_trans_time"));
        assert_eq!(names.last().map(String::as_str), Some("is_fraud"));
        assert_eq!(names.len(), 22);
        assert!(!schema().field_with_name(column::amt).unwrap().is_nullable());
        assert!(schema().field_with_name(column::gender).unwrap().is_nullable());
    }

    const JSON: &str = r#"{"trans_num":"abc","cc_num":4111111111111111,"unix_time":1700000000,
        "category":"misc_net","amt":12.5,"lat":40.1,"long":-74.2,"merch_lat":40.5,"merch_long":-74.0,
        "dob":"1980-02-03","zip":1234,"city_pop":5000,"is_fraud":0}"#;

    #[test]
    fn decodes_kafka_json_with_numeric_card_numbers() {
        let t = decode_json(JSON.as_bytes()).unwrap();
        assert_eq!(t.cc_num, "4111111111111111");
        assert_eq!(t.zip.as_deref(), Some("1234"));
        assert_eq!(t.gender, None);
        assert_eq!(t.unix_time, Some(1_700_000_000));
        let text_card = JSON.replace("4111111111111111", "\"4111111111111111\"");
        assert_eq!(decode_json(text_card.as_bytes()).unwrap().cc_num, "4111111111111111");
    }

    /// `append_json` builds the batch `decode_json` + `append` builds, on the
    /// borrowed path (simulated records) and the owned one (escapes, numbers).
    #[test]
    fn append_json_equals_the_owned_decode() {
        let mut values: Vec<String> = crate::simulate::Simulator::new(crate::simulate::SimConfig::default())
            .take(500)
            .map(|t| serde_json::to_string(&t).unwrap())
            .collect();
        values.push(JSON.to_string());
        values
            .push(JSON.replace(r#""trans_num":"abc""#, r#""trans_num":"a\"b\u00e9c","merchant":"fraud_O\u2019Hara""#));
        values.push(JSON.replace(r#""zip":1234"#, r#""zip":null,"gender":"F""#));
        let (mut fast, mut owned) =
            (TransactionBatchBuilder::with_capacity(8), TransactionBatchBuilder::with_capacity(8));
        for v in &values {
            fast.append_json(v.as_bytes()).unwrap();
            owned.append(&decode_json(v.as_bytes()).unwrap());
        }
        let (fast, owned) = (fast.finish(), owned.finish());
        assert_eq!(fast, owned);
        let trans_num =
            fast.column_by_name(column::trans_num).unwrap().as_any().downcast_ref::<arrow::array::StringArray>();
        assert_eq!(trans_num.unwrap().value(values.len() - 2), "a\"b\u{e9}c");
    }

    #[test]
    fn append_json_refuses_what_decode_json_refuses_and_appends_nothing() {
        let mut builder = TransactionBatchBuilder::with_capacity(1);
        // 0xff (which starts no UTF-8 sequence) inside the text of trans_num.
        let not_utf8 = [&JSON.as_bytes()[..14], &[0xff], &JSON.as_bytes()[14..]].concat();
        assert!(decode_json(&not_utf8).unwrap_err().to_string().contains("invalid unicode"));
        for bad in [&b"not json"[..], br#"{"trans_num":"x"}"#, br#"{"amt":"12"}"#, &not_utf8] {
            let fast = builder.append_json(bad).unwrap_err().to_string();
            assert_eq!(fast, decode_json(bad).unwrap_err().to_string());
        }
        assert!(builder.is_empty());
    }

    #[test]
    fn decode_errors_name_the_problem() {
        let err = decode_json(b"not json").unwrap_err().to_string();
        assert!(err.starts_with("invalid transaction JSON"), "{err}");
        let no_amt = JSON.replace(r#""amt":12.5,"#, "");
        assert!(decode_json(no_amt.as_bytes()).unwrap_err().to_string().contains("missing field `amt`"));
        let text_amt = JSON.replace("12.5", "\"lots\"");
        assert!(decode_json(text_amt.as_bytes()).unwrap_err().to_string().contains("invalid type"));
    }

    #[test]
    fn batches_round_trip_through_the_builder() {
        let t = decode_json(JSON.as_bytes()).unwrap();
        let batch = to_batch(&[t.clone(), t]);
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema(), schema());
    }
}
