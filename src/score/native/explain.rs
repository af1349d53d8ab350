//! Why a tree ensemble scored a row as it did (docs/architecture.md, "Why
//! an alert scored high"), per graph input, adding up to the margin:
//!
//! `margin = bias + sum of every input's contribution`
//!
//! to rounding: for a GBT the margin is the log-odds before the sigmoid,
//! for a random forest the probability itself. Computed for alerts only (a
//! few rows a batch); a one-hot slot's share goes to its string input.
//!
//! - **Exact TreeSHAP** (path-dependent; Lundberg, Erion and Lee, "Consistent
//!   individualized feature attribution for tree ensembles", algorithm 2)
//!   when the model file carries every node's cover, the training weight that
//!   reached it (our exporter writes them: [`super::compile::COVERS_KEY`]).
//!   These are the SHAP values data scientists compare with the `shap`
//!   package; `bias` is the cover-weighted mean of the leaves.
//! - **Path contributions** otherwise (a model file without covers): each
//!   split's value is the mean of its two children's (both branches weigh
//!   the same), and walking a row from the root to its leaf each split hands
//!   `value(child taken) - value(split)` to the feature it tested.

use super::compile::{Node, LEAF};
use super::{Column, Feed, FlatTree, Head, NativeModel, BLOCK};

/// One row's explanation.
#[derive(Debug, Clone, PartialEq)]
pub struct Explained {
    /// What every row starts from: `base` plus every tree's root value.
    pub bias: f64,
    /// Per graph input (in the model's feed order): its contribution.
    pub contributions: Vec<(String, f64)>,
}

/// A tree as exported (node 0 the root), each node with its cover.
#[derive(Debug, Clone)]
pub(super) struct CoveredTree {
    nodes: Vec<Node>,
    covers: Vec<f64>,
}

/// One feature on the path from the root in TreeSHAP: the share of cover
/// that goes its way when the feature is left out (`zero`), whether the row
/// goes its way (`one`), and the permutation weight of the path's subset.
#[derive(Debug, Clone, Copy)]
struct Step {
    feature: usize,
    zero: f64,
    one: f64,
    weight: f64,
}

/// The feature of the path's first step, which stands for no split.
const ROOT: usize = usize::MAX;

impl CoveredTree {
    /// The tree, if its covers can weigh it: one per node, each positive and
    /// finite, and a split's two children adding up to it (to rounding).
    pub(super) fn new(nodes: Vec<Node>, covers: Vec<f64>) -> Option<Self> {
        if covers.len() != nodes.len() || covers.iter().any(|c| !(c.is_finite() && *c > 0.0)) {
            return None;
        }
        let consistent = nodes.iter().zip(&covers).all(|(n, &cover)| {
            n.feature == LEAF || ((covers[n.yes as usize] + covers[n.no as usize]) - cover).abs() <= 1e-9 * cover
        });
        consistent.then_some(Self { nodes, covers })
    }

    /// The tree's expected value under its training weights: the leaves'
    /// values weighted by their share of the cover, below node `j`.
    fn expected(&self, j: usize) -> f64 {
        let node = self.nodes[j];
        if node.feature == LEAF {
            return node.value;
        }
        let (yes, no) = (node.yes as usize, node.no as usize);
        (self.covers[yes] * self.expected(yes) + self.covers[no] * self.expected(no)) / self.covers[j]
    }

    /// Adds this tree's SHAP values for the row `x` to `phi` (one per
    /// feature slot). `paths` is scratch space: each level of the recursion
    /// keeps its path as the buffer's last segment (depth is bounded by the
    /// native evaluator's limit, so the recursion and the buffer are too).
    fn shap(&self, x: &[f64], phi: &mut [f64], paths: &mut Vec<Step>) {
        paths.clear();
        self.recurse(0, x, phi, paths, 0, (1.0, 1.0, ROOT));
    }

