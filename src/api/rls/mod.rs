//! Envoy's rate limit service (`envoy.service.ratelimit.v3.RateLimitService`) over gRPC,
//! on `--grpc-listen`.
//!
//! One `ShouldRateLimit` request is one check, decided by `app::check` as for
//! `POST /v1/check`. Each descriptor's entries (`model`, `provider`, `virtual_key`,
//! `user`; names from `--rls-*-key`) give a match key; the configs matching any
//! descriptor are checked together, each once, in one store call, all-or-nothing: the
//! request is `OVER_LIMIT` if any limit refuses, and then nothing is consumed (Envoy's
//! "limit on ALL of them", without charging the descriptors that passed for a request
//! that was refused). Each descriptor's status is that of its own most restrictive
//! limit. A descriptor without a model entry is not tollgate's: `OK`.
//!
//! The amount is `hits_addend` (the descriptor's, else the request's, else 1): requests,
//! or, in a token domain (`--rls-token-domains`), tokens recorded as used like
//! `POST /v1/usage`, never refused: a response-phase call (`apply_on_stream_done`)
//! charges the real count, and Envoy enforces it on the next request.

pub mod request;
pub mod response;

use crate::app::App;
use crate::app::check::{Decision, decide};
use crate::app::usage::record;
use crate::limits::MatchKey;
use crate::metrics as m;
use crate::store::{Amounts, Store, UsageDelta};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
pub use request::RlsOptions;
use std::sync::Arc;
use std::time::Instant;
use tonic::{Request, Response, Status};

pub struct Rls<S> {
    app: Arc<App<S>>,
    opts: Arc<RlsOptions>,
}

impl<S: Store> Rls<S> {
    pub fn new(app: Arc<App<S>>, opts: RlsOptions) -> Self {
        Rls {
            app,
            opts: Arc::new(opts),
        }
    }

    pub fn into_service(self) -> RateLimitServiceServer<Self> {
        RateLimitServiceServer::new(self)
    }

    async fn answer(&self, req: &RateLimitRequest) -> Result<RateLimitResponse, Status> {
        let started = Instant::now();
        let parsed = request::parse(req, &self.opts).map_err(Status::invalid_argument)?;
        let mut keys: Vec<MatchKey<'_>> = Vec::with_capacity(parsed.keys.len());
        let known: Vec<Option<usize>> = parsed
            .keys
            .iter()
            .map(|k| {
                k.map(|k| {
                    keys.push(k);
                    keys.len() - 1
                })
            })
            .collect();
        let descriptors = known.len();
        if parsed.tokens {
            if keys.is_empty() {
                return Ok(response::uniform(descriptors, true));
            }
            let delta = UsageDelta {
                tokens: parsed.amount,
                ..Default::default()
            };
            return match record(&self.app, &keys, delta, None).await {
                Ok(_) => Ok(response::uniform(descriptors, true)),
                Err(e) => Err(Status::unavailable(format!("{e}; tokens not recorded"))),
            };
        }
        let amounts = Amounts {
            requests: parsed.amount,
            ..Default::default()
        };
        Ok(
            match decide(&self.app, started, &keys, amounts, false).await {
                Decision::Unlimited => response::uniform(descriptors, true),
                Decision::StoreFailed { allowed, .. } => response::uniform(descriptors, allowed),
                Decision::Checked(checked) => response::from_checked(&checked, &known),
            },
        )
    }
}

#[tonic::async_trait]
impl<S: Store> RateLimitService for Rls<S> {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let result = self.answer(request.get_ref()).await;
        let label = match &result {
            Ok(r) if r.overall_code == response::overall(true) => "ok",
            Ok(_) => "over_limit",
            Err(s) if s.code() == tonic::Code::InvalidArgument => "invalid_argument",
            Err(_) => "unavailable",
        };
        metrics::counter!(m::RLS_REQUESTS, "code" => label).increment(1);
        result.map(Response::new)
    }
}
