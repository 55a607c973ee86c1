//! kura's own endpoints for its proofs of solvency (not part of Binance's API):
//!
//! - `GET /kura/v1/solvency` (public): `{"report": …, "epochs": [ … ]}`, the newest
//!   published report (or epoch `epoch`'s, with `?epoch=N`) and a short entry per
//!   published epoch, oldest first. `report` is absent while none is published.
//! - `GET /kura/v1/solvency/proof` (signed, USER_DATA): the caller's own inclusion
//!   proofs, one per asset, in the newest epoch (or epoch `epoch`). Only the customer
//!   the key belongs to: the account comes from the key, never from a parameter.
//!
//! The report and proof formats are the node's (`kura solvency`, and
//! `tools/verify/por_verify.py` checks them). An unknown `epoch` is -1130 on the
//! parameter; asking for a proof before any epoch is published is -1130 "No solvency
//! report has been published yet.".

use super::{authenticate, json, Fail, HttpResult, Req};
use crate::auth::Permission;
use crate::backend::{Backend, Solvency};
use crate::errors::{Failure, ParamError};
use axum::extract::State;
use serde_json::json;
use std::sync::Arc;

fn bad_epoch() -> Fail {
    ParamError::InvalidValue {
        name: "epoch".to_owned(),
    }
    .into()
}

/// Runs `f` on the solvency store on a blocking thread; an error is logged and answered
/// as an internal error.
async fn blocking<R: Send + 'static>(
    store: Arc<dyn Solvency>,
    f: impl FnOnce(&dyn Solvency) -> Result<R, String> + Send + 'static,
) -> Result<R, Fail> {
    let joined = tokio::task::spawn_blocking(move || f(store.as_ref())).await;
    match joined {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "api: solvency files unreadable");
            Err(Failure::Internal.into())
        }
        Err(e) => {
            tracing::error!(error = %e, "api: solvency task failed");
            Err(Failure::Internal.into())
        }
    }
}

pub(super) async fn report<B: Backend>(State(b): State<B>, req: Req) -> HttpResult {
    let params = req.params()?;
    let epoch = params.u64_opt("epoch")?;
    let Some(store) = b.solvency() else {
        return match epoch {
            Some(_) => Err(bad_epoch()),
            None => json(json!({ "epochs": [] })),
        };
    };
    let (report, epochs) = blocking(store, move |s| Ok((s.report(epoch)?, s.epochs()?))).await?;
    match report {
        Some(report) => json(json!({ "report": report, "epochs": epochs })),
        None if epoch.is_some() => Err(bad_epoch()),
        None => json(json!({ "epochs": epochs })),
    }
}

pub(super) async fn proof<B: Backend>(State(b): State<B>, req: Req) -> HttpResult {
    let caller = authenticate(&b, &req, Permission::Read).await?;
    let epoch = caller.params.u64_opt("epoch")?;
    let store = b.solvency().ok_or(Failure::NoSolvencyReport)?;
    let user = caller.user;
    let (published, proofs) = blocking(store, move |s| {
        let published = !s.epochs()?.is_empty();
        let proofs = if published {
            s.proofs(user, epoch)?
        } else {
            None
        };
        Ok((published, proofs))
    })
    .await?;
    match proofs {
        Some(p) => json(p),
        None if !published => Err(Failure::NoSolvencyReport.into()),
        None => Err(bad_epoch()),
    }
}
