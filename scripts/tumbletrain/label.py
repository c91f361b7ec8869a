"""Label a class's images: `python -m tumbletrain.label CLASS` opens LabelImg on them.

It reads the hand-off the `label` rule wrote (`data/{class}/.tumbletrain.json`,
`labelimg.py`): the class list and the folders to open, each an images
folder with the folder LabelImg saves that folder's images' XML in (usually
the same). The images of all of them are in one LabelImg window; opening an
image makes its folder's save folder LabelImg's (its "Change Save Dir"), so
LabelImg shows the file the annotations stage reads and saves over it.
`--images` opens given images or folders instead (a review batch).

LabelImg 1.8.6 (its last release) draws with float coordinates, which PyQt5
refuses on Python 3.10 and later: pressing `w` and moving the mouse over the
image ends LabelImg (`canvas.py` `paintEvent`, `TypeError: arguments did not
match any overloaded call: drawLine ... unexpected type 'float'`;
HumanSignal/labelImg issues 811, 872, 885, 1011). `patch_labelimg` rounds
those coordinates at start-up, without changing LabelImg's files. Remove it
when a LabelImg release fixes the calls.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from . import cli, store
from . import config as tt_config

log = logging.getLogger("tumbletrain.label")
# The hand-off file in a class's LabelImg folder (written by `labelimg`, the `label` rule).
MARKER = ".tumbletrain.json"
CLASSES_FILE = "predefined_classes.txt"
# The Debian packages Qt's xcb platform plugin (PyQt5-Qt5 5.15) loads beyond a
# base system (`ldd` of plugins/platforms/libqxcb.so); `make label-deps` installs them.
QT_PACKAGES = (
    "libxcb-icccm4",
    "libxcb-image0",
    "libxcb-keysyms1",
    "libxcb-randr0",
    "libxcb-render-util0",
    "libxcb-shape0",
    "libxcb-xinerama0",
    "libxcb-xkb1",
    "libxkbcommon-x11-0",
    "libx11-xcb1",
    "libgl1",
    "libfontconfig1",
    "libdbus-1-3",
    "libglib2.0-0",
)


def command(class_name: str) -> str:
    """The one command that opens a class's images in LabelImg."""
    return f"python -m tumbletrain.label {class_name}"


# --- the compatibility layer -------------------------------------------------------


def _whole(value):
    """A float coordinate as the int PyQt5's integer overloads take; anything else as it is."""
    return round(value) if isinstance(value, float) else value


def _whole_args(method):
    def call(self, *args):
        return method(self, *map(_whole, args))

    call.__name__ = method.__name__
    return call


def patch_labelimg() -> None:
    """Round the float coordinates LabelImg 1.8.6 hands to PyQt5's int-only overloads.

    Python 3.10 stopped converting floats to ints implicitly (`__int__`), and
    PyQt5 then refuses `QPainter.drawLine(float, ...)`: LabelImg crashes on the
    first box (HumanSignal/labelImg issues 811, 872, 885, 1011). The calls:
    `Canvas.paintEvent`'s `drawRect` and `drawLine` (and `Shape.paint`'s
    `drawText`, on the same painter), and `setValue` of the scroll bars and
    the zoom box (mouse wheel: `scroll_request`, `zoom_request`). Canvas makes
    its painter from its module's `QPainter`, so a subclass there takes them;
    LabelImg's files stay as installed. Remove when LabelImg fixes them.
    """
    from libs import canvas, zoomWidget
    from PyQt5 import QtGui, QtWidgets

    if getattr(canvas, "_tumbletrain_patched", False):
        return

    class Painter(QtGui.QPainter):
        drawLine = _whole_args(QtGui.QPainter.drawLine)
        drawRect = _whole_args(QtGui.QPainter.drawRect)
        drawText = _whole_args(QtGui.QPainter.drawText)

    canvas.QPainter = Painter
    zoomWidget.ZoomWidget.setValue = _whole_args(QtWidgets.QSpinBox.setValue)
    QtWidgets.QScrollBar.setValue = _whole_args(QtWidgets.QScrollBar.setValue)
    canvas._tumbletrain_patched = True


