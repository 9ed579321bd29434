//! `crds/` must be exactly what `kubetrail crd` prints.

#[test]
fn committed_crds_match_the_rust_types() {
    let generated = kubetrail::api::crds_yaml().expect("rendering CRDs");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/kubetrail.yaml");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        generated == committed,
        "crds/kubetrail.yaml is out of date: run `cargo run -- crd > crds/kubetrail.yaml`"
    );
}

#[test]
fn chart_crds_are_the_generated_ones() {
    let generated = kubetrail::api::crds_yaml().expect("rendering CRDs");
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/kubetrail/crds/kubetrail.yaml"
    );
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        generated == committed,
        "charts/kubetrail/crds/kubetrail.yaml is out of date: run `cargo run -- crd > charts/kubetrail/crds/kubetrail.yaml`"
    );
}
