//! Generates the etcd v3 API (prost messages + tonic services) from proto/.
//! Uses `$PROTOC` if set, else the protoc vendored by `protoc-bin-vendored`,
//! so a fresh machine needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: build scripts are single-threaded; nothing else reads the
        // environment concurrently.
        unsafe { std::env::set_var("PROTOC", protoc) };
    }
    let protos = [
        "proto/mvccpb/kv.proto",
        "proto/authpb/auth.proto",
        "proto/etcdserverpb/rpc.proto",
        "proto/v3lockpb/v3lock.proto",
        "proto/v3electionpb/v3election.proto",
        "proto/concordpb/internal.proto",
        "proto/concordpb/peer.proto",
        "proto/grpc/health/v1/health.proto",
    ];
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = out.join("descriptors.bin");
    tonic_build::configure()
        .build_client(true)
        .build_server(true)
        .file_descriptor_set_path(&descriptors)
        .compile_protos(&protos, &["proto"])?;
    // The JSON gateway's mapping, as grpc-gateway's default marshaler
    // (jsonpb with OrigName): proto field names, 64-bit integers as
    // strings, bytes as base64, enums by name, default values left out;
    // unknown fields in requests are ignored, as the gateway ignores them.
    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(&descriptors)?)?
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .build(&[
            ".mvccpb",
            ".authpb",
            ".etcdserverpb",
            ".v3lockpb",
            ".v3electionpb",
        ])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
