//! The Flight API through a real client (arrow-flight's FlightServiceClient
//! over TCP) against a running embedded server: scoring, ingest, queries,
//! model management, and bad input that must be refused without harming the
//! server.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, Float64Array, RecordBatch};
use arrow::datatypes::{Float32Type, Schema};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{Action, Criteria, Empty, FlightDescriptor, Ticket};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tonic::transport::Channel;

use fraudflight::demo::{self, DemoConfig, Running};
use fraudflight::proto;
use fraudflight::record::{self, column};
use fraudflight::simulate::{SimConfig, Simulator};

fn shipped_model() -> PathBuf {
    fraudflight::score::registry::model_dir_or_newest(None).expect("a model is shipped under models/")
}

async fn start(model_dir: PathBuf) -> (Running, FlightServiceClient<Channel>) {
    let running = demo::start(DemoConfig {
        model_dir,
        flight_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        rate: 0.0,
        seed: 1,
        fraud: Default::default(),
        sessions: 1,
    })
    .await
    .expect("server starts");
    let channel = Channel::from_shared(format!("http://{}", running.flight_addr)).unwrap().connect().await.unwrap();
    let client = FlightServiceClient::new(channel).max_decoding_message_size(64 << 20);
    (running, client)
}

fn simulated(seed: u64, n: usize) -> RecordBatch {
    let txns: Vec<_> = Simulator::new(SimConfig { seed, ..SimConfig::default() }).take(n).collect();
    record::to_batch(&txns)
}

fn descriptor_path(name: &str) -> FlightDescriptor {
    FlightDescriptor::new_path(vec![name.to_string()])
}

/// DoExchange: sends `batches`, returns the answers (or the first error).
async fn exchange(
    client: &mut FlightServiceClient<Channel>,
    descriptor: FlightDescriptor,
    batches: Vec<RecordBatch>,
) -> Result<Vec<RecordBatch>, tonic::Status> {
    let input = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(descriptor))
        // Slices would otherwise be split by the size of their parent buffers.
        .with_max_flight_data_size(usize::MAX)
        .build(futures::stream::iter(batches.into_iter().map(Ok)))
        .map(|d| d.expect("encodes"));
    let response = client.do_exchange(input).await?.into_inner();
    FlightRecordBatchStream::new_from_flight_data(response.map_err(Into::into)).try_collect().await.map_err(|e| match e
    {
        arrow_flight::error::FlightError::Tonic(s) => *s,
        other => tonic::Status::internal(other.to_string()),
    })
}

async fn do_get(client: &mut FlightServiceClient<Channel>, ticket: Vec<u8>) -> Vec<RecordBatch> {
    let stream = client.do_get(Ticket::new(ticket)).await.expect("do_get").into_inner();
    FlightRecordBatchStream::new_from_flight_data(stream.map_err(Into::into)).try_collect().await.expect("batches")
}

