/*
 * Runs Jenkinsfiles against the shared library in plain Groovy 2.4, with the pipeline steps it
 * uses bound to real actions: `sh` runs the script with `sh -xe` (as Jenkins' durable task
 * does) in the agent's workspace, `withCredentials` and `withEnv` set real environment
 * variables, `stash`/`unstash`/`archiveArtifacts`/`junit` copy real files, `node` switches to
 * a per-label agent workspace and `checkout scm` copies the project into it. Every step call is
 * recorded; tests/jenkins_support.py reads the record.
 *
 *   groovy -cp <library>/src:tests/groovy/stubs Harness.groovy SCENARIOS.json RESULTS.json
 *
 * SCENARIOS.json: [{id, library, jenkinsfile, project, root, credentials: {id: secret |
 * {username, password}}, env: {NAME: value}}]. One JVM runs them all (a JVM start is slow).
 */
import groovy.json.JsonOutput
import groovy.io.FileType
import groovy.json.JsonSlurper
import org.codehaus.groovy.control.CompilerConfiguration
import org.codehaus.groovy.control.customizers.ImportCustomizer

import java.nio.file.FileSystems
import java.nio.file.Files
import java.nio.file.Path
import java.nio.file.PathMatcher
import java.nio.file.StandardCopyOption

/** Jenkins' hudson.AbortException: what `error` and a failing step throw. */
class StepFailed extends RuntimeException {
    StepFailed(String message) {
        super(message)
    }
}

class CurrentBuild {
    String description
    String result
    String displayName
    int number = 1
}

/** `env.NAME` reads the environment the next `sh` would get; `env.NAME = v` sets it. */
class EnvProxy {
    Steps steps

    Object propertyMissing(String name) {
        return steps.environment()[name]
    }

    void propertyMissing(String name, Object value) {
        steps.globalEnv[name] = value?.toString()
    }
}

/** A var of the library: `legionTrain(...)` calls the script's `call`. */
class GlobalVar extends Closure {
    Script script

    GlobalVar(Script script) {
        super(script)
        this.script = script
    }

    @Override
    Object call(Object... args) {
        return script.invokeMethod('call', args)
    }

    Object doCall(Object... args) {
        return call(args)
    }
}

class Steps {
    Map scenario
    File library
    File root
    File tmp
    File cwd
    String nodeName
    List<Map> events = []
    StringBuilder log = new StringBuilder()
    Map<String, String> globalEnv = [:]
    List<Map<String, String>> overlays = []
    CurrentBuild currentBuild = new CurrentBuild()
    List<String> stages = []

    Map<String, String> environment() {
        Map<String, String> env = new LinkedHashMap<>(System.getenv())
        env.putAll((scenario.env ?: [:]) as Map<String, String>)
        env.putAll([JENKINS_URL: 'http://127.0.0.1:9/', BUILD_NUMBER: '1', JOB_NAME: scenario.id])
        if (cwd != null) {
            env.WORKSPACE = cwd.canonicalPath
            env.NODE_NAME = nodeName
        }
        env.putAll(globalEnv)
        overlays.each { env.putAll(it) }
        return env
    }

    private void record(Map event) {
        events << ([stage: stages ? stages[-1] : null] + event)
    }

    private File resolve(String path) {
        File file = new File(path)
        return file.absolute ? file : new File(cwd, path)
    }

    private void requireNode(String step) {
        if (cwd == null) {
            throw new StepFailed("${step}: Required context class hudson.FilePath is missing " +
                '(perhaps you forgot to surround the code with a step that provides this, such as: node)')
        }
    }

    // ---- steps -------------------------------------------------------------------------

    Object sh(String script) {
        return sh([script: script])
    }

