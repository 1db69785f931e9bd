import Foundation

/// Batch workloads run to completion; interactive ones (notebooks, shells) can be stopped and restarted.
public enum WorkloadKind: String, Sendable, Codable {
    case batch, interactive
}

/// What a user asked for. Everything but `command` has a default.
public struct WorkloadSpec: Sendable, Hashable, Codable {
    /// A name for people; need not be unique.
    public var name: String
    /// Batch or interactive.
    public var kind: WorkloadKind
    /// The queue it waits in.
    public var queue: String
    /// Priority within its queue: higher first.
    public var priority: Int
    /// The image its tasks run from, as named in the image catalog; nil runs them as processes on the host.
    public var image: String?
    /// The program and its arguments, run without a shell.
    public var command: [String]
    /// Extra environment variables.
    public var env: [String: String]
    /// The working directory, resolved inside the task's own directory.
    public var workdir: String?
    /// What each task asks for.
    public var resources: Resources
    /// How many tasks: all start together or none does.
    public var tasks: Int
    /// The longest it may run, in seconds.
    public var maxDurationSeconds: Int?
    /// Submitted on hold: pending until released.
    public var hold: Bool
    /// Ports each task serves: HTTP ones get an access URL on the proxy, TCP ones are reached by forwarding.
    public var ports: [PortSpec]
    /// Free-form labels.
    public var labels: [String: String]
    /// Files staged in from the data store before it starts and out after it ends.
    public var data: DataStaging?
    /// Paths mounted into each task's container.
    public var mounts: [Mount]
    /// How long an interactive workload may run from each start (its lease); nil for batch workloads. Filled in
    /// at submit from the queue's default when the request names none.
    public var lease: Lease?
    /// The application it runs (`AppDefinition`), by name; nil for a plain command.
    public var app: String?
    /// Interactive workloads in a queue with an idle timeout: a command run in task 0 (as `canopy exec` would) at
    /// each idle sample; exit status 0 counts as activity. Nil for none.
    public var idleProbe: [String]? = nil

    /// Creates a spec.
    /// A command that only waits until it is stopped (in any image with a POSIX shell and sleep): what an
    /// instance runs that is there to be entered by exec or SSH.
    public static let waitForever = ["sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"]

    public init(
        name: String = "", kind: WorkloadKind = .batch, queue: String = "default", priority: Int = 0, image: String? = nil,
        command: [String], env: [String: String] = [:], workdir: String? = nil, resources: Resources = Resources(),
        tasks: Int = 1, maxDurationSeconds: Int? = nil, hold: Bool = false, ports: [PortSpec] = [], labels: [String: String] = [:],
        data: DataStaging? = nil, mounts: [Mount] = [], lease: Lease? = nil, app: String? = nil
    ) {
        self.name = name
        self.kind = kind
        self.queue = queue
        self.priority = priority
        self.image = image
        self.command = command
        self.env = env
        self.workdir = workdir
        self.resources = resources
        self.tasks = tasks
        self.maxDurationSeconds = maxDurationSeconds
        self.hold = hold
        self.ports = ports
        self.labels = labels
        self.data = data
        self.mounts = mounts
        self.lease = lease
        self.app = app
    }

    private enum CodingKeys: String, CodingKey {
        case name, kind, queue, priority, image, command, env, workdir, resources, tasks, maxDurationSeconds, hold, ports, labels, data, mounts, lease, app
        case idleProbe
    }

    /// Decodes a stored spec; fields added in later versions default when a record written before them lacks them.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        kind = try c.decode(WorkloadKind.self, forKey: .kind)
        queue = try c.decode(String.self, forKey: .queue)
        priority = try c.decode(Int.self, forKey: .priority)
        image = try c.decodeIfPresent(String.self, forKey: .image)
        command = try c.decode([String].self, forKey: .command)
        env = try c.decode([String: String].self, forKey: .env)
        workdir = try c.decodeIfPresent(String.self, forKey: .workdir)
        resources = try c.decode(Resources.self, forKey: .resources)
        tasks = try c.decode(Int.self, forKey: .tasks)
        maxDurationSeconds = try c.decodeIfPresent(Int.self, forKey: .maxDurationSeconds)
        hold = try c.decode(Bool.self, forKey: .hold)
        ports = try c.decode([PortSpec].self, forKey: .ports)
        labels = try c.decode([String: String].self, forKey: .labels)
        data = try c.decodeIfPresent(DataStaging.self, forKey: .data)
        mounts = try c.decodeIfPresent([Mount].self, forKey: .mounts) ?? []
        lease = try c.decodeIfPresent(Lease.self, forKey: .lease)
        app = try c.decodeIfPresent(String.self, forKey: .app)
        idleProbe = try c.decodeIfPresent([String].self, forKey: .idleProbe)
    }

    /// All tasks' demand together.
    public var totalResources: Resources { resources.times(tasks) }

    /// Whether `name` is an acceptable environment variable name: a POSIX name (letters, digits and _, not starting
    /// with a digit), at most 256 bytes. Runtimes may write names into shell scripts; nothing else is safe there.
    public static func isValidEnvName(_ name: String) -> Bool {
        guard (1...256).contains(name.utf8.count), let first = name.utf8.first, !(first >= 48 && first <= 57) else { return false }
        return name.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || $0 == 95 }
    }
}

