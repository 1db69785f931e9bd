import AsyncHTTPClient
import ArgumentParser
import CanopyCore
import CanopyHTTP
import Dispatch
import Foundation

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Run a workload; without -d, stream its output and exit with its exit code.",
        usage: "canopy run [<options>] [--] <command> [<argument> ...]",
        discussion: """
            The command starts at -- or at the first word that is not an option; what follows it is passed to it untouched. \
            Example: canopy run --gpus 1 --memory 8Gi python3 train.py --epochs 3
            """)

    // Numeric options take the next word whatever it looks like, so that `--cpus -1` is refused for what it is.
    @Option(help: "A name for people.") var name: String?
    @Option(parsing: .unconditional, help: "CPUs per task: 2, 0.5, or 500m millicores (default: 1).") var cpus: String?
    @Option(parsing: .unconditional, help: "Memory per task: 512Mi, 8Gi; Ki, Mi, Gi, Ti, or K, M, G, T for powers of 1000 (default: 1Gi).")
    var memory: String?
    @Option(parsing: .unconditional, help: "GPUs per task (default: 0).") var gpus: Int?
    @Option(help: "GPU model, e.g. T4 or H100 (matched within the device name).") var gpuModel: String?
    @Option(parsing: .unconditional, help: "Number of tasks; all start together or none does (default: 1).") var tasks: Int?
    @Option(help: "Queue (default: default).") var queue: String?
    @Option(help: "The image its tasks run from, a catalog name NAME:TAG (see canopy images ls).") var image: String?
    @Option(
        help: "Mount into each task's container: SOURCE:TARGET[:ro], e.g. data:/datasets/mnist:/data:ro or host:/scratch:/scratch (repeatable; needs --image).")
    var mount: [String] = []
    @Option(parsing: .unconditional, help: "Priority within the queue; higher first (default: 0).") var priority: Int?
    @Option(name: .shortAndLong, help: "Environment variable K=V (repeatable).") var env: [String] = []
    @Option(help: "Working directory, inside the task's own directory.") var workdir: String?
    @Option(parsing: .unconditional, help: "Longest run time, e.g. 30m or 2h; the workload is stopped after it.") var maxDuration: String?
    @Option(help: "Stage a data-store file or directory in before the command starts: SOURCE:PATH, e.g. /user/me/mnist:data (repeatable).")
    var input: [String] = []
    @Option(help: "Copy a path of task 0's working directory to the data store after it ends: PATH:DESTINATION, e.g. out:/user/me/run1 (repeatable).")
    var output: [String] = []
    @Flag(help: "Let --output replace what is already at its destination.") var overwrite = false
    @Flag(help: "Submit on hold: pending until `canopy release`.") var hold = false
    @Flag(help: "An interactive workload: `canopy stop` stops it (files kept) and `canopy restart` starts it again; it has a lease.")
    var interactive = false
    @Option(help: "A port each task serves, PORT[/http|/tcp] (repeatable): HTTP ports get an access URL on the proxy (canopy show, canopy open).")
    var port: [String] = []
    @Option(help: "Run an app by name (canopy apps): its command, image and port unless given; interactive unless it is a batch workload.")
    var app: String?
    @Flag(help: .hidden) var printLink = false
    @Flag(help: .hidden) var printShell = false
    @Option(help: "Interactive workloads: how long each start may run, e.g. 2h, or unlimited where the queue allows (default: the queue's).")
    var lease: String?
    @Option(help: "Interactive workloads in a queue with an idle timeout: a shell command run in task 0 at each idle check; exit 0 counts as activity (e.g. 'pgrep -f train.py').")
    var idleProbe: String?
    @Flag(name: .shortAndLong, help: "Detach: print the workload's id and return.") var detach = false
    // Captured after `--`; `CanopyCommand.runMain` inserts the `--` before the first word that is not an option.
    @Argument(parsing: .postTerminator, help: ArgumentHelp("The command and its arguments, after -- or after the options.", valueName: "command"))
    var command: [String] = []

    func validate() throws {
        _ = try workloadRequest()
    }

    /// The submission the options describe; a `ValidationError` (exit 64, nothing submitted) for any bad option.
    func workloadRequest() throws -> CreateWorkloadRequest {
        guard !command.isEmpty || app != nil else { throw ValidationError("give the command to run, e.g. canopy run -- echo hello") }
        var body = CreateWorkloadRequest(command: command)
        if command.isEmpty { body.command = nil }
        body.app = app
        body.name = name
        body.queue = queue
        body.priority = priority
        if let tasks {
            guard tasks > 0 else { throw ValidationError("--tasks must be positive") }
            body.tasks = tasks
        }
        body.workdir = workdir
        body.image = image
        if !mount.isEmpty { body.mounts = try mount.map(RunArguments.mount) }
        body.hold = hold ? true : nil
        if interactive { body.kind = .interactive }
        if !port.isEmpty {
            body.ports = try port.map { text in
                guard let p = PortSpec.parse(text) else { throw ValidationError("--port takes PORT, PORT/http or PORT/tcp (1 to 65535), got \"\(text)\"") }
                return p
            }
        }
        if let lease {
            guard interactive || app != nil else {
                throw ValidationError("--lease is for interactive workloads (add --interactive); batch ones have --max-duration")
            }
            guard let l = Lease.parse(lease) else { throw ValidationError("--lease takes a duration such as 2h or 90m, or unlimited") }
            body.lease = l
        }
        if let idleProbe {
            guard interactive || app != nil else { throw ValidationError("--idle-probe is for interactive workloads (add --interactive)") }
            body.idleProbe = ["sh", "-c", idleProbe]
        }
        if let maxDuration { body.maxDuration = DurationValue(seconds: try ResourceArguments.duration(maxDuration, option: "--max-duration")) }
        if cpus != nil || memory != nil || gpus != nil || gpuModel != nil {
            var r = Resources()
            if let cpus { r.cpuMillis = try ResourceArguments.cpus(cpus) }
            if let memory { r.memoryMiB = try ResourceArguments.memory(memory) }
            if let gpus, gpus < 0 { throw ValidationError("--gpus must be 0 or more") }
            r.gpus = gpus ?? 0
            r.gpuModel = gpuModel
            body.resources = r
        }
        if !env.isEmpty {
            var vars: [String: String] = [:]
            for kv in env {
                guard let eq = kv.firstIndex(of: "="), eq != kv.startIndex else { throw ValidationError("--env takes K=V, got \"\(kv)\"") }
                vars[String(kv[..<eq])] = String(kv[kv.index(after: eq)...])
            }
            body.env = vars
        }
        if !input.isEmpty || !output.isEmpty {
            func split(_ option: String, _ value: String) throws -> (String, String) {
                guard let colon = value.lastIndex(of: ":"), colon != value.startIndex, value.index(after: colon) != value.endIndex else {
                    throw ValidationError("--\(option) takes \(option == "input" ? "SOURCE:PATH" : "PATH:DESTINATION"), got \"\(value)\"")
                }
                return (String(value[..<colon]), String(value[value.index(after: colon)...]))
            }
            body.data = DataStaging(
                inputs: try input.map { let (source, path) = try split("input", $0); return DataInput(source: source, path: path) },
                outputs: try output.map { let (path, destination) = try split("output", $0); return DataOutput(path: path, destination: destination, overwrite: overwrite) })
        }
        return body
    }

    func run() async throws {
        let request = try workloadRequest()
        let detach = self.detach
        try await client { c in
            let w: Workload
            do {
                w = try await c.call(.POST, "/workloads", body: request, as: Workload.self)
            } catch let e as CLIError {
                throw CLIError(e.description, exitCode: 125)
            }
            if printLink { return try await waitAndPrintLink(c, w) }
            if printShell { return try await waitAndPrintShell(c, w) }
            if detach { return printOut(w.id) }
            let code = try await attach(c, w)
            throw ExitCode(code)
        }
    }
}

