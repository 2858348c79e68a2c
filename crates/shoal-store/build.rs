//! Nothing to build: `protoc-bin-vendored` is a build dependency only so that cargo has
//! fetched a protoc (run through `scripts/protoc`) before etcd-client's build script needs it.
fn main() {
    let _ = protoc_bin_vendored::protoc_bin_path;
}
