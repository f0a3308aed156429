//! Which files of a model an operation takes: `--include GLOB` / `--exclude GLOB`, matched
//! against the file's path relative to the model root. Globs are shell-like (`*`, `?`,
//! `[abc]`, `{a,b}`, `**`); `*` also crosses `/`, so `*.safetensors` matches every
//! safetensors file at any depth (as `huggingface_hub`'s `allow_patterns` do).

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// Include and exclude globs. No include glob means every file; an exclude glob wins.
#[derive(Clone, Debug, Default)]
pub struct FileSelector {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

/// Compile globs into one set (`None` when there are none).
pub fn glob_set(globs: &[String]) -> Result<Option<GlobSet>> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for g in globs {
        let g = g.strip_prefix("./").unwrap_or(g);
        b.add(Glob::new(g).map_err(|e| Error::Usage(format!("invalid glob {g:?}: {e}")))?);
    }
    b.build().map(Some).map_err(|e| Error::Usage(format!("globs: {e}")))
}

impl FileSelector {
    /// A selector from `--include` and `--exclude` globs.
    pub fn new(include: &[String], exclude: &[String]) -> Result<FileSelector> {
        Ok(FileSelector { include: glob_set(include)?, exclude: glob_set(exclude)? })
    }

    /// Whether every file is taken.
    pub fn is_all(&self) -> bool {
        self.include.is_none() && self.exclude.is_none()
    }

    /// Whether the file at relative path `rel` is taken.
    pub fn matches(&self, rel: &str) -> bool {
        let rel = rel.strip_prefix("./").unwrap_or(rel);
        self.include.as_ref().is_none_or(|g| g.is_match(rel)) && !self.exclude.as_ref().is_some_and(|g| g.is_match(rel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_and_exclude() {
        let s = FileSelector::new(&["*.safetensors".into(), "config.json".into()], &["*-00002-*".into()]).unwrap();
        assert!(s.matches("model.safetensors") && s.matches("sub/a.safetensors") && s.matches("config.json"));
        assert!(!s.matches("README.md") && !s.matches("model-00002-of-00002.safetensors"));
        assert!(FileSelector::default().matches("anything"));
        assert!(FileSelector::new(&["[".into()], &[]).is_err());
    }
}
