"""Per-protein plots like SignalP 6.0's: residue-level posterior probabilities along the first
residues the model reads (70 by default).

Curves, from the CRF's posterior state marginals (Prediction.marginals, (L, 37)): the n-, h- and
c-regions of a signal peptide (each summed over the SP types; the Tat RR motif counts as n, the
lipobox as c), the prepilin leader (Sec/SPIII), the cleavage site (the probability that residue
i is the last SP residue: P(i in SP) - P(i+1 in SP), since an SP is a prefix), "Other" (the
residue is in no SP) and, for every SP type that reaches 5% somewhere, the probability that the
residue lies in an SP of that type.

Formats: txt (a table of those curves; no extra dependency), png, svg, eps (matplotlib, an
optional extra: `pip install 'peftsp[plot]'`, drawn with the Agg backend, no display needed).
File names follow SignalP 6.0: output_<ID>_plot.<format>, every character of the ID other than
a letter or digit replaced by '_'; when two IDs give the same name, the later ones get _2, _3...
An ID longer than 200 characters is cut to 200 and followed by a digest of the whole ID.
Files are byte-identical between runs (no dates, fixed SVG ids).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from peftsp import grammar
from peftsp.decoding import Prediction
from peftsp.errors import PeftSPError
from peftsp.report import TYPE_COLOURS

IMAGE_FORMATS = ("png", "svg", "eps")
# The most characters of an ID put into a plot file name (file names end at 255 bytes).
MAX_ID_IN_NAME = 200
FORMATS = ("txt", *IMAGE_FORMATS)
TYPE_CURVE_MIN = 0.05  # a type's curve is drawn when it reaches this somewhere

_NAMES = np.array(grammar.STATE_NAME)
_IN_SP = grammar.IS_SP_REGION
REGION_STATES = {
    "n": _IN_SP & np.isin(_NAMES, ("N", "RR")),
    "h": _IN_SP & (_NAMES == "H"),
    "c": _IN_SP & np.isin(_NAMES, ("C", "CS")),
    "pilin": _IN_SP & (_NAMES == "P"),
}
TYPE_SP_STATES = {
    t: _IN_SP & np.equal(grammar.STATE_TYPE, i) for i, t in enumerate(grammar.SP_TYPES) if i
}
CURVE_LABELS = {
    "n": "n-region",
    "h": "h-region",
    "c": "c-region",
    "pilin": "Sec/SPIII leader",
    "cs": "cleavage site",
    "other": "Other (no SP)",
}
CURVE_COLOURS = {
    "n": "#e377c2",
    "h": "#ff7f0e",
    "c": "#17becf",
    "pilin": "#d62728",
    "cs": "#000000",
    "other": "#9e9e9e",
}


def require_matplotlib(formats) -> None:
    """Raise a clear error when an image format is asked for without matplotlib."""
    wanted = [f for f in formats if f in IMAGE_FORMATS]
    if not wanted:
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise PeftSPError(
            f"{'/'.join(wanted)} plots need matplotlib, which is not installed: "
            "pip install 'peftsp[plot]' (or ask for txt or no plots)"
        ) from err


def curves(marginals: np.ndarray) -> dict[str, np.ndarray]:
    """The plotted curves of one protein's (L, 37) marginals, each of length L."""
    m = np.asarray(marginals, dtype=np.float64)
    in_sp = m[:, _IN_SP].sum(axis=1)
    out = {name: m[:, states].sum(axis=1) for name, states in REGION_STATES.items()}
    out["cs"] = np.clip(in_sp - np.append(in_sp[1:], 0.0), 0.0, 1.0)
    out["other"] = np.clip(1.0 - in_sp, 0.0, 1.0)
    for t, states in TYPE_SP_STATES.items():
        out[t] = m[:, states].sum(axis=1)
    return out


def shown_types(values: dict[str, np.ndarray]) -> list[str]:
    return [t for t in grammar.SP_TYPES[1:] if values[t].max(initial=0) >= TYPE_CURVE_MIN]


