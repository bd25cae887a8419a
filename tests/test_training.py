"""``pathoflash train`` on tiny synthetic slides (1024 × 1024 px at 0.5 µm/px) with a tiny ViT, on the CPU."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from pathoflash.sample_data import read_truth, truth_mask
from typer.testing import CliRunner

import pathoflash as pf
from pathoflash.cli import app
from pathoflash.errors import ConfigError, SlideNotFoundError
from pathoflash.model.checkpoint import weights_digest
from pathoflash.training import ArchOptions, SyntheticSet, TrainOptions, train
from pathoflash.training.build import build_model
from pathoflash.training.dataset import RegionBatch, RegionLoader, SlidePixels
from pathoflash.training.loop import train_step
from pathoflash.training.regions import RegionSampler, slide_labels
from pathoflash.training.slides import find_annotated_slides, generate_synthetic

SIZE = (1024, 1024)
TRAIN = SyntheticSet(2, first_seed=11, size=SIZE, mpp=0.5)
VAL = SyntheticSet(1, first_seed=13, size=SIZE, mpp=0.5)
TINY = ArchOptions(width=32, depth=1, heads=2, patch_size=16)
TINY_CLI = ["--width", "32", "--depth", "1", "--heads", "2", "--head-hidden", "8", "--region", "256"]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The tiny model's ops are too small to share between threads; on a loaded 2-core machine two threads
    spend most of their time waiting for each other (20× slower here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The training and held-out slides, written once (in this process) and reused by every test."""
    folder = tmp_path_factory.mktemp("synthetic")
    generate_synthetic(TRAIN, folder, workers=1)
    generate_synthetic(VAL, folder, workers=1)
    return folder


def tiny_options(out: Path, synthetic_dir: Path, **changes: object) -> TrainOptions:
    options = TrainOptions(
        out=out,
        synthetic=TRAIN,
        synthetic_dir=synthetic_dir,
        arch=TINY,
        head_hidden=8,
        region=256,
        epochs=1,
        steps=2,
        batch_size=2,
        device="cpu",
        workers=2,
    )
    return dataclasses.replace(options, **changes)  # type: ignore[arg-type]


def loader_and_sampler(synthetic_dir: Path, seed: int = 0) -> tuple[RegionLoader, RegionSampler]:
    slides = generate_synthetic(TRAIN, synthetic_dir, workers=1)
    labels = [slide_labels(s, mpp=0.5, patch_size=16) for s in slides]
    pixels = [SlidePixels(s, lab, cache_pixels=10**7) for s, lab in zip(slides, labels, strict=True)]
    return RegionLoader(pixels, labels, patch_size=16, workers=2), RegionSampler(
        labels, region=256, patch_size=16, seed=seed
    )


def test_regions_are_class_balanced_and_drawn_the_same_way_for_a_seed(synthetic_dir: Path) -> None:
    loader, sampler = loader_and_sampler(synthetic_dir, seed=3)
    refs = sampler.epoch(0, 400)
    assert 0.4 < np.mean([r.positive for r in refs]) < 0.6
    assert refs == loader_and_sampler(synthetic_dir, seed=3)[1].epoch(0, 400)
    assert refs != sampler.epoch(1, 400)
    tumor = {True: [], False: []}  # type: dict[bool, list[float]]
    for ref in refs[:60]:
        image, target, weight = loader.load_region(ref)
        assert image.shape == (256, 256, 3) and image.dtype == np.uint8
        assert target.shape == weight.shape == (16, 16)
        assert target.min() >= 0.0 and target.max() <= 1.0 and weight.min() >= 0.1
        tumor[ref.positive].append(float(target.mean()))
    assert np.mean(tumor[True]) > 0.05 > np.mean(tumor[False])


