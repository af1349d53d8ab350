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
//! [`NativeModel::from_onnx`] recognises that shape and nothing else: any
//! other graph is [`Unsupported`] and ONNX Runtime scores it. The arithmetic
//! is ONNX Runtime's: thresholds and sums in double, tree order, the margin
//! rounded to float before the sigmoid. The model loader
//! (`score::model`) still checks every native model against ONNX Runtime
//! before using it (see [`MAX_DIFF_FROM_ONNX_RUNTIME`]).

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use prost::Message;

use crate::proto::onnx::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};

/// Largest |native - ONNX Runtime| probability accepted at load: the two may
/// round the sigmoid differently in the last float bit, nothing more.
pub const MAX_DIFF_FROM_ONNX_RUNTIME: f64 = 1e-6;

/// Why a graph is left to ONNX Runtime.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("graph not evaluated natively: {0}")]
pub struct Unsupported(String);

fn unsupported<T>(why: impl Into<String>) -> Result<T, Unsupported> {
    Err(Unsupported(why.into()))
}

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

/// A tree node: a split, or a leaf when `feature == LEAF`.
#[derive(Debug, Clone, Copy)]
struct Node {
    feature: u32,
    /// The split threshold (`x <= value` goes to `yes`), or the leaf's weight.
    value: f64,
    yes: u32,
    no: u32,
}

const LEAF: u32 = u32::MAX;

/// Deepest tree laid out complete (2^depth leaves); deeper ensembles are
/// left to ONNX Runtime.
const MAX_DEPTH: usize = 10;

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

impl FlatTree {
    /// Lays out `nodes` complete to `depth` (at least the tree's own: every
    /// tree of an ensemble gets the deepest one's, so they walk in step).
    fn new(nodes: &[Node], depth: usize) -> Result<Self, Unsupported> {
        let depth = depth.max(self::depth(nodes, 0));
        if depth > MAX_DEPTH {
            return unsupported(format!("a tree of depth {depth} (at most {MAX_DEPTH} evaluated natively)"));
        }
        let splits = (1usize << depth) - 1;
        let mut tree = Self {
            splits: vec![Split { threshold: f64::INFINITY, feature: 0 }; splits],
            leaves: vec![0.0; splits + 1],
            depth,
        };
        tree.fill(nodes, 0, 0);
        Ok(tree)
    }

    /// Places `nodes[node]` at heap position `at`.
    fn fill(&mut self, nodes: &[Node], node: usize, at: usize) {
        let n = nodes[node];
        if at >= self.splits.len() {
            self.leaves[at - self.splits.len()] = n.value;
        } else if n.feature == LEAF {
            // Both sides of a +inf split lead to this same leaf.
            self.fill(nodes, node, 2 * at + 1);
            self.fill(nodes, node, 2 * at + 2);
        } else {
            self.splits[at] = Split { threshold: n.value, feature: n.feature };
            self.fill(nodes, n.yes as usize, 2 * at + 1);
            self.fill(nodes, n.no as usize, 2 * at + 2);
        }
    }
}

/// Splits on the longest path from `root` to a leaf. Iterative, with its
/// own stack: a tree is an admin's upload, and a chain of a million splits
/// must be measured (and refused by [`FlatTree::new`]), not overflow the
/// thread's stack. Call only on a tree that [`terminates`].
fn depth(nodes: &[Node], root: usize) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(root, 0usize)];
    while let Some((i, level)) = stack.pop() {
        let n = nodes[i];
        if n.feature == LEAF {
            deepest = deepest.max(level);
        } else {
            stack.push((n.yes as usize, level + 1));
            stack.push((n.no as usize, level + 1));
        }
    }
    deepest
}

/// Rows gathered from the Arrow columns at a time.
const BLOCK: usize = 32;

/// Trees walked side by side for one row: independent chains of loads and
/// compares, kept in registers, which the CPU overlaps (one tree at a time
/// waits on each step's loads).
const LANES: usize = 8;

