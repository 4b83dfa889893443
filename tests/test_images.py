import io

import numpy as np
import pytest
from PIL import Image

from qformer.processing.images import ImageLoadError, load_image, reduced


def save(image: Image.Image, path, **kwargs):
    image.save(path, **kwargs)
    return path


def test_modes_become_rgb(tmp_path, cat):
    gray = cat.convert("L")
    cmyk = cat.convert("CMYK")
    palette = cat.convert("P")
    rgba = cat.convert("RGBA")
    for image, name in [(gray, "g.png"), (cmyk, "c.jpg"), (palette, "p.png"), (rgba, "a.png")]:
        loaded = load_image(save(image, tmp_path / name))
        assert loaded.mode == "RGB" and loaded.size == cat.size, name


def test_transparency_is_shown_on_white(tmp_path):
    clear = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert load_image(save(clear, tmp_path / "t.png")).getpixel((0, 0)) == (255, 255, 255)
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([10, 20, 30] * 256)
    palette.info["transparency"] = 0
    assert load_image(save(palette, tmp_path / "pt.png", transparency=0)).getpixel((0, 0)) == (255, 255, 255)


def test_16_bit_is_rescaled_not_clipped(tmp_path):
    ramp = np.array([[0, 32768, 65535]], dtype=np.uint16)
    loaded = load_image(save(Image.fromarray(ramp), tmp_path / "16.png"))
    assert [loaded.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]
    assert load_image(ramp).getpixel((1, 0)) == (128, 128, 128)


def test_exif_rotation_is_applied(tmp_path):
    wide = Image.new("RGB", (20, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    wide.save(path, exif=exif)
    assert load_image(path).size == (10, 20)


def test_bad_inputs_name_themselves(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(ImageLoadError, match="notes.txt: not an image file"):
        load_image(text)
    with pytest.raises(ImageLoadError, match="missing.jpg: no such file"):
        load_image(tmp_path / "missing.jpg")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buffer, "JPEG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(buffer.getvalue()[:200])
    with pytest.raises(ImageLoadError, match="truncated.jpg: corrupt or truncated"):
        load_image(truncated)
    with pytest.raises(ImageLoadError, match="expected a path"):
        load_image(3.5)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = save(Image.new("1", (200, 200)), tmp_path / "big.png")
    with pytest.raises(ImageLoadError, match="200x200 pixels is over the limit of 1000"):
        load_image(path, max_pixels=1000)


def test_arrays_and_bytes(cat):
    array = np.asarray(cat)
    assert load_image(array).size == cat.size
    assert load_image(np.moveaxis(array, -1, 0)).size == cat.size  # CHW
    assert load_image(array.astype(np.float32) / 255).size == cat.size
    buffer = io.BytesIO()
    cat.save(buffer, "PNG")
    assert load_image(buffer.getvalue()).size == cat.size


def test_load_images_keeps_order_and_errors_in_place_with_several_threads(tmp_path):
    from qformer.processing.images import load_images

    paths = []
    for k in range(5):
        path = tmp_path / f"{k}.png"
        Image.new("RGB", (8 + k, 8), "red").save(path)
        paths.append(str(path))
    paths.insert(2, str(tmp_path / "missing.png"))
    for workers in (1, 3):
        loaded, errors = load_images(paths, return_exceptions=True, workers=workers)
        assert [image.size[0] for image in loaded] == [8, 9, 10, 11, 12]
        assert [e is not None for e in errors] == [False, False, True, False, False, False]
    with pytest.raises(ImageLoadError, match="missing.png"):
        load_images(paths, workers=3)


def test_one_reduction_serves_every_network_that_sees_the_whole_photo():
    photo = Image.new("RGB", (1920, 1080))
    assert reduced(photo, 512).size == (960, 540)  # by 2: by 3 the shorter side would be 360
    assert reduced(photo, 300).size == (640, 360)
    small = Image.new("RGB", (900, 600))
    assert reduced(small, 512) is small and reduced(photo, None) is photo
    deep = Image.new("I;16", (2000, 2000))  # Pillow cannot box-reduce 16-bit images
    assert reduced(deep, 512) is deep
