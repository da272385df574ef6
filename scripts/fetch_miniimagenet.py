#!/usr/bin/env python3
"""Put Mini-ImageNet in place: the Mini-ImageNet part of ``bash fetch_data.sh miniimagenet`` (standard
library only; fetch_data.sh passes its environment variables as options).

    python scripts/fetch_miniimagenet.py --dest datasets/miniimagenet [--src PATH] [--copy]
        [--classes 64 16 20] [--images-per-class 600]

PATH may be
  (a) a folder holding archives and the CSVs: train.csv val.csv test.csv plus every archive in it
      (.tar .tar.gz .tgz .tar.bz2 .tbz2 .tar.xz .txz .zip; e.g. images_{train,val,test}.tar.xz with
      images/*.jpg), all unpacked together;
  (b) one archive holding (a), (c) or (d), at its top or inside a single top folder;
  (c) a folder with images/ + train.csv val.csv test.csv (columns filename,label; Ravi & Larochelle);
  (d) a folder with train/ val/ test/, each holding <wnid>/*.jpg.
(c) and (d) are linked into DEST (--copy: copied); archives are unpacked into it. DEST ends up in
layout (c) or (d) (make_miniimagenet_dataset.py reads both) plus a completion marker file.

Safety: only the members the dataset needs are written: the images the CSVs list (images/<file> or
images/<label>/<file>; from the CSVs beside the archives in (a), or inside the archive in (b), read
in a first pass that writes nothing else), the three CSVs, <split>/<wnid>/<image> in layout (d) and
archives in (a)-inside-(b); every other member is skipped, and each written member may be at most
--max-member-mb MiB (an archive inside an archive at most twice the outer archive's size). Every
archive member is checked before anything is written: a path that is absolute or goes
up ('..'), a symbolic or hard link, a device, fifo or sparse file is refused, and so is an archive
that is truncated or corrupt (a tar must end with its end-of-archive block; compressed streams are
read to their end, so their checksums are verified). Files are written by this script itself (never
with tarfile.extract*), as new regular files (mode 0644) in folders it made itself. Unpacking goes
into a temporary folder beside DEST, which is renamed into place only after the counts check passed
(classes per split, images per class, every CSV row's image present, no class in two splits); the
marker file is written last, so a half-done DEST is never taken as complete. Anything that goes wrong
is reported as one line on stderr and leaves neither DEST nor the temporary folder behind.

Only regular files are read or counted (a fifo named like an image in a source folder is refused: reading
it would block). CSVs must be UTF-8 with fields of at most 128 KiB.

Idempotent: a DEST holding the marker (or a complete layout) is checked and left alone.
Exit status: 0 data in place, 2 bad input (one line on stderr: archive, CSV, counts), 1 other error
(e.g. cannot write), 3 nothing in DEST and no --src given.
"""

import argparse
import csv
import lzma
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import stat
import sys
import tarfile
import tempfile
import time
import zipfile
import zlib

SPLITS = ("train", "val", "test")
MARKER = ".pymeta_complete"
ARCHIVE_EXTS = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")
IMAGE_EXTS = (".jpg", ".jpeg", ".png")
LAYOUT_ITEMS = {"csv": ("images", "train.csv", "val.csv", "test.csv"), "folders": SPLITS}
JUNK = ("__MACOSX", ".DS_Store")  # skipped when unpacking, with AppleDouble '._*' files
READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, lzma.LZMAError, zlib.error, OSError)
CSV_NAMES = tuple(s + ".csv" for s in SPLITS)
MAX_MEMBER_MB = 64
"""Default bound on an archive member written (an image or a CSV; Mini-ImageNet's are 3-10 KB and 1.2 MB)."""


class FetchError(Exception):
    """A problem reported as one line."""


def log(msg):
    print(f"[fetch_data] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------------------------
# safe unpacking

def is_archive(name):
    return name.lower().endswith(ARCHIVE_EXTS)


def member_parts(archive, name):
    """A member's path as components, refusing anything that could land outside the target folder."""
    where = f"{os.path.basename(archive)}: member {name!r}"
    if "\x00" in name:
        raise FetchError(f"{where} has a NUL byte in its name; refusing to unpack")
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":" and norm[0].isalpha()):
        raise FetchError(f"{where} has an absolute path; refusing to unpack")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise FetchError(f"{where} points outside the target folder ('..'); refusing to unpack")
    return parts


