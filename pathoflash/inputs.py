"""Turn what the user typed (slide files, folders, a manifest CSV) into a list of slide jobs."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .slide import SLIDE_SUFFIXES


@dataclass(frozen=True, slots=True)
class SlideInput:
    """One slide to process: its path, an optional mpp override and the output name."""

    path: Path
    slide_id: str
    slide_mpp: float | None = None


def _safe_id(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return cleaned or "slide"


def _parse_formats(formats: str | Sequence[str] | None) -> tuple[str, ...]:
    if formats is None:
        return SLIDE_SUFFIXES
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    suffixes = tuple("." + f.strip().lower().lstrip(".") for f in items if f.strip())
    if not suffixes:
        raise ConfigError(f"--formats {formats!r} names no file ending")
    return suffixes


def _read_manifest(path: Path, default_mpp: float | None) -> list[SlideInput]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        fields = [f.strip().lower() for f in (reader.fieldnames or [])]
        if "path" not in fields:
            raise ConfigError("manifest needs a 'path' column (optional: slide_mpp, id)", path=path)
        items = []
        for line_no, raw in enumerate(reader, start=2):
            row = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if isinstance(k, str)}
            if not row.get("path"):
                raise ConfigError(f"line {line_no}: empty path", path=path)
            slide_path = Path(row["path"]).expanduser()
            if not slide_path.is_absolute():
                slide_path = path.parent / slide_path
            mpp = default_mpp
            if row.get("slide_mpp"):
                try:
                    mpp = float(row["slide_mpp"])
                except ValueError:
                    raise ConfigError(
                        f"line {line_no}: slide_mpp {row['slide_mpp']!r} is not a number", path=path
                    ) from None
            slide_id = _safe_id(row.get("id") or slide_path.stem)
            items.append(SlideInput(slide_path, slide_id, mpp))
    return items


def collect_slides(
    sources: Iterable[str | Path],
    *,
    formats: str | Sequence[str] | None = None,
    slide_mpp: float | None = None,
) -> list[SlideInput]:
    """Expand slide paths, folders (recursively, by file ending) and ``.csv`` manifests into jobs.

    Paths that do not exist are kept: they fail per slide (recorded in run.json) instead of stopping the
    batch. Output names are made unique (``a``, ``a-2`` …) when two slides share a stem.
    """
    suffixes = _parse_formats(formats)
    items: list[SlideInput] = []
    for source in sources:
        path = Path(source).expanduser()
        if path.suffix.lower() == ".csv" and path.is_file():
            items.extend(_read_manifest(path, slide_mpp))
        elif path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in suffixes and not _inside_mirax_data(p, path)
            )
            items.extend(SlideInput(p, _safe_id(p.stem), slide_mpp) for p in found)
        else:
            items.append(SlideInput(path, _safe_id(path.stem), slide_mpp))
    return _unique_ids(items)


def _inside_mirax_data(path: Path, root: Path) -> bool:
    # MIRAX keeps its data files (.dat, Slidedat.ini …) in a folder named after the .mrxs file.
    parents = path.relative_to(root).parents
    return any((root / parent).with_suffix(".mrxs").is_file() for parent in parents if parent.name)


def _unique_ids(items: list[SlideInput]) -> list[SlideInput]:
    seen: dict[str, int] = {}
    unique = []
    for item in items:
        count = seen.get(item.slide_id, 0) + 1
        seen[item.slide_id] = count
        slide_id = item.slide_id if count == 1 else f"{item.slide_id}-{count}"
        unique.append(SlideInput(item.path, slide_id, item.slide_mpp))
    return unique
