import CanopyCore
import Foundation
import Logging
import ServiceLifecycle

/// Owns every workload that is not finished: the one actor holding their live state, so that no two pieces of work
/// race on it. Its work is split by responsibility, each in a file of its own:
///
/// - state (`+State`): applying a transition, bookkeeping of queues and allocations, group writes, watchers;
/// - scheduling (`+Scheduling`): admission, then placement by `SchedulingPass` and launch on a placed runtime, or
///   submission to a backend that schedules for itself;
/// - runtime events (`+Events`): task exits, output staging, a backend's waits and starts, reachability;
/// - enforcement (`+Enforcement`): time-based rules (`Enforcer`);
/// - recovery (`+Recovery`): after a restart, picking up where the last server left off.
///
/// The rules themselves are pure: `Transitions` (phase changes), `SchedulingPass` (placement), `Enforcer`.
public actor WorkloadController {
    /// How long a task gets between SIGTERM and SIGKILL.
    public let stopGrace: Double
    let store: any Store
    /// The runtimes tasks run with; each task records its runtime's kind.
    let runtimes: Runtimes
    let resolver: LaunchResolver
    /// Where image workloads' root file systems are unpacked for a backend that runs images without an engine
    /// (a scheduling backend's nodes); nil where none does.
    let imageFilesystems: ImageFilesystems?
    let clock: Clock
    let logger: Logger
    let enforcer = Enforcer()
    /// Idle detection: each sampled task's CPU time when last read, and when each workload is sampled next.
    var cpuSamples: [String: (seconds: Double, at: Date)] = [:]
    var nextSample: [String: Date] = [:]
    /// Workloads being asked for signs of use now (`ActivitySignals`): not asked again until they answer.
    var asking: Set<String> = []
    /// Workloads being deleted (no restart meanwhile).
    var removing: Set<String> = []
    /// When each workload's activity was last marked for writing (activity is written at most once a minute).
    var activityWritten: [String: Date] = [:]

    var active: [String: Workload] = [:]
    var queueOrders: [String: QueueOrder] = [:]
    /// Pending and not held: what a scheduling pass considers.
    var runnable: Set<String> = []
    var allocations: [String: [Allocation]] = [:]
    var queues: [String: Queue] = [:]
    var nodes: [Node] = []
    var dirty: Set<String> = []
    var passQueued = false
    var stopReasons: [String: Reason] = [:]
    /// The backend's own view of its nodes and their allocation, when it schedules for itself.
    var backendViews: [NodeView] = []
    /// The runtimes that cannot be reached now, and why.
    var unreachable: [RuntimeKind: Unreachability] = [:]
    /// How many submissions to a backend run at once.
    let submitConcurrency = 8
    /// How many workloads launch at once on placed runtimes.
    let launchConcurrency = 16
    /// How long a runtime that failed a launch as unreachable, without saying so through its events, is left alone
    /// before the next pass tries it again.
    let unreachableRetry: Double
    /// Whether a pass is already due after `unreachableRetry` (a submission waited for something the backend's
    /// own answers do not report, such as the image engine).
    var retryPassDue = false

    let jobs: AsyncStream<@Sendable () async -> Void>
    let jobContinuation: AsyncStream<@Sendable () async -> Void>.Continuation
    var watchers: [UUID: AsyncStream<Void>.Continuation] = [:]

    /// Why a runtime cannot be reached.
    struct Unreachability: Sendable {
        /// The runtime's sentence.
        var problem: String
        /// Whether the runtime said so itself (then only its word ends it); otherwise a launch found it.
        var reported: Bool
        /// Since when.
        var since: Date
    }

    /// Creates a controller over its runtimes; call `recover()` before serving and run it as a service.
    public init(
        store: any Store, runtimes: Runtimes, dataStore: (any DataStore)? = nil, clock: Clock = .system, stopGrace: Double = 10,
        unreachableRetry: Double = 5, imageFilesystems: ImageFilesystems? = nil, apps: AppService? = nil,
        logger: Logger = Logger(label: "canopy.controller")
    ) {
        self.imageFilesystems = imageFilesystems
        self.store = store
        self.runtimes = runtimes
        self.resolver = LaunchResolver(dataStore: dataStore, apps: apps)
        self.clock = clock
        self.stopGrace = stopGrace
        self.unreachableRetry = unreachableRetry
        self.logger = logger
        (jobs, jobContinuation) = AsyncStream.makeStream()
    }

    /// Runs until cancelled: launches passes and stops, follows every runtime's events, enforces time limits.
    public func run() async throws {
        await cancelWhenGracefulShutdown { await self.loops() }
        await persist()
    }

    private func loops() async {
        await withDiscardingTaskGroup { group in
            for runtime in runtimes.all {
                let kind = runtime.kind
                group.addTask {
                    for await event in runtime.events { await self.handle(event, from: kind) }
                }
                group.addTask { await runtime.run() }
            }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(250))
                    await self.enforceDeadlines()
                }
            }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(1))
                    await self.sampleUsage()
                }
            }
            for await job in jobs {
                group.addTask { await job() }
            }
            group.cancelAll()
        }
    }

    /// Runs work beside the controller's own (a stop's grace period, copying outputs, a pass).
    func enqueue(_ job: @escaping @Sendable () async -> Void) { jobContinuation.yield(job) }

    // MARK: reads

    /// The live state of a workload this controller tracks (fresher than the store), with its queue position.
    public func live(_ id: String) -> Workload? {
        guard var w = active[id] else { return nil }
        if w.phase == .pending { w.queuePosition = queueOrders[w.spec.queue]?.position(of: key(w)) }
        if let problem = unreachable[runtimeKind(of: w)]?.problem { w.conditions = [Reason(.backendUnavailable, problem)] }
        if w.leaseWarned == true, let end = w.leaseExpiresAt, w.phase == .running {
            w.conditions = (w.conditions ?? []) + [Reason(.leaseExpiring, "the lease ends at \(Enforcer.timestamp(end)); extend it with canopy lease \(w.id) +1h")]
        }
        if w.idleWarned == true, w.phase == .running, let since = Enforcer.idleSince(w), let limit = idleTimeout(of: w) {
            w.conditions =
                (w.conditions ?? []) + [
                    Reason(.idle, "idle since \(Enforcer.timestamp(since)); stopped at \(Enforcer.timestamp(since.addingTimeInterval(Double(limit)))) unless it is used")
                ]
        }
        return w
    }

    /// Overlays live state on workloads read from the store.
    public func overlay(_ workloads: [Workload]) -> [Workload] {
        workloads.map { live($0.id) ?? $0 }
    }

    /// The queues.
    public func allQueues() -> [Queue] { queues.values.sorted { $0.name < $1.name } }

    /// A queue by name.
    public func queue(named name: String) -> Queue? { queues[name] }

    /// The ports declared by unfinished workloads of a runtime (processes share the host's network, so an app
    /// there gets a port no other one declares).
    public func declaredPorts(runtime: RuntimeKind) -> Set<Int> {
        Set(active.values.filter { runtimes.kind(for: $0.spec) == runtime }.flatMap { $0.spec.ports.map(\.port) })
    }

    /// Pending and running counts per queue.
    public func queueCounts() -> [String: (pending: Int, running: Int)] {
        var out: [String: (pending: Int, running: Int)] = [:]
        for w in active.values {
            var c = out[w.spec.queue] ?? (0, 0)
            if w.phase == .pending { c.pending += 1 } else { c.running += 1 }
            out[w.spec.queue] = c
        }
        return out
    }

    /// The nodes with what is allocated on each.
    public func nodeViews() -> [NodeView] {
        if runtimes.delegates { return backendViews }
        let all = allocations.values.flatMap { $0 }
        return nodes.map { n in
            let mine = all.filter { $0.node == n.name }
            return NodeView(
                node: n, allocatedCPUMillis: mine.reduce(0) { $0 + $1.cpuMillis }, allocatedMemoryMiB: mine.reduce(0) { $0 + $1.memoryMiB },
                allocatedGPUs: mine.flatMap(\.gpus).sorted(), tasks: mine.count)
        }
    }

    /// Whether a runtime is known to be unreachable now.
    public func backendIsUnreachable() -> Bool { !unreachable.isEmpty }

    /// The nodes as the inventory reported them.
    public func currentNodes() -> [Node] { nodes }

    /// A stream that yields whenever any workload changes (for log followers and waiters).
    public func changesStream() -> (UUID, AsyncStream<Void>) {
        let (stream, c) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let id = UUID()
        watchers[id] = c
        return (id, stream)
    }

    /// Stops yielding to a stream from `changesStream()`.
    public func removeWatcher(_ id: UUID) { watchers.removeValue(forKey: id)?.finish() }

    // MARK: commands

    /// Takes a newly stored workload under management.
    public func admit(_ w: Workload) {
        track(w)
        requestPass()
    }

    /// Saves a queue and makes it usable.
    public func save(queue: Queue) async throws {
        try await store.save(queue: queue)
        queues[queue.name] = queue
        requestPass()
    }

    /// Deletes a queue that no unfinished workload uses.
    public func deleteQueue(_ name: String) async throws {
        guard queues[name] != nil else { throw CanopyError.notFound("queue", name) }
        guard name != Queue.defaultName else { throw CanopyError(.conflict, "the default queue cannot be deleted", field: "name") }
        if active.values.contains(where: { $0.spec.queue == name }) {
            throw CanopyError(.conflict, "queue \(name) still has unfinished workloads")
        }
        try await store.deleteQueue(name: name)
        queues.removeValue(forKey: name)
    }

    /// Releases a held workload.
    public func release(_ id: String) async throws -> Workload {
        guard var w = active[id], w.phase == .pending, w.spec.hold else {
            throw CanopyError(.conflict, "workload \(id) is not held")
        }
        w.spec.hold = false
        w.reason = Reason(.queued, "released: waiting for a scheduling pass")
        w.version += 1
        active[id] = w
        runnable.insert(id)
        markDirty(id)
        await persist()
        requestPass()
        return live(id) ?? w
    }

    /// Starts a stopped interactive workload again: it waits in its queue as a new attempt, its files where they
    /// were, with a fresh lease when it runs.
    public func restart(_ id: String) async throws -> Workload {
        guard !removing.contains(id) else { throw CanopyError(.conflict, "workload \(id) is being deleted") }
        guard let before = try await current(id) else { throw CanopyError.notFound("workload", id) }
        guard before.phase == .stopped else {
            throw CanopyError(.conflict, "workload \(id) is \(before.phase.rawValue); only a stopped interactive workload can be restarted")
        }
        let w = Transitions.restarted(before, at: clock.now())
        track(w)
        markDirty(id)
        await persist()
        requestPass()
        notify()
        return live(id) ?? w
    }

    /// Sets an interactive workload's lease: `lease` for its next starts, `expiresAt` (nil: unlimited) for the run
    /// it is in, if it runs. The caller checked the queue's cap.
    public func setLease(_ id: String, lease: Lease, expiresAt: Date?) async throws -> Workload {
        guard let before = try await current(id) else { throw CanopyError.notFound("workload", id) }
        var runs = before.phase == .running || before.phase == .starting
        // A backend that enforces a time limit of its own (a Slurm job's) is told first: if it refuses, the lease
        // stays as it was.
        if runs || before.phase == .pending, let handle = before.tasks.first?.backendID,
            let limited = runtimes.runtime(runtimeKind(of: before)) as? any TimeLimitedRuntime
        {
            try await limited.setTimeLimit(workloadID: id, handle: handle, lease: lease, expiresAt: runs ? expiresAt : nil)
        }
        // What happened meanwhile (an exit, a stop) is kept: the change applies to the workload as it is now.
        guard let now = try await current(id) else { throw CanopyError.notFound("workload", id) }
        runs = now.phase == .running || now.phase == .starting
        let w = Transitions.leaseSet(now, expiresAt: runs ? expiresAt : now.leaseExpiresAt, lease: lease)
        if active[id] != nil {
            active[id] = w
            markDirty(id)
            await persist()
        } else {
            try await store.update([w])
        }
        if runs { await postLease(w) }
        notify()
        return live(id) ?? w
    }

    /// A workload as it is now: the live one, or the stored one once it left memory.
    /// Deletes a workload that ended or stopped: its files, then its record. A workload that can still run (or
    /// is still stopping) is a 409.
    public func remove(_ id: String) async throws {
        guard !removing.contains(id) else { throw CanopyError(.conflict, "workload \(id) is already being deleted") }
        removing.insert(id)
        defer { removing.remove(id) }
        // Its final state written first: a finished workload then leaves memory.
        if active[id] != nil { await persist() }
        if let w = active[id] {
            throw CanopyError(.conflict, "workload \(id) is \(w.phase.rawValue); stop it first (canopy stop), then delete it once it is Stopped or ended")
        }
        guard let w = try await store.workload(id: id) else { throw CanopyError.notFound("workload", id) }
        guard w.phase.isTerminal || w.phase == .stopped else {
            throw CanopyError(.conflict, "workload \(id) is \(w.phase.rawValue); only a stopped or finished workload can be deleted")
        }
        // Files first: if they cannot all go, the record stays, to try again.
        let kinds = Set(w.tasks.map { runtimes.kind(of: $0, spec: w.spec) }).union([runtimes.kind(for: w.spec)])
        for kind in kinds { try await runtimes.runtime(kind)?.removeFiles(workloadID: id) }
        guard active[id] == nil else { throw CanopyError(.conflict, "workload \(id) changed while it was being deleted") }
        _ = try await store.deleteWorkload(id: id)
        notify()
    }

    func current(_ id: String) async throws -> Workload? {
        if let w = active[id] { return w }
        return try await store.workload(id: id)
    }

    /// Tells the workload's running tasks when their lease ends (`.canopy/lease`), with a line in their logs when
    /// `warning`.
    func postLease(_ w: Workload, warning: Bool = false) async {
        let text: String
        if let end = w.leaseExpiresAt {
            text = "expires=\(Enforcer.timestamp(end))\nextend=canopy lease \(w.id) +1h\n"
        } else {
            text = "expires=unlimited\n"
        }
        let line =
            warning ? w.leaseExpiresAt.map { "canopy: the lease of workload \(w.id) ends at \(Enforcer.timestamp($0)); extend it with canopy lease \(w.id) +1h" } : nil
        for t in w.tasks where t.phase == .running {
            guard let runtime = runtimes.runtime(runtimeKind(of: w)) else { continue }
            await runtime.post(TaskNotice(name: "lease", contents: text, logLine: line), workloadID: w.id, taskIndex: t.index)
        }
    }

    /// Stops a workload: a pending one is cancelled at once; a running one gets SIGTERM, then SIGKILL after the grace period.
    /// Stopping a finished workload changes nothing.
    public func stop(_ id: String, reason: Reason? = nil) async -> Workload? {
        guard let before = active[id] else { return nil }
        let why = reason ?? Reason(.stoppedByUser, "stopped by request")
        let w = Transitions.stopRequested(before, reason: why, at: clock.now())
        switch before.phase {
        case .pending:
            untrackPending(before)
            active[id] = w
            markDirty(id)
            finish(id)
            // Already handed to a backend that queues for itself: take it out of that queue too.
            if let handle = w.tasks.first?.backendID {
                stopTask(of: w, index: 0, handle: handle)
            }
        case .starting, .running:
            stopReasons[id] = why
            active[id] = w
            markDirty(id)
            stopTasks(of: w)
        default:
            break
        }
        let result = live(id) ?? w
        await persist()
        notify()
        return result
    }
}

extension WorkloadController: Service {}
