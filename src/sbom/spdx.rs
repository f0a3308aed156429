//! SPDX 2.3 JSON (<https://spdx.github.io/spdx-spec/v2.3/>): the document describes the image
//! as a `CONTAINER` package that `CONTAINS` each package found; a package whose database lists
//! its files is `filesAnalyzed` and `CONTAINS` those files (each with the SHA-1 SPDX requires).
//! Licenses that are not on the SPDX list are `LicenseRef-`s with their text under
//! `hasExtractedLicensingInfos`. Keys in a fixed order, no random parts: the same scan and
//! creation time give the same bytes.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::model::time::rfc3339;
use crate::sbom::{image_name, license, uuid_from, Purpose, Sbom};

/// in-toto predicate type of an SPDX document (as BuildKit writes it).
pub const PREDICATE_TYPE: &str = "https://spdx.dev/Document";
/// Media type of an SPDX JSON document.
pub const MEDIA_TYPE: &str = "application/spdx+json";

/// `[A-Za-z0-9.-]` only, as SPDX identifiers require.
fn id_part(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect()
}

fn short_hash(s: &str) -> String {
    use sha2::Digest as _;
    hex::encode(&sha2::Sha256::digest(s.as_bytes())[..8])
}

/// `Name <mail>` as SPDX's `Person: Name (mail)`.
fn supplier(s: &str) -> String {
    let clean = |x: &str| x.replace(['(', ')', '<', '>'], "").trim().to_string();
    match s.split_once('<') {
        Some((name, rest)) => {
            let mail = rest.split('>').next().unwrap_or("");
            format!("Person: {} ({})", clean(name), clean(mail))
        }
        None => format!("Person: {}", clean(s)),
    }
}

/// The SPDX 2.3 document for `sbom`, created at `created`.
pub fn document(sbom: &Sbom, created: i64) -> Value {
    let name = image_name(sbom);
    let root_id = "SPDXRef-DocumentRoot-Image";
    let mut packages = vec![json!({
        "name": name,
        "SPDXID": root_id,
        "versionInfo": sbom.manifest.digest.to_string(),
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "checksums": [{"algorithm": "SHA256", "checksumValue": sbom.manifest.digest.hex()}],
        "primaryPackagePurpose": match sbom.purpose {
            Purpose::Container => "CONTAINER",
            Purpose::Source => "SOURCE",
        },
    })];
    let mut relationships = vec![
        json!({"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": root_id}),
    ];
    let mut file_ids: BTreeMap<&str, String> = BTreeMap::new();
    let mut refs: BTreeMap<String, String> = BTreeMap::new();
    for p in &sbom.packages {
        let id = format!("SPDXRef-Package-{}-{}-{}", p.kind.as_str(), id_part(&p.name), short_hash(&p.purl));
        let files: Vec<&String> = p.files.iter().filter(|f| sbom.file_sha1.contains_key(f.as_str())).collect();
        let declared = p.license.clone().unwrap_or_else(|| "NOASSERTION".into());
        for r in license::refs_in(&declared) {
            refs.entry(r).or_insert_with(|| p.license_stated.clone().unwrap_or_default());
        }
        let mut pkg = json!({
            "name": p.name,
            "SPDXID": id,
            "versionInfo": p.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": !files.is_empty(),
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": declared,
            "copyrightText": "NOASSERTION",
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": p.purl}],
            "sourceInfo": format!("{} database {}", p.kind.as_str(), p.location),
            "primaryPackagePurpose": "LIBRARY",
        });
        if let Some(s) = &p.supplier {
            pkg["supplier"] = json!(supplier(s));
        }
        packages.push(pkg);
        relationships.push(json!({"spdxElementId": root_id, "relationshipType": "CONTAINS", "relatedSpdxElement": id}));
        for f in files {
            let fid = file_ids.entry(f.as_str()).or_insert_with(|| format!("SPDXRef-File-{}", short_hash(f))).clone();
            relationships.push(json!({"spdxElementId": id, "relationshipType": "CONTAINS", "relatedSpdxElement": fid}));
        }
    }
    let files: Vec<Value> = file_ids
        .iter()
        .map(|(path, id)| {
            json!({
                "fileName": format!(".{path}"),
                "SPDXID": id,
                "checksums": [{"algorithm": "SHA1", "checksumValue": sbom.file_sha1[*path]}],
                "licenseConcluded": "NOASSERTION",
                "copyrightText": "NOASSERTION",
            })
        })
        .collect();
    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": format!(
            "https://spdx.org/spdxdocs/hoist-{}-{}",
            id_part(&name),
            uuid_from(&format!("spdx {} {created}", sbom.manifest.digest))
        ),
        "creationInfo": {
            "created": rfc3339(created),
            "creators": [format!("Tool: hoist-{}", env!("CARGO_PKG_VERSION"))],
            "licenseListVersion": "3.23",
        },
        "packages": packages,
        "files": files,
        "relationships": relationships,
    });
    if !refs.is_empty() {
        doc["hasExtractedLicensingInfos"] = refs
            .into_iter()
            .map(|(id, text)| {
                let text = if text.is_empty() { id.trim_start_matches("LicenseRef-").to_string() } else { text };
                json!({"licenseId": id, "extractedText": text, "name": id.trim_start_matches("LicenseRef-")})
            })
            .collect();
    }
    doc
}