    Object sh(Map args) {
        requireNode('sh')
        File file = File.createTempFile('script', '.sh', tmp)
        file.setText(args.script as String, 'UTF-8')
        ProcessBuilder builder = new ProcessBuilder('sh', '-xe', file.path).directory(cwd)
        builder.environment().clear()
        builder.environment().putAll(environment())
        File stdout = File.createTempFile('stdout', '.txt', tmp)
        File both = File.createTempFile('output', '.txt', tmp)
        if (args.returnStdout) {
            builder.redirectOutput(stdout).redirectError(both)
        } else {
            builder.redirectErrorStream(true).redirectOutput(both)
        }
        int code = builder.start().waitFor()
        String output = both.getText('UTF-8')
        String captured = stdout.getText('UTF-8')
        log << output
        record(step: 'sh', label: args.label, script: args.script, cwd: cwd.canonicalPath,
            envNames: overlays.collectMany { it.keySet() as List }, exitCode: code,
            output: output + captured)
        if (args.returnStatus) {
            return code
        }
        if (code != 0) {
            throw new StepFailed("script returned exit code ${code}")
        }
        return args.returnStdout ? captured : null
    }

    void echo(Object message) {
        log << message.toString() << '\n'
        record(step: 'echo', message: message.toString())
    }

    void error(String message) {
        log << 'ERROR: ' << message << '\n'
        record(step: 'error', message: message)
        throw new StepFailed(message)
    }

    Object withEnv(List entries, Closure body) {
        Map<String, String> overlay = [:]
        entries.each { String entry ->
            int at = entry.indexOf('=')
            overlay[entry.substring(0, at)] = entry.substring(at + 1)
        }
        record(step: 'withEnv', names: overlay.keySet() as List)
        return withOverlay(overlay, body)
    }

    Map string(Map args) {
        return [kind: 'string'] + args
    }

    Map usernamePassword(Map args) {
        return [kind: 'usernamePassword'] + args
    }

    Map file(Map args) {
        return [kind: 'file'] + args
    }

    Object withCredentials(List bindings, Closure body) {
        Map<String, String> overlay = [:]
        List<File> files = []
        bindings.each { Map binding ->
            Object secret = (scenario.credentials ?: [:])[binding.credentialsId]
            if (secret == null) {
                throw new StepFailed("Could not find credentials entry with ID '${binding.credentialsId}'")
            }
            if (binding.kind == 'string') {
                overlay[binding.variable] = secret.toString()
            } else if (binding.kind == 'usernamePassword') {
                overlay[binding.usernameVariable] = secret.username
                overlay[binding.passwordVariable] = secret.password
            } else {
                File secretFile = File.createTempFile('secret', '.txt', tmp)
                secretFile.text = secret.toString()
                files << secretFile
                overlay[binding.variable] = secretFile.path
            }
        }
        record(step: 'withCredentials', ids: bindings*.credentialsId,
            variables: overlay.keySet() as List)
        try {
            return withOverlay(overlay, body)
        } finally {
            files*.delete()
        }
    }

    private Object withOverlay(Map<String, String> overlay, Closure body) {
        overlays << overlay
        try {
            return body()
        } finally {
            overlays.remove(overlays.size() - 1)
        }
    }

    Object node(Closure body) {
        return node('', body)
    }

    Object node(String label, Closure body) {
        File previous = cwd
        String previousName = nodeName
        nodeName = label ?: 'any'
        cwd = new File(root, "agents/${nodeName}/workspace").canonicalFile
        cwd.mkdirs()
        record(step: 'node', label: nodeName, workspace: cwd.path)
        try {
            return body()
        } finally {
            cwd = previous
            nodeName = previousName
        }
    }

    Object dir(String path, Closure body) {
        File previous = cwd
        cwd = resolve(path).canonicalFile
        cwd.mkdirs()
        try {
            return body()
        } finally {
            cwd = previous
        }
    }

    void checkout(Object scm) {
        requireNode('checkout')
        copyTree(new File(scenario.project as String), cwd)
        record(step: 'checkout', workspace: cwd.path)
    }

    /** The `git` step: the scenario's project stands for the repository at that URL. */
    void git(Map args) {
        requireNode('git')
        copyTree(new File(scenario.project as String), cwd)
        record(step: 'git', url: args.url, branch: args.branch, credentialsId: args.credentialsId,
            workspace: cwd.path)
    }

