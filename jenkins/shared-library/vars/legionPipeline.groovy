import com.epam.legion.ci.LegionCli
import com.epam.legion.ci.LegionConfig

/**
 * The whole legion-ci pipeline in one step: on an agent, check out, validate, then one Jenkins
 * stage per legion-ci stage (train, package, deploy), publishing once at the end, failure or
 * not. Returns the run's outputs; help: legionPipeline.txt.
 */
Map call(Map userConfig = [:]) {
    // pipeline, legionCi, pipOptions, python, venv, legionCiCommand, credentials,
    // publish, archiveModel, description
    Map defaults = LegionConfig.install(env) + LegionConfig.publishing() + [
        // How the package stage (docker-rest) builds: auto, docker, or buildah (buildah, podman
        // and skopeo on an agent without a Docker engine); '' = the pipeline file's builder.
        builder: '',
        // Allocate an agent (node) for the run; false inside a node block or declarative stage.
        node: true,
        // The label of the agent to allocate ('' = any agent).
        label: '',
        // `checkout scm` on the allocated agent before running.
        checkout: true,
    ]
    Map config = LegionConfig.merge(this, 'legionPipeline', defaults, userConfig)
    if (!config.node) {
        return runStages(config)
    }
    Closure onAgent = {
        if (config.checkout) {
            checkout(scm)
        }
        return runStages(config)
    }
    return config.label ? node(config.label, onAgent) : node(onAgent)
}

// Not private: CPS cannot call a script's private method from a closure (the node body).
Map runStages(Map config) {
    LegionCli cli = new LegionCli(this, config)
    cli.install()
    Map plan = cli.plan()
    try {
        for (String name : plan.stages) {
            stage(name) {
                cli.stage(name, cli.lastResult?.runId)
            }
        }
    } finally {
        cli.publish()
    }
    return cli.lastResult
}
