"""LabelImg XML becomes validated, repaired, per-class per-split lists.

Every XML file ends in exactly one of three states, each with a reason code:
kept, kept after a repair, or rejected. Nothing is dropped silently and no
input file is ever changed: repairs live only in the lists.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from lxml import etree
from PIL import Image, UnidentifiedImageError

from . import cli, fileio, labelformats, lists, neardup, prelabels, pseudo, sources, store, vocxml
from . import config as tt_config

log = logging.getLogger("tumbletrain.annotations")
# The config this command reads; its rule passes exactly this.
# Of the other classes, their names, and the folders of those sharing one with this class.
CONFIG = tt_config.stage("annotations", "split", classes="names", others=sources.sharing_specs)

# The rule name's ending for an image found under another suffix than the XML names.
OTHER_SUFFIX = "_other_suffix"
# A box may overshoot the image by this much (LabelImg lets a drag end past
# the edge); beyond it the box is taken to belong to another image.
TOLERANCE_FRACTION = 0.02
TOLERANCE_PIXELS = 5.0

# Reason codes: the stable vocabulary of rejected.tsv and summary.json.
REASONS = {
    **fileio.FILE_PROBLEMS,
    "empty_file": "the XML file is empty",
    "too_large": "the XML file is larger than any LabelImg file could be",
    "bad_encoding": "the file is not text in a declared or UTF-8 encoding",
    "not_xml": "the file is not well-formed XML",
    "doctype_forbidden": "the XML declares a DTD or entities (possible XML bomb or XXE); "
    "LabelImg never writes one",
    "not_voc": "the XML is not a Pascal VOC <annotation>",
    "image_not_found": "no image matches <path>, <folder>/<filename> or the file name",
    "image_outside_sources": "the image the XML names resolves (after symbolic links) outside "
    "the annotations folder, the class's folders and the image store",
    "image_unreadable": "the image file cannot be read as an image",
    "bad_orientation": "the image's EXIF orientation is not a number: which way is up "
    "cannot be told",
    "size_mismatch": "<size> differs from the image in aspect ratio: the boxes were drawn "
    "on another image",
    "duplicate_annotation": "another XML file annotates the same image",
    "no_objects": "no usable object is left in the file",
    "unknown_class": "the object's class is not configured (add it or an alias)",
    "box_not_numeric": "a box coordinate is missing or not a number",
    "box_degenerate": "the box has zero or negative area",
    "box_outside": "the box lies far outside the image",
    **labelformats.REASONS,
    **prelabels.REASONS,
}


@dataclass(frozen=True)
class ImageInfo:
    path: str | Path
    format: str
    width: int  # upright, as LabelImg displays it
    height: int
    orientation: int


@dataclass
class Outcome:
    """What happened to one XML file."""

    xml: str
    item: lists.ListedImage | None = None
    image_path: str = ""  # the image found, once found
    sha256: str = ""  # its content hash, once the file is otherwise usable
    owner: str = ""  # the class that lists it, when several classes read its folder
    split: str | None = None
    found_by: str = ""
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (object, reason)
    repairs: list[str] = field(default_factory=list)

    @property
    def kept(self) -> bool:
        return self.item is not None


@dataclass(frozen=True)
class ClassIndex:
    """Everything the validation of one class looks images and names up in."""

    class_name: str
    names: dict[str, str]  # casefolded name or alias -> configured class
    by_path: dict[str, str]  # resolved image path -> sha256 (from the manifest)
    store_of: dict[str, str]  # sha256 -> store path
    by_name: dict[str, list[str]]  # file name -> images of the class
    folder_images: list[str]  # images in the annotations folder
    sources: tuple[str, ...] = ()  # real paths of the folders images may come from
    known_files: frozenset[str] = frozenset()  # real paths of the manifest's local files
    annotation_roots: tuple[str, ...] = ()  # real paths of the annotation folders
    real_dirs: dict[str, str] = field(default_factory=dict, compare=False)  # cache

    def real_path(self, path: str) -> str:
        """`os.path.realpath`, resolving each directory once: one lstat per file."""
        if os.path.islink(path) or ".." in path.split(os.sep):
            return os.path.realpath(path)
        folder, name = os.path.split(os.path.abspath(path))
        real = self.real_dirs.get(folder)
        if real is None:
            real = self.real_dirs[folder] = os.path.realpath(folder)
        return os.path.join(real, name)

    def confines(self, path: str) -> bool:
        """Whether the file, symbolic links followed, lies inside the class's sources."""
        real = self.real_path(path)
        return real in self.known_files or fileio.inside(real, self.sources)

    def holds_annotation(self, path: str) -> bool:
        """Whether an annotation file, symbolic links followed, lies in the annotation folders."""
        return fileio.inside(self.real_path(path), self.annotation_roots)


def class_names_index(cfg: tt_config.WorkflowConfig) -> dict[str, str]:
    names = {}
    for cls in cfg.classes:
        for alias in (cls.name, *cls.aliases):
            names[tt_config.name_key(alias)] = cls.name
    return names


def read_manifest(path: Path | None) -> list[store.ManifestRow]:
    if path is None or not Path(path).exists():
        return []
    return store.read_manifest(path)


