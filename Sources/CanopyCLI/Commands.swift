import ArgumentParser
import CanopyCore
import CanopyHTTP
import Foundation

/// `canopy`: the server and its command-line client.
public struct CanopyCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "canopy",
        abstract: "A self-hosted AI compute platform: batch and interactive workloads on CPUs, memory and GPUs.",
        discussion: """
            The client commands reach the server at CANOPY_URL with the token CANOPY_TOKEN; on the server's own machine they \
            find both in its data directory (CANOPY_DATA_DIR, default ./.canopy).
            """,
        version: CanopyVersion.current,
        subcommands: [
            ServeCommand.self, RunCommand.self, PsCommand.self, ShowCommand.self, LogsCommand.self, StopCommand.self, ReleaseCommand.self, RestartCommand.self,
            LeaseCommand.self, RemoveCommand.self, OpenCommand.self, ExecCommand.self, ShellCommand.self, SSHCommand.self, SSHConfigCommand.self,
            SSHKeysCommand.self, JupyterCommand.self, AppsCommand.self,
            NodesCommand.self, QueuesCommand.self, TokensCommand.self, UsersCommand.self, TenantsCommand.self, KeysCommand.self, DataCommand.self,
            ImagesCommand.self,
        ])

    public init() {}

    /// The entry point: parses the command line and runs the async command it names.
    public static func runMain() async {
        do {
            // `canopy run python3 train.py --epochs 3` needs no `--`: it is put before the command's first word here,
            // so the parser reads run's own options strictly and leaves the command's alone.
            var command = try await asyncParseAsRoot(RunArguments.normalizeCommandLine(Array(CommandLine.arguments.dropFirst())))
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}

/// Runs a client action, printing errors to stderr with a non-zero exit.
func client(_ body: (CanopyClient) async throws -> Void) async throws {
    do {
        try await body(CanopyClient.fromEnvironment())
    } catch let e as CLIError {
        FileHandle.standardError.write(Data("canopy: \(e.description)\n".utf8))
        throw ExitCode(e.exitCode)
    }
}

/// Writes a line to standard error (progress, not results).
func printErr(_ s: String) {
    FileHandle.standardError.write(Data((s + "\n").utf8))
}

func printOut(_ s: String) {
    FileHandle.standardOutput.write(Data((s + "\n").utf8))
}

struct OutputOption: ParsableArguments {
    @Option(name: [.customShort("o"), .long], help: "Output format: table or json.")
    var output: String = "table"

    func validate() throws {
        guard OutputFormat(rawValue: output) != nil else { throw ValidationError("--output must be table or json") }
    }

    var json: Bool { output == "json" }
}

struct PsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ps", abstract: "List workloads (unfinished ones unless --all).")

    @Flag(name: .shortAndLong, help: "Include finished workloads.") var all = false
    @Option(help: "Only this queue.") var queue: String?
    @Option(help: "Only these phases (comma-separated, e.g. Pending,Running).") var phase: String?
    @Option(help: "At most this many.") var limit: Int = 100
    @OptionGroup var format: OutputOption

    func run() async throws {
        try await client { c in
            var query = ["limit=\(limit)"]
            if let queue { query.append("queue=\(queue)") }
            if let phase { query.append("phase=\(phase)") } else if !all { query.append("phase=Pending,Starting,Running,Stopping") }
            let page = try await c.call(.GET, "/workloads?" + query.joined(separator: "&"), as: Page<Workload>.self)
            if format.json { return printOut(try Format.json(page.items)) }
            // An admin sees every tenant's workloads, so the table says whose each one is.
            let admin = (try? await c.call(.GET, "/whoami", as: Principal.self))?.role == .admin
            printOut(Format.workloads(page.items, showTenant: admin || Set(page.items.map(\.tenant)).count > 1))
        }
    }
}

struct ShowCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show one workload: phase, reason, queue position, tasks.")

    @Argument(help: "The workload's id.") var id: String
    @OptionGroup var format: OutputOption

    func run() async throws {
        try await client { c in
            let w = try await c.call(.GET, "/workloads/\(id)", as: Workload.self)
            printOut(format.json ? try Format.json(w) : Format.describe(w))
        }
    }
}

