//! What a Flight client sends besides Arrow data: DoGet tickets and
//! GetFlightInfo commands (protobuf `Query` or plain text), DoExchange
//! descriptors (`ScoreCommand`), DoAction requests (type + JSON or protobuf
//! body). Anything may be refused with a Status; nothing may panic.
#![no_main]

use arrow_flight::{Action, FlightDescriptor};
use fraudflight::flight::request;
use libfuzzer_sys::fuzz_target;

const ACTIONS: [&str; 4] = ["model-info", "health", "load-model", "unknown"];

fuzz_target!(|data: &[u8]| {
    let _ = request::parse_ticket(data);
    let command = FlightDescriptor::new_cmd(data.to_vec());
    let _ = request::query_of(&command);
    let _ = request::score_options(&command);
    let _ = request::describe(&command);
    if let Some((&first, body)) = data.split_first() {
        let action = Action { r#type: ACTIONS[first as usize % ACTIONS.len()].into(), body: body.to_vec().into() };
        let _ = request::parse_action(action);
        let path = String::from_utf8_lossy(body).split('/').map(String::from).collect::<Vec<_>>();
        let _ = request::score_options(&FlightDescriptor::new_path(path));
    }
});
