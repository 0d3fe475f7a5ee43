//! Compiles the public token contract (`sdk/proto`) with `protox`, a pure-Rust protobuf
//! compiler, so that building hongbao needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = "../sdk/proto";
    let proto_file = "../sdk/proto/hongbao/token/v1/token.proto";
    println!("cargo:rerun-if-changed={proto_file}");
    let descriptors = protox::compile([proto_file], [proto_root])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
