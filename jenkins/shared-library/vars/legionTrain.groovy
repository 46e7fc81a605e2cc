import com.epam.legion.ci.LegionCli
import com.epam.legion.ci.LegionConfig

/**
 * Runs the train stage of a legion-ci pipeline (a new run) and returns its outputs;
 * help: legionTrain.txt.
 */
Map call(Map userConfig = [:]) {
    // pipeline, legionCi, pipOptions, python, venv, legionCiCommand, credentials,
    // publish, archiveModel, description
    Map defaults = LegionConfig.install(env) + LegionConfig.publishing() + [
        // Stash the run record under this name for a step on another agent ('' = no stash).
        stash: 'legion-run',
    ]
    Map config = LegionConfig.merge(this, 'legionTrain', defaults, userConfig)
    return new LegionCli(this, config).step('train', null, null, config.stash)
}
