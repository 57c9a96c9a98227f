"""Image loading: mode conversion, EXIF orientation, and clear errors for bad files."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image
from test_data_fixtures import annotation_xml, object_xml, write_flickr_image

from ovd.data.dataset import GroundingDataset
from ovd.data.errors import DataError
from ovd.data.flickr30k import load_flickr30k
from ovd.data.images import image_size, load_image, resolve_under


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "LA", "I;16"])
def test_modes_become_rgb(tmp_path, mode):
    path = tmp_path / f"img.{'jpg' if mode in ('L', 'CMYK') else 'png'}"
    Image.new(mode, (30, 20)).save(path)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (30, 20)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nothere\.jpg: image file not found"):
        load_image(tmp_path / "nothere.jpg")


def test_corrupt_and_truncated_jpeg(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(buf, format="JPEG")
    data = buf.getvalue()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.jpg").write_bytes(b"not a jpeg at all" * 10)
    with pytest.raises(DataError, match=r"truncated\.jpg: corrupt or truncated image"):
        load_image(tmp_path / "truncated.jpg")
    with pytest.raises(DataError, match=r"garbage\.jpg: not a recognised image"):
        load_image(tmp_path / "garbage.jpg")


def test_path_escaping_root(tmp_path):
    (tmp_path / "outside.jpg").write_bytes(b"")
    root = tmp_path / "data"
    root.mkdir()
    with pytest.raises(DataError, match="escapes the data root"):
        load_image("../outside.jpg", root=root)
    with pytest.raises(DataError, match="escapes the data root"):
        resolve_under(root, "/etc/passwd")
    assert resolve_under(root, "Images/1.jpg") == (root / "Images" / "1.jpg").resolve()


def _exif_rotated_jpeg(path):
    """Store a 40x80 (WxH) image with EXIF orientation 6 (display rotated 90 deg clockwise):
    it displays as 80x40 with a red patch at display xyxy (60, 10, 80, 30)."""
    display = Image.new("RGB", (80, 40), (0, 0, 0))
    display.paste((255, 0, 0), (60, 10, 80, 30))
    stored = display.transpose(Image.Transpose.ROTATE_90)  # undo of what orientation 6 applies
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, format="JPEG", exif=exif, quality=95)


def test_exif_orientation_applied(tmp_path):
    path = tmp_path / "rot.jpg"
    _exif_rotated_jpeg(path)
    assert Image.open(path).size == (40, 80)
    img = load_image(path)
    assert img.size == (80, 40) and image_size(path) == (80, 40)
    assert img.getpixel((70, 20))[0] > 200 and img.getpixel((10, 20))[0] < 50


def test_exif_rotated_image_boxes_stay_right(tmp_path):
    # Annotation in display orientation (80x40), box 1-based (61, 11, 80, 30) = red patch.
    xml = annotation_xml(80, 40, [object_xml(["1"], (61, 11, 80, 30))])
    write_flickr_image(tmp_path, "1", ["[/EN#1/other a red patch] ."], xml, image=False)
    _exif_rotated_jpeg(tmp_path / "Images" / "1.jpg")
    ds = GroundingDataset(load_flickr30k(tmp_path, "train"), image_size=32)
    item = ds[0]
    assert item["orig_size"] == (40, 80)
    torch.testing.assert_close(item["boxes"], torch.tensor([[0.875, 0.5, 0.25, 0.5]]))
    # the box region of the resized image is red: red channel well above the others there
    cx, cy = int(0.875 * 32), int(0.5 * 32)
    assert item["image"][0, cy, cx] > 1.5 and item["image"][1, cy, cx] < 0


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_sixteen_bit_gradient_is_scaled_not_clipped(tmp_path, mode):
    import numpy as np

    gradient = (np.arange(64 * 256, dtype=np.uint32) * 4).reshape(64, 256).astype(np.uint16)  # 0 .. 65532
    if mode == "I;16B":
        img = Image.frombytes(mode, (256, 64), gradient.astype(">u2").tobytes())
    else:
        img = Image.fromarray(gradient).convert(mode)
    path = tmp_path / f"gradient.{'png' if mode == 'I;16' else 'tiff'}"  # PNG cannot hold I or I;16B
    img.save(path)
    with Image.open(path) as check:
        assert check.mode == mode or (mode == "I;16B" and check.mode.startswith("I;16"))
    rgb = load_image(path)
    assert rgb.mode == "RGB" and rgb.size == (256, 64)
    pixels = np.asarray(rgb)
    assert (pixels[..., 0] == pixels[..., 2]).all()
    np.testing.assert_array_equal(pixels[..., 0], gradient >> 8)  # the whole range, not 99.6% white
    assert (pixels == 255).mean() < 0.01


def test_non_utf8_image_list_names_the_file(tmp_path):
    """``ovd predict --images list.txt``: the list file is read by ``ovd.batch_predict.list_images``."""
    from ovd.batch_predict import list_images

    path = tmp_path / "list.txt"
    path.write_bytes(b"caf\xe9.jpg\n")
    with pytest.raises(ValueError, match=r"list\.txt: the list file is not valid UTF-8"):
        list_images(str(path))
