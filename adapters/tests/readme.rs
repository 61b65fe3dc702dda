//! The README's "Using the library" program is `examples/quickstart.rs`,
//! character for character: CI runs the example, so the README's code is
//! known to build and run.

#[test]
fn readme_program_is_the_quickstart_example() {
    let readme = include_str!("../../README.md");
    let example = include_str!("../examples/quickstart.rs");
    let section = readme
        .split("## Using the library")
        .nth(1)
        .unwrap_or_default();
    let block = section
        .split("```rust\n")
        .nth(1)
        .and_then(|rest| rest.split("```\n").next())
        .unwrap_or_default();
    assert!(
        block == example,
        "README.md's \"Using the library\" block differs from adapters/examples/quickstart.rs; \
         copy the example into the README"
    );
}
