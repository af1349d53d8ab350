//! The search sink: OpenSearch 2 or Elasticsearch 7.17 / 8 (all speak the
//! `_bulk`, `_index_template` and `_search` APIs used here; OpenSearch 2.19
//! and Elasticsearch 7.17 are tested, `tests/search_sink_engines.rs`). Installs the
//! index template on start, bulk-indexes outcomes into daily indices with
//! `_id` = `trans_num`, checks every item of every bulk response, retries
//! only the items that failed for a transient reason (429, 5xx) and backs off
//! while the cluster is busy or down. It also answers the `recent` query
//! (newest outcomes over all cards), which is a search, not a key lookup.

pub mod docs;

use std::io::Cursor;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ::opensearch::auth::Credentials;
use ::opensearch::cert::{Certificate, CertificateValidation};
use ::opensearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use ::opensearch::http::StatusCode;
use ::opensearch::indices::{IndicesGetMappingParts, IndicesPutIndexTemplateParts, IndicesPutMappingParts};
use ::opensearch::{BulkParts, OpenSearch, SearchParts};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::config::OpenSearchConfig;
use crate::history::Settled;
use crate::retry::{Abandoned, Health, Retry};
use crate::score::outcome;
pub use crate::store::sink::Refused;

/// The index template shipped in scripts/schema (also used by compose).
const TEMPLATE: &str = include_str!("../../../scripts/schema/opensearch-template.json");
/// The template of the live quality index.
/// The label update: applied only over an older report (or none); of two
/// whose versions tie, the larger decider's name wins (`Label::order`).
const NEWER_LABEL: &str = "def held = ctx._source.label_version; long ours = ((Number) params.version).longValue(); \
    boolean older = false; \
    if (held != null) { long h = ((Number) held).longValue(); \
      String hb = ctx._source.label_by == null ? '' : ctx._source.label_by; \
      String ob = params.by == null ? '' : params.by; \
      older = h > ours || (h == ours && hb.compareTo(ob) >= 0); } \
    if (older) { ctx.op = 'noop' } \
    else { ctx._source.is_fraud = params.is_fraud; ctx._source.label_reported_at = params.reported_at; \
    ctx._source.label_by = params.by; ctx._source.label_version = params.version }";
const QUALITY_TEMPLATE: &str = include_str!("../../../scripts/schema/opensearch-quality-template.json");

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("OpenSearch URL {url:?}: {message}")]
    Url { url: String, message: String },
    #[error("OpenSearch {what}: {message}")]
    Request { what: &'static str, message: String },
    #[error("OpenSearch {what}: {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Documents to send again after a transient failure, and why.
struct Transient {
    rows: Vec<usize>,
    error: String,
}

/// A connected search engine with its index template in place.
pub struct Search {
    client: OpenSearch,
    pub health: crate::retry::Health,
    /// Bulk requests in flight at once, over all batches: more than the
    /// cluster has cores only makes each one slower.
    bulk_slots: tokio::sync::Semaphore,
    prefix: String,
    quality_index: String,
    bulk_max_docs: usize,
    /// Set once the engine refused a Painless label update (scripting
    /// disabled, or a node without the module): labels go as partial
    /// documents from then on.
    scripts_refused: AtomicBool,
}

/// An update refused because the engine runs no (inline Painless) scripts.
fn is_script_refusal(error: &str) -> bool {
    ["script_lang not supported", "cannot execute [inline] scripts", "scripts of type [inline]"]
        .iter()
        .any(|m| error.contains(m))
}

#[derive(Deserialize)]
struct BulkResponse {
    #[serde(default)]
    errors: bool,
    items: Vec<std::collections::HashMap<String, BulkItem>>,
}

#[derive(Deserialize)]
struct BulkItem {
    status: u16,
    #[serde(default)]
    error: Option<Value>,
}

/// Outcomes as daily-index documents; labels on them.
#[async_trait::async_trait]
impl crate::store::sink::OutcomeSink for Search {
    fn name(&self) -> &'static str {
        "opensearch"
    }

    async fn write(&self, outcomes: &RecordBatch, abandon: &CancellationToken) -> Result<Vec<Refused>, Abandoned> {
        Search::write(self, outcomes, abandon).await
    }

    async fn show_labels(&self, current: &[Settled], abandon: &CancellationToken) -> Result<(), Abandoned> {
        self.write_labels(current, abandon).await
    }

    fn health(&self) -> Option<&Health> {
        Some(&self.health)
    }

    async fn answers(&self) -> bool {
        self.healthy().await
    }

    async fn index_quality(
        &self,
        measured: &[crate::quality::DayQuality],
        abandon: &CancellationToken,
    ) -> Result<(), Abandoned> {
        self.save_quality(measured, abandon).await
    }

    async fn expire(&self, retention: &crate::config::RetentionConfig) -> Result<(), String> {
        Search::expire(self, retention).await.map(drop).map_err(|e| e.to_string())
    }
}

