//! Argument parsing and dispatch: the global flags become one [`settings::Settings`], each
//! command group lives in its own file and calls the library. Data goes to stdout, progress
//! and logs to stderr; [`exit`] maps errors to exit codes.

mod artifact;
mod build;
mod copy;
mod creds;
mod edit;
mod exit;
mod inspect;
mod layout;
mod login;
mod merge;
mod meta;
mod model;
mod modelsig;
mod ops;
mod out;
mod progress;
mod referrers;
mod sbom;
mod settings;
mod sides;
mod store;
mod sync;
mod tags;
mod trust;
mod usage;

use std::sync::Arc;

use clap::{Parser, Subcommand};
use hoist::copy::CopyOptions;
use hoist::error::{Error, Result};
use hoist::transport::registry::Client;

use creds::{credential_map, registry_of, registry_of_output, Scope, SideCreds};
use progress::CliProgress;
use settings::{Global, Settings};

#[derive(Parser)]
#[command(
    name = "hoist",
    version = meta::LONG_VERSION,
    about = "Build, store and ship OCI images and artifacts without a daemon",
    long_about = "Build, store and ship OCI images and artifacts without a daemon.\n\nhoist builds images from a Dockerfile and its context (`hoist build .`, RUN under runc or crun) or from a hoist.toml build file, and writes them to any --output: a registry (type=registry, type=image), an OCI or docker tarball (type=oci, type=docker), a layout (type=local-layout), containerd or podman (type=containerd, type=podman), or the image's filesystem (type=local, type=tar). It copies images, indexes and OCI artifacts byte for byte between registries, layouts and archives, and packs models (ModelPack, ModelKit) and CNAB bundles.",
    after_help = "Examples:\n  hoist copy oci:examples/sample-layout:multi localhost:5000/demo:v1\n  hoist tags localhost:5000/demo\n  hoist build . --output type=registry,name=localhost:5000/app:v1   # the Dockerfile in .\n  hoist build -f examples/hoist.toml --output type=oci,dest=img.tar\n\nhoist COMMAND --help shows each command's options and examples."
)]
pub(crate) struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