    Object stage(String name, Closure body) {
        stages << name
        record(step: 'stage', name: name, status: 'started')
        try {
            Object value = body()
            record(step: 'stage', name: name, status: 'succeeded')
            return value
        } catch (Throwable failure) {
            record(step: 'stage', name: name, status: 'failed', message: failure.message)
            throw failure
        } finally {
            stages.remove(stages.size() - 1)
        }
    }

    String pwd() {
        requireNode('pwd')
        return cwd.canonicalPath
    }

    boolean isUnix() {
        return true
    }

    /** `deleteDir()`: the current directory, recursively, as an agent cleaning its workspace. */
    void deleteDir() {
        requireNode('deleteDir')
        boolean deleted = cwd.deleteDir()
        record(step: 'deleteDir', workspace: cwd.path, deleted: deleted)
    }

    boolean fileExists(String path) {
        requireNode('fileExists')
        return resolve(path).exists()
    }

    String readFile(String path) {
        requireNode('readFile')
        File file = resolve(path)
        if (!file.exists()) {
            throw new StepFailed("No such file: ${file}")
        }
        return file.getText('UTF-8')
    }

    String readFile(Map args) {
        return readFile(args.file as String)
    }

    void writeFile(Map args) {
        File file = resolve(args.file as String)
        file.parentFile.mkdirs()
        file.setText(args.text as String, 'UTF-8')
    }

    String libraryResource(String path) {
        File file = new File(library, "resources/${path}")
        if (!file.exists()) {
            throw new StepFailed("No such library resource ${path} could be found.")
        }
        return file.getText('UTF-8')
    }

    void junit(String pattern) {
        junit([testResults: pattern])
    }

    void junit(Map args) {
        List<String> files = matchingOrFail('junit', args.testResults as String,
            args.allowEmptyResults as boolean, 'No test report files were found. Configuration error?')
        List<Map> cases = []
        files.each { String relative ->
            Node suite = new XmlParser().parse(new File(cwd, relative))
            suite.testcase.each { Node testcase ->
                String status = testcase.failure ? 'failed' : testcase.error ? 'error' :
                    testcase.skipped ? 'skipped' : 'passed'
                Node problem = (testcase.failure ?: testcase.error ?: [null])[0]
                cases << [name: testcase.@name, status: status, message: problem?.@message]
            }
            copyInto(new File(tmp, 'published/junit'), relative)
        }
        record(step: 'junit', pattern: args.testResults, files: files, cases: cases)
    }

    void archiveArtifacts(String pattern) {
        archiveArtifacts([artifacts: pattern])
    }

    void archiveArtifacts(Map args) {
        List<String> files = matchingOrFail('archiveArtifacts', args.artifacts as String,
            args.allowEmptyArchive as boolean,
            "No artifacts found that match the file pattern \"${args.artifacts}\"")
        File archive = new File(root, 'archive')
        files.each { String relative -> copyInto(archive, relative) }
        record(step: 'archiveArtifacts', pattern: args.artifacts, files: files,
            fingerprint: args.fingerprint ?: false)
    }

    void stash(Map args) {
        List<String> files = matchingOrFail('stash', args.includes as String,
            args.allowEmpty as boolean, "No files included in stash ‘${args.name}’")
        File store = new File(root, "stashes/${args.name}")
        store.deleteDir()
        files.each { String relative -> copyInto(store, relative) }
        record(step: 'stash', name: args.name, includes: args.includes, files: files)
    }

    void unstash(String name) {
        requireNode('unstash')
        File store = new File(root, "stashes/${name}")
        if (!store.directory) {
            throw new StepFailed("No such saved stash ‘${name}’")
        }
        copyTree(store, cwd)
        record(step: 'unstash', name: name, workspace: cwd.path)
    }

    /**
     * What `step` (junit, archiveArtifacts, stash) works on: the files `patterns` match, failing
     * the step with Jenkins's message `none` when there are none and that is not allowed.
     */
    private List<String> matchingOrFail(String step, String patterns, boolean allowEmpty, String none) {
        requireNode(step)
        List<String> files = matching(patterns)
        if (!files && !allowEmpty) {
            throw new StepFailed(none)
        }
        return files
    }

    /** Copy the workspace file `relative` to the same relative path under `folder`. */
    private void copyInto(File folder, String relative) {
        File copy = new File(folder, relative)
        copy.parentFile.mkdirs()
        copy.bytes = new File(cwd, relative).bytes
    }

