//! Live quality's book in Cassandra, in work bounded by what changed
//! (issue: "Live quality in bounded work"): a day of 1,000,000 scored and
//! labelled rows is counted minute by minute into binned tallies whose
//! average precision and ROC AUC are within their stated error of
//! scikit-learn's on the same rows; a label then costs a read of its
//! minute's rows only, not the day's (before, every round read every row of
//! every day touched); two instances counting at once keep the day's sum
//! exact.
//!
//! Run by `make test-services` (needs Cassandra up and the project's
//! Python with scikit-learn: `make setup`).

mod support;

use std::collections::HashMap;
use std::time::Duration;

use fraudflight::quality::tally::Tally;
use fraudflight::quality::{RowLabel, ScoreRow};
use fraudflight::sink::cassandra::Cassandra;

const DAY: i64 = 20_400;
const ROWS: usize = 1_000_000;
const CARD_K: u32 = 100;
/// Longer than the count's clock margin: rows noted changed before a count
/// began this long ago are not counted again.
const SETTLE: Duration = Duration::from_secs(11);

async fn connect(keyspace: &str) -> Cassandra {
    let config = support::cassandra_config(keyspace);
    Cassandra::connect(&config, &tokio_util::sync::CancellationToken::new()).await.expect("connect")
}

/// A deterministic generator (no dependency for a test's noise).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A day of a fraud model's scores: genuine near 0, frauds towards 1, a
/// share rounded as trees repeat scores; (row, labelled fraud).
fn day_of_rows() -> Vec<(ScoreRow, bool)> {
    let mut rng = Lcg(42);
    (0..ROWS)
        .map(|i| {
            let fraud = rng.next() < 0.01;
            let raw = if fraud { 1.0 - rng.next().powi(2) } else { rng.next().powi(5) };
            let score = if rng.next() < 0.3 { (raw * 1000.0).round() / 1000.0 } else { raw } as f32;
            let row = ScoreRow {
                trans_num: format!("t{i:07}"),
                cc_num: format!("c{}", i % 30_000),
                day: DAY,
                minute: (i % 1440) as i32,
                model_version: "champion".into(),
                fraud_score: score,
                predicted: score >= 0.5,
                shadow: None,
                label: None,
            };
            (row, fraud)
        })
        .collect()
}

fn label(row: &ScoreRow, is_fraud: bool, reported_at: i64) -> RowLabel {
    RowLabel {
        trans_num: row.trans_num.clone(),
        cc_num: row.cc_num.clone(),
        day: row.day,
        minute: row.minute,
        is_fraud,
        reported_at,
    }
}

/// Counts the day until no changed minute is left; (rows read, minutes).
async fn count_all(sink: &Cassandra) -> (u64, usize) {
    count_day(sink, DAY).await
}

async fn count_day(sink: &Cassandra, day: i64) -> (u64, usize) {
    let (mut rows, mut minutes) = (0, 0);
    loop {
        let counted = sink.count_quality_day(day, &HashMap::new(), 200_000, CARD_K).await.expect("count");
        rows += counted.rows_read;
        minutes += counted.minutes;
        if !counted.more {
            return (rows, minutes);
        }
    }
}

