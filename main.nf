#!/usr/bin/env nextflow
/*
 * PEFT-SP: signal peptides, cleavage sites and n/h/c regions of whole proteomes.
 *
 * --input is a samplesheet (CSV, TSV, JSON or YAML: sample,fasta[,organism]) of proteomes;
 * --fasta is one proteome. Each proteome is sharded, every shard predicted in its own task, and
 * the shards merged back in input order. All logic is in the `peftsp` command that the modules
 * run; `peftsp pipeline` runs the same commands on one machine.
 */

include { validateParameters; paramsHelp; samplesheetToList } from 'plugin/nf-schema'
include { FASTA_PREDICT_PEFTSP                              } from './subworkflows/local/fasta_predict_peftsp/main'

workflow {

    main:
    // --help, --help <parameter>, --help_full [--show_hidden]: from nextflow_schema.json
    if (params.help || params.help_full) {
        def help_options = [
            command   : 'nextflow run peftsp/peftsp -profile <docker|singularity|apptainer> --input samplesheet.csv --outdir results',
            fullHelp  : params.help_full,
            showHidden: params.show_hidden
        ]
        log.info paramsHelp(help_options, params.help instanceof String ? params.help : '')
        exit 0
    }
    if (params.validate_params) {
        validateParameters()
    }

    ch_fasta = params.input
        ? channel.fromList(samplesheetToList(params.input, "${projectDir}/assets/schema_input.json"))
            .map { meta, fasta -> [ meta + [id: meta.id.toString(), organism: meta.organism ?: params.organism], fasta ] }
        : channel.of([ [id: defaultSample(params.fasta), organism: params.organism], file(params.fasta, checkIfExists: true) ])
    model = params.model ? file(params.model, checkIfExists: true) : []

    FASTA_PREDICT_PEFTSP(ch_fasta, model, params.shard_size)

    // One YAML key per process with all its tools (a process emits one topic entry per tool
    // and per task), and the workflow's own versions.
    channel.topic('versions')
        .map { process, tool, version -> [ process.tokenize(':').last(), "  ${tool}: ${version}" ] }
        .unique()
        .groupTuple(sort: true)
        .map { process, tools -> "${process}:\n${tools.join('\n')}" }
        .mix(channel.of("Workflow:\n  Nextflow: ${workflow.nextflow.version}\n  peftsp: ${workflow.manifest.version}"))
        .collectFile(name: 'peftsp_software_versions.yml', storeDir: "${params.outdir}/pipeline_info", sort: true, newLine: true)
}

// The sample id of a single --fasta run, as peftsp.predict.default_sample (and so the local
// runner) makes it: the file name without FASTA and compression extensions, any character
// outside [A-Za-z0-9._-] replaced by '_'.
def defaultSample(path) {
    def extensions = ['gz', 'bgz', 'bz2', 'xz', 'zst', 'fa', 'faa', 'fasta', 'fas', 'fsa', 'pep', 'aa', 'prot']
    def name = file(path).name
    while (name.lastIndexOf('.') > 0 && name.substring(name.lastIndexOf('.') + 1).toLowerCase() in extensions) {
        name = name.substring(0, name.lastIndexOf('.'))
    }
    name = name.replaceAll(/[^A-Za-z0-9._-]/, '_').replaceAll(/^[._-]+/, '')
    return name ?: 'sample'
}
