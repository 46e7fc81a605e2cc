package com.epam.legion.ci

import com.cloudbees.groovy.cps.NonCPS
import groovy.json.JsonSlurperClassic

import java.nio.file.Path
import java.nio.file.Paths

/**
 * What a step hands back, read from legion-ci's `--output json` (never scraped from the log).
 * legion-ci prints that document on every exit code: `{"run_id", "status", "record",
 * "outputs": {CI name: value}, "stages": {name: {"status", "outputs", "metrics", "error"}},
 * "error": {"kind", "message", "problems"}}` (`run_id` is null when no run started, `error` is
 * there when it failed). The output names are legion-ci's (its stage table); none is listed here.
 * Everything here is plain data; legion-ci has already replaced every secret by ***.
 */
class LegionResult {

    /**
     * The Map a stage step returns: runId, status, record, stages (as legion-ci printed them),
     * outputs and metrics of every stage merged in order, and each of the run's CI outputs in
     * camelCase (artifact, artifactSha256, image, digest, url, runFolder, summary, junit).
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
        Map named = json.outputs instanceof Map ? json.outputs : [:]
        named.each { String key, Object value ->
            String name = camelCase(key)
            if (value != null && !result.containsKey(name)) {
                result[name] = value
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

    /** True when the document is a run's result (a run started), not only an error. */
    @NonCPS
    static boolean isRun(String text) {
        return (text ?: '').trim() && parse(text).run_id != null
    }

    /**
     * The one-line message of a legion-ci failure, from the document's `error` (for a
     * validation failure it already names the first located problem), or null.
     */
    @NonCPS
    static String error(String text) {
        if (!(text ?: '').trim()) {
            return null
        }
        Object error = parse(text).error
        return error instanceof Map && error.message ? firstLine(error.message.toString()) : null
    }

    /** run-id -> runId, artifact-sha256 -> artifactSha256: a CI output name as a Map key. */
    @NonCPS
    static String camelCase(String name) {
        return name.replaceAll(/-([a-z0-9])/) { String all, String letter -> letter.toUpperCase() }
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