/// Walks `K` trees of equal depth for one row and adds their leaves to
/// `sum`, in tree order (as ONNX Runtime sums: the same double).
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
}

impl NativeModel {
    /// Recognises an exported fraud graph; [`Unsupported`] for anything else.
    pub fn from_onnx(bytes: &[u8]) -> Result<Self, Unsupported> {
        let model = ModelProto::decode(bytes).map_err(|e| Unsupported(format!("not an ONNX model: {e}")))?;
        let graph = model.graph.as_ref().ok_or_else(|| Unsupported("no graph".into()))?;
        let [output] = graph.output.as_slice() else {
            return unsupported(format!("{} graph outputs", graph.output.len()));
        };
        let nodes = Nodes(&graph.node);

        // The head, walked back from the output.
        let last = nodes.producing(output.name())?;
        let (head, concat_out) = match last.op_type() {
            "Sigmoid" | "Identity" => {
                let ensemble = nodes.producing(one_input(last)?)?;
                expect_op(ensemble, "TreeEnsembleRegressor", "ai.onnx.ml")?;
                (trees(ensemble, last.op_type() == "Sigmoid")?, one_input(ensemble)?)
            }
            "Cast" => {
                let sigmoid = nodes.producing(one_input(last)?)?;
                expect_op(sigmoid, "Sigmoid", "")?;
                let add = nodes.producing(one_input(sigmoid)?)?;
                expect_op(add, "Add", "")?;
                let matmul = nodes.producing(add.input.first().map(String::as_str).unwrap_or(""))?;
                expect_op(matmul, "MatMul", "")?;
                let weights = doubles(initializer(graph, &matmul.input[1])?)?;
                let intercept = doubles(initializer(graph, add.input.get(1).map(String::as_str).unwrap_or(""))?)?;
                let [intercept] = intercept.as_slice() else {
                    return unsupported("intercept is not one number");
                };
                (Head::Linear { weights, intercept: *intercept }, matmul.input[0].as_str())
            }
            other => return unsupported(format!("output produced by {other}")),
        };

        // The feature vector: a Concat of graph inputs and one-hot chains.
        let concat = nodes.producing(concat_out)?;
        expect_op(concat, "Concat", "")?;
        if attribute(concat, "axis").map(|a| a.i()) != Some(1) {
            return unsupported("Concat not on axis 1");
        }
        let graph_inputs: Vec<&str> = graph.input.iter().map(|i| i.name()).collect();
        let mut feeds = Vec::new();
        let mut offset = 0;
        for part in &concat.input {
            if graph_inputs.contains(&part.as_str()) {
                feeds.push(Feed::Number { input: part.clone(), offset });
                offset += 1;
                continue;
            }
            let cast = nodes.producing(part)?;
            expect_op(cast, "Cast", "")?;
            let squeeze = nodes.producing(one_input(cast)?)?;
            expect_op(squeeze, "Squeeze", "")?;
            let encoder = nodes.producing(&squeeze.input[0])?;
            expect_op(encoder, "OneHotEncoder", "ai.onnx.ml")?;
            let input = one_input(encoder)?;
            if !graph_inputs.contains(&input) {
                return unsupported(format!("OneHotEncoder of {input}, not a graph input"));
            }
            if attribute(encoder, "zeros").map(|a| a.i()) != Some(1) {
                return unsupported("OneHotEncoder without zeros=1");
            }
            let names = attribute(encoder, "cats_strings").map(|a| a.strings.clone()).unwrap_or_default();
            if names.is_empty() {
                return unsupported("OneHotEncoder without string categories");
            }
            let categories: Categories =
                names.iter().enumerate().map(|(i, s)| (String::from_utf8_lossy(s).into_owned(), i)).collect();
            let width = names.len();
            feeds.push(Feed::OneHot { input: input.to_string(), offset, categories });
            offset += width;
        }
        let native = Self { feeds, features: offset, head };
        native.check_feature_indices()?;
        Ok(native)
    }