    /** Files under the workspace matching comma-separated Ant-style patterns, relative. */
    private List<String> matching(String patterns) {
        List<PathMatcher> matchers = patterns.split(',')*.trim().findAll { it }.collect {
            FileSystems.default.getPathMatcher("glob:${it}")
        }
        Path base = cwd.toPath()
        List<String> found = []
        cwd.eachFileRecurse(FileType.FILES) { File file ->
            Path relative = base.relativize(file.toPath())
            if (matchers.any { it.matches(relative) }) {
                found << relative.toString()
            }
        }
        return found.sort()
    }

    private static void copyTree(File source, File target) {
        Path from = source.toPath()
        source.eachFileRecurse(FileType.ANY) { File file ->
            Path destination = target.toPath().resolve(from.relativize(file.toPath()).toString())
            if (file.directory) {
                Files.createDirectories(destination)
                return
            }
            Files.createDirectories(destination.parent)
            Files.copy(file.toPath(), destination, StandardCopyOption.REPLACE_EXISTING,
                StandardCopyOption.COPY_ATTRIBUTES)
        }
    }
}

/** The subset of Declarative Pipeline the examples use: agent, stages, when, steps, post. */
class Declarative {
    Steps steps
    Script script

    void run(Closure definition) {
        PipelineSpec spec = new PipelineSpec()
        configure(definition, spec)
        Throwable failure = null
        try {
            spec.stages.each { StageSpec stage -> runStage(spec, stage) }
        } catch (Throwable thrown) {
            failure = thrown
        }
        String result = failure ? 'FAILURE' : 'SUCCESS'
        runPost(spec.post, result)
        if (failure) {
            throw failure
        }
    }

    private void runStage(PipelineSpec pipeline, StageSpec stage) {
        if (stage.beforeAgent && stage.when && !stage.when.call()) {
            steps.events << [step: 'stage', name: stage.name, status: 'skipped']
            return
        }
        String label = stage.agent ?: pipeline.agent
        Closure body = {
            steps.stage(stage.name) {
                if (label != 'none' && !pipeline.skipDefaultCheckout) {
                    steps.checkout([:])
                }
                stage.steps.call()
            }
        }
        if (label == null || label == 'none') {
            body()
        } else {
            steps.node(label == 'any' ? '' : label, body)
        }
    }

    private void runPost(Map<String, Closure> post, String result) {
        ['always', result == 'SUCCESS' ? 'success' : 'failure'].each { String condition ->
            if (post[condition]) {
                post[condition].call()
            }
        }
    }

    static void configure(Closure closure, Object spec) {
        Closure copy = closure.rehydrate(spec, closure.owner, closure.thisObject)
        copy.resolveStrategy = Closure.DELEGATE_FIRST
        copy.call()
    }
}

class AgentSpec {
    String label

    void label(String value) {
        label = value
    }
}

/** What `pipeline` and `stage` both take: `agent any`, `agent none` or `agent { label '...' }`. */
abstract class AgentSection {
    String agent

    Object propertyMissing(String name) {
        if (name in ['any', 'none']) {
            return name
        }
        throw new MissingPropertyException(name, getClass())
    }

    void agent(String value) {
        agent = value
    }

    void agent(Closure closure) {
        AgentSpec spec = new AgentSpec()
        Declarative.configure(closure, spec)
        agent = spec.label
    }
}

class PipelineSpec extends AgentSection {
    boolean skipDefaultCheckout
    List<StageSpec> stages = []
    Map<String, Closure> post = [:]

    void options(Closure closure) {
        Declarative.configure(closure, this)
    }

    void skipDefaultCheckout() {
        skipDefaultCheckout = true
    }

    void stages(Closure closure) {
        Declarative.configure(closure, this)
    }

    void stage(String name, Closure closure) {
        StageSpec spec = new StageSpec(name: name)
        Declarative.configure(closure, spec)
        stages << spec
    }

    void post(Closure closure) {
        Declarative.configure(closure, new PostSpec(post: post))
    }
}

