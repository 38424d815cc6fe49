//! The rules and templates built into the binary (`src/assets.rs`) are embedded file by file,
//! and the compiler only tracks the files that existed at the last build. Watching the
//! directories makes adding or removing a rule file rebuild the crate too.
fn main() {
    for path in ["rules", "templates", "trapline.yml"] {
        println!("cargo::rerun-if-changed={path}");
    }
}
