//! `shoal image …`: process and VM images in Azure Compute Gallery shape
//! (`galleries/{g}/images/{i}/versions/{v}`), with the bundle uploaded as a blob: a
//! directory for a process image, the kernel/initrd/disk files for a VM image.
//!
//! `image create` is four requests: upload the tar (`POST /shoal/v1/blobs`), then PUT the
//! gallery, the image definition and the version (built by [`create_requests`]).

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use reqwest::header::CONTENT_TYPE;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::bundle::{self, Bundle, BundleError};
use crate::client::{Client, ClientError};
use crate::exec::{self, execute};
use crate::output::{Printer, Table};
use crate::progress::{human_bytes, StatusLine};
use crate::request::{
    compute_path, gallery_path, group_path, image_path, version_path, ApiRequest,
};
use crate::vm_bundle;

/// Where bundles are uploaded (Shoal's own API, not ARM).
pub const BLOBS_PATH: &str = "/shoal/v1/blobs";
/// Bytes per chunk of the upload stream.
const CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone, Subcommand)]
pub enum ImageCommand {
    /// Upload a directory as a new immutable image version, creating the gallery and the
    /// image definition when missing.
    #[command(
        after_help = "Examples:\n  shoal image create -g demo --gallery apps --name web --version 1.0.0 \\\n      --dir examples/web --command ./shoal-web --port 8080\n  \
                            shoal image create -g demo --gallery vms --name tiny --version 1.0.0 --kind vm \\\n      \
                            --kernel out/kernel --initrd out/initrd [--disk out/disk.img] [--cmdline quiet] --port 8080\n\n\
                            Symlinks in DIR are followed: the file they point to is uploaded. A VM image boots\n\
                            its kernel directly (with the initrd, and the disk as /dev/vda), or with only --disk\n\
                            the disk's own bootloader; each instance gets a copy-on-write overlay of the disk.",
        // `--version` names the image version here, as in `az sig image-version`.
        disable_version_flag = true
    )]
    Create(ImageCreate),
    /// List image versions in a resource group, a gallery or one image definition.
    List(ImageList),
    /// Show an image version (or, without --version, the image definition).
    #[command(disable_version_flag = true)]
    Show(ImageShow),
    /// Delete an image version (or, without --version, the image definition).
    #[command(disable_version_flag = true)]
    Delete(ImageDelete),
    /// Publish an image version under a marketplace URN, so `imageReference {publisher,
    /// offer, sku, version}` and `az vmss create --image PUBLISHER:OFFER:SKU:VERSION` (or
    /// an alias such as Ubuntu2204) find it.
    #[command(
        disable_version_flag = true,
        after_help = "Example:\n  shoal image publish -g demo --gallery apps --name web --version 1.0.0 \\\n      --urn Canonical:0001-com-ubuntu-server-jammy:22_04-lts-gen2:1.0.0"
    )]
    Publish(ImagePublish),
}

#[derive(Debug, Clone, Args)]
pub struct ImagePublish {
    #[command(flatten)]
    pub image: ImageDefinition,
    /// The version to publish.
    #[arg(
        long,
        short = 'e',
        alias = "gallery-image-version",
        value_name = "VERSION"
    )]
    pub version: String,
    /// The URN to publish it under: PUBLISHER:OFFER:SKU:VERSION.
    #[arg(long, value_name = "URN")]
    pub urn: String,
}

/// `--resource-group`, `--gallery`, `--name`: one image definition.
#[derive(Debug, Clone, Args)]
pub struct ImageDefinition {
    /// Name of the resource group.
    #[arg(long = "resource-group", short = 'g', value_name = "NAME")]
    pub resource_group: String,
    /// Name of the gallery.
    #[arg(long, short = 'r', alias = "gallery-name", value_name = "GALLERY")]
    pub gallery: String,
    /// Name of the image definition inside the gallery.
    #[arg(
        long = "name",
        short = 'n',
        alias = "gallery-image-definition",
        short_alias = 'i',
        value_name = "IMAGE"
    )]
    pub name: String,
}