/// scikit-learn's AP and ROC AUC of (score, fraud) rows.
fn scikit_learn(rows: &[(f32, bool)]) -> (f64, f64) {
    let path = std::env::temp_dir().join(support::unique("quality-book").to_lowercase() + ".csv");
    let mut csv = String::with_capacity(rows.len() * 14);
    for (score, fraud) in rows {
        csv.push_str(&format!("{score:?},{}\n", u8::from(*fraud)));
    }
    std::fs::write(&path, csv).unwrap();
    let script = "import sys, json, numpy as np\n\
        from sklearn.metrics import average_precision_score, roc_auc_score\n\
        d = np.loadtxt(sys.argv[1], delimiter=',', dtype=np.float64)\n\
        s = d[:, 0].astype(np.float32)\n\
        print(json.dumps([average_precision_score(d[:, 1], s), roc_auc_score(d[:, 1], s)]))\n";
    let python = format!("{}/.venv/bin/python", support::manifest_dir());
    let out = std::process::Command::new(python).args(["-c", script]).arg(&path).output().expect("run python");
    std::fs::remove_file(&path).ok();
    assert!(out.status.success(), "scikit-learn: {}", String::from_utf8_lossy(&out.stderr));
    let [ap, auc]: [f64; 2] = serde_json::from_slice(&out.stdout).unwrap();
    (ap, auc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Cassandra: scripts/services.sh up cassandra (make test-services runs it)"]
async fn a_day_is_counted_in_minutes_within_the_stated_error_and_a_label_rereads_its_minute_only() {
    let keyspace = support::unique("qbook").to_lowercase();
    let sink = connect(&keyspace).await;
    let abandon = tokio_util::sync::CancellationToken::new();
    let mut rows = day_of_rows();
    for chunk in rows.chunks(20_000) {
        let scores: Vec<ScoreRow> = chunk.iter().map(|(r, _)| r.clone()).collect();
        sink.write_scores(&scores, &abandon).await.unwrap();
    }
    // Every fraud labelled; a thousand genuine ones too, first reported
    // fraud and corrected a minute later (the correction written first).
    let mut labels: Vec<RowLabel> = rows.iter().filter(|(_, f)| *f).map(|(r, _)| label(r, true, 100)).collect();
    for (r, _) in rows.iter().filter(|(_, f)| !*f).take(1_000) {
        labels.push(label(r, false, 160));
        labels.push(label(r, true, 100));
    }
    for chunk in labels.chunks(20_000) {
        sink.write_score_labels(chunk, &abandon).await.unwrap();
    }
    tokio::time::sleep(SETTLE).await;

    let (read, minutes) = count_all(&sink).await;
    assert_eq!((read, minutes), (ROWS as u64, 1440), "every row read once, every minute counted");
    let day = sink.day_tallies(DAY).await.unwrap();
    let m = day["champion"].measures(None);
    let judged: Vec<(f32, bool)> = rows.iter().map(|(r, f)| (r.fraud_score, *f)).collect();
    let frauds = judged.iter().filter(|r| r.1).count() as u64;
    assert_eq!((m.transactions, m.frauds), (ROWS as u64, frauds));
    let tp = judged.iter().filter(|(s, f)| *f && *s >= 0.5).count() as u64;
    assert_eq!(m.confusion.tp, tp, "the confusion counts are exact");
    let (ap, auc) = scikit_learn(&judged);
    let (live_ap, ap_error) = (m.average_precision.unwrap(), m.average_precision_error.unwrap());
    let (live_auc, auc_error) = (m.roc_auc.unwrap(), m.roc_auc_error.unwrap());
    assert!((live_ap - ap).abs() <= ap_error + 1e-9, "AP {live_ap} +- {ap_error} vs scikit-learn's {ap}");
    assert!((live_auc - auc).abs() <= auc_error + 1e-9, "AUC {live_auc} +- {auc_error} vs scikit-learn's {auc}");
    assert!(ap_error < 1e-3 && auc_error < 1e-4, "the stated error: AP +- {ap_error}, AUC +- {auc_error}");
    eprintln!("1M rows: AP {live_ap} +- {ap_error} (scikit-learn {ap}), AUC {live_auc} +- {auc_error} ({auc})");

    // Nothing changed: a round reads nothing.
    assert_eq!(count_all(&sink).await, (0, 0));

    // One label: its minute is read again, not the day.
    let i = rows.iter().position(|(r, f)| !*f && r.minute == 700 && r.fraud_score < 0.5).unwrap();
    sink.write_score_labels(&[label(&rows[i].0, true, 200)], &abandon).await.unwrap();
    rows[i].1 = true;
    tokio::time::sleep(SETTLE).await;
    let in_minute = rows.iter().filter(|(r, _)| r.minute == 700).count() as u64;
    assert_eq!(count_all(&sink).await, (in_minute, 1), "one minute's rows read, {in_minute}");
    let m = sink.day_tallies(DAY).await.unwrap()["champion"].measures(None);
    assert_eq!((m.frauds, m.confusion.fn_), (frauds + 1, frauds + 1 - tp));

    // Two instances count at once, after labels in 300 minutes: the day's
    // sum is what one count of everything gives.
    let other = connect(&keyspace).await;
    let changed: Vec<usize> =
        (0..300).map(|k| rows.iter().position(|(r, f)| !*f && r.minute == 3 * k).unwrap()).collect();
    let moved: Vec<RowLabel> = changed.iter().map(|&i| label(&rows[i].0, true, 300)).collect();
    sink.write_score_labels(&moved, &abandon).await.unwrap();
    for &i in &changed {
        rows[i].1 = true;
    }
    tokio::time::sleep(SETTLE).await;
    let (a, b) = tokio::join!(count_all(&sink), count_all(&other));
    assert!(a.1 + b.1 >= 300, "every changed minute counted by one of them: {a:?} {b:?}");
    let mut expected = Tally::default();
    for (r, f) in &rows {
        expected.add(r.fraud_score, r.predicted, *f);
    }
    let day = sink.day_tallies(DAY).await.unwrap();
    assert_eq!(day["champion"].confusion, expected.confusion, "the day's sum is exact");
    assert_eq!(day["champion"].histogram.frauds(), expected.histogram.frauds());
    let (got, want) = (day["champion"].measures(None), expected.measures(None));
    assert_eq!((got.average_precision, got.roc_auc), (want.average_precision, want.roc_auc));
    assert_eq!(count_all(&other).await, (0, 0), "nothing left to count");

    support::stack::cassandra().await.query_unpaged(format!("DROP KEYSPACE {keyspace}"), &[]).await.unwrap();
}

/// A stored tally that does not decode stops the count with an error that
/// names the table, instead of a sum that would be wrong for ever.
#[tokio::test]
#[ignore = "needs Cassandra: scripts/services.sh up cassandra (make test-services runs it)"]
async fn a_damaged_tally_is_an_error_not_a_wrong_sum() {
    let keyspace = support::unique("qbad").to_lowercase();
    let sink = connect(&keyspace).await;
    let abandon = tokio_util::sync::CancellationToken::new();
    let rows: Vec<ScoreRow> = day_of_rows().into_iter().take(50).map(|(r, _)| r).collect();
    sink.write_scores(&rows, &abandon).await.unwrap();
    let session = support::stack::cassandra().await;
    session
        .query_unpaged(
            format!("INSERT INTO {keyspace}.quality_tallies (day, minute, version, tally, as_of) VALUES ('2025-11-08', -1, 'champion', 0xffffff, 0)"),
            &[],
        )
        .await
        .unwrap();
    let err = sink.count_quality_day(DAY, &HashMap::new(), 1_000, CARD_K).await.unwrap_err().to_string();
    assert!(err.contains("quality_tallies") && err.contains("does not decode"), "{err}");
    session.query_unpaged(format!("DROP KEYSPACE {keyspace}"), &[]).await.unwrap();
}

/// Measures of `day` as saved in `model_quality`, by version.
async fn saved(keyspace: &str, day: &str) -> std::collections::BTreeMap<String, String> {
    let session = support::stack::cassandra().await;
    let rows: Vec<(String, String)> = support::stack::select(
        &session,
        format!("SELECT version, measures FROM {keyspace}.model_quality WHERE day = '{day}'"),
    )
    .await;
    rows.into_iter().collect()
}

/// A day an earlier release measured (its book was `scores`, not read now)
/// keeps its numbers; measures of a later revision are never replaced by an
/// earlier one's saved after them; a version whose every transaction was
/// scored again by another leaves the day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Cassandra: scripts/services.sh up cassandra (make test-services runs it)"]
async fn upgraded_days_keep_their_numbers_and_later_revisions_win() {
    let keyspace = support::unique("qsave").to_lowercase();
    let sink = connect(&keyspace).await;
    let abandon = tokio_util::sync::CancellationToken::new();
    let session = support::stack::cassandra().await;
    let versions = HashMap::new();
    let config = fraudflight::config::QualityConfig::default();
    let rows: Vec<ScoreRow> = day_of_rows().into_iter().take(200).map(|(r, _)| r).collect();

    // DAY - 1, measured by the earlier release: its row stays as it was.
    let earlier = "2025-11-07";
    session
        .query_unpaged(
            format!("INSERT INTO {keyspace}.model_quality (day, version, measures, computed_at) VALUES ('{earlier}', 'champion', '{{\"earlier\": 1}}', 0)"),
            &[],
        )
        .await
        .unwrap();
    let late: Vec<ScoreRow> = rows.iter().map(|r| ScoreRow { day: DAY - 1, ..r.clone() }).collect();
    sink.write_scores(&late, &abandon).await.unwrap();
    tokio::time::sleep(SETTLE).await;
    let counted = sink.count_quality_day(DAY - 1, &versions, 1_000, CARD_K).await.unwrap();
    assert!(counted.kept_earlier && counted.rows_read == 0, "{counted:?}");
    assert_eq!(saved(&keyspace, earlier).await["champion"], r#"{"earlier": 1}"#);
    assert_eq!(sink.count_quality_day(DAY - 1, &versions, 1_000, CARD_K).await.unwrap().rows_read, 0, "noted counted");

    // DAY: counted, then saved out of order.
    sink.write_scores(&rows, &abandon).await.unwrap();
    tokio::time::sleep(SETTLE).await;
    let first = sink.count_quality_day(DAY, &versions, 1_000, CARD_K).await.unwrap();
    assert_eq!((first.minutes, first.rows_read), (200, 200));
    let measured = fraudflight::quality::measure_tallies(DAY, &first.day, &first.fraud_cards, &versions, &config);
    sink.save_counted(&measured, &[], DAY, first.revision).await.unwrap();
    let mut older = measured.clone();
    older[0].measures.transactions = 1;
    sink.save_counted(&older, &[], DAY, first.revision - 1).await.unwrap();
    let shown = saved(&keyspace, "2025-11-08").await;
    assert!(shown["champion"].contains(r#""transactions":200"#), "the later revision's measures: {shown:?}");

    // Every row scored again by another version: the champion leaves the day.
    let rescored: Vec<ScoreRow> = rows.iter().map(|r| ScoreRow { model_version: "next".into(), ..r.clone() }).collect();
    sink.write_scores(&rescored, &abandon).await.unwrap();
    tokio::time::sleep(SETTLE).await;
    let second = sink.count_quality_day(DAY, &versions, 1_000, CARD_K).await.unwrap();
    assert!(second.revision > first.revision);
    assert_eq!(second.day["champion"].transactions(), 0);
    assert_eq!(second.day["next"].transactions(), 200);
    let gone: Vec<String> = second.day.iter().filter(|(_, t)| t.transactions() == 0).map(|(v, _)| v.clone()).collect();
    let measured = fraudflight::quality::measure_tallies(DAY, &second.day, &second.fraud_cards, &versions, &config);
    sink.save_counted(&measured, &gone, DAY, second.revision).await.unwrap();
    let shown = saved(&keyspace, "2025-11-08").await;
    assert_eq!(shown.keys().collect::<Vec<_>>(), ["next"], "{shown:?}");

    session.query_unpaged(format!("DROP KEYSPACE {keyspace}"), &[]).await.unwrap();
}

/// The day's card precision from Cassandra's tallies, and by definition
/// from every row (`support::card_precision`, written apart from the
/// service's), per version: a card is fraudulent when any of its
/// transactions of the day is labelled fraud, whichever version scored it.
async fn card_precisions(sink: &Cassandra, day: i64, rows: &[ScoreRow]) -> Vec<(String, Option<f64>, Option<f64>)> {
    let config = fraudflight::config::QualityConfig { card_k: CARD_K, ..Default::default() };
    let tallies = sink.day_tallies(day).await.unwrap();
    let fraud = sink.fraud_cards(day, &tallies).await.unwrap();
    let live = fraudflight::quality::measure_tallies(day, &tallies, &fraud, &HashMap::new(), &config);
    let day_rows: Vec<&ScoreRow> = rows.iter().filter(|r| r.day == day).collect();
    let fraud_cards: std::collections::HashSet<&str> =
        day_rows.iter().filter(|r| r.label.is_some_and(|(f, _)| f)).map(|r| r.cc_num.as_str()).collect();
    let versions: std::collections::BTreeSet<&str> = day_rows.iter().map(|r| r.model_version.as_str()).collect();
    assert_eq!(
        live.iter().map(|l| l.version.as_str()).collect::<Vec<_>>(),
        versions.iter().copied().collect::<Vec<_>>()
    );
    live.iter()
        .map(|l| {
            let judged: Vec<(&str, f32, bool)> = day_rows
                .iter()
                .filter(|r| r.model_version == l.version)
                .map(|r| (r.cc_num.as_str(), r.fraud_score, fraud_cards.contains(r.cc_num.as_str())))
                .collect();
            (l.version.clone(), l.measures.card_precision, support::card_precision(&judged, CARD_K as usize))
        })
        .collect()
}

fn assert_same(got: &[(String, Option<f64>, Option<f64>)], what: &str) {
    for (version, live, exact) in got {
        let (live, exact) = (live.expect("live card precision"), exact.expect("exact card precision"));
        assert!((live - exact).abs() < 1e-12, "{what}: {version} live {live} vs by definition {exact}");
    }
}

/// Card precision at k from the minutes' tops is the day's by definition:
/// after labels (a fraud corrected to genuine too), after the day's top
/// card is scored again lower (the day's top is merged again from every
/// minute), and after a minute is scored by another version. A day with a
/// row an earlier release stored (no card) shows none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Cassandra: scripts/services.sh up cassandra (make test-services runs it)"]
async fn card_precision_is_the_days_by_definition_through_labels_rescoring_and_an_upgrade() {
    let keyspace = support::unique("qcards").to_lowercase();
    let sink = connect(&keyspace).await;
    let abandon = tokio_util::sync::CancellationToken::new();
    // 60,000 rows of 3,000 cards (each about 20 times a day, in many minutes).
    let mut rows: Vec<ScoreRow> = day_of_rows()
        .into_iter()
        .take(60_000)
        .map(|(r, fraud)| ScoreRow {
            cc_num: format!("c{}", r.trans_num[1..].parse::<u64>().unwrap() % 3_000),
            label: fraud.then_some((true, 100)),
            ..r
        })
        .collect();
    sink.write_scores(&rows, &abandon).await.unwrap();
    let labels: Vec<RowLabel> = rows.iter().filter(|r| r.label.is_some()).map(|r| label(r, true, 100)).collect();
    sink.write_score_labels(&labels, &abandon).await.unwrap();
    tokio::time::sleep(SETTLE).await;
    count_all(&sink).await;
    let first = card_precisions(&sink, DAY, &rows).await;
    assert_same(&first, "counted");
    let value = first[0].1.unwrap();
    assert!(value > 0.0 && value < 1.0, "a day to tell apart: {value}");

    // The frauds of a top card corrected to genuine.
    let tallies = sink.day_tallies(DAY).await.unwrap();
    let top = match &tallies["champion"].cards {
        fraudflight::quality::tally::Cards::Kept(top) => top.clone(),
        other => panic!("the day's cards are kept: {other:?}"),
    };
    let fraud_top =
        top.entries().iter().find(|(c, _)| rows.iter().any(|r| &r.cc_num == c && r.label.is_some())).unwrap().0.clone();
    let mut corrections = Vec::new();
    for r in rows.iter_mut().filter(|r| r.cc_num == fraud_top && r.label.is_some()) {
        r.label = Some((false, 200));
        corrections.push(label(r, false, 200));
    }
    sink.write_score_labels(&corrections, &abandon).await.unwrap();
    tokio::time::sleep(SETTLE).await;
    count_all(&sink).await;
    let relabelled = card_precisions(&sink, DAY, &rows).await;
    assert_same(&relabelled, "relabelled");
    assert_ne!(relabelled[0].1, first[0].1, "the labels moved it");

    // The day's highest card scored again lower, in every minute it had.
    let highest = top.entries()[0].0.clone();
    let lowered: Vec<ScoreRow> = rows
        .iter_mut()
        .filter(|r| r.cc_num == highest)
        .map(|r| {
            r.fraud_score = 0.0001;
            r.predicted = false;
            r.clone()
        })
        .collect();
    sink.write_scores(&lowered, &abandon).await.unwrap();
    tokio::time::sleep(SETTLE).await;
    count_all(&sink).await;
    assert_same(&card_precisions(&sink, DAY, &rows).await, "a top card lowered");
    match &sink.day_tallies(DAY).await.unwrap()["champion"].cards {
        fraudflight::quality::tally::Cards::Kept(top) => assert_ne!(top.entries()[0].0, highest),
        other => panic!("{other:?}"),
    }

    // A minute's rows scored by another version.
    let moved: Vec<ScoreRow> = rows
        .iter_mut()
        .filter(|r| r.minute == 17)
        .map(|r| {
            r.model_version = "next".into();
            r.clone()
        })
        .collect();
    sink.write_scores(&moved, &abandon).await.unwrap();
    tokio::time::sleep(SETTLE).await;
    count_all(&sink).await;
    let versions = card_precisions(&sink, DAY, &rows).await;
    assert_eq!(versions.len(), 2);
    assert_same(&versions, "two versions");

    // A row an earlier release stored without its card, on the next day.
    let session = support::stack::cassandra().await;
    sink.write_scores(&[ScoreRow { day: DAY + 1, ..rows[0].clone() }], &abandon).await.unwrap();
    session
        .query_unpaged(
            format!("INSERT INTO {keyspace}.quality_rows (day, minute, trans_num, model_version, fraud_score, predicted) VALUES ('2025-11-09', 0, 'old', 'champion', 0.5, true)"),
            &[],
        )
        .await
        .unwrap();
    tokio::time::sleep(SETTLE).await;
    count_day(&sink, DAY + 1).await;
    let tallies = sink.day_tallies(DAY + 1).await.unwrap();
    assert_eq!(tallies["champion"].cards, fraudflight::quality::tally::Cards::Unknown);
    let fraud = sink.fraud_cards(DAY + 1, &tallies).await.unwrap();
    let config = fraudflight::config::QualityConfig::default();
    let measured = fraudflight::quality::measure_tallies(DAY + 1, &tallies, &fraud, &HashMap::new(), &config);
    assert_eq!((measured[0].measures.transactions, measured[0].measures.card_precision), (2, None));

    session.query_unpaged(format!("DROP KEYSPACE {keyspace}"), &[]).await.unwrap();
}
