"""The batched augmentation's fused forms (cnnlab.data.batch_augment) against the same steps run one by one.

``BatchPipeline`` folds flips into the random-resized crop's sampling grid and moves the normalisation after the
crop; these tests run the configured augmentations one after another, from the same random seed, on real
images, and require the same pixels — so a fold that lost a flip, drew its parameters in another order or
normalised differently fails here.
"""

from __future__ import annotations

import pytest
import torch

from cnnlab.data.batch_augment import (BatchPipeline, _crop_boxes, colour_jitter, horizontal_flip, random_resized_crop,
                                       resized_crops, vertical_flip)

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    """32 real-format images as a folder cache stores them: JPEGs written and decoded, uint8 (N, 3, 37, 37)."""
    import io

    import numpy as np
    from PIL import Image
    from torchvision.io import decode_jpeg

    rng = np.random.default_rng(0)
    images = []
    for i in range(32):
        yy, xx = np.mgrid[0:37, 0:37] / 37
        pixels = np.stack([np.sin(6 * xx + i), np.cos(4 * yy * (1 + i % 3)), xx * yy], -1)
        pixels = ((pixels + rng.normal(0, 0.1, pixels.shape)).clip(-1, 1) * 127 + 128).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        images.append(decode_jpeg(torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)))
    return torch.stack(images)


def normalised(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(MEAN).view(1, -1, 1, 1)) / torch.tensor(STD).view(1, -1, 1, 1)


def one_by_one(images: torch.Tensor, augmentation: dict, crop: int | None) -> torch.Tensor:
    """The configured augmentations run separately, in config order, on [0, 1] images, then normalised."""
    from cnnlab.data.batch_augment import ON_IMAGES

    x = images.float() / 255
    if crop is not None:
        x = random_resized_crop(x, size=crop)
    for name, options in augmentation.items():
        x = ON_IMAGES[name](x, **options)
    return normalised(x)


@pytest.mark.parametrize("augmentation", [
    {"horizontal_flip": {"p": 0.5}},
    {"vertical_flip": {"p": 0.3}, "horizontal_flip": {"p": 0.7}},
    {"horizontal_flip": {"p": 0.5}, "colour_jitter": {"brightness": 0.4, "contrast": 0.4}},
    {},
])
@pytest.mark.parametrize("crop", [32, None])
def test_the_fused_pipeline_gives_the_pixels_of_the_steps_run_one_by_one(photos: torch.Tensor, augmentation: dict,
                                                                         crop: int | None) -> None:
    pipeline = BatchPipeline(augmentation, MEAN, STD, crop=crop)
    torch.manual_seed(3)
    fused = pipeline(photos, train=True)
    torch.manual_seed(3)
    expected = one_by_one(photos, augmentation, crop)
    assert fused.shape == expected.shape == (32, 3, crop or 37, crop or 37)
    assert torch.allclose(fused, expected, atol=1e-4), (fused - expected).abs().max()


def test_a_flip_folded_into_the_crop_mirrors_the_images_it_draws(photos: torch.Tensor) -> None:
    x = photos.float()
    torch.manual_seed(5)
    boxes = _crop_boxes(32, 37, 37, (0.08, 1.0), (3 / 4, 4 / 3), x)
    mirrored = torch.rand(32) < 0.5
    upside_down = torch.rand(32) < 0.5
    assert 0 < mirrored.sum() < 32 and 0 < upside_down.sum() < 32
    plain = resized_crops(x, boxes, 24)
    folded = resized_crops(x, boxes, 24, mirrored, upside_down)
    expected = torch.where(mirrored[:, None, None, None], plain.flip(-1), plain)
    expected = torch.where(upside_down[:, None, None, None], expected.flip(-2), expected)
    assert torch.allclose(folded, expected, atol=1e-3)
    assert not torch.allclose(folded, plain, atol=1.0)  # the flips are there: losing them fails the test above


def test_the_crop_grid_samples_pixel_centres_exactly(photos: torch.Tensor) -> None:
    """A box of whole pixels at the output size is an exact window of the image (mirrored: the window flipped)."""
    x = photos[:2].float()
    boxes = tuple(torch.tensor([v, v], dtype=torch.float32) for v in (3.0, 5.0, 20.0, 20.0))
    window = x[:, :, 3:23, 5:25]
    assert torch.allclose(resized_crops(x, boxes, 20), window, atol=1e-3)
    flipped = resized_crops(x, boxes, 20, mirrored=torch.tensor([True, False]))
    assert torch.allclose(flipped[0], window[0].flip(-1), atol=1e-3)
    assert torch.allclose(flipped[1], window[1], atol=1e-3)


def test_flips_copy_the_chosen_images_only_and_leave_the_input_alone(photos: torch.Tensor) -> None:
    x = photos.float()
    before = x.clone()
    torch.manual_seed(0)
    chosen = torch.rand(32) < 0.5
    torch.manual_seed(0)
    out = horizontal_flip(x, p=0.5)
    assert torch.equal(x, before)
    assert torch.equal(out[chosen], x[chosen].flip(-1)) and torch.equal(out[~chosen], x[~chosen])
    torch.manual_seed(0)
    assert torch.equal(vertical_flip(x, p=0.5)[chosen], x[chosen].flip(-2))
    assert torch.equal(colour_jitter(x / 255, brightness=0.0), x / 255)


def test_evaluation_batches_are_the_normalised_centre_crop(photos: torch.Tensor) -> None:
    out = BatchPipeline({"horizontal_flip": {"p": 1.0}}, MEAN, STD, crop=32)(photos, train=False)
    assert torch.allclose(out, normalised(photos[:, :, 2:34, 2:34].float() / 255), atol=1e-5)
