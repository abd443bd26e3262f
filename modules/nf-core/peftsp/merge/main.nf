process PEFTSP_MERGE {
    tag "${meta.id}"
    label 'process_single'

    conda "${moduleDir}/environment.yml"
    container "${ workflow.containerEngine in ['singularity', 'apptainer'] && !task.ext.singularity_pull_docker_container ?
        'https://github.com/peftsp/peftsp/releases/download/v0.1.0/peftsp-0.1.0.sif' :
        'ghcr.io/peftsp/peftsp:0.1.0' }"

    input:
    tuple val(meta), path(shard_json, stageAs: '?/*')

    output:
    tuple val(meta), path("${prefix}/prediction_results.txt"), emit: results
    tuple val(meta), path("${prefix}/output.gff3")           , emit: gff
    tuple val(meta), path("${prefix}/region_output.gff3")    , emit: regions
    tuple val(meta), path("${prefix}/processed_entries.fasta"), emit: mature
    tuple val(meta), path("${prefix}/output.json")           , emit: json
    tuple val(meta), path("${prefix}/summary.html")          , emit: html
    tuple val(meta), path("${prefix}/peftsp_mqc.json")       , emit: mqc
    tuple val(meta), path("${prefix}/peftsp_general_stats_mqc.json"), emit: mqc_stats
    tuple val("${task.process}"), val('peftsp'), eval("peftsp --version | sed 's/^peftsp //'"), topic: versions, emit: versions_peftsp

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    peftsp merge --outdir ${prefix} ${args} ${shard_json}
    """

    stub:
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    mkdir -p ${prefix}
    touch ${prefix}/prediction_results.txt
    touch ${prefix}/output.gff3
    touch ${prefix}/region_output.gff3
    touch ${prefix}/processed_entries.fasta
    touch ${prefix}/output.json
    touch ${prefix}/summary.html
    touch ${prefix}/peftsp_mqc.json
    touch ${prefix}/peftsp_general_stats_mqc.json
    """
}
