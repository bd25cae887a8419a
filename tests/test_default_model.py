"""The bundled default model: what it is, how well it finds tumor on synthetic slides it never saw, and how
fast it runs on the CPU."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from pathoflash.sample_data import write_sample_slide

import pathoflash as pf
from pathoflash.evaluate import score_heatmap
from pathoflash.inference import infer_heatmap
from pathoflash.model.checkpoint import DEFAULT_MODEL_FILE

UNSEEN_SEED = 424_242  # never used in training (seeds 1000–1047) nor for its held-out scores (1048–1053)
SLIDE_MPP = 0.25
MODEL_CARD = DEFAULT_MODEL_FILE.with_name("MODEL_CARD.md")


@pytest.fixture(scope="module")
def model() -> pf.Model:
    return pf.load_model()


@pytest.fixture(scope="module")
def unseen_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4096 × 4096 px at 0.25 µm/px: 2048 × 2048 px at the model's 0.5 µm/px."""
    path = tmp_path_factory.mktemp("unseen") / "unseen.svs"
    return write_sample_slide(path, seed=UNSEEN_SEED, size=(4096, 4096), mpp=SLIDE_MPP).path


def test_bundled_model_is_the_small_documented_vit(model: pf.Model) -> None:
    assert DEFAULT_MODEL_FILE.stat().st_size <= 15 * 2**20
    config = model.encoder.config
    assert (config.embed_dim, config.depth, config.num_heads, config.patch_size) == (192, 4, 3, 16)
    assert model.head.config.hidden == 64 and model.region_size == 1024 and model.mpp == 0.5
    assert 2.5e6 < sum(p.numel() for p in model.parameters()) < 3e6
    training = model.info.training
    assert training["data"]["synthetic"]["generator"] == "pathoflash.sample_data.write_sample_slide"
    first, last = training["data"]["synthetic"]["seeds"]
    assert not first <= UNSEEN_SEED <= last
    assert training["metrics"]["min_auroc"] >= 0.95
    card = MODEL_CARD.read_text(encoding="utf-8")
    assert model.model_id in card and "NOT for clinical use" in card and training["command"] in card


def test_bundled_model_finds_tumor_on_a_slide_from_an_unseen_seed(
    model: pf.Model, unseen_slide: Path
) -> None:
    heatmap = pf.predict(unseen_slide, model, device="cpu")
    scores = score_heatmap(heatmap, unseen_slide.with_name("unseen.truth.geojson"), slide_mpp=SLIDE_MPP)
    print(f"seed {UNSEEN_SEED}: pixel AUROC {scores['auroc']:.4f}, Dice {scores['dice']:.4f} in tissue")
    assert scores["pixels"] > 1000 and 0.02 < scores["tumor_fraction"] < 0.9
    assert scores["auroc"] >= 0.95
    assert scores["dice"] >= 0.6


class TiledSource:
    """A 4096 × 4096 px region source at the model's mpp, tiled from the unseen slide's 2048 × 2048 px."""

    def __init__(self, slide: Path, mpp: float) -> None:
        with pf.open_slide(slide) as opened:
            quarter = opened.read_at_mpp((0, 0), (2048, 2048), mpp)
        self.image = np.tile(quarter, (2, 2, 1))

    def read_region(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        return self.image[y : y + h, x : x + w]


def test_cpu_inference_on_4096_px_takes_under_a_minute(model: pf.Model, unseen_slide: Path) -> None:
    source = TiledSource(unseen_slide, model.mpp)
    started = time.perf_counter()
    # All 25 regions of 1024 px, none skipped (a whole-slide run skips glass):
    heatmap = infer_heatmap(model, source, width=4096, height=4096, device="cpu")
    seconds = time.perf_counter() - started
    print(f"CPU inference of 4096 × 4096 px: {seconds:.1f} s")
    assert heatmap.shape == (256, 256) and np.isfinite(heatmap).all()
    assert seconds < 60
