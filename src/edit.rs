//! Image edits without a rebuild (`hoist mutate`, crane's `mutate`, `regctl image mod`): new
//! config fields and manifest annotations. An [`ImageEdit`] is applied by the one conversion
//! path of a copy ([`crate::copy::convert`]) to every image manifest of the graph (each image
//! of an index; `--platform` narrows the copy to some), so the edited image is copied like any
//! other: its layers are untouched (kept, mounted or skipped at the destination), only the
//! config, the manifest and the indexes above them are new, and the report lists each digest
//! that changed.

use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::model::descriptor::Descriptor;
use crate::model::digest::Digest;

/// A layer `hoist append` adds to each image: already compressed into a local file (made by
/// [`crate::copy::convert::prepare_layer_blocking`]), which the copy uploads once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewLayer {
    /// The compressed blob on disk.
    pub path: PathBuf,
    /// Its descriptor, with the OCI media type of its compression.
    pub desc: Descriptor,
    /// Digest of its uncompressed tar.
    pub diff_id: Digest,
    /// What the history entry says (`hoist append FILE`).
    pub created_by: String,
}

/// What to change in each image (empty: nothing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageEdit {
    /// `config.Env` entries set (an existing `K=` entry is replaced in place).
    pub env: Vec<(String, String)>,
    /// `config.Labels` set.
    pub labels: Vec<(String, String)>,
    /// Manifest annotations set.
    pub annotations: Vec<(String, String)>,
    /// `config.Entrypoint`.
    pub entrypoint: Option<Vec<String>>,
    /// `config.Cmd`.
    pub cmd: Option<Vec<String>>,
    /// `config.User`.
    pub user: Option<String>,
    /// `config.WorkingDir`.
    pub workdir: Option<String>,
    /// `config.ExposedPorts` added (`8080/tcp`; a bare number is TCP).
    pub exposed_ports: Vec<String>,
    /// `config.StopSignal`.
    pub stop_signal: Option<String>,
    /// The config's `created` (RFC 3339).
    pub created: Option<String>,
    /// Layers added on top (`hoist append`), with their diff_ids and history entries.
    pub layers: Vec<NewLayer>,
    /// `hoist rebase`: the old base's layers swapped for the new base's.
    pub rebase: Option<crate::rebase::Rebase>,
    /// `hoist flatten`: every layer squashed into one, in this compression.
    pub flatten: Option<crate::layer::codec::Compression>,
}

/// `KEY=VALUE` of a flag (`what` names it in the error).
pub fn parse_key_value(what: &str, s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(Error::Usage(format!("{what} {s:?}: expected KEY=VALUE"))),
    }
}

/// An entrypoint or command: a JSON array (`["sh","-c","echo hi"]`), or words separated by
/// commas as crane takes them (`sh,-c,echo hi`). An empty string clears it.
pub fn parse_list(what: &str, s: &str) -> Result<Vec<String>> {
    if s.trim_start().starts_with('[') {
        return serde_json::from_str(s)
            .map_err(|e| Error::Usage(format!("{what} {s:?}: not a JSON array of strings: {e}")));
    }
    if s.is_empty() {
        return Ok(Vec::new());
    }
    Ok(s.split(',').map(str::to_string).collect())
}

