//! Decoding Flight requests into domain terms: descriptors into queries and
//! score options, tickets into queries, action bodies into actions. Every
//! malformed input becomes an `InvalidArgument` that names the problem.

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::{FlightData, FlightDescriptor};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Status, Streaming};

use crate::app::ModelSource;
use crate::proto;
use crate::score::model::ModelFiles;
use crate::score::registry::Role;
use crate::score::ScoreOptions;
use crate::store::{Query, DEFAULT_LIMIT, MAX_LIMIT};

/// The actions of `DoAction`, with their descriptions for `ListActions`.
pub const ACTIONS: &[(&str, &str)] = &[
    ("model-info", "JSON: the model in service (version, features, threshold, metrics)"),
    (
        "load-model",
        "hot-swap the model (admin): body JSON {\"path\": DIR, \"mode\": \"champion\"|\"shadow\"} or a LoadModel protobuf",
    ),
    ("promote", "the shadow model becomes the champion; the champion stays loaded for rollback (admin)"),
    ("rollback", "the previous champion serves again, at once (admin)"),
    ("model-quality", "JSON: live precision, recall, AP, ROC AUC and drift per model version and UTC day"),
    ("health", "JSON: {\"status\": \"ok\", \"model_version\": ...}"),
];

/// A decoded `DoAction` request.
#[derive(Debug)]
pub enum Action {
    ModelInfo,
    Health,
    LoadModel(ModelSource, Role),
    Promote,
    Rollback,
    ModelQuality,
}

impl Action {
    /// Actions that change the models in service need an `admin` token.
    pub fn needs_admin(&self) -> Option<&'static str> {
        match self {
            Action::LoadModel(..) => Some("load-model"),
            Action::Promote => Some("promote"),
            Action::Rollback => Some("rollback"),
            Action::ModelInfo | Action::Health | Action::ModelQuality => None,
        }
    }
}

/// The path of a PATH descriptor.
pub fn descriptor_path(d: &FlightDescriptor) -> Option<Vec<&str>> {
    (d.r#type == DescriptorType::Path as i32).then(|| d.path.iter().map(String::as_str).collect())
}

/// A short human description of a descriptor, for error messages.
pub fn describe(d: &FlightDescriptor) -> String {
    match descriptor_path(d) {
        Some(path) => format!("path {path:?}"),
        None => format!("a command descriptor of {} bytes", d.cmd.len()),
    }
}

/// The query a `GetFlightInfo` descriptor asks for: path ["alerts"] or
/// ["recent"], or a `Query` command.
pub fn query_of(d: &FlightDescriptor) -> Result<Query, Status> {
    match descriptor_path(d).as_deref() {
        Some(["alerts"]) => Ok(Query::Alerts { limit: DEFAULT_LIMIT }),
        Some(["recent"]) => Ok(Query::Recent { limit: DEFAULT_LIMIT }),
        Some(_) => Err(Status::not_found(format!("no flight at {}; try \"alerts\" or \"recent\"", describe(d)))),
        None => decode_query(&d.cmd),
    }
}

/// The ticket of a query: its protobuf `Query`.
pub fn ticket_for(query: &Query) -> Vec<u8> {
    let (target, limit) = match query {
        Query::Alerts { limit } => (proto::query::Target::Alerts(true), *limit),
        Query::Recent { limit } => (proto::query::Target::Recent(true), *limit),
        Query::Card { cc_num, limit } => (proto::query::Target::Card(cc_num.clone()), *limit),
    };
    proto::Query { target: Some(target), limit: limit as u32 }.encode_to_vec()
}

/// A `DoGet` ticket: a protobuf `Query`, or the plain text "alerts" or
/// "recent" for hand-written clients.
pub fn parse_ticket(ticket: &[u8]) -> Result<Query, Status> {
    match ticket {
        b"alerts" => Ok(Query::Alerts { limit: DEFAULT_LIMIT }),
        b"recent" => Ok(Query::Recent { limit: DEFAULT_LIMIT }),
        bytes => decode_query(bytes),
    }
}

fn decode_query(bytes: &[u8]) -> Result<Query, Status> {
    let q = proto::Query::decode(bytes)
        .map_err(|e| Status::invalid_argument(format!("ticket/command is not a fraudflight Query: {e}")))?;
    let limit = match q.limit as usize {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    };
    match q.target {
        Some(proto::query::Target::Alerts(_)) => Ok(Query::Alerts { limit }),
        Some(proto::query::Target::Recent(_)) => Ok(Query::Recent { limit }),
        Some(proto::query::Target::Card(card)) if !card.is_empty() && card.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(Query::Card { cc_num: card, limit })
        }
        Some(proto::query::Target::Card(_)) => {
            Err(Status::invalid_argument("Query.card must be a card number (digits only)"))
        }
        None => Err(Status::invalid_argument("Query has no target: set alerts, recent or card")),
    }
}

