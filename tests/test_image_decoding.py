"""Issue 20, item 5: image files are read as a viewer shows them, once. Every fixture is written here, in a temporary
folder, and the decoded pixels are compared with the values the file stores (vqbench.data.images, docs/datasets.md).
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from vqbench.data.files import ImageFiles
from vqbench.data.folder import folder_split
from vqbench.data.imagenet import imagenet_split
from vqbench.data.images import find_images, open_image, scan_images


def _write_png(path: Path, array: np.ndarray, color_type: int) -> Path:
    """A PNG with 16-bit samples, written chunk by chunk (PIL cannot write 16-bit RGB): ``array`` is H x W x C
    uint16; color_type 0 = grey, 2 = RGB, 4 = grey + alpha, 6 = RGBA (PNG specification, section 11.2.2)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width = array.shape[:2]
    rows = array.reshape(height, -1).astype(">u2").tobytes()
    stride = rows and len(rows) // height
    raw = b"".join(b"\x00" + rows[i * stride : (i + 1) * stride] for i in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )
    return path


def _tensor_of(path: Path, channels: int = 3, viewer: bool = False) -> np.ndarray:
    """The decoded file as H x W x C uint8, through the dataset class every file-based source uses."""
    dataset = ImageFiles([path], lambda image: image, channels, "test", path.parent, viewer=viewer)
    return dataset[0].permute(1, 2, 0).numpy()


# 16-bit values whose 8-bit images are known exactly: v = 257 k is k * 65535 / 255.
GRADIENT = np.array([[0, 257, 257 * 128, 257 * 200, 65535, 1000]], dtype=np.uint16)


def test_a_16_bit_grey_png_is_scaled_not_clipped_to_white(tmp_path):
    path = _write_png(tmp_path / "grey16.png", GRADIENT[..., None], color_type=0)
    expected = np.rint(GRADIENT.astype(np.float64) * 255 / 65535).astype(np.uint8)  # 1000 -> 3.89 -> 4
    assert (_tensor_of(path, channels=1)[..., 0] == expected).all()
    assert (_tensor_of(path, channels=3) == expected[..., None]).all()  # grey repeated into R, G, B
    assert _tensor_of(path, channels=1).min() == 0  # not the all-white image of PIL's convert("L")


def test_a_16_bit_rgb_png_keeps_its_colours(tmp_path):
    rgb = np.stack([GRADIENT, GRADIENT[:, ::-1], np.full_like(GRADIENT, 257 * 77)], axis=-1)
    decoded = _tensor_of(_write_png(tmp_path / "rgb16.png", rgb, color_type=2)).astype(np.int64)
    # PIL keeps each sample's high byte, floor(v / 256); it differs from round(v * 255 / 65535) by at most 1.
    assert np.abs(decoded - rgb.astype(np.float64) * 255 / 65535).max() <= 1
    assert decoded[0, 0].tolist() == [0, 3, 77] and decoded[0, 4].tolist() == [255, 1, 77]


def test_palette_images_with_and_without_transparency(tmp_path):
    palette = [255, 0, 0, 0, 128, 255, 10, 20, 30] + [0] * (256 * 3 - 9)
    indices = np.array([[0, 1, 2, 1]], dtype=np.uint8)
    image = Image.new("P", (4, 1))
    image.putdata(indices.ravel().tolist())
    image.putpalette(palette)
    image.save(tmp_path / "palette.png")
    colours = np.array(palette[:9]).reshape(3, 3)
    assert (_tensor_of(tmp_path / "palette.png", viewer=True)[0] == colours[indices[0]]).all()
    image.save(tmp_path / "transparent.png", transparency=2)  # index 2 is transparent
    viewer = _tensor_of(tmp_path / "transparent.png", viewer=True)[0]
    assert viewer[:2].tolist() == colours[:2].tolist() and viewer[2].tolist() == [255, 255, 255]
    assert _tensor_of(tmp_path / "transparent.png", viewer=False)[0, 2].tolist() == [10, 20, 30]


