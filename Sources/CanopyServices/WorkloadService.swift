import CanopyCore
import Foundation

/// Submission and the commands on workloads, for every API: validates against the domain's rules, scopes by tenant.
public struct WorkloadService: Sendable {
    let store: any Store
    let controller: WorkloadController
    /// The runtimes, for the files of each task's runtime (logs).
    let runtimes: Runtimes
    let ids: IDGenerator
    let clock: Clock
    // Images and mounts (WorkloadService+Containers.swift).
    let images: ImageService?
    public let imagePolicy: ImagePolicy
    public let hostMountAllowList: [String]
    let dataStore: (any DataStore)?
    /// Why a workload with an image is refused under the `refuse` policy (the server has no engine, or its backend
    /// runs no containers).
    let imageRefusal: String
    /// The apps workloads may run by name.
    let apps: AppService?

    /// Creates the service. Images: `images` is the catalog workloads' images resolve in, `imagePolicy` what a
    /// workload with an image gets (`.engine` needs a catalog with an engine, else it is refused), and
    /// `hostMountAllowList` the host paths `host:` mounts may name (below them, compared component by component);
    /// `dataStore` is where `data:` mounts must exist.
    public init(
        store: any Store, controller: WorkloadController, runtimes: Runtimes, ids: IDGenerator = .random, clock: Clock = .system,
        images: ImageService? = nil, imagePolicy: ImagePolicy = .refuse, hostMountAllowList: [String] = [], dataStore: (any DataStore)? = nil,
        imageRefusal: String = ImagePolicy.noEngineMessage, apps: AppService? = nil
    ) {
        self.apps = apps
        self.store = store
        self.controller = controller
        self.runtimes = runtimes
        self.ids = ids
        self.clock = clock
        self.images = images
        self.imagePolicy = imagePolicy
        self.hostMountAllowList = hostMountAllowList
        self.dataStore = dataStore
        self.imageRefusal = imageRefusal
    }

    /// Limits a request must respect.
    public enum Limits {
        public static let maxTasks = 1024
        public static let maxPriority = 1_000_000
        public static let maxNameLength = 253
        public static let maxArgs = 4096
        public static let maxArgLength = 131_072
        public static let maxEnv = 1024
        public static let maxDurationSeconds = 366 * 86400
    }