// One Command is parsed per process; `build`'s flags (outputs, signing, attestations) make
// its variant the largest, which costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Copy an image, index or artifact between any two of registry, layout and archive.
    #[command(
        after_help = "Examples:\n  hoist copy oci:./layout:v1 localhost:5000/demo:v1\n  hoist copy localhost:5000/demo:v1 oci-archive:demo.tar:v1\n  hoist --platform linux/arm64 copy docker://localhost:5000/demo:v1 oci:./arm:v1"
    )]
    Copy(copy::CopyArgs),
    /// Push an OCI layout (all of it, or one tag) to a registry, byte for byte.
    #[command(
        after_help = "Examples:\n  hoist push ./layout localhost:5000/demo\n  hoist push ./layout:v1 localhost:5000/demo:v1"
    )]
    Push(copy::PushArgs),
    /// Pull a registry reference into an OCI layout (or any destination).
    #[command(
        after_help = "Examples:\n  hoist pull localhost:5000/demo:v1 ./layout\n  hoist pull localhost:5000/demo:v1 oci-archive:demo.tar"
    )]
    Pull(copy::PullArgs),
    /// Edit images without a rebuild (crane mutate): config fields and annotations; layers untouched.
    #[command(
        after_help = "Examples:\n  hoist mutate localhost:5000/app:v1 localhost:5000/app:v1-debug --env DEBUG=1 --cmd '[\"sh\"]'\n  hoist mutate oci:./layout:v1 oci:./layout:v2 --label org.example.team=web --created now\n  hoist --platform linux/amd64 mutate localhost:5000/app:v1 oci:./amd64:v1 --user 1000"
    )]
    Mutate(edit::MutateArgs),
    /// Add layer tarballs on top of images (crane append): new diff_ids and history entries.
    #[command(
        after_help = "Examples:\n  hoist append localhost:5000/app:v1 localhost:5000/app:v2 ca-certs.tar.gz\n  hoist append oci:./layout:v1 oci:./layout:v2 patch.tar --compression zstd"
    )]
    Append(edit::AppendArgs),
    /// Move images onto a new base (crane rebase): the old base's layers swapped for the new base's.
    #[command(
        after_help = "Examples:\n  hoist rebase localhost:5000/app:v1 localhost:5000/app:v1-new --old-base localhost:5000/base:1 --new-base localhost:5000/base:2\n  hoist rebase localhost:5000/app:v1 localhost:5000/app:v2    # bases from the image's base annotations\n  hoist rebase oci:./app:v1 oci:./app:v2 --old-base oci:./base:old --new-base oci:./base:new"
    )]
    Rebase(edit::RebaseArgs),
    /// Squash every layer of images into one (crane flatten): whiteouts applied, history collapsed.
    #[command(
        after_help = "Examples:\n  hoist flatten localhost:5000/app:v1 localhost:5000/app:v1-flat\n  hoist flatten oci:./layout:v1 oci:./layout:flat --compression zstd"
    )]
    Flatten(edit::FlattenArgs),
    /// Show a manifest or index.
    #[command(
        after_help = "Examples:\n  hoist inspect localhost:5000/demo:v1\n  hoist inspect --raw --platform linux/arm64 oci:./layout:v1\n  hoist --platform linux/arm64 inspect --config oci:./layout:v1"
    )]
    Inspect(inspect::InspectArgs),
    /// Print the digest of a manifest or index (with --platform: of that platform's image).
    #[command(
        after_help = "Examples:\n  hoist digest localhost:5000/demo:v1\n  hoist --platform linux/arm64 digest oci:./layout:v1"
    )]
    Digest(inspect::DigestArgs),
    /// List tags of a repository or layout.
    #[command(
        after_help = "Examples:\n  hoist tags localhost:5000/demo\n  hoist tags oci:./layout\n  hoist --format json tags oci-archive:demo.tar"
    )]
    Tags(tags::TagsArgs),
    /// Add tags to a manifest in its repository (no blob moves).
    #[command(
        after_help = "Examples:\n  hoist tag localhost:5000/demo:v1 stable v1.0\n  hoist tag localhost:5000/demo@sha256:… latest"
    )]
    Tag(ops::TagArgs),
    /// Remove one tag; the manifest and every other tag pointing at it stay.
    #[command(
        after_help = "Examples:\n  hoist untag localhost:5000/demo:old\n  hoist --format json untag localhost:5000/demo:rc1"
    )]
    Untag(ops::UntagArgs),
    /// Delete a manifest (refused while other tags point at it, unless --force).
    #[command(
        after_help = "Examples:\n  hoist delete localhost:5000/web:v1             # its only tag: manifest and tag go\n  hoist delete --force localhost:5000/demo@sha256:…   # also the tags pointing at it"
    )]
    Delete(ops::DeleteArgs),
    /// List the repositories of a registry (its _catalog API).
    #[command(
        after_help = "Examples:\n  hoist catalog localhost:5000\n  hoist catalog --filter '^team/' localhost:5000"
    )]
    Catalog(ops::CatalogArgs),
    /// Untag or delete a repository's tags by policy (plan printed first; --dry-run changes nothing).
    #[command(
        after_help = "Examples:\n  hoist retention --keep-last 10 --match '^v' --dry-run localhost:5000/demo\n  hoist retention --older-than 90d localhost:5000/demo"
    )]
    Retention(ops::RetentionArgs),
    /// Mirror images between registries and layouts, incrementally (skopeo sync's interface).
    #[command(
        after_help = "Examples:\n  hoist sync --src docker --dest docker localhost:5000/demo localhost:5000/mirror\n  hoist sync --src yaml --dest dir sync.yaml ./airgap\n  hoist sync --src dir --dest docker ./airgap localhost:5000/restored"
    )]
    Sync(sync::SyncArgs),
    /// Store credentials for a registry.
    #[command(
        after_help = "Examples:\n  hoist login localhost:5000 -u alice --password-stdin < password.txt   # or a prompt on a terminal\n  hoist login localhost:5000 -u alice -p secret    # works, with a warning\n  echo \"$PASSWORD\" | hoist login localhost:5000 -u alice --password-stdin"
    )]
    Login(login::LoginArgs),
    /// Remove stored credentials for a registry.
    #[command(after_help = "Examples:\n  hoist logout localhost:5000\n  hoist logout https://localhost:5000/")]
    Logout(login::LogoutArgs),
    /// Maintain a local OCI layout.
    #[command(subcommand)]
    Layout(layout::LayoutCmd),
    /// Build an image from a Dockerfile and its context, or from a hoist.toml build file.
    ///
    /// `hoist build [-f Dockerfile] CONTEXT` builds a Dockerfile as BuildKit does (RUN under runc
    /// or crun); `hoist build -f FILE.toml` (or a hoist.toml in the current directory) builds a
    /// hoist build file (docs/build-file.md). The image goes into the local store, then to each
    /// --output: type=registry or type=image (push), type=oci or type=docker (a tarball),
    /// type=local-layout (an OCI layout), type=containerd, type=podman, or the filesystem alone:
    /// type=local (a directory) or type=tar. The global --platform takes a list here.
    #[command(
        after_help = "Examples:\n  hoist build . --tag app:v1 --output type=registry,name=localhost:5000/app:v1   # ./Dockerfile\n  hoist build -f Dockerfile --build-arg V=1 . --output type=docker,dest=app.tar,name=app:v1\n  hoist build -f examples/hoist.toml --output type=oci,dest=img.tar\n  hoist build -f hoist.toml --platform linux/amd64 --output type=local,dest=./rootfs"
    )]
    Build(build::BuildArgs),
    /// Push or pack OCI artifacts made of files.
    #[command(subcommand)]
    Artifact(artifact::ArtifactCmd),
    /// Pack a model directory as a ModelPack artifact, or unpack one.
    #[command(subcommand)]
    Model(model::ModelCmd),
    /// List the manifests whose subject is REF.
    #[command(
        after_help = "Examples:\n  hoist referrers localhost:5000/demo:v1\n  hoist referrers --artifact-type application/spdx+json oci:./layout:v1"
    )]
    Referrers(referrers::ReferrersArgs),
    /// Generate cosign-compatible signing keys.
    #[command(subcommand)]
    Key(trust::KeyCmd),
    /// Sign an image, index or artifact with a key (cosign's legacy and bundle formats).
    #[command(
        after_help = "Examples:\n  hoist sign --key cosign.key localhost:5000/demo:v1\n  hoist sign --key cosign.key --recursive --signature-format bundle localhost:5000/demo:v1"
    )]
    Sign(trust::SignArgs),
    /// Verify that a key signed an image, index or artifact (exit 5 when not).
    #[command(
        after_help = "Examples:\n  hoist verify --key cosign.pub localhost:5000/demo:v1\n  hoist --format json verify --key cosign.pub oci:./layout:v1"
    )]
    Verify(trust::VerifyArgs),
    /// Sign an in-toto statement about an image (SLSA provenance, SBOM, ...) as cosign attest does.
    #[command(
        after_help = "Examples:\n  hoist attest --key cosign.key --type slsaprovenance1 --predicate prov.json localhost:5000/demo:v1\n  hoist attest --key cosign.key --type spdxjson --predicate sbom.spdx.json --signature-format both oci:./layout:v1"
    )]
    Attest(trust::AttestArgs),
    /// Verify attestations of a type by a key and print their statements (exit 5 when none verifies).
    #[command(
        after_help = "Examples:\n  hoist verify-attestation --key cosign.pub --type slsaprovenance1 localhost:5000/demo:v1\n  hoist --format json verify-attestation --key cosign.pub --type https://example.com/p/v1 oci:./layout:v1"
    )]
    VerifyAttestation(trust::VerifyAttestationArgs),
    /// List the packages of an image (dpkg, apk, Python, npm, Go), as a table, SPDX or CycloneDX.
    #[command(
        after_help = "Examples:\n  hoist sbom localhost:5000/app:v1\n  hoist --format spdx-json sbom oci:./layout:v1 > sbom.spdx.json\n  hoist --format cyclonedx-json --platform linux/arm64 sbom localhost:5000/app:v1"
    )]
    Sbom(sbom::SbomArgs),
    /// Make image indexes from manifests and indexes anywhere (multi-node builds).
    #[command(subcommand)]
    Index(merge::IndexCmd),
    /// Make and read CNAB bundles stored as OCI indexes.
    #[command(subcommand)]
    Bundle(merge::BundleCmd),
    /// Manage the local build store: list, remove, prune.
    #[command(subcommand)]
    Store(store::StoreCmd),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    #[command(
        after_help = "Examples:\n  hoist completion bash > ~/.local/share/bash-completion/completions/hoist\n  hoist completion zsh > ~/.zfunc/_hoist   # with fpath+=(~/.zfunc) in ~/.zshrc\n  hoist completion fish > ~/.config/fish/completions/hoist.fish"
    )]
    Completion(meta::CompletionArgs),
    /// Print the man page, or write one per command into DIR.
    #[command(
        after_help = "Examples:\n  hoist man > hoist.1   # then: man -l hoist.1\n  hoist man ~/.local/share/man/man1"
    )]
    Man(meta::ManArgs),
    /// Print the version, git commit and build date.
    #[command(after_help = "Examples:\n  hoist version\n  hoist --format json version")]
    Version,
}

