package com.epam.legion.ci

import com.cloudbees.groovy.cps.NonCPS

/**
 * The legion-ci command lines the steps run, each an argument list. They reach the shell as
 * one environment variable per argument (see run-legion-ci.sh), never spliced into a script.
 */
class LegionCommand {

    /** Validate the pipeline and print its resolved plan as JSON (secrets shown as ***). */
    @NonCPS
    static List<String> plan(String pipeline, String builder = '') {
        return ['run', path(pipeline), '--dry-run', '--output', 'json'] + builderOption(builder)
    }

    /**
     * Run one stage; a later stage continues `runId` (or the workspace's latest run). `builder`
     * (auto, docker, buildah; '' = the pipeline file's) overrides the package stage's.
     */
    @NonCPS
    static List<String> stage(String name, String pipeline, String runId, String builder = '') {
        List<String> args = ['stage', name, path(pipeline)]
        if (runId) {
            args += ['--run-id', runId]
        }
        return args + builderOption(builder) + ['--output', 'json']
    }

    /** `--builder VALUE` as two arguments; legion-ci refuses a value it does not know. */
    @NonCPS
    static List<String> builderOption(String builder) {
        return builder ? ['--builder', builder] : []
    }

    /** Run every stage in order, in one process. */
    @NonCPS
    static List<String> run(String pipeline) {
        return ['run', path(pipeline), '--output', 'json']
    }

    /** A file name that click cannot mistake for an option. */
    @NonCPS
    static String path(String file) {
        return file.startsWith('-') ? "./${file}".toString() : file
    }

    /** The environment entries that carry `args` to run-legion-ci.sh, one per argument. */
    @NonCPS
    static List<String> argvEnvironment(List<String> args) {
        List<String> entries = ["LEGION_CI_ARGC=${args.size()}".toString()]
        args.eachWithIndex { String arg, int i -> entries << "LEGION_CI_ARG_${i}=${arg}".toString() }
        return entries
    }

}