def test_grey_alpha_and_rgba_are_composited_over_white_by_the_viewer_and_dropped_otherwise(tmp_path):
    grey_alpha = np.array([[[100, 255], [100, 0], [100, 128]]], dtype=np.uint8)
    Image.fromarray(grey_alpha, mode="LA").save(tmp_path / "la.png")
    # over white: grey * a / 255 + 255 * (1 - a / 255), rounded by PIL's alpha_composite (to within 1)
    alpha = grey_alpha[0, :, 1] / 255
    over_white = 100 * alpha + 255 * (1 - alpha)
    viewer = _tensor_of(tmp_path / "la.png", channels=1, viewer=True)[0, :, 0]
    assert np.abs(viewer - over_white).max() <= 1 and viewer[:2].tolist() == [100, 255]
    assert (_tensor_of(tmp_path / "la.png", channels=1)[0, :, 0] == 100).all()
    rgba = np.array([[[10, 200, 30, 255], [10, 200, 30, 0]]], dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    assert _tensor_of(tmp_path / "rgba.png", viewer=True)[0].tolist() == [[10, 200, 30], [255, 255, 255]]
    assert _tensor_of(tmp_path / "rgba.png")[0].tolist() == [[10, 200, 30], [10, 200, 30]]


def test_a_cmyk_jpeg_decodes_to_rgb(tmp_path):
    # Flat CMYK patches (JPEG is lossy, but a flat 16x16 patch survives within a few levels at quality 100).
    patches = [(0, 0, 0, 0), (255, 0, 0, 0), (0, 0, 255, 0), (0, 0, 0, 255)]
    cmyk = np.concatenate([np.full((16, 16, 4), p, np.uint8) for p in patches], axis=1)
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    decoded = _tensor_of(tmp_path / "cmyk.jpg").astype(int)
    centres = [decoded[8, 16 * i + 8].tolist() for i in range(4)]
    expected = [[255, 255, 255], [0, 255, 255], [255, 255, 0], [0, 0, 0]]  # white, cyan, yellow, black
    assert all(abs(a - b) <= 4 for c, e in zip(centres, expected, strict=True) for a, b in zip(c, e, strict=True))


def _exif_rotated_jpeg(path: Path) -> np.ndarray:
    """A 2x1-block JPEG (red left, blue right) stored with EXIF orientation 6: a viewer rotates it 90 degrees
    clockwise, showing red on top. Returns the stored pixels."""
    stored = np.zeros((16, 32, 3), np.uint8)
    stored[:, :16] = (255, 0, 0)
    stored[:, 16:] = (0, 0, 255)
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(path, quality=100, exif=exif)
    return stored


def test_data_folder_applies_exif_orientation_and_the_named_datasets_do_not(tmp_path):
    for name in ("a.jpg", "b.jpg"):
        _exif_rotated_jpeg(tmp_path / name)
    shown = folder_split("train", str(tmp_path), resolution=16, holdout_fraction=0.5, center_crop=False)[0]
    assert tuple(shown.shape) == (3, 16, 16)
    top, bottom = shown[:, 2, 8].tolist(), shown[:, 13, 8].tolist()
    assert top[0] > 200 and top[2] < 50 and bottom[2] > 200 and bottom[0] < 50  # red above blue: rotated
    stored = _tensor_of(tmp_path / "a.jpg")  # the named datasets: the stored 16 x 32, red left
    assert stored.shape == (16, 32, 3) and stored[8, 4, 0] > 200 and stored[8, 28, 2] > 200
    assert _tensor_of(tmp_path / "a.jpg", viewer=True).shape == (32, 16, 3)


def _images(folder: Path, count: int, start: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        Image.fromarray(np.full((8, 8, 3), i * 10, np.uint8)).save(folder / f"{i:03d}.png")
        paths.append(folder / f"{i:03d}.png")
    return paths


def test_a_symlink_loop_is_skipped_with_a_warning_naming_it(tmp_path, caplog):
    _images(tmp_path / "a" / "b", 3)
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "loop")
    with caplog.at_level(logging.WARNING, logger="vqbench.data"):
        found = find_images(tmp_path)
    assert [p.name for p in found] == ["000.png", "001.png", "002.png"]
    assert any(
        str(tmp_path / "a" / "b" / "loop") in r.getMessage() and "loop" in r.getMessage() for r in caplog.records
    )
    assert len(folder_split("train", str(tmp_path), resolution=8, holdout_fraction=0.34)) == 2


def test_a_file_reached_by_two_paths_is_in_one_split_only(tmp_path):
    originals = _images(tmp_path / "photos", 6)
    (tmp_path / "album").mkdir()
    for path in originals:  # every photo also linked from another folder, and the folder itself linked twice
        os.symlink(path, tmp_path / "album" / path.name)
    os.symlink(tmp_path / "photos", tmp_path / "photos_again")
    resolved = list(scan_images(tmp_path).values())
    assert len(resolved) == len(set(resolved)) == 6
    train = folder_split("train", str(tmp_path), resolution=8, holdout_fraction=0.5)
    held = folder_split("val", str(tmp_path), resolution=8, holdout_fraction=0.5)
    train_files = {os.path.realpath(p) for p in train.files}
    held_files = {os.path.realpath(p) for p in held.files}
    assert len(train_files) == len(train) == 3 and len(held_files) == 3 and not train_files & held_files


def test_imagenet_leaves_a_val_image_linked_into_train_out_of_training(tmp_path, caplog):
    _images(tmp_path / "train" / "n01", 3)
    val = _images(tmp_path / "val", 2, start=5)
    os.symlink(val[0], tmp_path / "train" / "n01" / "leaked.png")
    with caplog.at_level(logging.WARNING, logger="vqbench.data"):
        train = imagenet_split("train", str(tmp_path), resolution=8, crop="center")
    assert [p.name for p in train.files] == ["000.png", "001.png", "002.png"]
    assert any("leaked.png" in r.getMessage() for r in caplog.records)
    assert len(imagenet_split("val", str(tmp_path), resolution=8, crop="center")) == 2


def test_named_datasets_decode_as_pil_convert_on_ordinary_files(tmp_path):
    """On 8-bit RGB, grey and palette files without alpha the decoding is PIL's convert("RGB") exactly, the loader
    of the original code behind the tables (torchvision's ImageFolder / CelebA)."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    Image.fromarray(rng.integers(0, 256, (9, 7), dtype=np.uint8)).save(tmp_path / "grey.png")
    Image.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)).convert("P").save(tmp_path / "p.png")
    for name in ("rgb.png", "grey.png", "p.png"):
        reference = np.asarray(Image.open(tmp_path / name).convert("RGB"))
        assert (np.asarray(open_image(tmp_path / name, 3)) == reference).all()
        assert (_tensor_of(tmp_path / name) == reference).all()
