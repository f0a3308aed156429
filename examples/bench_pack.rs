//! Benchmark driver for the builders until the CLI grows `build`/`model pack`:
//!
//! ```text
//! bench_pack model DIR LAYOUT             # ModelPack artifact, raw layers (build_model)
//! bench_pack layer DIR LAYOUT COMPRESSION # one-layer image of DIR (build_image), e.g. gzip:1, zstd:3
//! ```
//!
//! Creates LAYOUT if needed, tags the result `bench` and prints the root digest.

use std::process::ExitCode;

use hoist::build::{build_image, build_model, Compression, ImageSpec, LayerEntry, LayerSpec, ModelSpec};
use hoist::layout::Layout;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args).await {
        Ok(digest) => {
            println!("{digest}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench_pack: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &[String]) -> Result<String, Box<dyn std::error::Error>> {
    let usage = "usage: bench_pack model DIR LAYOUT | bench_pack layer DIR LAYOUT COMPRESSION";
    let open =
        |p: &str| if std::path::Path::new(p).join("oci-layout").exists() { Layout::open(p) } else { Layout::create(p) };
    match args {
        [mode, dir, layout] if mode == "model" => {
            let layout = open(layout)?;
            let mut spec = ModelSpec::new(dir);
            spec.tag = Some("bench".into());
            spec.source_date_epoch = Some(0);
            Ok(build_model(&layout, &spec).await?.digest.to_string())
        }
        [mode, dir, layout, compression] if mode == "layer" => {
            let layout = open(layout)?;
            let spec = ImageSpec {
                tag: Some("bench".into()),
                compression: compression.parse::<Compression>()?,
                layers: vec![LayerSpec { files: vec![LayerEntry::new(dir, "/")], comment: None }],
                source_date_epoch: Some(0),
                ..Default::default()
            };
            Ok(build_image(&layout, &spec, None).await?.digest.to_string())
        }
        _ => Err(usage.into()),
    }
}
