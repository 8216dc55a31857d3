//! By replica ratio: the canary's pods carry the stable Service's selector
//! labels, so its share is its pods among all (set when the canary
//! Deployment is scaled, see `canary::share`); nothing here to patch.

use async_trait::async_trait;

use super::Router;
use crate::targets::kubernetes::error::KubeError;

pub struct Replicas;

#[async_trait]
impl Router for Replicas {
    async fn set_weight(&self, _weight: u8) -> Result<(), KubeError> {
        Ok(())
    }

    fn weighted(&self) -> bool {
        false
    }
}
