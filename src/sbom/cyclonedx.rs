//! CycloneDX 1.6 JSON (<https://cyclonedx.org/docs/1.6/json/>): the image is the metadata
//! component (`container`), each package a `library` component with its purl, licenses (one
//! SPDX id as `license.id`, anything else as an `expression`) and the files it owns as
//! `evidence.occurrences`. The serial number is derived from the image digest and creation
//! time, so the same scan gives the same bytes.

use serde_json::{json, Value};

use crate::model::time::rfc3339;
use crate::sbom::{image_name, license, uuid_from, Purpose, Sbom};

/// in-toto predicate type of a CycloneDX document.
pub const PREDICATE_TYPE: &str = "https://cyclonedx.org/bom";
/// Media type of a CycloneDX JSON document.
pub const MEDIA_TYPE: &str = "application/vnd.cyclonedx+json";

/// The CycloneDX 1.6 document for `sbom`, created at `created`.
pub fn document(sbom: &Sbom, created: i64) -> Value {
    let name = image_name(sbom);
    let mut components = Vec::new();
    let mut refs = Vec::new();
    for p in &sbom.packages {
        let mut c = json!({
            "type": "library",
            "bom-ref": p.purl,
            "name": p.name,
            "version": p.version,
            "purl": p.purl,
        });
        if let Some(l) = &p.license {
            c["licenses"] =
                if license::is_single_id(l) { json!([{"license": {"id": l}}]) } else { json!([{"expression": l}]) };
        }
        if let Some(s) = &p.supplier {
            c["supplier"] = json!({"name": s});
        }
        c["properties"] = json!([
            {"name": "hoist:package:type", "value": p.kind.as_str()},
            {"name": "hoist:package:location", "value": p.location},
        ]);
        if !p.files.is_empty() {
            c["evidence"] = json!({"occurrences": p.files.iter().map(|f| json!({"location": f})).collect::<Vec<_>>()});
        }
        refs.push(p.purl.clone());
        components.push(c);
    }
    let mut image = json!({
        "type": match sbom.purpose {
            Purpose::Container => "container",
            Purpose::Source => "application",
        },
        "bom-ref": "image",
        "name": name,
        "version": sbom.manifest.digest.to_string(),
        "hashes": [{"alg": "SHA-256", "content": sbom.manifest.digest.hex()}],
    });
    if let Some(d) = &sbom.distro {
        image["properties"] = json!([{"name": "hoist:distro", "value": format!("{}-{}", d.id, d.version_id.clone().unwrap_or_default())}]);
    }
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": format!("urn:uuid:{}", uuid_from(&format!("cyclonedx {} {created}", sbom.manifest.digest))),
        "version": 1,
        "metadata": {
            "timestamp": rfc3339(created),
            "tools": {"components": [{"type": "application", "name": "hoist", "version": env!("CARGO_PKG_VERSION")}]},
            "component": image,
        },
        "components": components,
        "dependencies": [{"ref": "image", "dependsOn": refs}],
    })
}