    /// Node `j`, reached with the path `paths[from..]`, extended by
    /// `(zero, one, feature)` of the split above it.
    fn recurse(
        &self,
        j: usize,
        x: &[f64],
        phi: &mut [f64],
        paths: &mut Vec<Step>,
        from: usize,
        step: (f64, f64, usize),
    ) {
        extend(paths, from, step);
        let node = self.nodes[j];
        if node.feature == LEAF {
            let path = &paths[from..];
            for (i, s) in path.iter().enumerate().skip(1) {
                phi[s.feature] += unwound_sum(path, i) * (s.one - s.zero) * node.value;
            }
            return;
        }
        let d = node.feature as usize;
        // The row's way, as the scorer walks: NaN (missing) goes "no".
        let (hot, cold) = if x[d] <= node.value {
            (node.yes as usize, node.no as usize)
        } else {
            (node.no as usize, node.yes as usize)
        };
        let (mut zero, mut one) = (1.0, 1.0);
        // A feature split on again above: its earlier step is folded into this one.
        if let Some(k) = paths[from..].iter().skip(1).position(|s| s.feature == d).map(|k| k + 1) {
            (zero, one) = (paths[from + k].zero, paths[from + k].one);
            unwind(paths, from, k);
        }
        let r = self.covers[j];
        // The hot side gets a copy of the path; the cold side, last, this one.
        let end = paths.len();
        paths.extend_from_within(from..end);
        self.recurse(hot, x, phi, paths, end, (zero * self.covers[hot] / r, one, d));
        paths.truncate(end);
        self.recurse(cold, x, phi, paths, from, (zero * self.covers[cold] / r, 0.0, d));
    }
}

/// Grows the path `paths[from..]` (the buffer's last segment) by one
/// feature, updating every subset size's weight.
fn extend(paths: &mut Vec<Step>, from: usize, (zero, one, feature): (f64, f64, usize)) {
    let l = paths.len() - from;
    paths.push(Step { feature, zero, one, weight: if l == 0 { 1.0 } else { 0.0 } });
    let path = &mut paths[from..];
    for i in (0..l).rev() {
        path[i + 1].weight += one * path[i].weight * (i + 1) as f64 / (l + 1) as f64;
        path[i].weight = zero * path[i].weight * (l - i) as f64 / (l + 1) as f64;
    }
}

/// Undoes [`extend`] of the `i`-th feature of the path `paths[from..]`.
fn unwind(paths: &mut Vec<Step>, from: usize, i: usize) {
    let path = &mut paths[from..];
    let l = path.len() - 1;
    let (zero, one) = (path[i].zero, path[i].one);
    let mut n = path[l].weight;
    for j in (0..l).rev() {
        if one != 0.0 {
            let t = path[j].weight;
            path[j].weight = n * (l + 1) as f64 / ((j + 1) as f64 * one);
            n = t - path[j].weight * zero * (l - j) as f64 / (l + 1) as f64;
        } else {
            path[j].weight = path[j].weight * (l + 1) as f64 / (zero * (l - j) as f64);
        }
    }
    for j in i..l {
        let next = path[j + 1];
        path[j] = Step { weight: path[j].weight, ..next };
    }
    paths.pop();
}

/// The total weight of the path with its `i`-th feature unwound, without
/// changing it.
fn unwound_sum(path: &[Step], i: usize) -> f64 {
    let l = path.len() - 1;
    let (zero, one) = (path[i].zero, path[i].one);
    let mut n = path[l].weight;
    let mut total = 0.0;
    for j in (0..l).rev() {
        if one != 0.0 {
            let w = n * (l + 1) as f64 / ((j + 1) as f64 * one);
            total += w;
            n = path[j].weight - w * zero * (l - j) as f64 / (l + 1) as f64;
        } else {
            total += path[j].weight * (l + 1) as f64 / (zero * (l - j) as f64);
        }
    }
    total
}

impl FlatTree {
    /// The value of every split (`splits.len()` of them), children first:
    /// the mean of its two children's values.
    fn split_values(&self) -> Vec<f64> {
        let n = self.splits.len();
        let mut values = vec![0.0; n];
        let value = |values: &[f64], i: usize| if i >= n { self.leaves[i - n] } else { values[i] };
        for i in (0..n).rev() {
            values[i] = (value(&values, 2 * i + 1) + value(&values, 2 * i + 2)) / 2.0;
        }
        values
    }
}

