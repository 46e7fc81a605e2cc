import com.epam.legion.ci.LegionCli
import com.epam.legion.ci.LegionConfig

/**
 * Runs the deploy stage, continuing the run that packaged the model, and returns its
 * outputs (url); help: legionDeploy.txt.
 */
Map call(Map userConfig = [:]) {
    // pipeline, legionCi, pipOptions, python, venv, legionCiCommand, credentials,
    // publish, archiveModel, description
    Map defaults = LegionConfig.install(env) + LegionConfig.publishing() + [
        // The run to continue, e.g. legionPackage(...).runId ('' = the workspace's latest run).
        runId: '',
        // Unstash the run record stashed by legionPackage under this name ('' = do not).
        unstash: 'legion-run',
    ]
    Map config = LegionConfig.merge(this, 'legionDeploy', defaults, userConfig)
    return new LegionCli(this, config).step('deploy', config.runId, config.unstash, null)
}