/// What runs an image's instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImageKind {
    /// A directory bundle started as a process by the process driver.
    Process,
    /// A virtual machine (kernel + initrd and/or disk) run by QEMU.
    Vm,
}

impl ImageKind {
    fn as_str(self) -> &'static str {
        match self {
            ImageKind::Process => "process",
            ImageKind::Vm => "vm",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ImageCreate {
    #[command(flatten)]
    pub image: ImageDefinition,
    /// Version to create, e.g. 1.0.0. Versions are immutable.
    #[arg(
        long,
        short = 'e',
        alias = "gallery-image-version",
        value_name = "VERSION"
    )]
    pub version: String,
    /// Process images: directory to upload as the image's content (symlinks are followed).
    #[arg(long, value_name = "DIR", required_unless_present_any = ["kernel", "disk"], conflicts_with_all = ["kernel", "initrd", "disk", "cmdline"])]
    pub dir: Option<PathBuf>,
    /// Process images: command that starts an instance, run in its copy of DIR (e.g. ./shoal-web).
    #[arg(long, value_name = "CMD", required_unless_present_any = ["kernel", "disk"])]
    pub command: Option<String>,
    /// VM images: the Linux kernel to boot directly (a bzImage such as /boot/vmlinuz-*, or
    /// an uncompressed vmlinux with a PVH entry, which boots faster without KVM).
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<PathBuf>,
    /// VM images: the initial ramdisk for --kernel.
    #[arg(long, value_name = "FILE", requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// VM images: the root disk (qcow2 or raw); alone, it boots with its own bootloader.
    #[arg(long, value_name = "FILE")]
    pub disk: Option<PathBuf>,
    /// VM images: extra kernel command line for --kernel (Shoal adds console=ttyS0 and
    /// shoal.instance_id=N).
    #[arg(long, value_name = "ARGS", requires = "kernel")]
    pub cmdline: Option<String>,
    /// TCP port the instance listens on; given to it as PORT (for a VM: the guest port).
    #[arg(long, default_value_t = 8080, value_name = "PORT")]
    pub port: u16,
    /// Kind of image.
    #[arg(long, value_enum, default_value_t = ImageKind::Process, value_name = "KIND")]
    pub kind: ImageKind,
    /// Location of the gallery, image and version (default: the resource group's).
    #[arg(long, short = 'l', value_name = "LOCATION")]
    pub location: Option<String>,
    /// Do not wait for the new version to become ready.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ImageList {
    /// Name of the resource group.
    #[arg(long = "resource-group", short = 'g', value_name = "NAME")]
    pub resource_group: String,
    /// Only this gallery (default: every gallery in the group).
    #[arg(long, short = 'r', alias = "gallery-name", value_name = "GALLERY")]
    pub gallery: Option<String>,
    /// Only this image definition (needs --gallery).
    #[arg(
        long = "name",
        short = 'n',
        alias = "gallery-image-definition",
        short_alias = 'i',
        requires = "gallery",
        value_name = "IMAGE"
    )]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ImageShow {
    #[command(flatten)]
    pub image: ImageDefinition,
    /// Version to show (default: show the image definition).
    #[arg(
        long,
        short = 'e',
        alias = "gallery-image-version",
        value_name = "VERSION"
    )]
    pub version: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ImageDelete {
    #[command(flatten)]
    pub image: ImageDefinition,
    /// Version to delete (default: delete the image definition).
    #[arg(
        long,
        short = 'e',
        alias = "gallery-image-version",
        value_name = "VERSION"
    )]
    pub version: Option<String>,
    /// Do not wait for the deletion to finish.
    #[arg(long)]
    pub no_wait: bool,
}

