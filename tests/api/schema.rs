//! schema.graphql в репозитории совпадает со схемой, которую строит сервер.

#[test]
fn schema_graphql_is_in_sync_with_the_built_schema() {
    let built = eventlog::api::graphql::build_schema(None, true).sdl();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");
    let file = std::fs::read_to_string(path).expect("schema.graphql exists");
    assert!(
        built == file,
        "schema.graphql is out of date: run `cargo run -- export-schema` and commit the result"
    );
}