def is_junk(parts):
    return any(p in JUNK for p in parts) or (parts and parts[-1].startswith("._"))


def _target(target, parts):
    path = os.path.join(target, *parts)
    # the components were checked above; this is a second line of defence
    if os.path.commonpath([target, os.path.abspath(path)]) != target:
        raise FetchError(f"member path {'/'.join(parts)!r} escapes the target folder; refusing to unpack")
    return path


def _too_big(archive, parts, size, limit):
    return FetchError(f"{os.path.basename(archive)}: member {'/'.join(parts)!r} is {size:,} bytes, more than the "
                      f"{limit:,} a member may have (--max-member-mb); refusing to unpack it")


def _write(archive, src, path, parts, limit):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except FileExistsError:
        raise FetchError(f"{os.path.basename(archive)}: {'/'.join(parts)!r} is in the archive(s) twice; "
                         "refusing to overwrite") from None
    with os.fdopen(fd, "wb") as out:
        done = 0
        while True:
            block = src.read(1 << 20)
            if not block:
                return
            done += len(block)
            if done > limit:  # a second line of defence: the declared size was checked before
                raise _too_big(archive, parts, done, limit)
            out.write(block)


class Wanted:
    """The members a dataset needs (picklable, for the unpacking processes): ``self(parts)`` is the most
    bytes the regular file at path `parts` may have, or None to skip it. Under `root` (a path prefix):
    the CSVs (`csvs`), images/<name> or images/<label>/<name> for the names of `names` ({name: label}),
    <split>/<class>/<image> (`folders`), archives of at most `archive_bytes`; `csvs_anywhere`: any
    train/val/test.csv a few folders deep (the first pass over a single archive)."""

    def __init__(self, root=(), names=None, csvs=False, folders=False, archive_bytes=0, csvs_anywhere=False,
                 max_bytes=MAX_MEMBER_MB << 20):
        self.root, self.names, self.csvs, self.folders = tuple(root), names, csvs, folders
        self.archive_bytes, self.csvs_anywhere, self.max_bytes = archive_bytes, csvs_anywhere, max_bytes

    def __call__(self, parts):
        if self.csvs_anywhere:
            return self.max_bytes if parts[-1] in CSV_NAMES and len(parts) <= 5 else None
        k = len(self.root)
        if tuple(parts[:k]) != self.root:
            return None
        rest = parts[k:]
        if len(rest) == 1:
            if self.csvs and rest[0] in CSV_NAMES:
                return self.max_bytes
            return self.archive_bytes if self.archive_bytes and is_archive(rest[0]) else None
        if self.names is not None and rest[0] == "images":
            if (len(rest) == 2 and rest[1] in self.names) or (len(rest) == 3 and self.names.get(rest[2]) == rest[1]):
                return self.max_bytes
        if self.folders and len(rest) == 3 and rest[0] in SPLITS and rest[2].lower().endswith(IMAGE_EXTS) \
                and not rest[2].startswith("."):
            return self.max_bytes
        return None


class Filter:
    """Which members of an archive are written: ``limit(parts)`` (e.g. a Wanted) is the most bytes the
    member at path `parts` may have, or None to skip it (None: every member, up to MAX_MEMBER_MB).
    Records every regular file's path (``seen``) and the skipped ones. Folders are made only as the
    files written need them."""

    def __init__(self, limit=None):
        self._limit = limit
        self.seen, self.skipped = [], []

    def __call__(self, parts, is_dir):
        if is_dir:
            return None
        self.seen.append(parts)
        got = self._limit(parts) if self._limit else MAX_MEMBER_MB << 20
        if got is None:
            self.skipped.append("/".join(parts))
        return got


TAR_MAGIC = ((b"\xfd7zXZ\x00", "xz"), (b"\x1f\x8b", "gz"), (b"BZh", "bz2"))