/// The three PUTs of `image create` after the upload: gallery, image definition, version.
pub fn create_requests(
    sub: &str,
    args: &ImageCreate,
    location: &str,
    blob_id: &str,
) -> [ApiRequest; 3] {
    let ImageDefinition {
        resource_group: rg,
        gallery,
        name,
    } = &args.image;
    [
        ApiRequest::write(
            Method::PUT,
            gallery_path(sub, rg, gallery),
            json!({ "location": location, "properties": {} }),
            false,
            Table::Generic,
        ),
        ApiRequest::write(
            Method::PUT,
            image_path(sub, rg, gallery, name),
            json!({
                "location": location,
                "properties": {
                    "osType": "Linux",
                    "osState": "Generalized",
                    "identifier": { "publisher": "shoal", "offer": gallery, "sku": name },
                },
            }),
            false,
            Table::Generic,
        ),
        ApiRequest::write(
            Method::PUT,
            version_path(sub, rg, gallery, name, &args.version),
            json!({
                "location": location,
                "properties": { "shoal": shoal_properties(args, blob_id) },
            }),
            args.no_wait,
            Table::ImageVersions,
        ),
    ]
}

/// `properties.shoal` of the new version.
fn shoal_properties(args: &ImageCreate, blob_id: &str) -> Value {
    let mut shoal = json!({
        "kind": args.kind.as_str(),
        "port": args.port,
        "blobId": blob_id,
    });
    match args.kind {
        ImageKind::Process => {
            shoal["command"] = json!(args.command.clone().unwrap_or_default());
        }
        ImageKind::Vm => {
            for (name, given) in [
                (vm_bundle::KERNEL, args.kernel.is_some()),
                (vm_bundle::INITRD, args.initrd.is_some()),
                (vm_bundle::DISK, args.disk.is_some()),
            ] {
                if given {
                    shoal[name] = json!(name);
                }
            }
            if let Some(cmdline) = &args.cmdline {
                shoal["cmdline"] = json!(cmdline);
            }
        }
    }
    shoal
}

impl ImageCreate {
    /// What clap cannot say: a VM image takes files, a process image a directory.
    pub fn check(&self) -> Result<(), String> {
        let vm_files = self.kernel.is_some() || self.disk.is_some();
        match self.kind {
            ImageKind::Process if vm_files => Err(
                "--kernel, --initrd, --disk and --cmdline make a VM image: add --kind vm".into(),
            ),
            ImageKind::Process => Ok(()),
            ImageKind::Vm if self.dir.is_some() || self.command.is_some() => Err(
                "A VM image is built from --kernel [--initrd] [--disk] (or --disk alone), not --dir/--command"
                    .into(),
            ),
            ImageKind::Vm if !vm_files => {
                Err("A VM image needs --kernel (with --initrd and/or --disk) or --disk".into())
            }
            ImageKind::Vm => Ok(()),
        }
    }
}

/// The request of `image show` and `image delete` (`create` and `list` take several).
pub fn request_for(sub: &str, cmd: &ImageCommand) -> Option<ApiRequest> {
    let path = |image: &ImageDefinition, version: &Option<String>| match version {
        Some(v) => version_path(sub, &image.resource_group, &image.gallery, &image.name, v),
        None => image_path(sub, &image.resource_group, &image.gallery, &image.name),
    };
    match cmd {
        ImageCommand::Show(args) => {
            let table = match args.version {
                Some(_) => Table::ImageVersions,
                None => Table::Generic,
            };
            Some(ApiRequest::get(path(&args.image, &args.version), table))
        }
        ImageCommand::Delete(args) => Some(ApiRequest::action(
            Method::DELETE,
            path(&args.image, &args.version),
            None,
            args.no_wait,
        )),
        ImageCommand::Publish(args) => Some(ApiRequest::write(
            Method::PUT,
            // A URN's ':' stays as it is in the path.
            format!(
                "/providers/Shoal.Infrastructure/platformImages/{}",
                args.urn
            ),
            serde_json::json!({"properties": {"imageId": path(&args.image, &Some(args.version.clone()))}}),
            false,
            Table::Generic,
        )),
        ImageCommand::Create(_) | ImageCommand::List(_) => None,
    }
}

