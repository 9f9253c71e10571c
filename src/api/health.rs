//! grpc.health.v1.Health, as etcd registers it: the server as a whole
//! (service name "") is SERVING while the member runs; any other name is
//! unknown (NOT_FOUND for Check, SERVICE_UNKNOWN for Watch), as grpc-go's
//! health server answers. Like etcd, leader loss does not change it.

use std::pin::Pin;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::proto::grpc_health::health_check_response::ServingStatus;
use crate::proto::grpc_health::health_server::Health;
use crate::proto::grpc_health::{HealthCheckRequest, HealthCheckResponse};

#[derive(Default)]
pub struct HealthService;

fn status(service: &str) -> ServingStatus {
    if service.is_empty() {
        ServingStatus::Serving
    } else {
        ServingStatus::ServiceUnknown
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        match status(&request.get_ref().service) {
            ServingStatus::ServiceUnknown => Err(Status::not_found("unknown service")),
            s => Ok(Response::new(HealthCheckResponse { status: s as i32 })),
        }
    }

    type WatchStream = WatchStream;

    /// The status now; the stream then stays open (the status never
    /// changes while the member serves).
    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let first = HealthCheckResponse {
            status: status(&request.get_ref().service) as i32,
        };
        let stream = tokio_stream::StreamExt::chain(
            tokio_stream::once(Ok::<_, Status>(first)),
            tokio_stream::pending(),
        );
        Ok(Response::new(Box::pin(stream)))
    }
}
