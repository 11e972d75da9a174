//! Alerts that outlive the process: every alert and its timeline in a small
//! redb database, `alerts.redb` in the data directory, written once per tick
//! that changed something (one transaction). A restarted collector loads it,
//! so a firing alert stays firing with its original `fired_at` and nothing
//! is notified again as new.

use std::path::Path;

use nodewatch_proto::pb;
use prost::Message as _;
use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition};

use super::lifecycle::TrackedAlert;

/// alert id -> encoded `GetAlertResponse` (the alert and its timeline).
const ALERTS: TableDefinition<&str, &[u8]> = TableDefinition::new("alerts");

/// File name of the alert database in the data directory.
pub const FILE_NAME: &str = "alerts.redb";

/// Why the alert database failed.
#[derive(Debug, thiserror::Error)]
pub enum AlertStoreError {
    /// redb refused an operation.
    #[error("alert database: cannot {op}: {message}")]
    Db {
        /// What was being done.
        op: &'static str,
        /// The database's message.
        message: String,
    },
    /// A stored record does not decode.
    #[error("alert database: record {id} is damaged")]
    Decode {
        /// The alert id.
        id: String,
    },
}

fn fail<E: std::fmt::Display>(op: &'static str) -> impl Fn(E) -> AlertStoreError {
    move |e| AlertStoreError::Db {
        op,
        message: e.to_string(),
    }
}

/// The alert database.
pub struct AlertStore {
    db: redb::Database,
}

impl std::fmt::Debug for AlertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertStore").finish_non_exhaustive()
    }
}

impl AlertStore {
    /// Opens (or creates) `alerts.redb` in `dir`.
    pub fn open(dir: &Path) -> Result<Self, AlertStoreError> {
        let db = redb::Database::create(dir.join(FILE_NAME)).map_err(fail("open"))?;
        let tx = db.begin_write().map_err(fail("begin"))?;
        tx.open_table(ALERTS).map_err(fail("create table"))?;
        tx.commit().map_err(fail("commit"))?;
        Ok(Self { db })
    }

    /// Every stored alert.
    pub fn load(&self) -> Result<Vec<TrackedAlert>, AlertStoreError> {
        let tx = self.db.begin_read().map_err(fail("begin read"))?;
        let table = tx.open_table(ALERTS).map_err(fail("open table"))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(fail("read"))? {
            let (k, v) = row.map_err(fail("read"))?;
            let rec =
                pb::GetAlertResponse::decode(v.value()).map_err(|_| AlertStoreError::Decode {
                    id: k.value().to_string(),
                })?;
            if let Some(alert) = rec.alert {
                out.push(TrackedAlert {
                    alert,
                    timeline: rec.timeline,
                });
            }
        }
        Ok(out)
    }

    /// Writes `put` and deletes `delete` in one transaction.
    pub fn save(&self, put: &[&TrackedAlert], delete: &[String]) -> Result<(), AlertStoreError> {
        if put.is_empty() && delete.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write().map_err(fail("begin write"))?;
        {
            let mut table = tx.open_table(ALERTS).map_err(fail("open table"))?;
            for a in put {
                let rec = pb::GetAlertResponse {
                    alert: Some(a.alert.clone()),
                    timeline: a.timeline.clone(),
                };
                table
                    .insert(a.alert.id.as_str(), rec.encode_to_vec().as_slice())
                    .map_err(fail("write"))?;
            }
            for id in delete {
                table.remove(id.as_str()).map_err(fail("delete"))?;
            }
        }
        tx.commit().map_err(fail("commit"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let a = TrackedAlert {
            alert: pb::Alert {
                id: "00aa".into(),
                rule: "disk_full".into(),
                state: pb::AlertState::Firing as i32,
                fired_at_unix_nano: 42,
                ..Default::default()
            },
            timeline: vec![pb::AlertTransition {
                time_unix_nano: 42,
                ..Default::default()
            }],
        };
        {
            let s = AlertStore::open(dir.path()).unwrap();
            s.save(&[&a], &[]).unwrap();
        }
        let s = AlertStore::open(dir.path()).unwrap();
        assert_eq!(s.load().unwrap(), vec![a]);
        s.save(&[], &["00aa".to_string()]).unwrap();
        assert!(s.load().unwrap().is_empty());
    }
}
