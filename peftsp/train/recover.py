"""A training checkpoint rebuilt from a model bundle's fp32 ONNX graph, so that a shipped
model whose PyTorch checkpoint is gone (the embedded default model) can be trained further
with `peftsp train --init`.

Only bundles whose graph holds every weight of the model can be rebuilt: full fine-tuning, or
any method on a random backbone. The ONNX exporter keeps a parameter's name when it is used
as is (biases, norms, embeddings) and stores each Linear weight transposed under a generated
name as the second input of a MatMul; such a weight is named by the bias its output is added
to. The rebuilt model must reproduce the graph's emissions, or nothing is written.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from peftsp.bundle import load_bundle, model_config
from peftsp.errors import ModelError
from peftsp.train.export import TOLERANCE, graph_diff
from peftsp.train.model import ModelConfig, SignalPeptideModel, model_from_config, save_checkpoint

log = logging.getLogger("peftsp")

_PREFIX = "model."  # export._Exported wraps the model as `model`


def _graph_weights(path: Path) -> dict[str, np.ndarray]:
    """Model parameter name -> array, for every weight the fp32 graph stores."""
    graph = onnx.load(path).graph
    stored = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    weights = {n[len(_PREFIX) :]: v for n, v in stored.items() if n.startswith(_PREFIX)}
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in stored or node.input[1] in weights:
            continue
        biases = [
            name
            for add in readers.get(node.output[0], [])
            if add.op_type == "Add"
            for name in add.input
            if name.startswith(_PREFIX) and name.endswith(".bias")
        ]
        if len(biases) != 1:
            raise ModelError(f"{path}: cannot tell which layer MatMul {node.name!r} belongs to")
        weights[biases[0][len(_PREFIX) : -len("bias")] + "weight"] = stored[node.input[1]].T
    return weights


def model_from_bundle(bundle_dir: str | Path) -> tuple[SignalPeptideModel, dict]:
    """(model, its training record) rebuilt from a bundle; checked against its fp32 graph."""
    bundle = load_bundle(bundle_dir)
    config = ModelConfig.from_dict(model_config(bundle.meta))
    if not config.stores_backbone:
        raise ModelError(
            f"{bundle_dir}: a {config.peft} bundle on {config.backbone} keeps merged weights "
            "only; rebuild works for full fine-tuning or a random backbone"
        )
    model = model_from_config(config.to_dict())
    graph = Path(bundle_dir) / "model.onnx"
    weights = _graph_weights(graph)
    state = model.state_dict()
    unknown = sorted(set(weights) - set(state))
    if unknown:
        raise ModelError(f"{graph}: weights this model does not have: {unknown[:5]}")
    for name, value in weights.items():
        state[name] = torch.as_tensor(np.array(value, dtype=np.float32))
    names = {"transitions": "transitions", "start": "start_transitions", "end": "end_transitions"}
    for key, name in names.items():
        state[f"crf.parametrizations.{name}.original"] = torch.as_tensor(bundle.crf[key])
    model.load_state_dict(state)
    model.eval()
    _check_against_graph(model, graph)
    return model, dict(bundle.meta.get("training") or {})


def _check_against_graph(model: SignalPeptideModel, graph: Path) -> None:
    diff = graph_diff(model, graph)
    log.info("rebuilt model vs %s: max abs diff %.2e", graph, diff)
    if diff > TOLERANCE:
        raise ModelError(
            f"{graph}: the rebuilt model's emissions differ from the graph's by {diff:.2e}; "
            "no checkpoint written"
        )


def recover_command(args) -> None:
    """`peftsp recover`: a bundle's model as a training checkpoint."""
    if args.threads:
        torch.set_num_threads(args.threads)
    model, training = model_from_bundle(args.model)
    save_checkpoint(model, args.out, extra={**training, "recovered_from": str(args.model)})
    print(f"wrote {args.out}: the model of {args.model}, ready for peftsp train --init")