/// An exposed port as the config keys it: `PORT/PROTO`, TCP when no protocol is given.
pub fn parse_port(s: &str) -> Result<String> {
    let (port, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    let ok_port = port.parse::<u16>().is_ok()
        || port.split_once('-').is_some_and(|(a, b)| a.parse::<u16>().is_ok() && b.parse::<u16>().is_ok());
    if !ok_port || !matches!(proto, "tcp" | "udp" | "sctp") {
        return Err(Error::Usage(format!("--exposed-port {s:?}: expected PORT[/tcp|udp|sctp]")));
    }
    Ok(format!("{port}/{proto}"))
}

/// `--created`: `now` (the current time) or an RFC 3339 timestamp.
pub fn parse_created(s: &str) -> Result<String> {
    if s == "now" {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        return Ok(crate::model::time::rfc3339(secs));
    }
    crate::model::time::parse_rfc3339(s).map(|_| s.to_string()).ok_or_else(|| {
        Error::Usage(format!("--created {s:?}: expected now or an RFC 3339 time (2024-01-02T03:04:05Z)"))
    })
}

impl ImageEdit {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == ImageEdit::default()
    }

    /// Whether it changes the config (else only the manifest).
    pub fn edits_config(&self) -> bool {
        ImageEdit { annotations: Vec::new(), ..self.clone() } != ImageEdit::default()
    }

    /// Apply the config changes to an image config's JSON (other fields kept in their order).
    /// `Err`: why the JSON cannot take them (the caller names the config in a
    /// [`Error::Malformed`]).
    pub fn apply_to_config(&self, config: &mut Value) -> std::result::Result<(), String> {
        let root = config.as_object_mut().ok_or("image config is not a JSON object")?;
        if let Some(c) = &self.created {
            root.insert("created".into(), Value::from(c.clone()));
        }
        let cfg = object_field(root, "config")?;
        if !self.env.is_empty() {
            let env = list_field(cfg, "Env")?;
            for (k, v) in &self.env {
                let entry = Value::from(format!("{k}={v}"));
                let prefix = format!("{k}=");
                match env.iter_mut().find(|e| e.as_str().is_some_and(|s| s.starts_with(&prefix) || s == k)) {
                    Some(e) => *e = entry,
                    None => env.push(entry),
                }
            }
        }
        if !self.labels.is_empty() {
            let labels = object_field(cfg, "Labels")?;
            for (k, v) in &self.labels {
                labels.insert(k.clone(), Value::from(v.clone()));
            }
        }
        if !self.exposed_ports.is_empty() {
            let ports = object_field(cfg, "ExposedPorts")?;
            for p in &self.exposed_ports {
                ports.insert(p.clone(), Value::Object(Map::new()));
            }
        }
        let strings = |v: &[String]| Value::Array(v.iter().cloned().map(Value::from).collect());
        if let Some(e) = &self.entrypoint {
            cfg.insert("Entrypoint".into(), if e.is_empty() { Value::Null } else { strings(e) });
        }
        if let Some(c) = &self.cmd {
            cfg.insert("Cmd".into(), if c.is_empty() { Value::Null } else { strings(c) });
        }
        for (key, value) in [("User", &self.user), ("WorkingDir", &self.workdir), ("StopSignal", &self.stop_signal)] {
            if let Some(v) = value {
                cfg.insert(key.into(), Value::from(v.clone()));
            }
        }
        if !self.layers.is_empty() {
            let rootfs = object_field(root, "rootfs")?;
            rootfs.entry("type").or_insert_with(|| Value::from("layers"));
            let ids = list_field(rootfs, "diff_ids")?;
            ids.extend(self.layers.iter().map(|l| Value::from(l.diff_id.to_string())));
            let history = list_field(root, "history")?;
            for l in &self.layers {
                let mut h = Map::new();
                if let Some(c) = &self.created {
                    h.insert("created".into(), Value::from(c.clone()));
                }
                h.insert("created_by".into(), Value::from(l.created_by.clone()));
                history.push(Value::Object(h));
            }
        }
        Ok(())
    }

    /// Apply the annotations to an image manifest's JSON. `Err`: why it cannot take them.
    pub fn apply_to_manifest(&self, manifest: &mut Value) -> std::result::Result<(), String> {
        if self.annotations.is_empty() {
            return Ok(());
        }
        let root = manifest.as_object_mut().ok_or("manifest is not a JSON object")?;
        let a = object_field(root, "annotations")?;
        for (k, v) in &self.annotations {
            a.insert(k.clone(), Value::from(v.clone()));
        }
        Ok(())
    }

    /// What it changes, for the report.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let mut add = |n: usize, what: &str| {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        };
        add(self.env.len(), "env");
        add(self.labels.len(), "label(s)");
        add(self.annotations.len(), "annotation(s)");
        add(self.exposed_ports.len(), "exposed port(s)");
        add(self.layers.len(), "layer(s) appended");
        if let Some(r) = &self.rebase {
            parts.push(format!("rebased onto {}", r.new.name.clone().unwrap_or_else(|| r.new.digest.to_string())));
        }
        if self.flatten.is_some() {
            parts.push("flattened".into());
        }
        for (set, what) in [
            (self.entrypoint.is_some(), "entrypoint"),
            (self.cmd.is_some(), "cmd"),
            (self.user.is_some(), "user"),
            (self.workdir.is_some(), "workdir"),
            (self.stop_signal.is_some(), "stop signal"),
            (self.created.is_some(), "created"),
        ] {
            if set {
                parts.push(what.to_string());
            }
        }
        format!("edited: {}", parts.join(", "))
    }
}

fn list_field<'a>(obj: &'a mut Map<String, Value>, key: &str) -> std::result::Result<&'a mut Vec<Value>, String> {
    let v = obj.entry(key).or_insert_with(|| Value::Array(Vec::new()));
    if v.is_null() {
        *v = Value::Array(Vec::new());
    }
    v.as_array_mut().ok_or_else(|| format!("image config's {key} is not a list"))
}

fn object_field<'a>(
    obj: &'a mut Map<String, Value>,
    key: &str,
) -> std::result::Result<&'a mut Map<String, Value>, String> {
    let v = obj.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if v.is_null() {
        *v = Value::Object(Map::new());
    }
    v.as_object_mut().ok_or_else(|| format!("{key} is not an object"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_edits_replace_in_place_and_keep_other_fields() {
        let mut c: Value = serde_json::from_str(
            r#"{"architecture":"amd64","config":{"Env":["PATH=/bin","A=1"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        let e = ImageEdit {
            env: vec![("A".into(), "2".into()), ("B".into(), "x=y".into())],
            labels: vec![("l".into(), "v".into())],
            entrypoint: Some(parse_list("--entrypoint", r#"["/app","--flag"]"#).unwrap()),
            cmd: Some(parse_list("--cmd", "").unwrap()),
            user: Some("1000:1000".into()),
            exposed_ports: vec![parse_port("8080").unwrap()],
            created: Some(parse_created("2024-01-02T03:04:05Z").unwrap()),
            ..ImageEdit::default()
        };
        e.apply_to_config(&mut c).unwrap();
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"architecture":"amd64","config":{"Env":["PATH=/bin","A=2","B=x=y"],"Cmd":null,"Labels":{"l":"v"},"ExposedPorts":{"8080/tcp":{}},"Entrypoint":["/app","--flag"],"User":"1000:1000"},"rootfs":{"type":"layers","diff_ids":[]},"created":"2024-01-02T03:04:05Z"}"#
        );
        assert!(e.edits_config());
        assert!(parse_key_value("--env", "=x").is_err());
        assert!(parse_port("80/icmp").is_err());
        assert!(parse_created("yesterday").is_err());
    }
}