struct LogsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "logs", abstract: "Print a task's output (stdout and stderr).")

    @Flag(name: .shortAndLong, help: "Keep printing until the task ends.") var follow = false
    @Option(help: "Which task.") var task: Int = 0
    @Argument(help: "The workload's id.") var id: String

    func run() async throws {
        try await client { c in
            try await followLogs(c, id: id, task: task, follow: follow, prefix: nil)
        }
    }
}

/// Streams a task's stdout to stdout and its stderr to stderr, concurrently.
func followLogs(_ c: CanopyClient, id: String, task: Int, follow: Bool, prefix: String?) async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
        for (stream, handle) in [("stdout", FileHandle.standardOutput), ("stderr", FileHandle.standardError)] {
            group.addTask {
                var pending = Data()
                try await c.stream("/workloads/\(id)/tasks/\(task)/logs?stream=\(stream)&follow=\(follow)") { chunk in
                    let data = Data(chunk.readableBytesView)
                    guard let prefix else { return handle.write(data) }
                    pending.append(data)
                    while let nl = pending.firstIndex(of: 10) {
                        handle.write(Data(prefix.utf8) + pending[pending.startIndex...nl])
                        pending.removeSubrange(pending.startIndex...nl)
                    }
                }
                if let prefix, !pending.isEmpty { handle.write(Data(prefix.utf8) + pending + Data("\n".utf8)) }
            }
        }
        try await group.waitForAll()
    }
}

struct StopCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "stop", abstract: "Stop workloads: SIGTERM, then SIGKILL after the grace period.")

    @Argument(help: "Workload ids.") var ids: [String]

    func run() async throws {
        try await client { c in
            for id in ids {
                let w = try await c.call(.POST, "/workloads/\(id)/stop", as: Workload.self)
                printOut("\(w.id) \(w.phase.rawValue)")
            }
        }
    }
}

struct ReleaseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "release", abstract: "Release held workloads.")

    @Argument(help: "Workload ids.") var ids: [String]

    func run() async throws {
        try await client { c in
            for id in ids {
                let w = try await c.call(.POST, "/workloads/\(id)/release", as: Workload.self)
                printOut("\(w.id) \(w.phase.rawValue)")
            }
        }
    }
}

struct RestartCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restart", abstract: "Start stopped interactive workloads again, their files kept, with a fresh lease.")

    @Argument(help: "Workload ids.") var ids: [String]

    func run() async throws {
        try await client { c in
            for id in ids {
                let w = try await c.call(.POST, "/workloads/\(id)/restart", as: Workload.self)
                printOut("\(w.id) \(w.phase.rawValue)")
            }
        }
    }
}

struct LeaseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lease", abstract: "Extend an interactive workload's lease without a restart: +2h, --until TIME, or unlimited.",
        discussion: "The queue's cap (canopy queues ls) bounds the lease, counted from now.")

    @Argument(help: "The workload.") var id: String
    @Argument(help: "+DURATION (e.g. +2h) to extend from the current end, or unlimited.") var change: String?
    @Option(help: "A new end, as an ISO 8601 time (2026-12-05T18:00:00Z).") var until: String?

    func run() async throws {
        var body = LeaseRequest()
        switch (change, until) {
        case (nil, let until?):
            guard let date = ISO8601DateFormatter().date(from: until) else { throw ValidationError("--until takes a time such as 2026-12-05T18:00:00Z") }
            body.until = date
        case ("unlimited"?, nil):
            body.unlimited = true
        case (let c?, nil) where c.hasPrefix("+"):
            body.extend = DurationValue(seconds: try ResourceArguments.duration(String(c.dropFirst()), option: "lease"))
        default:
            throw ValidationError("give +DURATION (e.g. +2h), unlimited, or --until TIME")
        }
        try await client { c in
            let w = try await c.call(.POST, "/workloads/\(id)/lease", body: body, as: Workload.self)
            printOut(
                "\(w.id) lease ends \(w.leaseExpiresAt.map { Format.timestamp($0) } ?? (w.spec.lease == .unlimited ? "never (unlimited)" : "when it next runs: " + (w.spec.lease?.description ?? "-")))"
            )
        }
    }
}

struct RemoveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm", abstract: "Delete stopped or finished workloads with their files (logs, working directories).")

    @Argument(help: "Workload ids.") var ids: [String]

    func run() async throws {
        try await client { c in
            for id in ids {
                _ = try await c.raw(.DELETE, "/workloads/\(id)")
                printOut(id)
            }
        }
    }
}

