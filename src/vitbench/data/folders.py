"""A folder of class folders -> data/raw/<class>/<file>, with nothing lost and nothing silent.

The source tree is walked without following links out of it: a link whose target lies outside
the source folder, a dangling link and a linked folder are skipped and reported, and so are hidden
and system files, AppleDouble `._*` files, files outside any class folder, empty class folders and
anything that is not a regular file (a FIFO would hang the copy). Nested folders are flattened
(`sub/x.jpg` -> `sub__x.jpg`); a name that is already taken (also ignoring case and Unicode
normalization, NFC `café` against NFD `café`, for macOS and Windows checkouts) gets a unique one
(`sub__x~2.jpg`), a flattened name over 255 bytes (the file-system limit) is shortened to a unique
one, a class folder whose name is blank becomes `unnamed`, and a file or folder name that is not
valid UTF-8 (DVC cannot track it) is re-encoded from Latin-1. A class name is one safe folder
inside data/raw whatever the source folder is called: `n00000001-..` keeps its WordNet id rather
than become `..`, separators become `_`, leading dots go (no hidden class), and the final name is
checked last (`_check_final`). Every skip and rename is a row of the FetchReport.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import unicodedata
from pathlib import Path

from tqdm import tqdm

from vitbench.data.fetch_report import FetchReport, shown
from vitbench.core.errors import FetchError

log = logging.getLogger(__name__)

JUNK_NAMES = frozenset({"Thumbs.db", "desktop.ini"})
WORDNET_PREFIX = re.compile(r"n\d{8}[-_ ](.+)")
MAX_WRAPPERS = 5                 # how many single wrapper folders are looked through
NO_CLASS = ""                    # the class column of a skip that belongs to no class
BLANK_CLASS = "unnamed"          # the class of a folder whose name is only whitespace
# files the stages write beside the class folders (data/clean/manifest.csv): never a class name
RESERVED_NAMES = frozenset({"manifest.csv"})
MAX_NAME_BYTES = 255             # the longest file name (in UTF-8 bytes) most file systems allow


SEPARATORS = str.maketrans({"/": "_", "\\": "_", "\0": "_"})  # path separators and NUL
LEADING_JUNK = re.compile(r"^[\s.]+")   # leading whitespace and dots: a hidden folder, `.`, `..`


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a class folder of its own inside data/raw; None when it can."""
    if name.casefold() in RESERVED_NAMES:
        return "the pipeline writes a file of that name beside the class folders"
    if not name.strip():
        return "it is blank"
    if name != name.strip():
        return "it starts or ends with whitespace"
    if name.startswith("."):
        return "it starts with a dot (`.` and `..` are paths, `.name` is hidden)"
    if name != name.translate(SEPARATORS):
        return "it holds a path separator (/ or \\) or NUL"
    return None


def safe_name(name: str) -> str:
    """`name` as one safe folder name: separators and NUL become `_`, leading dots and
    whitespace go, a reserved name gets a trailing `_`; '' when nothing is left."""
    safe = LEADING_JUNK.sub("", name.translate(SEPARATORS)).strip()
    return f"{safe}_" if safe.casefold() in RESERVED_NAMES else safe


def _strip_wordnet(name: str) -> str:
    name = name.strip()
    match = WORDNET_PREFIX.fullmatch(name)
    return match.group(1).strip() if match and match.group(1).strip() else name


def clean_class_name(name: str) -> str:
    """A class folder's name without its WordNet id (`n02085620-Chihuahua` -> `Chihuahua`), as one
    safe folder name: the id stays when what follows it is not one (`n00000001-..`), and an unsafe
    name is made safe (`safe_name`); '' when nothing usable is left (a blank name)."""
    stripped = _strip_wordnet(name)
    return stripped if name_problem(stripped) is None else safe_name(name)


def utf8_name(name: str) -> str:
    """`name` itself when its bytes are UTF-8; otherwise those bytes read as Latin-1."""
    raw = os.fsencode(name)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def import_folder(source: Path, dest: Path, report: FetchReport | None = None, *,
                  move: bool = False) -> FetchReport:
    """Copy (or move) `source/<class>/**/<file>` into `dest/<clean class>/<unique flat name>`.

    One chain of single wrapper folders (Stanford Dogs' `Images/`) is looked through. What is
    skipped or renamed goes into `report` (a new one if None), which is returned.
    """
    source, report = Path(source), report if report is not None else FetchReport()
    if not source.is_dir():
        raise FetchError(f"dataset folder not found: {source}")
    walker = _Walker(source, report)
    root, class_dirs = walker.class_root()
    if not class_dirs:
        raise FetchError(
            f"no class folders in {source}: expected one sub-folder per class with the images "
            f"inside, e.g. {source / 'cat' / '001.jpg'} and {source / 'dog' / '002.jpg'} "
            f"(optionally inside a single wrapper folder such as Images/)")
    jobs: list[tuple[Path, Path]] = []
    inside = dest.resolve()
    for class_dir, cls in _class_names(class_dirs, report).items():
        if (dest / cls).resolve().parent != inside:  # belt and braces after _check_final
            raise FetchError(f"class folder {shown(class_dir)} would be stored outside {dest} as "
                             f"{shown(cls)!r}")
        jobs += _class_jobs(class_dir, cls, dest / cls, walker, report)
    transfer = os.replace if move else shutil.copyfile
    for src, target in tqdm(jobs, desc="import", unit="file"):
        target.parent.mkdir(parents=True, exist_ok=True)
        transfer(src, target)
    return report