def build_index(
    cfg: tt_config.WorkflowConfig,
    class_name: str,
    manifest: list[store.ManifestRow],
    folder_images: list[str],
    sources: Iterable[str | Path] = (),
    annotation_folders: Iterable[str | Path] = (),
) -> ClassIndex:
    """`sources`: the folders (besides the manifest's own files) an image may come from;
    `annotation_folders`: those the annotation files (and classes.txt) must lie in."""
    by_path: dict[str, str] = {}
    store_of: dict[str, str] = {}
    by_name: dict[str, list[str]] = {}
    for row in manifest:
        store_of[row.sha256] = row.file
        by_path[os.path.abspath(row.file)] = row.sha256
        origin = row.image_url
        if origin and "://" not in origin:
            by_path[os.path.abspath(origin)] = row.sha256
            by_name.setdefault(os.path.basename(origin), []).append(origin)
    for image in folder_images:
        by_name.setdefault(os.path.basename(image), []).append(image)
    index = ClassIndex(
        class_name,
        class_names_index(cfg),
        by_path,
        store_of,
        by_name,
        folder_images,
        fileio.real_roots(sources),
        annotation_roots=fileio.real_roots(annotation_folders),
    )
    # index.real_path resolves each folder once (realpath per file was most of the index's time).
    known = frozenset(map(index.real_path, by_path))
    return dataclasses.replace(index, known_files=known, real_dirs=index.real_dirs)


def image_sources(
    cls: tt_config.ClassConfig, roots: list[Path], store_root: Path | None
) -> list[Path]:
    """Where a class's images may live: its annotation folders, its `folders:`, the store."""
    store = [store_root] if store_root else []
    return [*roots, *(Path(f).expanduser() for f in cls.folders), *store]


def scan(
    root: Path, roots: Sequence[str] | None = None
) -> tuple[list[str], list[str], list[tuple[str, fileio.FileProblem]]]:
    """The annotation files (`labelformats.is_annotation`) and the images under a folder,
    sorted; and those that are no readable regular file, with the reason: a FIFO would
    hang its reader, a broken link stop Snakemake. An annotation file that is a
    symbolic link resolving outside `roots` (`fileio.real_roots`; default: the
    folder's) is skipped too: a stranger's `labels.xml -> ~/.aws/credentials`
    must not be read into rejected.tsv.

    Paths are plain strings, spelt as `Path` would spell them: the per-file
    loop over tens of thousands of files spent a quarter of its time in pathlib.
    Symbolic links to folders are not followed (as `os.walk`).
    """
    files: list[str] = []
    images: list[str] = []
    skipped: list[tuple[str, fileio.FileProblem]] = []
    roots = fileio.real_roots([root]) if roots is None else roots

    def walk(folder: str) -> None:
        prefix = "" if folder == "." else os.path.join(folder, "")
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return  # as os.walk: a folder that cannot be listed is left out
        subfolders = [prefix + e.name for e in entries if e.is_dir(follow_symlinks=False)]
        names = {e.name for e in entries if not e.is_dir(follow_symlinks=False)}
        yolo_folder = labelformats.YOLO_CLASSES in names
        for entry in entries:
            if entry.name not in names:
                continue
            if labelformats.is_annotation(entry.name, yolo_folder):
                found = files
            elif os.path.splitext(entry.name)[1].lower() in store.IMAGE_SUFFIXES:
                found = images
            else:
                continue
            # The file type comes with the listing: only links and odd files cost a stat.
            problem = (
                None if entry.is_file(follow_symlinks=False) else fileio.file_problem(entry.path)
            )
            if (
                problem is None
                and found is files
                and entry.is_symlink()
                and not fileio.inside(os.path.realpath(entry.path), roots)
            ):
                problem = fileio.FileProblem(
                    "outside_folders",
                    f"{prefix + entry.name}: links outside the annotation folders",
                )
            if problem is None:
                found.append(prefix + entry.name)
            else:
                skipped.append((prefix + entry.name, problem))
        for subfolder in subfolders:
            walk(subfolder)

    if root.is_dir():
        walk(str(root))
    return files, images, skipped


def path_candidates(text: str) -> list[str]:
    """The forms an XML path can take: as written, and with Windows separators undone."""
    text = text.strip()
    if not text:
        return []
    forms = [text]
    if "\\" in text or re.match(r"^[A-Za-z]:", text):
        forms.append(PureWindowsPath(text).as_posix())
    return forms


def spelt_as_path(path: str) -> str:
    """`str(Path(path))`, without building a Path for a path that is already spelt that way."""
    if "//" in path or "/./" in path or path.startswith("./") or path.endswith(("/", "/.")):
        return str(Path(path))
    return path


def file_name_of(text: str) -> str:
    return PureWindowsPath(text).name if "\\" in text else PurePosixPath(text).name