impl Command {
    /// What a message about the whole command (a timeout) names.
    fn describe(&self) -> String {
        match self {
            Command::Copy(a) => a.describe(),
            Command::Push(a) => a.describe(),
            Command::Pull(a) => a.describe(),
            Command::Mutate(a) => a.describe(),
            Command::Append(a) => a.describe(),
            Command::Rebase(a) => a.describe(),
            Command::Flatten(a) => a.describe(),
            Command::Inspect(a) => format!("inspect {}", a.reference),
            Command::Digest(a) => format!("digest {}", a.reference),
            Command::Tags(a) => format!("tags {}", a.reference),
            Command::Tag(a) => format!("tag {}", a.reference),
            Command::Untag(a) => format!("untag {}", a.reference),
            Command::Delete(a) => format!("delete {}", a.reference),
            Command::Catalog(a) => format!("catalog {}", a.registry),
            Command::Retention(a) => format!("retention {}", a.repository),
            Command::Sync(a) => format!("sync {} {}", a.source, a.destination),
            Command::Referrers(a) => format!("referrers {}", a.reference),
            Command::Key(_) => "key".into(),
            Command::Sign(a) => a.describe(),
            Command::Verify(a) => format!("verify {}", a.reference),
            Command::Attest(a) => format!("attest {}", a.reference),
            Command::VerifyAttestation(a) => format!("verify-attestation {}", a.reference),
            Command::Sbom(a) => format!("sbom {}", a.reference),
            Command::Login(a) => format!("login {}", a.registry),
            Command::Logout(a) => format!("logout {}", a.registry),
            Command::Layout(_) => "layout".into(),
            Command::Build(a) => format!("build -f {}", a.file_shown().display()),
            Command::Artifact(_) => "artifact".into(),
            Command::Model(_) => "model".into(),
            Command::Index(_) => "index create".into(),
            Command::Bundle(_) => "bundle".into(),
            Command::Store(_) => "store".into(),
            Command::Completion(_) => "completion".into(),
            Command::Man(_) => "man".into(),
            Command::Version => "version".into(),
        }
    }