class _Walker:
    """Classifies the entries of the source tree: usable folders, usable files, or a skip reason."""

    def __init__(self, source: Path, report: FetchReport) -> None:
        self.source, self.boundary, self.report = source, source.resolve(), report

    def skip_reason(self, path: Path) -> tuple[str, str] | None:
        name = path.name
        if name.startswith("._") or name == "__MACOSX":
            return "appledouble", "macOS resource fork"
        if name.startswith(".") or name in JUNK_NAMES:
            return "hidden", "hidden or system file"
        if path.is_symlink():
            target = Path(os.path.realpath(path))
            if not target.exists():
                return "dangling_link", f"link to {shown(os.readlink(path))}, which does not exist"
            if not target.is_relative_to(self.boundary):
                return "link_outside", f"link to {shown(target)}, outside the source folder"
            if target.is_dir():
                return "symlinked_folder", f"link to the folder {shown(target)}; not followed"
        if not (path.is_dir() or path.is_file()):
            return "not_regular", "not a regular file (FIFO, socket or device)"
        return None

    def level(self, folder: Path, cls: str = NO_CLASS, *, record: bool = False
              ) -> tuple[list[Path], list[Path]]:
        """The usable sub-folders and files of `folder`; the rest is reported when `record`."""
        dirs, files = [], []
        for entry in sorted(folder.iterdir()):
            reason = self.skip_reason(entry)
            if reason is None:
                (dirs if entry.is_dir() else files).append(entry)
            elif record:
                self.report.add(entry.relative_to(self.source), cls, *reason)
        return dirs, files

    def class_root(self) -> tuple[Path, list[Path]]:
        """Look through single wrapper folders; return the folder holding the class folders and
        them. Loose files met on the way (and in it) belong to no class and are reported."""
        root = self.source
        for _ in range(MAX_WRAPPERS):
            dirs, _files = self.level(root)
            if len(dirs) != 1 or not self.level(dirs[0])[0]:
                break
            self._loose(root)
            log.info("looking through the wrapper folder %s", dirs[0])
            root = dirs[0]
        self._loose(root)
        return root, self.level(root)[0]

    def _loose(self, folder: Path) -> None:
        _dirs, files = self.level(folder, record=True)
        for f in files:
            self.report.add(f.relative_to(self.source), NO_CLASS, "loose_file",
                            "not inside a class folder")

    def files(self, class_dir: Path, cls: str) -> list[Path]:
        """Every usable file under `class_dir` (recursively; linked folders are not entered)."""
        dirs, files = self.level(class_dir, cls, record=True)
        for sub in dirs:
            files += self.files(sub, cls)
        return files


def fold(name: str) -> str:
    """The key under which two names clash: case-folded and Unicode-normalized (NFC)."""
    return unicodedata.normalize("NFC", name).casefold()


def _class_names(class_dirs: list[Path], report: FetchReport) -> dict[Path, str]:
    """`class_names` of the class folders, by folder."""
    names = class_names([d.name for d in class_dirs], report)
    return {d: names[d.name] for d in sorted(class_dirs)}


def class_names(folder_names: list[str], report: FetchReport) -> dict[str, str]:
    """The class name of each class folder name: cleaned (`clean_class_name`), UTF-8, one safe
    folder, unique. Folders whose cleaned names would collide keep their own (made safe) names;
    blank ones become `unnamed` (after every named folder has its name). Every name that differs
    from the plain cleaning is reported; the final names are checked last (`_check_final`)."""
    cleaned = {raw: clean_class_name(utf8_name(raw)) for raw in folder_names}
    counts: dict[str, int] = {}
    for name in cleaned.values():
        counts[fold(name)] = counts.get(fold(name), 0) + 1
    names: dict[str, str] = {}
    taken: set[str] = set()
    for raw, name in sorted(cleaned.items(), key=lambda item: not item[1]):
        text = utf8_name(raw)
        if name and counts[fold(name)] > 1:
            log.warning("class folder %r would share the name %r with another once cleaned; "
                        "keeping its full name", shown(raw), name)
            name = safe_name(text) or name
        names[raw] = _unique(name or BLANK_CLASS, taken)
        _report_name(raw, name, names[raw], report)
    for raw, name in names.items():
        _check_final(raw, name)
    return names


