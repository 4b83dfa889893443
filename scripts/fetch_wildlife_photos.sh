#!/usr/bin/env bash
# Real photographs for `python -m qformer.training.evaluate_wildlife`, offline, the ones
# tests/data/wildlife_photos.csv labels:
# - animals/, people/, vehicles/: cut-out photos from Debian's tuxpaint-stamps-default (Tux Paint's
#   stamps, GPL-2, by Bill Kendrick and the Tux Paint contributors; see copyright in DEST);
# - wallpapers/: landscapes, water, plants and a ladybird from Debian's plasma-workspace-wallpapers
#   (KDE, LGPL-3 / CC-BY-SA) and mate-backgrounds (GPL-2+), saved as JPEG within 1920x1080, the
#   size of a camera trap's or phone's frame (their copyright files are copied alongside);
# - scikit-image/: photos bundled with scikit-image (astronaut: NASA, public domain; camera, coffee,
#   chelsea: CC0 or no known restrictions; motorcycle: the Middlebury 2014 stereo benchmark; as
#   skimage.data's docstrings say).
#     bash scripts/fetch_wildlife_photos.sh [DEST]     (default: runs/wildlife-photos)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-runs/wildlife-photos}
python=${PYTHON:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
packages=(tuxpaint-stamps-default plasma-workspace-wallpapers mate-backgrounds)
(cd "$work" && apt-get download "${packages[@]}" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get download "${packages[@]}" >/dev/null; })
mkdir -p "$dest"
for package in "${packages[@]}"; do
    dpkg-deb -x "$work"/"$package"_*.deb "$work/x"
    cp "$work/x/usr/share/doc/$package/copyright" "$dest/copyright-$package"
    dpkg-deb -f "$work"/"$package"_*.deb Package Version >> "$work/SOURCE"
done
mv "$work/SOURCE" "$dest/SOURCE"
tail -n +2 tests/data/wildlife_photos.csv | cut -d, -f1 | grep -E '^(animals|people|vehicles)/' | while read -r file; do
    mkdir -p "$dest/$(dirname "$file")"
    cp "$work/x/usr/share/tuxpaint/stamps/$file" "$dest/$file"
done
"$python" - "$work/x/usr/share" "$dest" <<'PY'
import csv
import sys
from pathlib import Path

import skimage
from PIL import Image
from skimage import data

share, out = Path(sys.argv[1]), Path(sys.argv[2])
labelled = [row["file"] for row in csv.DictReader(open("tests/data/wildlife_photos.csv"))]
for file in (f for f in labelled if f.startswith("wallpapers/")):
    _, desktop, name = Path(file).with_suffix("").parts
    if desktop == "plasma":
        images = share / "wallpapers" / name / "contents" / "images"
        source = next((images / f"1920x1080.{s}" for s in ("jpg", "png") if (images / f"1920x1080.{s}").exists()),
                      None) or max(images.iterdir(), key=lambda p: int(p.stem.split("x")[0]))
    else:
        source = next((share / "backgrounds" / "mate").glob(f"*/{name}.jpg"))
    image = Image.open(source).convert("RGB")
    image.thumbnail((1920, 1080), Image.Resampling.LANCZOS)
    (out / file).parent.mkdir(parents=True, exist_ok=True)
    image.save(out / file, quality=90)

photos = {"astronaut": data.astronaut(), "camera": data.camera(), "chelsea": data.chelsea(),
          "coffee": data.coffee(), "motorcycle": data.stereo_motorcycle()[0]}
(out / "scikit-image").mkdir(parents=True, exist_ok=True)
for name, pixels in photos.items():
    Image.fromarray(pixels).save(out / "scikit-image" / f"{name}.png")
(out / "scikit-image" / "SOURCE").write_text(f"scikit-image {skimage.__version__}\n")
PY
echo "wrote $(tail -n +2 tests/data/wildlife_photos.csv | wc -l) photos to $dest"
