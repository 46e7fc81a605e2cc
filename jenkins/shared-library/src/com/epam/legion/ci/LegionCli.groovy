package com.epam.legion.ci

/**
 * Runs legion-ci on the agent for the legion* steps: installs it once per workspace, runs one
 * command inside withCredentials, publishes the run's reports and stashes its record. All
 * decisions stay in legion-ci; this class only moves arguments in and JSON out.
 */
class LegionCli implements Serializable {

    private static final long serialVersionUID = 1L

    private static final String RESOURCES = 'com/epam/legion/ci/'

    private final Object steps
    private final Map config
    private String executable

    /** The latest result, published by the caller's `finally` even when the stage failed. */
    Map lastResult

    LegionCli(Object steps, Map config) {
        this.steps = steps
        this.config = config
    }

    /** The legion-ci to run: legionCiCommand, or legionCi installed into venv (reused). */
    void install() {
        if (config.legionCiCommand) {
            executable = config.legionCiCommand
            return
        }
        String venv = absolute(config.venv)
        List<String> environment = LegionCommand.argvEnvironment(config.pipOptions) + [
            'LEGION_CI_PYTHON=' + config.python,
            'LEGION_CI_VENV=' + venv,
            'LEGION_CI_REQUIREMENT=' + config.legionCi,
        ]
        steps.withEnv(environment) {
            steps.sh(script: argvScript('install-legion-ci.sh'), label: 'install legion-ci')
        }
        executable = venv + '/bin/legion-ci'
    }

    /**
     * One stage step: bring back the stashed run, install, run stage `name`, stash the run for
     * the next agent, and publish in a `finally` so a failed stage still shows its reports.
     */
    Map step(String name, String runId, String unstash, String stash) {
        unstashRun(unstash)
        install()
        try {
            Map result = stage(name, runId)
            stashRun(stash)
            return result
        } finally {
            publish()
        }
    }

    /** Validate the pipeline; its plan (stages, model, workspace) or the build fails. */
    Map plan() {
        Map outcome = exec(LegionCommand.plan(config.pipeline, config.builder ?: ''), 'legion-ci validate')
        if (outcome.code != 0 || !outcome.stdout.trim()) {
            steps.error("legion-ci validate: ${LegionResult.error(outcome.stdout) ?: "exit ${outcome.code}"}")
        }
        return LegionResult.planFromJson(outcome.stdout)
    }

    /**
     * Run stage `name`; a later stage continues `runId` (or the latest run). The build fails
     * with the stage's one-line error after the stage log and the result are recorded.
     */
    Map stage(String name, String runId) {
        String builder = name == 'package' ? (config.builder ?: '') : ''
        Map outcome = exec(LegionCommand.stage(name, config.pipeline, runId, builder), "legion-ci stage ${name}")
        if (LegionResult.isRun(outcome.stdout)) {
            lastResult = LegionResult.fromJson(outcome.stdout)
            lastResult.stage = name
            showLog(name)
            describe()
        }
        if (outcome.code != 0) {
            String message = LegionResult.stageError(lastResult, name) ?:
                LegionResult.error(outcome.stdout) ?: "legion-ci exited with code ${outcome.code}"
            steps.error("${name}: ${message}")
        }
        return lastResult
    }

    /** `junit` on the run's JUnit report and `archiveArtifacts` on its record, logs, reports. */
    void publish() {
        if (!config.publish || lastResult == null) {
            return
        }
        String runFolder = LegionResult.relative(workspace(), LegionResult.parent(lastResult.record))
        if (runFolder == null) {
            steps.echo("legion-ci: ${lastResult.record} is outside the workspace; not published")
            return
        }
        steps.junit(testResults: runFolder + '/reports/junit.xml', allowEmptyResults: true)
        List<String> patterns = ['record.json', 'logs/**', 'reports/**']
        if (config.archiveModel) {
            patterns << 'artifacts/**'
        }
        steps.archiveArtifacts(artifacts: patterns.collect { runFolder + '/' + it }.join(','),
            allowEmptyArchive: true, fingerprint: true)
    }

