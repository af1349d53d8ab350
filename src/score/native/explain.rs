//! Why a tree ensemble scored a row as it did: per-tree path contributions
//! (docs/architecture.md, "Why an alert scored high").
//!
//! Each node of a tree gets a value: a leaf its weight, a split the mean of
//! its two children's values (the ONNX graph carries no training counts, so
//! both branches weigh the same). Walking a row from the root to its leaf,
//! each split hands the change of value it causes, `value(child taken) -
//! value(split)`, to the feature it tested; a one-hot slot's share goes to
//! its string input. Over a tree the changes add up to `leaf - value(root)`
//! exactly, so over the ensemble
//!
//! `margin = base + sum of root values + sum of every input's contribution`
//!
//! holds to rounding: for a GBT the margin is the log-odds before the
//! sigmoid, for a random forest the probability itself. Computed for alerts
//! only (a few rows a batch).

use super::{Column, Feed, FlatTree, Head, NativeModel, BLOCK};

/// One row's explanation.
#[derive(Debug, Clone, PartialEq)]
pub struct Explained {
    /// What every row starts from: `base` plus every tree's root value.
    pub bias: f64,
    /// Per graph input (in the model's feed order): its contribution.
    pub contributions: Vec<(String, f64)>,
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
    /// The path contributions of the given rows of a batch (None for a
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
        let bias =
            base + trees.iter().zip(&values).map(|(t, v)| v.first().copied().unwrap_or(t.leaves[0])).sum::<f64>();
        let mut x = vec![0.0f64; BLOCK * self.features];
        let mut out = Vec::with_capacity(wanted.len());
        for &row in wanted {
            x[..self.features].fill(0.0);
            for (feed, values) in self.feeds.iter().zip(&columns) {
                values.fill(feed, &mut x, self.features, row, 1);
            }
            let features = &x[..self.features];
            let mut by_input = vec![0.0f64; self.feeds.len()];
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
