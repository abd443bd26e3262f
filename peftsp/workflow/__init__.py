"""The whole-proteome workflow: shard a FASTA file, predict every shard, merge the predictions.

One module per concept:

- `commands`: the command line of each Nextflow process (modules/nf-core/peftsp/*/main.nf run
  exactly these strings; a test compares them) and how to fill one in;
- `shard`: `peftsp shard`, a FASTA file split into numbered shards;
- `merge`: `peftsp merge`, per-shard predictions written as one prediction;
- `samplesheet`: the proteomes of `--input` (CSV, TSV, JSON, YAML; assets/schema_input.json's
  columns and rules);
- `runner`: `peftsp pipeline`, the local runner, which fills the same command templates and
  runs them one after the other, resuming a killed run.

Nothing here imports torch.
"""
