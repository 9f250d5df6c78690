//! csi-sanity (csi-test, built by `make testenv`) against overcast-csi, with
//! volumes in filesystem and in block mode: every spec that applies to the
//! driver's capabilities passes, and each one skipped is skipped for a
//! reason recorded here. Needs root (loop devices, mounts).

mod common;

use common::{Driver, entries, loop_devices_under, mounts_under};
use std::process::Command;

/// The specs csi-sanity skips, by its skip message, and why that is right.
const SKIPS: &[(&str, &str)] = &[
    (
        "ControllerPublishVolume not supported",
        "node-local volumes are not attached by a controller",
    ),
    (
        "ControllerUnpublishVolume not supported",
        "node-local volumes are not attached by a controller",
    ),
    (
        "Controller Publish, UnpublishVolume not supported",
        "node-local volumes are not attached by a controller",
    ),
    (
        "ControllerModifyVolume not supported",
        "volumes have no mutable parameters (VolumeAttributesClass)",
    ),
    (
        "Modify volume not supported",
        "volumes have no mutable parameters (VolumeAttributesClass)",
    ),
    (
        "Modify Volume not supported",
        "volumes have no mutable parameters (VolumeAttributesClass)",
    ),
    (
        "GroupControllerService not supported",
        "group snapshots are not offered",
    ),
    (
        "ControllerExpandVolume not supported",
        "volumes grow on their node (NodeExpandVolume, which csi-sanity tests); no controller-side resizer can reach a node-local volume",
    ),
    (
        "GetSnapshot not supported",
        "GetSnapshot is newer than CSI v1.9.0, the spec kubelet v1.34 speaks",
    ),
    (
        "SNAPSHOT_ACCESSIBILITY_CONSTRAINTS not supported",
        "newer than CSI v1.9.0",
    ),
    (
        "ControllerGetVolumeHealth not supported",
        "newer than CSI v1.9.0 (v1.9 has VolumeCondition, which is served)",
    ),
    (
        "ControllerListVolumeHealth not supported",
        "newer than CSI v1.9.0 (v1.9 has VolumeCondition, which is served)",
    ),
    (
        "NodeGetVolumeHealth not supported",
        "newer than CSI v1.9.0 (v1.9 has VolumeCondition, which is served)",
    ),
    (
        "NodeGetStorageHealth not supported",
        "newer than CSI v1.9.0",
    ),
];

fn sanity(access_type: &str) {
    // xfs by default: csi-sanity cannot name a filesystem, and a mounted ext4
    // cannot grow without CAP_SYS_RESOURCE, which this machine's root lacks
    // (a privileged node plugin has it); xfs grows with CAP_SYS_ADMIN.
    let driver = Driver::start_with_args(&["--default-fs-type", "xfs"]);
    let sanity = overcast_testenv::bin_dir().join("csi-sanity");
    assert!(
        sanity.is_file(),
        "{} is missing: run `make testenv`",
        sanity.display()
    );
    let report = driver.dir.path().join("report.json");
    let out = Command::new(&sanity)
        .arg(format!("--csi.endpoint={}", driver.socket().display()))
        .arg(format!(
            "--csi.mountdir={}",
            driver.dir.path().join("target").display()
        ))
        .arg(format!(
            "--csi.stagingdir={}",
            driver.dir.path().join("staging").display()
        ))
        .arg(format!("--csi.testvolumeaccesstype={access_type}"))
        // 300 MiB volumes (xfs's smallest) grown to 400 MiB.
        .args([
            "--csi.testvolumesize=314572800",
            "--csi.testvolumeexpandsize=419430400",
        ])
        .arg(format!("--ginkgo.json-report={}", report.display()))
        .arg("--ginkgo.no-color")
        .output()
        .expect("csi-sanity runs");
    let output = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap_or_else(|e| {
            panic!(
                "csi-sanity wrote no report ({e}):\n{output}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        }))
        .expect("report is JSON");
    let mut passed = 0;
    let mut problems = Vec::new();
    for spec in report
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|suite| suite["SpecReports"].as_array().into_iter().flatten())
    {
        let name = format!(
            "{} {}",
            spec["ContainerHierarchyTexts"]
                .as_array()
                .map(|t| t
                    .iter()
                    .filter_map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" "))
                .unwrap_or_default(),
            spec["LeafNodeText"].as_str().unwrap_or_default()
        );
        let message = spec["Failure"]["Message"].as_str().unwrap_or_default();
        match spec["State"].as_str().unwrap_or_default() {
            "passed" => passed += 1,
            // csi-test marks one pagination spec pending itself.
            "pending" => {}
            // Suite-level nodes (BeforeSuite etc.) carry no name.
            "skipped" if SKIPS.iter().any(|(skip, _)| message == *skip) => {}
            state => problems.push(format!("{state}: {name}: {message}")),
        }
    }
    assert!(
        problems.is_empty(),
        "csi-sanity ({access_type}):\n{}\n\ndriver log:\n{}",
        problems.join("\n"),
        driver.log()
    );
    assert!(
        passed >= 60,
        "only {passed} specs passed: did csi-sanity run?\n{output}"
    );
    assert!(out.status.success(), "csi-sanity failed:\n{output}");

    // csi-sanity cleans up after each spec; what it asked for is all gone.
    assert!(
        mounts_under(driver.dir.path()).is_empty(),
        "mounts left: {:?}",
        mounts_under(driver.dir.path())
    );
    assert!(
        loop_devices_under(driver.dir.path()).is_empty(),
        "loop devices left"
    );
    for sub in ["volumes", "snapshots", "staging", "deleting"] {
        assert_eq!(
            entries(&driver.state(), sub),
            Vec::<String>::new(),
            "{sub} left behind"
        );
    }
}

#[test]
fn csi_sanity_passes_with_filesystem_volumes() {
    sanity("mount");
}

#[test]
fn csi_sanity_passes_with_block_volumes() {
    sanity("block");
}
