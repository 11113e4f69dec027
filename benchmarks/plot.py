"""A PNG line chart of fire lateness against the number of jobs, with the standard library only.

The PNG is written by hand (zlib + struct: IHDR, one IDAT, IEND; 8-bit RGB, filter 0).
Text uses a built-in 5x7 bitmap font (upper-case letters, digits and a little punctuation),
drawn at twice its size. Both axes are logarithmic (lateness spans milliseconds to seconds);
p50 lines are solid, p99 lines dashed, one colour per implementation.
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

RGB = tuple[int, int, int]
WHITE, BLACK, GREY, LIGHT = (255, 255, 255), (0, 0, 0), (120, 120, 120), (225, 225, 225)

# 5x7 glyphs, one string of seven 5-pixel rows each ('#' = ink)
_GLYPHS = {
    "0": ".###.#...##..###.#.###..##...#.###.", "1": "..#...##....#....#....#....#...###.",
    "2": ".###.#...#....#...#...#...#...#####", "3": "#####...#...#.....#.....##...#.###.",
    "4": "...#...##..#.#.#..#.#####...#....#.", "5": "######....####.....#....##...#.###.",
    "6": "..##..#...#....####.#...##...#.###.", "7": "#####....#...#...#...#....#....#...",
    "8": ".###.#...##...#.###.#...##...#.###.", "9": ".###.#...##...#.####....#...#..##..",
    "A": ".###.#...##...#######...##...##...#", "B": "####.#...##...#####.#...##...#####.",
    "C": ".###.#...##....#....#....#...#.###.", "D": "###..#..#.#...##...##...##..#.###..",
    "E": "######....#....####.#....#....#####", "F": "######....#....####.#....#....#....",
    "G": ".###.#...##....#.####...##...#.####", "H": "#...##...##...#######...##...##...#",
    "I": ".###...#....#....#....#....#...###.", "J": "..###...#....#....#....#.#..#..##..",
    "K": "#...##..#.#.#..##...#.#..#..#.#...#", "L": "#....#....#....#....#....#....#####",
    "M": "#...###.###.#.##.#.##...##...##...#", "N": "#...##...###..##.#.##..###...##...#",
    "O": ".###.#...##...##...##...##...#.###.", "P": "####.#...##...#####.#....#....#....",
    "Q": ".###.#...##...##...##.#.##..#..##.#", "R": "####.#...##...#####.#.#..#..#.#...#",
    "S": ".####.....#.....###.....#....#####.", "T": "#####..#....#....#....#....#....#..",
    "U": "#...##...##...##...##...##...#.###.", "V": "#...##...##...##...##...#.#.#...#..",
    "W": "#...##...##...##.#.##.#.##.#.#.#.#.", "X": "#...##...#.#.#...#...#.#.#...##...#",
    "Y": "#...##...#.#.#...#....#....#....#..", "Z": "#####....#...#...#...#...#....#####",
    " ": "." * 35, ".": "." * 25 + ".##...##..", ",": "................##...##....#...#...", "-": "." * 15 + "#####" + "." * 15,
    "/": "....#....#...#...#...#...#....#....", "(": "...#...#...#....#....#.....#.....#.",
    ")": ".#.....#.....#....#....#...#...#...", ":": "......##...##........##...##.......",
    "%": "##...##..#...#...#...#...#..##...##", "=": "..........#####.....#####..........",
    "+": ".......#....#..#####..#....#.......", "_": "." * 30 + "#####",
}
FONT = {ch: [bits[i * 5:(i + 1) * 5] for i in range(7)] for ch, bits in _GLYPHS.items()}


class Canvas:
    def __init__(self, width: int, height: int, background: RGB = WHITE) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(background) * (width * height))

    def dot(self, x: int, y: int, color: RGB) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            i = (y * self.width + x) * 3
            self.pixels[i:i + 3] = bytes(color)

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: RGB) -> None:
        for y in range(max(0, y0), min(self.height, y1 + 1)):
            for x in range(max(0, x0), min(self.width, x1 + 1)):
                self.dot(x, y, color)

    def line(self, x0: float, y0: float, x1: float, y1: float, color: RGB, width: int = 1,
             dash: int = 0) -> None:
        """A straight line stepped pixel by pixel; `dash` > 0 draws dash-long pieces with gaps."""
        steps = max(1, int(max(abs(x1 - x0), abs(y1 - y0))))
        for i in range(steps + 1):
            if dash and (i // dash) % 2:
                continue
            x, y = x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps
            self.rect(round(x) - width // 2, round(y) - width // 2, round(x) + (width - 1) // 2,
                      round(y) + (width - 1) // 2, color)

    def text(self, x: int, y: int, text: str, color: RGB = BLACK, scale: int = 2) -> int:
        """Draw `text` with its top-left corner at (x, y); returns the x after it."""
        for ch in text.upper():
            for row, bits in enumerate(FONT.get(ch, FONT[" "])):
                for col, bit in enumerate(bits):
                    if bit == "#":
                        self.rect(x + col * scale, y + row * scale, x + (col + 1) * scale - 1,
                                  y + (row + 1) * scale - 1, color)
            x += 6 * scale
        return x

    def png(self) -> bytes:
        raw = b"".join(b"\x00" + bytes(self.pixels[y * self.width * 3:(y + 1) * self.width * 3])
                       for y in range(self.height))

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + \
            chunk(b"IEND", b"")


def text_width(text: str, scale: int = 2) -> int:
    return len(text) * 6 * scale


# -- the chart -------------------------------------------------------------------------------------

Series = tuple[str, RGB, bool, list[tuple[float, float]]]  # label, colour, dashed, points (x, y)


class LogAxis:
    def __init__(self, low: float, high: float, start_px: float, end_px: float) -> None:
        self.lo, self.hi = math.log10(low), math.log10(high)
        self.start_px, self.end_px = start_px, end_px

    def __call__(self, value: float) -> float:
        frac = (math.log10(max(value, 10 ** self.lo)) - self.lo) / (self.hi - self.lo)
        return self.start_px + frac * (self.end_px - self.start_px)

    def decades(self) -> list[float]:
        return [10.0 ** e for e in range(math.floor(self.lo), math.ceil(self.hi) + 1) if self.lo <= e <= self.hi]


def line_chart(series: list[Series], title: str, x_label: str, y_label: str, width: int = 900,
               height: int = 560) -> bytes:
    canvas = Canvas(width, height)
    left, right, top, bottom = 110, width - 20, 60, height - 200
    xs = [x for *_, pts in series for x, _ in pts]
    ys = [y for *_, pts in series for _, y in pts if y > 0]
    x_axis = LogAxis(min(xs) / 2, max(xs) * 2, left, right)
    y_axis = LogAxis(10 ** math.floor(math.log10(min(ys))), 10 ** math.ceil(math.log10(max(ys)) + 1e-9), bottom, top)
    canvas.text(left, 15, title, scale=2)
    for value in y_axis.decades():
        y = round(y_axis(value))
        canvas.line(left, y, right, y, LIGHT)
        label = f"{value:,.0f}" if value >= 1 else f"{value:g}"
        canvas.text(left - 10 - text_width(label), y - 7, label)
    for value in sorted(set(xs)):
        x = round(x_axis(value))
        canvas.line(x, top, x, bottom, LIGHT)
        label = f"{value:,.0f}"
        canvas.text(x - text_width(label) // 2, bottom + 10, label)
    canvas.line(left, top, left, bottom, BLACK, 2)
    canvas.line(left, bottom, right, bottom, BLACK, 2)
    canvas.text(left - 100, top - 25, y_label, GREY)
    canvas.text((left + right - text_width(x_label)) // 2, bottom + 35, x_label, GREY)
    for _, color, dashed, points in series:
        pixels = [(x_axis(x), y_axis(y)) for x, y in sorted(points) if y > 0]
        for (x0, y0), (x1, y1) in zip(pixels, pixels[1:], strict=False):
            canvas.line(x0, y0, x1, y1, color, 3, dash=8 if dashed else 0)
        for px, py in pixels:
            canvas.rect(round(px) - 4, round(py) - 4, round(px) + 4, round(py) + 4, color)
    _legend(canvas, series, left, bottom + 70)
    return canvas.png()


def _legend(canvas: Canvas, series: list[Series], x0: int, y0: int) -> None:
    column_w = (canvas.width - x0 - 20) // 2
    for i, (label, color, dashed, _) in enumerate(series):
        x, y = x0 + (i % 2) * column_w, y0 + (i // 2) * 26
        canvas.line(x, y + 7, x + 40, y + 7, color, 3, dash=8 if dashed else 0)
        canvas.text(x + 50, y, label[: (column_w - 60) // 12])


# -- from the suite's summary rows ---------------------------------------------------------------

IMPLS: list[tuple[str, str, RGB]] = [  # (case suffix or side, label, colour)
    ("end to end", "PIKO + SQLITE", (31, 97, 204)),
    ("kernel only", "PIKO KERNEL", (40, 160, 70)),
    ("peer", "APSCHEDULER", (220, 100, 20)),
    ("peer on sqlite", "APSCHEDULER + SQLITE", (170, 60, 150)),
    ("ceiling", "LOOP.CALL_AT", (150, 150, 150)),
]
_CASE = re.compile(r"^([\d,]+) (\w+) jobs, (.+?)(?: \(.*\))?$")


def lateness_series(summary: Iterable[dict[str, Any]], kind: str = "interval") -> list[Series]:
    """p50 and p99 lateness per implementation, from the scheduler's summary rows of one trigger kind."""
    points: dict[tuple[str, str], dict[float, float]] = {}
    for row in summary:
        match = _CASE.match(str(row.get("case", "")))
        if row.get("bench") != "scheduler" or not match or match.group(2) != kind:
            continue
        if row.get("metric") not in ("lateness p50", "lateness p99"):
            continue
        jobs, which, pct = float(match.group(1).replace(",", "")), match.group(3), row["metric"][-3:]
        peer = "peer on sqlite" if "SQLAlchemyJobStore" in str(row.get("peer")) else "peer"
        sides = [(which, row.get("piko")), (peer, row.get("peer_stats")), ("ceiling", row.get("ceiling_stats"))]
        for side, stats in sides:
            if stats:
                points.setdefault((side, pct), {})[jobs] = stats["median"]
    series: list[Series] = []
    for side, label, color in IMPLS:
        for pct in ("p50", "p99"):
            pts = points.get((side, pct))
            if pts:
                series.append((f"{label} {pct.upper()}", color, pct == "p99", sorted(pts.items())))
    return series


def lateness_chart(summary: list[dict[str, Any]], path: str | Path) -> Path | None:
    """Write the fire-lateness PNG; None when the summary holds no scheduler lateness rows."""
    for kind in ("interval", "cron"):
        series = lateness_series(summary, kind)
        if series:
            break
    else:
        return None
    title = f"FIRE LATENESS VS JOBS, {kind.upper()} 1 S (LOWER IS BETTER)"
    data = line_chart(series, title, "NUMBER OF JOBS (ALL FIRING EVERY SECOND)", "MS")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target