    /// The registries of `--output ...,registry.insecure=true` outputs: plain HTTP allowed there.
    fn insecure_registries(&self) -> Vec<String> {
        let specs: &[String] = match self {
            Command::Build(a) => &a.out.outputs,
            Command::Artifact(artifact::ArtifactCmd::Pack { out, .. })
            | Command::Model(model::ModelCmd::Pack { out, .. }) => &out.outputs,
            Command::Index(c) => c.outputs(),
            _ => &[],
        };
        specs
            .iter()
            .filter_map(|s| hoist::output::parse_output(s).ok())
            .filter(|o| o.insecure)
            .flat_map(|o| o.destinations())
            .filter_map(|(e, _)| match e {
                hoist::transport::Endpoint::Registry(r) => Some(r.registry),
                _ => None,
            })
            .collect()
    }

    /// Every registry this command names on its command line (for `--creds`).
    fn registries(&self) -> Vec<String> {
        let refs = |v: &[&str]| v.iter().filter_map(|s| registry_of(s)).collect::<Vec<_>>();
        let outputs =
            |o: &store::OutputArgs| o.outputs.iter().filter_map(|s| registry_of_output(s)).collect::<Vec<_>>();
        match self {
            Command::Copy(_)
            | Command::Push(_)
            | Command::Pull(_)
            | Command::Mutate(_)
            | Command::Append(_)
            | Command::Rebase(_)
            | Command::Flatten(_)
            | Command::Sync(_) => vec![],
            Command::Inspect(a) => refs(&[&a.reference]),
            Command::Digest(a) => refs(&[&a.reference]),
            Command::Tags(a) => refs(&[&a.reference]),
            Command::Tag(a) => refs(&[&a.reference]),
            Command::Untag(a) => refs(&[&a.reference]),
            Command::Delete(a) => refs(&[&a.reference]),
            Command::Retention(a) => refs(&[&a.repository]),
            Command::Catalog(a) => vec![a.registry.trim_end_matches('/').to_string()],
            Command::Referrers(a) => refs(&[&a.reference]),
            Command::Sign(a) => refs(&[&a.reference]),
            Command::Verify(a) => refs(&[&a.reference]),
            Command::Attest(a) => refs(&[&a.reference]),
            Command::VerifyAttestation(a) => refs(&[&a.reference]),
            Command::Key(_) => vec![],
            Command::Sbom(a) => refs(&[&a.reference]),
            Command::Login(a) => vec![a.host()],
            Command::Logout(_) | Command::Layout(_) => vec![],
            Command::Store(_) | Command::Completion(_) | Command::Man(_) | Command::Version => vec![],
            Command::Build(a) => {
                let base = a.base.clone().or_else(|| {
                    a.toml_file().and_then(|f| hoist::image::BuildFile::load(&f).ok()).and_then(|s| s.base)
                });
                let mut v = base.as_deref().and_then(registry_of).into_iter().collect::<Vec<_>>();
                v.extend(outputs(&a.out));
                v
            }
            Command::Artifact(artifact::ArtifactCmd::Push { reference, common, .. }) => {
                let mut v = refs(&[reference]);
                v.extend(common.subject.as_deref().and_then(registry_of));
                v
            }
            Command::Artifact(artifact::ArtifactCmd::Pack { common, out, .. }) => {
                let mut v = outputs(out);
                v.extend(common.subject.as_deref().and_then(registry_of));
                v
            }
            Command::Model(c) => c.registries(),
            Command::Index(c) => c.registries(),
            Command::Bundle(c) => c.registries(),
        }
    }
}