/// The newest outcomes of all cards.
#[async_trait::async_trait]
impl crate::store::reader::OutcomeReader for Search {
    fn answers(&self, query: &crate::store::Query) -> bool {
        matches!(query, crate::store::Query::Recent { .. })
    }

    async fn query(&self, query: &crate::store::Query) -> Result<Vec<RecordBatch>, crate::store::reader::ReadError> {
        let limit = match query {
            crate::store::Query::Recent { limit } => *limit,
            // Not asked: `answers` said no.
            _ => return Ok(Vec::new()),
        };
        self.recent(limit).await.map_err(|e| crate::store::reader::ReadError::new("opensearch", e))
    }
}

impl Search {
    /// Connects and installs the index template, retrying while the cluster
    /// is unreachable (until `abandon`).
    pub async fn connect(config: &OpenSearchConfig, abandon: &CancellationToken) -> Result<Self, SearchError> {
        let shown = crate::config::redact_url(&config.url);
        let url_error = |message: String| SearchError::Url { url: shown.clone(), message };
        let mut url: ::opensearch::http::Url = config.url.parse().map_err(|e| url_error(format!("{e}")))?;
        // Credentials travel in the Authorization header, never in the URL
        // (which reqwest puts into its error messages).
        let mut username = config.username.clone();
        let mut password = config.password.expose().to_string();
        if !url.username().is_empty() {
            if username.is_empty() {
                username = url.username().to_string();
                password = url.password().unwrap_or_default().to_string();
            }
            let _ = url.set_username("");
            let _ = url.set_password(None);
        }
        let timeout = Duration::from_millis(config.request_timeout_ms);
        let mut transport = TransportBuilder::new(SingleNodeConnectionPool::new(url)).timeout(timeout);
        if !username.is_empty() {
            transport = transport.auth(Credentials::Basic(username, password));
        }
        if !config.tls_ca.is_empty() {
            let pem = crate::security::tls::read_ca("opensearch.tls_ca", &config.tls_ca)
                .map_err(|e| SearchError::Request { what: "TLS", message: e.to_string() })?;
            let ca = Certificate::from_pem(&pem).map_err(|e| url_error(format!("opensearch.tls_ca: {e}")))?;
            transport = transport.cert_validation(CertificateValidation::Full(ca));
        }
        let transport = transport.build().map_err(|e| url_error(e.to_string()))?;
        let search = Self {
            client: OpenSearch::new(transport),
            health: crate::retry::Health::new("opensearch"),
            bulk_slots: tokio::sync::Semaphore::new(config.bulk_concurrency),
            prefix: config.index_prefix.clone(),
            quality_index: config.quality_index.clone(),
            bulk_max_docs: config.bulk_max_docs,
            scripts_refused: AtomicBool::new(false),
        };
        let mut retry = Retry::new("opensearch", abandon);
        loop {
            match search.install_template().await {
                Ok(()) => {
                    search.upgrade_indices(TEMPLATE, &format!("{}-*", search.prefix)).await;
                    search.upgrade_indices(QUALITY_TEMPLATE, &search.quality_index).await;
                    return Ok(search);
                }
                // Waiting does not fix a wrong password or an untrusted
                // certificate: say so now rather than retry for ever.
                Err(e) if crate::retry::is_credentials_error(&e.to_string()) => {
                    return Err(SearchError::Request {
                        what: "connection",
                        message: format!("{e} (check opensearch.username / opensearch.password and opensearch.tls_ca)"),
                    })
                }
                Err(e) => {
                    tracing::warn!(error = %e, "OpenSearch not ready yet; retrying");
                    if retry.failed(&e).await.is_err() {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Upgrades the indices an earlier release created (`pattern`): the
    /// template's fields an index lacks are added to its mapping, so a
    /// field added since (`label_by`, `shadow_score`, ...) is searchable in
    /// today's index too, not only from tomorrow's. Fields it has are left
    /// as they are (a mapping's type cannot change). Best effort: a failure
    /// is a warning naming the index, never a refusal to start.
    async fn upgrade_indices(&self, template: &str, pattern: &str) {
        let template: Value = serde_json::from_str(template).expect("shipped template is JSON");
        let Some(wanted) = template["template"]["mappings"]["properties"].as_object() else { return };
        let sent = self
            .client
            .indices()
            .get_mapping(IndicesGetMappingParts::Index(&[pattern]))
            .allow_no_indices(true)
            .ignore_unavailable(true)
            .send()
            .await;
        let mappings: Value = match checked("index mappings", sent).await {
            Ok(response) => response.json().await.unwrap_or_default(),
            Err(e) => return tracing::warn!(error = %e, pattern, "cannot read the indices' mappings to upgrade them"),
        };
        let Some(indices) = mappings.as_object() else { return };
        for (index, mapping) in indices {
            let held = &mapping["mappings"]["properties"];
            let missing: serde_json::Map<String, Value> = wanted
                .iter()
                .filter(|(field, _)| held.get(field.as_str()).is_none())
                .map(|(f, m)| (f.clone(), m.clone()))
                .collect();
            if missing.is_empty() {
                continue;
            }
            let fields: Vec<&str> = missing.keys().map(String::as_str).collect();
            tracing::info!(index, ?fields, "upgrading an index an earlier release created: adding fields");
            let sent = self
                .client
                .indices()
                .put_mapping(IndicesPutMappingParts::Index(&[index.as_str()]))
                .body(json!({ "properties": missing }))
                .send()
                .await;
            if let Err(e) = checked("index mapping", sent).await {
                tracing::warn!(error = %e, index, ?fields, "cannot add the template's new fields to the index");
            }
        }
    }

    fn request_error(what: &'static str) -> impl Fn(String) -> SearchError {
        move |message| SearchError::Request { what, message }
    }

    async fn install_template(&self) -> Result<(), SearchError> {
        let mut template: Value = serde_json::from_str(TEMPLATE).expect("shipped template is JSON");
        template["index_patterns"] = json!([format!("{}-*", self.prefix)]);
        let sent = self
            .client
            .indices()
            .put_index_template(IndicesPutIndexTemplateParts::Name(&self.prefix))
            .body(template)
            .send()
            .await;
        checked("index template", sent).await?;
        let mut quality: Value = serde_json::from_str(QUALITY_TEMPLATE).expect("shipped template is JSON");
        quality["index_patterns"] = json!([self.quality_index]);
        let sent = self
            .client
            .indices()
            .put_index_template(IndicesPutIndexTemplateParts::Name(&self.quality_index))
            .body(quality)
            .send()
            .await;
        checked("quality index template", sent).await.map(drop)
    }

    /// Indexes measured days of live quality, a document per (version,
    /// day), `_id` = `version|date`: every instance writes the same ones.
    pub async fn save_quality(
        &self,
        measured: &[crate::quality::DayQuality],
        abandon: &CancellationToken,
    ) -> Result<(), Abandoned> {
        let docs: Vec<docs::Doc> = measured
            .iter()
            .map(|d| {
                let m = &d.measures;
                let action =
                    json!({"index": {"_index": self.quality_index, "_id": format!("{}|{}", d.version, d.date)}});
                let source = json!({
                    "@timestamp": d.day * 86_400_000,
                    "version": d.version, "date": d.date, "complete": d.complete,
                    "transactions": m.transactions, "frauds": m.frauds,
                    "tp": m.confusion.tp, "fp": m.confusion.fp, "tn": m.confusion.tn, "fn": m.confusion.fn_,
                    "precision": m.precision, "recall": m.recall, "average_precision": m.average_precision,
                    "roc_auc": m.roc_auc, "fraud_rate": m.fraud_rate, "score_psi": m.score_psi,
                    "card_precision": m.card_precision, "card_precision_k": m.card_precision_k,
                    "card_precision_estimated": m.card_precision_estimated,
                    "fraud_rate_ratio": d.drift.fraud_rate_ratio, "drifting": !d.drift.flagged.is_empty(),
                    "drift_reasons": d.drift.flagged, "computed_at": d.computed_at_ms,
                });
                docs::Doc {
                    action: Bytes::from(serde_json::to_vec(&action).expect("JSON")),
                    source: Bytes::from(serde_json::to_vec(&source).expect("JSON")),
                }
            })
            .collect();
        for r in self.bulk(&docs, abandon).await? {
            tracing::warn!(error = %r.error, "a quality document was refused");
        }
        Ok(())
    }

    /// Indexes every outcome; returns once each document is stored or
    /// refused for good.
    pub async fn write(&self, outcomes: &RecordBatch, abandon: &CancellationToken) -> Result<Vec<Refused>, Abandoned> {
        let docs = docs::build(outcomes, &self.prefix);
        let mut refused = Vec::new();
        for (chunk_no, chunk) in docs.chunks(self.bulk_max_docs).enumerate() {
            let base = chunk_no * self.bulk_max_docs;
            for r in self.bulk(chunk, abandon).await? {
                refused.push(Refused { row: base + r.row, ..r });
            }
        }
        Ok(refused)
    }

    /// Sets `is_fraud`, `label_reported_at` and `label_by` of indexed
    /// outcomes, unless the document holds a newer report (its
    /// `label_version`): the newest report wins whichever instance writes
    /// last. A document not indexed (yet) is left alone; its outcome
    /// carries the record's own value when it comes.
    pub async fn write_labels(&self, labels: &[Settled], abandon: &CancellationToken) -> Result<(), Abandoned> {
        let update = |Settled { label: l, unix_time }: &Settled, ordered: bool| {
            let action = json!({"update": {"_index": docs::index_name(&self.prefix, *unix_time), "_id": l.trans_num}});
            let reported_at = l.reported_at.unwrap_or_default();
            let version = crate::history::card::version(reported_at, l.is_fraud, l.decided_by.as_deref());
            let source = if ordered {
                json!({"script": {"lang": "painless", "source": NEWER_LABEL, "params": {
                    "is_fraud": i32::from(l.is_fraud), "reported_at": reported_at, "by": l.decided_by,
                    "version": version,
                }}})
            } else {
                json!({"doc": {
                    "is_fraud": i32::from(l.is_fraud), "label_reported_at": reported_at, "label_by": l.decided_by,
                    "label_version": version,
                }})
            };
            docs::Doc {
                action: Bytes::from(serde_json::to_vec(&action).expect("JSON")),
                source: Bytes::from(serde_json::to_vec(&source).expect("JSON")),
            }
        };
        let scripts = !self.scripts_refused.load(Ordering::Relaxed);
        let updates: Vec<docs::Doc> = labels.iter().map(|l| update(l, scripts)).collect();
        for (chunk_no, chunk) in updates.chunks(self.bulk_max_docs).enumerate() {
            let mut unordered = Vec::new();
            for r in self.bulk(chunk, abandon).await? {
                if scripts && is_script_refusal(&r.error) {
                    unordered.push(update(&labels[chunk_no * self.bulk_max_docs + r.row], false));
                } else {
                    tracing::debug!(error = %r.error, "label not applied to a search document");
                }
            }
            if !unordered.is_empty() {
                if !self.scripts_refused.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "the search engine runs no Painless scripts: labels in the search index are applied in \
                         arrival order, not report order (Cassandra still keeps the newest report)"
                    );
                }
                for r in self.bulk(&unordered, abandon).await? {
                    tracing::debug!(error = %r.error, "label not applied to a search document");
                }
            }
        }
        Ok(())
    }

    async fn bulk(&self, docs: &[docs::Doc], abandon: &CancellationToken) -> Result<Vec<Refused>, Abandoned> {
        let mut pending: Vec<usize> = (0..docs.len()).collect();
        let mut refused = Vec::new();
        let mut retry = Retry::new("opensearch", abandon);
        while !pending.is_empty() {
            match self.bulk_once(docs, &pending, &mut refused).await {
                Ok(()) => break,
                Err(Transient { rows, error }) => {
                    pending = rows;
                    retry.failed(error).await?;
                }
            }
        }
        Ok(refused)
    }

    /// One bulk request for the `pending` documents. Documents refused for
    /// good are added to `refused`; Err names the ones to send again.
    async fn bulk_once(
        &self,
        docs: &[docs::Doc],
        pending: &[usize],
        refused: &mut Vec<Refused>,
    ) -> Result<(), Transient> {
        let all_again = |error: String| Transient { rows: pending.to_vec(), error };
        let body: Vec<Bytes> = pending.iter().flat_map(|&i| [docs[i].action.clone(), docs[i].source.clone()]).collect();
        let sent = {
            let _slot = self.bulk_slots.acquire().await.expect("semaphore never closed");
            self.client.bulk(BulkParts::None).body(body).send().await
        };
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                let error = with_causes(&e);
                self.health.failed(&error);
                return Err(all_again(error));
            }
        };
        let status = response.status_code();
        // 401/403: wrong or missing credentials, an operator's problem
        // that says nothing about the documents; keep them and retry.
        let unauthorized = status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN;
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() || unauthorized {
            let error = format!("bulk request answered {status}");
            self.health.failed(&error);
            return Err(all_again(error));
        }
        self.health.succeeded();
        if !status.is_success() {
            // The whole request was refused (not transient): report every
            // document rather than retrying something that cannot succeed.
            let body = response.text().await.unwrap_or_default();
            let error = format!("bulk request refused with {status}: {}", truncate(&body, 300));
            refused.extend(pending.iter().map(|&row| Refused {
                row,
                document: docs[row].source.clone(),
                error: error.clone(),
            }));
            return Ok(());
        }
        let parsed: BulkResponse =
            response.json().await.map_err(|e| all_again(format!("unreadable bulk response: {e}")))?;
        if parsed.items.len() != pending.len() {
            return Err(all_again(format!(
                "bulk response has {} items for {} documents",
                parsed.items.len(),
                pending.len()
            )));
        }
        if !parsed.errors {
            return Ok(());
        }
        let mut again = Transient { rows: Vec::new(), error: String::new() };
        for (&doc, item) in pending.iter().zip(&parsed.items) {
            let Some(item) = item.values().next() else {
                again.rows.push(doc);
                continue;
            };
            match item.status {
                200..=299 => {}
                429 | 500..=599 => {
                    again.error = format!("item status {}: {}", item.status, describe(&item.error));
                    again.rows.push(doc);
                }
                status => refused.push(Refused {
                    row: doc,
                    document: docs[doc].source.clone(),
                    error: format!("OpenSearch refused the document ({status}): {}", describe(&item.error)),
                }),
            }
        }
        if again.rows.is_empty() {
            Ok(())
        } else {
            Err(again)
        }
    }

    /// The newest outcomes over all cards (by transaction time).
    pub async fn recent(&self, limit: usize) -> Result<Vec<RecordBatch>, SearchError> {
        const PAGE: usize = 10_000;
        let index = format!("{}-*", self.prefix);
        let mut out = Vec::new();
        let mut after: Option<Value> = None;
        let mut left = limit;
        while left > 0 {
            let mut body = json!({
                "size": left.min(PAGE),
                "sort": [{"@timestamp": "desc"}, {"trans_num": "desc"}],
                "track_total_hits": false,
            });
            if let Some(after) = &after {
                body["search_after"] = after.clone();
            }
            let response =
                checked("search", self.client.search(SearchParts::Index(&[&index])).body(body).send().await).await?;
            let result: Value = response.json().await.map_err(decode("search response"))?;
            let hits = result["hits"]["hits"].as_array().cloned().unwrap_or_default();
            if hits.is_empty() {
                break;
            }
            after = hits.last().map(|h| h["sort"].clone());
            left = left.saturating_sub(hits.len());
            let mut lines = Vec::new();
            for hit in &hits {
                serde_json::to_writer(&mut lines, &hit["_source"]).expect("JSON");
                lines.push(b'\n');
            }
            let reader = arrow::json::ReaderBuilder::new(outcome::schema())
                .with_batch_size(PAGE)
                .build(Cursor::new(lines))
                .map_err(decode("search results"))?;
            for batch in reader {
                out.push(batch.map_err(decode("search results"))?);
            }
            if hits.len() < PAGE {
                break;
            }
        }
        Ok(out)
    }

    /// The outcome indices (`<prefix>-*`) with their creation times, as
    /// `_cat/indices` lists them (JSON).
    pub(crate) async fn cat_indices(&self) -> Result<Value, SearchError> {
        let pattern = format!("{}-*", self.prefix);
        let sent = self
            .client
            .cat()
            .indices(::opensearch::cat::CatIndicesParts::Index(&[&pattern]))
            .format("json")
            .h(&["index", "creation.date"])
            .send()
            .await;
        checked("list indices", sent).await?.json().await.map_err(decode("index list"))
    }

    pub(crate) async fn delete_index(&self, name: &str) -> Result<(), SearchError> {
        let sent = self.client.indices().delete(::opensearch::indices::IndicesDeleteParts::Index(&[name])).send().await;
        checked("delete index", sent).await.map(|_| ())
    }

    /// Deletes the quality documents `query` matches (none: nothing).
    pub(crate) async fn delete_quality(&self, query: Value) -> Result<(), SearchError> {
        let index = [self.quality_index.as_str()];
        let sent = self
            .client
            .delete_by_query(::opensearch::DeleteByQueryParts::Index(&index))
            .ignore_unavailable(true)
            .allow_no_indices(true)
            .body(query)
            .send()
            .await;
        checked("delete old quality", sent).await.map(|_| ())
    }

    /// True if the cluster answers.
    pub async fn healthy(&self) -> bool {
        matches!(self.client.ping().send().await, Ok(r) if r.status_code().is_success())
    }
}

/// A response that arrived and says success, or the error naming `what` failed.
async fn checked(
    what: &'static str,
    sent: Result<::opensearch::http::response::Response, ::opensearch::Error>,
) -> Result<::opensearch::http::response::Response, SearchError> {
    let response = sent.map_err(|e| Search::request_error(what)(with_causes(&e)))?;
    if response.status_code().is_success() {
        return Ok(response);
    }
    let status = response.status_code();
    // One line, whatever the body (a proxy's 401 is an HTML page).
    let text = response.text().await.unwrap_or_default().split_whitespace().collect::<Vec<_>>().join(" ");
    Err(Search::request_error(what)(format!("{status}: {}", truncate(&text, 300))))
}

fn decode<E: std::error::Error + Send + Sync + 'static>(what: &'static str) -> impl Fn(E) -> SearchError {
    move |e| SearchError::Decode { what, source: Box::new(e) }
}

/// An error with its causes: reqwest alone says only "error sending
/// request", the reason (refused, certificate not trusted) is in the chain.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text
}

fn describe(error: &Option<Value>) -> String {
    match error {
        Some(e) => truncate(&e.to_string(), 300),
        None => "no reason given".into(),
    }
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}
