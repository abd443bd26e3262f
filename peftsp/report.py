"""The run summary: summary.html for a person, MultiQC custom content for a pipeline report.

Counts and distributions are accumulated protein by protein in fixed-size tables (counts per
type, SP lengths, 20-bin histograms of probabilities), so a proteome of any size costs the same
memory. The plots are SVG written here, inline in the page: the base install has no plotting
library, and the page stays one self-contained file that opens offline.

MultiQC: `peftsp_mqc.json` is a bar graph of the predicted types and
`peftsp_general_stats_mqc.json` adds columns to the General Statistics table, both keyed by the
run's sample name, so MultiQC over several runs shows one row per sample (custom content holds
one section per file, hence two files).
"""

from __future__ import annotations

import html
from collections import Counter
from dataclasses import dataclass, field

from peftsp import __version__, grammar

SUMMARY = "summary.html"
MULTIQC = "peftsp_mqc.json"
MULTIQC_STATS = "peftsp_general_stats_mqc.json"
BINS = 20  # histogram bins over [0, 1]

TYPE_COLOURS = {
    "NO_SP": "#9e9e9e",
    "SP": "#1f77b4",
    "LIPO": "#ff7f0e",
    "TAT": "#2ca02c",
    "TATLIPO": "#9467bd",
    "PILIN": "#d62728",
}
SP_ONLY = tuple(t for t in grammar.SP_TYPES if t != "NO_SP")


def _bin(value: float) -> int:
    return min(BINS - 1, max(0, int(value * BINS)))