def image_candidates(
    root: etree._Element, xml_path: str, index: ClassIndex
) -> Iterator[tuple[str, str]]:
    """The files an XML file may describe, best first, each with the rule that names it.

    Candidates are plain strings; only the one chosen is spelt the way `Path`
    spells it (the form the lists have always had).
    """
    path_text = (root.findtext("path") or "").strip()
    folder = (root.findtext("folder") or "").strip()
    filename = (root.findtext("filename") or "").strip()
    here = os.path.dirname(xml_path)
    for form in path_candidates(path_text):
        if os.path.isabs(form):
            yield form, "path"
        else:
            yield os.path.join(here, form), "path_relative_to_xml"
    if filename:
        yield os.path.join(here, filename), "beside_xml"
        yield os.path.join(here, "images", filename), "images_folder"
        if folder:
            yield os.path.join(os.path.dirname(here), folder, filename), "folder_filename"
    for name in filter(None, (filename, file_name_of(path_text))):
        for match in sorted(map(Path, index.by_name.get(name, []))):
            yield str(match), "by_name"
    # Images converted after labelling (`x.png` in the XML, `x.jpg` on disk): the
    # same stem with another suffix in the same places, taken only at the XML's size.
    stem, given_suffix = os.path.splitext(filename)
    places = [(here, "beside_xml"), (os.path.join(here, "images"), "images_folder")]
    if folder:
        places.append((os.path.join(os.path.dirname(here), folder), "folder_filename"))
    others = sorted(store.IMAGE_SUFFIXES - {given_suffix.lower()}) if stem else []
    for place, rule in places:
        for suffix in others:
            yield os.path.join(place, stem + suffix), rule + OTHER_SUFFIX
    # LabelImg names the XML after the image: try the same stem beside it.
    stem = os.path.splitext(xml_path)[0]
    for suffix in sorted(store.IMAGE_SUFFIXES):
        yield stem + suffix, "xml_stem"


def find_image(root: etree._Element, xml_path: str, index: ClassIndex) -> tuple[str, str] | str:
    """The image an XML file describes and the rule that found it; or a reason code.

    Only a file inside the class's sources is taken (symbolic links followed):
    an XML file from a stranger must not pull `/home/me/private.jpg` or
    `../../elsewhere.jpg` into the records and the report.
    """
    outside = False
    for path, rule in image_candidates(root, xml_path, index):
        if not os.path.isfile(path):
            continue
        if rule.endswith(OTHER_SUFFIX) and not declared_size_of(root, path):
            continue
        if index.confines(path):
            return spelt_as_path(path), rule
        outside = True
    return "image_outside_sources" if outside else "image_not_found"


def declared_size_of(root: etree._Element, path: str) -> bool:
    """Whether the image at `path` has the size the XML declares (as stored or upright)."""
    declared = parse_size(root)
    try:
        info = read_image_info(path)
    except IMAGE_ERRORS:
        return False
    sizes = {(info.width, info.height)}
    if info.orientation in store.ROTATING_ORIENTATIONS:
        sizes.add((info.height, info.width))
    return declared is not None and (round(declared[0]), round(declared[1])) in sizes


# What reading an image's header raises on a file that is no usable image.
IMAGE_ERRORS = (UnidentifiedImageError, Image.DecompressionBombError, *store.HEADER_ERRORS)


def read_image_info(path: str | Path) -> ImageInfo:
    """Header only: Pillow reads the size and EXIF without decoding pixels."""
    with Image.open(path) as image:
        fmt = (image.format or "").lower()
        width, height, orientation = store.upright_size(image)
    return ImageInfo(path, fmt, width, height, orientation)


def parse_size(root: etree._Element) -> tuple[float, float] | None:
    size = root.find("size")
    if size is None:
        return None
    try:
        width, height = float(size.findtext("width") or 0), float(size.findtext("height") or 0)
    except ValueError:
        return (0.0, 0.0)
    # nan, inf, 1e400: no size, as a word would be (round() of them raises).
    return (width, height) if math.isfinite(width) and math.isfinite(height) else (0.0, 0.0)


def reconcile_size(
    declared: tuple[float, float] | None, info: ImageInfo
) -> tuple[float, float, str | None] | str:
    """Scale factors from XML pixels to image pixels, and the repair made; or a reason."""
    if declared is None:
        return 1.0, 1.0, "size_missing"
    width, height = declared
    if width <= 0 or height <= 0:
        return 1.0, 1.0, "size_zero"
    if (round(width), round(height)) == (info.width, info.height):
        return 1.0, 1.0, None
    if info.orientation in store.ROTATING_ORIENTATIONS and (round(width), round(height)) == (
        info.height,
        info.width,
    ):
        return 1.0, 1.0, "size_rotated"
    sx, sy = info.width / width, info.height / height
    if abs(sx - sy) <= 0.01 * max(sx, sy):
        return sx, sy, "size_resized"
    return "size_mismatch"


def parse_box(obj: etree._Element) -> tuple[float, float, float, float] | None:
    box = obj.find("bndbox")
    if box is None:
        return None
    try:
        values = tuple(
            float((box.findtext(tag) or "").strip()) for tag in ("xmin", "ymin", "xmax", "ymax")
        )
    except ValueError:
        return None
    if any(v != v or v in (float("inf"), float("-inf")) for v in values):
        return None
    return values  # type: ignore[return-value]


