//! Model prices (per million tokens), from the config file's price table or given with a
//! model; nodes meter spend with them.

use super::ControlPlane;
use crate::domain::Price;
use crate::error::ServiceError;

impl ControlPlane {
    pub async fn list_prices(&self) -> Result<Vec<(String, Price)>, ServiceError> {
        Ok(self.store.list_prices().await?)
    }

    /// Sets a model's price (from the config file's price table).
    pub async fn set_price(&self, alias: &str, price: Price) -> Result<(), ServiceError> {
        self.store.upsert_price(alias, price).await?;
        Ok(())
    }
}

/// Whether `price` meters anything: a model without a price (or priced at zero) is refused
/// by the nodes wherever a budget applies, since its spend could not grow.
fn priced(price: Option<&Price>) -> bool {
    price.is_some_and(|p| p.input_per_mtok > 0.0 || p.output_per_mtok > 0.0)
}

impl ControlPlane {
    /// The aliases among `aliases` (every alias when `None`) that have no price while a
    /// budget applies to them: a budget on the model itself, or on a virtual key, a subject
    /// or the gateway (which may reach any model). Requests to them are refused wherever
    /// such a budget applies.
    pub(super) async fn unpriced_under_budget(
        &self,
        aliases: Option<&[String]>,
    ) -> Result<Vec<String>, ServiceError> {
        use crate::domain::PolicyTarget;
        let policies = self.store.list_policies().await?;
        let budgeted = |alias: &str| {
            policies.iter().any(|p| {
                p.limits.max_budget_micros > 0
                    && match &p.target {
                        PolicyTarget::Model(a) => a == alias,
                        _ => true,
                    }
            })
        };
        let prices = self.store.list_prices().await?;
        let mut out = Vec::new();
        for m in self.store.list_models().await? {
            if aliases.is_some_and(|a| !a.contains(&m.alias)) {
                continue;
            }
            let price = prices.iter().find(|(a, _)| *a == m.alias).map(|(_, p)| p);
            if !priced(price) && budgeted(&m.alias) {
                out.push(m.alias);
            }
        }
        Ok(out)
    }

    /// Logs, and returns as text for the audit record, the warning that `aliases` have no
    /// price under a budget (empty when there is nothing to warn about).
    pub(super) fn unpriced_warning(context: &str, aliases: &[String]) -> String {
        if aliases.is_empty() {
            return String::new();
        }
        let list = aliases.join(", ");
        tracing::warn!(
            models = %list,
            "{context}: a budget applies to models without a price; the nodes refuse \
             their requests under that budget until a price is set"
        );
        format!("warning: unpriced models under a budget (requests refused): {list}")
    }
}
