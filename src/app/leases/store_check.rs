//! A check this replica could not answer from its leases, sent to the store: asking for
//! leases where they ran out when its configs are hot, keeping what was granted.

use crate::app::App;
use crate::limits::CompiledConfig;
use crate::store::{Amounts, CheckOutcome, Store, StoreError};
use std::sync::Arc;
use std::time::Instant;

/// The store's answer to a check this replica could not answer from its leases: with
/// leases on and the configs hot, a check that also asks for leases where they ran out,
/// and keeps what it was granted.
pub async fn store_check<S: Store>(
    app: &App<S>,
    configs: &[Arc<CompiledConfig>],
    amounts: Amounts,
    dry_run: bool,
) -> Result<CheckOutcome, StoreError> {
    let refs: Vec<&CompiledConfig> = configs.iter().map(|c| &**c).collect();
    let leases = &app.leases;
    let ask = match !dry_run && leases.on() {
        true => {
            crate::metrics_handles::lease_checks(false).increment(1);
            leases.ask(configs, amounts, app.local.replicas())
        }
        false => None,
    };
    let Some(ask) = ask else {
        return app.store.check(&refs, amounts, dry_run).await;
    };
    let sent = Instant::now();
    let (outcome, granted) = app.store.check_leasing(&refs, amounts, &ask).await?;
    leases.take(configs, amounts, sent, &outcome, &granted);
    Ok(outcome)
}
