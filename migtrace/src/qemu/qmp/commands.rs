//! The QMP commands migtrace uses, with typed replies (field names as QEMU 7.2 sends them;
//! unknown fields are ignored so newer QEMUs still parse).
use std::time::Duration;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::Qmp;

/// The largest `calc-dirty-rate` result taken, MB/s (QEMU's MB are MiB): 10 TiB/s, beyond
/// the memory bandwidth of any host. Above it, or below 0, the peer is broken or hostile.
pub const MAX_DIRTY_RATE_MIB: i64 = 10 << 20;

/// `query-status`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StatusInfo {
    /// `running`, `paused`, `inmigrate`, `postmigrate`, `shutdown`, ...
    pub status: String,
    pub running: bool,
}

/// One entry of `query-memdev`: a memory backend (QEMU 7.2 lists plain `-m` as `pc.ram`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Memdev {
    pub id: Option<String>,
    pub size: u64,
    pub share: bool,
    #[serde(default)]
    pub prealloc: bool,
    #[serde(default)]
    pub merge: bool,
    #[serde(default)]
    pub dump: bool,
    #[serde(default)]
    pub policy: String,
}

/// `query-memory-size-summary`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MemorySizeSummary {
    pub base_memory: u64,
    #[serde(default)]
    pub plugged_memory: Option<u64>,
}

/// One entry of `query-cpus-fast`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CpuInfoFast {
    pub cpu_index: u32,
    /// The host thread id of this vCPU.
    pub thread_id: u32,
    #[serde(default)]
    pub qom_path: String,
    #[serde(default)]
    pub target: String,
}

/// `query-dirty-rate`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DirtyRateInfo {
    /// `unstarted`, `measuring` or `measured`.
    pub status: String,
    /// MB/s (QEMU's unit: MiB per second), present once measured.
    pub dirty_rate: Option<i64>,
    pub start_time: i64,
    pub calc_time: i64,
    #[serde(default)]
    pub sample_pages: u64,
    #[serde(default)]
    pub mode: Option<String>,
}

/// `query-migrate`; every field is optional because QEMU sends them by state.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MigrationInfo {
    /// `setup`, `active`, `completed`, `failed`, `cancelled`, ...; absent before any
    /// migration.
    pub status: Option<String>,
    pub ram: Option<MigrationRam>,
    /// Milliseconds.
    pub total_time: Option<u64>,
    pub expected_downtime: Option<u64>,
    pub downtime: Option<u64>,
    pub setup_time: Option<u64>,
    pub cpu_throttle_percentage: Option<u64>,
    pub error_desc: Option<String>,
}

/// The `ram` part of `query-migrate`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MigrationRam {
    pub transferred: u64,
    pub remaining: u64,
    pub total: u64,
    #[serde(default)]
    pub duplicate: u64,
    #[serde(default)]
    pub normal: u64,
    #[serde(default)]
    pub normal_bytes: u64,
    /// Pages per second in the last pass.
    #[serde(default)]
    pub dirty_pages_rate: u64,
    /// Megabits per second.
    #[serde(default)]
    pub mbps: f64,
    /// One per pass over the dirty bitmap.
    #[serde(default)]
    pub dirty_sync_count: u64,
    #[serde(default)]
    pub page_size: u64,
}

/// `migrate-set-parameters`: only the fields that are `Some` are sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct MigrateParameters {
    /// Bytes per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bandwidth: Option<u64>,
    /// Milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downtime_limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_throttle_initial: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_throttle_increment: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_cpu_throttle: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttle_trigger_threshold: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multifd_channels: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xbzrle_cache_size: Option<u64>,
}

impl Qmp {
    pub async fn query_status(&mut self) -> Result<StatusInfo> {
        self.execute("query-status", None).await
    }

    pub async fn query_memdev(&mut self) -> Result<Vec<Memdev>> {
        self.execute("query-memdev", None).await
    }

