//! Generates the orchestrator gRPC client (and the server the tests stand in with) from
//! `proto/orchestrator.proto`. The .proto is parsed by `protox`, in Rust, so building needs no
//! `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTO: &str = "proto/orchestrator.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    let descriptors = protox::compile([PROTO], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // SandboxConfig carries envd_access_token: it gets a hand-written Debug that omits it.
        .skip_debug([".SandboxConfig"])
        .compile_fds(descriptors)?;
    Ok(())
}
