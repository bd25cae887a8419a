"""JSON text laid out in numpy against what ``repr``/``json.dumps`` write."""

from __future__ import annotations

import numpy as np

from pathoflash.export.geojson_text import round4_chars


def test_probability_text_is_what_round_writes() -> None:
    rng = np.random.default_rng(26)
    p = np.concatenate(
        [rng.random(5000), np.arange(33) / 32, np.arange(10001) / 1e4, [0.0, 1.0, 5e-5, 1.5e-4, 0.99995]]
    ).astype(np.float32)  # k/32 are exact ties at the 4th decimal
    chars = round4_chars(p)
    got = [bytes(row[row != 0]).decode() for row in chars]
    assert got == [repr(round(v, 4)) for v in p.tolist()]
