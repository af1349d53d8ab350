//! `fraudflight explain`: why a model scores rows as it does, in full — the
//! numbers an alert's `top_features` keeps the largest of. One JSON line a
//! row: its score, the explanation method, the bias (what every row starts
//! from) and each input's contribution, adding up to the margin (log-odds
//! for a GBT, the probability for a random forest).
//!
//! Rows come in the layout of `parity.jsonl` (a `record`, Spark's
//! `features`, a `probability`, which is ignored): by default the model's
//! own parity rows, so a data scientist can put the service's explanations
//! beside `shap`'s on the rows Spark scored.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::score::model::Model;

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Model directory (model.onnx + model.json).
    #[arg(long)]
    pub model: PathBuf,
    /// Rows to explain, in parity.jsonl's layout (default: the model's own parity.jsonl).
    #[arg(long)]
    pub rows: Option<PathBuf>,
}

pub fn run(args: ExplainArgs) -> anyhow::Result<()> {
    let (model, _) = Model::load_dir(&args.model, 1)
        .with_context(|| format!("cannot load the model in {}", args.model.display()))?;
    let path = args.rows.unwrap_or_else(|| args.model.join("parity.jsonl"));
    let lines = std::fs::read(&path).with_context(|| format!("cannot read the rows to explain, {}", path.display()))?;
    let method = model.explanation_method();
    let explained = model
        .explain_lines(&lines)
        .with_context(|| format!("{}", path.display()))?
        .with_context(|| format!("{}: only tree ensembles are explained", args.model.display()))?;
    let mut out = std::io::stdout().lock();
    for row in explained {
        let contributions: serde_json::Map<String, serde_json::Value> =
            row.explained.contributions.into_iter().map(|(name, c)| (name, c.into())).collect();
        let row = serde_json::json!({
            "line": row.line, "score": row.score, "method": method, "bias": row.explained.bias,
            "contributions": contributions,
        });
        use std::io::Write;
        writeln!(out, "{row}")?;
    }
    Ok(())
}
