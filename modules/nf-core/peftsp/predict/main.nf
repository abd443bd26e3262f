process PEFTSP_PREDICT {
    tag "${meta.id}"
    label 'process_medium'
    label 'process_gpu'

    conda "${moduleDir}/environment.yml"
    container "${ workflow.containerEngine in ['singularity', 'apptainer'] && !task.ext.singularity_pull_docker_container ?
        (task.accelerator ? 'docker://ghcr.io/peftsp/peftsp:0.1.0-gpu' : 'https://github.com/peftsp/peftsp/releases/download/v0.1.0/peftsp-0.1.0.sif') :
        (task.accelerator ? 'ghcr.io/peftsp/peftsp:0.1.0-gpu' : 'ghcr.io/peftsp/peftsp:0.1.0') }"

    input:
    tuple val(meta), path(fasta)
    path(model)

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
    tuple val("${task.process}"), val('onnxruntime'), eval("python -c 'import onnxruntime; print(onnxruntime.__version__)'"), topic: versions, emit: versions_onnxruntime

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    prefix = task.ext.prefix ?: "${meta.id}"
    def model_option = model ? "--model ${model}" : ''
    def device = task.accelerator ? 'cuda' : 'cpu'
    """
    peftsp predict --fasta ${fasta} ${model_option} --outdir ${prefix} --sample ${meta.id} --device ${device} --threads ${task.cpus} ${args}
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
