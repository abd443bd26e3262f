#!/usr/bin/env nextflow
/*
 * PEFT-SP: signal peptides, cleavage sites and n/h/c regions of whole proteomes.
 *
 * --input is one protein FASTA, or a samplesheet CSV (sample,fasta[,organism]) of several.
 * Each proteome is sharded, every shard predicted in its own task, and the shards merged back
 * in input order. All logic is in the `peftsp` command that the modules run; `peftsp pipeline`
 * runs the same commands on one machine.
 */

include { validateParameters; samplesheetToList } from 'plugin/nf-schema'
include { FASTA_PREDICT_PEFTSP                  } from './subworkflows/local/fasta_predict_peftsp/main'

workflow {

    main:
    validateParameters()

    ch_fasta = params.input.endsWith('.csv')
        ? channel.fromList(samplesheetToList(params.input, "${projectDir}/assets/schema_input.json"))
            .map { meta, fasta -> [ meta + [organism: meta.organism ?: params.organism], fasta ] }
        : channel.of([ [id: file(params.input).simpleName, organism: params.organism], file(params.input, checkIfExists: true) ])
    model = params.model ? file(params.model, checkIfExists: true) : []

    FASTA_PREDICT_PEFTSP(ch_fasta, model, params.shard_size)

    channel.topic('versions')
        .map { process, tool, version -> "${process.tokenize(':').last()}:\n  ${tool}: ${version}" }
        .unique()
        .collectFile(name: 'peftsp_software_versions.yml', storeDir: "${params.outdir}/pipeline_info", sort: true, newLine: true)
}