/// Parse the command line, run the command, return the exit code.
pub fn run() -> i32 {
    out::install_broken_pipe_hook();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage::report(e),
    };
    let json = cli.global.format == settings::Format::Json;
    let events = cli.global.progress == settings::ProgressFlag::Json && !cli.global.quiet;
    let settings = Settings::from_global(&cli.global);
    let level = match cli.global.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOIST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("hoist={level}")));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
    let settings = match settings {
        Ok(s) => s,
        Err(e) => return fail(&e, json, events),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hoist: cannot start runtime: {e}");
            return exit::OTHER;
        }
    };
    let timeout = settings.timeout;
    let what = cli.command.describe();
    let result = rt.block_on(async move {
        // Ctrl-C (SIGINT) ends the command as an error does: the command's future is dropped,
        // so writers that did not finish remove their temp files; complete blobs stay (a
        // re-run continues from them). Exit 130, as a shell reports SIGINT.
        let work = async move {
            tokio::select! {
                r = dispatch(settings, cli.command) => r,
                _ = tokio::signal::ctrl_c() => Err(Error::Interrupted),
            }
        };
        match timeout {
            // Dropping the command's future on time-out cleans up as an error does: writers
            // that did not finish remove their partial files when dropped.
            Some(t) => tokio::time::timeout(t, work)
                .await
                .unwrap_or_else(|_| Err(Error::Timeout { what: what.to_string(), after: t })),
            None => work.await,
        }
    });
    if result.is_err() {
        // A command that failed or was dropped (Ctrl-C, --timeout) cancels the upload
        // sessions it left open, so the registry keeps no half-uploaded blobs.
        if let Some(client) = CLIENT.get() {
            let n = rt.block_on(client.cancel_open_uploads());
            if n > 0 {
                tracing::info!(sessions = n, "upload sessions cancelled");
            }
        }
    }
    match result {
        Ok(code) => code,
        Err(e) => fail(&e, json, events),
    }
}