def clip_box(
    box: tuple[float, float, float, float], width: float, height: float
) -> tuple[tuple[float, float, float, float] | None, str | None]:
    """Clip a box to the image within a tolerance; returns (box, repair) or (None, reason)."""
    xmin, ymin, xmax, ymax = box
    if xmax <= xmin or ymax <= ymin:
        return None, "box_degenerate"
    tol_x = max(TOLERANCE_PIXELS, TOLERANCE_FRACTION * width)
    tol_y = max(TOLERANCE_PIXELS, TOLERANCE_FRACTION * height)
    if xmin < -tol_x or ymin < -tol_y or xmax > width + tol_x or ymax > height + tol_y:
        return None, "box_outside"
    clipped = (max(0.0, xmin), max(0.0, ymin), min(float(width), xmax), min(float(height), ymax))
    if clipped[2] - clipped[0] < 1 or clipped[3] - clipped[1] < 1:
        return None, "box_degenerate"
    return clipped, ("box_clipped" if clipped != box else None)


def flag(obj: etree._Element, tag: str) -> int:
    try:
        return 1 if int(float((obj.findtext(tag) or "0").strip() or 0)) else 0
    except (ValueError, OverflowError):  # nan; inf
        return 0


def read_xml(xml_path: str | Path) -> etree._Element | str:
    """The parsed root, or a reason code."""
    try:
        data = fileio.read_regular(xml_path, vocxml.MAX_XML_BYTES)
    except fileio.FileProblem as problem:
        return problem.reason
    if not data.strip():
        return "empty_file"
    if b"<!DOCTYPE" in data[:4096].upper() or b"<!ENTITY" in data.upper():
        return "doctype_forbidden"
    try:
        tree = vocxml.parse(data)
    except etree.XMLSyntaxError as error:
        message = str(error).lower()
        return "bad_encoding" if "encoding" in message or "utf-8" in message else "not_xml"
    except ValueError:
        return "bad_encoding"
    root = tree.getroot()
    if tree.docinfo.internalDTD is not None or tree.docinfo.doctype:
        return "doctype_forbidden"
    if root.tag != "annotation":
        return "not_voc"
    if sum(1 for _ in root.iter("object")) > labelformats.MAX_BOXES:
        return "too_many_boxes"
    return root


def content_sha256(path: str, index: ClassIndex) -> str:
    """The manifest names images by content hash; hash only images it does not know."""
    known = index.by_path.get(os.path.abspath(path))
    if known:
        return known
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def image_of(path: str, filename: str | None) -> tuple[str, int, int] | str:
    """The image a YOLO or CreateML file is for: `filename`, else the file's own stem
    with an image suffix, beside the file or in `images/` below it; its upright size."""
    here = os.path.dirname(path)
    stem = os.path.splitext(os.path.basename(path))[0]
    names = [filename] if filename else [stem + suffix for suffix in sorted(store.IMAGE_SUFFIXES)]
    for folder in (here, os.path.join(here, "images")):
        for name in names:
            candidate = os.path.join(folder, name)
            if os.path.isfile(candidate):
                try:
                    info = read_image_info(candidate)
                except store.RejectedImage as rejected:
                    return rejected.reason
                except IMAGE_ERRORS:
                    return "image_unreadable"
                return name, info.width, info.height
    return "image_not_found"


def read_annotation(
    path: str, index: ClassIndex
) -> tuple[etree._Element, list[tuple[str, str]]] | str:
    """Any format LabelImg saves, as the Pascal VOC root and the objects already dropped."""
    reader = labelformats.READERS.get(os.path.splitext(path)[1].lower())
    if reader is not None:
        return reader(path, image_of, index.holds_annotation)
    root = read_xml(path)
    return root if isinstance(root, str) else (root, [])


def validate_xml(xml_path: str, index: ClassIndex) -> Outcome:
    outcome = Outcome(xml=xml_path)
    read = read_annotation(xml_path, index)
    if isinstance(read, str):
        outcome.rejected.append(("", read))
        return outcome
    root, dropped = read
    outcome.rejected += dropped
    found = find_image(root, xml_path, index)
    if isinstance(found, str):
        outcome.rejected.append(("", found))
        return outcome
    image_path, outcome.found_by = found
    outcome.image_path = image_path
    try:
        info = read_image_info(image_path)
    except store.RejectedImage as rejected:
        outcome.rejected.append(("", rejected.reason))
        return outcome
    except IMAGE_ERRORS:
        outcome.rejected.append(("", "image_unreadable"))
        return outcome
    scale = reconcile_size(parse_size(root), info)
    if isinstance(scale, str):
        outcome.rejected.append(("", scale))
        return outcome
    sx, sy, size_repair = scale
    if size_repair:
        outcome.repairs.append(size_repair)
    objects = []
    for position, obj in enumerate(root.iter("object")):
        raw_name = obj.findtext("name") or ""
        label = f"{position}:{raw_name.strip()[:40]}"
        name = index.names.get(tt_config.name_key(raw_name))
        if name is None:
            outcome.rejected.append((label, "unknown_class"))
            continue
        if name != raw_name:
            outcome.repairs.append("class_renamed")
        box = parse_box(obj)
        if box is None:
            outcome.rejected.append((label, "box_not_numeric"))
            continue
        scaled = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
        clipped, note = clip_box(scaled, info.width, info.height)
        if clipped is None:
            outcome.rejected.append((label, note or "box_degenerate"))
            continue
        if note:
            outcome.repairs.append(note)
        objects.append(
            lists.ListedObject(
                name=name,
                xmin=round(clipped[0], 2),
                ymin=round(clipped[1], 2),
                xmax=round(clipped[2], 2),
                ymax=round(clipped[3], 2),
                difficult=flag(obj, "difficult"),
                truncated=flag(obj, "truncated"),
                pose=(obj.findtext("pose") or "Unspecified").strip() or "Unspecified",
            )
        )
    if not objects:
        outcome.rejected.append(("", "no_objects"))
        return outcome
    sha = outcome.sha256 = content_sha256(image_path, index)
    stored = index.store_of.get(sha)
    outcome.item = lists.ListedImage(
        image=stored or image_path,
        sha256=sha,
        format=info.format,
        width=info.width,
        height=info.height,
        orientation=info.orientation,
        xml=xml_path,
        objects=tuple(objects),
    )
    return outcome