    /** Stash the run's record folder so a step on another agent can continue the run. */
    void stashRun(String name) {
        if (!name || lastResult == null) {
            return
        }
        String runFolder = LegionResult.relative(workspace(), LegionResult.parent(lastResult.record))
        if (runFolder == null) {
            steps.error("legion-ci: cannot stash ${lastResult.record}: it is outside the workspace")
        }
        String legionWorkspace = LegionResult.parent(LegionResult.parent(runFolder))
        steps.stash(name: name, includes: "${runFolder}/**,${legionWorkspace}/latest")
    }

    /** Bring back a run stashed by an earlier step, possibly on another agent. */
    void unstashRun(String name) {
        if (name) {
            steps.unstash(name)
        }
    }

    /**
     * Run legion-ci with `args` inside withCredentials; [code, stdout, stderr]. Only stdout (the
     * JSON document) is read; stderr is kept for people reading the build.
     */
    Map exec(List<String> args, String label) {
        String scratch = absolute('.legion-ci/tmp/' + UUID.randomUUID())
        List<String> environment = LegionCommand.argvEnvironment(args) + [
            'LEGION_CI_BIN=' + executable,
            'LEGION_CI_OUT=' + scratch + '.out',
            'LEGION_CI_ERR=' + scratch + '.err',
        ]
        // The arguments hold no secret (credentials travel only as environment variables).
        steps.echo('legion-ci ' + args.join(' '))
        String script = argvScript('run-legion-ci.sh')
        int code = 0
        withSecrets {
            steps.withEnv(environment) {
                code = steps.sh(script: script, returnStatus: true, label: label)
            }
        }
        String stdout = steps.fileExists(scratch + '.out') ? steps.readFile(scratch + '.out') : ''
        String stderr = steps.fileExists(scratch + '.err') ? steps.readFile(scratch + '.err') : ''
        return [code: code, stdout: stdout, stderr: stderr]
    }

    private void withSecrets(Closure body) {
        List bindings = []
        for (Map entry : (config.credentials ?: [])) {
            if (entry.variable) {
                bindings << steps.string(credentialsId: entry.id, variable: entry.variable)
            } else if (entry.fileVariable) {
                bindings << steps.file(credentialsId: entry.id, variable: entry.fileVariable)
            } else {
                bindings << steps.usernamePassword(credentialsId: entry.id,
                    usernameVariable: entry.usernameVariable, passwordVariable: entry.passwordVariable)
            }
        }
        if (bindings) {
            steps.withCredentials(bindings) { body() }
        } else {
            body()
        }
    }

    /**
     * The resource script `name` after argv-from-env.sh, which turns LEGION_CI_ARGC and
     * LEGION_CI_ARG_<n> back into "$@": one copy of the only `eval` the library hands to `sh`.
     */
    private String argvScript(String name) {
        return steps.libraryResource(RESOURCES + 'argv-from-env.sh') + steps.libraryResource(RESOURCES + name)
    }

    /** Echo the stage's log (redacted by legion-ci), which --output json does not stream. */
    private void showLog(String name) {
        String log = LegionResult.parent(lastResult.record) + "/logs/${name}.log"
        steps.withEnv(['LEGION_CI_LOG=' + log]) {
            steps.sh(script: 'set +x; [ ! -f "$LEGION_CI_LOG" ] || cat -- "$LEGION_CI_LOG"',
                label: "legion-ci ${name} log")
        }
    }

    private void describe() {
        if (!config.description) {
            return
        }
        Map model = [:]
        if (steps.fileExists(lastResult.record)) {
            model = LegionResult.model(steps.readFile(lastResult.record))
        }
        steps.currentBuild.description = LegionResult.description(model, lastResult)
    }

    private String workspace() {
        return steps.pwd()
    }

    private String absolute(String path) {
        return path.startsWith('/') ? path : workspace() + '/' + path
    }

}