/// The command's registry client, for the clean-up after a failure (see [`run`]).
static CLIENT: std::sync::OnceLock<Arc<Client>> = std::sync::OnceLock::new();

/// Print `e` (control characters escaped: messages may quote a registry; as JSON on stdout
/// too with `--format json`) and give its exit code. A write to a closed stdout pipe is no
/// failure: status 0, nothing printed.
fn fail(e: &Error, json: bool, events: bool) -> i32 {
    if out::is_broken_pipe(e) {
        return exit::OK;
    }
    let failure = out::Failure::from_error(e);
    failure.print(json, events);
    failure.code
}

/// A reference in any transport, opened and resolved (a registry reference without tag
/// means `latest`).
pub(crate) async fn resolve_any(
    ctx: &Ctx,
    reference: &str,
) -> Result<(hoist::transport::Endpoint, Box<dyn hoist::transport::Source>, hoist::Descriptor)> {
    let ep = hoist::transport::Endpoint::from_user_input(reference)?;
    let src = hoist::transport::open_source(&ep, &ctx.client)?;
    let mut desc = hoist::copy::plan::resolve(&ep, src.as_ref()).await?;
    desc.annotations.remove(hoist::model::media::ANNOTATION_REF_NAME);
    Ok((ep, src, desc))
}

/// What every command gets: the settings, the registry client, progress output.
pub(crate) struct Ctx {
    pub settings: Settings,
    pub client: Arc<Client>,
    pub progress: CliProgress,
}

impl Ctx {
    /// Copy options from the global flags.
    pub fn copy_options(&self) -> CopyOptions {
        self.settings.copy.clone()
    }
    /// Results as JSON on stdout.
    pub fn json(&self) -> bool {
        self.settings.json()
    }
    /// `--quiet`: no notes or progress on stderr.
    pub fn quiet(&self) -> bool {
        matches!(self.settings.progress, progress::Mode::Quiet)
    }
}

async fn dispatch(settings: Settings, command: Command) -> Result<i32> {
    let ends = match &command {
        Command::Copy(a) => Some(a.ends()?),
        Command::Push(a) => Some(a.ends()?),
        Command::Pull(a) => Some(a.ends()?),
        Command::Mutate(a) => Some(a.ends()?),
        Command::Append(a) => Some(a.ends_for_creds()?),
        Command::Rebase(a) => Some(a.ends_for_creds()?),
        Command::Flatten(a) => Some(a.ends()?),
        _ => None,
    };
    let credentials = match (&ends, &command) {
        (Some(e), _) => copy_credentials(&settings, e)?,
        (None, Command::Sync(a)) => credential_map(settings.creds.as_deref(), &a.creds, &a.scope())?,
        (None, other) => {
            credential_map(settings.creds.as_deref(), &SideCreds::default(), &Scope::Hosts(other.registries()))?
        }
    };
    let mut registry_options = settings.registry_options(credentials);
    if let Some(e) = &ends {
        e.tls.apply(&mut registry_options, &e.scope())?;
    }
    registry_options.insecure.extend(command.insecure_registries());
    let client = Client::new(registry_options)?;
    if matches!(settings.format, settings::Format::SpdxJson | settings::Format::CyclonedxJson)
        && !matches!(command, Command::Sbom(_))
    {
        return Err(Error::Usage(
            "--format spdx-json and cyclonedx-json are for `hoist sbom`; other commands take text or json".into(),
        ));
    }
    let _ = CLIENT.set(client.clone());
    let ctx = Ctx { progress: CliProgress::new(settings.progress), client, settings };
    let code = run_command(&ctx, command).await?;
    ctx.progress.summary();
    Ok(code)
}

