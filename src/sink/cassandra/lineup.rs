//! The model line-up kept across restarts (docs/architecture.md, "Shadow,
//! promote, rollback"): which versions are champion, shadow and previous,
//! per service (the Kafka consumer group: its instances serve one
//! line-up), in `model_lineup`; and every line-up model's own files, in
//! `model_files`, so a restart restores it whichever directory (or
//! `LoadModel` upload) a model came from, and on another host too.

use scylla::value::CqlTimestamp;

use super::{request, Cassandra, CassandraError};
use crate::score::model::ModelFiles;
use crate::score::registry::{Lineup, SavedLineup, Switched};

/// Models in `models` (with their roles) and the line-up with its files.
#[async_trait::async_trait]
impl crate::store::model_log::ModelLog for Cassandra {
    async fn record_lineup(&self, service: &str, configured: &str, lineup: &Lineup) {
        let roles = [
            ("champion", Some(&lineup.champion)),
            ("shadow", lineup.shadow.as_ref()),
            ("previous", lineup.previous.as_ref()),
        ];
        for (role, model) in roles {
            let Some(model) = model else { continue };
            if let Err(e) = self.record_model(&model.meta, role).await {
                tracing::warn!(error = %e, version = model.version(), "cannot record the model in Cassandra");
            }
        }
        let members: Vec<&std::sync::Arc<crate::score::model::Model>> = roles.iter().filter_map(|(_, m)| *m).collect();
        let versions: Vec<&str> = members.iter().map(|m| m.version()).collect();
        if let Err(e) = self.retire_models(&versions).await {
            tracing::warn!(error = %e, "cannot mark models out of the line-up as retired");
        }
        let files: Vec<(&str, &ModelFiles)> = members.iter().map(|m| (m.version(), &*m.files)).collect();
        if let Err(e) = self.save_lineup(service, configured, &Switched::from(lineup), &files).await {
            tracing::warn!(error = %e, "cannot save the model line-up: a restart would not restore it");
        }
    }

    async fn model_metas(&self) -> Result<Vec<crate::score::model::ModelMeta>, crate::store::reader::ReadError> {
        Cassandra::model_metas(self).await.map_err(|e| crate::store::reader::ReadError::new("cassandra", e))
    }
}

/// Bytes of a model file per row (Cassandra warns on mutations over a few
/// MB; model files may be up to 256 MB).
const CHUNK: usize = 512 << 10;

/// The CREATE statements of the line-up tables.
pub fn create_statements(ks: &str) -> Vec<String> {
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.model_files (\n  version text,\n  file text,\n  chunk int,\n  data blob,\n  PRIMARY KEY ((version), file, chunk)\n)"
        ),
        // "" for no shadow or previous: a null would be a tombstone.
        // `configured`: the version `serve` was configured to start with
        // when this was saved; another one configured since wins over it.
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.model_lineup (\n  service text,\n  champion text,\n  shadow text,\n  previous text,\n  configured text,\n  switched_at timestamp,\n  PRIMARY KEY (service)\n)"
        ),
    ]
}

/// The names a model's files are kept under.
const ONNX: &str = "model.onnx";
const JSON: &str = "model.json";
const PARITY: &str = "parity.jsonl";

impl Cassandra {
    /// Keeps a model's files (idempotent: the same version, the same rows).
    pub async fn save_model_files(&self, version: &str, files: &ModelFiles) -> Result<(), CassandraError> {
        let cql = format!("INSERT INTO {}.model_files (version, file, chunk, data) VALUES (?, ?, ?, ?)", self.keyspace);
        let parts = [(ONNX, Some(&files.onnx)), (JSON, Some(&files.json)), (PARITY, files.parity.as_ref())];
        for (name, bytes) in parts {
            let Some(bytes) = bytes else { continue };
            // An empty file is one empty chunk, so that it reads back.
            let chunks: Vec<&[u8]> = if bytes.is_empty() { vec![&[]] } else { bytes.chunks(CHUNK).collect() };
            for (i, chunk) in chunks.into_iter().enumerate() {
                self.session
                    .query_unpaged(cql.clone(), (version, name, i as i32, chunk))
                    .await
                    .map_err(request("model_files"))?;
            }
        }
        Ok(())
    }