extension RunCommand {
    /// Waits until the workload runs (or throws why it will not).
    func waitUntilRunning(_ c: CanopyClient, _ submitted: Workload) async throws -> Workload {
        printErr("canopy: waiting for \(submitted.id) to start...")
        let deadline = Date().addingTimeInterval(600)
        var w = submitted
        while w.phase != .running {
            if w.phase.isTerminal || w.phase == .stopped {
                throw CLIError("workload \(w.id) is \(w.phase.rawValue)\(w.reason.map { ": \($0.message)" } ?? ""); see canopy logs \(w.id)")
            }
            guard Date() < deadline else { throw CLIError("workload \(w.id) did not start within 10 minutes; see canopy show \(w.id)") }
            try await Task.sleep(for: .milliseconds(500))
            w = try await c.call(.GET, "/workloads/\(w.id)", as: Workload.self)
        }
        return w
    }

    /// `canopy shell`: prints the id, waits until it runs, and says how to get in.
    func waitAndPrintShell(_ c: CanopyClient, _ submitted: Workload) async throws {
        printOut(submitted.id)
        let w = try await waitUntilRunning(c, submitted)
        printErr("canopy: \(w.id) is running; get in with: canopy exec -it \(w.id) -- sh   (stop it with canopy stop \(w.id))")
    }

    /// `canopy jupyter`: prints the id, waits until the app answers through the proxy, then prints its access URL
    /// and a login link for a browser.
    func waitAndPrintLink(_ c: CanopyClient, _ submitted: Workload) async throws {
        printOut(submitted.id)
        let w = try await waitUntilRunning(c, submitted)
        let deadline = Date().addingTimeInterval(600)
        guard let url = w.tasks.first?.endpoints?.first(where: { $0.url != nil })?.url else {
            throw CLIError("workload \(w.id) runs, but the server has no proxy to reach it (canopy serve --proxy-port)")
        }
        // The app needs a moment to listen: until it does, the proxy answers 502.
        while Date() < deadline {
            var probe = HTTPClientRequest(url: url)
            if let token = c.token { probe.headers.add(name: "Authorization", value: "Bearer \(token)") }
            if let r = try? await c.http.execute(probe, timeout: .seconds(10)), r.status.code != 502, r.status.code != 503 { break }
            let now = try await c.call(.GET, "/workloads/\(w.id)", as: Workload.self)
            if now.phase != .running { throw CLIError("workload \(w.id) is \(now.phase.rawValue); see canopy logs \(w.id)") }
            try await Task.sleep(for: .milliseconds(500))
        }
        struct Body: Encodable {}
        struct Link: Decodable { var url: String }
        let link = try await c.call(.POST, "/workloads/\(w.id)/open", body: Body(), as: Link.self)
        printErr("canopy: \(w.id) is ready")
        printOut("url:   \(url)")
        printOut("login: \(link.url)")
    }
}