async fn run_command(ctx: &Ctx, command: Command) -> Result<i32> {
    match command {
        Command::Copy(a) => copy::run(ctx, &a.ends()?).await,
        Command::Push(a) => copy::run(ctx, &a.ends()?).await,
        Command::Pull(a) => copy::run(ctx, &a.ends()?).await,
        Command::Mutate(a) => copy::run(ctx, &a.ends()?).await,
        Command::Append(a) => {
            let dir = tempfile::Builder::new()
                .prefix(".hoist-append-")
                .tempdir()
                .map_err(|e| hoist::error::Error::io(std::env::temp_dir(), e))?;
            let ends = a.ends(dir.path())?;
            copy::run(ctx, &ends).await
        }
        Command::Rebase(a) => copy::run(ctx, &a.ends(&ctx.client).await?).await,
        Command::Flatten(a) => copy::run(ctx, &a.ends()?).await,
        Command::Inspect(a) => inspect::run(ctx, a).await,
        Command::Digest(a) => inspect::digest(ctx, a).await,
        Command::Tags(a) => tags::run(ctx, a).await,
        Command::Tag(a) => ops::tag(ctx, a).await,
        Command::Untag(a) => ops::untag(ctx, a).await,
        Command::Delete(a) => ops::delete(ctx, a).await,
        Command::Catalog(a) => ops::catalog(ctx, a).await,
        Command::Retention(a) => ops::retention(ctx, a).await,
        Command::Sync(a) => sync::run(ctx, a).await,
        Command::Login(a) => login::login(ctx, a).await,
        Command::Logout(a) => login::logout(ctx, a).await,
        Command::Layout(cmd) => layout::run(ctx, cmd).await,
        Command::Build(args) => build::run(ctx, args).await,
        Command::Artifact(cmd) => artifact::run(ctx, cmd).await,
        Command::Model(cmd) => model::run(ctx, cmd).await,
        Command::Referrers(args) => referrers::run(ctx, args).await,
        Command::Key(cmd) => trust::run_key(ctx, cmd).await,
        Command::Sign(args) => trust::run_sign(ctx, args).await,
        Command::Verify(args) => trust::run_verify(ctx, args).await,
        Command::Attest(args) => trust::run_attest(ctx, args).await,
        Command::VerifyAttestation(args) => trust::run_verify_attestation(ctx, args).await,
        Command::Sbom(args) => sbom::run(ctx, args).await,
        Command::Index(cmd) => merge::run_index(ctx, cmd).await,
        Command::Bundle(cmd) => merge::run_bundle(ctx, cmd).await,
        Command::Store(cmd) => store::run_store(ctx, cmd).await,
        Command::Completion(args) => meta::completion(args),
        Command::Man(args) => meta::man(ctx, args),
        Command::Version => meta::version(ctx),
    }
}

/// Whether hoist has the command `name` (hints point to commands only where they exist).
pub(crate) fn has_command(name: &str) -> bool {
    use clap::CommandFactory;
    Cli::command().find_subcommand(name).is_some()
}

/// The credentials of a copy: each side's own, or `--creds` when one registry is involved.
fn copy_credentials(settings: &Settings, ends: &copy::Ends) -> Result<creds::CredentialMap> {
    credential_map(settings.creds.as_deref(), &ends.creds, &ends.scope())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every command's help: a one-line purpose, every argument described, 2-4 examples for
    /// each command that runs something; global options under their own heading.
    #[test]
    fn every_command_has_a_purpose_described_arguments_and_examples() {
        fn walk(cmd: &clap::Command, path: &str, problems: &mut Vec<String>) {
            let name = format!("{path} {}", cmd.get_name()).trim().to_string();
            if cmd.get_about().is_none() {
                problems.push(format!("{name}: no one-line purpose"));
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() {
                    problems.push(format!("{name}: argument {id} has no description"));
                }
                if arg.is_global_set() && arg.get_help_heading() != Some("Global options") {
                    problems.push(format!("{name}: global option {id} is not under \"Global options\""));
                }
            }
            let subs: Vec<&clap::Command> = cmd.get_subcommands().filter(|s| s.get_name() != "help").collect();
            if subs.is_empty() {
                let examples = cmd.get_after_help().map(|h| h.to_string()).unwrap_or_default();
                let n = examples.lines().filter(|l| l.trim_start().starts_with("hoist ")).count();
                if !examples.starts_with("Examples:") || !(2..=4).contains(&n) {
                    problems.push(format!("{name}: {n} examples (want 2-4 after \"Examples:\")"));
                }
            }
            for s in subs {
                walk(s, &name, problems);
            }
        }
        let cmd = super::Cli::command();
        cmd.clone().debug_assert();
        let mut problems = Vec::new();
        walk(&cmd, "", &mut problems);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}
