"""An ipywidgets front end to :class:`osgha_lite.apps.search.Searcher`: display only.

:func:`search_widget` shows one column per space (e.g. the frozen backbone and
OS-HGAdapter): type a caption and each column lists its top images; press
*captions* under an image to see that image's top captions in every space.
All ranking is done by the searchers (tested in ``tests/test_search.py``);
this module lays out their answers and the time each took.
"""

from __future__ import annotations

import html
import io
import time
from functools import lru_cache
from pathlib import Path

from osgha_lite.paths import display_path


@lru_cache(maxsize=4096)
def thumbnail_bytes(path: str, size: int = 160) -> bytes:
    """A JPEG thumbnail of an image file, at most ``size`` pixels a side."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def search_widget(searchers: dict, k: int = 5, k_captions: int = 5, thumb: int = 150,
                  initial_query: str = ""):
    """A text box, one column of top-``k`` images per searcher, and the top captions of a picked image.

    ``searchers`` maps a column title to a :class:`~osgha_lite.apps.search.Searcher`
    over the same gallery; gallery images are picked by their row, so the
    caption query reuses the cached gallery vectors.
    """
    import ipywidgets as widgets

    query = widgets.Text(value=initial_query, placeholder="type a caption, press Enter",
                         continuous_update=False, layout=widgets.Layout(width="60%"))
    button = widgets.Button(description="Search", button_style="primary")
    status = widgets.HTML()
    columns = widgets.HBox()
    captions = widgets.HTML()

    def show_captions(row: int) -> None:
        parts = []
        for title, searcher in searchers.items():
            started = time.perf_counter()
            table = searcher.image_to_captions(int(row), k_captions)
            took = 1000 * (time.perf_counter() - started)
            items = "".join(f"<li>{html.escape(c)} <small>({s:.3f})</small></li>"
                            for c, s in zip(table.caption, table.score))
            parts.append(f"<div style='flex:1;padding-right:1em'><b>{html.escape(title)}</b> "
                         f"<small>{took:.0f} ms</small><ol>{items}</ol></div>")
        name = display_path(Path(next(iter(searchers.values())).images.paths[int(row)]).name)
        captions.value = (f"<b>Top captions of {html.escape(name)}</b>"
                          f"<div style='display:flex'>{''.join(parts)}</div>")

    def run(_=None) -> None:
        text = query.value.strip()
        if not text:
            status.value = "<i>type a caption first</i>"
            return
        boxes, times = [], []
        for title, searcher in searchers.items():
            started = time.perf_counter()
            table = searcher.text_to_images(text, k)
            times.append(f"{html.escape(title)}: {1000 * (time.perf_counter() - started):.0f} ms")
            cells = [widgets.HTML(f"<b>{html.escape(title)}</b>")]
            for rank, score, row, path in zip(table["rank"], table.score, table["index"], table.path):
                pick = widgets.Button(description=f"#{rank} captions ({score:.2f})",
                                      layout=widgets.Layout(width=f"{thumb}px"))
                pick.on_click(lambda _, row=int(row): show_captions(row))
                cells.append(widgets.VBox([widgets.Image(value=thumbnail_bytes(str(path), thumb), format="jpeg",
                                                         width=thumb), pick]))
            boxes.append(widgets.VBox(cells, layout=widgets.Layout(margin="0 1em 0 0")))
        columns.children = boxes
        status.value = "<small>query time: " + "; ".join(times) + "</small>"

    button.on_click(run)
    query.observe(run, names="value")  # Enter (or leaving the box) sets the value
    if initial_query:
        run()
    return widgets.VBox([widgets.HBox([query, button]), status, columns, captions])
