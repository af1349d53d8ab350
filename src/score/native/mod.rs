//! A native evaluator for the graphs our Spark exporter writes, used in place
//! of ONNX Runtime when it agrees with it.
//!
//! `spark-job/fraudflight_spark/export_onnx.py` writes one graph shape:
//! string inputs one-hot encoded (OneHotEncoder -> Squeeze -> Cast to
//! double), numeric inputs as they are, one Concat into a feature vector,
//! then either a tree ensemble (TreeEnsembleRegressor, summed, then Sigmoid
//! for GBT or Identity for a random forest) or a logistic regression
//! (MatMul + Add in double, Sigmoid, Cast to float). ONNX Runtime evaluates
//! the trees node by node through a general kernel that, on this 2-core
//! machine, was most of the scoring time; here each tree is a flat array
//! walked with one comparison per level, straight from the Arrow columns, with
//! no string tensors built.
//!
//! Two halves: [`compile`] recognises that shape in an ONNX file and lays
//! the trees out (anything else is [`Unsupported`] and ONNX Runtime scores
//! it); this module evaluates what it built. The arithmetic is ONNX
//! Runtime's: thresholds and sums in double, tree order, the margin rounded
//! to float before the sigmoid. The model loader (`score::model`) still
//! checks every native model against ONNX Runtime, on [`NativeModel::probe`]
//! rows, before using it (see [`MAX_DIFF_FROM_ONNX_RUNTIME`]).

mod compile;
mod explain;

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, StringArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type};

pub use compile::Unsupported;
pub use explain::Explained;

/// Largest |native - ONNX Runtime| probability accepted at load: the two may
/// round the sigmoid differently in the last float bit, nothing more.
pub const MAX_DIFF_FROM_ONNX_RUNTIME: f64 = 1e-6;

/// Category -> position; foldhash, as a category is looked up per row.
type Categories = HashMap<String, usize, foldhash::fast::FixedState>;

/// Where one graph input lands in the feature vector.
#[derive(Debug, Clone)]
enum Feed {
    /// A string input, one-hot: category i sets position `offset + i`; a
    /// category not in the list (or null) leaves them all zero.
    OneHot { input: String, offset: usize, categories: Categories },
    /// A numeric input at `offset` (null is NaN, which takes the "greater"
    /// branch as in ONNX Runtime with missing values not tracking true).
    Number { input: String, offset: usize },
}

/// A tree laid out complete, as a heap: node `i`'s children are `2i + 1`
/// ("yes", `x <= threshold`) and `2i + 2`, so a step is one load of the
/// node's feature and threshold and one comparison, with no child pointers
/// to load and no test for "is this a leaf": `depth` steps bring any row to
/// one of the `2^depth` leaves. A leaf shallower than `depth` becomes splits
/// on +inf whose every descendant is that leaf.
#[derive(Debug, Clone)]
struct FlatTree {
    /// The `2^depth - 1` splits: threshold and feature side by side, so a
    /// step of the walk touches one cache line, not two.
    splits: Vec<Split>,
    /// The `2^depth` leaf weights, left to right.
    leaves: Vec<f64>,
    depth: usize,
}

#[derive(Debug, Clone, Copy)]
struct Split {
    threshold: f64,
    feature: u32,
}

/// Rows gathered from the Arrow columns at a time.
const BLOCK: usize = 32;

/// Trees walked side by side for one row: independent chains of loads and
/// compares, kept in registers, which the CPU overlaps (one tree at a time
/// waits on each step's loads).
const LANES: usize = 8;

