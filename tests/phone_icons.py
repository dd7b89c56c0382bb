"""The web app's PNG icons, drawn from serve/static/icons/icon.svg by Debian's Chromium (no image
library, nothing downloaded): `python -m tests.phone_icons` writes them again after a change to
the SVG. The maskable ones fill their whole square and keep the drawing inside the middle 80 %,
the zone a phone never crops (a circle, a squircle); the others keep the SVG's rounded corners on
a transparent background."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Browser, sync_playwright

from tests.browser import CHROMIUM, CHROMIUM_ARGS

ICONS = Path(__file__).resolve().parent.parent / "serve" / "static" / "icons"
SIZES = {"icon": (48, 96, 144, 192, 512), "maskable": (180, 192, 512)}  # 180: Apple's, square
_MASKABLE_SCALE = 0.7  # the drawing's share of the square: inside the safe 80 % with a margin


def svg_at(size: int, *, maskable: bool) -> str:
    """The icon as an HTML page `size` pixels square."""
    svg = (ICONS / "icon.svg").read_text()
    if maskable:
        # A square backdrop to the edges, the drawing scaled down around the centre.
        offset = 256 * (1 - _MASKABLE_SCALE)
        inner = svg.split(">", 1)[1].rsplit("</svg>", 1)[0]
        svg = (
            '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 512 512">'
            '<rect width="512" height="512" fill="#1d2330"/>'
            f'<g transform="translate({offset} {offset}) scale({_MASKABLE_SCALE})">{inner}</g>'
            "</svg>"
        )
    sized = svg.replace("<svg ", f'<svg width="{size}" height="{size}" ', 1)
    return f"<!doctype html><html><body style='margin:0'>{sized}</body></html>"


def render(browser: Browser) -> list[Path]:
    """Writes every PNG icon; returns their paths."""
    written = []
    for kind, sizes in SIZES.items():
        for size in sizes:
            page = browser.new_page(viewport={"width": size, "height": size})
            try:
                page.set_content(svg_at(size, maskable=kind == "maskable"))
                path = ICONS / f"{kind}-{size}.png"
                page.screenshot(path=str(path), omit_background=True)
                written.append(path)
            finally:
                page.close()
    return written


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's header (its IHDR chunk)."""
    head = path.read_bytes()[:24]
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise ValueError(f"{path} is not a PNG")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


if __name__ == "__main__":
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for icon in render(chromium):
                print(icon.relative_to(ICONS.parent.parent.parent), png_size(icon))
        finally:
            chromium.close()