# --- what to open ------------------------------------------------------------------


def images_in(folder: Path) -> list[Path]:
    """The images directly in a folder, in LabelImg's order (natural, case-insensitive)."""

    def natural(path: Path) -> list:
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name.lower())]

    found = [
        p
        for p in folder.iterdir()
        if p.suffix.lower() in store.IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
    ]
    return sorted(found, key=natural)


def entries_of(
    pairs: Iterable[tuple[str | Path, str | Path]], base: Path
) -> list[tuple[Path, Path]]:
    """(image, save folder) of every image of the (images folder, save folder) pairs."""
    entries = []
    for images, save in pairs:
        folder = (base / Path(images).expanduser()).resolve()
        target = (base / Path(save).expanduser()).resolve()
        if folder.is_dir():
            entries += [(image, target) for image in images_in(folder)]
    return entries


def read_handoff(folder: Path, class_name: str) -> tuple[list[tuple[Path, Path]], Path]:
    """The images (each with its save folder) and class list the hand-off names."""
    marker = folder / MARKER
    if not marker.is_file():
        raise cli.UserError(
            f"{marker} does not exist: make the hand-off first, "
            f"`snakemake --cores all {folder}/{MARKER}` (or `label_all` for every class)"
        )
    try:
        handoff = json.loads(marker.read_text())
        pairs = handoff["folders"]
    except (ValueError, KeyError, TypeError):
        raise cli.UserError(
            f"{marker} is not a hand-off this version wrote; delete it and run "
            f"`snakemake --cores all {folder}/{MARKER}` again"
        ) from None
    # The paths are as the rule saw them, from the project folder (the marker's folder's
    # parent's parent for data/{class}); here they are taken from the working directory.
    entries = entries_of(pairs, Path.cwd())
    if not entries:
        raise cli.UserError(
            f"class {class_name!r} has no image to label in "
            f"{', '.join(images for images, _ in pairs) or folder}; harvest it first"
        )
    return entries, folder / CLASSES_FILE


def given_entries(paths: Sequence[Path], save_dir: Path | None) -> list[tuple[Path, Path]]:
    """`--images`: files and folders in the given order; XML beside each image or in `save_dir`."""
    entries = []
    for path in paths:
        path = path.expanduser().resolve()
        if path.is_dir():
            images = images_in(path)
        elif path.is_file() and path.suffix.lower() in store.IMAGE_SUFFIXES:
            images = [path]
        else:
            raise cli.UserError(f"{path} is no image and no folder; give images or folders")
        entries += [(image, (save_dir or image.parent).resolve()) for image in images]
    if not entries:
        raise cli.UserError(f"no image in {', '.join(map(str, paths))}")
    return entries


# --- the window --------------------------------------------------------------------


def check_display() -> None:
    """One ERROR line instead of Qt's abort when LabelImg cannot open a window here."""
    if platform.system() != "Linux" or os.environ.get("QT_QPA_PLATFORM", "xcb") != "xcb":
        return
    if not os.environ.get("DISPLAY"):
        raise cli.UserError(
            "no X display (DISPLAY is not set): run LabelImg on a desktop, or with "
            "`ssh -X`, or under Xvfb"
        )
    missing = missing_qt_libraries()
    if missing:
        raise cli.UserError(
            f"Qt cannot load its xcb platform plugin: {', '.join(missing)} not found; "
            f"on Debian/Ubuntu: `make label-deps` (sudo apt-get install {' '.join(QT_PACKAGES)})"
        )