/// Walks `K` trees of equal depth for one row and adds their leaves to
/// `sum`, in tree order (as ONNX Runtime sums: the same double).
/// Always inlined: with the crate built as one code-generation unit, LLVM
/// otherwise kept it out of `score_block` and the walk ran 7 % slower.
#[inline(always)]
fn walk<const K: usize>(trees: &[FlatTree; K], row: &[f64], mut sum: f64) -> f64 {
    let mut at = [0usize; K];
    for _ in 0..trees[0].depth {
        for (i, tree) in at.iter_mut().zip(trees) {
            let split = tree.splits[*i];
            // "no" unless `value <= threshold`: NaN (a missing value) goes
            // "no", as in ONNX Runtime.
            let yes = row[split.feature as usize] <= split.threshold;
            *i = 2 * *i + 2 - usize::from(yes);
        }
    }
    for (i, tree) in at.iter().zip(trees) {
        sum += tree.leaves[i - tree.splits.len()];
    }
    sum
}

#[derive(Debug, Clone)]
enum Head {
    /// Sum of one leaf weight per tree plus `base`; sigmoid for GBT.
    Trees { trees: Vec<FlatTree>, base: f64, sigmoid: bool },
    /// sigmoid(x . weights + intercept), in double.
    Linear { weights: Vec<f64>, intercept: f64 },
}

/// A model evaluated without ONNX Runtime.
#[derive(Debug, Clone)]
pub struct NativeModel {
    feeds: Vec<Feed>,
    features: usize,
    head: Head,
    /// The trees as exported with each node's training weight, when the
    /// model file carries them: alerts are then explained by exact TreeSHAP.
    covered: Option<Vec<explain::CoveredTree>>,
}

impl NativeModel {
    /// Fraud probability of every row; `column` gives each graph input's
    /// values by name (a string column, or a float64 / int64 one).
    pub fn predict(&self, rows: usize, column: impl Fn(&str) -> Option<ArrayRef>) -> Result<Vec<f32>, String> {
        let columns: Vec<Column> = self
            .feeds
            .iter()
            .map(|feed| {
                let name = match feed {
                    Feed::OneHot { input, .. } | Feed::Number { input, .. } => input,
                };
                let array = column(name).ok_or_else(|| format!("no column for input `{name}`"))?;
                Column::new(feed, array, rows)
            })
            .collect::<Result<_, _>>()?;
        let mut x = vec![0.0f64; BLOCK * self.features];
        let mut scores = Vec::with_capacity(rows);
        for start in (0..rows).step_by(BLOCK) {
            let n = BLOCK.min(rows - start);
            x.fill(0.0);
            for (feed, values) in self.feeds.iter().zip(&columns) {
                values.fill(feed, &mut x, self.features, start, n);
            }
            self.score_block(&x, n, &mut scores);
        }
        Ok(scores)
    }

    /// Scores the first `n` rows of `x` (row-major, `features` wide).
    fn score_block(&self, x: &[f64], n: usize, scores: &mut Vec<f32>) {
        let width = self.features;
        match &self.head {
            Head::Trees { trees, base, sigmoid } => {
                let mut chunks = trees.chunks_exact(LANES);
                for row in x.chunks_exact(width).take(n) {
                    let mut sum = 0.0f64;
                    for chunk in &mut chunks {
                        sum = walk::<LANES>(chunk.try_into().expect("chunks_exact"), row, sum);
                    }
                    for tree in chunks.remainder() {
                        sum = walk::<1>(std::array::from_ref(tree), row, sum);
                    }
                    chunks = trees.chunks_exact(LANES);
                    // TreeEnsembleRegressor's output is float.
                    let margin = (sum + base) as f32;
                    scores.push(if *sigmoid { (1.0 / (1.0 + (-(margin as f64)).exp())) as f32 } else { margin });
                }
            }
            Head::Linear { weights, intercept } => {
                for row in x.chunks_exact(width).take(n) {
                    let dot: f64 = weights.iter().zip(row).map(|(w, v)| w * v).sum();
                    scores.push((1.0 / (1.0 + (-(dot + intercept)).exp())) as f32);
                }
            }
        }
    }
}

