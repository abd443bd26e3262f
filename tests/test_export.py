"""Export: merged LoRA equals unmerged, ONNX equals PyTorch (LoRA, adapter, prompt), the bundle
is refused when they disagree, and model.json describes the model."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from peftsp import grammar, runtime, tokens
from peftsp.bundle import load_bundle
from peftsp.cli import main
from peftsp.decoding import decode
from peftsp.errors import ModelError
from peftsp.fasta import read_labelled_list
from peftsp.runtime import Session
from peftsp.train import export
from peftsp.train.model import load_checkpoint
from peftsp.train.training import predict_records


@pytest.mark.parametrize("peft", ("lora", "adapter", "prompt"))
def test_onnx_and_pytorch_agree_on_emissions_types_and_sites(peft, trained, bundle, synthetic_file):
    model, _ = load_checkpoint(trained(peft))
    loaded = load_bundle(bundle(peft))
    session = Session(loaded, device="cpu", threads=1)
    records = read_labelled_list(synthetic_file)
    ids, lengths = tokens.encode([r.sequence for r in records], loaded.window)
    kingdom = np.zeros(len(records), dtype=np.int64)
    onnx = session.emissions(ids, kingdom)
    with torch.no_grad():
        reference = model(torch.as_tensor(ids)).numpy()
    assert export.max_abs_diff(onnx, reference, lengths) < 1e-4
    decoded = decode(onnx, lengths, loaded.crf)
    types = [grammar.SP_TYPES[t] for t in decoded.types]
    assert (types, decoded.cs) == predict_records(model, records, organism_rule=False)


def test_merged_lora_equals_unmerged_and_has_no_lora_left(trained):
    model, _ = load_checkpoint(trained("lora"))
    merged = export.merged_copy(model)
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    ids, lengths, _ = export.example_batch(model.config.window)
    with torch.no_grad():
        a = model(torch.as_tensor(ids)).numpy()
        b = merged(torch.as_tensor(ids)).numpy()
    assert export.max_abs_diff(a, b, lengths) < 1e-5


def test_model_json_describes_the_bundle(bundle, trained):
    meta = json.loads((bundle("lora") / "model.json").read_text())
    assert meta["format"] == "peftsp-model" and meta["states"] == list(grammar.STATES)
    assert meta["peft"]["peft"] == "lora" and meta["peft"]["lora_rank"] == 8
    assert meta["window"] == 70 and meta["export_check"]["max_abs_diff"] < 1e-4
    model, _ = load_checkpoint(trained("lora"))
    crf = model.crf.numpy_parameters()
    assert np.array_equal(
        np.asarray(meta["crf"]["transitions"], dtype=np.float32), crf["transitions"]
    )
    assert set(meta["files"]) == {"model.onnx"}


def test_a_bundle_that_disagrees_with_pytorch_is_not_written(
    trained, tmp_path, monkeypatch, capsys
):
    real = export.run_onnx
    monkeypatch.setattr(export, "run_onnx", lambda path, feeds: real(path, feeds) + 1e-3)
    out = tmp_path / "bundle"
    argv = ["export", "--checkpoint", str(trained("lora")), "--outdir", str(out), "--quiet"]
    assert main(argv) == 1
    assert re.search(r"max abs diff 1\.0\de-03 > 0\.0001", capsys.readouterr().err)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_export_command_writes_int8_and_fp16_variants(trained, tmp_path):
    out = tmp_path / "bundle"
    argv = ["export", "--checkpoint", str(trained("adapter")), "--outdir", str(out)]
    assert main([*argv, "--int8", "--fp16", "--quiet"]) == 0
    loaded = load_bundle(out)
    assert set(loaded.meta["files"]) == {"model.onnx", "model.int8.onnx", "model.fp16.onnx"}
    ids, lengths, kingdom = export.example_batch(loaded.window)
    fp32 = Session(loaded, "cpu").emissions(ids, kingdom)
    int8 = Session(loaded, "cpu", precision="int8").emissions(ids, kingdom)
    assert np.isfinite(int8).all() and export.max_abs_diff(int8, fp32, lengths) < 1.0
    import onnx

    nodes = onnx.load(str(out / "model.int8.onnx")).graph.node
    assert sum(n.op_type == "MatMulInteger" for n in nodes) >= 4  # the layers are quantized
    head = [n.op_type for n in nodes if "/head/" in n.name and "MatMul" in n.op_type]
    assert head == ["MatMul"]  # the emission head is not


def test_precision_auto_runs_the_graph_the_bundle_was_exported_for(
    trained, bundle, synthetic_file, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(runtime, "cpu_has_exact_int8", lambda: True)
    out = tmp_path / "bundle"
    argv = ["export", "--checkpoint", str(trained("adapter")), "--outdir", str(out), "--quiet"]
    assert main([*argv, "--cpu-precision", "int8"]) == 1
    assert "--cpu-precision int8: export that graph too (--int8)" in capsys.readouterr().err
    assert not out.exists()
    assert main([*argv, "--int8", "--fp16", "--cpu-precision", "int8"]) == 0
    loaded = load_bundle(out)
    assert Session(loaded, "cpu").precision == "int8"
    assert Session(loaded, "cpu", precision="fp32").precision == "fp32"
    assert loaded.auto_precision(gpu=True) == "fp16"
    plain = load_bundle(bundle("lora"))  # fp32 only, exported without a choice
    assert plain.auto_precision(gpu=False) == plain.auto_precision(gpu=True) == "fp32"
    runs = {}
    for precision in ("auto", "int8", "fp32"):
        pred = tmp_path / precision
        argv = ["predict", "--fasta", str(synthetic_file), "--outdir", str(pred), "--quiet"]
        assert main([*argv, "--model", str(out), "--precision", precision]) == 0
        runs[precision] = json.loads((pred / "output.json").read_text())
    assert runs["auto"]["run"]["precision"] == "int8"
    assert runs["auto"]["run"]["model_sha256"] == loaded.meta["files"]["model.int8.onnx"]["sha256"]
    assert runs["auto"]["predictions"] == runs["int8"]["predictions"]
    assert runs["fp32"]["run"]["precision"] == "fp32"


def test_precision_auto_picks_fp16_where_a_gpu_provider_runs_it(trained, tmp_path, monkeypatch):
    import onnxruntime

    from peftsp.runtime import resolve_precision

    monkeypatch.setattr(runtime, "cpu_has_exact_int8", lambda: True)
    out = tmp_path / "bundle"
    argv = ["export", "--checkpoint", str(trained("adapter")), "--outdir", str(out), "--quiet"]
    assert main([*argv, "--int8", "--fp16", "--cpu-precision", "int8"]) == 0
    loaded = load_bundle(out)
    cpu_only = ["CPUExecutionProvider"]
    with_gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", *cpu_only]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: cpu_only)
    assert resolve_precision(loaded, "auto", "auto") == "int8"
    assert resolve_precision(loaded, "auto", "cuda") == "fp16"  # asked for: a GPU graph
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: with_gpu)
    assert resolve_precision(loaded, "auto", "auto") == "fp16"
    assert resolve_precision(loaded, "auto", "cpu") == "int8"
    assert resolve_precision(loaded, "fp32", "tensorrt") == "fp32"  # an explicit choice stays


@pytest.mark.parametrize(
    ("key", "value", "message"),
    (
        ("cpu_precision", "int4", "cpu_precision 'int4'"),
        ("int8_weight_bits", 4, "bits 4 is"),
        ("int8_activations", "adaptive", "activations 'adaptive'"),
    ),
)
def test_a_bundle_naming_an_unknown_precision_is_refused(bundle, tmp_path, key, value, message):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundle("lora"), copy)
    meta = json.loads((copy / "model.json").read_text())
    meta[key] = value
    (copy / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=message):
        load_bundle(copy)


ZEN3 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma bmi2 sha_ni\n"
ZEN4 = ZEN3.replace("sha_ni", "sha_ni avx512f avx512_vnni avx512_bf16")
ALDER_LAKE = ZEN3.replace("sha_ni", "sha_ni avx_vnni")
NEOVERSE = "processor\t: 0\nFeatures\t: fp asimd aes crc32 atomics asimddp sve\n"
CORTEX_A72 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n"


@pytest.mark.parametrize(
    ("cpuinfo", "exact"),
    ((ZEN3, False), (ZEN4, True), (ALDER_LAKE, True), (NEOVERSE, True), (CORTEX_A72, False)),
)
def test_exact_int8_is_read_from_the_cpu_flags(cpuinfo, exact):
    assert runtime.cpu_has_exact_int8(cpuinfo, system="Linux") is exact
    assert runtime.cpu_has_exact_int8("", system="Linux") is False


def _int8_weights(path):
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    int8 = onnx.TensorProto.INT8
    return [numpy_helper.to_array(t) for t in graph.initializer if t.data_type == int8]


def test_int8_weight_bits_decide_where_auto_runs_the_int8_graph(
    trained, tmp_path, monkeypatch, caplog
):
    argv = ["export", "--checkpoint", str(trained("adapter")), "--int8", "--quiet"]
    argv += ["--cpu-precision", "int8"]
    full, reduced = tmp_path / "full", tmp_path / "reduced"
    assert main([*argv, "--outdir", str(full)]) == 0
    assert main([*argv, "--outdir", str(reduced), "--int8-weights", "7"]) == 0
    full_bundle, reduced_bundle = load_bundle(full), load_bundle(reduced)
    assert full_bundle.meta["int8_weight_bits"] == 8 and reduced_bundle.int8_weight_bits == 7
    # per-channel symmetric scales put each channel's largest weight at the end of the range
    assert max(int(np.abs(w).max()) for w in _int8_weights(full / "model.int8.onnx")) == 127
    assert max(int(np.abs(w).max()) for w in _int8_weights(reduced / "model.int8.onnx")) <= 64
    for exact, expected in ((True, "int8"), (False, "fp32")):
        monkeypatch.setattr(runtime, "cpu_has_exact_int8", lambda exact=exact: exact)
        assert runtime.resolve_precision(full_bundle, "auto", "cpu") == expected
        assert runtime.resolve_precision(reduced_bundle, "auto", "cpu") == "int8"
    caplog.clear()
    assert runtime.resolve_precision(full_bundle, "int8", "cpu") == "int8"  # asked for: kept
    assert "may saturate" in caplog.text
    caplog.clear()
    assert runtime.resolve_precision(reduced_bundle, "int8", "cpu") == "int8"
    assert "may saturate" not in caplog.text


def test_export_refuses_to_overwrite_a_directory_that_is_not_a_bundle(trained, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    model, _ = load_checkpoint(trained("lora"))
    with pytest.raises(ModelError, match="not a model bundle"):
        export.export_bundle(model, out)
    assert (out / "notes.txt").read_text() == "keep me"


def test_kingdom_conditioned_model_exports_its_kingdom_input(tiny_backbone_file, tmp_path):
    from peftsp.train import backbone
    from peftsp.train.model import ModelConfig, SignalPeptideModel

    esm = backbone.load_backbone(str(tiny_backbone_file))
    config = ModelConfig(
        str(tiny_backbone_file), backbone.backbone_config(esm), kingdom_conditioning=True
    )
    model = SignalPeptideModel(esm, config, seed=1).eval()
    with torch.no_grad():
        model.kingdom.weight.normal_()
    export.export_bundle(model, tmp_path / "b")
    loaded = load_bundle(tmp_path / "b")
    ids, lengths, _ = export.example_batch(loaded.window)
    for organism in ("eukarya", "gram_negative"):
        kingdom = np.full(len(ids), loaded.organism_id(organism))
        with torch.no_grad():
            reference = model(torch.as_tensor(ids), torch.as_tensor(kingdom)).numpy()
        onnx = Session(loaded, "cpu").emissions(ids, kingdom)
        assert export.max_abs_diff(onnx, reference, lengths) < 1e-4
    other = Session(loaded, "cpu").emissions(ids, np.zeros(len(ids), dtype=np.int64))
    assert export.max_abs_diff(other, onnx, lengths) > 1e-2  # the kingdom input is used


def test_evaluate_gives_the_same_table_for_checkpoint_and_bundle(
    trained, bundle, synthetic_file, capsys
):
    base = ["evaluate", "--data", str(synthetic_file), "--partition", "1", "--quiet"]
    assert main([*base, "--model", str(trained("prompt"))]) == 0
    from_checkpoint = capsys.readouterr().out
    assert main([*base, "--model", str(bundle("prompt"))]) == 0
    assert capsys.readouterr().out == from_checkpoint
    assert "| Eukarya       | Sec/SPI   |  1.000 |  1.000 |" in from_checkpoint


@pytest.fixture(scope="module")
def conditioned(tiny_backbone_file, tmp_path_factory):
    """A kingdom-conditioned model with sequence rules (strong random kingdom embedding),
    saved as a checkpoint and exported as a bundle."""
    from peftsp.train import backbone
    from peftsp.train.model import ModelConfig, SignalPeptideModel, save_checkpoint

    esm = backbone.load_backbone(str(tiny_backbone_file))
    shape = backbone.backbone_config(esm)
    config = ModelConfig(
        str(tiny_backbone_file), shape, kingdom_conditioning=True, sequence_rules=True
    )
    model = SignalPeptideModel(esm, config, seed=3).eval()
    with torch.no_grad():
        model.kingdom.weight.normal_(0, 3, generator=torch.Generator().manual_seed(3))
    folder = tmp_path_factory.mktemp("conditioned")
    save_checkpoint(model, folder / "model.pt")
    export.export_bundle(model, folder / "bundle")
    return folder


@pytest.mark.parametrize("organism_rule", [True, False])
def test_checkpoint_and_bundle_of_a_kingdom_conditioned_model_predict_alike(
    conditioned, synthetic_file, organism_rule
):
    from peftsp.evaluation import open_model, predict_labelled

    records = read_labelled_list(synthetic_file)
    runs = [
        predict_labelled(open_model(str(conditioned / name)), records, organism_rule)
        for name in ("model.pt", "bundle")
    ]
    for a, b in zip(*runs, strict=True):
        assert (a.sp_type, a.cs) == (b.sp_type, b.cs)
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-4)
    # The kingdom the model is given matters: records all fed as "other" predict differently.
    hidden = [
        type(r)(r.accession, "NEGATIVE", r.sp_type, r.partition, r.sequence, r.labels, r.line)
        for r in records
    ]
    other = predict_labelled(open_model(str(conditioned / "bundle")), hidden, organism_rule)
    assert any(
        a.probabilities != pytest.approx(b.probabilities, abs=1e-3)
        for a, b in zip(runs[1], other, strict=True)
        if a.id in {r.accession for r in records if r.kingdom != "NEGATIVE"}
    )


def test_evaluate_without_the_organism_rule_gives_one_table_for_checkpoint_and_bundle(
    conditioned, synthetic_file, capsys
):
    base = ["evaluate", "--data", str(synthetic_file), "--partition", "1", "--quiet"]
    tables = []
    for name in ("model.pt", "bundle"):
        assert main([*base, "--no-organism-rule", "--model", str(conditioned / name)]) == 0
        tables.append(capsys.readouterr().out)
    assert tables[0] == tables[1] and "Eukarya" in tables[0]


def test_static_int8_predicts_each_protein_alike_in_any_batch(trained, tmp_path, capsys):
    import onnx

    proteome = Path(__file__).parent / "data" / "mgenitalium.faa"
    out = tmp_path / "bundle"
    argv = ["export", "--checkpoint", str(trained("adapter")), "--outdir", str(out), "--quiet"]
    assert main([*argv, "--int8-calibration", str(proteome)]) == 1
    assert "--int8-calibration: export the int8 graph too (--int8)" in capsys.readouterr().err
    assert main([*argv, "--int8", "--int8-calibration", str(tmp_path / "none.faa")]) == 1
    assert "none.faa" in capsys.readouterr().err and not out.exists()
    assert main([*argv, "--int8", "--int8-calibration", str(proteome), str(proteome)]) == 0
    loaded = load_bundle(out)
    assert loaded.meta["int8_activations"] == "static"
    nodes = onnx.load(str(out / "model.int8.onnx")).graph.node
    kinds = {n.op_type for n in nodes}
    assert "DynamicQuantizeLinear" not in kinds and "QuantizeLinear" in kinds
    head = [n.op_type for n in nodes if "/head/" in n.name and "MatMul" in n.op_type]
    assert head == ["MatMul"]
    ids, lengths, kingdom = export.example_batch(loaded.window)
    session = Session(loaded, "cpu", precision="int8")
    together = session.emissions(ids, kingdom)
    for row in range(len(ids)):  # each protein alone gives the bits it got in the batch
        alone = session.emissions(ids[row : row + 1], kingdom[row : row + 1])[0]
        n = lengths[row]
        assert np.array_equal(alone[:n], together[row, :n])
    fp32 = Session(loaded, "cpu").emissions(ids, kingdom)
    assert export.max_abs_diff(together, fp32, lengths) < 1.0
    dynamic = tmp_path / "dynamic"
    argv[argv.index(str(out))] = str(dynamic)
    assert main([*argv, "--int8"]) == 0
    assert load_bundle(dynamic).meta["int8_activations"] == "dynamic"


def activation_scales(path: Path) -> dict[str, float]:
    """Scale of each activation QuantizeLinear of a static int8 graph, by node name."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    return {
        n.name: float(values[n.input[1]])
        for n in graph.node
        if n.op_type == "QuantizeLinear" and n.input[0] not in values
    }


