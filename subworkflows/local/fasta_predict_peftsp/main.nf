//
// Signal peptides of whole proteomes: shard each FASTA, predict every shard, merge each
// proteome's shards in input order. Sharding lets a cluster predict a proteome in parallel.
//

include { PEFTSP_SHARD   } from '../../../modules/nf-core/peftsp/shard/main'
include { PEFTSP_PREDICT } from '../../../modules/nf-core/peftsp/predict/main'
include { PEFTSP_MERGE   } from '../../../modules/nf-core/peftsp/merge/main'

workflow FASTA_PREDICT_PEFTSP {

    take:
    ch_fasta   // channel: [ val(meta), path(fasta) ], one proteome per item
    model      // path to a model bundle directory, or [] for the model in the container
    shard_size // integer: proteins per shard

    main:
    PEFTSP_SHARD(ch_fasta, shard_size)

    // One task per shard. meta.shard (the shard's file name, zero-padded) orders the merge;
    // meta.n_shards lets each proteome merge as soon as its own shards are done.
    ch_shards = PEFTSP_SHARD.out.shards.flatMap { meta, shards ->
        def files = [shards].flatten()
        files.collect { shard -> [ meta + [shard: shard.baseName, n_shards: files.size()], shard ] }
    }
    PEFTSP_PREDICT(ch_shards, model)

    ch_shard_json = PEFTSP_PREDICT.out.json
        .map { meta, json ->
            def proteome = meta.findAll { key, value -> !(key in ['shard', 'n_shards']) }
            [ groupKey(proteome, meta.n_shards), [ meta.shard, json ] ]
        }
        .groupTuple()
        .map { key, shards -> [ key.getGroupTarget(), shards.sort { shard -> shard[0] }.collect { shard -> shard[1] } ] }
    PEFTSP_MERGE(ch_shard_json)

    emit:
    results = PEFTSP_MERGE.out.results // channel: [ val(meta), path(prediction_results.txt) ]
    gff     = PEFTSP_MERGE.out.gff     // channel: [ val(meta), path(output.gff3) ]
    regions = PEFTSP_MERGE.out.regions // channel: [ val(meta), path(region_output.gff3) ]
    mature  = PEFTSP_MERGE.out.mature  // channel: [ val(meta), path(processed_entries.fasta) ]
    json    = PEFTSP_MERGE.out.json    // channel: [ val(meta), path(output.json) ]
    html    = PEFTSP_MERGE.out.html    // channel: [ val(meta), path(summary.html) ]
    mqc     = PEFTSP_MERGE.out.mqc     // channel: [ val(meta), path(peftsp_mqc.json) ]
    mqc_stats = PEFTSP_MERGE.out.mqc_stats // channel: [ val(meta), path(peftsp_general_stats_mqc.json) ]
}