def unpack_tar(archive, target, want):
    n = 0
    with open(archive, "rb") as f:
        head = f.read(6)
    compression = next((c for magic, c in TAR_MAGIC if head.startswith(magic)), "")
    try:
        tf = tarfile.open(archive, "r:" + compression)
    except READ_ERRORS as e:
        raise FetchError(f"{os.path.basename(archive)}: cannot be read as a tar archive: truncated or corrupt "
                         f"({type(e).__name__}: {e})") from None
    with tf:
        try:
            for m in tf:
                parts = member_parts(archive, m.name)
                what = f"{os.path.basename(archive)}: member {m.name!r}"
                if m.issym():
                    raise FetchError(f"{what} is a symbolic link (to {m.linkname!r}); refusing to unpack")
                if m.islnk():
                    raise FetchError(f"{what} is a hard link (to {m.linkname!r}); refusing to unpack")
                if m.isdev() or m.isfifo():
                    raise FetchError(f"{what} is a device or fifo; refusing to unpack")
                if m.issparse() or not (m.isreg() or m.isdir()):
                    raise FetchError(f"{what} is not a regular file or folder (type {m.type!r}); refusing")
                if not parts or is_junk(parts):
                    continue
                limit = want(parts, m.isdir())
                if limit is None:
                    continue
                path = _target(target, parts)
                if m.isdir():
                    os.makedirs(path, exist_ok=True)
                    continue
                if m.size > limit:
                    raise _too_big(archive, parts, m.size, limit)
                src = tf.extractfile(m)
                _write(archive, src, path, parts, limit)
                n += 1
            # tarfile stops quietly at a missing, truncated or corrupt header: require the end-of-archive
            # block, then read compressed streams to their end so that their checksums are verified
            tf.fileobj.seek(tf.offset)
            if tf.fileobj.read(tarfile.BLOCKSIZE) != tarfile.NUL * tarfile.BLOCKSIZE:
                raise tarfile.ReadError(f"no end-of-archive block after {n} file(s) (truncated or corrupt header)")
            while tf.fileobj.read(1 << 20):
                pass
        except FetchError:
            raise
        except READ_ERRORS as e:
            if isinstance(e, OSError) and not isinstance(e, (tarfile.TarError,)) and e.filename:
                raise FetchError(f"cannot write {e.filename}: {e.strerror}") from None
            raise FetchError(f"{os.path.basename(archive)}: truncated or corrupt archive "
                             f"({type(e).__name__}: {e})") from None
    return n


def unpack_zip(archive, target, want):
    n = 0
    try:
        zf = zipfile.ZipFile(archive)
    except READ_ERRORS as e:
        raise FetchError(f"{os.path.basename(archive)}: cannot be read as a zip archive: truncated or corrupt "
                         f"({type(e).__name__}: {e})") from None
    with zf:
        infos = zf.infolist()
        for info in infos:  # check every member before writing anything
            parts = member_parts(archive, info.filename)
            what = f"{os.path.basename(archive)}: member {info.filename!r}"
            kind = stat.S_IFMT(info.external_attr >> 16) if info.create_system == 3 else 0
            if kind == stat.S_IFLNK:
                raise FetchError(f"{what} is a symbolic link; refusing to unpack")
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise FetchError(f"{what} is not a regular file or folder; refusing to unpack")
            if info.flag_bits & 0x1:
                raise FetchError(f"{what} is encrypted; refusing to unpack")
        try:
            for info in infos:
                parts = member_parts(archive, info.filename)
                if not parts or is_junk(parts):
                    continue
                limit = want(parts, info.is_dir())
                if limit is None:
                    continue
                path = _target(target, parts)
                if info.is_dir():
                    os.makedirs(path, exist_ok=True)
                    continue
                if info.file_size > limit:
                    raise _too_big(archive, parts, info.file_size, limit)
                with zf.open(info) as src:  # checks the CRC at the end
                    _write(archive, src, path, parts, limit)
                n += 1
        except FetchError:
            raise
        except READ_ERRORS as e:
            if isinstance(e, OSError) and e.filename:
                raise FetchError(f"cannot write {e.filename}: {e.strerror}") from None
            raise FetchError(f"{os.path.basename(archive)}: truncated or corrupt archive "
                             f"({type(e).__name__}: {e})") from None
    return n


