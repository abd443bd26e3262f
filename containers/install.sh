#!/bin/sh
# Install peftsp and its pinned runtime into an image; shared by Dockerfile.cpu, Dockerfile.gpu
# and peftsp.def. Runs as root at build time from the copied source tree:
#   sh /opt/peftsp/src/containers/install.sh cpu|gpu
set -eu

flavour=$1
src=$(cd "$(dirname "$0")/.." && pwd)

# procps: `ps`, which Nextflow uses to collect task metrics.
apt-get update
apt-get install -y --no-install-recommends procps
rm -rf /var/lib/apt/lists/*

# The pinned runtime, then the package itself (with its embedded default model, package data)
# without letting pip pick other versions.
pip install --no-cache-dir -r "$src/containers/requirements-$flavour.txt"
pip install --no-cache-dir --no-deps "$src"

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