def user_split(xml_path: str, root: Path) -> str | None:
    """The original project's layout: data/{class}/{training,verification}/*.xml."""
    folder = str(root)
    prefix = "" if folder == "." else os.path.join(folder, "")
    if not xml_path.startswith(prefix):
        return None
    first = xml_path[len(prefix) :].split("/", 1)[0]
    return first if first in tt_config.SPLITS else None


def set_aside_prelabels(outcomes: list[Outcome]) -> None:
    """A review pre-label no person has touched is the model's, not a label (`prelabels`).

    Before duplicates are resolved: the model's boxes never win over a person's file.
    What else is wrong with it (no box found) is the model's, not the user's to fix.
    """
    for outcome in outcomes:
        if prelabels.untouched(outcome.xml):
            outcome.item = None
            outcome.rejected = [("", "prelabel_unreviewed")]


def resolve_duplicates(outcomes: list[Outcome]) -> None:
    """One XML per image: the most recently saved one wins (ties: the first path)."""
    by_sha: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        if outcome.kept:
            by_sha.setdefault(outcome.item.sha256, []).append(outcome)
    for group in by_sha.values():
        if len(group) < 2:
            continue
        group.sort(key=lambda o: (-os.stat(o.xml).st_mtime_ns, o.xml))
        for loser in group[1:]:
            loser.item = None
            loser.rejected.append(("", "duplicate_annotation"))


def whole_image_xml(manifest: list[store.ManifestRow], class_name: str, outdir: Path) -> list[str]:
    """One box covering each image, written as LabelImg XML into `outdir` (flushed
    to disk once, at the end, not once per file)."""
    written = []
    changed = False
    for row in manifest:
        width, height = row.width, row.height
        xml_path = outdir / f"{row.sha256}.xml"
        data = vocxml.labelimg_xml(
            folder=class_name,
            filename=Path(row.file).name,
            path=os.path.abspath(row.file),
            size=(width, height, 3),
            objects=[vocxml.VocObject(class_name, 0, 0, width, height)],
        )
        if not xml_path.exists() or xml_path.read_bytes() != data:
            fileio.write_bytes(xml_path, data, sync=False)
            changed = True
        written.append(str(xml_path))
    if changed:
        fileio.sync_folders([outdir])
    return written


def summarise(
    outcomes: list[Outcome],
    unlabelled: int,
    class_name: str,
    skipped_files: Sequence[tuple[str, fileio.FileProblem]] = (),
) -> tuple[dict, list[list[str]]]:
    reasons: Counter[str] = Counter(problem.reason for _, problem in skipped_files)
    repairs: Counter[str] = Counter()
    found_by: Counter[str] = Counter()
    splits: Counter[str] = Counter()
    objects_kept = 0
    rows = [[path, "", problem.reason, str(problem)] for path, problem in skipped_files]
    for outcome in outcomes:
        for obj, reason in outcome.rejected:
            reasons[reason] += 1
            rows.append([outcome.xml, obj, reason, REASONS[reason]])
        repairs.update(set(outcome.repairs))
        if outcome.kept:
            found_by[outcome.found_by] += 1
            splits[outcome.split] += 1
            objects_kept += len(outcome.item.objects)
    summary = {
        "class": class_name,
        "xml_files": len(outcomes),
        "kept": sum(o.kept for o in outcomes),
        "repaired": sum(bool(o.repairs) and o.kept for o in outcomes),
        "rejected_files": sum(not o.kept for o in outcomes),
        "objects_kept": objects_kept,
        "unlabelled_images": unlabelled,
        "skipped_files": len(skipped_files),
        "per_split": {s: splits.get(s, 0) for s in tt_config.SPLITS},
        "rejected_by_reason": dict(sorted(reasons.items())),
        "repairs_by_kind": dict(sorted(repairs.items())),
        "image_found_by": dict(sorted(found_by.items())),
    }
    return summary, sorted(rows)


# Files each worker process validates at a time, and the fewest per process
# that pay for starting it (a fork and the index it inherits, a few ms).
CHUNK_FILES = 256
MIN_FILES_PER_PROCESS = 1000
_worker_index: ClassIndex | None = None


def _start_worker(index: ClassIndex) -> None:
    global _worker_index
    _worker_index = index


def _validate_chunk(paths: list[str]) -> list[Outcome]:
    return [validate_xml(path, _worker_index) for path in paths]


