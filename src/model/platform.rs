//! Platforms (`os/arch[/variant]`) and the one rule for matching them, used by every place
//! that picks a manifest from an index: base images, docker-archive output, `index create`
//! selectors, copy filters. Also the one test for attestation entries, which buildx lists in
//! an index beside the images with platform `unknown/unknown`.

use crate::model::descriptor::Descriptor;
/// The platform type lives with the descriptor that carries it; its rules live here.
pub use crate::model::descriptor::Platform;

/// Annotation buildx puts on attestation manifests in an index (`attestation-manifest`).
pub const ANNOTATION_DOCKER_REFERENCE_TYPE: &str = "vnd.docker.reference.type";

impl Platform {
    /// This machine's platform in OCI spelling (`linux/amd64`, `linux/arm64/v8`, ...): what a
    /// build targets and an index entry is picked for when no platform is given.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        let variant = (arch == "arm64").then(|| "v8".to_string());
        let os = std::env::consts::OS.to_string();
        Platform { architecture: arch.to_string(), os, os_version: None, os_features: None, variant, features: None }
    }

    /// Whether an image for `have` serves a request for `self`: same os and architecture, and
    /// the same variant when `self` names one. Variants are normalized as containerd does:
    /// `arm64/v8` is plain `arm64`, so `linux/arm64/v8` and `linux/arm64` match either way.
    pub fn matches(&self, have: &Platform) -> bool {
        let variant = |p: &Platform| match (p.architecture.as_str(), p.variant.as_deref()) {
            ("arm64", Some("v8")) => None,
            (_, v) => v.map(str::to_string),
        };
        self.os == have.os
            && self.architecture == have.architecture
            && (self.variant.is_none() || variant(self) == variant(have))
    }

    /// Whether the index entry `d` is an image for this platform (attestations never are).
    pub fn matches_entry(&self, d: &Descriptor) -> bool {
        !is_attestation(d) && d.platform.as_ref().is_some_and(|have| self.matches(have))
    }

    /// Parse a comma-separated list, e.g. `linux/amd64,linux/arm64`; `None` if any is not
    /// `os/arch[/variant]`.
    pub fn parse_list(s: &str) -> Option<Vec<Platform>> {
        s.split(',').map(str::trim).filter(|p| !p.is_empty()).map(Platform::parse).collect()
    }

    /// Parse `os/arch[/variant]`, e.g. `linux/arm64/v8`.
    pub fn parse(s: &str) -> Option<Platform> {
        let mut it = s.split('/');
        let os = it.next().filter(|x| !x.is_empty())?.to_string();
        let architecture = it.next().filter(|x| !x.is_empty())?.to_string();
        let variant = it.next().map(str::to_string);
        if it.next().is_some() {
            return None;
        }
        Some(Platform { architecture, os, os_version: None, os_features: None, variant, features: None })
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Whether the index entry `d` is an attestation (buildx's provenance/SBOM manifests), not an
/// image: it carries `vnd.docker.reference.type`, or the platform `unknown/unknown`.
pub fn is_attestation(d: &Descriptor) -> bool {
    d.annotations.contains_key(ANNOTATION_DOCKER_REFERENCE_TYPE)
        || d.platform.as_ref().is_some_and(|p| p.os == "unknown" && p.architecture == "unknown")
}

/// Annotation buildx puts on an attestation manifest entry: the digest of the image it is about.
pub const ANNOTATION_DOCKER_REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";

/// The image the attestation entry `d` is about (`vnd.docker.reference.digest`), if it names one.
pub fn attested_image(d: &Descriptor) -> Option<crate::model::digest::Digest> {
    if !is_attestation(d) {
        return None;
    }
    d.annotations.get(ANNOTATION_DOCKER_REFERENCE_DIGEST).and_then(|v| v.parse().ok())
}

/// The one rule for narrowing an index's entries: the images `keep_image` keeps, and the
/// attestation manifests of exactly those images (an attestation naming no image, or an image
/// that was dropped, goes). Order is kept.
pub fn select_entries(entries: &[Descriptor], keep_image: impl Fn(&Descriptor) -> bool) -> Vec<&Descriptor> {
    let kept: std::collections::HashSet<&crate::model::digest::Digest> =
        entries.iter().filter(|d| !is_attestation(d) && keep_image(d)).map(|d| &d.digest).collect();
    entries
        .iter()
        .filter(|d| match is_attestation(d) {
            false => kept.contains(&d.digest),
            true => attested_image(d).is_some_and(|img| kept.contains(&img)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_parse() {
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert!(Platform::parse("linux").is_none());
        assert_eq!(Platform::parse_list("linux/amd64, linux/arm64").unwrap().len(), 2);
        assert!(Platform::parse_list("linux/amd64,bad").is_none());
    }

    #[test]
    fn one_matching_rule() {
        let p = |s| Platform::parse(s).unwrap();
        assert!(p("linux/arm64").matches(&p("linux/arm64/v8")));
        assert!(p("linux/arm64/v8").matches(&p("linux/arm64")));
        assert!(p("linux/arm/v7").matches(&p("linux/arm/v7")));
        assert!(!p("linux/arm/v7").matches(&p("linux/arm/v6")));
        assert!(p("linux/arm").matches(&p("linux/arm/v6")));
        assert!(!p("linux/amd64").matches(&p("linux/arm64")));
        let att =
            Descriptor::of_bytes("x", b"").with_annotation(ANNOTATION_DOCKER_REFERENCE_TYPE, "attestation-manifest");
        assert!(is_attestation(&att));
    }

    #[test]
    fn attestations_follow_their_images() {
        let img = |arch: &str| {
            let mut d = Descriptor::of_bytes(crate::model::media::OCI_MANIFEST, arch.as_bytes());
            d.platform = Platform::parse(&format!("linux/{arch}"));
            d
        };
        let att = |of: &Descriptor| {
            let mut d = Descriptor::of_bytes(crate::model::media::OCI_MANIFEST, of.digest.to_string().as_bytes())
                .with_annotation(ANNOTATION_DOCKER_REFERENCE_TYPE, "attestation-manifest")
                .with_annotation(ANNOTATION_DOCKER_REFERENCE_DIGEST, of.digest.to_string());
            d.platform = Platform::parse("unknown/unknown");
            d
        };
        let (amd, arm) = (img("amd64"), img("arm64"));
        let entries = vec![amd.clone(), arm.clone(), att(&amd), att(&arm)];
        let amd64 = Platform::parse("linux/amd64").unwrap();
        let kept = select_entries(&entries, |d| amd64.matches_entry(d));
        assert_eq!(kept, vec![&entries[0], &entries[2]]);
        assert_eq!(select_entries(&entries, |_| true).len(), 4);
        assert!(select_entries(&entries, |_| false).is_empty());
    }
}