impl NativeModel {
    /// "tree_shap" or "path" (the module's doc); None for a linear model.
    pub fn explanation_method(&self) -> Option<&'static str> {
        match (&self.head, &self.covered) {
            (Head::Linear { .. }, _) => None,
            (_, Some(_)) => Some("tree_shap"),
            (_, None) => Some("path"),
        }
    }

    /// The contributions of the given rows of a batch (None for a
    /// linear model: only tree ensembles are explained here).
    pub fn explain(
        &self,
        rows: usize,
        wanted: &[usize],
        column: impl Fn(&str) -> Option<arrow::array::ArrayRef>,
    ) -> Result<Option<Vec<Explained>>, String> {
        let Head::Trees { trees, base, .. } = &self.head else { return Ok(None) };
        let columns: Vec<Column> = self
            .feeds
            .iter()
            .map(|feed| {
                let array = column(feed.input()).ok_or_else(|| format!("no column for input `{}`", feed.input()))?;
                Column::new(feed, array, rows)
            })
            .collect::<Result<_, _>>()?;
        // Which input each position of the feature vector belongs to.
        let mut owner = vec![0usize; self.features];
        for (k, feed) in self.feeds.iter().enumerate() {
            match feed {
                Feed::OneHot { offset, categories, .. } => owner[*offset..*offset + categories.len()].fill(k),
                Feed::Number { offset, .. } => owner[*offset] = k,
            }
        }
        let values: Vec<Vec<f64>> = trees.iter().map(FlatTree::split_values).collect();
        let bias = match &self.covered {
            Some(covered) => base + covered.iter().map(|t| t.expected(0)).sum::<f64>(),
            None => {
                base + trees.iter().zip(&values).map(|(t, v)| v.first().copied().unwrap_or(t.leaves[0])).sum::<f64>()
            }
        };
        let mut x = vec![0.0f64; BLOCK * self.features];
        let mut phi = vec![0.0f64; self.features];
        let mut paths = Vec::new();
        let mut out = Vec::with_capacity(wanted.len());
        for &row in wanted {
            x[..self.features].fill(0.0);
            for (feed, values) in self.feeds.iter().zip(&columns) {
                values.fill(feed, &mut x, self.features, row, 1);
            }
            let features = &x[..self.features];
            let mut by_input = vec![0.0f64; self.feeds.len()];
            if let Some(covered) = &self.covered {
                phi.fill(0.0);
                for tree in covered {
                    tree.shap(features, &mut phi, &mut paths);
                }
                for (slot, value) in phi.iter().enumerate() {
                    by_input[owner[slot]] += value;
                }
                let contributions = self.feeds.iter().zip(by_input).map(|(f, c)| (f.input().to_string(), c)).collect();
                out.push(Explained { bias, contributions });
                continue;
            }
            for (tree, values) in trees.iter().zip(&values) {
                let n = tree.splits.len();
                let mut at = 0usize;
                for _ in 0..tree.depth {
                    let split = tree.splits[at];
                    let yes = features[split.feature as usize] <= split.threshold;
                    let next = 2 * at + 2 - usize::from(yes);
                    let after = if next >= n { tree.leaves[next - n] } else { values[next] };
                    by_input[owner[split.feature as usize]] += after - values[at];
                    at = next;
                }
            }
            let contributions = self.feeds.iter().zip(by_input).map(|(f, c)| (f.input().to_string(), c)).collect();
            out.push(Explained { bias, contributions });
        }
        Ok(Some(out))
    }
}

