//! `query-migrate-parameters` and `query-migrate-capabilities`: the settings a running or
//! pending migration uses (what `migtrace passes` back-tests the model with).
use anyhow::Result;
use serde::Deserialize;

use super::Qmp;

/// `query-migrate-parameters` (QEMU 7.2 field names; the ones migtrace reads).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MigrateParametersInfo {
    /// Bytes per second; QEMU's default is 128 MiB/s (0 would mean no limit).
    pub max_bandwidth: Option<u64>,
    /// Milliseconds.
    pub downtime_limit: Option<u64>,
    pub cpu_throttle_initial: Option<u64>,
    pub cpu_throttle_increment: Option<u64>,
    pub max_cpu_throttle: Option<u64>,
    pub cpu_throttle_tailslow: Option<bool>,
    pub throttle_trigger_threshold: Option<u64>,
}

/// One entry of `query-migrate-capabilities`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MigrationCapability {
    pub capability: String,
    pub state: bool,
}

impl Qmp {
    pub async fn query_migrate_parameters(&mut self) -> Result<MigrateParametersInfo> {
        self.execute("query-migrate-parameters", None).await
    }

    pub async fn query_migrate_capabilities(&mut self) -> Result<Vec<MigrationCapability>> {
        self.execute("query-migrate-capabilities", None).await
    }
}
