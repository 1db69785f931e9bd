import ArgumentParser
import CanopyCore
import CanopyHTTP
import Dispatch
import Foundation

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Run a workload; without -d, stream its output and exit with its exit code.",
        discussion: "Example: canopy run --gpus 1 --memory 8Gi -- python3 train.py --epochs 3")

    @Option(help: "A name for people.") var name: String?
    @Option(help: "CPUs per task: 2, 0.5 or 500m (default 1).") var cpus: String?
    @Option(help: "Memory per task: 512Mi, 8Gi (default 1Gi).") var memory: String?
    @Option(help: "GPUs per task.") var gpus: Int?
    @Option(help: "GPU model, e.g. T4 or H100 (matched within the device name).") var gpuModel: String?
    @Option(help: "Number of tasks; all start together or none does.") var tasks: Int?
    @Option(help: "Queue (default: default).") var queue: String?
    @Option(help: "Priority within the queue; higher first.") var priority: Int?
    @Option(name: .shortAndLong, help: "Environment variable K=V (repeatable).") var env: [String] = []
    @Option(help: "Working directory, inside the task's own directory.") var workdir: String?
    @Option(help: "Longest run time, e.g. 30m or 2h; the workload is stopped after it.") var maxDuration: String?
    @Option(help: "Stage a data-store file or directory in before the command starts: SOURCE:PATH, e.g. /user/me/mnist:data (repeatable).")
    var input: [String] = []
    @Option(help: "Copy a path of task 0's working directory to the data store after it ends: PATH:DESTINATION, e.g. out:/user/me/run1 (repeatable).")
    var output: [String] = []
    @Flag(help: "Let --output replace what is already at its destination.") var overwrite = false
    @Flag(help: "Submit on hold: pending until `canopy release`.") var hold = false
    @Flag(name: .shortAndLong, help: "Detach: print the workload's id and return.") var detach = false
    @Argument(parsing: .captureForPassthrough, help: "The command and its arguments (after --).") var command: [String] = []

    func run() async throws {
        var cmd = command
        if cmd.first == "--" { cmd.removeFirst() }
        guard !cmd.isEmpty else { throw ValidationError("give the command to run after --, e.g. canopy run -- echo hello") }
        var body = CreateWorkloadRequest(command: cmd)
        body.name = name
        body.queue = queue
        body.priority = priority
        body.tasks = tasks
        body.workdir = workdir
        body.hold = hold ? true : nil
        if let maxDuration {
            guard let s = Quantity.parseDuration(maxDuration), s > 0 else { throw ValidationError("--max-duration: \"\(maxDuration)\" is not a duration such as 30m") }
            body.maxDuration = DurationValue(seconds: s)
        }
        if cpus != nil || memory != nil || gpus != nil || gpuModel != nil {
            var r = Resources()
            if let cpus {
                guard let v = Quantity.parseCPU(cpus) else { throw ValidationError("--cpus: \"\(cpus)\" is not a number of CPUs") }
                r.cpuMillis = v
            }
            if let memory {
                guard let v = Quantity.parseMemory(memory) else { throw ValidationError("--memory: \"\(memory)\" is not a size such as 512Mi") }
                r.memoryMiB = v
            }
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
        let request = body
        let detach = self.detach
        try await client { c in
            let w: Workload
            do {
                w = try await c.call(.POST, "/workloads", body: request, as: Workload.self)
            } catch let e as CLIError {
                throw CLIError(e.description, exitCode: 125)
            }
            if detach { return printOut(w.id) }
            let code = try await attach(c, w)
            throw ExitCode(code)
        }
    }

    /// Streams the output until the workload ends; Ctrl-C stops it (twice: detach at once).
    func attach(_ c: CanopyClient, _ w: Workload) async throws -> Int32 {
        signal(SIGINT, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGINT)
        let (interrupts, interrupted) = AsyncStream<Void>.makeStream()
        source.setEventHandler { interrupted.yield() }
        source.resume()
        defer { source.cancel() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await withThrowingTaskGroup(of: Void.self) { logs in
                    for t in 0..<w.spec.tasks {
                        logs.addTask { try await followLogs(c, id: w.id, task: t, follow: true, prefix: w.spec.tasks > 1 ? "[task \(t)] " : nil) }
                    }
                    try await logs.waitForAll()
                }
            }
            group.addTask {
                var count = 0
                for await _ in interrupts {
                    count += 1
                    if count > 1 { Foundation.exit(130) }
                    FileHandle.standardError.write(Data("canopy: stopping \(w.id) (Ctrl-C again to detach)\n".utf8))
                    _ = try? await c.raw(.POST, "/workloads/\(w.id)/stop")
                }
            }
            try await group.next()
            group.cancelAll()
        }
        var final = try await c.call(.GET, "/workloads/\(w.id)", as: Workload.self)
        var waits = 0
        while !final.phase.isTerminal && final.phase != .stopped && waits < 600 {
            try await Task.sleep(for: .milliseconds(50))
            final = try await c.call(.GET, "/workloads/\(w.id)", as: Workload.self)
            waits += 1
        }
        switch final.phase {
        case .succeeded:
            return 0
        default:
            let why = final.reason.map { ": \($0.message)" } ?? ""
            FileHandle.standardError.write(Data("canopy: workload \(final.id) \(final.phase.rawValue)\(why)\n".utf8))
            if let code = final.exitCode, code != 0 { return Int32(truncatingIfNeeded: code) }
            return final.phase == .cancelled ? 130 : 1
        }
    }
}
