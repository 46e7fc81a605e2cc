import com.epam.legion.ci.LegionCli
import com.epam.legion.ci.LegionConfig

/**
 * Validates a legion-ci pipeline and returns its plan; help: legionValidate.txt.
 * Every validation error is printed; the build fails with the first one.
 */
Map call(Map userConfig = [:]) {
    // pipeline, legionCi, pipOptions, python, venv, legionCiCommand, credentials
    Map defaults = LegionConfig.install(env)
    Map config = LegionConfig.merge(this, 'legionValidate', defaults, userConfig)
    LegionCli cli = new LegionCli(this, config)
    cli.install()
    return cli.plan()
}