def test_int8_method_sets_the_activation_ranges(trained, tmp_path, capsys):
    proteome = Path(__file__).parent / "data" / "mgenitalium.faa"
    argv = ["export", "--checkpoint", str(trained("adapter")), "--int8", "--quiet"]
    scales = {}
    for method in ("minmax", "percentile"):
        out = tmp_path / method
        extra = ["--int8-calibration", str(proteome), "--int8-method", method]
        assert main([*argv, "--outdir", str(out), *extra]) == 0
        printed = capsys.readouterr()  # ONNX Runtime's quantizer chatter stays hidden
        assert printed.out.startswith("wrote ") and printed.out.count("\n") == 1
        assert printed.err == ""
        assert load_bundle(out).meta["int8_method"] == method
        scales[method] = activation_scales(out / "model.int8.onnx")
    assert scales["minmax"] and scales["minmax"].keys() == scales["percentile"].keys()
    # Percentile clips the extremes: no range wider than minmax's, some narrower.
    pairs = [(scales["percentile"][k], v) for k, v in scales["minmax"].items()]
    assert all(p <= m * (1 + 1e-6) for p, m in pairs) and any(p < m * 0.99 for p, m in pairs)
    with pytest.raises(SystemExit):
        main([*argv, "--outdir", str(tmp_path / "x"), "--int8-method", "mean"])