    fn check_feature_indices(&self) -> Result<(), Unsupported> {
        match &self.head {
            Head::Trees { trees, .. } => {
                let beyond = trees.iter().flat_map(|t| &t.splits).any(|s| s.feature as usize >= self.features);
                if beyond {
                    return unsupported("a tree splits on a feature beyond the vector");
                }
            }
            Head::Linear { weights, .. } if weights.len() != self.features => {
                return unsupported(format!("{} weights for {} features", weights.len(), self.features));
            }
            Head::Linear { .. } => {}
        }
        Ok(())
    }

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

/// The graph's nodes, found by what they produce.
struct Nodes<'a>(&'a [NodeProto]);

impl<'a> Nodes<'a> {
    fn producing(&self, name: &str) -> Result<&'a NodeProto, Unsupported> {
        let mut found = self.0.iter().filter(|n| n.output.iter().any(|o| o == name));
        match (found.next(), found.next()) {
            (Some(node), None) => Ok(node),
            (None, _) => unsupported(format!("nothing produces `{name}`")),
            (Some(_), Some(_)) => unsupported(format!("two nodes produce `{name}`")),
        }
    }
}

fn expect_op(node: &NodeProto, op: &str, domain: &str) -> Result<(), Unsupported> {
    if node.op_type() == op && node.domain() == domain {
        Ok(())
    } else {
        unsupported(format!("expected {op}, found {} ({})", node.op_type(), node.domain()))
    }
}

fn one_input(node: &NodeProto) -> Result<&str, Unsupported> {
    node.input.first().map(String::as_str).ok_or_else(|| Unsupported(format!("{} without input", node.op_type())))
}

fn attribute<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name() == name)
}

fn initializer<'a>(graph: &'a GraphProto, name: &str) -> Result<&'a TensorProto, Unsupported> {
    graph.initializer.iter().find(|t| t.name() == name).ok_or_else(|| Unsupported(format!("no initializer `{name}`")))
}