pub(crate) async fn run(
    client: &Client,
    printer: &Printer,
    cmd: ImageCommand,
) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::Create(args) => create(client, printer, args).await,
        ImageCommand::List(args) => {
            let versions = list_versions(client, &args).await?;
            printer
                .print(Table::ImageVersions, &Value::Array(versions))
                .context("Cannot write to stdout")
        }
        cmd => match request_for(client.subscription(), &cmd) {
            Some(request) => execute(client, printer, request).await,
            None => Ok(()),
        },
    }
}

/// The `location` of resource group `rg`.
pub(crate) async fn group_location(client: &Client, rg: &str) -> anyhow::Result<String> {
    let group = client
        .get_json(&group_path(client.subscription(), rg))
        .await?;
    group
        .get("location")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .with_context(|| format!("Resource group '{rg}' has no location: pass --location"))
}

async fn create(client: &Client, printer: &Printer, args: ImageCreate) -> anyhow::Result<()> {
    args.check().map_err(anyhow::Error::msg)?;
    let location = match &args.location {
        Some(location) => location.clone(),
        None => group_location(client, &args.image.resource_group).await?,
    };
    // Versions are immutable: say so before uploading a bundle the server would refuse.
    let sub = client.subscription();
    let ImageDefinition {
        resource_group: rg,
        gallery,
        name,
    } = &args.image;
    let existing = version_path(sub, rg, gallery, name, &args.version);
    if client.call(Method::GET, &existing, None).await.is_ok() {
        anyhow::bail!(
            "Image version {gallery}/{name}:{} already exists and versions are immutable: \
             choose a new --version (or `shoal image delete` it first)",
            args.version
        );
    }
    let bundle = match args.kind {
        ImageKind::Process => {
            let dir = args.dir.clone().unwrap_or_default();
            tokio::task::spawn_blocking(move || bundle::scan(&dir))
                .await
                .context("Scanning the directory stopped unexpectedly")??
        }
        ImageKind::Vm => {
            let files = vm_bundle::Files {
                kernel: args.kernel.clone(),
                initrd: args.initrd.clone(),
                disk: args.disk.clone(),
            };
            tokio::task::spawn_blocking(move || vm_bundle::bundle(&files))
                .await
                .context("Checking the VM files stopped unexpectedly")??
        }
    };
    let blob = upload(client, bundle, &mut StatusLine::stderr()).await?;
    let [gallery, definition, version] =
        create_requests(client.subscription(), &args, &location, &blob.id);
    exec::write(client, &gallery, false).await?;
    exec::write(client, &definition, false).await?;
    if let Some(body) = exec::write(client, &version, args.no_wait).await? {
        printer
            .print(Table::ImageVersions, &body)
            .context("Cannot write to stdout")?;
    }
    Ok(())
}

/// Every version under the gallery/image filters of `image list`.
async fn list_versions(client: &Client, args: &ImageList) -> anyhow::Result<Vec<Value>> {
    let sub = client.subscription();
    let rg = &args.resource_group;
    let galleries = match &args.gallery {
        Some(gallery) => vec![gallery.clone()],
        None => names(
            client
                .list(&format!("{}/galleries", compute_path(sub, rg)))
                .await?,
        ),
    };
    let mut versions = Vec::new();
    for gallery in &galleries {
        let images = match &args.name {
            Some(image) => vec![image.clone()],
            None => names(
                client
                    .list(&format!("{}/images", gallery_path(sub, rg, gallery)))
                    .await?,
            ),
        };
        for image in &images {
            let path = format!("{}/versions", image_path(sub, rg, gallery, image));
            versions.extend(client.list(&path).await?);
        }
    }
    Ok(versions)
}

fn names(items: Vec<Value>) -> Vec<String> {
    items
        .iter()
        .filter_map(|item| item.get("name").and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
}

/// An uploaded bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub id: String,
    pub size: u64,
}