def missing_qt_libraries() -> list[str]:
    """The shared libraries Qt's xcb plugin needs that the system lacks (by `ldd`)."""
    from PyQt5.QtCore import QLibraryInfo

    plugin = Path(QLibraryInfo.location(QLibraryInfo.PluginsPath)) / "platforms/libqxcb.so"
    if not plugin.is_file() or shutil.which("ldd") is None:
        return []
    result = subprocess.run(["ldd", str(plugin)], capture_output=True, text=True, check=False)
    return [line.split()[0] for line in result.stdout.splitlines() if "not found" in line]


def open_window(entries: Sequence[tuple[Path, Path]], class_file: Path, argv: list[str]):
    """LabelImg's main window on these images, each saved in its save folder: (app, window).

    The window's event loop is not started (`app.exec_()`), so a test can drive it.
    """
    check_display()
    patch_labelimg()
    from labelImg.labelImg import MainWindow, __appname__
    from libs.constants import FORMAT_PASCALVOC
    from libs.utils import new_icon
    from PyQt5.QtWidgets import QApplication, QListWidgetItem

    app = QApplication.instance() or QApplication(argv)
    app.setApplicationName(__appname__)
    app.setWindowIcon(new_icon("app"))
    save_of = {str(image): str(save) for image, save in entries}
    window = MainWindow(None, str(class_file), str(entries[0][1]))
    # Pascal VOC, whatever format LabelImg's settings remember: the hand-off's files are XML.
    window.set_format(FORMAT_PASCALVOC)
    load_file = window.load_file

    def load_with_its_save_folder(file_path=None):
        # LabelImg looks for and saves `<save folder>/<image stem>.xml`.
        window.default_save_dir = save_of.get(str(file_path), window.default_save_dir)
        return load_file(file_path)

    window.load_file = load_with_its_save_folder
    window.m_img_list = list(save_of)
    window.img_count = len(window.m_img_list)
    window.last_open_dir = str(entries[0][0].parent)
    for image in window.m_img_list:
        window.file_list_widget.addItem(QListWidgetItem(image))
    window.show()
    window.open_next_image()
    return app, window


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.parser(
        "label",
        "Open LabelImg on a class's images, with the class list, saving where the "
        "workflow reads the labels (the `label` rule's hand-off).",
    )
    parser.add_argument("class_name", metavar="CLASS", nargs="?", help="the class to label")
    parser.add_argument(
        "--folder",
        type=Path,
        help=f"the class's hand-off folder (default: {tt_config.LABELLING_FOLDER})",
    )
    parser.add_argument(
        "--images",
        type=Path,
        nargs="+",
        help="open these images and folders instead of a class's (in this order)",
    )
    parser.add_argument(
        "--save-dir",
        type=Path,
        help="with --images: save the XML here (default: beside each image)",
    )
    parser.add_argument(
        "--classes", type=Path, help="with --images: the class list (predefined_classes.txt)"
    )
    args = parser.parse_args(argv)
    if (args.class_name is None) == (args.images is None):
        parser.error("give a CLASS, or --images")
    if args.images is None and (args.save_dir or args.classes):
        parser.error("--save-dir and --classes go with --images")
    return args


def window_from_arguments(argv: list[str] | None):
    """(app, window) as the command line says, the event loop not started."""
    args = parse(argv)
    if args.images is not None:
        entries = given_entries(args.images, args.save_dir)
        class_file = args.classes or Path(CLASSES_FILE)
        if not class_file.is_file():
            raise cli.UserError(f"{class_file} does not exist: give the class list, --classes FILE")
    else:
        folder = args.folder or Path(tt_config.LABELLING_FOLDER.format(name=args.class_name))
        entries, class_file = read_handoff(folder, args.class_name)
    for save in sorted({save for _, save in entries}):
        save.mkdir(parents=True, exist_ok=True)
    log.info(
        "LabelImg: %d images in %d folders; class list %s",
        len(entries),
        len({image.parent for image, _ in entries}),
        class_file,
    )
    return open_window(entries, class_file, ["labelImg"])


def main(argv: list[str] | None = None) -> int:
    app, _window = window_from_arguments(argv)
    return app.exec_()


if __name__ == "__main__":
    cli.run(main)