@dataclass
class Summary:
    """Counts and distributions of one run, accumulated per protein (bounded memory)."""

    types: Counter[str] = field(default_factory=Counter)
    sp_lengths: dict[str, Counter[int]] = field(default_factory=dict)
    type_probability: dict[str, list[int]] = field(default_factory=dict)
    cs_marginal: dict[str, list[int]] = field(default_factory=dict)
    cs_probability: dict[str, list[int]] = field(default_factory=dict)
    normalised: int = 0
    notes: Counter[str] = field(default_factory=Counter)

    def add(
        self,
        sp_type: str,
        type_probability: float,
        cs: int | None,
        cs_marginal: float | None,
        cs_probability: float | None,
        notes: list[str],
    ) -> None:
        """Count one protein: its reported type, that type's probability and its CS."""
        self.types[sp_type] += 1
        self.type_probability.setdefault(sp_type, [0] * BINS)[_bin(type_probability)] += 1
        if sp_type != "NO_SP" and cs is not None:
            self.sp_lengths.setdefault(sp_type, Counter())[cs] += 1
            if cs_marginal is not None:
                self.cs_marginal.setdefault(sp_type, [0] * BINS)[_bin(cs_marginal)] += 1
            if cs_probability is not None:
                self.cs_probability.setdefault(sp_type, [0] * BINS)[_bin(cs_probability)] += 1
        self.normalised += bool(notes)
        self.notes.update(notes)

    @property
    def total(self) -> int:
        return sum(self.types.values())

    @property
    def with_sp(self) -> int:
        return self.total - self.types["NO_SP"]

    # --- MultiQC -------------------------------------------------------------------------

    def multiqc(self, sample: str) -> dict:
        """Custom content: a bar graph of the predicted types of `sample`."""
        return {
            "id": "peftsp",
            "section_name": "PEFT-SP signal peptides",
            "description": "Proteins per predicted signal-peptide type (PEFT-SP).",
            "plot_type": "bargraph",
            "pconfig": {
                "id": "peftsp_types",
                "title": "PEFT-SP: predicted signal-peptide types",
                "ylab": "Proteins",
                "cpswitch_counts_label": "Proteins",
            },
            "categories": {
                grammar.TYPE_NAMES[t]: {"name": grammar.TYPE_NAMES[t], "color": TYPE_COLOURS[t]}
                for t in grammar.SP_TYPES
            },
            "data": {sample: {grammar.TYPE_NAMES[t]: self.types[t] for t in grammar.SP_TYPES}},
        }

    def multiqc_general_stats(self, sample: str) -> dict:
        """Custom content: PEFT-SP columns of MultiQC's General Statistics table."""
        share = round(100 * self.with_sp / self.total, 2) if self.total else 0.0
        return {
            "id": "peftsp_general_stats",
            "plot_type": "generalstats",
            "headers": {
                "peftsp_proteins": {
                    "title": "Proteins",
                    "description": "Proteins predicted by PEFT-SP",
                    "format": "{:,.0f}",
                    "scale": "Blues",
                },
                "peftsp_with_sp": {
                    "title": "With SP",
                    "description": "Proteins with a predicted signal peptide (any type)",
                    "format": "{:,.0f}",
                    "scale": "Greens",
                },
                "peftsp_sp_percent": {
                    "title": "% SP",
                    "description": "Share of proteins with a predicted signal peptide",
                    "min": 0,
                    "max": 100,
                    "suffix": "%",
                    "format": "{:,.1f}",
                    "scale": "RdYlGn",
                },
            },
            "data": {
                sample: {
                    "peftsp_proteins": self.total,
                    "peftsp_with_sp": self.with_sp,
                    "peftsp_sp_percent": share,
                }
            },
        }

    # --- HTML ----------------------------------------------------------------------------

    def html(self, page: PageInfo) -> str:
        """summary.html: the run, the counts and the distributions, with inline SVG plots."""
        e = html.escape
        banner = (
            f'<div class="banner"><strong>Demo model.</strong> {e(page.model_notice)}</div>\n'
            if page.model_notice
            else ""
        )
        run_rows = "".join(
            f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in page.run_rows()
        )
        files = "".join(
            f'<li><a href="{e(name)}">{e(name)}</a> ({e(what)})</li>' for name, what in page.files
        )
        counts = "".join(
            f'<tr><td><span class="key" style="background:{TYPE_COLOURS[t]}"></span>'
            f"{grammar.TYPE_NAMES[t]}</td><td>{self.types[t]:,}</td>"
            f"<td>{_share(self.types[t], self.total)}</td></tr>"
            for t in grammar.SP_TYPES
        )
        notes = "".join(
            f"<tr><td>{e(note)}</td><td>{count:,}</td></tr>"
            for note, count in sorted(self.notes.items())
        )
        notes_table = (
            f"<h2>Input normalisations and warnings</h2><table>{notes}</table>\n" if notes else ""
        )
        type_chart = svg_bars(
            [grammar.TYPE_NAMES[t] for t in grammar.SP_TYPES],
            {t: [self.types[u] if u == t else 0 for u in grammar.SP_TYPES] for t in self.types},
            title="Proteins per predicted type",
            ylabel="proteins",
        )
        lengths = self._length_chart()
        probability_labels = [f"{i / BINS:.2f}" for i in range(BINS)]
        type_probability = svg_bars(
            probability_labels,
            self.type_probability,
            title="Probability of the predicted type",
            xlabel="probability (bin start)",
            ylabel="proteins",
        )
        cs_charts = "".join(
            svg_bars(
                probability_labels,
                series,
                title=title,
                xlabel="probability (bin start)",
                ylabel="signal peptides",
            )
            for title, series in (
                ("CS probability, SignalP 6.0's definition (the table's Pr)", self.cs_marginal),
                ("CS probability: cleavage exactly here (output.json cs_probability)",
                 self.cs_probability),
            )
        )  # fmt: skip
        legend = "".join(
            f'<span class="key" style="background:{TYPE_COLOURS[t]}"></span>{name} '
            for t, name in grammar.TYPE_NAMES.items()
        )
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>PEFT-SP summary: {e(page.sample)}</title>\n<style>{_CSS}</style>"
            "</head><body>\n"
            f"<h1>PEFT-SP summary: {e(page.sample)}</h1>\n{banner}"
            f"<p>{self.total:,} proteins, {self.with_sp:,} with a predicted signal peptide "
            f"({_share(self.with_sp, self.total)}); {self.normalised:,} with input "
            "normalisations or warnings (see output.json notes).</p>\n"
            f"<h2>Run</h2><table>{run_rows}</table>\n"
            f"<h2>Files</h2><ul>{files}</ul>\n"
            f"<h2>Predicted types</h2><div class=row><table><tr><th>Type</th><th>Proteins</th>"
            f"<th>Share</th></tr>{counts}</table>{type_chart}</div>\n"
            f"<p class=legend>{legend}</p>\n"
            f"<h2>Signal-peptide lengths</h2>{lengths}\n{notes_table}"
            f"<h2>Probabilities</h2><div class=row>{type_probability}{cs_charts}</div>\n"
            f"<p>{_DEFINITIONS}</p>\n"
            "</body></html>\n"
        )

    def _length_chart(self) -> str:
        if not self.sp_lengths:
            return "<p>No signal peptide predicted.</p>"
        longest = max(max(c) for c in self.sp_lengths.values())
        labels = [str(n) for n in range(1, longest + 1)]
        series = {
            t: [counts.get(n, 0) for n in range(1, longest + 1)]
            for t, counts in self.sp_lengths.items()
        }
        return svg_bars(
            labels,
            series,
            title="Signal-peptide length (cleavage after residue n)",
            xlabel="length (residues)",
            ylabel="signal peptides",
            width=720,
        )