/// Why an upload failed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("The answer to POST {BLOBS_PATH} has no \"blobId\": {body}")]
    NoBlobId { body: Value },
    #[error("Archiving the directory stopped unexpectedly")]
    Archiver(#[source] tokio::task::JoinError),
}

/// Streams `bundle` as a tar to `POST /shoal/v1/blobs`, showing progress on `line`.
pub async fn upload(
    client: &Client,
    bundle: Bundle,
    line: &mut StatusLine,
) -> Result<Blob, UploadError> {
    let estimate = bundle.estimated_tar_size();
    let shown = bundle.root.display().to_string();
    let sent = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);

    let counter = Arc::clone(&sent);
    let producer = tokio::task::spawn_blocking(move || {
        let writer = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
            sent: counter,
        };
        let result = bundle.write_tar(writer).and_then(|mut writer| {
            io::Write::flush(&mut writer).map_err(|source| BundleError::Io {
                path: bundle.root.clone(),
                source,
            })
        });
        if let Err(err) = &result {
            // Fail the request body so the server does not store a truncated blob.
            let _ = tx.blocking_send(Err(io::Error::other(err.to_string())));
        }
        result
    });

    // The upload counts against the quota of the subscription the image goes into.
    let url = client.url(&format!(
        "{BLOBS_PATH}?subscription={}",
        crate::request::segment(client.subscription())
    ))?;
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let send = client
        .request(Method::POST, url.clone())
        .header(CONTENT_TYPE, "application/x-tar")
        .body(reqwest::Body::wrap_stream(stream))
        .send();
    tokio::pin!(send);
    line.update(
        &format!("Uploading {shown} (about {})", human_bytes(estimate)),
        "start",
    );
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let response = loop {
        tokio::select! {
            response = &mut send => break response,
            _ = tick.tick() => {
                let done = sent.load(Ordering::Relaxed);
                let percent = (done * 100).checked_div(estimate).unwrap_or(100).min(100);
                line.update(
                    &format!("Uploading {shown}: {} of {} ({percent}%)", human_bytes(done), human_bytes(estimate)),
                    "start",
                );
            }
        }
    };
    let archived = producer.await.map_err(UploadError::Archiver)?;
    // A failed archive explains a failed request better than the request's own error,
    // unless the archive failed only because the request ended first.
    let archive_ok = match archived {
        Ok(()) => true,
        Err(BundleError::Io { ref source, .. }) if source.kind() == io::ErrorKind::BrokenPipe => {
            false
        }
        Err(err) => return Err(err.into()),
    };
    let response = response.map_err(|e| client.transport_error(Method::POST, url.clone(), e))?;
    let reply = client.reply(Method::POST, url, response).await?;
    if !archive_ok {
        return Err(UploadError::Client(ClientError::Api(
            crate::client::ArmError {
                code: "UploadIncomplete".into(),
                message: "The server answered before the whole bundle was sent".into(),
                target: None,
            },
        )));
    }
    let body = reply.body.unwrap_or(Value::Null);
    let Some(id) = body.get("blobId").and_then(Value::as_str) else {
        return Err(UploadError::NoBlobId { body });
    };
    let total = sent.load(Ordering::Relaxed);
    let size = body.get("size").and_then(Value::as_u64).unwrap_or(total);
    line.println(&format!(
        "Uploaded {shown}: {} (blob {id})",
        human_bytes(total)
    ));
    if size != total {
        line.println(&format!(
            "WARNING: the server stored {size} bytes of the {total} sent"
        ));
    }
    Ok(Blob {
        id: id.to_owned(),
        size,
    })
}

/// A blocking writer feeding the async upload body in chunks.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
    sent: Arc<AtomicU64>,
}

impl ChannelWriter {
    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        let len = chunk.len() as u64;
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload ended early"))?;
        self.sent.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }
}

impl io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send_buffer()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffer()
    }
}