impl NativeModel {
    /// Rows that exercise this model: for each numeric input, every split
    /// threshold on it, the doubles just above and below, zero, extremes and
    /// null; for each string input, every category, an unknown one and null.
    /// Row `r` combines the inputs' values at different strides, so the
    /// load-time comparison with ONNX Runtime visits both sides of every
    /// split without a sample of real transactions.
    pub fn probe(&self, rows: usize) -> HashMap<String, ArrayRef> {
        let mut columns = HashMap::new();
        for (k, feed) in self.feeds.iter().enumerate() {
            // A fixed pseudo-random choice per (row, input): every value of
            // every input, in ever new combinations with the others.
            let pick = |r: usize, n: usize| (splitmix64(((r as u64) << 16) ^ k as u64) % n.max(1) as u64) as usize;
            match feed {
                Feed::OneHot { input, categories, .. } => {
                    let mut names: Vec<Option<&str>> = categories.keys().map(|c| Some(c.as_str())).collect();
                    names.sort_unstable();
                    names.extend([Some("(a category never seen)"), None]);
                    let values: StringArray = (0..rows).map(|r| names[pick(r, names.len())]).collect();
                    columns.insert(input.clone(), Arc::new(values) as ArrayRef);
                }
                Feed::Number { input, offset } => {
                    let mut values: Vec<Option<f64>> = vec![Some(0.0), Some(-1e9), Some(1e9), Some(1.0), None];
                    if let Head::Trees { trees, .. } = &self.head {
                        let splits = trees.iter().flat_map(|t| &t.splits);
                        for s in splits.filter(|s| s.feature as usize == *offset && s.threshold.is_finite()) {
                            values.extend([s.threshold, s.threshold.next_down(), s.threshold.next_up()].map(Some));
                        }
                    }
                    let values: Float64Array = (0..rows).map(|r| values[pick(r, values.len())]).collect();
                    columns.insert(input.clone(), Arc::new(values) as ArrayRef);
                }
            }
        }
        columns
    }
}

/// SplitMix64's output function: a well-mixed 64-bit value of `x`.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One input's values for a batch: category positions (-1: none) or numbers.
enum Column {
    Hot(Vec<i32>),
    Numbers(Vec<f64>),
}

impl Column {
    fn new(feed: &Feed, array: ArrayRef, rows: usize) -> Result<Self, String> {
        if array.len() < rows {
            return Err(format!("input column has {} rows, the batch {rows}", array.len()));
        }
        match feed {
            Feed::OneHot { input, categories, .. } => {
                let strings =
                    array.as_string_opt::<i32>().ok_or_else(|| format!("input `{input}` is not a string column"))?;
                let position = |r: usize| -> i32 {
                    if strings.is_valid(r) {
                        categories.get(strings.value(r)).map_or(-1, |&i| i as i32)
                    } else {
                        -1
                    }
                };
                Ok(Column::Hot((0..rows).map(position).collect()))
            }
            Feed::Number { input, .. } => {
                let value = |r: usize, v: f64| if array.is_valid(r) { v } else { f64::NAN };
                Ok(Column::Numbers(match array.data_type() {
                    DataType::Float64 => {
                        let a = array.as_primitive::<Float64Type>();
                        (0..rows).map(|r| value(r, a.value(r))).collect()
                    }
                    DataType::Int64 => {
                        let a = array.as_primitive::<Int64Type>();
                        (0..rows).map(|r| value(r, a.value(r) as f64)).collect()
                    }
                    other => return Err(format!("input `{input}` is {other}, not a number")),
                }))
            }
        }
    }