class PlotWriter:
    """Writes the plots of each protein in the chosen formats; returns their file names."""

    def __init__(self, formats) -> None:
        unknown = [f for f in formats if f not in FORMATS]
        if unknown:
            raise PeftSPError(f"unknown plot format(s) {', '.join(unknown)}")
        self.formats = tuple(dict.fromkeys(formats))
        require_matplotlib(self.formats)
        self._stems: set[str] = set()

    def stem(self, ident: str) -> str:
        """output_<ID>_plot with non-alphanumerics as '_', unique within the run; an ID longer
        than MAX_ID_IN_NAME is cut there and followed by a digest of the whole ID, so the name
        stays within file-system limits (255 bytes) and still tells such IDs apart."""
        name = re.sub(r"[^A-Za-z0-9]", "_", ident)
        if len(name) > MAX_ID_IN_NAME:
            digest = hashlib.sha256(ident.encode("utf-8", "surrogatepass")).hexdigest()[:12]
            name = f"{name[:MAX_ID_IN_NAME]}_{digest}"
        base = f"output_{name}_plot"
        stem, n = base, 1
        while stem in self._stems:
            n += 1
            stem = f"{base}_{n}"
        self._stems.add(stem)
        return stem

    def write(self, p: Prediction, directory: Path) -> dict[str, str]:
        """Write p's plot files into `directory`; returns format -> file name."""
        if p.marginals is None:
            raise ValueError(f"{p.id}: plots need the posterior marginals")
        values = curves(p.marginals)
        stem = self.stem(p.id)
        names: dict[str, str] = {}
        for fmt in self.formats:
            names[fmt] = f"{stem}.{fmt}"
            path = directory / names[fmt]
            if fmt == "txt":
                path.write_text(plot_table(p, values), encoding="utf-8")
            else:
                _draw(p, values, path, fmt)
        return names


def _title(p: Prediction) -> str:
    title = f"{p.id}: {grammar.TYPE_NAMES[p.sp_type]} ({p.probability:.4f})"
    if p.cs is not None and p.sp_type != "NO_SP":
        title += f", CS pos: {p.cs}-{p.cs + 1}"
        if p.cs_marginal is not None:
            title += f", Pr: {p.cs_marginal:.4f}"
    return title


def plot_table(p: Prediction, values: dict[str, np.ndarray]) -> str:
    """The txt plot: one row per residue, one column per curve (4 decimals)."""
    types = list(grammar.SP_TYPES[1:])
    names = ["n", "h", "c", "pilin", "cs", "other", *types]
    labels = [
        CURVE_LABELS[n] if n in CURVE_LABELS else f"in SP {grammar.TYPE_NAMES[n]}" for n in names
    ]
    header = ["pos", "aa", *labels]
    lines = [
        f"# PEFT-SP per-residue posterior probabilities of {p.id}",
        f"# {_title(p)}",
        "\t".join(header),
    ]
    for i in range(len(values["other"])):
        row = [str(i + 1), p.sequence[i], *(f"{values[n][i]:.4f}" for n in names)]
        lines.append("\t".join(row))
    return "\n".join(lines) + "\n"


def _draw(p: Prediction, values: dict[str, np.ndarray], path: Path, fmt: str) -> None:
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    length = len(values["other"])
    x = np.arange(1, length + 1)
    with matplotlib.rc_context({"svg.hashsalt": "peftsp", "font.size": 8}):
        fig = Figure(figsize=(10, 3.6), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for t in shown_types(values):
            ax.plot(
                x, values[t], color=TYPE_COLOURS[t], linestyle=":", linewidth=1.2,
                label=f"in SP {grammar.TYPE_NAMES[t]}",
            )  # fmt: skip
        for name in ("n", "h", "c", "pilin"):
            if name == "pilin" and values[name].max(initial=0) < TYPE_CURVE_MIN:
                continue
            ax.plot(
                x, values[name], color=CURVE_COLOURS[name], linewidth=2, label=CURVE_LABELS[name]
            )
        ax.plot(
            x, values["other"], color=CURVE_COLOURS["other"], linewidth=1.5, label="Other (no SP)"
        )
        ax.bar(
            x, values["cs"], width=0.8, color=CURVE_COLOURS["cs"], alpha=0.6, label="cleavage site"
        )
        ax.set_xlim(0.5, length + 0.5)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("probability")
        ax.set_xticks(x)
        ax.set_xticklabels(list(p.sequence[:length]), fontsize=6, family="monospace")
        ax.set_title(_title(p), fontsize=9)
        ax.legend(loc="center right", fontsize=7, frameon=False, bbox_to_anchor=(1.19, 0.5))
        fig.subplots_adjust(left=0.06, right=0.84, bottom=0.12, top=0.9)
        metadata = {"png": {"Software": None}, "svg": {"Date": None}, "eps": {"CreationDate": None}}
        fig.savefig(path, format=fmt, metadata=metadata[fmt])
