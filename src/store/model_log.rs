//! Where the models in service are recorded: the interface a durable store
//! implements (Cassandra's `models` and `model_lineup`), so that every
//! version ever served stays listed, live quality measures versions other
//! instances served, and a restart restores the line-up
//! (docs/architecture.md, "Storage"). Without one, nothing outlives the
//! process: the line-up is the configured model again after a restart.

use crate::score::model::ModelMeta;
use crate::score::registry::Lineup;

use super::reader::ReadError;

#[async_trait::async_trait]
pub trait ModelLog: Send + Sync {
    /// Records `lineup` for `service` (configured to start with version
    /// `configured`): each member with its role, the versions no longer in
    /// it as retired, and the line-up with its members' files. A failure is
    /// logged, not returned: serving goes on, and the next change records
    /// again.
    async fn record_lineup(&self, service: &str, configured: &str, lineup: &Lineup);

    /// Every model ever recorded (by any instance).
    async fn model_metas(&self) -> Result<Vec<ModelMeta>, ReadError>;
}