    /// Writes rows `start..start + n` into the block `x`.
    fn fill(&self, feed: &Feed, x: &mut [f64], width: usize, start: usize, n: usize) {
        let offset = match feed {
            Feed::OneHot { offset, .. } | Feed::Number { offset, .. } => *offset,
        };
        match self {
            Column::Hot(hot) => {
                for (r, &i) in hot[start..start + n].iter().enumerate() {
                    if i >= 0 {
                        x[r * width + offset + i as usize] = 1.0;
                    }
                }
            }
            Column::Numbers(values) => {
                for (r, &v) in values[start..start + n].iter().enumerate() {
                    x[r * width + offset] = v;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::compile::{Node, LEAF};
    use super::*;

    fn tree(nodes: &[(u32, f64, u32, u32)]) -> Vec<Node> {
        nodes.iter().map(|&(feature, value, yes, no)| Node { feature, value, yes, no }).collect()
    }

    /// One numeric input `a`, one tree: a <= 0.5 -> -1, else 2 (no sigmoid).
    fn stump() -> NativeModel {
        let t = tree(&[(0, 0.5, 1, 2), (LEAF, -1.0, 0, 0), (LEAF, 2.0, 0, 0)]);
        NativeModel {
            feeds: vec![Feed::Number { input: "a".into(), offset: 0 }],
            features: 1,
            head: Head::Trees { trees: vec![FlatTree::new(&t, 0).unwrap()], base: 0.0, sigmoid: false },
            covered: None,
        }
    }

    #[test]
    fn walks_to_the_leaf_by_less_or_equal() {
        let a: ArrayRef = std::sync::Arc::new(arrow::array::Float64Array::from(vec![Some(0.5), Some(0.6), None]));
        let scores = stump().predict(3, |name| (name == "a").then(|| a.clone())).unwrap();
        // A null is NaN, and NaN is not <= anything: the "no" branch, as in ONNX Runtime.
        assert_eq!(scores, vec![-1.0, 2.0, 2.0]);
    }

    #[test]
    fn rows_beyond_a_block_and_missing_columns() {
        let values: Vec<f64> = (0..100).map(|i| if i % 3 == 0 { 0.0 } else { 1.0 }).collect();
        let a: ArrayRef = std::sync::Arc::new(arrow::array::Float64Array::from(values.clone()));
        let scores = stump().predict(100, |_| Some(a.clone())).unwrap();
        let expected: Vec<f32> = values.iter().map(|&v| if v <= 0.5 { -1.0 } else { 2.0 }).collect();
        assert_eq!(scores, expected);
        assert_eq!(stump().predict(1, |_| None).unwrap_err(), "no column for input `a`");
    }

    #[test]
    fn a_shallow_leaf_beside_a_deeper_split_is_padded() {
        // a <= 0.5 -> leaf 1.0; else (a <= 2.0 -> 3.0, else 7.0).
        let t = tree(&[(0, 0.5, 1, 2), (LEAF, 1.0, 0, 0), (0, 2.0, 3, 4), (LEAF, 3.0, 0, 0), (LEAF, 7.0, 0, 0)]);
        let flat = FlatTree::new(&t, 0).unwrap();
        assert_eq!((flat.depth, flat.leaves.clone()), (2, vec![1.0, 1.0, 3.0, 7.0]));
        let model = NativeModel {
            feeds: vec![Feed::Number { input: "a".into(), offset: 0 }],
            features: 1,
            head: Head::Trees { trees: vec![flat], base: 0.5, sigmoid: false },
            covered: None,
        };
        let a: ArrayRef =
            std::sync::Arc::new(arrow::array::Float64Array::from(vec![Some(0.0), Some(1.0), Some(9.0), None]));
        assert_eq!(model.predict(4, |_| Some(a.clone())).unwrap(), vec![1.5, 3.5, 7.5, 7.5]);
    }

    #[test]
    fn probe_rows_visit_both_sides_of_every_split() {
        let probe = stump().probe(64);
        let a = probe["a"].as_primitive::<Float64Type>();
        let seen: Vec<f64> = (0..64).filter(|&r| a.is_valid(r)).map(|r| a.value(r)).collect();
        assert!(seen.contains(&0.5) && seen.contains(&0.5f64.next_up()) && seen.iter().any(|v| *v < 0.5));
        assert!(a.null_count() > 0, "null (missing) is probed too");
    }
}