def validate_files(paths: list[str], index: ClassIndex, processes: int = 1) -> Iterator[Outcome]:
    """Each file's outcome, in the order of `paths`, from up to `processes` processes.

    Every file is validated on its own; what depends on several (duplicates,
    splits, the lists) is decided afterwards from the outcomes in this order,
    so the result is the same for any number of processes.
    """
    processes = min(processes, len(paths) // MIN_FILES_PER_PROCESS)
    if processes <= 1:
        yield from (validate_xml(path, index) for path in paths)
        return
    from concurrent.futures import ProcessPoolExecutor  # only big classes pay its import

    chunks = [paths[i : i + CHUNK_FILES] for i in range(0, len(paths), CHUNK_FILES)]
    with ProcessPoolExecutor(processes, initializer=_start_worker, initargs=(index,)) as pool:
        for outcomes in pool.map(_validate_chunk, chunks):
            yield from outcomes


def near_duplicate_placements(
    split: tt_config.SplitConfig, kept: list[Outcome], tables: Sequence[Path]
) -> dict[str, neardup.Placement]:
    """Where each kept image's near-duplicate group goes, from every class's signatures.

    Images that no table has (found beside an XML, not harvested) are hashed here.
    """
    if not split.group_near_duplicates:
        return {}
    members = [m for table in tables for m in neardup.read_members(table)]
    known = {m.sha256 for m in members}
    for outcome in kept:
        if outcome.item.sha256 in known:
            continue
        known.add(outcome.item.sha256)
        try:
            signature = neardup.signature_of(outcome.item.image)
        except (OSError, ValueError) as error:
            log.warning("no signature for %s: %s", outcome.item.image, error)
            continue
        members.append(neardup.Member(outcome.item.sha256, 0.0, signature))
    wanted = [o.item.sha256 for o in kept]
    return neardup.place(members, split, split.near_duplicate_distance, wanted)


def near_duplicate_summary(
    split: tt_config.SplitConfig, kept: list[Outcome], placements: dict[str, neardup.Placement]
) -> dict:
    """Groups among the class's kept images, and what grouping changed against content splits."""
    groups: dict[str, list[Outcome]] = {}
    moved: Counter[str] = Counter()
    for outcome in kept:
        placed = placements.get(outcome.item.sha256)
        if placed is None or placed.size < 2:
            continue
        groups.setdefault(placed.group, []).append(outcome)
        if outcome.split != neardup.split_of(outcome.item.sha256, split):
            moved[f"to_{outcome.split}"] += 1
    straddling = sorted(
        group for group, members in groups.items() if len({o.split for o in members}) > 1
    )
    for group in straddling:
        log.warning(
            "near-duplicate group %s is split by the folders training/ and verification/: "
            "%s (kept as the folders say; move the files to one folder)",
            group[:12],
            ", ".join(sorted(o.xml for o in groups[group])),
        )
    largest = sorted(groups.items(), key=lambda item: (-placements[item[0]].size, item[0]))
    return {
        "grouping": split.group_near_duplicates,
        "distance": split.near_duplicate_distance,
        "groups": len(groups),
        "images_in_groups": sum(len(members) for members in groups.values()),
        "moved_from_content_split": {name: moved[f"to_{name}"] for name in tt_config.SPLITS},
        "user_split_straddles": [group[:12] for group in straddling],
        "largest": [
            {
                "group": group[:12],
                "size": placements[group].size,
                "split": members[0].split,
                "images": sorted(o.item.image for o in members),
            }
            for group, members in largest[:10]
        ],
    }


def scan_folders(
    folders: list[Path],
) -> tuple[list[tuple[str, Path]], list[str], list[tuple[str, fileio.FileProblem]]]:
    """`scan` of each folder: every XML file once, with the folder it was found in."""
    xmls: dict[str, Path] = {}
    images: dict[str, None] = {}
    skipped: dict[str, fileio.FileProblem] = {}
    roots = fileio.real_roots(folders)
    for folder in folders:
        found, pictures, problems = scan(folder, roots)
        for xml in found:
            xmls.setdefault(xml, folder)
        images.update(dict.fromkeys(pictures))
        skipped.update(problems)
    return list(xmls.items()), list(images), list(skipped.items())


def assign_owners(
    cfg: tt_config.WorkflowConfig,
    class_name: str,
    outcomes: list[Outcome],
    folder_of: dict[str, Path],
) -> tuple[list[Outcome], list[Outcome], list[str]]:
    """The outcomes this class lists, those other classes list, and the classes it shares with.

    Paths are compared resolved, through the folder each file was found in
    (resolving every file would cost a system call per path component).
    """
    sharing = [
        (cls.name, sources.resolved_folders(cls)) for cls in cfg.classes if cls.given("folders")
    ]
    mine = dict(sharing)[class_name]
    sharing = [(n, fs) for n, fs in sharing if n == class_name or sources.overlap(mine, fs)]
    if len(sharing) < 2:
        return outcomes, [], []
    resolved_root = {root: sources.resolved(str(root)) for root in set(folder_of.values())}
    kept, given = [], []
    for outcome in outcomes:
        root = folder_of[outcome.xml]
        where = os.path.join(resolved_root[root], os.path.relpath(outcome.xml, root))
        reading = [n for n, fs in sharing if any(sources.contains(f, where) for f in fs)]
        names = [o.name for o in outcome.item.objects] if outcome.kept else []
        outcome.owner = sources.owner(reading, names)
        (kept if outcome.owner == class_name else given).append(outcome)
    return kept, given, [n for n, _ in sharing if n != class_name]


def split_changes(kept: list[Outcome], memory: Path | None) -> dict:
    """The images whose split differs from the last run's, reported; then this run's remembered.

    Splits are stable by design: what moves an image is a new image linking its
    near-duplicate group to an older group in the other split, or changed split
    settings. `memory` (sha256 -> split) is kept between runs beside the caches.
    """
    if memory is None:
        return {}
    before: dict[str, str] = {}
    if memory.is_file():
        try:
            before = {row["sha256"]: row["split"] for row in fileio.read_tsv(memory)}
        except (fileio.TableError, KeyError) as error:
            log.warning(
                "%s is unreadable (%s): split changes are not reported this run", memory, error
            )
    moved = sorted(
        (o.item.image, before[o.item.sha256], o.split)
        for o in kept
        if before.get(o.item.sha256, o.split) != o.split
    )
    if moved:
        shown = ", ".join(f"{image} ({old} -> {new})" for image, old, new in moved[:10])
        log.warning(
            "%d images changed split since the last run (a new near-duplicate linked their "
            "group to an older one in the other split, or the split settings changed): %s%s",
            len(moved),
            shown,
            " ..." if len(moved) > 10 else "",
        )
    memory.parent.mkdir(parents=True, exist_ok=True)
    fileio.write_tsv(memory, ("sha256", "split"), sorted({(o.item.sha256, o.split) for o in kept}))
    return {
        "to": {name: sum(new == name for _, _, new in moved) for name in tt_config.SPLITS},
        "images": [{"image": image, "from": old, "to": new} for image, old, new in moved[:20]],
    }


# The files a class's validation writes, by their usual names (`--outdir` by hand).
OUTPUTS = {
    **{split: f"{split}.tsv" for split in tt_config.SPLITS},
    "rejected": "rejected.tsv",
    "summary": "summary.json",
}


def validate_class(
    cfg: tt_config.WorkflowConfig,
    class_name: str,
    manifest_path: Path | None,
    outputs: dict[str, Path] | Path,
    whole_image_dir: Path | None = None,
    store_root: Path | None = None,
    processes: int = 1,
    signatures: Sequence[Path] | None = None,
    split_memory: Path | None = None,
    pseudo_list: Path | None = None,
) -> dict:
    """Validate a class's annotations; `outputs` holds the paths of `OUTPUTS` (a folder:
    their usual names in it), and `whole_image_dir` defaults to whole_image/ beside the
    summary."""
    if not isinstance(outputs, dict):
        outputs = cli.in_folder(OUTPUTS, outputs)
    cls = cfg.get_class(class_name)
    manifest = read_manifest(manifest_path)
    if cls.annotation == "whole_image":
        whole_dir = whole_image_dir or outputs["summary"].parent / "whole_image"
        folders = [whole_dir]
        found = [(xml, whole_dir) for xml in whole_image_xml(manifest, class_name, whole_dir)]
        folder_images: list[str] = []
        skipped_files: list[tuple[str, fileio.FileProblem]] = []
    else:
        folders = [Path(f).expanduser() for f in sources.annotation_folders(cls)]
        found, folder_images, skipped_files = scan_folders(folders)
    folder_of = dict(found)
    xml_paths = list(folder_of)
    index = build_index(
        cfg, class_name, manifest, folder_images, image_sources(cls, folders, store_root), folders
    )
    outcomes = list(
        cli.progress(
            validate_files(xml_paths, index, processes),
            f"{class_name} XML",
            len(xml_paths),
            "files",
            log,
        )
    )
    set_aside_prelabels(outcomes)
    resolve_duplicates(outcomes)
    every_outcome = outcomes
    outcomes, given, shared_with = assign_owners(cfg, class_name, outcomes, folder_of)
    kept = [o for o in outcomes if o.kept]
    placements = near_duplicate_placements(cfg.split, kept, signatures or [])
    for outcome in kept:
        placed = placements.get(outcome.item.sha256)
        outcome.split = user_split(outcome.xml, folder_of[outcome.xml]) or (
            placed.split if placed else neardup.split_of(outcome.item.sha256, cfg.split)
        )
    labelled = {o.item.sha256 for o in every_outcome if o.kept}
    unlabelled = count_unlabelled(manifest, index, every_outcome, labelled)
    if not xml_paths and not manifest and not any(folder.is_dir() for folder in folders):
        raise cli.UserError(
            f"class {class_name!r} has no images and no annotations folder "
            f"{', '.join(map(str, folders))}; "
            "harvest it first or set `annotations_dir` for the class"
        )
    source = "whole_image" if cls.annotation == "whole_image" else "human"
    pseudo_items = []  # the model's boxes, for training only (`pseudo.py`)
    if cls.pseudo_labels is not None and pseudo_list is not None and pseudo_list.is_file():
        pseudo_items = pseudo.training_items(pseudo_list, cfg.split, labelled, signatures or [])
    for split in tt_config.SPLITS:
        items = [o.item for o in outcomes if o.kept and o.split == split]
        items = [dataclasses.replace(i, source=source) for i in items]
        lists.write_list(outputs[split], items + (pseudo_items if split == "training" else []))
    summary, rejected_rows = summarise(outcomes, unlabelled, class_name, skipped_files)
    by_source = {source: summary["kept"], "pseudo": len(pseudo_items)}
    summary["labels_by_source"] = {k: n for k, n in by_source.items() if n}
    summary["near_duplicates"] = near_duplicate_summary(cfg.split, kept, placements)
    if shared_with:
        summary["shared_folders"] = {
            "with": shared_with,
            "rule": sources.OWNER_RULE,
            "listed_by_other_classes": dict(sorted(Counter(o.owner for o in given).items())),
        }
    if split_memory is not None:
        summary["moved_since_last_run"] = split_changes(kept, split_memory)
    fileio.write_tsv(outputs["rejected"], lists.REJECTED_COLUMNS, rejected_rows)
    fileio.write_json(outputs["summary"], summary)
    return summary


def count_unlabelled(
    manifest: list[store.ManifestRow],
    index: ClassIndex,
    outcomes: list[Outcome],
    labelled: set[str],
) -> int:
    """Distinct images of the class, by content, that no kept annotation describes.

    An image in the folders is known by path (the manifest's, or an annotation
    that found it) or by inode (a hard link of a stored image); the others are
    hashed only when another image has their byte size, since only then can
    they be a copy under another name.
    """
    content = {row.sha256 for row in manifest}
    known = dict(index.by_path)
    sizes: dict[int, set[str]] = {}
    by_inode: dict[tuple[int, int], str] = {}
    for row in manifest:
        with contextlib.suppress(OSError):
            stat = os.stat(row.file)
            by_inode[(stat.st_dev, stat.st_ino)] = row.sha256
            sizes.setdefault(stat.st_size, set()).add(row.sha256)
    for outcome in outcomes:
        if outcome.sha256:
            known[os.path.abspath(outcome.image_path)] = outcome.sha256
    unknown: dict[int, list[str]] = {}
    for image in index.folder_images:
        stat = os.stat(image)
        sha = known.get(os.path.abspath(image)) or by_inode.get((stat.st_dev, stat.st_ino))
        if sha is None:
            unknown.setdefault(stat.st_size, []).append(image)
        else:
            content.add(sha)
            sizes.setdefault(stat.st_size, set()).add(sha)
    distinct_unknown = 0
    for size, images in unknown.items():
        if len(images) == 1 and size not in sizes:
            distinct_unknown += 1
        else:
            content.update(content_sha256(image, index) for image in images)
    return len(content - labelled) + distinct_unknown


def main(argv: list[str] | None = None) -> int:
    parser = tt_config.class_command_parser(
        "annotations", "Validate and repair one class's LabelImg XML into per-split lists."
    )
    parser.add_argument("--manifest", type=Path, help="the harvest's manifest of the class")
    cli.add_outputs(parser, **OUTPUTS)
    parser.add_argument(
        "--whole-image-dir",
        type=Path,
        help="where whole_image XML is generated (made even if empty; "
        "default: whole_image/ beside the summary)",
    )
    parser.add_argument(
        "--store",
        type=Path,
        help="the image store, one of the places an XML file's image may be",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="validate in up to this many processes (the rule's threads; default: %(default)s)",
    )
    parser.add_argument(
        "--signatures",
        type=Path,
        nargs="*",
        default=[],
        help="every class's signature table (the signatures stage's): near-duplicate groups",
    )
    parser.add_argument(
        "--pseudo",
        type=Path,
        help="the class's pseudo-label list (review's), added to training when the class "
        "sets pseudo_labels",
    )
    parser.add_argument(
        "--split-memory",
        type=Path,
        help="each image's split as of the last run (read and updated): changes are reported",
    )
    args = parser.parse_args(argv)
    cfg = tt_config.from_arguments(args, CONFIG)
    outputs = cli.outputs(args)
    if args.whole_image_dir:
        # The rule declares it: it exists after the job, empty for a labelled class.
        args.whole_image_dir.mkdir(parents=True, exist_ok=True)
    memory_dir = args.split_memory.parent if args.split_memory else None
    folders = sorted({path.parent for path in outputs.values()})
    fileio.clean_leftovers(*folders, args.whole_image_dir, memory_dir, logger=log)
    summary = validate_class(
        cfg,
        args.class_name,
        args.manifest,
        outputs,
        args.whole_image_dir,
        args.store,
        args.processes,
        args.signatures,
        args.split_memory,
        args.pseudo,
    )
    log.info(
        "%s: %d XML files, %d kept (%d repaired), %d rejected, %d unlabelled images; %s",
        args.class_name,
        summary["xml_files"],
        summary["kept"],
        summary["repaired"],
        summary["rejected_files"],
        summary["unlabelled_images"],
        summary["per_split"],
    )
    if summary["kept"] == 0 and not summary.get("shared_folders", {}).get(
        "listed_by_other_classes"
    ):
        why = "".join(f"; {n} {r}: {REASONS[r]}" for r, n in summary["rejected_by_reason"].items())
        raise cli.UserError(
            f"class {args.class_name!r} has no usable annotations "
            f"({summary['xml_files']} XML files{why}); "
            f"label its images with LabelImg (see {outputs['rejected']}) "
            "or set `annotation: whole_image` for the class"
        )
    return 0


if __name__ == "__main__":
    cli.run(main)
