//! The image the tests build (`scripts/oci-image.sh`, no container engine) and the
//! `Dockerfile` users build agree: entrypoint, command, user, ports, binary path,
//! and the name the chart pulls by default.

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The Dockerfile's final stage: (USER, EXPOSE ports, ENTRYPOINT, CMD, COPY target).
fn dockerfile() -> (String, Vec<String>, Vec<String>, Vec<String>, String) {
    let text = std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).unwrap();
    let last = text.rsplit_once("\nFROM ").map(|(_, s)| s).expect("a final FROM");
    let mut user = String::new();
    let mut ports = Vec::new();
    let mut entrypoint = Vec::new();
    let mut cmd = Vec::new();
    let mut copied = String::new();
    for line in last.lines() {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let json = || serde_json::from_str::<Vec<String>>(rest.trim()).expect("exec form");
        match word {
            "USER" => user = rest.trim().to_string(),
            "EXPOSE" => ports.extend(rest.split_whitespace().map(|p| format!("{p}/tcp"))),
            "ENTRYPOINT" => entrypoint = json(),
            "CMD" => cmd = json(),
            "COPY" => copied = rest.split_whitespace().last().unwrap_or_default().to_string(),
            _ => {}
        }
    }
    (user, ports, entrypoint, cmd, copied)
}

fn blob(dir: &Path, digest: &str) -> serde_json::Value {
    let path = dir
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn oci_image_script_and_dockerfile_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("image.tar");
    // Any dynamically linked binary shows the layout; the real one is too big to pack here.
    let out = Command::new("bash")
        .arg(Path::new(ROOT).join("scripts/oci-image.sh"))
        .arg("/bin/true")
        .arg(&archive)
        .output()
        .expect("running scripts/oci-image.sh");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = tmp.path().join("x");
    std::fs::create_dir_all(&dir).unwrap();
    let untar = Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&dir)
        .status()
        .unwrap();
    assert!(untar.success());

    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let entry = &index["manifests"][0];
    let manifest = blob(&dir, entry["digest"].as_str().unwrap());
    let config = blob(&dir, manifest["config"]["digest"].as_str().unwrap());
    let c = &config["config"];

    let (user, ports, entrypoint, cmd, copied) = dockerfile();
    assert_eq!(c["User"], user.as_str());
    assert_eq!(c["Entrypoint"], serde_json::json!(entrypoint));
    assert_eq!(c["Cmd"], serde_json::json!(cmd));
    assert_eq!(entrypoint[0], copied, "the entrypoint is the copied binary");
    let mut image_ports: Vec<String> = c["ExposedPorts"].as_object().unwrap().keys().cloned().collect();
    image_ports.sort();
    let mut ports = ports;
    ports.sort();
    assert_eq!(image_ports, ports);

    // The layer holds the binary where the entrypoint says.
    let layer = dir.join("blobs/sha256").join(
        manifest["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:"),
    );
    let list = Command::new("tar").arg("-tf").arg(&layer).output().unwrap();
    let names = String::from_utf8_lossy(&list.stdout);
    assert!(
        names.lines().any(|n| n.trim_start_matches('.') == entrypoint[0]),
        "{} in the layer:\n{names}",
        entrypoint[0]
    );

    // Named as the chart pulls it by default: image.repository and the appVersion.
    let values = std::fs::read_to_string(Path::new(ROOT).join("charts/kubetrail/values.yaml")).unwrap();
    let repo = values
        .lines()
        .find_map(|l| l.trim().strip_prefix("repository: "))
        .expect("image.repository")
        .trim();
    let chart = std::fs::read_to_string(Path::new(ROOT).join("charts/kubetrail/Chart.yaml")).unwrap();
    let app_version = chart
        .lines()
        .find_map(|l| l.strip_prefix("appVersion: "))
        .expect("appVersion")
        .trim()
        .trim_matches('"');
    assert_eq!(
        entry["annotations"]["io.containerd.image.name"],
        format!("{repo}:{app_version}").as_str()
    );
}
