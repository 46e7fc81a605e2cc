package com.epam.legion.ci

import com.cloudbees.groovy.cps.NonCPS
import groovy.json.JsonSlurperClassic

import java.nio.file.Path
import java.nio.file.Paths

/**
 * What a step hands back, read from legion-ci's `--output json` (never scraped from the log):
 * `{"run_id", "status", "record", "stages": {name: {"status", "outputs", "metrics", "error"}}}`.
 * Everything here is plain data; legion-ci has already replaced every secret by ***.
 */
class LegionResult {

    /** Output keys lifted to the top of the returned Map, as a Jenkinsfile names them. */
    static final Map<String, String> OUTPUTS = [
        artifact: 'artifact',
        artifact_sha256: 'artifactSha256',
        image: 'image',
        digest: 'digest',
        url: 'url',
    ]

    /**
     * The Map a stage step returns: runId, status, record, stages (as legion-ci printed them),
     * outputs and metrics of every stage merged in order, and artifact, artifactSha256, image,
     * digest, url when a stage produced them.
     */
    @NonCPS
    static Map fromJson(String text) {
        Map json = parse(text)
        Map stages = json.stages instanceof Map ? json.stages : [:]
        Map outputs = [:]
        Map metrics = [:]
        stages.each { String name, Map stage ->
            outputs.putAll(stage.outputs ?: [:])
            metrics.putAll(stage.metrics ?: [:])
        }
        Map result = [
            runId: json.run_id,
            status: json.status,
            record: json.record,
            stages: stages,
            outputs: outputs,
            metrics: metrics,
        ]
        OUTPUTS.each { String key, String name ->
            if (outputs[key] != null) {
                result[name] = outputs[key]
            }
        }
        return result
    }

    /** legionValidate's Map: the pipeline, model, workspace, stage names and the whole plan. */
    @NonCPS
    static Map planFromJson(String text) {
        Map plan = parse(text)
        return [
            pipeline: plan.pipeline,
            model: plan.model,
            workspace: plan.workspace,
            stages: (plan.stages ?: []).collect { it.stage },
            plan: plan.stages ?: [],
        ]
    }

    /** The model name and version from a run record's JSON. */
    @NonCPS
    static Map model(String recordText) {
        Map record = parse(recordText)
        return record.model instanceof Map ? record.model : [:]
    }

    /** currentBuild.description: model and version, status, image and URL when there are. */
    @NonCPS
    static String description(Map model, Map result) {
        List<String> parts = ["${model.name ?: 'model'} ${model.version ?: ''}".trim() +
            ": ${result.status}"]
        if (result.image) {
            parts << "image ${result.image}"
        }
        if (result.url) {
            parts << "url ${result.url}"
        }
        return parts.join(' | ')
    }

    /** The first line of a stage's error, the message a failed build carries. */
    @NonCPS
    static String stageError(Map result, String stage) {
        Object error = result?.stages?.get(stage)?.error
        return error ? firstLine(error.toString()) : null
    }

    /**
     * The one-line message of a legion-ci failure from its stderr: the error line, and for a
     * validation failure its first located problem.
     */
    @NonCPS
    static String cliError(String stderr) {
        List<String> lines = (stderr ?: '').readLines()*.trim().findAll { String line ->
            line && !line.startsWith('legion-ci: reproduce locally')
        }
        if (!lines) {
            return null
        }
        String first = lines[0].replaceFirst(/^legion-ci: error: /, '')
        if (first.contains('validation failed') && lines.size() > 1) {
            return "${first}: ${lines[1]}".toString()
        }
        return first
    }

    @NonCPS
    static String firstLine(String text) {
        List<String> lines = text.readLines()
        return lines ? lines[0] : ''
    }

    /** `path` relative to `base`, or null when it is not inside it (Jenkins publishes only there). */
    @NonCPS
    static String relative(String base, String path) {
        Path root = Paths.get(base).toAbsolutePath().normalize()
        Path target = Paths.get(path).toAbsolutePath().normalize()
        if (!target.startsWith(root) || target == root) {
            return null
        }
        return root.relativize(target).toString()
    }

    @NonCPS
    static String parent(String path) {
        return Paths.get(path).parent.toString()
    }

    @NonCPS
    private static Map parse(String text) {
        Object value = new JsonSlurperClassic().parseText(text)
        if (!(value instanceof Map)) {
            throw new IllegalArgumentException('legion-ci printed JSON that is not an object')
        }
        return value
    }

}
