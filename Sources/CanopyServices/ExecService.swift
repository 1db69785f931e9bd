import CanopyCore
import Foundation
import Synchronization

/// Commands run inside running tasks (`canopy exec`): who may, in which task, with what. Only a workload's owner
/// (or an admin) execs into it, as with opening its ports: a colleague's workload is refused (403), another
/// tenant's is a missing one (404). Starting an exec and typing into it count as the workload's activity.
public final class ExecService: Sendable {
    /// The most arguments, and bytes in all, a command may have.
    public static let maxArguments = 4096
    public static let maxCommandBytes = 128 << 10

    /// The most exec and SSH sessions one user may have at once (each holds threads and descriptors).
    public static let maxSessionsPerUser = 64

    private let active = Mutex<[String: Int]>([:])
    private let workloads: WorkloadService
    private let runtimes: Runtimes
    private let activity: @Sendable (String) -> Void

    /// Creates the service; `activity` is told the workload's id on each start and on input.
    public init(workloads: WorkloadService, runtimes: Runtimes, activity: @escaping @Sendable (String) -> Void = { _ in }) {
        self.workloads = workloads
        self.runtimes = runtimes
        self.activity = activity
    }

    /// Checks a command from outside: present, not too long, no NUL (which no argument can hold).
    public static func validate(_ command: [String]) throws {
        guard !command.isEmpty, !command[0].isEmpty else {
            throw CanopyError.invalid("command", "give the command to run (canopy exec ID -- COMMAND)")
        }
        guard command.count <= maxArguments, command.reduce(0, { $0 + $1.utf8.count + 1 }) <= maxCommandBytes else {
            throw CanopyError.invalid("command", "the command is longer than \(maxArguments) arguments or \(maxCommandBytes) bytes")
        }
        guard !command.contains(where: { $0.utf8.contains(0) }) else {
            throw CanopyError.invalid("command", "an argument holds a NUL byte")
        }
    }

    /// What an exec will run in, once the caller may: the task's runtime and handle. Throws what the caller
    /// should be told (404, 403, 409 for a task that does not run, 400 for a runtime that cannot exec).
    public func authorize(_ principal: Principal, workloadID: String, task: Int, command: [String]) async throws -> Workload {
        try Self.validate(command)
        let w = try await workloads.getForChange(workloadID, as: principal, to: "exec into")
        guard w.tasks.indices.contains(task) else {
            throw CanopyError(.notFound, "workload \(w.id) has no task \(task) (it has \(w.tasks.count))", field: "task")
        }
        let t = w.tasks[task]
        guard t.phase == .running, t.backendID != nil else {
            throw CanopyError(.conflict, "task \(task) of workload \(w.id) is not running (it is \(t.phase.rawValue))")
        }
        guard runtimes.runtime(runtimes.kind(of: t, spec: w.spec)) is any TaskExecRunner else {
            throw CanopyError(.conflict, "tasks of the \(runtimes.kind(of: t, spec: w.spec)) runtime cannot be exec'd into yet")
        }
        return w
    }

    /// Starts `request` in task `task` of the workload, checked as `authorize` does.
    public func start(_ principal: Principal, workloadID: String, task: Int, request: ExecRequest) async throws -> any ExecSession {
        let w = try await authorize(principal, workloadID: workloadID, task: task, command: request.command)
        let t = w.tasks[task]
        guard let runner = runtimes.runtime(runtimes.kind(of: t, spec: w.spec)) as? any TaskExecRunner, let handle = t.backendID else {
            throw CanopyError(.conflict, "task \(task) of workload \(w.id) cannot be exec'd into")
        }
        var request = request
        request.workdir = w.spec.workdir
        let who = "\(principal.tenant)/\(principal.user)"
        let admitted = active.withLock { counts -> Bool in
            guard counts[who, default: 0] < Self.maxSessionsPerUser else { return false }
            counts[who, default: 0] += 1
            return true
        }
        guard admitted else {
            throw CanopyError(.quotaExceeded, "you have \(Self.maxSessionsPerUser) exec and SSH sessions open; close one first")
        }
        do {
            let session = try await runner.exec(workloadID: w.id, taskIndex: task, handle: handle, request: request)
            activity(w.id)
            return CountedSession(session) { [self] in
                active.withLock { counts in
                    counts[who, default: 1] -= 1
                    if counts[who] == 0 { counts[who] = nil }
                }
            }
        } catch {
            active.withLock { $0[who, default: 1] -= 1 }
            throw error
        }
    }

    /// Whether the principal may enter the workload at all (its owner or an admin): for the SSH server's login,
    /// before any task is chosen. Throws as `authorize` does.
    public func mayEnter(_ principal: Principal, workloadID: String) async throws -> Workload {
        try await workloads.getForChange(workloadID, as: principal, to: "enter")
    }

    /// A connected socket to `port` of a running task (SSH port forwarding), checked as `authorize` is; only a
    /// listener of the task itself is connected to (see `TaskPortConnector`). The caller owns the descriptor.
    public func connect(_ principal: Principal, workloadID: String, task: Int, port: Int) async throws -> Int32 {
        guard (1...65535).contains(port) else { throw CanopyError.invalid("port", "port must be from 1 to 65535") }
        let w = try await workloads.getForChange(workloadID, as: principal, to: "forward a port of")
        guard w.tasks.indices.contains(task) else { throw CanopyError(.notFound, "workload \(w.id) has no task \(task)", field: "task") }
        let t = w.tasks[task]
        guard t.phase == .running, let handle = t.backendID else {
            throw CanopyError(.conflict, "task \(task) of workload \(w.id) is not running (it is \(t.phase.rawValue))")
        }
        guard let connector = runtimes.runtime(runtimes.kind(of: t, spec: w.spec)) as? any TaskPortConnector else {
            throw CanopyError(.conflict, "ports of the \(runtimes.kind(of: t, spec: w.spec)) runtime cannot be forwarded yet")
        }
        let fd = try await connector.connect(workloadID: w.id, taskIndex: task, handle: handle, port: port)
        activity(w.id)
        return fd
    }

    /// The client typed into an exec of workload `id`.
    public func noteInput(workloadID: String) {
        activity(workloadID)
    }
}

/// A session that gives its place back when it is let go.
final class CountedSession: ExecSession, Sendable {
    let inner: any ExecSession
    let release: @Sendable () -> Void

    init(_ inner: any ExecSession, release: @escaping @Sendable () -> Void) {
        self.inner = inner
        self.release = release
    }

    deinit { release() }

    var output: AsyncStream<ExecOutput> { inner.output }
    func write(_ bytes: [UInt8]) async { await inner.write(bytes) }
    func closeInput() async { await inner.closeInput() }
    func resize(rows: Int, columns: Int) async { await inner.resize(rows: rows, columns: columns) }
    func exitCode() async -> Int? { await inner.exitCode() }
    func terminate() async { await inner.terminate() }
}
