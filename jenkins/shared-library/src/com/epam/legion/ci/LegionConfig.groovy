package com.epam.legion.ci

import com.cloudbees.groovy.cps.NonCPS

/**
 * The keys every legion* step takes and their defaults, the merge of a step's defaults with the
 * user's map, and the checks that refuse what legion-ci could not use.
 */
class LegionConfig {

    /** The legion-ci release this library was made with: the default pinned requirement. */
    static final String VERSION = '0.1.0'

    /**
     * What every step needs to find and run legion-ci. `env` lets a Jenkins admin pin the
     * requirement, or a preinstalled executable, for every job with a global variable.
     */
    static Map install(Object env) {
        return [
            // The pipeline file, relative to the current directory (usually the checkout).
            pipeline: 'legion-ci.yaml',
            // The pip requirement installed into the agent's virtual environment (pinned).
            legionCi: envValue(env, 'LEGION_CI_REQUIREMENT') ?: "legion-ci==${VERSION}".toString(),
            // Extra `pip install` arguments, e.g. ['--index-url', 'https://pypi.example/simple'].
            pipOptions: [],
            // The interpreter that creates the virtual environment.
            python: 'python3',
            // The virtual environment, relative to the workspace; reused while it holds legionCi.
            venv: '.legion-ci/venv',
            // A legion-ci executable already on the agent, used instead of installing legionCi.
            legionCiCommand: envValue(env, 'LEGION_CI_COMMAND') ?: '',
            // Jenkins credentials given to legion-ci as environment variables, each a map:
            // [id:, variable:] secret text, [id:, usernameVariable:, passwordVariable:]
            // username with password, [id:, fileVariable:] secret file.
            credentials: [],
        ]
    }

    /** What the steps that run stages publish. */
    static Map publishing() {
        return [
            // Publish the run's JUnit report (`junit`) and archive its record, logs and reports.
            publish: true,
            // Also archive the trained model binary (artifacts/*.zip) when publishing.
            archiveModel: false,
            // Set currentBuild.description to the model version, image and URL.
            description: true,
        ]
    }

    /**
     * `defaults` overlaid with `user`. An unknown key, or a value of another type than its
     * default's, fails the build naming the key and listing the known ones.
     */
    static Map merge(Object steps, String step, Map defaults, Map user) {
        String problem = problems(step, defaults, user ?: [:])
        if (problem) {
            steps.error(problem)
        }
        Map merged = [:]
        merged.putAll(defaults)
        merged.putAll(user ?: [:])
        return merged
    }

    @NonCPS
    static String problems(String step, Map defaults, Map user) {
        List<String> known = defaults.keySet().collect { it.toString() }.sort()
        List<String> unknown = user.keySet().collect { it.toString() }.findAll { !(it in known) }
        if (unknown) {
            return "${step}: unknown key${unknown.size() > 1 ? 's' : ''} " +
                "${unknown.sort().join(', ')}; known keys: ${known.join(', ')}"
        }
        for (Map.Entry entry : user.entrySet()) {
            Object expected = defaults[entry.key]
            Object value = entry.value
            if (expected != null && value != null && !sameKind(expected, value)) {
                return "${step}: ${entry.key} must be a ${kind(expected)}, not ${kind(value)}"
            }
        }
        return credentialProblem(step, user.credentials)
    }

    /** The credentials list's entries, checked before any of them reaches withCredentials. */
    @NonCPS
    static String credentialProblem(String step, Object credentials) {
        for (Object entry : (credentials ?: [])) {
            if (!(entry instanceof Map) || !entry.id) {
                return "${step}: each credentials entry is a map with an id, got ${kind(entry)}"
            }
            Set<String> keys = entry.keySet().collect { it.toString() } as Set
            boolean text = keys == (['id', 'variable'] as Set)
            boolean pair = keys == (['id', 'usernameVariable', 'passwordVariable'] as Set)
            boolean file = keys == (['id', 'fileVariable'] as Set)
            if (!(text || pair || file)) {
                return "${step}: credentials entry '${entry.id}' needs exactly [id, variable], " +
                    '[id, usernameVariable, passwordVariable] or [id, fileVariable]; ' +
                    "got ${keys.sort().join(', ')}"
            }
        }
        return null
    }

    @NonCPS
    private static boolean sameKind(Object expected, Object value) {
        if (expected instanceof CharSequence) {
            return value instanceof CharSequence
        }
        if (expected instanceof Boolean) {
            return value instanceof Boolean
        }
        if (expected instanceof List) {
            return value instanceof List
        }
        if (expected instanceof Map) {
            return value instanceof Map
        }
        return true
    }

    @NonCPS
    private static String kind(Object value) {
        if (value instanceof CharSequence) {
            return 'string'
        }
        if (value instanceof Boolean) {
            return 'boolean'
        }
        if (value instanceof List) {
            return 'list'
        }
        if (value instanceof Map) {
            return 'map'
        }
        return value == null ? 'null' : value.getClass().simpleName
    }

    @NonCPS
    private static String envValue(Object env, String name) {
        // Jenkins' env answers null for a variable that is not set.
        Object value = env?."${name}"
        return value ? value.toString() : null
    }

}