async fn action(
    client: &mut FlightServiceClient<Channel>,
    name: &str,
    body: Vec<u8>,
) -> Result<serde_json::Value, tonic::Status> {
    let mut results = client.do_action(Action { r#type: name.into(), body: body.into() }).await?.into_inner();
    let first = results.message().await?.expect("one result");
    Ok(serde_json::from_slice(&first.body).expect("JSON result"))
}

fn without(batch: &RecordBatch, name: &str) -> RecordBatch {
    let keep: Vec<usize> = (0..batch.num_columns()).filter(|&i| batch.schema().field(i).name() != name).collect();
    batch.project(&keep).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_scores_every_row_in_order_and_matches_in_process_scoring() {
    let (running, mut client) = start(shipped_model()).await;
    let input = simulated(11, 10_000);
    let batches: Vec<_> = (0..10).map(|i| input.slice(i * 1_000, 1_000)).collect();
    let answers = exchange(&mut client, descriptor_path("score"), batches).await.unwrap();
    assert_eq!(answers.len(), 10, "one answer per input batch");
    assert!(answers.iter().all(|b| b.num_rows() == 1_000));
    let answer = arrow::compute::concat_batches(&answers[0].schema(), &answers).unwrap();
    assert_eq!(answer.num_rows(), 10_000);
    let names: Vec<_> = answer.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["trans_num", "fraud_score", "is_fraud_predicted", "model_version"]);
    assert_eq!(
        answer.column(0).as_string::<i32>(),
        input.column_by_name(column::trans_num).unwrap().as_string::<i32>()
    );

    let local = running.app.score_for_storage(&input, None).unwrap().outcomes;
    let remote_scores = answer.column(1).as_primitive::<Float32Type>();
    let local_scores = local.column_by_name("fraud_score").unwrap().as_primitive::<Float32Type>();
    assert_eq!(remote_scores, local_scores);
    let flagged = answer.column(2).as_boolean().true_count();
    assert!(flagged > 10 && flagged < 500, "{flagged} of 10000 predicted fraud");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_status_and_the_server_keeps_serving() {
    let (running, mut client) = start(shipped_model()).await;
    let good = simulated(3, 100);

    let err = exchange(&mut client, descriptor_path("score"), vec![without(&good, "amt")]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("`amt`"), "{}", err.message());

    let mut columns = good.columns().to_vec();
    let lat_index = good.schema().index_of(column::lat).unwrap();
    let mut lats: Vec<f64> = good.column(lat_index).as_primitive::<arrow::datatypes::Float64Type>().values().to_vec();
    lats[7] = 123.0;
    columns[lat_index] = Arc::new(Float64Array::from(lats));
    let bad_row = RecordBatch::try_new(good.schema(), columns).unwrap();
    let err = exchange(&mut client, descriptor_path("score"), vec![bad_row]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("row 7") && err.message().contains("`lat`"), "{}", err.message());

    let text_amt = {
        let schema = Schema::new(vec![arrow::datatypes::Field::new("amt", arrow::datatypes::DataType::Boolean, true)]);
        let amt = RecordBatch::try_new(Arc::new(schema), vec![Arc::new(BooleanArray::from(vec![true; 100]))]).unwrap();
        let mut fields: Vec<_> = without(&good, "amt").schema().fields().iter().cloned().collect();
        fields.push(amt.schema().field(0).clone().into());
        let mut cols = without(&good, "amt").columns().to_vec();
        cols.push(amt.column(0).clone());
        RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
    };
    let err = exchange(&mut client, descriptor_path("score"), vec![text_amt]).await.unwrap_err();
    assert!(err.message().contains("`amt` has type Boolean"), "{}", err.message());

    let err = exchange(&mut client, descriptor_path("nowhere"), vec![good.clone()]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let err = client.do_get(Ticket::new(b"\xde\xad\xbe\xef\x00".to_vec())).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = action(&mut client, "load-model", b"\x01\x02garbage".to_vec()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // Still serving, with the same model.
    let answers = exchange(&mut client, descriptor_path("score"), vec![good]).await.unwrap();
    assert_eq!(answers[0].num_rows(), 100);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingested_rows_are_queryable_and_alerts_hold_only_predicted_frauds() {
    let (running, mut client) = start(shipped_model()).await;
    let input = simulated(5, 20_000);
    let put = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(descriptor_path("transactions")))
        .with_max_flight_data_size(usize::MAX)
        .build(futures::stream::iter((0..4).map(|i| Ok(input.slice(i * 5_000, 5_000))).collect::<Vec<_>>()))
        .map(|d| d.unwrap());
    let results: Vec<_> = client.do_put(put).await.unwrap().into_inner().try_collect().await.unwrap();
    let accepted: u64 = results
        .iter()
        .map(|r| serde_json::from_slice::<serde_json::Value>(&r.app_metadata).unwrap()["accepted"].as_u64().unwrap())
        .sum();
    assert_eq!(accepted, 20_000);

    let flights: Vec<_> =
        client.list_flights(Criteria::default()).await.unwrap().into_inner().try_collect().await.unwrap();
    let names: Vec<_> = flights.iter().map(|f| f.flight_descriptor.as_ref().unwrap().path.join("/")).collect();
    assert_eq!(names, ["alerts", "recent"]);
    let alerts_ticket = flights[0].endpoint[0].ticket.as_ref().unwrap().ticket.to_vec();

    let alerts = do_get(&mut client, alerts_ticket).await;
    let alert_rows: usize = alerts.iter().map(RecordBatch::num_rows).sum();
    assert!(alert_rows > 0);
    for b in &alerts {
        assert_eq!(b.column_by_name("is_fraud_predicted").unwrap().as_boolean().true_count(), b.num_rows());
        // Each alert says which inputs pushed its score up most.
        let why = b.column_by_name("top_features").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            let top: serde_json::Value = serde_json::from_str(why.value(i)).unwrap();
            let top = top.as_array().unwrap();
            assert!(!top.is_empty() && top.len() <= 3, "{top:?}");
            assert!(top.iter().all(|f| f["contribution"].as_f64().unwrap() > 0.0 && f["feature"].is_string()));
        }
    }
    let recent_why = do_get(&mut client, b"recent".to_vec()).await;
    let unexplained = recent_why.iter().all(|b| {
        let predicted = b.column_by_name("is_fraud_predicted").unwrap().as_boolean();
        let why = b.column_by_name("top_features").unwrap();
        (0..b.num_rows()).all(|i| predicted.value(i) || why.is_null(i))
    });
    assert!(unexplained, "only alerts are explained");
    let expected_alerts = running.app.metrics().snapshot().alerts as usize;
    assert_eq!(alert_rows, expected_alerts.min(fraudflight::store::DEFAULT_LIMIT));

    let recent = do_get(&mut client, b"recent".to_vec()).await;
    let times: Vec<i64> = recent
        .iter()
        .flat_map(|b| {
            b.column_by_name("unix_time").unwrap().as_primitive::<arrow::datatypes::Int64Type>().values().to_vec()
        })
        .collect();
    assert_eq!(times.len(), fraudflight::store::DEFAULT_LIMIT);
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "recent is newest first");

    let card = input.column_by_name(column::cc_num).unwrap().as_string::<i32>().value(0).to_string();
    let query = proto::Query { target: Some(proto::query::Target::Card(card.clone())), limit: 0 };
    let info = client.get_flight_info(FlightDescriptor::new_cmd(query.encode_to_vec())).await.unwrap().into_inner();
    let history = do_get(&mut client, info.endpoint[0].ticket.as_ref().unwrap().ticket.to_vec()).await;
    let cards: Vec<String> = history
        .iter()
        .flat_map(|b| {
            b.column_by_name("cc_num")
                .unwrap()
                .as_string::<i32>()
                .iter()
                .map(|c| c.unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let expected = input
        .column_by_name(column::cc_num)
        .unwrap()
        .as_string::<i32>()
        .iter()
        .filter(|c| *c == Some(card.as_str()))
        .count();
    assert_eq!(cards.len(), expected);
    assert!(cards.iter().all(|c| c == &card));
    running.stop().await;
}

/// An ONNX graph with one tree: split k sends "yes" to a leaf and "no" to
/// split k + 1, `splits` deep.
fn chain_of_splits(splits: i64) -> Vec<u8> {
    use proto::onnx::{AttributeProto, GraphProto, ModelProto, NodeProto};
    let nodes = 2 * splits + 1;
    let ints = |name: &str, f: &dyn Fn(i64) -> i64| AttributeProto {
        name: Some(name.into()),
        ints: (0..nodes).map(f).collect(),
        ..Default::default()
    };
    let is_leaf = move |id: i64| id % 2 == 1 || id == 2 * splits;
    let ensemble = NodeProto {
        op_type: Some("TreeEnsembleRegressor".into()),
        domain: Some("ai.onnx.ml".into()),
        input: vec!["amt".into()],
        output: vec!["probability".into()],
        attribute: vec![
            ints("nodes_treeids", &|_| 0),
            ints("nodes_nodeids", &|id| id),
            ints("nodes_truenodeids", &|id| if is_leaf(id) { 0 } else { id + 1 }),
            ints("nodes_falsenodeids", &|id| if is_leaf(id) { 0 } else { id + 2 }),
            AttributeProto {
                name: Some("nodes_modes".into()),
                strings: (0..nodes)
                    .map(|id| if is_leaf(id) { b"LEAF".to_vec() } else { b"BRANCH_LEQ".to_vec() })
                    .collect(),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    ModelProto { graph: Some(GraphProto { node: vec![ensemble], ..Default::default() }), ..Default::default() }
        .encode_to_vec()
}

fn copy_model(from: &Path, to: &Path, version: &str) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["model.onnx", "parity.jsonl"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
    let mut meta: serde_json::Value = serde_json::from_slice(&std::fs::read(from.join("model.json")).unwrap()).unwrap();
    meta["version"] = version.into();
    std::fs::write(to.join("model.json"), serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_model_swaps_the_version_and_refuses_corrupt_huge_or_mismatched_models() {
    let (running, mut client) = start(shipped_model()).await;
    let before = action(&mut client, "model-info", vec![]).await.unwrap();
    assert!(before["metrics"]["roc_auc"].as_f64().unwrap() > 0.9);
    assert!(before["features"].as_array().unwrap().iter().any(|f| f == "distance_km"));

    let tmp = tempfile::tempdir().unwrap();
    let next = tmp.path().join("next");
    copy_model(&shipped_model(), &next, "swapped-v2");
    let body = serde_json::json!({ "path": next }).to_string().into_bytes();
    let loaded = action(&mut client, "load-model", body).await.unwrap();
    assert_eq!(loaded["version"], "swapped-v2");
    assert!(loaded["parity"]["rows"].as_u64().unwrap() >= 100);
    assert_eq!(action(&mut client, "model-info", vec![]).await.unwrap()["version"], "swapped-v2");
    let answers = exchange(&mut client, descriptor_path("score"), vec![simulated(2, 10)]).await.unwrap();
    assert_eq!(answers[0].column(3).as_string::<i32>().value(0), "swapped-v2");

    // The previous version stays addressable through ScoreCommand.
    let cmd = proto::ScoreCommand { model_version: before["version"].as_str().unwrap().into(), threshold: Some(0.0) };
    let answers =
        exchange(&mut client, FlightDescriptor::new_cmd(cmd.encode_to_vec()), vec![simulated(2, 10)]).await.unwrap();
    assert_eq!(answers[0].column(3).as_string::<i32>().value(0), before["version"].as_str().unwrap());
    assert_eq!(answers[0].column(2).as_boolean().true_count(), 10, "threshold 0 flags everything");

    // A corrupt ONNX file, sent as bytes, is refused; the old model serves on.
    let corrupt = proto::LoadModel {
        path: String::new(),
        model_onnx: b"not an onnx graph".to_vec(),
        model_json: std::fs::read(next.join("model.json")).unwrap(),
        parity_jsonl: Default::default(),
        mode: String::new(),
    };
    let err = action(&mut client, "load-model", corrupt.encode_to_vec()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("old model keeps serving"), "{}", err.message());
    // A tree shaped as a chain of 20,000 splits: ONNX Runtime crashed the
    // whole server building it. Refused by name; the server answers on.
    let chain = proto::LoadModel { model_onnx: chain_of_splits(20_000), ..corrupt.clone() };
    let err = action(&mut client, "load-model", chain.encode_to_vec()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("more than 100 levels deep"), "{}", err.message());
    assert_eq!(action(&mut client, "model-info", vec![]).await.unwrap()["version"], "swapped-v2");
    // A model whose parity vectors disagree is refused too.
    let drifted = tmp.path().join("drifted");
    copy_model(&shipped_model(), &drifted, "drifted-v3");
    let parity = std::fs::read_to_string(drifted.join("parity.jsonl")).unwrap();
    let mut first: serde_json::Value = serde_json::from_str(parity.lines().next().unwrap()).unwrap();
    first["probability"] = (first["probability"].as_f64().unwrap() * 0.5 + 0.01).into();
    let rest: Vec<&str> = parity.lines().skip(1).collect();
    std::fs::write(drifted.join("parity.jsonl"), format!("{first}\n{}\n", rest.join("\n"))).unwrap();
    let err = action(&mut client, "load-model", serde_json::json!({ "path": drifted }).to_string().into_bytes())
        .await
        .unwrap_err();
    assert!(err.message().contains("parity"), "{}", err.message());
    assert_eq!(action(&mut client, "model-info", vec![]).await.unwrap()["version"], "swapped-v2");

    // A huge model file (sparse: no disk used) is refused before it is read;
    // inputs that do not match the graph, and unreadable metadata, are refused.
    let refused = |dir: &std::path::Path| serde_json::json!({ "path": dir }).to_string().into_bytes();
    let huge = tmp.path().join("huge");
    copy_model(&shipped_model(), &huge, "huge-v4");
    std::fs::File::options().write(true).open(huge.join("model.onnx")).unwrap().set_len(300 << 20).unwrap();
    let err = action(&mut client, "load-model", refused(&huge)).await.unwrap_err();
    assert!(err.message().contains("over the") && err.message().contains("byte limit"), "{}", err.message());
    let renamed = tmp.path().join("renamed");
    copy_model(&shipped_model(), &renamed, "renamed-v5");
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(renamed.join("model.json")).unwrap()).unwrap();
    // One input fewer than the graph takes.
    meta["inputs"].as_array_mut().unwrap().pop();
    std::fs::write(renamed.join("model.json"), meta.to_string()).unwrap();
    let err = action(&mut client, "load-model", refused(&renamed)).await.unwrap_err();
    assert!(err.message().contains("inputs do not match model.json"), "{}", err.message());
    // An input that is no record column nor derived feature.
    meta["inputs"].as_array_mut().unwrap().push(serde_json::json!({ "name": "distance_miles", "type": "double" }));
    std::fs::write(renamed.join("model.json"), meta.to_string()).unwrap();
    let err = action(&mut client, "load-model", refused(&renamed)).await.unwrap_err();
    assert!(err.message().contains("`distance_miles` (Double) is neither a record column"), "{}", err.message());
    let garbled = tmp.path().join("garbled");
    copy_model(&shipped_model(), &garbled, "garbled-v6");
    std::fs::write(garbled.join("model.json"), "{\"version\": 7").unwrap();
    let err = action(&mut client, "load-model", refused(&garbled)).await.unwrap_err();
    assert!(err.message().contains("invalid model.json"), "{}", err.message());
    assert_eq!(action(&mut client, "model-info", vec![]).await.unwrap()["version"], "swapped-v2");

    let actions: Vec<_> = client.list_actions(Empty {}).await.unwrap().into_inner().try_collect().await.unwrap();
    let names: Vec<_> = actions.iter().map(|a| a.r#type.as_str()).collect();
    assert_eq!(names, ["model-info", "load-model", "promote", "rollback", "model-quality", "health"]);
    assert_eq!(action(&mut client, "health", vec![]).await.unwrap()["status"], "ok");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_schema_of_score_is_the_record_schema() {
    let (running, mut client) = start(shipped_model()).await;
    let result = client.get_schema(descriptor_path("score")).await.unwrap().into_inner();
    let schema = Schema::try_from(&result).unwrap();
    assert_eq!(&schema, record::schema().as_ref());
    let err = client.get_schema(descriptor_path("elsewhere")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    running.stop().await;
}

/// Average precision as scikit-learn computes it, written out again here so
/// the server's number is checked against an independent one.
fn sklearn_average_precision(mut scored: Vec<(f32, bool)>) -> f64 {
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let positives = scored.iter().filter(|s| s.1).count() as f64;
    let (mut tp, mut fp, mut previous_recall, mut ap) = (0.0, 0.0, 0.0, 0.0);
    let mut i = 0;
    while i < scored.len() {
        let mut j = i;
        while j < scored.len() && scored[j].0 == scored[i].0 {
            if scored[j].1 {
                tp += 1.0
            } else {
                fp += 1.0
            }
            j += 1;
        }
        let recall = tp / positives;
        ap += (recall - previous_recall) * tp / (tp + fp);
        previous_recall = recall;
        i = j;
    }
    ap
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_model_is_measured_on_labels_beside_the_champion_and_promote_and_rollback_switch_at_once() {
    let (running, mut client) = start(shipped_model()).await;
    let champion = action(&mut client, "model-info", vec![]).await.unwrap()["version"].as_str().unwrap().to_string();
    let challenger_dir = shipped_model().parent().unwrap().join("handbook/gbt-handbook-history-v1");
    let err = action(&mut client, "rollback", vec![]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("no previous model"), "{}", err.message());
    assert!(action(&mut client, "promote", vec![]).await.unwrap_err().message().contains("no shadow model"));

    let body = serde_json::json!({ "path": challenger_dir, "mode": "shadow" }).to_string().into_bytes();
    let loaded = action(&mut client, "load-model", body).await.unwrap();
    assert_eq!(loaded["lineup"]["champion"], champion.as_str());
    assert_eq!(loaded["lineup"]["shadow"], "gbt-handbook-history-v1");
    let info = action(&mut client, "model-info", vec![]).await.unwrap();
    assert_eq!(
        (info["version"].as_str().unwrap(), info["shadow"].as_str()),
        (champion.as_str(), Some("gbt-handbook-history-v1"))
    );

    // Ingest: the champion's scores are the outcomes, the shadow's sit beside them.
    let input = simulated(11, 3_000);
    let put = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(descriptor_path("transactions")))
        .build(futures::stream::iter([Ok(input.clone())]))
        .map(|d| d.unwrap());
    let _: Vec<_> = client.do_put(put).await.unwrap().into_inner().try_collect().await.unwrap();
    let recent = do_get(&mut client, b"recent".to_vec()).await;
    let mut differ = 0;
    for b in &recent {
        let versions = b.column_by_name("model_version").unwrap().as_string::<i32>();
        let shadows = b.column_by_name("shadow_version").unwrap().as_string::<i32>();
        let (score, shadow) = (
            b.column_by_name("fraud_score").unwrap().as_primitive::<Float32Type>(),
            b.column_by_name("shadow_score").unwrap().as_primitive::<Float32Type>(),
        );
        for i in 0..b.num_rows() {
            assert_eq!(versions.value(i), champion);
            assert_eq!(shadows.value(i), "gbt-handbook-history-v1");
            assert!(shadow.is_valid(i));
            differ += usize::from(score.value(i) != shadow.value(i));
        }
    }
    assert!(differ > 0, "the shadow is another model: its scores differ");

    // Labels for the input's frauds, reported an hour after each.
    let is_fraud = input.column_by_name(column::is_fraud).unwrap().as_primitive::<arrow::datatypes::Int64Type>();
    let times = input.column_by_name(column::unix_time).unwrap().as_primitive::<arrow::datatypes::Int64Type>();
    let frauds: Vec<usize> = (0..input.num_rows()).filter(|&i| is_fraud.value(i) == 1).collect();
    assert!(frauds.len() >= 5, "the simulator makes some fraud: {}", frauds.len());
    let pick = |name: &str| {
        let c = input.column_by_name(name).unwrap().as_string::<i32>();
        arrow::array::StringArray::from_iter_values(frauds.iter().map(|&i| c.value(i)))
    };
    let labels = RecordBatch::try_from_iter([
        ("trans_num", Arc::new(pick(column::trans_num)) as arrow::array::ArrayRef),
        ("cc_num", Arc::new(pick(column::cc_num))),
        ("is_fraud", Arc::new(arrow::array::Int64Array::from(vec![1; frauds.len()]))),
        (
            "reported_at",
            Arc::new(arrow::array::Int64Array::from_iter_values(frauds.iter().map(|&i| times.value(i) + 3_600))),
        ),
    ])
    .unwrap();
    let put = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(descriptor_path("labels")))
        .build(futures::stream::iter([Ok(labels)]))
        .map(|d| d.unwrap());
    let _: Vec<_> = client.do_put(put).await.unwrap().into_inner().try_collect().await.unwrap();

    // The demo measures every few seconds; both versions appear per day.
    let days: std::collections::BTreeSet<i64> = times.values().iter().map(|t| t.div_euclid(86_400)).collect();
    let quality = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            let q = action(&mut client, "model-quality", vec![]).await.unwrap();
            let measured: usize = q["days"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["version"] == champion.as_str())
                .map(|d| d["frauds"].as_u64().unwrap() as usize)
                .sum();
            if measured == frauds.len() {
                return q;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    })
    .await
    .expect("quality measured within 30 s");
    // Each day's champion AP equals one computed here from the same scores.
    let scores = exchange(&mut client, descriptor_path("score"), vec![input.clone()]).await.unwrap();
    let champion_scores = scores[0].column(1).as_primitive::<Float32Type>();
    for day in &days {
        let rows: Vec<(f32, bool)> = (0..input.num_rows())
            .filter(|&i| times.value(i).div_euclid(86_400) == *day)
            .map(|i| (champion_scores.value(i), is_fraud.value(i) == 1))
            .collect();
        let served = quality["days"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["version"] == champion.as_str() && d["day"] == *day)
            .unwrap_or_else(|| panic!("day {day} measured: {quality}"));
        assert_eq!(served["transactions"].as_u64().unwrap() as usize, rows.len());
        if rows.iter().any(|r| r.1) {
            let expected = sklearn_average_precision(rows);
            let got = served["average_precision"].as_f64().unwrap();
            assert!((got - expected).abs() < 1e-9, "day {day}: AP {got} vs {expected}");
        }
    }
    let shadow_days: u64 = quality["days"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["version"] == "gbt-handbook-history-v1")
        .map(|d| d["transactions"].as_u64().unwrap())
        .sum();
    assert_eq!(shadow_days as usize, input.num_rows(), "the shadow is measured on every stored record");

    // Promote: the shadow serves at once; rollback brings the champion back.
    let promoted = action(&mut client, "promote", vec![]).await.unwrap();
    assert_eq!(
        (promoted["champion"].as_str(), promoted["previous"].as_str()),
        (Some("gbt-handbook-history-v1"), Some(champion.as_str()))
    );
    assert!(promoted["shadow"].is_null());
    let answers = exchange(&mut client, descriptor_path("score"), vec![simulated(2, 10)]).await.unwrap();
    assert_eq!(answers[0].column(3).as_string::<i32>().value(0), "gbt-handbook-history-v1");
    let rolled = action(&mut client, "rollback", vec![]).await.unwrap();
    assert_eq!(
        (rolled["champion"].as_str(), rolled["previous"].as_str()),
        (Some(champion.as_str()), Some("gbt-handbook-history-v1"))
    );
    let answers = exchange(&mut client, descriptor_path("score"), vec![simulated(2, 10)]).await.unwrap();
    assert_eq!(answers[0].column(3).as_string::<i32>().value(0), champion);
    running.stop().await;
}