def unpack(archive, target, want=None):
    """Unpack the members of one archive that `want` (a Filter) accepts into target (an existing folder);
    returns (archive, files written, seconds, skipped member paths)."""
    start, target, want = time.time(), os.path.abspath(target), want or Filter()
    with open(archive, "rb") as f:
        zip_magic = f.read(4) in (b"PK\x03\x04", b"PK\x05\x06")
    n = (unpack_zip if zip_magic or archive.lower().endswith(".zip") else unpack_tar)(archive, target, want)
    return archive, n, time.time() - start, want.skipped


def _worker_init():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _unpack_in_child(conn, job, parent_ends):
    """In a child process: unpack one archive and send back its result, or the exception it raised."""
    _worker_init()
    for end in parent_ends:  # inherited by the fork: held open here, a parent's death would go unseen
        end.close()
    try:
        result = unpack(*job)
    except Exception as e:  # noqa: BLE001  (re-raised in the parent, as if unpacked there)
        result = FetchError(str(e)) if isinstance(e, FetchError) else e
    try:
        conn.send(result)
    except Exception as e:  # noqa: BLE001  (an exception that does not pickle)
        conn.send(FetchError(f"{type(result).__name__}: {result}" if isinstance(result, BaseException) else
                             f"{type(e).__name__}: {e}"))
    conn.close()


def _report(a, n, secs, skipped):
    extra = (f", {len(skipped)} member(s) not needed skipped (e.g. {skipped[0]!r})" if skipped else "")
    log(f"{os.path.basename(a)}: {n} files in {secs:.1f} s{extra}")


def unpack_all(archives, target, workers, limit=None):
    """Unpack archives into target, several at a time (one process each, up to `workers`); `limit`: see
    Filter (None: every member, up to MAX_MEMBER_MB each)."""
    os.makedirs(target, exist_ok=True)
    for a in archives:
        log(f"unpacking {a}")
    jobs = [(a, target, Filter(limit)) for a in archives]
    if workers <= 1 or len(jobs) == 1:
        for res in map(unpack, *zip(*jobs)):
            _report(*res)
        return
    # one process per archive, each with its own pipe, killed on the first error: no queue or lock shared
    # with a process that is killed, and a process that dies is an error (multiprocessing.Pool waits for
    # its result forever). The rule of pymeta.data.processes.Workers, written out here because this
    # script runs before pymeta is installed, with the standard library only (fetch_data.sh's python3)
    ctx = multiprocessing.get_context("fork")
    running = {}  # the read end of a child's pipe -> the child
    try:
        while jobs or running:
            while jobs and len(running) < workers:
                receive, send = ctx.Pipe(duplex=False)
                child = ctx.Process(target=_unpack_in_child, args=(send, jobs.pop(0), [*running, receive]),
                                    daemon=True)
                child.start()
                send.close()
                running[receive] = child
            for receive in multiprocessing.connection.wait(list(running)):
                child = running.pop(receive)
                try:
                    res = receive.recv()
                except EOFError:  # it died without a word (killed, out of memory)
                    child.join()
                    res = FetchError(f"a process unpacking an archive ended with exit code {child.exitcode}")
                receive.close()
                child.join()
                if isinstance(res, BaseException):
                    raise res
                _report(*res)
    finally:
        for child in running.values():
            child.kill()
        for receive, child in running.items():
            child.join()
            receive.close()


# ---------------------------------------------------------------------------------------------------------------
# layouts and checks

def detect(folder):
    """'folders' (d), 'csv' (c), 'archives' (a) or None."""
    isdir = lambda n: os.path.isdir(os.path.join(folder, n))  # noqa: E731
    isfile = lambda n: os.path.exists(os.path.join(folder, n))  # noqa: E731  (read_csv refuses a fifo)
    if all(isdir(s) for s in SPLITS):
        return "folders"
    csvs = all(isfile(s + ".csv") for s in SPLITS)
    if csvs and isdir("images"):
        return "csv"
    if csvs and any(is_archive(e.name) and e.is_file() for e in os.scandir(folder)):
        return "archives"
    return None


def find_root(folder, what):
    """The folder holding a layout: `folder` itself, or inside a chain of single top folders."""
    for _ in range(4):
        layout = detect(folder)
        if layout:
            return folder, layout
        entries = [e for e in os.scandir(folder) if not e.name.startswith(".") and e.name not in JUNK]
        if len(entries) != 1 or not entries[0].is_dir():
            break
        folder = entries[0].path
    found = sorted(e.name for e in os.scandir(folder))[:8]
    raise FetchError(f"{what} holds neither train/ val/ test/ nor images/ + train.csv val.csv test.csv "
                     f"(nor archives + the CSVs); found: {', '.join(found) or 'nothing'}")


