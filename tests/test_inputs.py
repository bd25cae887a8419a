from pathlib import Path

import pytest

from pathoflash.errors import ConfigError
from pathoflash.inputs import collect_slides


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_folder_is_searched_recursively_by_ending(tmp_path: Path) -> None:
    _touch(tmp_path / "a.svs")
    _touch(tmp_path / "sub" / "b.ndpi")
    _touch(tmp_path / "notes.txt")
    items = collect_slides([tmp_path])
    assert [i.path.name for i in items] == ["a.svs", "b.ndpi"]
    assert [i.slide_id for i in items] == ["a", "b"]


def test_formats_filter_and_mirax_data_folder_is_skipped(tmp_path: Path) -> None:
    _touch(tmp_path / "a.svs")
    _touch(tmp_path / "m.mrxs")
    _touch(tmp_path / "m" / "Data0000.dat")
    _touch(tmp_path / "m" / "inner.tif")
    assert [i.path.name for i in collect_slides([tmp_path], formats="mrxs")] == ["m.mrxs"]
    assert [i.path.name for i in collect_slides([tmp_path], formats="svs,tif")] == ["a.svs"]
    with pytest.raises(ConfigError):
        collect_slides([tmp_path], formats=" , ")


def test_manifest_paths_mpp_and_ids(tmp_path: Path) -> None:
    _touch(tmp_path / "slides" / "x.svs")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,slide_mpp,id\nslides/x.svs,0.25,case 1\n/abs/y.tif,,\n", encoding="utf-8")
    items = collect_slides([manifest], slide_mpp=0.5)
    assert items[0].path == tmp_path / "slides" / "x.svs"
    assert items[0].slide_mpp == 0.25
    assert items[0].slide_id == "case_1"
    assert items[1].slide_mpp == 0.5  # the command-line default fills a blank cell
    assert items[1].slide_id == "y"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("file,mpp\na.svs,1\n", "'path' column"),
        ("path,slide_mpp\na.svs,abc\n", "not a number"),
        ("path\n\n,\n", "empty path"),
    ],
)
def test_bad_manifest_says_what_is_wrong(tmp_path: Path, content: str, message: str) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        collect_slides([manifest])


def test_duplicate_stems_get_unique_ids_and_missing_paths_are_kept(tmp_path: Path) -> None:
    a = _touch(tmp_path / "one" / "s.svs")
    b = _touch(tmp_path / "two" / "s.svs")
    items = collect_slides([a, b, tmp_path / "missing.svs"])
    assert [i.slide_id for i in items] == ["s", "s-2", "missing"]
