//! Refuses tree ensembles ONNX Runtime cannot take safely, before it sees
//! them. ONNX Runtime builds its trees recursively: a graph whose tree is a
//! chain of 20,000 splits crashed the whole process with a segmentation
//! fault while the session was created (measured with onnxruntime 1.32), and
//! `load-model` accepts graphs from any admin. So every `TreeEnsemble*` node
//! of a graph is measured here, iteratively, and a tree deeper than
//! [`MAX_TREE_DEPTH`] (or one with a cycle) is an error naming the node.

use std::collections::HashMap;

use prost::Message;

use crate::proto::onnx::{ModelProto, NodeProto};

/// Deepest tree accepted. Spark's trees stop at 30 levels, gradient-boosting
/// libraries rarely pass 20; ONNX Runtime handled 1,000 and crashed at 20,000.
pub const MAX_TREE_DEPTH: usize = 100;

/// Checks every tree ensemble of an ONNX model; `Err` says which tree of
/// which node is too deep or not a tree. Bytes that are not a model are left
/// to ONNX Runtime, which names what is wrong with them.
pub fn check(onnx: &[u8]) -> Result<(), String> {
    let Ok(model) = ModelProto::decode(onnx) else { return Ok(()) };
    let Some(graph) = &model.graph else { return Ok(()) };
    for node in graph.node.iter().filter(|n| n.domain() == "ai.onnx.ml" && n.op_type().starts_with("TreeEnsemble")) {
        check_node(node).map_err(|e| format!("{} `{}`: {e}", node.op_type(), node.name()))?;
    }
    Ok(())
}

fn ints<'a>(node: &'a NodeProto, name: &str) -> &'a [i64] {
    node.attribute.iter().find(|a| a.name() == name).map_or(&[], |a| a.ints.as_slice())
}

fn check_node(node: &NodeProto) -> Result<(), String> {
    let (trees, ids) = (ints(node, "nodes_treeids"), ints(node, "nodes_nodeids"));
    let (yes, no) = (ints(node, "nodes_truenodeids"), ints(node, "nodes_falsenodeids"));
    let leaf: Vec<bool> = node
        .attribute
        .iter()
        .find(|a| a.name() == "nodes_modes")
        .map(|a| a.strings.iter().map(|m| m.as_slice() == b"LEAF").collect())
        .unwrap_or_default();
    let n = trees.len();
    if [ids.len(), yes.len(), no.len(), leaf.len()].iter().any(|&l| l != n) {
        // Not the layout measured here (ONNX Runtime checks the lengths).
        return Ok(());
    }
    let index: HashMap<(i64, i64), usize> = (0..n).map(|k| ((trees[k], ids[k]), k)).collect();
    let children = |k: usize| -> [Option<usize>; 2] {
        if leaf[k] {
            return [None, None];
        }
        [index.get(&(trees[k], yes[k])).copied(), index.get(&(trees[k], no[k])).copied()]
    };
    let mut is_child = vec![false; n];
    for k in 0..n {
        for c in children(k).into_iter().flatten() {
            is_child[c] = true;
        }
    }
    let mut seen = vec![false; n];
    for root in (0..n).filter(|&k| !is_child[k]) {
        let mut stack = vec![(root, 0usize)];
        while let Some((k, level)) = stack.pop() {
            if level > MAX_TREE_DEPTH {
                return Err(format!("tree {} is more than {MAX_TREE_DEPTH} levels deep", trees[k]));
            }
            if std::mem::replace(&mut seen[k], true) {
                return Err(format!("tree {} reaches node {} twice (not a tree)", trees[k], ids[k]));
            }
            stack.extend(children(k).into_iter().flatten().map(|c| (c, level + 1)));
        }
    }
    if let Some(k) = seen.iter().position(|s| !s) {
        return Err(format!("tree {} has a cycle through node {}", trees[k], ids[k]));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::onnx::{AttributeProto, GraphProto};

    fn int_attr(name: &str, ints: Vec<i64>) -> AttributeProto {
        AttributeProto { name: Some(name.into()), ints, ..Default::default() }
    }

    /// A one-tree regressor: split k's "yes" is a leaf, its "no" split k + 1.
    fn chain(splits: i64) -> Vec<u8> {
        let (mut ids, mut yes, mut no, mut modes) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for k in 0..splits {
            ids.extend([2 * k, 2 * k + 1]);
            yes.extend([2 * k + 1, 0]);
            no.extend([if k + 1 == splits { 2 * splits } else { 2 * k + 2 }, 0]);
            modes.extend([b"BRANCH_LEQ".to_vec(), b"LEAF".to_vec()]);
        }
        ids.push(2 * splits);
        yes.push(0);
        no.push(0);
        modes.push(b"LEAF".to_vec());
        let node = NodeProto {
            op_type: Some("TreeEnsembleRegressor".into()),
            domain: Some("ai.onnx.ml".into()),
            name: Some("trees".into()),
            attribute: vec![
                int_attr("nodes_treeids", vec![0; ids.len()]),
                int_attr("nodes_nodeids", ids),
                int_attr("nodes_truenodeids", yes),
                int_attr("nodes_falsenodeids", no),
                AttributeProto { name: Some("nodes_modes".into()), strings: modes, ..Default::default() },
            ],
            ..Default::default()
        };
        ModelProto { graph: Some(GraphProto { node: vec![node], ..Default::default() }), ..Default::default() }
            .encode_to_vec()
    }

    #[test]
    fn a_chain_deeper_than_the_limit_is_refused_by_name() {
        assert_eq!(check(&chain(MAX_TREE_DEPTH as i64)), Ok(()));
        let err = check(&chain(20_000)).unwrap_err();
        assert!(err.contains("TreeEnsembleRegressor `trees`") && err.contains("more than 100 levels"), "{err}");
    }

    #[test]
    fn the_shipped_model_passes_and_other_bytes_are_left_to_onnx_runtime() {
        let shipped = std::fs::read(format!("{}/models/gbt-sim-v1/model.onnx", manifest_dir())).unwrap();
        assert_eq!(check(&shipped), Ok(()));
        assert_eq!(check(b"not a model"), Ok(()));
    }

    /// This clone's directory, read when the test runs (cargo sets it): a test
    /// binary another clone built into the shared target must not read that
    /// clone's files.
    fn manifest_dir() -> String {
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
    }
}
