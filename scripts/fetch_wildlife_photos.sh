#!/usr/bin/env bash
# Real photographs for `python -m qformer.training.evaluate_wildlife`, offline, the ones
# tests/data/wildlife_photos.csv labels:
# - animals/ and people/: cut-out photos from Debian's tuxpaint-stamps-default (Tux Paint's stamps,
#   GPL-2, by Bill Kendrick and the Tux Paint contributors; see copyright in DEST);
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
(cd "$work" && apt-get download tuxpaint-stamps-default >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get download tuxpaint-stamps-default >/dev/null; })
dpkg-deb -x "$work"/tuxpaint-stamps-default_*.deb "$work/x"
mkdir -p "$dest"
tail -n +2 tests/data/wildlife_photos.csv | cut -d, -f1 | grep -v '^scikit-image/' | while read -r file; do
    mkdir -p "$dest/$(dirname "$file")"
    cp "$work/x/usr/share/tuxpaint/stamps/$file" "$dest/$file"
done
cp "$work/x/usr/share/doc/tuxpaint-stamps-default/copyright" "$dest/copyright"
dpkg-deb -f "$work"/tuxpaint-stamps-default_*.deb Package Version > "$dest/SOURCE"
"$python" - "$dest/scikit-image" <<'PY'
import sys
from pathlib import Path

import skimage
from PIL import Image
from skimage import data

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
photos = {"astronaut": data.astronaut(), "camera": data.camera(), "chelsea": data.chelsea(),
          "coffee": data.coffee(), "motorcycle": data.stereo_motorcycle()[0]}
for name, pixels in photos.items():
    Image.fromarray(pixels).save(out / f"{name}.png")
(out / "SOURCE").write_text(f"scikit-image {skimage.__version__}\n")
PY
echo "wrote $(tail -n +2 tests/data/wildlife_photos.csv | wc -l) photos to $dest"