@dataclass
class PageInfo:
    """What summary.html says about the run besides the counts."""

    sample: str
    created: str
    run: dict
    source: str | None = None
    model_notice: str | None = None
    files: list[tuple[str, str]] = field(default_factory=list)

    def run_rows(self) -> list[tuple[str, object]]:
        rows: list[tuple[str, object]] = [
            ("Sample", self.sample),
            ("Input", self.source or "(merged shards)"),
            ("Date (UTC)", self.created),
            ("PEFT-SP", self.run.get("peftsp_version", __version__)),
        ]
        labels = {
            "model": "Model",
            "model_sha256": "Model graph sha256",
            "precision": "Precision",
            "organism": "Organism",
            "window": "Residues seen by the model",
        }
        rows += [(label, self.run[key]) for key, label in labels.items() if key in self.run]
        rows += [(k, v) for k, v in sorted(self.run.items()) if k not in labels and k != "sample"]
        return rows


def _share(count: int, total: int) -> str:
    return f"{100 * count / total:.1f}%" if total else "-"


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1200px;color:#222}"
    "table{border-collapse:collapse;margin:.5em 1.5em .5em 0}"
    "td,th{padding:2px 10px;text-align:left;border-bottom:1px solid #eee}"
    ".banner{background:#fff3cd;border:1px solid #e0b000;padding:.6em 1em;margin:1em 0}"
    ".row{display:flex;flex-wrap:wrap;align-items:flex-start;gap:1em}"
    ".key{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:middle}"
    "svg{font-size:11px;font-family:system-ui,sans-serif}"
)
_DEFINITIONS = (
    "Two cleavage-site probabilities are reported. <em>SignalP 6.0's</em> (the <code>Pr:</code> "
    "of prediction_results.txt and <code>cs_marginal</code> in output.json) is the posterior "
    "probability of the predicted path's state at the last signal-peptide residue, so "
    "thresholds made for SignalP 6.0 (e.g. InterProScan's Pr &gt; 0.95) keep their meaning. "
    "<em>PEFT-SP's</em> (<code>cs_probability</code> in output.json and GFF3) is the probability "
    "that the signal peptide ends exactly there, which is better calibrated for choosing "
    "cleavage sites."
)


def svg_bars(
    labels: list[str],
    series: dict[str, list[int]],
    *,
    title: str,
    xlabel: str = "",
    ylabel: str = "",
    width: int = 460,
    height: int = 240,
) -> str:
    """A stacked bar chart as an inline SVG element: one bar per label, one stack layer per
    type in `series` (type -> one count per label), coloured as TYPE_COLOURS."""
    e = html.escape
    left, right, top, bottom = 48, 10, 24, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    order = [t for t in grammar.SP_TYPES if t in series]
    totals = [sum(series[t][i] for t in order) for i in range(len(labels))]
    peak = max(totals, default=0) or 1
    step = plot_w / max(len(labels), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{e(title)}">',
        f'<text x="{width / 2:.1f}" y="15" text-anchor="middle" font-weight="bold">'
        f"{e(title)}</text>",
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#444"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#444"/>',
    ]
    for value in (0, peak // 2, peak) if peak > 1 else (0, peak):
        y = top + plot_h - plot_h * value / peak
        parts.append(
            f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{value:,}</text>'
            f'<line x1="{left - 3}" y1="{y:.1f}" x2="{left}" y2="{y:.1f}" stroke="#444"/>'
        )
    every = max(1, round(len(labels) / 10))
    for i, label in enumerate(labels):
        x = left + i * step
        base = top + plot_h
        for t in order:
            count = series[t][i]
            if not count:
                continue
            h = plot_h * count / peak
            base -= h
            parts.append(
                f'<rect x="{x + 0.5:.1f}" y="{base:.1f}" width="{max(step - 1, 0.5):.1f}" '
                f'height="{h:.1f}" fill="{TYPE_COLOURS[t]}"><title>{e(label)}: '
                f"{count:,} {grammar.TYPE_NAMES[t]}</title></rect>"
            )
        if i % every == 0:
            parts.append(
                f'<text x="{x + step / 2:.1f}" y="{top + plot_h + 14}" '
                f'text-anchor="middle">{e(label)}</text>'
            )
    if xlabel:
        parts.append(
            f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle">'
            f"{e(xlabel)}</text>"
        )
    if ylabel:
        parts.append(
            f'<text transform="translate(12,{top + plot_h / 2:.1f}) rotate(-90)" '
            f'text-anchor="middle">{e(ylabel)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