def _report_name(raw: str, name: str, stored: str, report: FetchReport) -> None:
    """Report (and log) how class folder `raw`, cleaned to `name`, came to be stored as `stored`."""
    text, plain = utf8_name(raw), _strip_wordnet(utf8_name(raw))
    if not plain:
        report.add(raw, stored, "blank_name", f"class folder name is blank; stored as {stored!r}")
        log.warning("class folder %r has a blank name; stored as %r", raw, stored)
    elif text != raw:
        report.add(raw, stored, "non_utf8_name", f"class folder name is not UTF-8; stored as "
                   f"{stored!r}")
        log.warning("class folder %s has a name that is not UTF-8; stored as %r", shown(raw), stored)
    elif (problem := name_problem(plain)) is not None:
        report.add(raw, stored, "unsafe_name", f"class folder name cleaned would be {plain!r}, "
                   f"not a safe folder name: {problem}; stored as {stored!r}")
        log.warning("class folder %s would be named %r once cleaned, not a safe folder name (%s); "
                    "stored as %r", shown(raw), plain, problem, stored)
    elif stored != name:
        cut = _was_cut(name, stored)
        report.add(raw, stored, "long_name" if cut else "name_collision",
                   f"class stored as {stored!r}" + ("" if cut else "; another class folder "
                   "has the same name ignoring case and Unicode normalization"))


def _check_final(raw: str, name: str) -> None:
    """FetchError unless `name` is one safe, UTF-8 folder name of at most MAX_NAME_BYTES bytes:
    the last check on a class name, whatever the cleaning above it did."""
    problem = name_problem(name)
    if problem is None and len(os.fsencode(name)) > MAX_NAME_BYTES:
        problem = f"it is over {MAX_NAME_BYTES} bytes"
    if problem is None and not _is_utf8(name):
        problem = "it is not UTF-8"
    if problem is not None:
        raise FetchError(f"class folder {shown(raw)!r} would be stored as {shown(name)!r}, which "
                         f"is not a safe folder name inside data/raw: {problem}")


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _class_jobs(class_dir: Path, cls: str, target_dir: Path, walker: _Walker,
                report: FetchReport) -> list[tuple[Path, Path]]:
    """(source, target) for each file of one class folder, flattened to unique UTF-8 names."""
    files = walker.files(class_dir, cls)
    if not files:
        report.add(class_dir.relative_to(walker.source), cls, "empty_class",
                   "class folder holds no usable files")
        log.warning("class folder %s holds no usable files; skipped", shown(class_dir))
        return []
    jobs, taken = [], set()
    for path in files:
        parts = path.relative_to(class_dir).parts
        flat = "__".join(utf8_name(p) for p in parts)
        name = _unique(flat, taken)
        source = path.relative_to(walker.source)
        if flat != "__".join(parts):
            report.add(source, cls, "non_utf8_name", f"stored as {name!r}")
            log.warning("%s: the file name is not UTF-8; stored as %r", shown(path), name)
        elif _was_cut(flat, name):
            report.add(source, cls, "long_name", f"the flat name has {len(os.fsencode(flat))} bytes,"
                       f" over the file-system limit of {MAX_NAME_BYTES}; stored as {name!r}")
        elif name != flat:
            report.add(source, cls, "name_collision", f"{flat!r} was taken; stored as {name!r}")
        jobs.append((path, target_dir / name))
    return jobs


def _unique(name: str, taken: set[str]) -> str:
    """`name`, or `stem~2.ext`, `stem~3.ext`... if taken (ignoring case and Unicode normalization),
    each at most MAX_NAME_BYTES long (see `_fit`); marks it taken."""
    stem, dot, suffix = name.rpartition(".")
    if not stem or len(os.fsencode(dot + suffix)) > 32:  # no extension, or not a real one
        stem, dot, suffix = name, "", ""
    candidate, k = _fit(stem, dot + suffix, name), 2
    while fold(candidate) in taken:
        candidate = _fit(stem, f"~{k}{dot}{suffix}", name)
        k += 1
    taken.add(fold(candidate))
    return candidate


def _fit(stem: str, tail: str, original: str) -> str:
    """`stem + tail`, or when over MAX_NAME_BYTES a cut stem, `~` and a hash of `original`
    (so two long names cut to the same prefix stay apart), then `tail`."""
    if len(os.fsencode(stem + tail)) <= MAX_NAME_BYTES:
        return stem + tail
    mark = _mark(original)
    room = MAX_NAME_BYTES - len(os.fsencode(mark + tail))
    cut = os.fsencode(stem)[:room].decode("utf-8", "ignore")  # whole characters only
    return cut + mark + tail


def _mark(original: str) -> str:
    return "~" + hashlib.sha256(os.fsencode(original)).hexdigest()[:8]


def _was_cut(original: str, stored: str) -> bool:
    """Whether `_fit` shortened `original` to `stored`."""
    return _mark(original) in stored