/// A double tensor's values (from `double_data` or little-endian `raw_data`).
fn doubles(t: &TensorProto) -> Result<Vec<f64>, Unsupported> {
    const DOUBLE: i32 = 11;
    if t.data_type() != DOUBLE {
        return unsupported(format!("tensor `{}` is not double", t.name()));
    }
    if !t.double_data.is_empty() {
        return Ok(t.double_data.clone());
    }
    let raw = t.raw_data();
    if !raw.len().is_multiple_of(8) {
        return unsupported(format!("tensor `{}` has {} raw bytes", t.name(), raw.len()));
    }
    Ok(raw.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes"))).collect())
}

/// Double values of an attribute given as `NAME_as_tensor` or as floats.
fn attribute_doubles(node: &NodeProto, name: &str) -> Result<Vec<f64>, Unsupported> {
    if let Some(t) = attribute(node, &format!("{name}_as_tensor")).and_then(|a| a.t.as_ref()) {
        return doubles(t);
    }
    Ok(attribute(node, name).map(|a| a.floats.iter().map(|&f| f as f64).collect()).unwrap_or_default())
}

fn ints(node: &NodeProto, name: &str) -> Vec<i64> {
    attribute(node, name).map(|a| a.ints.clone()).unwrap_or_default()
}

fn text(node: &NodeProto, name: &str) -> Option<String> {
    attribute(node, name).map(|a| String::from_utf8_lossy(a.s()).into_owned())
}

/// The trees of a TreeEnsembleRegressor: one target, summed, no transform,
/// `BRANCH_LEQ` splits only, missing values not tracking true.
fn trees(node: &NodeProto, sigmoid: bool) -> Result<Head, Unsupported> {
    if attribute(node, "n_targets").map(|a| a.i()) != Some(1) {
        return unsupported("tree ensemble with other than one target");
    }
    if text(node, "aggregate_function").as_deref().unwrap_or("SUM") != "SUM" {
        return unsupported("tree ensemble not summed");
    }
    if text(node, "post_transform").as_deref().unwrap_or("NONE") != "NONE" {
        return unsupported("tree ensemble with a post transform");
    }
    if ints(node, "nodes_missing_value_tracks_true").iter().any(|&v| v != 0) {
        return unsupported("missing values tracking true");
    }
    let (tree_ids, node_ids) = (ints(node, "nodes_treeids"), ints(node, "nodes_nodeids"));
    let (features, yes, no) =
        (ints(node, "nodes_featureids"), ints(node, "nodes_truenodeids"), ints(node, "nodes_falsenodeids"));
    let modes: Vec<String> = attribute(node, "nodes_modes")
        .map(|a| a.strings.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect())
        .unwrap_or_default();
    let values = attribute_doubles(node, "nodes_values")?;
    let n = tree_ids.len();
    if [node_ids.len(), features.len(), yes.len(), no.len(), modes.len(), values.len()].iter().any(|&l| l != n) {
        return unsupported("tree node attributes of different lengths");
    }
    let (target_trees, target_nodes) = (ints(node, "target_treeids"), ints(node, "target_nodeids"));
    let (target_ids, weights) = (ints(node, "target_ids"), attribute_doubles(node, "target_weights")?);
    if target_ids.iter().any(|&t| t != 0)
        || [target_nodes.len(), weights.len()].iter().any(|&l| l != target_trees.len())
    {
        return unsupported("tree targets other than one");
    }
    let base = attribute_doubles(node, "base_values")?;
    let base = match base.as_slice() {
        [] => 0.0,
        [b] => *b,
        _ => return unsupported("several base values"),
    };

    // Tree ids in first-seen order (ONNX Runtime sums in that order); node
    // ids mapped to positions within their tree, the root first.
    let mut order: Vec<i64> = Vec::new();
    let mut index: HashMap<(i64, i64), (usize, usize)> = HashMap::new();
    let mut built: Vec<Vec<Node>> = Vec::new();
    for k in 0..n {
        let t = match order.iter().position(|&id| id == tree_ids[k]) {
            Some(t) => t,
            None => {
                order.push(tree_ids[k]);
                built.push(Vec::new());
                order.len() - 1
            }
        };
        index.insert((tree_ids[k], node_ids[k]), (t, built[t].len()));
        built[t].push(Node { feature: LEAF, value: 0.0, yes: 0, no: 0 });
    }
    let position = |tree: i64, id: i64| -> Result<u32, Unsupported> {
        index
            .get(&(tree, id))
            .map(|&(_, i)| i as u32)
            .ok_or_else(|| Unsupported(format!("tree {tree} has no node {id}")))
    };
    for k in 0..n {
        let (t, i) = index[&(tree_ids[k], node_ids[k])];
        built[t][i] = match modes[k].as_str() {
            "LEAF" => Node { feature: LEAF, value: 0.0, yes: 0, no: 0 },
            "BRANCH_LEQ" => Node {
                feature: u32::try_from(features[k]).map_err(|_| Unsupported("negative feature id".into()))?,
                value: values[k],
                yes: position(tree_ids[k], yes[k])?,
                no: position(tree_ids[k], no[k])?,
            },
            other => return unsupported(format!("split mode {other}")),
        };
    }
    for k in 0..target_trees.len() {
        let &(t, i) = index
            .get(&(target_trees[k], target_nodes[k]))
            .ok_or_else(|| Unsupported(format!("target on a missing node {}", target_nodes[k])))?;
        if built[t][i].feature != LEAF {
            return unsupported("a target on a split node");
        }
        built[t][i].value += weights[k];
    }
    // The root must be the tree's first node and every walk must end.
    for (t, tree) in built.iter().enumerate() {
        let root = position(order[t], 0)?;
        if root != 0 || !terminates(tree) {
            return unsupported(format!("tree {} is not a tree rooted at node 0", order[t]));
        }
    }
    let deepest = built.iter().map(|t| depth(t, 0)).max().unwrap_or(0);
    let trees = built.iter().map(|t| FlatTree::new(t, deepest)).collect::<Result<_, _>>()?;
    Ok(Head::Trees { trees, base, sigmoid })
}

/// Every path from the root reaches a leaf without revisiting a node.
fn terminates(tree: &[Node]) -> bool {
    let mut seen = vec![false; tree.len()];
    let mut stack = vec![0usize];
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut seen[i], true) {
            return false;
        }
        let node = tree[i];
        if node.feature != LEAF {
            stack.push(node.yes as usize);
            stack.push(node.no as usize);
        }
    }
    true
}