struct OpenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "open", abstract: "Print a one-time login link to a task's HTTP port, for a browser.",
        discussion: """
            The link works once, within two minutes: it sets a cookie for this workload on Canopy's proxy, so the \
            browser needs no token. Scripts can instead send Authorization: Bearer TOKEN to the port's access URL \
            (canopy show).
            """)

    @Argument(help: "The workload.") var id: String
    @Option(help: "The task (default 0).") var task: Int?
    @Option(help: "The HTTP port (default: the workload's first).") var port: Int?

    func run() async throws {
        struct Body: Encodable {
            var task: Int?
            var port: Int?
        }
        struct Link: Decodable {
            var url: String
        }
        try await client { c in
            let link = try await c.call(.POST, "/workloads/\(id)/open", body: Body(task: task, port: port), as: Link.self)
            printOut(link.url)
        }
    }
}

struct ShellCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shell", abstract: "Start an instance that waits for you to exec into it.",
        usage: "canopy shell [<canopy run options>]",
        discussion: """
            canopy shell takes canopy run's options (--image, --gpus, --memory, --lease, --queue, ...) and starts an \
            interactive workload that runs nothing until it is stopped. It prints the workload's id, waits until it \
            runs, and says how to get in: canopy exec -it ID -- bash (or sh). Files under its working directory stay \
            across canopy stop and canopy restart.
            """)

    func run() async throws {
        throw CLIError("canopy shell takes canopy run's options, e.g. canopy shell --gpus 1 --image pytorch:2")
    }
}

struct JupyterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "jupyter", abstract: "Start JupyterLab as an interactive workload and print where to open it.",
        usage: "canopy jupyter [<canopy run options>]",
        discussion: """
            canopy jupyter takes canopy run's options (--image, --gpus, --memory, --lease, --env, ...) and is \
            canopy run --app jupyter: JupyterLab with its base URL on Canopy's proxy and its own token known only to \
            Canopy. It prints the workload's id, waits until JupyterLab answers, then prints its access URL and a \
            one-time login link for a browser. Without --image, jupyter must be on the task's PATH (--env PATH=...).
            """)

    func run() async throws {
        throw CLIError("canopy jupyter takes canopy run's options, e.g. canopy jupyter --gpus 1 --image pytorch:2")
    }
}

struct AppsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "apps", abstract: "The apps workloads may run by name (canopy run --app NAME).")

    @OptionGroup var format: OutputOption

    func run() async throws {
        try await client { c in
            let page = try await c.call(.GET, "/apps", as: Page<AppDefinition>.self)
            if format.json { return printOut(try Format.json(page.items)) }
            printOut(
                Format.table(
                    ["NAME", "PORT", "IMAGE", "DESCRIPTION"], page.items.map { [$0.name, String($0.port), $0.image ?? "-", $0.description] }))
        }
    }
}

struct NodesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "nodes", abstract: "Nodes with their capacity and what is free.")

    @OptionGroup var format: OutputOption

    func run() async throws {
        try await client { c in
            let page = try await c.call(.GET, "/nodes", as: Page<NodeView>.self)
            if format.json { return printOut(try Format.json(page.items)) }
            printOut(
                Format.table(
                    ["NAME", "POOL", "STATE", "CPU (FREE/TOTAL)", "MEMORY (FREE/TOTAL)", "GPUS (FREE/TOTAL)", "TASKS", "GPU MODELS"],
                    page.items.map { v in
                        let n = v.node
                        let models = Dictionary(grouping: n.gpus, by: \.model).map { "\($0.value.count)x \($0.key)" }.sorted().joined(separator: ", ")
                        return [
                            n.name, n.pool, n.state.rawValue,
                            "\(Quantity.formatCPU(n.cpuMillis - v.allocatedCPUMillis))/\(Quantity.formatCPU(n.cpuMillis))",
                            "\(Quantity.formatMemory(n.memoryMiB - v.allocatedMemoryMiB))/\(Quantity.formatMemory(n.memoryMiB))",
                            "\(n.gpus.count - v.allocatedGPUs.count)/\(n.gpus.count)", String(v.tasks), models.isEmpty ? "-" : "\(models) (\(n.gpuSource))",
                        ]
                    }))
        }
    }
}