def layout_from_names(paths, what):
    """(root, layout) of an archive from its regular files' paths (lists of parts), as find_root does
    for a folder: the layout at its top or inside a chain of single top folders."""
    tree = {}
    for parts in paths:
        if not is_junk(parts):
            tree.setdefault(tuple(parts[:-1]), set()).add(parts[-1])
    dirs = {}
    for folder in tree:
        for i in range(len(folder)):
            dirs.setdefault(folder[:i], set()).add(folder[i])
    root = ()
    for _ in range(5):
        files, subdirs = tree.get(root, set()), dirs.get(root, set())
        if all(any(d[:len(root) + 1] == root + (s,) and len(d) >= len(root) + 2 for d in tree) for s in SPLITS):
            return root, "folders"
        csvs = all(c in files for c in CSV_NAMES)
        if csvs and "images" in subdirs:
            return root, "csv"
        if csvs and any(is_archive(f) for f in files):
            return root, "archives"
        if len(subdirs) != 1 or files:
            break
        root += (next(iter(subdirs)),)
    found = sorted(tree.get(root, set()) | dirs.get(root, set()))[:8]
    raise FetchError(f"{what} holds neither train/ val/ test/ nor images/ + train.csv val.csv test.csv "
                     f"(nor archives + the CSVs); found: {', '.join(found) or 'nothing'}")


def unpack_single(src, staging, max_bytes):
    """Layout (b): a first pass writes only the archive's CSVs and lists its members, which gives its
    layout; a second pass writes only what that layout needs. Returns the folder holding it."""
    log(f"unpacking {src} (first pass: its layout and CSVs)")
    first = Filter(Wanted(csvs_anywhere=True, max_bytes=max_bytes))
    unpack(src, os.path.join(staging, "c"), first)
    root, layout = layout_from_names(first.seen, os.path.basename(src))
    if layout == "csv":
        wanted = Wanted(root, names=read_listing(os.path.join(staging, "c", *root)), csvs=True, max_bytes=max_bytes)
    elif layout == "folders":
        wanted = Wanted(root, folders=True, max_bytes=max_bytes)
    else:
        wanted = Wanted(root, csvs=True, archive_bytes=2 * os.path.getsize(src) + max_bytes, max_bytes=max_bytes)
    unpack_all([src], os.path.join(staging, "u"), 1, wanted)
    return os.path.join(staging, "u")


def _class_dirs(base):
    return sorted(e.name for e in os.scandir(base) if e.is_dir() and not e.name.startswith("."))