/// Score options of a `DoExchange` descriptor: path ["score"], or a
/// `ScoreCommand` command.
pub fn score_options(d: &FlightDescriptor) -> Result<ScoreOptions, Status> {
    match descriptor_path(d).as_deref() {
        Some(["score"]) => Ok(ScoreOptions::default()),
        Some(_) => Err(Status::invalid_argument(format!("DoExchange scores at path [\"score\"], not {}", describe(d)))),
        None => {
            let cmd = proto::ScoreCommand::decode(d.cmd.as_ref())
                .map_err(|e| Status::invalid_argument(format!("command is not a fraudflight ScoreCommand: {e}")))?;
            Ok(ScoreOptions {
                model_version: Some(cmd.model_version).filter(|v| !v.is_empty()),
                threshold: cmd.threshold,
            })
        }
    }
}

/// Reads the first message of a client stream for its descriptor and returns
/// the descriptor with a decoder over the whole stream.
pub async fn split_descriptor(
    mut stream: Streaming<FlightData>,
) -> Result<(FlightDescriptor, FlightRecordBatchStream), Status> {
    let first = stream
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("empty stream: the first message must carry a FlightDescriptor"))?;
    let descriptor = first
        .flight_descriptor
        .clone()
        .ok_or_else(|| Status::invalid_argument("the first message carries no FlightDescriptor"))?;
    // pyarrow sends the descriptor alone in the first message, then the
    // schema; other clients put the schema in the same message.
    let head = (!first.data_header.is_empty()).then_some(Ok(first));
    let rest = futures::stream::iter(head).chain(stream).map_err(|s| FlightError::Tonic(Box::new(s)));
    Ok((descriptor, FlightRecordBatchStream::new_from_flight_data(rest)))
}

/// Decodes a `DoAction` request.
pub fn parse_action(action: arrow_flight::Action) -> Result<Action, Status> {
    match action.r#type.as_str() {
        "model-info" => Ok(Action::ModelInfo),
        "health" => Ok(Action::Health),
        "load-model" => load_model_source(&action.body).map(|(source, role)| Action::LoadModel(source, role)),
        "promote" => Ok(Action::Promote),
        "rollback" => Ok(Action::Rollback),
        "model-quality" => Ok(Action::ModelQuality),
        other => Err(Status::invalid_argument(format!(
            "unknown action {other:?}; known: {}",
            ACTIONS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        ))),
    }
}

fn load_model_source(body: &[u8]) -> Result<(ModelSource, Role), Status> {
    if body.trim_ascii_start().starts_with(b"{") {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct PathBody {
            path: String,
            #[serde(default)]
            mode: String,
        }
        let parsed: PathBody = serde_json::from_slice(body).map_err(|e| {
            Status::invalid_argument(format!("load-model body is not {{\"path\": DIR, \"mode\"?: ...}}: {e}"))
        })?;
        return Ok((ModelSource::Dir(parsed.path.into()), role(&parsed.mode)?));
    }
    let msg = proto::LoadModel::decode(body).map_err(|e| {
        Status::invalid_argument(format!("load-model body is neither JSON nor a LoadModel protobuf: {e}"))
    })?;
    let role = role(&msg.mode)?;
    if !msg.path.is_empty() {
        return Ok((ModelSource::Dir(msg.path.into()), role));
    }
    if msg.model_onnx.is_empty() || msg.model_json.is_empty() {
        return Err(Status::invalid_argument("LoadModel needs a path, or both model_onnx and model_json"));
    }
    let files = ModelFiles {
        onnx: msg.model_onnx.to_vec(),
        json: msg.model_json.to_vec(),
        parity: Some(msg.parity_jsonl.to_vec()).filter(|p| !p.is_empty()),
    };
    Ok((ModelSource::Files(files), role))
}

