"""The command line of each workflow process, defined once, in Nextflow's `${...}` syntax.

The `script:` blocks of modules/nf-core/peftsp/<step>/main.nf are these strings (a test
compares them), and the local runner (peftsp.workflow.runner) fills the same templates with
`render` and runs them, so `peftsp pipeline` exercises the workflow's data path without
Nextflow.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence

# The `script:` command of each module (modules/nf-core/peftsp/<step>/main.nf).
SHARD_COMMAND = (
    "peftsp shard --fasta ${fasta} --outdir ${prefix} --shard-size ${shard_size} ${args}"
)
PREDICT_COMMAND = (
    "peftsp predict --fasta ${fasta} ${model_option} --outdir ${prefix} --sample ${meta.id} "
    "--device ${device} --threads ${task.cpus} ${args}"
)
MERGE_COMMAND = "peftsp merge --outdir ${prefix} ${args} ${shard_json}"
# `ext.args` of PEFTSP_PREDICT in conf/modules.config: the proteome's organism, the batch size
# (a task with a GPU also gets `--trt-cache`; the runner adds it when the device is not cpu).
PREDICT_ARGS = "--organism ${meta.organism} --batch-size ${params.batch_size}"

# Shard file names: SHARD_PREFIX + zero-padded number + ".fasta" (lexical order = input order).
SHARD_PREFIX = "shard_"


class _NextflowTemplate(string.Template):
    idpattern = r"[a-z_][a-z0-9_.]*"  # Nextflow names may be dotted: ${task.cpus}


def render(template: str, values: Mapping[str, str | Sequence[str]]) -> list[str]:
    """The argv of a command template.

    A token that is a lone variable bound to a list becomes the list's items (none for an empty
    list, like an empty `${args}` in Nextflow); every other token is substituted as text. A
    name without a value raises KeyError.
    """
    argv: list[str] = []
    for token in template.split():
        value = values.get(token[2:-1]) if token.startswith("${") and token.endswith("}") else None
        if isinstance(value, list | tuple):
            argv.extend(value)
        else:
            argv.append(_NextflowTemplate(token).substitute(values))
    return argv
