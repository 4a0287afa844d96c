//! Compiles `../proto/fekv.proto` (messages, and the gRPC clients and servers) and `../proto/auth.proto`
//! (users, roles, tokens) and `../proto/placement_group.proto` (the replicated placement's members; all
//! three in the same `fekv` package) once for the node and the placement service, which
//! share their types. protoc comes from the `protoc-bin-vendored` crate unless `PROTOC` is set, so a
//! fresh machine needs nothing but cargo.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    println!("cargo:rerun-if-changed=../proto");
    tonic_prost_build::configure().compile_protos(
        &["../proto/fekv.proto", "../proto/auth.proto", "../proto/placement_group.proto"],
        &["../proto"],
    )?;
    Ok(())
}