def read_csv(path):
    """Yield (line number, filename, label) of a Ravi & Larochelle CSV (columns filename,label), skipping
    empty rows; a file that is not a regular file, not UTF-8, or has a field over csv's 128 KiB limit or
    no such columns is one FetchError line."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise FetchError(f"{path} is not a regular file (a fifo, device or socket?); put the CSV file there")
    line = 1
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"filename", "label"} <= set(reader.fieldnames):
                raise FetchError(f"{path}: first line must name the columns filename,label")
            for row in reader:
                line = reader.line_num
                name, label = (row["filename"] or "").strip(), (row["label"] or "").strip()
                if not name and not label:
                    continue
                if not name or not label:
                    raise FetchError(f"{path}:{line}: empty filename or label")
                yield line, name, label
    except UnicodeDecodeError as e:
        raise FetchError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} after line {line}); save it as "
                         "UTF-8 (a CSV of filename,label rows)") from None
    except csv.Error as e:
        raise FetchError(f"{path}:{line + 1}: not a valid CSV ({e}); a CSV of filename,label rows is needed") from None


def read_listing(root):
    """{image file name: label} of the three CSVs in root."""
    names = {}
    for split in SPLITS:
        for _, name, label in read_csv(os.path.join(root, split + ".csv")):
            names[name] = label
    return names


def _regular_images(folder):
    """Names of the image files in folder; an image name that is not a regular file is refused."""
    out = []
    for e in os.scandir(folder):
        if e.name.lower().endswith(IMAGE_EXTS):
            if not e.is_file():
                if e.is_dir():
                    continue
                raise FetchError(f"{e.path} is not a regular file (a fifo, device or socket?); remove it")
            out.append(e.name)
    return out


def check(root, layout, classes, per_class):
    """Raise FetchError unless root holds `classes` (train, val, test) classes of `per_class` images each
    (0: any number > 0). Returns a one-line summary."""
    owner, total = {}, 0
    if layout == "folders":
        for split, want in zip(SPLITS, classes):
            base = os.path.join(root, split)
            if not os.path.isdir(base):
                raise FetchError(f"{base} is missing")
            names = _class_dirs(base)
            if len(names) != want:
                raise FetchError(f"{base} has {len(names)} class folders, expected {want}")
            for c in names:
                k = len(_regular_images(os.path.join(base, c)))
                if k == 0 or (per_class and k != per_class):
                    raise FetchError(f"{os.path.join(base, c)} has {k} images, expected {per_class or 'some'}")
                if c in owner:
                    raise FetchError(f"class {c} is in both {owner[c]}/ and {split}/")
                owner[c] = split
                total += k
    else:
        images = os.path.join(root, "images")
        if not os.path.isdir(images):
            raise FetchError(f"{images} is missing")
        present, listed = set(_regular_images(images)), set()
        for split, want in zip(SPLITS, classes):
            path = os.path.join(root, split + ".csv")
            if not os.path.exists(path):
                raise FetchError(f"{path} is missing")
            counts, missing = {}, []
            for line, name, label in read_csv(path):
                if name in listed:
                    raise FetchError(f"{path}:{line}: {name} is listed twice")
                listed.add(name)
                if name not in present:
                    alt = os.path.join(images, label, name)
                    if not os.path.isfile(alt):
                        missing.append(name)
                    elif not stat.S_ISREG(os.stat(alt).st_mode):
                        raise FetchError(f"{alt} is not a regular file (a fifo, device or socket?); remove it")
                counts[label] = counts.get(label, 0) + 1
            if len(counts) != want:
                raise FetchError(f"{path} has {len(counts)} classes, expected {want}")
            if missing:
                raise FetchError(f"{images}: {len(missing)} of the images listed in {split}.csv are missing "
                                 f"(e.g. {missing[0]})")
            for c, k in sorted(counts.items()):
                if per_class and k != per_class:
                    raise FetchError(f"{path}: class {c} has {k} images, expected {per_class}")
                if c in owner:
                    raise FetchError(f"class {c} is in both {owner[c]}.csv and {split}.csv")
                owner[c] = split
            total += sum(counts.values())
    return (f"{'/'.join(map(str, classes))} classes, {total} images"
            f"{f' ({per_class} per class)' if per_class else ''}, {layout} layout")


# ---------------------------------------------------------------------------------------------------------------
# placing

def existing(dest):
    """(layout, items present) of what is already in dest."""
    if not os.path.isdir(dest):
        return None, []
    present = [i for items in LAYOUT_ITEMS.values() for i in items
               if os.path.lexists(os.path.join(dest, i))]
    for layout, items in LAYOUT_ITEMS.items():
        if all(os.path.exists(os.path.join(dest, i)) for i in items):
            return layout, present
    return None, present


def write_marker(root, summary, source):
    path = os.path.join(root, MARKER)
    with open(path + ".tmp", "w") as f:
        f.write(f"complete: {summary}\nsource: {source}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


def install(root, layout, dest):
    """Rename the checked `root` (marker inside) into place as dest, the marker last."""
    if not os.path.lexists(dest):
        os.rename(root, dest)
        return
    for item in LAYOUT_ITEMS[layout]:
        os.rename(os.path.join(root, item), os.path.join(dest, item))
    os.rename(os.path.join(root, MARKER), os.path.join(dest, MARKER))


def fetch(args):
    dest = os.path.abspath(args.dest)
    classes, per_class = tuple(args.classes), args.images_per_class
    layout, present = existing(dest)
    if layout:
        marked = os.path.isfile(os.path.join(dest, MARKER))
        try:
            summary = check(dest, layout, classes, per_class)
        except FetchError as e:
            raise FetchError(f"{args.dest} is {'marked complete' if marked else 'there'} but fails the check "
                             f"({e}); remove it and run again") from None
        if not marked:
            write_marker(dest, summary, "found in place")
        log(f"miniimagenet already in place in {args.dest} ({summary}), nothing to do")
        return 0
    if present:
        raise FetchError(f"{args.dest} holds an incomplete Mini-ImageNet ({', '.join(present)}); "
                         "remove it and run again")
    if not args.src:
        return 3
    src = os.path.abspath(args.src)
    if not os.path.exists(src):
        raise FetchError(f"MINIIMAGENET_SRC={args.src} does not exist")
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".tmp.{os.path.basename(dest)}.", dir=parent)
    try:
        start = time.time()
        if os.path.isdir(src):
            root, layout = find_root(src, f"MINIIMAGENET_SRC={args.src}")
        else:
            if not is_archive(src) and not (tarfile.is_tarfile(src) or zipfile.is_zipfile(src)):
                raise FetchError(f"MINIIMAGENET_SRC={args.src} is neither a folder nor an archive "
                                 f"({', '.join(ARCHIVE_EXTS)})")
            root, layout = find_root(unpack_single(src, staging, args.max_member_mb << 20), os.path.basename(src))
        how = "copied" if args.copy else "linked"
        if layout == "archives" or not os.path.isdir(src):
            how = "unpacked"
        if layout == "archives":  # (a): unpack all archives beside the CSVs, together, then take the CSVs
            archives = sorted(os.path.join(root, e.name) for e in os.scandir(root)
                              if e.is_file() and is_archive(e.name))
            out = os.path.join(staging, "a")
            listing = read_listing(root)  # only the images the CSVs list are written
            unpack_all(archives, out, args.workers, Wanted(names=listing, max_bytes=args.max_member_mb << 20))
            for s in SPLITS:
                if os.path.lexists(os.path.join(out, s + ".csv")):
                    raise FetchError(f"the archives hold a {s}.csv too; unpack them by hand")
                shutil.copyfile(os.path.join(root, s + ".csv"), os.path.join(out, s + ".csv"))
            root, layout = find_root(out, "the unpacked archives")
            if layout == "archives":
                raise FetchError("the archives hold further archives; unpack them by hand")
            final = root
        elif os.path.isdir(src):  # (c), (d): link or copy
            final = os.path.join(staging, "p")
            os.mkdir(final)
            for item in LAYOUT_ITEMS[layout]:
                s = os.path.join(root, item)
                if args.copy:
                    (shutil.copytree if os.path.isdir(s) else shutil.copyfile)(s, os.path.join(final, item))
                else:
                    os.symlink(os.path.realpath(s), os.path.join(final, item))
        else:
            final = root
        summary = check(final, layout, classes, per_class)
        write_marker(final, summary, f"{how} from {src}")
        install(final, layout, dest)
        log(f"miniimagenet {how} into {args.dest} in {time.time() - start:.1f} s ({summary}); "
            f"next: python scripts/make_miniimagenet_dataset.py -i {args.dest}")
        return 0
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _interrupted(*_):
    raise KeyboardInterrupt


def one_line(e):
    return " ".join(str(e).split())


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dest", required=True, help="where the data goes (fetch_data.sh: $DATA_DIR/miniimagenet)")
    p.add_argument("--src", default="", help="folder or archive, see above (fetch_data.sh: $MINIIMAGENET_SRC)")
    p.add_argument("--copy", action="store_true", help="copy folders (c)/(d) instead of linking them")
    p.add_argument("--classes", type=int, nargs=3, default=(64, 16, 20), metavar=("TRAIN", "VAL", "TEST"))
    p.add_argument("--images-per-class", type=int, default=600, help="0: any number")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="archives unpacked at once")
    p.add_argument("--max-member-mb", type=int, default=MAX_MEMBER_MB,
                   help="largest image or CSV written from an archive, in MiB (default %(default)s)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)  # so that the temporary folder is removed
    try:
        return fetch(args)
    except FetchError as e:
        print(f"[fetch_data] ERROR: {one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"[fetch_data] ERROR: {type(e).__name__}: {one_line(e)}", file=sys.stderr)
    except KeyboardInterrupt:
        print("[fetch_data] ERROR: interrupted", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