    /// Checks a spec; throws an invalid-argument error naming the first offending field.
    public func validate(_ spec: WorkloadSpec) async throws {
        if spec.command.isEmpty || spec.command[0].isEmpty {
            throw CanopyError.invalid("command", "command must name a program to run, e.g. [\"python3\", \"train.py\"]")
        }
        if spec.command.count > Limits.maxArgs { throw CanopyError.invalid("command", "at most \(Limits.maxArgs) arguments") }
        for (i, arg) in spec.command.enumerated() {
            if arg.utf8.count > Limits.maxArgLength { throw CanopyError.invalid("command[\(i)]", "argument longer than \(Limits.maxArgLength) bytes") }
            if arg.utf8.contains(0) { throw CanopyError.invalid("command[\(i)]", "arguments cannot contain NUL bytes") }
        }
        if let probe = spec.idleProbe {
            guard spec.kind == .interactive else { throw CanopyError.invalid("idleProbe", "idleProbe is for interactive workloads") }
            guard !probe.isEmpty, !probe[0].isEmpty else {
                throw CanopyError.invalid("idleProbe", "idleProbe must name a program, e.g. [\"pgrep\", \"-f\", \"train.py\"]")
            }
            guard probe.count <= 64, probe.allSatisfy({ $0.unicodeScalars.count <= 1024 }) else {
                throw CanopyError.invalid("idleProbe", "idleProbe has more than 64 arguments, or one longer than 1024 characters")
            }
            if probe.contains(where: { $0.utf8.contains(0) }) { throw CanopyError.invalid("idleProbe", "arguments cannot contain NUL bytes") }
        }
        if spec.name.utf8.count > Limits.maxNameLength { throw CanopyError.invalid("name", "name longer than \(Limits.maxNameLength) characters") }
        // No abs(): it traps on Int.min, a value any caller can send.
        if !(-Limits.maxPriority...Limits.maxPriority).contains(spec.priority) {
            throw CanopyError.invalid("priority", "priority must be between -\(Limits.maxPriority) and \(Limits.maxPriority)")
        }
        if !(1...Limits.maxTasks).contains(spec.tasks) { throw CanopyError.invalid("tasks", "tasks must be between 1 and \(Limits.maxTasks)") }
        let r = spec.resources
        if r.cpuMillis <= 0 { throw CanopyError.invalid("resources.cpu", "cpu must be more than 0") }
        if r.memoryMiB <= 0 { throw CanopyError.invalid("resources.memory", "memory must be at least 1Mi") }
        if !(0...1024).contains(r.gpus) { throw CanopyError.invalid("resources.gpus", "gpus must be between 0 and 1024") }
        if let m = r.gpuModel, m.utf8.count > 128 { throw CanopyError.invalid("resources.gpuModel", "gpuModel longer than 128 characters") }
        if r.gpuModel != nil && r.gpus == 0 { throw CanopyError.invalid("resources.gpuModel", "gpuModel needs gpus of at least 1") }
        if let d = spec.maxDurationSeconds, !(1...Limits.maxDurationSeconds).contains(d) {
            throw CanopyError.invalid("maxDuration", "maxDuration must be between 1s and 366d")
        }
        if spec.env.count > Limits.maxEnv { throw CanopyError.invalid("env", "at most \(Limits.maxEnv) variables") }
        for (k, v) in spec.env {
            if !WorkloadSpec.isValidEnvName(k) {
                throw CanopyError.invalid("env.\(k)", "\"\(k)\" is not a valid environment variable name (letters, digits and _, not starting with a digit)")
            }
            if v.utf8.contains(0) { throw CanopyError.invalid("env.\(k)", "values cannot contain NUL bytes") }
        }
        if let wd = spec.workdir, wd.utf8.count > 4096 || wd.utf8.contains(0) { throw CanopyError.invalid("workdir", "workdir is not a valid path") }
        // Resolved inside the task's own directory (its /workspace in a container): one that would leave it is
        // refused now, not when the task is launched.
        if let wd = spec.workdir, !wd.isEmpty, TaskPath.segments(wd) == nil {
            throw CanopyError.invalid("workdir", "workdir \"\(wd)\" leaves the task's working directory (no ..)")
        }
        if spec.ports.count > 32 { throw CanopyError.invalid("ports", "at most 32 ports") }
        var seenPorts = Set<Int>()
        for (i, p) in spec.ports.enumerated() {
            guard (1...65535).contains(p.port) else { throw CanopyError.invalid("ports[\(i)]", "ports must be between 1 and 65535") }
            guard seenPorts.insert(p.port).inserted else { throw CanopyError.invalid("ports[\(i)]", "port \(p.port) is declared twice") }
        }
        if let data = spec.data {
            if data.inputs.count > 64 { throw CanopyError.invalid("data.inputs", "at most 64 inputs") }
            if data.outputs.count > 64 { throw CanopyError.invalid("data.outputs", "at most 64 outputs") }
            for (i, input) in data.inputs.enumerated() {
                _ = try DataService.path(input.source, field: "data.inputs[\(i)].source")
                try Self.checkTaskPath(input.path, field: "data.inputs[\(i)].path")
            }
            for (i, output) in data.outputs.enumerated() {
                let d = try DataService.path(output.destination, field: "data.outputs[\(i)].destination")
                if d == "/" { throw CanopyError.invalid("data.outputs[\(i)].destination", "an output needs a destination below /") }
                try Self.checkTaskPath(output.path, field: "data.outputs[\(i)].path")
            }
        }
        guard let queue = await controller.queue(named: spec.queue) else {
            let names = await controller.allQueues().map(\.name).joined(separator: ", ")
            throw CanopyError.invalid("queue", "no queue named \"\(spec.queue)\"; queues: \(names)")
        }
        try await checkFeasible(spec, queue: queue)
    }

    /// A path inside a task's directory: not empty, not the directory itself, never above it.
    static func checkTaskPath(_ path: String, field: String) throws {
        guard let segments = TaskPath.segments(path) else { throw CanopyError.invalid(field, "\"\(path)\" leaves the task's directory") }
        if segments.isEmpty || path.utf8.contains(0) || path.utf8.count > 4096 {
            throw CanopyError.invalid(field, "\"\(path)\" must name a file or directory inside the task's directory")
        }
        // Refused now, not when the task has run and its outputs cannot be staged.
        if let long = segments.first(where: { $0.utf8.count > DataPath.maxSegmentBytes }) {
            throw CanopyError.invalid(field, "\"\(long.prefix(40))...\" is longer than \(DataPath.maxSegmentBytes) bytes, the most a file name can be")
        }
    }