/// How a declared port is reached.
public enum PortProtocol: String, Sendable, Hashable, Codable, CaseIterable {
    /// HTTP and WebSocket, through the authenticating proxy, with an access URL.
    case http
    /// Plain TCP: reached by port forwarding (no URL).
    case tcp
}

/// A port a workload's tasks serve. Decodes from `8888` (HTTP) as well as `{"port": 8888, "protocol": "http"}`.
public struct PortSpec: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The port the task listens on (on loopback or any address, in its own network).
    public var port: Int
    /// How it is reached.
    public var `protocol`: PortProtocol

    /// Creates a port.
    public init(_ port: Int, _ proto: PortProtocol = .http) {
        self.port = port
        self.protocol = proto
    }

    private enum CodingKeys: String, CodingKey { case port, `protocol` }

    /// Decodes a bare number or an object.
    public init(from decoder: any Decoder) throws {
        if let single = try? decoder.singleValueContainer(), let n = try? single.decode(Int.self) {
            self.init(n)
            return
        }
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(try c.decode(Int.self, forKey: .port), try c.decodeIfPresent(PortProtocol.self, forKey: .protocol) ?? .http)
    }

    /// `8888/http`.
    public var description: String { "\(port)/\(`protocol`.rawValue)" }

    /// Parses `8888`, `8888/http` or `22/tcp`; nil when it is neither.
    public static func parse(_ text: String) -> PortSpec? {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), let n = Int(parts[0]), (1...65535).contains(n) else { return nil }
        if parts.count == 1 { return PortSpec(n) }
        guard let proto = PortProtocol(rawValue: String(parts[1]).lowercased()) else { return nil }
        return PortSpec(n, proto)
    }
}

/// A declared port of a task as the API shows it: HTTP ones carry their access URL on the proxy while the task
/// runs. Filled in when a workload is shown, never stored.
public struct TaskEndpoint: Sendable, Hashable, Codable {
    /// The port the task listens on.
    public var port: Int
    /// How it is reached.
    public var `protocol`: PortProtocol
    /// The access URL (HTTP ports of running tasks, where the server has a proxy).
    public var url: String?

    /// Creates an endpoint.
    public init(port: Int, protocol proto: PortProtocol, url: String? = nil) {
        self.port = port
        self.protocol = proto
        self.url = url
    }
}

/// A path mounted into a task's container.
public struct Mount: Sendable, Hashable, Codable {
    /// `data:/PATH` for a path of the caller's own data store, or `host:/PATH` for a host path an admin allowed.
    public var source: String
    /// Where the task sees it: an absolute path in the container.
    public var target: String
    /// Whether the task may only read it.
    public var readOnly: Bool

    /// Creates a mount.
    public init(source: String, target: String, readOnly: Bool = false) {
        self.source = source
        self.target = target
        self.readOnly = readOnly
    }
}

/// One task of a workload, as it runs.
public struct TaskStatus: Sendable, Hashable, Codable {
    /// 0-based index.
    public var index: Int
    /// Its phase.
    public var phase: Phase
    /// The node it was placed on.
    public var node: String?
    /// GPU indices it holds exclusively on that node.
    public var gpus: [Int]
    /// The backend's handle: a pid for the process runtime, a container or Slurm job id elsewhere.
    public var backendID: String?
    /// The runtime that owns `backendID` (nil in records written before runtimes were recorded: the process runtime,
    /// or the scheduling backend).
    public var runtime: RuntimeKind?
    /// Where it serves its declared ports, while it runs.
    public var endpoints: [TaskEndpoint]?
    /// Exit code, once it ended (128+N when killed by signal N).
    public var exitCode: Int?
    /// Why it ended, when it did not simply succeed.
    public var reason: Reason?
    /// When its process started.
    public var startedAt: Date?
    /// When it ended.
    public var finishedAt: Date?

    /// A task not yet placed.
    public init(index: Int) {
        self.index = index
        self.phase = .pending
        self.gpus = []
    }

    /// Moves to a phase if the task phase machine allows it (`Phase.taskSuccessors`); returns whether it moved.
    @discardableResult
    public mutating func move(to next: Phase) -> Bool {
        guard phase != next, phase.taskCanMove(to: next) else { return false }
        phase = next
        return true
    }
}