/// The role a `mode` asks for.
fn role(mode: &str) -> Result<Role, Status> {
    match mode {
        "" | "champion" => Ok(Role::Champion),
        "shadow" => Ok(Role::Shadow),
        other => Err(Status::invalid_argument(format!(
            "load-model mode {other:?} is unknown; use \"champion\" (the default) or \"shadow\""
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_round_trip_and_plain_names_work() {
        for q in [
            Query::Alerts { limit: 5 },
            Query::Recent { limit: 1000 },
            Query::Card { cc_num: "4111111111111111".into(), limit: 20 },
        ] {
            assert_eq!(parse_ticket(&ticket_for(&q)).unwrap(), q);
        }
        assert_eq!(parse_ticket(b"alerts").unwrap(), Query::Alerts { limit: DEFAULT_LIMIT });
    }

    #[test]
    fn garbage_tickets_and_bodies_are_invalid_arguments() {
        let err = parse_ticket(b"\xff\xff\xff").unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let no_target = proto::Query { target: None, limit: 1 }.encode_to_vec();
        assert!(parse_ticket(&no_target).unwrap_err().message().contains("no target"));
        let bad_card =
            proto::Query { target: Some(proto::query::Target::Card("x'; drop".into())), limit: 1 }.encode_to_vec();
        assert_eq!(parse_ticket(&bad_card).unwrap_err().code(), tonic::Code::InvalidArgument);
        let err = parse_action(arrow_flight::Action { r#type: "load-model".into(), body: "{\"dir\": 1}".into() })
            .unwrap_err();
        assert!(err.message().contains("path"), "{}", err.message());
        let err = parse_action(arrow_flight::Action { r#type: "reboot".into(), body: Default::default() }).unwrap_err();
        assert!(err.message().contains("model-info"));
        let body = "{\"path\": \"m\", \"mode\": \"canary\"}";
        let err = parse_action(arrow_flight::Action { r#type: "load-model".into(), body: body.into() }).unwrap_err();
        assert!(err.message().contains("shadow"), "{}", err.message());
    }

    #[test]
    fn load_model_takes_a_mode_and_switches_need_admin() {
        let action = |t: &str, body: &str| {
            parse_action(arrow_flight::Action { r#type: t.into(), body: body.to_string().into() }).unwrap()
        };
        assert!(matches!(action("load-model", "{\"path\": \"m\"}"), Action::LoadModel(_, Role::Champion)));
        let shadow = action("load-model", "{\"path\": \"m\", \"mode\": \"shadow\"}");
        assert!(matches!(shadow, Action::LoadModel(_, Role::Shadow)));
        let proto_body = proto::LoadModel { path: "m".into(), mode: "shadow".into(), ..Default::default() };
        let decoded =
            parse_action(arrow_flight::Action { r#type: "load-model".into(), body: proto_body.encode_to_vec().into() })
                .unwrap();
        assert!(matches!(decoded, Action::LoadModel(_, Role::Shadow)));
        assert_eq!(action("promote", "").needs_admin(), Some("promote"));
        assert_eq!(action("rollback", "").needs_admin(), Some("rollback"));
        assert_eq!(action("model-quality", "").needs_admin(), None);
    }

    #[test]
    fn limits_are_capped() {
        let huge = proto::Query { target: Some(proto::query::Target::Recent(true)), limit: u32::MAX }.encode_to_vec();
        assert_eq!(parse_ticket(&huge).unwrap(), Query::Recent { limit: MAX_LIMIT });
    }
}