    /// Rejects a request no node could ever satisfy, rather than leaving it pending forever.
    func checkFeasible(_ spec: WorkloadSpec, queue: Queue) async throws {
        let all = await controller.currentNodes()
        // A backend that cannot be reached and has not yet said what it has: accept and queue, judge nothing.
        if all.isEmpty, await controller.backendIsUnreachable() { return }
        let nodes = all.filter { $0.state != .down && (queue.pool == nil || $0.pool == queue.pool) }
        let r = spec.resources
        if !nodes.contains(where: { $0.couldEverFit(r) }) {
            let model = r.gpuModel.map { " \($0)" } ?? ""
            if r.gpus > 0 && !nodes.contains(where: { $0.gpuCount(model: r.gpuModel) >= r.gpus }) {
                let most = nodes.map { $0.gpuCount(model: r.gpuModel) }.max() ?? 0
                throw CanopyError(
                    .unschedulable, "no node has \(r.gpus)\(model) GPU\(r.gpus == 1 ? "" : "s") (the most on one node is \(most))",
                    field: r.gpuModel != nil && most == 0 ? "resources.gpuModel" : "resources.gpus")
            }
            if !nodes.contains(where: { $0.cpuMillis >= r.cpuMillis }) {
                let most = nodes.map(\.cpuMillis).max() ?? 0
                throw CanopyError(
                    .unschedulable, "no node has \(Quantity.formatCPU(r.cpuMillis)) CPUs (the most on one node is \(Quantity.formatCPU(most)))",
                    field: "resources.cpu")
            }
            let most = nodes.map(\.memoryMiB).max() ?? 0
            throw CanopyError(
                .unschedulable, "no node has \(Quantity.formatMemory(r.memoryMiB)) of memory (the most on one node is \(Quantity.formatMemory(most)))",
                field: "resources.memory")
        }
        // A node in several pools is listed once per pool; its capacity counts once.
        let capacity = Dictionary(
            nodes.filter { $0.state == .ready }.map { ($0.name, SchedulingPass.Free(cpuMillis: $0.cpuMillis, memoryMiB: $0.memoryMiB, gpus: $0.gpus)) },
            uniquingKeysWith: { first, _ in first })
        if SchedulingPass.place(spec, in: capacity) == nil {
            throw CanopyError(.unschedulable, "the \(spec.tasks) tasks together need more than all nodes have, even when idle", field: "tasks")
        }
    }

    /// The lease an interactive workload gets in its queue: the one asked for (refused beyond the queue's cap), else
    /// the queue's default (capped). Batch workloads have none (`maxDuration` bounds them).
    func resolveLease(_ spec: WorkloadSpec) async throws -> Lease? {
        guard spec.kind == .interactive else {
            if spec.lease != nil { throw CanopyError.invalid("lease", "only interactive workloads have a lease; a batch workload has maxDuration") }
            return nil
        }
        guard let queue = await controller.queue(named: spec.queue) else { return spec.lease }
        if let requested = spec.lease {
            try Self.check(requested, cap: queue.maxLeaseSeconds, queue: queue.name, field: "lease")
            if let s = requested.seconds, s < 60 { throw CanopyError.invalid("lease", "a lease is at least 1m") }
            if let s = requested.seconds, s > Lease.maxSeconds { throw CanopyError.invalid("lease", Self.leaseTooLong) }
        }
        return queue.lease(for: spec.lease)
    }

    static let leaseTooLong = "a lease may reach at most 10 years from now; ask for unlimited where the queue allows it"

    /// Refuses a lease beyond the queue's cap (unlimited included, where there is a cap).
    static func check(_ lease: Lease, cap: Int?, queue: String, field: String) throws {
        guard let cap else { return }
        guard let s = lease.seconds, s <= cap else {
            throw CanopyError.invalid(
                field, "queue \(queue) allows leases of at most \(Quantity.formatDuration(cap)) from now; ask for that or less (unlimited is not allowed there)"
            )
        }
    }

    /// Restarts a stopped interactive workload (its owner or an admin).
    public func restart(_ id: String, as principal: Principal) async throws -> Workload {
        let w = try await getForChange(id, as: principal, to: "restart")
        return try await controller.restart(w.id)
    }

