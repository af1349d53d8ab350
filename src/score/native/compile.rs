//! The compiler half of the native evaluator: recognises the graph shape
//! our exporter writes in an ONNX file and lays its trees out as complete
//! heaps ([`FlatTree`]); anything else is [`Unsupported`], with the reason,
//! and ONNX Runtime scores it. Nothing here runs per row.

use std::collections::HashMap;

use prost::Message;

use super::explain::CoveredTree;
use super::{Categories, Feed, FlatTree, Head, NativeModel, Split};
use crate::proto::onnx::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};

/// Why a graph is left to ONNX Runtime.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("graph not evaluated natively: {0}")]
pub struct Unsupported(String);

fn unsupported<T>(why: impl Into<String>) -> Result<T, Unsupported> {
    Err(Unsupported(why.into()))
}

/// A tree node: a split, or a leaf when `feature == LEAF`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Node {
    pub(super) feature: u32,
    /// The split threshold (`x <= value` goes to `yes`), or the leaf's weight.
    pub(super) value: f64,
    pub(super) yes: u32,
    pub(super) no: u32,
}

pub(super) const LEAF: u32 = u32::MAX;

/// Deepest tree laid out complete (2^depth leaves); deeper ensembles are
/// left to ONNX Runtime.
const MAX_DEPTH: usize = 10;

impl FlatTree {
    /// Lays out `nodes` complete to `depth` (at least the tree's own: every
    /// tree of an ensemble gets the deepest one's, so they walk in step).
    pub(super) fn new(nodes: &[Node], depth: usize) -> Result<Self, Unsupported> {
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

impl NativeModel {
    /// Recognises an exported fraud graph; [`Unsupported`] for anything else.
    pub fn from_onnx(bytes: &[u8]) -> Result<Self, Unsupported> {
        let model = ModelProto::decode(bytes).map_err(|e| Unsupported(format!("not an ONNX model: {e}")))?;
        let graph = model.graph.as_ref().ok_or_else(|| Unsupported("no graph".into()))?;
        let [output] = graph.output.as_slice() else {
            return unsupported(format!("{} graph outputs", graph.output.len()));
        };
        let nodes = Nodes(&graph.node);
        let covers = model.metadata_props.iter().find(|p| p.key() == COVERS_KEY).map(|p| p.value());
        let mut covered = None;

        // The head, walked back from the output.
        let last = nodes.producing(output.name())?;
        let (head, concat_out) = match last.op_type() {
            "Sigmoid" | "Identity" => {
                let ensemble = nodes.producing(one_input(last)?)?;
                expect_op(ensemble, "TreeEnsembleRegressor", "ai.onnx.ml")?;
                let (head, with_covers) = trees(ensemble, last.op_type() == "Sigmoid", covers)?;
                covered = with_covers;
                (head, one_input(ensemble)?)
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
        let native = Self { feeds, features: offset, head, covered };
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

/// The model metadata entry with every tree node's cover, a JSON list in the
/// order of the ensemble's `nodes_*` attributes (our exporter writes it:
/// `COVERS_KEY` in spark-job/fraudflight_spark/export_onnx.py).
pub const COVERS_KEY: &str = "fraudflight.node_covers";

/// The trees of a TreeEnsembleRegressor: one target, summed, no transform,
/// `BRANCH_LEQ` splits only, missing values not tracking true. With
/// `covers` (the [`COVERS_KEY`] entry) that fit the trees, the trees as
/// they are with their covers too, for exact TreeSHAP; covers that do not
/// fit (another length, not JSON, a node without weight, children that do
/// not add up to their parent) leave explanations to path contributions.
fn trees(
    node: &NodeProto,
    sigmoid: bool,
    covers: Option<&str>,
) -> Result<(Head, Option<Vec<CoveredTree>>), Unsupported> {
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
    let covered = covers.and_then(|text| {
        let covers: Vec<f64> = serde_json::from_str(text).ok()?;
        if covers.len() != n {
            return None;
        }
        let mut by_tree: Vec<Vec<f64>> = built.iter().map(|t| vec![0.0; t.len()]).collect();
        for (k, cover) in covers.into_iter().enumerate() {
            let (t, i) = index[&(tree_ids[k], node_ids[k])];
            by_tree[t][i] = cover;
        }
        built.into_iter().zip(by_tree).map(|(nodes, covers)| CoveredTree::new(nodes, covers)).collect()
    });
    Ok((Head::Trees { trees, base, sigmoid }, covered))
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