def test_targets_follow_the_annotations_and_turn_with_the_image(synthetic_dir: Path) -> None:
    loader, sampler = loader_and_sampler(synthetic_dir)
    slide = generate_synthetic(TRAIN, synthetic_dir, workers=1)[0]
    ref = next(r for r in sampler.epoch(0, 50) if r.positive and r.slide == 0)
    plain = dataclasses.replace(ref, rotation=0, flip=False)
    _, target, _ = loader.load_region(plain)
    # The same patches rasterised straight from the GeoJSON (4 × 4 centre samples per 16-px patch):
    fine = truth_mask(slide.annotations, (1024 // 4, 1024 // 4), downsample=4.0)
    window = fine[ref.y // 4 : ref.y // 4 + 64, ref.x // 4 : ref.x // 4 + 64]
    np.testing.assert_allclose(target, window.reshape(16, 4, 16, 4).mean(axis=(1, 3)), atol=1e-6)
    turned = dataclasses.replace(ref, rotation=1, flip=True)
    image_t, target_t, _ = loader.load_region(turned)
    image, _, _ = loader.load_region(plain)
    np.testing.assert_array_equal(image_t, np.rot90(image, 1)[:, ::-1])
    np.testing.assert_array_equal(target_t, np.rot90(target, 1)[:, ::-1])


def _balanced_batch(synthetic_dir: Path) -> RegionBatch:
    """Two regions with tumor and two without, from the training slides."""
    loader, sampler = loader_and_sampler(synthetic_dir)
    drawn = sampler.epoch(0, 40)
    refs = [r for r in drawn if r.positive][:2] + [r for r in drawn if not r.positive][:2]
    return next(loader.batches(refs, len(refs)))


def test_loss_goes_down_on_a_fixed_batch(synthetic_dir: Path) -> None:
    batch = _balanced_batch(synthetic_dir)
    torch.manual_seed(0)
    model = build_model(tiny_options(Path("unused.safetensors"), synthetic_dir))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = [train_step(model, optimizer, batch) for _ in range(30)]
    assert losses[-1] < 0.6 * losses[0], losses


def test_same_seed_gives_identical_weights_on_cpu(tmp_path: Path, synthetic_dir: Path) -> None:
    digests = []
    for name, seed in (("a", 4), ("b", 4), ("c", 5)):
        result = train(tiny_options(tmp_path / f"{name}.safetensors", synthetic_dir, seed=seed, steps=3))
        digests.append(weights_digest(pf.load_model(result.model_path)))
    assert digests[0] == digests[1]
    assert digests[0] != digests[2]


def test_checkpoint_after_every_epoch_and_report_with_auroc_and_dice(
    tmp_path: Path, synthetic_dir: Path
) -> None:
    out = tmp_path / "model.safetensors"
    seen_at_epoch_2: list[bool] = []

    def progress(p: object) -> None:
        if getattr(p, "epoch", 0) == 2 and not seen_at_epoch_2:
            seen_at_epoch_2.append(out.is_file())

    options = tiny_options(out, synthetic_dir, epochs=2, val_synthetic=VAL, name="tiny-test")
    result = train(options, progress=progress)
    assert seen_at_epoch_2 == [True]  # the first epoch's checkpoint existed before the second epoch ran
    assert result.epochs == 2 and result.steps == 4 and len(result.epoch_losses) == 2

    model = pf.load_model(out)
    assert model.model_id == result.model_id and model.info.name == "tiny-test"
    assert model.region_size == 256 and model.mpp == 0.5 and model.encoder.config.embed_dim == 32
    training = model.info.training
    assert training["epochs_done"] == 2 and training["data"]["synthetic"]["seeds"] == [11, 12]
    assert training["metrics"]["slides"][0]["seed"] == 13

    report = json.loads(result.report_path.read_text())
    assert result.report_path == tmp_path / "model.report.json"
    (scored,) = report["evaluation"]["slides"]
    assert 0.0 <= scored["auroc"] <= 1.0 and 0.0 <= scored["dice"] <= 1.0 and scored["pixels"] > 100
    assert report["model_id"] == result.model_id and report["training"]["steps_done"] == 4
    assert result.evaluation is not None and result.evaluation.mean_auroc == pytest.approx(
        scored["auroc"], abs=1e-4
    )


def test_frozen_timm_encoder_stays_as_loaded_and_only_the_head_trains(
    tmp_path: Path, synthetic_dir: Path
) -> None:
    from safetensors.torch import save_file

    from pathoflash.model.config import ViTConfig
    from pathoflash.model.vit import VisionTransformer

    torch.manual_seed(1)
    config = ViTConfig(patch_size=16, embed_dim=64, depth=1, num_heads=1, mlp_hidden=128, pos_grid=(4, 4))
    state = {k: v.contiguous() for k, v in VisionTransformer(config).state_dict().items()}
    save_file(state, str(tmp_path / "encoder.safetensors"))
    options = tiny_options(
        tmp_path / "m.safetensors",
        synthetic_dir,
        encoder=tmp_path / "encoder.safetensors",
        freeze_encoder=True,
    )
    train(options)
    model = pf.load_model(options.out)
    assert model.encoder.config.embed_dim == 64 and model.encoder.config.class_token
    for name, tensor in model.encoder.state_dict().items():  # stored in float16
        torch.testing.assert_close(tensor, state[name].half().float(), rtol=0, atol=0)
    assert model.info.training["optimisation"]["freeze_encoder"] is True


def test_qupath_annotations_in_their_own_folder_use_detected_tissue(
    tmp_path: Path, synthetic_dir: Path
) -> None:
    source = generate_synthetic(TRAIN, synthetic_dir, workers=1)[0]
    slides, notes = tmp_path / "slides", tmp_path / "annotations"
    slides.mkdir()
    notes.mkdir()
    shutil.copy(source.path, slides / "case.svs")
    document = json.loads(source.annotations.read_text())
    qupath = {"type": "FeatureCollection", "features": document["features"]}  # no tissue outline
    (notes / "case.geojson").write_text(json.dumps(qupath))

    (found,) = find_annotated_slides([slides], annotations=notes)
    assert found.annotations == notes / "case.geojson"
    detected = slide_labels(found, mpp=0.5, patch_size=16)
    truth = slide_labels(source, mpp=0.5, patch_size=16)
    np.testing.assert_array_equal(detected.tumor, truth.tumor)
    overlap = (detected.tissue & truth.tissue).sum() / (detected.tissue | truth.tissue).sum()
    assert overlap > 0.65  # detection runs at 8 µm/px: this slide is only 64 px wide there
    assert len(read_truth(found.annotations)) == len(document["features"])


def test_bad_training_inputs_are_errors(tmp_path: Path, synthetic_dir: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SlideNotFoundError, match="no slide files"):
        find_annotated_slides([empty])
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copy(generate_synthetic(TRAIN, synthetic_dir, workers=1)[0].path, lonely / "case.svs")
    with pytest.raises(ConfigError, match="1 slide\\(s\\) have no tumor annotations"):
        find_annotated_slides([lonely])
    with pytest.raises(ConfigError, match="no training data"):
        TrainOptions(out=tmp_path / "m.safetensors")
    with pytest.raises(ConfigError, match="needs a pretrained --encoder"):
        tiny_options(tmp_path / "m.safetensors", synthetic_dir, freeze_encoder=True)


def test_cli_trains_end_to_end(tmp_path: Path, synthetic_dir: Path) -> None:
    out = tmp_path / "cli.safetensors"
    args = ["train", "--out", str(out), "--synthetic", "2", "--seed", "11", "--val-synthetic", "1",
            "--synthetic-size", "1024x1024", "--synthetic-mpp", "0.5", "--synthetic-dir", str(synthetic_dir),
            *TINY_CLI, "--steps", "2", "--batch-size", "2", "--device", "cpu", "--workers", "2"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "pixel AUROC" in result.stdout and "held-out mean" in result.stdout
    assert out.is_file() and (tmp_path / "cli.report.json").is_file()
    command = pf.load_model(out).info.training["command"]
    assert command.startswith("pathoflash train ") and "--steps 2" in command and f"--out {out}" in command


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("--slides {tmp}/empty", "no slide files in this folder"),
        ("--slides {tmp}/lonely", "have no tumor annotations"),
        ("--slides {tmp}/missing.svs", "no such file or folder"),
        ("", "no training data"),
        ("--synthetic 1 --backend fast", "--backend 'fast'"),
    ],
)
def test_cli_bad_inputs_are_one_line_errors(
    tmp_path: Path, synthetic_dir: Path, options: str, message: str
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "lonely").mkdir()  # a slide without annotations
    shutil.copy(generate_synthetic(TRAIN, synthetic_dir, workers=1)[0].path, tmp_path / "lonely" / "case.svs")
    args = ["train", "--out", str(tmp_path / "m.safetensors"), *options.format(tmp=tmp_path).split()]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.output


def test_cli_out_must_be_a_safetensors_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "m.pt"), "--synthetic", "1"])
    assert result.exit_code == 1 and "must end in .safetensors" in result.stderr


@pytest.mark.gpu
def test_training_step_on_cuda_uses_the_triton_kernel_forward_and_backward(
    synthetic_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CPU test's recipe on the GPU (bf16 autocast): the Triton kernel runs both ways, the loss falls
    as fast as with PyTorch's own attention."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    import pathoflash.kernels as kernels

    calls = {"n": 0}
    original = kernels.flash_attention

    def counted(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(kernels, "flash_attention", counted)
    batch = _balanced_batch(synthetic_dir)
    curves = {}
    for backend in ("auto", "sdpa"):  # auto → the Triton kernel for CUDA tensors
        torch.manual_seed(0)
        model = build_model(tiny_options(Path("unused.safetensors"), synthetic_dir, device="cuda")).cuda()
        model.encoder.set_backend(backend)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        curves[backend] = [train_step(model, optimizer, batch) for _ in range(30)]
    ours, theirs = curves["auto"], curves["sdpa"]
    assert calls["n"] > 0, "the Triton kernel never ran"
    assert all(np.isfinite(ours)) and ours[-1] < 0.6 * ours[0], ours
    assert max(abs(a - b) for a, b in zip(ours[:10], theirs[:10], strict=True)) < 0.03, (ours, theirs)