    /// Changes an interactive workload's lease (its owner or an admin): `extend` from its current end (or from now
    /// when it does not run), or `until` a time, or `unlimited`; never past the queue's cap, counted from now.
    public func setLease(_ id: String, extend: Int?, until: Date?, unlimited: Bool, as principal: Principal) async throws -> Workload {
        let w = try await getForChange(id, as: principal, to: "change the lease of")
        guard w.spec.kind == .interactive else { throw CanopyError(.conflict, "workload \(id) is a batch workload; only interactive ones have a lease") }
        guard !w.phase.isTerminal else { throw CanopyError(.conflict, "workload \(id) has ended (\(w.phase.rawValue)); its lease cannot change") }
        let cap = await controller.queue(named: w.spec.queue)?.maxLeaseSeconds
        let now = clock.now()
        let field = unlimited ? "unlimited" : until != nil ? "until" : "extend"
        let lease: Lease
        let end: Date?
        if unlimited {
            lease = .unlimited
            end = nil
        } else if let until {
            guard until > now.addingTimeInterval(60) else { throw CanopyError.invalid("until", "until must be at least a minute from now") }
            guard until.timeIntervalSince(now) <= Double(Lease.maxSeconds) else { throw CanopyError.invalid("until", Self.leaseTooLong) }
            end = until
            lease = .seconds(Int(until.timeIntervalSince(now).rounded(.up)))
        } else if let extend {
            guard extend >= 60 else { throw CanopyError.invalid("extend", "an extension is at least 1m") }
            let base = w.leaseExpiresAt.map { max($0, now) } ?? now
            guard extend <= Lease.maxSeconds, base.addingTimeInterval(Double(extend)).timeIntervalSince(now) <= Double(Lease.maxSeconds) else {
                throw CanopyError.invalid("extend", Self.leaseTooLong)
            }
            end = base.addingTimeInterval(Double(extend))
            lease = .seconds(Int(end!.timeIntervalSince(now).rounded(.up)))
        } else {
            throw CanopyError.invalid("extend", "give extend (a duration), until (a time) or unlimited")
        }
        try Self.check(lease, cap: cap, queue: w.spec.queue, field: field)
        // A workload that does not run keeps the duration for its next start.
        let running = w.phase == .running || w.phase == .starting
        let next: Lease = running ? (w.spec.lease ?? lease) : lease
        return try await controller.setLease(w.id, lease: unlimited ? .unlimited : next, expiresAt: end)
    }

    /// Validates, stores durably, and hands a workload to the scheduler. Returns it with its position.
    /// Submits a workload; `extensions`: what a dialect keeps with it (`Workload.extensions`).
    public func submit(_ spec: WorkloadSpec, by principal: Principal, extensions: [String: [String: String]]? = nil) async throws -> Workload {
        var spec = try await applyApp(spec)
        try await validate(spec)
        spec.lease = try await resolveLease(spec)
        let imageReference: String?
        (spec, imageReference) = try await checkContainer(spec, tenant: principal.tenant)
        let id = ids()
        if spec.name.isEmpty { spec.name = id }
        var workload = Workload(id: id, tenant: principal.tenant, owner: principal.user, spec: spec, createdAt: clock.now())
        workload.imageReference = imageReference
        workload.extensions = extensions
        let stored = try await store.insert(workload)
        await controller.admit(stored)
        return await controller.live(stored.id) ?? stored
    }

    /// An app workload's spec completed from its app: the app's command where it gives none, its image where it
    /// names none, and the app's HTTP port as its first port (on the host's shared network, one that no other
    /// unfinished workload declares; with a backend that schedules for itself, each task binds a port its node has
    /// free, and the declared one names it).
    func applyApp(_ spec: WorkloadSpec) async throws -> WorkloadSpec {
        guard let name = spec.app else { return spec }
        guard let apps else { throw CanopyError.invalid("app", "this server runs no apps") }
        let app = try apps.definition(name)
        var s = spec
        if s.command.isEmpty { s.command = app.command }
        if s.image == nil { s.image = app.image }
        s.ports.removeAll { $0.port == app.port }
        var port = app.port
        if runtimes.kind(for: s) == .process {
            if s.tasks > 1 {
                throw CanopyError.invalid("tasks", "an app runs as one task on this host's processes (its tasks would share the host's network and port)")
            }
            let taken = await controller.declaredPorts(runtime: .process).union(s.ports.map(\.port))
            guard let free = (app.port..<min(app.port + 1000, 65536)).first(where: { !taken.contains($0) }) else {
                throw CanopyError(.unavailable, "no port near \(app.port) is free for another \(name) on this host")
            }
            port = free
        }
        s.ports.insert(PortSpec(port, .http), at: 0)
        return s
    }