/// A workload: spec, identity and status in one record, seen by every dialect through its own mapping.
public struct Workload: Sendable, Hashable, Codable, Identifiable {
    /// Base62 identifier.
    public var id: String
    /// The tenant that owns it.
    public var tenant: String
    /// The user that submitted it.
    public var owner: String
    /// Monotonic submission sequence, the FIFO order and the pagination cursor.
    public var seq: Int64
    /// What was asked for.
    public var spec: WorkloadSpec
    /// Its phase.
    public var phase: Phase
    /// Why, whenever the phase does not explain itself.
    public var reason: Reason?
    /// 1-based position in its queue while pending.
    public var queuePosition: Int?
    /// Conditions that hold now besides the phase, such as an unreachable backend (derived, never stored).
    public var conditions: [Reason]?
    /// The workload's exit code: the first non-zero task exit code, or 0.
    public var exitCode: Int?
    /// When it was submitted.
    public var createdAt: Date
    /// When its first task started.
    public var startedAt: Date?
    /// When it ended.
    public var finishedAt: Date?
    /// Set once a stop was asked for.
    public var stopRequestedAt: Date?
    /// Its tasks.
    public var tasks: [TaskStatus]
    /// Bumped on every change, so a slow write never overwrites a newer state.
    public var version: Int
    /// The engine's reference of `spec.image`, resolved in the image catalog when it was submitted.
    public var imageReference: String?
    /// When an interactive workload's lease ends (set when it starts, moved by extensions); nil while it does not
    /// run, or when its lease is unlimited.
    public var leaseExpiresAt: Date?
    /// Whether the warning that the lease ends soon was given for the current `leaseExpiresAt`.
    public var leaseWarned: Bool?
    /// How many times it was restarted.
    public var restarts: Int?
    /// An interactive workload's last sign of use (proxy traffic, CPU or GPU use, a busy kernel, its start), and
    /// what showed it; idle stops count from it.
    public var lastActivityAt: Date?
    public var lastActivitySource: String?
    /// Whether the warning that it is about to be stopped for idleness was given since its last activity.
    public var idleWarned: Bool?
    /// What dialects say of it that Canopy has no field for, by dialect name: kept with the record,
    /// filtered on in the store, never shown by the native API (it is not the user's spec, and not their labels).
    public var extensions: [String: [String: String]]?

    /// A new pending workload.
    public init(id: String, tenant: String, owner: String, seq: Int64 = 0, spec: WorkloadSpec, createdAt: Date) {
        self.id = id
        self.tenant = tenant
        self.owner = owner
        self.seq = seq
        self.spec = spec
        self.phase = .pending
        self.createdAt = createdAt
        self.tasks = (0..<spec.tasks).map(TaskStatus.init(index:))
        self.version = 0
        if spec.hold { self.reason = Reason(.held, "held until released (canopy release ID)") }
    }

    /// Moves to a phase if the state machine allows it; returns whether it moved.
    @discardableResult
    public mutating func move(to next: Phase, reason: Reason? = nil, at time: Date) -> Bool {
        guard phase != next, phase.canMove(to: next) else { return false }
        phase = next
        self.reason = reason
        if next != .pending { queuePosition = nil }
        if next == .running, startedAt == nil { startedAt = time }
        if next.isTerminal || next == .stopped { finishedAt = time }
        return true
    }
}

/// An interactive workload's lease: a duration from each start, or unlimited (where the queue's cap allows).
public enum Lease: Sendable, Hashable, Codable {
    case seconds(Int)
    case unlimited

    /// The longest lease given as a duration, ten years (longer is `unlimited`): dates and limits computed from a
    /// lease must not overflow.
    public static let maxSeconds = 10 * 366 * 86400

    /// How the API and the CLI spell it: "unlimited", or a duration ("2h", "90m") or a number of seconds.
    public static func parse(_ text: String) -> Lease? {
        if text == "unlimited" { return .unlimited }
        if let n = Int(text) { return n > 0 ? .seconds(n) : nil }
        return Quantity.parseDuration(text).flatMap { $0 > 0 ? .seconds($0) : nil }
    }

    /// "unlimited" or a duration such as "2h".
    public var description: String {
        switch self {
        case .seconds(let s): Quantity.formatDuration(s)
        case .unlimited: "unlimited"
        }
    }

    /// Seconds, nil when unlimited.
    public var seconds: Int? {
        if case .seconds(let s) = self { return s }
        return nil
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let n = try? c.decode(Int.self), n > 0 {
            self = .seconds(n)
        } else if let s = try? c.decode(String.self), let lease = Lease.parse(s) {
            self = lease
        } else {
            throw DecodingError.dataCorruptedError(
                in: c, debugDescription: "a lease is a duration such as \"2h\" or \"90m\", a number of seconds, or \"unlimited\"")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .seconds(let s): try c.encode(s)
        case .unlimited: try c.encode("unlimited")
        }
    }
}
