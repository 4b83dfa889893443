#!/usr/bin/env bash
# Real animal photographs for `python -m qformer.training.evaluate_wildlife`, offline: the cut-out
# photos of Debian's tuxpaint-stamps-default (Tux Paint's stamps, GPL-2, by Bill Kendrick and the Tux
# Paint contributors; see copyright in DEST), the ones tests/data/wildlife_photos.csv labels.
#     bash scripts/fetch_wildlife_photos.sh [DEST]     (default: runs/wildlife-photos)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-runs/wildlife-photos}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download tuxpaint-stamps-default >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get download tuxpaint-stamps-default >/dev/null; })
dpkg-deb -x "$work"/tuxpaint-stamps-default_*.deb "$work/x"
mkdir -p "$dest"
tail -n +2 tests/data/wildlife_photos.csv | cut -d, -f1 | while read -r file; do
    mkdir -p "$dest/$(dirname "$file")"
    cp "$work/x/usr/share/tuxpaint/stamps/animals/$file" "$dest/$file"
done
cp "$work/x/usr/share/doc/tuxpaint-stamps-default/copyright" "$dest/copyright"
dpkg-deb -f "$work"/tuxpaint-stamps-default_*.deb Package Version > "$dest/SOURCE"
echo "wrote $(tail -n +2 tests/data/wildlife_photos.csv | wc -l) photos to $dest"
