#!/usr/bin/env bash
# The board config and the default model, compiled into a plan here and checked twice: by the
# compiler's self-check (plan == direct evaluation) and by running the plan with the image's own
# Python and numpy (chroot) against the reference computed by this build's nnos.
set -euo pipefail
share=$ROOTFS/usr/share/nnos
install -d "$share/models" "$share/boards" "$ROOTFS/etc/nnos"
model=$MODEL
if [ -z "$model" ]; then
    model=$("$HOST_PY" -c 'import sys; from nnos_hardware.board import load_board; print(load_board(sys.argv[1]).model or "")' "$BOARD")
fi
[ -f "$model" ] || { echo "no default model: the board names none and --model was not given" >&2; exit 1; }
cp "$model" "$share/models/default.onnx"
# with its vulkan shaders generated and compiled here (SPIR-V kept in the plan: the device
# compiles none for its default model)
"$(dirname "$HOST_PY")/nnos" compile "$model" -o "$share/default.plan" --kernels vulkan
# every shipped board, with its model pointing at the shipped default model
for b in "$REPO"/hardware/boards/*.toml "$BOARD"; do
    sed -E 's|^model *=.*|model = "/usr/share/nnos/models/default.onnx"|' "$b" > "$share/boards/$(basename "$b")"
done
cp "$share/boards/$(basename "$BOARD")" "$ROOTFS/etc/nnos/board.toml"
"$HOST_PY" -c 'import sys; from nnos_hardware.board import load_board; from nnos.plan import load
b = load_board(sys.argv[1]); b.check_plan(load(sys.argv[2])); print(f"board {b.name}: fits the default plan")' \
    "$ROOTFS/etc/nnos/board.toml" "$share/default.plan"
# the reference: this build's numpy evaluation of the ONNX graph on fixed inputs
"$HOST_PY" "$IMAGE_DIR/lib/plancheck.py" reference "$model" "$share/default.plan" "$WORK/plancheck.npz"
cp "$WORK/plancheck.npz" "$ROOTFS/tmp/plancheck.npz"
cp "$IMAGE_DIR/lib/plancheck.py" "$ROOTFS/tmp/plancheck.py"
chroot "$ROOTFS" /usr/bin/python3 /tmp/plancheck.py check /usr/share/nnos/default.plan /tmp/plancheck.npz
rm "$ROOTFS/tmp/plancheck.npz" "$ROOTFS/tmp/plancheck.py"
sha256sum "$share/default.plan" | cut -d" " -f1 > "$WORK/plan_id"
