import com.epam.legion.ci.LegionCli
import com.epam.legion.ci.LegionConfig

/**
 * Runs the package stage, continuing the run that trained the model, and returns its
 * outputs (image, digest); help: legionPackage.txt.
 */
Map call(Map userConfig = [:]) {
    // pipeline, legionCi, pipOptions, python, venv, legionCiCommand, credentials,
    // publish, archiveModel, description
    Map defaults = LegionConfig.install(env) + LegionConfig.publishing() + [
        // How the package stage (docker-rest) builds: auto, docker, or buildah (buildah, podman
        // and skopeo on an agent without a Docker engine); '' = the pipeline file's builder.
        builder: '',
        // The run to continue, e.g. legionTrain(...).runId ('' = the workspace's latest run).
        runId: '',
        // Unstash the run record stashed by legionTrain under this name ('' = do not).
        unstash: 'legion-run',
        // Stash the updated run record for legionDeploy on another agent ('' = no stash).
        stash: 'legion-run',
    ]
    Map config = LegionConfig.merge(this, 'legionPackage', defaults, userConfig)
    return new LegionCli(this, config).step('package', config.runId, config.unstash, config.stash)
}
