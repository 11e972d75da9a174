//! Compiles `nodewatch/v1/*.proto` without `protoc`: protox parses the files into
//! a descriptor set, tonic-prost-build generates messages and services from it,
//! and the encoded set is kept for gRPC server reflection.

use std::path::PathBuf;

use prost::Message as _;

const PROTOS: &[&str] = &[
    "nodewatch/v1/host.proto",
    "nodewatch/v1/system.proto",
    "nodewatch/v1/disk.proto",
    "nodewatch/v1/net.proto",
    "nodewatch/v1/process.proto",
    "nodewatch/v1/syscall.proto",
    "nodewatch/v1/batch.proto",
    "nodewatch/v1/alert.proto",
    "nodewatch/v1/ingest.proto",
    "nodewatch/v1/query.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=nodewatch");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }

    let fds = protox::compile(PROTOS, ["."])?;
    std::fs::write(
        out_dir.join("nodewatch_descriptor.bin"),
        fds.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        // Serialize lets the CLI print any message as JSON for scripts.
        .type_attribute(".nodewatch.v1", "#[derive(serde::Serialize)]")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
