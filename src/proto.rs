//! The etcd v3 wire API and concord's internal messages, generated from
//! `proto/` at build time.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}
pub mod authpb {
    tonic::include_proto!("authpb");
}
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}
pub mod concordpb {
    tonic::include_proto!("concordpb");
}
pub mod grpc_health {
    tonic::include_proto!("grpc.health.v1");
}