#[cfg(test)]
mod tests {
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
        };
        let a: ArrayRef =
            std::sync::Arc::new(arrow::array::Float64Array::from(vec![Some(0.0), Some(1.0), Some(9.0), None]));
        assert_eq!(model.predict(4, |_| Some(a.clone())).unwrap(), vec![1.5, 3.5, 7.5, 7.5]);
    }

    #[test]
    fn a_tree_deeper_than_the_limit_is_refused() {
        // A chain of MAX_DEPTH + 1 splits.
        let mut nodes = Vec::new();
        for level in 0..=MAX_DEPTH as u32 {
            nodes.push(Node { feature: 0, value: level as f64, yes: 2 * level + 1, no: 2 * level + 2 });
            nodes.push(Node { feature: LEAF, value: 0.0, yes: 0, no: 0 });
        }
        // Split `level` sits at 2 * level: "yes" a leaf, "no" the next split (or the last leaf).
        nodes.push(Node { feature: LEAF, value: 0.0, yes: 0, no: 0 });
        assert_eq!(depth(&nodes, 0), MAX_DEPTH + 1);
        assert!(FlatTree::new(&nodes, 0).unwrap_err().to_string().contains("depth 11"));
    }

    #[test]
    fn a_chain_of_a_million_splits_is_refused_not_a_stack_overflow() {
        // Split k: "yes" a leaf, "no" split k + 1. Measuring its depth
        // recursively overflowed the stack before the limit was checked.
        const SPLITS: u32 = 1_000_000;
        let mut nodes = Vec::with_capacity(2 * SPLITS as usize + 1);
        for k in 0..SPLITS {
            let next = if k + 1 == SPLITS { 2 * SPLITS } else { 2 * k + 2 };
            nodes.push(Node { feature: 0, value: k as f64, yes: 2 * k + 1, no: next });
            nodes.push(Node { feature: LEAF, value: 0.0, yes: 0, no: 0 });
        }
        nodes.push(Node { feature: LEAF, value: 1.0, yes: 0, no: 0 });
        assert!(terminates(&nodes));
        assert_eq!(depth(&nodes, 0), SPLITS as usize);
        let err = FlatTree::new(&nodes, 0).unwrap_err().to_string();
        assert!(err.contains("depth 1000000") && err.contains("at most 10"), "{err}");
    }

    #[test]
    fn a_cycle_is_not_a_tree() {
        assert!(terminates(&tree(&[(0, 0.5, 1, 2), (LEAF, 0.0, 0, 0), (LEAF, 0.0, 0, 0)])));
        assert!(!terminates(&tree(&[(0, 0.5, 1, 2), (0, 0.5, 0, 2), (LEAF, 0.0, 0, 0)])));
    }

    #[test]
    fn anything_else_is_left_to_onnx_runtime() {
        assert!(NativeModel::from_onnx(b"not a model").is_err());
        assert!(NativeModel::from_onnx(&ModelProto::default().encode_to_vec()).is_err());
    }
}
