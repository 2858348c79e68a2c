//! The directory bundle of a process image: a tar of a directory with symlinks
//! dereferenced (an image must not point outside itself), built deterministically.
//!
//! [`scan`] walks the directory first, so a dangling symlink or a loop is reported before
//! any byte is uploaded; [`Bundle::write_tar`] then streams the archive into any writer.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use tar::{EntryType, Header, HeaderMode};

/// Why a directory cannot become an image bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{} is not a directory", .path.display())]
    NotADirectory { path: PathBuf },
    #[error("{} points to {}, which does not exist{}", .path.display(), .target.display(), build_hint(.target))]
    DanglingSymlink { path: PathBuf, target: PathBuf },
    #[error("{} leads back into {} (a symlink loop)", .path.display(), .ancestor.display())]
    SymlinkLoop { path: PathBuf, ancestor: PathBuf },
    #[error("{} is not a regular file, directory or symlink", .path.display())]
    Unsupported { path: PathBuf },
    #[error("Cannot read {}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// When a link points into a cargo `target/` directory, say how to fill it.
fn build_hint(target: &Path) -> &'static str {
    let parts: Vec<Component<'_>> = target.components().collect();
    for pair in parts.windows(2) {
        if pair[0].as_os_str() == "target" {
            if pair[1].as_os_str() == "release" {
                return ": build it with `cargo build --release`";
            }
            if pair[1].as_os_str() == "debug" {
                return ": build it with `cargo build`";
            }
        }
    }
    ""
}

/// What one archive entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File { size: u64 },
}

/// One entry: its name inside the archive and the path its content is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub source: PathBuf,
    pub kind: EntryKind,
}

/// A scanned directory, ready to be written as a tar.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub root: PathBuf,
    pub entries: Vec<Entry>,
}

/// Walks `root`, following symlinks, in name order.
pub fn scan(root: &Path) -> Result<Bundle, BundleError> {
    let meta = fs::metadata(root).map_err(|source| io_error(root, source))?;
    if !meta.is_dir() {
        return Err(BundleError::NotADirectory {
            path: root.to_owned(),
        });
    }
    let canonical = fs::canonicalize(root).map_err(|source| io_error(root, source))?;
    let mut entries = Vec::new();
    walk(root, "", &mut vec![canonical], &mut entries)?;
    Ok(Bundle {
        root: root.to_owned(),
        entries,
    })
}

fn io_error(path: &Path, source: io::Error) -> BundleError {
    BundleError::Io {
        path: path.to_owned(),
        source,
    }
}

fn walk(
    dir: &Path,
    prefix: &str,
    ancestors: &mut Vec<PathBuf>,
    out: &mut Vec<Entry>,
) -> Result<(), BundleError> {
    let mut children = fs::read_dir(dir)
        .map_err(|source| io_error(dir, source))?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| io_error(dir, source))?;
    children.sort();
    for file_name in children {
        let path = dir.join(&file_name);
        let name = format!("{prefix}{}", file_name.to_string_lossy());
        let link = fs::symlink_metadata(&path).map_err(|source| io_error(&path, source))?;
        let meta = if link.file_type().is_symlink() {
            match fs::metadata(&path) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let target = fs::read_link(&path).map_err(|source| io_error(&path, source))?;
                    return Err(BundleError::DanglingSymlink { path, target });
                }
                Err(source) => return Err(io_error(&path, source)),
            }
        } else {
            link
        };
        if meta.is_dir() {
            let canonical = fs::canonicalize(&path).map_err(|source| io_error(&path, source))?;
            if let Some(ancestor) = ancestors.iter().find(|a| **a == canonical) {
                return Err(BundleError::SymlinkLoop {
                    path,
                    ancestor: ancestor.clone(),
                });
            }
            out.push(Entry {
                name: format!("{name}/"),
                source: path.clone(),
                kind: EntryKind::Dir,
            });
            ancestors.push(canonical);
            walk(&path, &format!("{name}/"), ancestors, out)?;
            ancestors.pop();
        } else if meta.is_file() {
            out.push(Entry {
                name,
                source: path,
                kind: EntryKind::File { size: meta.len() },
            });
        } else {
            return Err(BundleError::Unsupported { path });
        }
    }
    Ok(())
}

