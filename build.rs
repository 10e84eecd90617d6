//! Gives the shared library its soname, `libsockasync.so.<major>`, so programs linked
//! against it record that name and keep working across compatible upgrades (the ABI policy
//! in README.md says what a major version promises).
//!
//! cargo-c sets the same soname itself from `[package.metadata.capi.library]`; it builds
//! with `--cfg cargo_c`, and then this script stays out of its way.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let built_by_cargo_c = std::env::var_os("CARGO_CFG_CARGO_C").is_some();
    if target_os == "linux" && !built_by_cargo_c {
        let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets the version");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libsockasync.so.{major}");
    }
}