impl Feed {
    fn input(&self) -> &str {
        match self {
            Feed::OneHot { input, .. } | Feed::Number { input, .. } => input,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Float64Array, StringArray};

    use super::super::compile::{Node, LEAF};
    use super::*;

    fn tree(nodes: &[(u32, f64, u32, u32)]) -> FlatTree {
        let nodes: Vec<Node> =
            nodes.iter().map(|&(feature, value, yes, no)| Node { feature, value, yes, no }).collect();
        FlatTree::new(&nodes, 0).unwrap()
    }

    /// Inputs `c` (one-hot: "x" at 0, "y" at 1) and `a` (at 2); two trees.
    fn model() -> NativeModel {
        let categories = [("x".to_string(), 0), ("y".to_string(), 1)].into_iter().collect();
        NativeModel {
            feeds: vec![
                Feed::OneHot { input: "c".into(), offset: 0, categories },
                Feed::Number { input: "a".into(), offset: 2 },
            ],
            features: 3,
            covered: None,
            head: Head::Trees {
                trees: vec![
                    // a <= 10 -> (c==y? slot 1 <= 0.5 -> 0.0 else 4.0), else 2.0
                    tree(&[(2, 10.0, 1, 2), (1, 0.5, 3, 4), (LEAF, 2.0, 0, 0), (LEAF, 0.0, 0, 0), (LEAF, 4.0, 0, 0)]),
                    // a <= 3 -> -1, else 1
                    tree(&[(2, 3.0, 1, 2), (LEAF, -1.0, 0, 0), (LEAF, 1.0, 0, 0)]),
                ],
                base: 0.25,
                sigmoid: true,
            },
        }
    }

    fn nodes(spec: &[(u32, f64, u32, u32)]) -> Vec<Node> {
        spec.iter().map(|&(feature, value, yes, no)| Node { feature, value, yes, no }).collect()
    }

    /// The path-dependent value of knowing the features in `known`: follow
    /// the row on their splits, weigh both sides by cover on the others.
    fn value_of(t: &CoveredTree, j: usize, x: &[f64], known: &[bool]) -> f64 {
        let n = t.nodes[j];
        if n.feature == LEAF {
            return n.value;
        }
        let (yes, no) = (n.yes as usize, n.no as usize);
        if known[n.feature as usize] {
            return value_of(t, if x[n.feature as usize] <= n.value { yes } else { no }, x, known);
        }
        (t.covers[yes] * value_of(t, yes, x, known) + t.covers[no] * value_of(t, no, x, known)) / t.covers[j]
    }

    /// Shapley values by their definition: every subset of the others.
    fn brute_force(t: &CoveredTree, x: &[f64]) -> Vec<f64> {
        let m = x.len();
        let factorial = |k: usize| (1..=k).product::<usize>() as f64;
        let mut phi = vec![0.0; m];
        for (i, slot) in phi.iter_mut().enumerate() {
            for subset in 0u32..(1 << m) {
                if subset & (1 << i) != 0 {
                    continue;
                }
                let mut known: Vec<bool> = (0..m).map(|f| subset & (1 << f) != 0).collect();
                let size = known.iter().filter(|k| **k).count();
                let without = value_of(t, 0, x, &known);
                known[i] = true;
                let weight = factorial(size) * factorial(m - size - 1) / factorial(m);
                *slot += weight * (value_of(t, 0, x, &known) - without);
            }
        }
        phi
    }

    #[test]
    fn tree_shap_is_the_shapley_value_of_the_path_dependent_game() {
        // Four features; feature 0 is split on twice on one path, the
        // covers are uneven, and a leaf sits beside a deeper split.
        let tree = CoveredTree::new(
            nodes(&[
                (0, 5.0, 1, 2),     // 0: f0 <= 5
                (1, 1.0, 3, 4),     // 1: f1 <= 1
                (0, 8.0, 5, 6),     // 2: f0 <= 8 (f0 again)
                (LEAF, -2.0, 0, 0), // 3
                (2, 0.5, 7, 8),     // 4: f2 <= 0.5
                (3, 3.0, 9, 10),    // 5: f3 <= 3
                (LEAF, 6.0, 0, 0),  // 6
                (LEAF, 1.5, 0, 0),  // 7
                (LEAF, -0.5, 0, 0), // 8
                (LEAF, 4.0, 0, 0),  // 9
                (LEAF, -3.0, 0, 0), // 10
            ]),
            vec![100.0, 70.0, 30.0, 25.0, 45.0, 12.0, 18.0, 40.0, 5.0, 2.0, 10.0],
        )
        .expect("consistent covers");
        let rows = [[4.0, 0.0, 0.0, 0.0], [6.0, 2.0, 1.0, 5.0], [9.0, 2.0, 0.2, 1.0], [f64::NAN, 0.5, 0.9, 2.0]];
        for x in rows {
            let mut phi = vec![0.0; 4];
            tree.shap(&x, &mut phi, &mut Vec::new());
            let want = brute_force(&tree, &x);
            for (got, want) in phi.iter().zip(&want) {
                assert!((got - want).abs() < 1e-12, "row {x:?}: {phi:?} vs {want:?}");
            }
            // Local accuracy: the expected value plus the values is the leaf reached.
            let all = vec![true; 4];
            let leaf = value_of(&tree, 0, &x, &all);
            assert!((tree.expected(0) + phi.iter().sum::<f64>() - leaf).abs() < 1e-12);
        }
    }

    #[test]
    fn covers_that_do_not_weigh_the_tree_are_refused() {
        let stump = nodes(&[(0, 1.0, 1, 2), (LEAF, 0.0, 0, 0), (LEAF, 1.0, 0, 0)]);
        assert!(CoveredTree::new(stump.clone(), vec![10.0, 4.0, 6.0]).is_some());
        assert!(CoveredTree::new(stump.clone(), vec![10.0, 4.0, 5.0]).is_none(), "children do not add up");
        assert!(CoveredTree::new(stump.clone(), vec![10.0, 0.0, 10.0]).is_none(), "a node without weight");
        assert!(CoveredTree::new(stump.clone(), vec![10.0, 4.0]).is_none(), "one cover short");
        assert!(CoveredTree::new(stump, vec![f64::NAN, 4.0, 6.0]).is_none());
    }

    #[test]
    fn with_covers_the_model_explains_by_tree_shap_adding_up_to_the_margin() {
        let mut m = model();
        let Head::Trees { trees, .. } = &m.head else { unreachable!() };
        assert_eq!(trees.len(), 2);
        m.covered = Some(vec![
            CoveredTree::new(
                nodes(&[(2, 10.0, 1, 2), (1, 0.5, 3, 4), (LEAF, 2.0, 0, 0), (LEAF, 0.0, 0, 0), (LEAF, 4.0, 0, 0)]),
                vec![10.0, 8.0, 2.0, 6.0, 2.0],
            )
            .unwrap(),
            CoveredTree::new(nodes(&[(2, 3.0, 1, 2), (LEAF, -1.0, 0, 0), (LEAF, 1.0, 0, 0)]), vec![10.0, 5.0, 5.0])
                .unwrap(),
        ]);
        let c: ArrayRef = Arc::new(StringArray::from(vec![Some("y"), Some("x")]));
        let a: ArrayRef = Arc::new(Float64Array::from(vec![5.0, 20.0]));
        let column = |name: &str| Some(if name == "c" { c.clone() } else { a.clone() });
        let explained = m.explain(2, &[0, 1], column).unwrap().unwrap();
        // Expected values: tree 1 = (6 * 0 + 2 * 4) / 8 * 0.8 + 2 * 0.2 = 1.2; tree 2 = 0.
        assert!((explained[0].bias - (0.25 + 1.2)).abs() < 1e-12);
        let scores = m.predict(2, column).unwrap();
        for (e, score) in explained.iter().zip(&scores) {
            let margin = e.bias + e.contributions.iter().map(|(_, c)| c).sum::<f64>();
            assert!((1.0 / (1.0 + (-margin).exp()) - f64::from(*score)).abs() < 1e-6);
        }
        // Row 1: c = "x" is never asked about on its path (a > 10), yet the
        // other branch it would change weighs in: c gets a negative share.
        let (c_share, a_share) = (explained[1].contributions[0].1, explained[1].contributions[1].1);
        assert!(c_share < 0.0 && a_share > 0.0, "{:?}", explained[1].contributions);
    }

    #[test]
    fn contributions_add_up_to_the_margin_and_go_to_the_inputs_that_split() {
        let m = model();
        let c: ArrayRef = Arc::new(StringArray::from(vec![Some("y"), Some("x"), None]));
        let a: ArrayRef = Arc::new(Float64Array::from(vec![5.0, 20.0, 1.0]));
        let column = |name: &str| Some(if name == "c" { c.clone() } else { a.clone() });
        let explained = m.explain(3, &[0, 1, 2], column).unwrap().unwrap();
        // Root values: tree 1 = (mean(0, 4) + 2) / 2 = 2; tree 2 = 0.
        assert_eq!(explained[0].bias, 0.25 + 2.0);
        let scores = m.predict(3, column).unwrap();
        for (e, score) in explained.iter().zip(&scores) {
            let margin = e.bias + e.contributions.iter().map(|(_, c)| c).sum::<f64>();
            let p = 1.0 / (1.0 + (-margin).exp());
            assert!((p - f64::from(*score)).abs() < 1e-6, "{p} vs {score}");
        }
        // Row 0: a = 5 goes left in tree 1 (value 2 -> 2: +0) and right in
        // tree 2 (0 -> 1: +1); c = "y" takes the 4.0 leaf (2 -> 4: +2).
        assert_eq!(explained[0].contributions, vec![("c".to_string(), 2.0), ("a".to_string(), 1.0)]);
        // Row 1: a = 20 decides both trees alone: tree 1 2 -> 2 (+0), tree 2 +1.
        assert_eq!(explained[1].contributions, vec![("c".to_string(), 0.0), ("a".to_string(), 1.0)]);
    }
}
