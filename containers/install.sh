#!/bin/sh
# Install peftsp and its pinned runtime into an image; shared by Dockerfile.cpu, Dockerfile.gpu,
# peftsp.def and peftsp-debootstrap.def. Runs as root at build time, from a scratch copy of the
# source tree that the caller removes afterwards:
#   sh <src>/containers/install.sh cpu
#   sh <src>/containers/install.sh gpu [12|13]        CUDA major of the GPU runtime, default 12
set -eu

flavour=$1
cuda=${2:-12}
src=$(cd "$(dirname "$0")/.." && pwd)
# No pip cache, no bytecode written by the smoke test, no onnxruntime device id under $HOME.
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 ORT_DISABLE_TELEMETRY=1

case $flavour in
    cpu)
        requirements=$src/containers/requirements-cpu.txt
        index=""
        ;;
    gpu)
        requirements=$src/containers/requirements-gpu-cu$cuda.txt
        # The TensorRT wheels are on NVIDIA's own index; the PyPI packages of the same name are
        # source stubs that download from there while installing. Either way the build needs
        # https://pypi.nvidia.com.
        index="--extra-index-url https://pypi.nvidia.com"
        ;;
    *)
        echo "install.sh: the flavour is cpu or gpu, not '$flavour'" >&2
        exit 2
        ;;
esac
if [ ! -f "$requirements" ]; then
    echo "install.sh: no $requirements (the CUDA major is 12 or 13)" >&2
    exit 2
fi

# procps: `ps`, which Nextflow uses to collect task metrics.
apt-get update
apt-get install -y --no-install-recommends procps
apt-get clean
rm -rf /var/lib/apt/lists/*

# The pinned runtime, then the package itself (with its embedded default model, package data)
# without letting pip pick other versions.
# shellcheck disable=SC2086  # $index is empty or two words
pip install $index -r "$requirements"
pip install --no-deps "$src"

if [ "$flavour" = gpu ]; then
    # The CUDA, cuDNN and TensorRT libraries of the nvidia wheels on the loader path.
    python - <<'PY' > /etc/ld.so.conf.d/peftsp-gpu.conf
import pathlib, site
libs = {p.parent for root in site.getsitepackages() for pattern in ("nvidia/**/lib*.so*", "tensorrt_libs/lib*.so*") for p in pathlib.Path(root).glob(pattern)}
print("\n".join(sorted(map(str, libs))))
PY
    ldconfig
    # Every library the CUDA and TensorRT providers link must resolve; libcuda comes from
    # the host driver at run time (--nv, --gpus all).
    capi=$(python -c 'import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))')/capi
    if ldd "$capi"/libonnxruntime_providers_cuda.so "$capi"/libonnxruntime_providers_tensorrt.so \
        | grep 'not found' | grep -v 'libcuda\.so'; then
        echo "install.sh: missing GPU libraries (above)" >&2
        exit 1
    fi
else
    # onnxruntime-gpu stands in for the declared onnxruntime, so only the CPU image can be checked.
    pip check
fi

# Smoke test: the embedded default model predicts the test proteome (on CPU: no GPU at build).
peftsp --version
peftsp predict --fasta "$src/assets/test/proteome.faa" --outdir /tmp/peftsp-smoke --device cpu --quiet
test -s /tmp/peftsp-smoke/prediction_results.txt
rm -rf /tmp/peftsp-smoke

# Nothing the build wrote for itself stays in the image.
rm -rf /root/.cache /tmp/pip-* /var/cache/apt/*.bin