class PostSpec {
    Map<String, Closure> post

    void always(Closure body) {
        post.always = body
    }

    void success(Closure body) {
        post.success = body
    }

    void failure(Closure body) {
        post.failure = body
    }
}

class StageSpec extends AgentSection {
    String name
    Closure when
    boolean beforeAgent
    Closure steps

    void when(Closure closure) {
        WhenSpec spec = new WhenSpec()
        Declarative.configure(closure, spec)
        beforeAgent = spec.beforeAgent
        when = spec.expression
    }

    void steps(Closure closure) {
        steps = { Declarative.configure(closure, new StepsSpec()) }
    }
}

class WhenSpec {
    boolean beforeAgent
    Closure expression

    void beforeAgent(boolean value) {
        beforeAgent = value
    }

    void expression(Closure closure) {
        expression = closure
    }
}

class StepsSpec {
    Object script(Closure closure) {
        return closure.call()
    }
}

// ---- the run -----------------------------------------------------------------------------

Object plain(Object value) {
    if (value instanceof Map) {
        return value.collectEntries { k, v -> [(k.toString()): plain(v)] }
    }
    if (value instanceof Collection) {
        return value.collect { plain(it) }
    }
    if (value == null || value instanceof Number || value instanceof Boolean) {
        return value
    }
    return value.toString()
}

Map runScenario(Map scenario) {
    File root = new File(scenario.root as String).canonicalFile
    File tmp = new File(root, 'harness')
    tmp.mkdirs()
    File library = new File(scenario.library as String)
    Steps steps = new Steps(scenario: scenario, library: library, root: root, tmp: tmp)
    Binding binding = new Binding()
    ['sh', 'echo', 'error', 'withEnv', 'withCredentials', 'string', 'usernamePassword', 'file',
     'node', 'dir', 'checkout', 'git', 'stage', 'pwd', 'isUnix', 'deleteDir', 'fileExists',
     'readFile', 'writeFile',
     'libraryResource', 'junit', 'archiveArtifacts', 'stash', 'unstash'].each { String name ->
        binding.setVariable(name, steps.&"${name}")
    }
    binding.setVariable('env', new EnvProxy(steps: steps))
    binding.setVariable('currentBuild', steps.currentBuild)
    binding.setVariable('scm', [$class: 'GitSCM'])
    binding.setVariable('params', [:])

    CompilerConfiguration compiler = new CompilerConfiguration()
    compiler.addCompilationCustomizers(
        new ImportCustomizer().addImports('org.jenkinsci.plugins.workflow.libs.Library'))
    GroovyShell shell = new GroovyShell(this.class.classLoader, binding, compiler)
    new File(library, 'vars').listFiles().findAll { it.name.endsWith('.groovy') }.each { File var ->
        Script script = shell.parse(var.getText('UTF-8'), var.name - '.groovy')
        binding.setVariable(var.name - '.groovy', new GlobalVar(script))
    }
    Script jenkinsfile = shell.parse(new File(scenario.jenkinsfile as String).getText('UTF-8'),
        'Jenkinsfile')
    Declarative declarative = new Declarative(steps: steps, script: jenkinsfile)
    binding.setVariable('pipeline', { Closure definition -> declarative.run(definition) })

    Map result = [id: scenario.id]
    try {
        result.returned = plain(jenkinsfile.run())
        result.result = steps.currentBuild.result ?: 'SUCCESS'
    } catch (StepFailed failure) {
        result.result = 'FAILURE'
        result.error = failure.message
    } catch (Throwable failure) {
        // A bug in the library or the harness, not a failed build: keep the whole story.
        StringWriter trace = new StringWriter()
        failure.printStackTrace(new PrintWriter(trace))
        result.result = 'FAILURE'
        result.error = failure.toString()
        result.trace = trace.toString()
    }
    result.description = steps.currentBuild.description
    result.events = plain(steps.events)
    result.log = steps.log.toString()
    return result
}

List scenarios = new JsonSlurper().parse(new File(args[0])) as List
List results = scenarios.collect { Map scenario -> runScenario(scenario) }
new File(args[1]).setText(JsonOutput.toJson(results), 'UTF-8')
