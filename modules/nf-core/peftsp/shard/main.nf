process PEFTSP_SHARD {
    tag "${meta.id}"
    label 'process_single'

    conda "${moduleDir}/environment.yml"
    container "${ workflow.containerEngine in ['singularity', 'apptainer'] && !task.ext.singularity_pull_docker_container ?
        'https://github.com/peftsp/peftsp/releases/download/v0.1.0/peftsp-0.1.0.sif' :
        'ghcr.io/peftsp/peftsp:0.1.0' }"

    input:
    tuple val(meta), path(fasta)
    val(shard_size)

    output:
    tuple val(meta), path("${prefix}/shard_*.fasta"), emit: shards
    tuple val("${task.process}"), val('peftsp'), eval("peftsp --version | sed 's/^peftsp //'"), topic: versions, emit: versions_peftsp

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    peftsp shard --fasta ${fasta} --outdir ${prefix} --shard-size ${shard_size} ${args}
    """

    stub:
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    mkdir -p ${prefix}
    touch ${prefix}/shard_0001.fasta
    """
}
