"""Drive a real LabelImg window as a person does: run as a script, on an X display.

    python tests/labelimg_gui.py RESULT.json [--draw CLASS X0 Y0 X1 Y1] [--unpatched]
        [--screenshot PNG] -- LAUNCHER ARGUMENTS...

It opens the window as `python -m tumbletrain.label LAUNCHER ARGUMENTS` does
(`label.window_from_arguments`) and, in LabelImg's own event loop, sends Qt's
test input events to it (`QTest`: keys and mouse buttons to the window and its
canvas, the pointer moved on the X server): it records the boxes LabelImg
shows for the first image, then, with `--draw`, presses `w`, moves the mouse
over the image, drags a box from (X0, Y0) to (X1, Y1) in image pixels, clicks
CLASS in LabelImg's label dialog, presses OK and then Ctrl+S. RESULT.json gets
the image, the save folder, the boxes shown before and after, and the status
bar's last message. `--unpatched` leaves out tumbletrain's compatibility
layer, to show that LabelImg 1.8.6 crashes without it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PyQt5.QtCore import QPoint, QPointF, Qt, QTimer
from PyQt5.QtTest import QTest
from PyQt5.QtWidgets import QApplication, QDialogButtonBox, QListWidget
from tumbletrain import label

STEP_MS = 50


def shapes(window) -> list[list]:
    """The boxes the canvas holds: [label, xmin, ymin, xmax, ymax] in image pixels."""
    boxes = []
    for shape in window.canvas.shapes:
        xs = [p.x() for p in shape.points]
        ys = [p.y() for p in shape.points]
        boxes.append([shape.label, min(xs), min(ys), max(xs), max(ys)])
    return boxes


def on_widget(canvas, x: float, y: float) -> QPoint:
    """The canvas widget's position of image pixel (x, y) (LabelImg's transform_pos inverted)."""
    point = (QPointF(x, y) + canvas.offset_to_center()) * canvas.scale
    return point.toPoint()


def pick_class(name: str, picked: list, window, screenshot: str | None) -> None:
    """Click `name` in LabelImg's label dialog, then OK (a person's two clicks)."""
    dialog = QApplication.activeModalWidget()
    if dialog is None:
        QTimer.singleShot(STEP_MS, lambda: pick_class(name, picked, window, screenshot))
        return
    items = dialog.findChild(QListWidget)
    item = items.findItems(name, Qt.MatchExactly)[0]
    QTest.mouseClick(items.viewport(), Qt.LeftButton, pos=items.visualItemRect(item).center())
    if screenshot:  # the screen where the window is: the dialog with the class list on it
        QTest.qWait(STEP_MS)
        area = window.frameGeometry()
        screen = QApplication.primaryScreen()
        screen.grabWindow(0, area.x(), area.y(), area.width(), area.height()).save(screenshot)
    ok = dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.Ok)
    picked.append(dialog.edit.text())
    QTest.mouseClick(ok, Qt.LeftButton)


def run(args: argparse.Namespace) -> int:
    if args.unpatched:
        label.patch_labelimg = lambda: None
    app, window = label.window_from_arguments(args.launcher)
    window.resize(1000, 700)
    window.set_fit_window(True)  # the image as large as the window shows it
    # Keys go to the active window (a person clicks it first; Xvfb has no window manager).
    window.activateWindow()
    assert QTest.qWaitForWindowActive(window), "the LabelImg window never became active"
    result: dict = {
        "image": window.file_path,
        "save_dir": window.default_save_dir,
        "shown": shapes(window),
        "classes": list(window.label_hist),
        "images": list(window.m_img_list),
    }
    picked: list[str] = []

    def finish() -> None:
        result["after"] = shapes(window)
        result["picked"] = picked
        result["status"] = window.statusBar().currentMessage()
        result["dirty"] = window.dirty
        Path(args.result).write_text(json.dumps(result))
        window.dirty = False  # saved, or not asked to: close without LabelImg's question
        window.close()
        app.quit()

    def draw() -> None:
        name, x0, y0, x1, y1 = args.draw
        canvas = window.canvas
        QTest.keyClick(window, Qt.Key_W)  # LabelImg's "Create RectBox"
        # Moving over the image in drawing mode paints the cross-hair: LabelImg
        # 1.8.6 crashes here on Python >= 3.10 without the compatibility layer.
        QTest.mouseMove(canvas, on_widget(canvas, float(x0) - 5, float(y0) - 5))
        QTest.mouseMove(canvas, on_widget(canvas, float(x0), float(y0)))
        QTest.mousePress(canvas, Qt.LeftButton, pos=on_widget(canvas, float(x0), float(y0)))
        QTest.mouseMove(canvas, on_widget(canvas, (float(x0) + float(x1)) / 2, float(y1)))
        QTest.mouseMove(canvas, on_widget(canvas, float(x1), float(y1)))
        QTimer.singleShot(STEP_MS, lambda: pick_class(name, picked, window, args.screenshot))
        # The release opens the label dialog, which runs until OK.
        QTest.mouseRelease(canvas, Qt.LeftButton, pos=on_widget(canvas, float(x1), float(y1)))
        QTimer.singleShot(STEP_MS, save)

    def save(tries: int = 40) -> None:
        # Ctrl+S reaches LabelImg once its window is active again after the dialog (Xvfb
        # has no window manager to hand the focus back at once): as a person, press again.
        window.activateWindow()
        QTest.qWait(STEP_MS)
        QTest.keyClick(QApplication.focusWidget() or window, Qt.Key_S, Qt.ControlModifier)
        if window.dirty and tries > 1:
            QTimer.singleShot(STEP_MS, lambda: save(tries - 1))
        else:
            QTimer.singleShot(STEP_MS, finish)

    QTimer.singleShot(STEP_MS * 4, draw if args.draw else finish)
    return app.exec_()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result")
    parser.add_argument("--draw", nargs=5, metavar=("CLASS", "X0", "Y0", "X1", "Y1"))
    parser.add_argument("--unpatched", action="store_true")
    parser.add_argument("--screenshot")
    argv = sys.argv[1:]
    split = argv.index("--")
    args = parser.parse_args(argv[:split])
    args.launcher = argv[split + 1 :]
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