    /// Creates a queue with default settings if none has that name (dialects whose clients name queues freely).
    public func ensureQueue(_ name: String, description: String) async throws {
        guard await controller.queue(named: name) == nil else { return }
        guard Queue.isValidName(name) else { throw CanopyError.invalid("queue", Queue.nameRule) }
        try await controller.save(queue: Queue(name: name, description: description))
    }

    /// A workload the principal may see.
    public func get(_ id: String, as principal: Principal) async throws -> Workload {
        if let w = await controller.live(id), principal.canSee(tenant: w.tenant) { return w }
        guard Base62.isValid(id), let w = try await store.workload(id: id), principal.canSee(tenant: w.tenant) else {
            throw CanopyError.notFound("workload", id)
        }
        return await controller.live(id) ?? w
    }

    /// A page of workloads, newest first.
    public func list(_ query: WorkloadQuery, as principal: Principal) async throws -> [Workload] {
        var q = query
        if principal.role != .admin { q.tenant = principal.tenant }
        return await controller.overlay(try await store.workloads(q))
    }

    /// How many workloads the principal sees match a query (its limit, offset and cursor aside).
    public func count(_ query: WorkloadQuery, as principal: Principal) async throws -> Int {
        var q = query
        if principal.role != .admin { q.tenant = principal.tenant }
        return try await store.countWorkloads(q)
    }

    /// A workload the principal may change: inside a tenant everyone sees every workload, but only its owner or an
    /// admin may stop or release it (as in Slurm). Another tenant's workload is still indistinguishable from a missing one.
    public func getForChange(_ id: String, as principal: Principal, to action: String) async throws -> Workload {
        let w = try await get(id, as: principal)
        guard principal.role == .admin || w.owner == principal.user else {
            throw CanopyError(.permissionDenied, "workload \(w.id) belongs to \(w.owner); only its owner or an admin may \(action) it")
        }
        return w
    }

    /// Stops a workload (its owner or an admin).
    public func stop(_ id: String, as principal: Principal) async throws -> Workload {
        let w = try await getForChange(id, as: principal, to: "stop")
        return await controller.stop(w.id) ?? w
    }

    /// Deletes a stopped or finished workload with its files (its owner or an admin).
    public func remove(_ id: String, as principal: Principal) async throws {
        let w = try await getForChange(id, as: principal, to: "delete")
        try await controller.remove(w.id)
    }

    /// Releases a held workload (its owner or an admin).
    public func release(_ id: String, as principal: Principal) async throws -> Workload {
        let w = try await getForChange(id, as: principal, to: "release")
        guard w.phase == .pending, w.spec.hold else { throw CanopyError(.conflict, "workload \(id) is not held (it is \(w.phase.rawValue))") }
        return try await controller.release(w.id)
    }

    /// The log file of one task's stream, after checking the caller may see the workload.
    public func logPath(_ id: String, task: Int, stream: String, as principal: Principal) async throws -> String {
        let w = try await get(id, as: principal)
        guard w.tasks.indices.contains(task) else {
            throw CanopyError(.notFound, "workload \(id) has \(w.tasks.count) task\(w.tasks.count == 1 ? "" : "s") (0 to \(w.tasks.count - 1))", field: "index")
        }
        guard stream == "stdout" || stream == "stderr" else { throw CanopyError.invalid("stream", "stream must be stdout or stderr") }
        // Each task's runtime delivers its output to a file of its own layout.
        let kind = runtimes.kind(of: w.tasks[task], spec: w.spec)
        guard let runtime = runtimes.runtime(kind) else {
            throw CanopyError(.unavailable, "task \(task) ran in the \(kind) runtime, which this server does not have configured")
        }
        return runtime.logPath(workloadID: w.id, taskIndex: task, stream: stream)
    }

    /// Whether a task has ended (or its workload has): log followers stop then.
    public func taskEnded(_ id: String, task: Int) async -> Bool {
        if let w = await controller.live(id) { return w.tasks[task].phase.isTerminal || w.phase.isTerminal }
        return true
    }

    /// Waits until something changes (or the timeout passes).
    public func waitForChange(timeout: Duration) async {
        let (watchID, stream) = await controller.changesStream()
        await withTaskGroup(of: Void.self) { group in
            group.addTask { for await _ in stream { return } }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
        }
        await controller.removeWatcher(watchID)
    }
}