    /// A model's kept files; None when they are not all here.
    pub async fn model_files(&self, version: &str) -> Result<Option<ModelFiles>, CassandraError> {
        let cql = format!("SELECT file, chunk, data FROM {}.model_files WHERE version = ?", self.keyspace);
        let rows: Vec<(String, i32, Vec<u8>)> = self
            .session
            .query_unpaged(cql, (version,))
            .await
            .map_err(request("model_files"))?
            .into_rows_result()
            .map_err(request("model_files"))?
            .rows::<(String, i32, Vec<u8>)>()
            .map_err(request("model_files"))?
            .collect::<Result<_, _>>()
            .map_err(request("model_files"))?;
        // Rows come ordered by (file, chunk); a missing chunk means the
        // save was cut short.
        let file = |name: &str| -> Option<Vec<u8>> {
            let chunks: Vec<&(String, i32, Vec<u8>)> = rows.iter().filter(|r| r.0 == name).collect();
            let whole = !chunks.is_empty() && chunks.iter().enumerate().all(|(i, r)| r.1 == i as i32);
            whole.then(|| chunks.iter().flat_map(|r| r.2.iter().copied()).collect())
        };
        Ok(match (file(ONNX), file(JSON)) {
            (Some(onnx), Some(json)) => Some(ModelFiles { onnx, json, parity: file(PARITY) }),
            _ => None,
        })
    }

    /// Marks every model recorded with a line-up role (`champion`, `shadow`,
    /// `previous`) but not among `lineup` as `retired`.
    pub async fn retire_models(&self, lineup: &[&str]) -> Result<(), CassandraError> {
        let rows: Vec<(String, Option<String>)> = self
            .session
            .query_unpaged(format!("SELECT version, role FROM {}.models", self.keyspace), &[])
            .await
            .map_err(request("models"))?
            .into_rows_result()
            .map_err(request("models"))?
            .rows::<(String, Option<String>)>()
            .map_err(request("models"))?
            .collect::<Result<_, _>>()
            .map_err(request("models"))?;
        let cql = format!("UPDATE {}.models SET role = 'retired' WHERE version = ?", self.keyspace);
        for (version, role) in rows {
            let serving = matches!(role.as_deref(), Some("champion" | "shadow" | "previous"));
            if serving && !lineup.contains(&version.as_str()) {
                self.session.query_unpaged(cql.clone(), (&version,)).await.map_err(request("models"))?;
            }
        }
        Ok(())
    }

    /// Saves the line-up of `service` (its models' files first), chosen
    /// while `serve` was configured to start with version `configured`.
    pub async fn save_lineup(
        &self,
        service: &str,
        configured: &str,
        lineup: &Switched,
        files: &[(&str, &ModelFiles)],
    ) -> Result<(), CassandraError> {
        for (version, f) in files {
            self.save_model_files(version, f).await?;
        }
        let cql = format!(
            "INSERT INTO {}.model_lineup (service, champion, shadow, previous, configured, switched_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
            self.keyspace
        );
        let or_none = |v: &Option<String>| v.clone().unwrap_or_default();
        let now = CqlTimestamp(chrono::Utc::now().timestamp_millis());
        let values = (service, &lineup.champion, or_none(&lineup.shadow), or_none(&lineup.previous), configured, now);
        self.session.query_unpaged(cql, values).await.map_err(request("model_lineup"))?;
        Ok(())
    }

    /// The saved line-up of `service` with its models' files; None when
    /// none was saved, or when it was saved while `serve` was configured
    /// with another model than `configured` (the operator chose anew). A shadow or previous model whose files are gone is
    /// left out (with a warning); a champion whose files are gone is an
    /// error: serving another model silently would be worse.
    pub async fn saved_lineup(&self, service: &str, configured: &str) -> Result<Option<SavedLineup>, CassandraError> {
        let cql = format!(
            "SELECT champion, shadow, previous, configured FROM {}.model_lineup WHERE service = ?",
            self.keyspace
        );
        let row = self
            .session
            .query_unpaged(cql, (service,))
            .await
            .map_err(request("model_lineup"))?
            .into_rows_result()
            .map_err(request("model_lineup"))?
            .maybe_first_row::<(Option<String>, Option<String>, Option<String>, Option<String>)>()
            .map_err(request("model_lineup"))?;
        let Some((Some(champion), shadow, previous, saved_with)) = row else { return Ok(None) };
        if saved_with.as_deref() != Some(configured) {
            tracing::info!(
                saved_champion = %champion,
                saved_with = saved_with.as_deref().unwrap_or(""),
                configured,
                "the configured model changed since the line-up was saved: starting with the configured one"
            );
            return Ok(None);
        }
        let Some(champion_files) = self.model_files(&champion).await? else {
            return Err(CassandraError::Lineup(format!(
                "the saved champion {champion} of service {service:?} has no files in {}.model_files",
                self.keyspace
            )));
        };
        let mut optional = Vec::new();
        for (role, version) in [("shadow", shadow), ("previous", previous)] {
            let version = version.filter(|v| !v.is_empty());
            let files = match &version {
                Some(v) => self.model_files(v).await?,
                None => None,
            };
            if let (Some(v), None) = (&version, &files) {
                tracing::warn!(role, version = %v, "saved line-up: this model's files are gone; left out");
            }
            optional.push(files);
        }
        let previous = optional.pop().flatten();
        let shadow = optional.pop().flatten();
        Ok(Some(SavedLineup { champion: champion_files, shadow, previous }))
    }
}
