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