impl Bundle {
    /// Bytes of file content.
    pub fn content_size(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match e.kind {
                EntryKind::File { size } => size,
                EntryKind::Dir => 0,
            })
            .sum()
    }

    /// About how many bytes the tar will have (exact unless names exceed 100 bytes).
    pub fn estimated_tar_size(&self) -> u64 {
        let blocks: u64 = self
            .entries
            .iter()
            .map(|e| match e.kind {
                EntryKind::File { size } => 1 + size.div_ceil(512),
                EntryKind::Dir => 1,
            })
            .sum();
        (blocks + 2) * 512
    }

    /// Writes the archive into `out` and hands it back. Metadata is deterministic (no
    /// owners or times; mode 0755 for executables and directories, 0644 otherwise), so the
    /// same directory always gives the same bytes.
    pub fn write_tar<W: Write>(&self, out: W) -> Result<W, BundleError> {
        let mut builder = tar::Builder::new(out);
        builder.mode(HeaderMode::Deterministic);
        for entry in &self.entries {
            let fail = |source| io_error(&entry.source, source);
            let meta = fs::metadata(&entry.source).map_err(fail)?;
            let mut header = Header::new_gnu();
            header.set_metadata_in_mode(&meta, HeaderMode::Deterministic);
            match entry.kind {
                EntryKind::Dir => {
                    header.set_entry_type(EntryType::Directory);
                    header.set_size(0);
                    builder
                        .append_data(&mut header, &entry.name, io::empty())
                        .map_err(fail)?;
                }
                EntryKind::File { .. } => {
                    let file = File::open(&entry.source).map_err(fail)?;
                    let size = meta.len();
                    header.set_entry_type(EntryType::Regular);
                    header.set_size(size);
                    let exact = Exact {
                        inner: file.take(size),
                        left: size,
                    };
                    builder
                        .append_data(&mut header, &entry.name, exact)
                        .map_err(fail)?;
                }
            }
        }
        builder
            .into_inner()
            .map_err(|source| io_error(&self.root, source))
    }
}

/// Reads exactly `left` bytes, failing if the file shrank while it was archived (a short
/// entry would corrupt every entry after it).
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was being archived",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::{symlink, PermissionsExt};

    /// Unpacks an archive into name → (kind, content, mode).
    fn unpack(bytes: &[u8]) -> BTreeMap<String, (EntryType, Vec<u8>, u32)> {
        let mut archive = tar::Archive::new(bytes);
        let mut out = BTreeMap::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let kind = entry.header().entry_type();
            let mode = entry.header().mode().unwrap();
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            out.insert(name, (kind, content, mode));
        }
        out
    }

    #[test]
    fn symlinks_are_dereferenced() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("server"), b"#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(
            outside.path().join("server"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        fs::create_dir(outside.path().join("assets")).unwrap();
        fs::write(outside.path().join("assets/index.html"), b"<h1>hi</h1>").unwrap();

        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("README"), b"readme").unwrap();
        symlink(outside.path().join("server"), dir.path().join("app")).unwrap();
        symlink(outside.path().join("assets"), dir.path().join("static")).unwrap();

        let bundle = scan(dir.path()).unwrap();
        let bytes = bundle.write_tar(Vec::new()).unwrap();
        assert_eq!(bytes.len() as u64, bundle.estimated_tar_size());
        let files = unpack(&bytes);
        let names: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(names, ["README", "app", "static/", "static/index.html"]);
        let (kind, content, mode) = &files["app"];
        assert_eq!(
            *kind,
            EntryType::Regular,
            "the link became the file it points to"
        );
        assert_eq!(content, b"#!/bin/sh\necho hi\n");
        assert_eq!(mode & 0o111, 0o111, "it stays executable");
        assert_eq!(files["static/"].0, EntryType::Directory);
        assert_eq!(files["static/"].2, 0o755);
        assert_eq!(files["static/index.html"].1, b"<h1>hi</h1>");
        assert_eq!(files["README"].2, 0o644);

        // The same directory gives the same bytes.
        assert_eq!(
            scan(dir.path()).unwrap().write_tar(Vec::new()).unwrap(),
            bytes
        );
    }

    #[test]
    fn a_dangling_symlink_is_named_with_a_build_hint() {
        let dir = tempfile::tempdir().unwrap();
        let web = dir.path().join("examples/web");
        fs::create_dir_all(&web).unwrap();
        symlink("../../target/release/shoal-web", web.join("shoal-web")).unwrap();
        let err = scan(&web).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}/shoal-web points to ../../target/release/shoal-web, which does not exist: \
                 build it with `cargo build --release`",
                web.display()
            )
        );
        symlink("nowhere", web.join("other")).unwrap();
        fs::remove_file(web.join("shoal-web")).unwrap();
        let err = scan(&web).unwrap_err().to_string();
        assert!(
            err.ends_with("other points to nowhere, which does not exist"),
            "{err}"
        );
    }

    #[test]
    fn a_symlink_loop_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("a")).unwrap();
        symlink("..", dir.path().join("a/up")).unwrap();
        let err = scan(dir.path()).unwrap_err().to_string();
        assert!(err.contains("symlink loop"), "{err}");
    }

    #[test]
    fn a_file_is_not_a_bundle() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), b"x").unwrap();
        let err = scan(&dir.path().join("f")).unwrap_err().to_string();
        assert!(err.ends_with("is not a directory"), "{err}");
        let err = scan(&dir.path().join("missing")).unwrap_err().to_string();
        assert!(err.starts_with("Cannot read"), "{err}");
    }
}
