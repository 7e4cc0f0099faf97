#!/usr/bin/env bash
# Python packages: nnos's runtime dependencies as binary wheels for the image's architecture,
# pinned to the versions the test suite runs (lib/requirements.py), and nnos itself. Bookworm's
# own python3-numpy/fastapi are too old, so they are not used.
set -euo pipefail
pyver=$(ls "$ROOTFS/usr/lib" | sed -n 's/^python\(3\.[0-9]*\)$/\1/p' | sort -V | tail -1)
site=$ROOTFS/usr/local/lib/python$pyver/dist-packages
req=$WORK/requirements.txt
"$HOST_PY" "$IMAGE_DIR/lib/requirements.py" > "$req"
case $ARCH in
    amd64) m=x86_64 ;;
    arm64) m=aarch64 ;;
esac
platforms=()
for t in manylinux2014 manylinux_2_17 manylinux_2_24 manylinux_2_27 manylinux_2_28 manylinux_2_31 manylinux_2_34 manylinux_2_35 manylinux_2_36; do
    platforms+=(--platform "${t}_$m")
done
mkdir -p "$site"
"$HOST_PY" -m pip install --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --implementation cp --python-version "$pyver" --abi "cp${pyver/./}" --abi abi3 --abi none "${platforms[@]}" \
    --target "$site" --cache-dir "$CACHE/pip" -r "$req" 2>&1 | { grep -v "^WARNING: Location" || true; }
# nnos itself (source packages only; no tests, no generated models); hardware/ and models/ are
# imported as nnos_hardware and nnos_models (setup.py)
tar -C "$REPO" --exclude=__pycache__ --exclude='*.pyc' --exclude='zoo/*.onnx' \
    --transform 's,^hardware,nnos_hardware,;s,^models,nnos_models,' -cf - nnos hardware models | tar -C "$site" -xf -
rm -rf "$site"/bin
cat > "$ROOTFS/usr/local/bin/nnos" <<'PY'
#!/usr/bin/python3
import sys
from nnos.cli import main
sys.exit(main())
PY
chmod 755 "$ROOTFS/usr/local/bin/nnos"
echo "python $pyver packages: $(wc -l < "$req") pinned wheels + nnos; $(du -sh "$site" | cut -f1) in $site"