    pub async fn query_memory_size_summary(&mut self) -> Result<MemorySizeSummary> {
        self.execute("query-memory-size-summary", None).await
    }

    pub async fn query_cpus_fast(&mut self) -> Result<Vec<CpuInfoFast>> {
        self.execute("query-cpus-fast", None).await
    }

    /// Starts `calc-dirty-rate` in `page-sampling` mode, the only mode offered: the
    /// `dirty-bitmap` mode killed QEMU 7.2 under TCG (docs/platform.md), and `dirty-ring`
    /// needs KVM. `sample_pages` per GiB (QEMU's default 512 when `None`).
    pub async fn calc_dirty_rate(
        &mut self,
        calc_time: Duration,
        sample_pages: Option<u64>,
    ) -> Result<()> {
        let secs = calc_time.as_secs();
        if secs == 0 {
            bail!("calc-dirty-rate needs a calc-time of at least 1 s");
        }
        let mut args = json!({ "calc-time": secs, "mode": "page-sampling" });
        if let Some(n) = sample_pages {
            args["sample-pages"] = json!(n);
        }
        self.execute_raw("calc-dirty-rate", Some(args))
            .await
            .map(drop)
    }

    pub async fn query_dirty_rate(&mut self) -> Result<DirtyRateInfo> {
        self.execute("query-dirty-rate", None).await
    }

    /// `calc-dirty-rate` then `query-dirty-rate` every 100 ms until measured (at most
    /// calc-time + 5 s). Returns MiB/s as QEMU reports it. `sample_pages` per GiB: QEMU 7.2
    /// takes 128 to 4096 (default 512); more pages, less noise.
    pub async fn measure_dirty_rate(
        &mut self,
        calc_time: Duration,
        sample_pages: Option<u64>,
    ) -> Result<DirtyRateInfo> {
        self.calc_dirty_rate(calc_time, sample_pages).await?;
        let deadline = tokio::time::Instant::now() + calc_time + Duration::from_secs(5);
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let info = self.query_dirty_rate().await?;
            if info.status == "measured" {
                match info.dirty_rate {
                    Some(r) if (0..=MAX_DIRTY_RATE_MIB).contains(&r) => return Ok(info),
                    Some(r) => bail!(
                        "QEMU reported a dirty rate of {r} MB/s, which no guest reaches (0 to {MAX_DIRTY_RATE_MIB}): not taken"
                    ),
                    None => {}
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "calc-dirty-rate did not finish in {:?} + 5 s: status {}",
                    calc_time,
                    info.status
                );
            }
        }
    }

    pub async fn query_migrate(&mut self) -> Result<MigrationInfo> {
        self.execute("query-migrate", None).await
    }

    pub async fn migrate_set_parameters(&mut self, p: &MigrateParameters) -> Result<()> {
        let args = serde_json::to_value(p)?;
        self.execute_raw("migrate-set-parameters", Some(args))
            .await
            .map(drop)
    }

    /// E.g. `[("auto-converge", true), ("events", true)]`.
    pub async fn migrate_set_capabilities(&mut self, caps: &[(&str, bool)]) -> Result<()> {
        let list: Vec<Value> = caps
            .iter()
            .map(|(c, on)| json!({ "capability": c, "state": on }))
            .collect();
        self.execute_raw(
            "migrate-set-capabilities",
            Some(json!({ "capabilities": list })),
        )
        .await
        .map(drop)
    }

    /// Starts an outgoing migration to `uri` (`tcp:127.0.0.1:4444`); returns at once, poll
    /// [`Qmp::query_migrate`] or wait for `MIGRATION` events.
    pub async fn migrate(&mut self, uri: &str) -> Result<()> {
        self.execute_raw("migrate", Some(json!({ "uri": uri })))
            .await
            .map(drop)
    }

    pub async fn migrate_cancel(&mut self) -> Result<()> {
        self.execute_raw("migrate_cancel", None).await.map(drop)
    }
}
