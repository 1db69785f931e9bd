import CanopyCore
import Foundation
import Logging
import ServiceLifecycle

/// Owns every workload that is not finished: schedules pending ones onto nodes, launches their tasks,
/// follows them to their end, enforces stops and max durations, and writes each change to the store.
/// After a restart it picks up where the last server left off (see `recover()`).
public actor WorkloadController {
    /// How long a task gets between SIGTERM and SIGKILL.
    public let stopGrace: Double
    private let store: any Store
    private let executor: any Executor
    private let dataStore: (any DataStore)?
    private let clock: Clock
    private let logger: Logger

    private var active: [String: Workload] = [:]
    private var queueOrders: [String: QueueOrder] = [:]
    /// Pending and not held: what a scheduling pass considers.
    private var runnable: Set<String> = []
    private var allocations: [String: [Allocation]] = [:]
    private var queues: [String: Queue] = [:]
    private var nodes: [Node] = []
    private var dirty: Set<String> = []
    private var passQueued = false
    private var stopReasons: [String: Reason] = [:]
    /// Whether the backend queues and places workloads itself: then passes submit instead of placing.
    private let delegating: Bool
    /// The backend's own view of its nodes and their allocation, when it schedules for itself.
    private var backendViews: [NodeView] = []
    /// Why the backend cannot be reached, while it cannot.
    private var backendProblem: String?
    /// How many submissions to a backend run at once.
    private let submitConcurrency = 8

    private let jobs: AsyncStream<@Sendable () async -> Void>
    private let jobContinuation: AsyncStream<@Sendable () async -> Void>.Continuation
    private let changes: AsyncStream<Void>.Continuation
    private var watchers: [UUID: AsyncStream<Void>.Continuation] = [:]

    /// Creates a controller; call `recover()` before serving and run it as a service.
    public init(
        store: any Store, executor: any Executor, dataStore: (any DataStore)? = nil, clock: Clock = .system, stopGrace: Double = 10,
        logger: Logger = Logger(label: "canopy.controller")
    ) {
        self.store = store
        self.executor = executor
        self.dataStore = dataStore
        self.clock = clock
        self.stopGrace = stopGrace
        self.logger = logger
        self.delegating = executor.schedulesItself
        (jobs, jobContinuation) = AsyncStream.makeStream()
        (_, changes) = AsyncStream<Void>.makeStream()
    }

    // MARK: start-up

    /// Loads queues, nodes and unfinished workloads; re-adopts tasks still running and settles the rest.
    public func recover() async throws {
        for q in try await store.queues() { queues[q.name] = q }
        if queues[Queue.defaultName] == nil {
            let q = Queue(name: Queue.defaultName, description: "the default queue")
            try await store.save(queue: q)
            queues[q.name] = q
        }
        nodes = try await executor.nodes()
        var recovered = 0, lost = 0
        for var w in try await store.activeWorkloads() {
            // Handed to a backend that queues for itself before the restart: it still waits there, ran while
            // Canopy was away, or is lost; the backend says which, as for running tasks.
            let submitted = w.phase == .pending && w.tasks.first?.backendID != nil
            if w.phase == .pending && !submitted {
                track(w)
                continue
            }
            for i in w.tasks.indices where w.tasks[i].phase == .starting || w.tasks[i].phase == .running || submitted {
                switch await executor.recover(workloadID: w.id, taskIndex: i, backendID: w.tasks[i].backendID) {
                case .running:
                    recovered += 1
                case .exited(var exit):
                    // It ended while Canopy was down: its outputs are still in its working directory.
                    if let outputs = Self.outputsToCollect(w, taskIndex: i) {
                        exit = await stageOutputs(of: w, exit, outputs: outputs)
                    }
                    apply(exit, to: &w)
                case .vanished:
                    lost += 1
                    w.tasks[i].phase = .failed
                    w.tasks[i].finishedAt = clock.now()
                    w.tasks[i].reason = Reason(
                        .taskVanished,
                        submitted
                            ? "task \(i) was neither queued nor running in the backend when Canopy restarted, and left no exit status"
                            : "task \(i)'s process was not running when Canopy restarted, and left no exit status")
                }
            }
            for i in w.tasks.indices where w.tasks[i].phase == .pending && !submitted {
                w.tasks[i].phase = .failed
                w.tasks[i].reason = Reason(.launchFailed, "task \(i) had not been started when Canopy stopped")
            }
            track(w)
            for t in w.tasks where t.phase == .running || t.phase == .starting { allocate(w, task: t) }
            if w.tasks.contains(where: { $0.phase.isTerminal }) { settle(w.id) }
            markDirty(w.id)
        }
        if recovered + lost > 0 { logger.info("recovered tasks", metadata: ["adopted": "\(recovered)", "vanished": "\(lost)"]) }
        await persist()
        requestPass()
    }

    /// Runs until cancelled: launches passes and stops, follows task exits, enforces max durations.
    public func run() async throws {
        await cancelWhenGracefulShutdown { await self.loops() }
        await persist()
    }

    private func loops() async {
        await withDiscardingTaskGroup { group in
            group.addTask { [executor] in
                for await event in executor.events { await self.handle(event) }
            }
            group.addTask { [executor] in await executor.run() }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(250))
                    await self.enforceDeadlines()
                }
            }
            for await job in jobs {
                group.addTask { await job() }
            }
            group.cancelAll()
        }
    }

    private func enqueue(_ job: @escaping @Sendable () async -> Void) { jobContinuation.yield(job) }

    // MARK: reads

    /// The live state of a workload this controller tracks (fresher than the store), with its queue position.
    public func live(_ id: String) -> Workload? {
        guard var w = active[id] else { return nil }
        if w.phase == .pending { w.queuePosition = queueOrders[w.spec.queue]?.position(of: key(w)) }
        if let backendProblem { w.conditions = [Reason(.backendUnavailable, backendProblem)] }
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
        if delegating { return backendViews }
        let all = allocations.values.flatMap { $0 }
        return nodes.map { n in
            let mine = all.filter { $0.node == n.name }
            return NodeView(
                node: n, allocatedCPUMillis: mine.reduce(0) { $0 + $1.cpuMillis }, allocatedMemoryMiB: mine.reduce(0) { $0 + $1.memoryMiB },
                allocatedGPUs: mine.flatMap(\.gpus).sorted(), tasks: mine.count)
        }
    }

    /// Whether the backend is known to be unreachable now.
    public func backendIsUnreachable() -> Bool { backendProblem != nil }

    /// The nodes as the executor reported them.
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

    /// Stops a workload: a pending one is cancelled at once; a running one gets SIGTERM, then SIGKILL after the grace period.
    /// Stopping a finished workload changes nothing.
    public func stop(_ id: String, reason: Reason? = nil) async -> Workload? {
        guard var w = active[id] else { return nil }
        let now = clock.now()
        let why = reason ?? Reason(.stoppedByUser, "stopped by request")
        switch w.phase {
        case .pending:
            untrackPending(w)
            w.move(to: .cancelled, reason: why, at: now)
            for i in w.tasks.indices { w.tasks[i].phase = .cancelled }
            w.version += 1
            active[id] = w
            markDirty(id)
            finish(id)
            // Already handed to a backend that queues for itself: take it out of that queue too.
            if let backendID = w.tasks.first?.backendID {
                let grace = stopGrace
                enqueue { [executor] in await executor.stop(workloadID: id, taskIndex: 0, backendID: backendID, grace: grace) }
            }
        case .starting, .running:
            w.stopRequestedAt = now
            stopReasons[id] = why
            w.move(to: .stopping, reason: why, at: now)
            w.version += 1
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

    private func stopTasks(of w: Workload, except: Int? = nil) {
        var signalled: Set<String> = []
        for t in w.tasks where (t.phase == .running || t.phase == .starting) && t.index != except {
            // Tasks that share a backend handle (one job for the whole gang) are stopped once.
            guard let backendID = t.backendID, signalled.insert(backendID).inserted else { continue }
            let (wid, index, grace) = (w.id, t.index, stopGrace)
            enqueue { [executor] in await executor.stop(workloadID: wid, taskIndex: index, backendID: backendID, grace: grace) }
        }
    }

    // MARK: scheduling

    private func requestPass() {
        guard !passQueued else { return }
        passQueued = true
        enqueue { await self.schedulePass() }
    }

    /// One scheduling pass over every runnable workload.
    func schedulePass() async {
        passQueued = false
        guard !runnable.isEmpty else { return }
        if delegating {
            await submitPass()
            return
        }
        let now = clock.now()
        let pass = SchedulingPass(nodes: nodes, allocations: allocations.values.flatMap { $0 }, candidates: runnableCandidates(), now: now)
        let outcome = pass.run()
        // Why a workload waits is derived state: every pass recomputes it (so does the first pass after a
        // restart) and reads of live workloads see it at once. It is not written to the store on its own, or a
        // deep queue would rewrite every pending row whenever anything ends; it is written along with the
        // workload's next real change.
        for (id, reason) in outcome.reasons {
            guard var w = active[id], w.reason != reason else { continue }
            w.reason = reason
            active[id] = w
        }
        for start in outcome.starts {
            guard var w = active[start.workloadID] else { continue }
            untrackPending(w)
            w.move(to: .starting, reason: nil, at: now)
            for p in start.placements {
                w.tasks[p.taskIndex].node = p.node
                w.tasks[p.taskIndex].gpus = p.gpus
                w.tasks[p.taskIndex].phase = .starting
            }
            w.version += 1
            active[w.id] = w
            for t in w.tasks { allocate(w, task: t) }
            await launch(w.id)
        }
        await persist()
        notify()
    }

    private func launch(_ id: String) async {
        guard let w = active[id] else { return }
        for t in w.tasks {
            // A stop may arrive while an earlier task is being launched (the actor is re-entered at each await):
            // the tasks not started yet are then never started.
            if active[id]?.stopRequestedAt != nil {
                cancelUnlaunched(id)
                settle(id)
                break
            }
            do {
                let launch = TaskLaunch(
                    workloadID: w.id, tenant: w.tenant, spec: w.spec, taskIndex: t.index, node: t.node ?? "", gpus: t.gpus, inputs: try stagedInputs(w))
                let backendID = try await executor.launch(launch)
                guard var cur = active[id] else { return }
                cur.tasks[t.index].backendID = backendID
                if cur.tasks[t.index].phase == .starting { cur.tasks[t.index].phase = .running }
                cur.tasks[t.index].startedAt = clock.now()
                cur.version += 1
                active[id] = cur
                if cur.stopRequestedAt != nil {
                    // The stop came while this task was being launched, when it had no backend id to signal yet.
                    let (index, grace) = (t.index, stopGrace)
                    enqueue { [executor] in await executor.stop(workloadID: id, taskIndex: index, backendID: backendID, grace: grace) }
                }
            } catch {
                guard var cur = active[id] else { return }
                let message = (error as? CanopyError)?.message ?? "\(error)"
                cur.tasks[t.index].phase = .failed
                cur.tasks[t.index].finishedAt = clock.now()
                cur.tasks[t.index].reason =
                    error is StagingError
                    ? Reason(.inputStagingFailed, "task \(t.index)'s inputs could not be staged: \(message)")
                    : Reason(.launchFailed, "task \(t.index) could not be started: \(message)")
                cur.version += 1
                active[id] = cur
                logger.error("launch failed", metadata: ["workload.id": "\(id)", "task": "\(t.index)", "error": "\(message)"])
                // The gang cannot start: the tasks after this one never will, those before it are stopped by settle.
                cancelUnlaunched(id)
                settle(id)
                markDirty(id)
                return
            }
        }
        if var cur = active[id], cur.phase == .starting, cur.tasks.allSatisfy({ $0.phase == .running }) {
            cur.move(to: .running, at: clock.now())
            cur.version += 1
            active[id] = cur
        }
        markDirty(id)
    }

    /// Marks the tasks that were placed but never launched (no backend id) as cancelled and frees their resources.
    private func cancelUnlaunched(_ id: String) {
        guard var w = active[id] else { return }
        let unlaunched = w.tasks.indices.filter { w.tasks[$0].phase == .starting && w.tasks[$0].backendID == nil }
        guard !unlaunched.isEmpty else { return }
        for i in unlaunched {
            w.tasks[i].phase = .cancelled
            w.tasks[i].finishedAt = clock.now()
        }
        w.version += 1
        active[id] = w
        for i in unlaunched { releaseAllocation(id, task: i) }
        markDirty(id)
    }

    /// The workload's inputs resolved in the data store; a missing one fails the launch.
    private func stagedInputs(_ w: Workload) throws -> [StagedInput] {
        guard let inputs = w.spec.data?.inputs, !inputs.isEmpty else { return [] }
        guard let dataStore else { throw StagingError("this server has no data store") }
        return try inputs.map { input in
            guard let source = DataPath.normalize(input.source), (try? dataStore.entry(tenant: w.tenant, path: source)) != nil else {
                throw StagingError("input \(input.source) does not exist in the data store")
            }
            return StagedInput(localSource: dataStore.localPath(tenant: w.tenant, path: source), path: input.path)
        }
    }

    // MARK: task ends

    func taskExited(_ exit: TaskExit) async {
        guard let w = active[exit.workloadID], exit.taskIndex < w.tasks.count else { return }
        if let outputs = Self.outputsToCollect(w, taskIndex: exit.taskIndex), !w.tasks[0].phase.isTerminal {
            // Copying may take a while: do it beside the controller's other work, then record the exit.
            enqueue { await self.collectOutputs(exit, outputs: outputs) }
            return
        }
        await record(exit)
    }

    /// The outputs to copy out when this task ends: task 0's, unless the workload was stopped.
    static func outputsToCollect(_ w: Workload, taskIndex: Int) -> [DataOutput]? {
        guard taskIndex == 0, w.stopRequestedAt == nil, let outputs = w.spec.data?.outputs, !outputs.isEmpty else { return nil }
        return outputs
    }

    /// Copies task 0's outputs to the data store, then records its exit; a copy that fails turns a success into a failure.
    private func collectOutputs(_ exit: TaskExit, outputs: [DataOutput]) async {
        guard let w = active[exit.workloadID] else { return }
        await record(await stageOutputs(of: w, exit, outputs: outputs))
    }

    /// Copies task 0's outputs to the data store; returns the exit, turned into a failure if a copy failed.
    private func stageOutputs(of w: Workload, _ exit: TaskExit, outputs: [DataOutput]) async -> TaskExit {
        var exit = exit
        do {
            guard let dataStore else { throw StagingError("this server has no data store") }
            let staged = try outputs.map { o in
                guard let destination = DataPath.normalize(o.destination), destination != "/" else {
                    throw StagingError("output destination \(o.destination) is not a valid data store path")
                }
                return StagedOutput(
                    path: o.path, localDestination: dataStore.localPath(tenant: w.tenant, path: destination), destination: destination, overwrite: o.overwrite)
            }
            try await executor.collectOutputs(workloadID: w.id, taskIndex: 0, spec: w.spec, outputs: staged)
        } catch {
            let message = (error as? StagingError)?.message ?? (error as? CanopyError)?.message ?? "\(error)"
            logger.notice("output staging failed", metadata: ["workload.id": "\(w.id)", "error": "\(message)"])
            if exit.exitCode == 0 && exit.reason == nil {
                exit.reason = Reason(.outputStagingFailed, "task 0's outputs could not be copied: \(message)")
            }
        }
        return exit
    }

    private func record(_ exit: TaskExit) async {
        guard var w = active[exit.workloadID], exit.taskIndex < w.tasks.count else { return }
        apply(exit, to: &w)
        active[w.id] = w
        releaseAllocation(w.id, task: exit.taskIndex)
        settle(w.id)
        markDirty(w.id)
        await persist()
        notify()
    }

    private func apply(_ exit: TaskExit, to w: inout Workload) {
        let i = exit.taskIndex
        guard !w.tasks[i].phase.isTerminal else { return }
        if w.phase == .pending && exit.exitCode != nil {
            // A backend that queues for itself ran it between two looks (or while Canopy was away): it did start.
            markStarted(&w, placements: [], at: exit.at)
        }
        w.tasks[i].exitCode = exit.exitCode
        w.tasks[i].finishedAt = exit.at
        if exit.exitCode == 0 && exit.reason == nil {
            w.tasks[i].phase = .succeeded
        } else if exit.reason?.code == .cancelledInBackend {
            w.tasks[i].phase = .cancelled
            w.tasks[i].reason = exit.reason
        } else {
            w.tasks[i].phase = w.stopRequestedAt != nil ? .cancelled : .failed
            w.tasks[i].reason = exit.reason ?? Self.exitReason(task: i, code: exit.exitCode)
        }
        w.version += 1
    }

    static func exitReason(task: Int, code: Int?) -> Reason {
        guard let code else { return Reason(.taskVanished, "task \(task) ended with no exit status") }
        if code > 128 && code < 160 {
            return Reason(.signaled, "task \(task) was killed by signal \(code - 128)\(code == 137 ? " (SIGKILL)" : code == 143 ? " (SIGTERM)" : "")")
        }
        return Reason(.nonZeroExit, "task \(task) exited with code \(code)")
    }

    /// Decides the workload's fate once a task has ended: a failed task stops its gang; when none runs, it ends.
    private func settle(_ id: String) {
        guard var w = active[id] else { return }
        let stillRunning = w.tasks.contains { $0.phase == .running || $0.phase == .starting }
        let failedTask = w.tasks.first { $0.phase == .failed }
        if stillRunning {
            if let failedTask, w.stopRequestedAt == nil {
                // Gang semantics: one task failing ends the workload; stop its peers.
                w.stopRequestedAt = clock.now()
                stopReasons[id] = Reason(.peerTaskFailed, failedTask.reason?.message ?? "task \(failedTask.index) failed")
                w.move(to: .stopping, reason: stopReasons[id], at: clock.now())
                w.version += 1
                active[id] = w
                stopTasks(of: w, except: failedTask.index)
            }
            return
        }
        let now = clock.now()
        let nonZero = w.tasks.compactMap(\.exitCode).first { $0 != 0 }
        // The workload's exit code is the failing task's, else the first non-zero one, else 0.
        // A workload stopped before any task ran has no exit code.
        w.exitCode = failedTask.flatMap(\.exitCode) ?? nonZero ?? w.tasks.compactMap(\.exitCode).first ?? (failedTask == nil && stopReasons[id] == nil ? 0 : nil)
        if let stopped = stopReasons.removeValue(forKey: id) {
            if stopped.code == .peerTaskFailed {
                w.phase = .stopping
                w.move(to: .failed, reason: failedTask?.reason ?? stopped, at: now)
            } else if stopped.code == .maxDurationExceeded {
                w.move(to: .failed, reason: stopped, at: now)
            } else {
                w.move(to: w.spec.kind == .interactive ? .stopped : .cancelled, reason: stopped, at: now)
            }
        } else if let failedTask {
            w.move(to: .failed, reason: failedTask.reason, at: now)
        } else if let cancelled = w.tasks.first(where: { $0.phase == .cancelled && $0.reason != nil }) {
            // Cancelled in the backend, behind Canopy's back (by an operator, for instance).
            w.move(to: .cancelled, reason: cancelled.reason, at: now)
        } else {
            w.move(to: .succeeded, reason: nil, at: now)
        }
        w.version += 1
        active[id] = w
        finish(id)
    }

    /// Drops a workload that ended from memory once its final state is queued for the store.
    private func finish(_ id: String) {
        releaseAllocation(id, task: nil)
        markDirty(id)
        requestPass()
    }

    // MARK: backends that schedule for themselves

    private func handle(_ event: BackendEvent) async {
        switch event {
        case .exited(let exit):
            await taskExited(exit)
        case .waiting(let id, let reason):
            guard var w = active[id], w.phase == .pending, w.reason != reason else { return }
            // Derived like a pass's reasons: kept in memory, written with the workload's next real change.
            w.reason = reason
            active[id] = w
            notify()
        case .started(let id, let placements, let at):
            guard var w = active[id], w.phase == .pending else { return }
            markStarted(&w, placements: placements, at: at)
            active[id] = w
            markDirty(id)
            await persist()
            notify()
        case .reachability(let problem):
            guard backendProblem != problem else { return }
            if let problem {
                logger.warning("backend unreachable; workloads keep their last known phase", metadata: ["problem": "\(problem)"])
            } else if backendProblem != nil {
                logger.notice("backend reachable again")
            }
            backendProblem = problem
            if problem == nil { requestPass() }
            notify()
        case .inventory(let views):
            backendViews = views
            nodes = views.map(\.node)
        }
    }

    /// Pending to running, for a workload its backend started.
    private func markStarted(_ w: inout Workload, placements: [BackendPlacement], at: Date) {
        untrackPending(w)
        w.move(to: .starting, reason: nil, at: at)
        for i in w.tasks.indices where w.tasks[i].phase == .pending {
            w.tasks[i].phase = .running
            w.tasks[i].startedAt = at
        }
        for p in placements where p.taskIndex < w.tasks.count {
            w.tasks[p.taskIndex].node = p.node
            w.tasks[p.taskIndex].gpus = p.gpus
        }
        w.move(to: .running, reason: nil, at: at)
        w.version += 1
    }

    private func runnableCandidates() -> [SchedulingPass.Candidate] {
        runnable.compactMap { id in
            active[id].map { SchedulingPass.Candidate(workload: $0, queuePriority: queues[$0.spec.queue]?.priority ?? 0) }
        }
    }

    /// Hands every runnable workload to the backend, in queue order, a few at a time.
    private func submitPass() async {
        if let problem = backendProblem {
            for id in runnable {
                guard var w = active[id] else { continue }
                w.reason = Reason(.backendUnavailable, "waiting for the backend to answer again: \(problem)")
                active[id] = w
            }
            notify()
            return
        }
        let order = SchedulingPass.ordered(runnableCandidates()).map(\.workload)
        for w in order { untrackPending(w) }
        await withTaskGroup(of: Void.self) { group in
            var next = order.makeIterator()
            for _ in 0..<submitConcurrency {
                guard let w = next.next() else { break }
                group.addTask { await self.submitOne(w.id) }
            }
            for await _ in group {
                guard let w = next.next() else { continue }
                group.addTask { await self.submitOne(w.id) }
            }
        }
        await persist()
        notify()
    }

    private func submitOne(_ id: String) async {
        guard let w = active[id], w.phase == .pending else { return }
        do {
            let submission = WorkloadSubmission(workloadID: id, tenant: w.tenant, spec: w.spec, pool: queues[w.spec.queue]?.pool, inputs: try stagedInputs(w))
            let backendID = try await executor.submit(submission)
            let grace = stopGrace
            guard var cur = active[id], !cur.phase.isTerminal else {
                // Cancelled while it was being submitted.
                enqueue { [executor] in await executor.stop(workloadID: id, taskIndex: 0, backendID: backendID, grace: grace) }
                return
            }
            // The backend's first report (even "started") may have been handled before this line runs.
            for i in cur.tasks.indices { cur.tasks[i].backendID = backendID }
            if cur.phase == .pending, cur.reason == nil || cur.reason?.code == .queued || cur.reason?.code == .backendUnavailable {
                cur.reason = Reason(.queued, "submitted as job \(backendID); waiting in the backend's queue")
            }
            cur.version += 1
            active[id] = cur
            markDirty(id)
            if cur.stopRequestedAt != nil {
                // Started, and a stop came, before the job id was known here.
                enqueue { [executor] in await executor.stop(workloadID: id, taskIndex: 0, backendID: backendID, grace: grace) }
            }
        } catch let e as BackendUnavailable {
            guard var cur = active[id], cur.phase == .pending else { return }
            // Stays queued here; the next pass after the backend answers again submits it.
            cur.reason = Reason(.backendUnavailable, "waiting for the backend to answer again: \(e.message)")
            active[id] = cur
            track(cur)
        } catch {
            guard var cur = active[id], cur.phase == .pending else { return }
            let message = (error as? CanopyError)?.message ?? (error as? StagingError)?.message ?? "\(error)"
            let reason =
                error is StagingError
                ? Reason(.inputStagingFailed, "inputs could not be staged: \(message)") : Reason(.launchFailed, "the backend refused it: \(message)")
            for i in cur.tasks.indices {
                cur.tasks[i].phase = .failed
                cur.tasks[i].reason = reason
                cur.tasks[i].finishedAt = clock.now()
            }
            cur.version += 1
            active[id] = cur
            logger.error("submission failed", metadata: ["workload.id": "\(id)", "error": "\(message)"])
            settle(id)
            markDirty(id)
        }
    }

    // MARK: deadlines

    func enforceDeadlines() async {
        let now = clock.now()
        for (id, w) in active where w.phase == .running || w.phase == .starting {
            guard let max = w.spec.maxDurationSeconds, let started = w.startedAt ?? w.tasks.compactMap(\.startedAt).min() else { continue }
            if now.timeIntervalSince(started) >= Double(max) {
                _ = await stop(id, reason: Reason(.maxDurationExceeded, "ran longer than its max duration of \(Quantity.formatDuration(max))"))
            }
        }
    }

    // MARK: bookkeeping

    private func key(_ w: Workload) -> QueueOrder.Key { QueueOrder.Key(priority: w.spec.priority, seq: w.seq) }

    private func track(_ w: Workload) {
        active[w.id] = w
        // Pending and not yet handed to a backend that queues for itself: in Canopy's queue.
        if w.phase == .pending && w.tasks.first?.backendID == nil {
            queueOrders[w.spec.queue, default: QueueOrder()].insert(key(w))
            if !w.spec.hold { runnable.insert(w.id) }
        }
    }

    private func untrackPending(_ w: Workload) {
        queueOrders[w.spec.queue]?.remove(key(w))
        runnable.remove(w.id)
    }

    private func allocate(_ w: Workload, task t: TaskStatus) {
        // A backend that schedules for itself accounts for its own allocations (see `backendViews`).
        guard !delegating, let node = t.node else { return }
        let endsBy = w.spec.maxDurationSeconds.map { (w.startedAt ?? clock.now()).addingTimeInterval(Double($0)) }
        var list = allocations[w.id] ?? []
        list.append(Allocation(workloadID: w.id, node: node, cpuMillis: w.spec.resources.cpuMillis, memoryMiB: w.spec.resources.memoryMiB, gpus: t.gpus, endsBy: endsBy))
        allocations[w.id] = list
        _ = list
    }

    private func releaseAllocation(_ id: String, task: Int?) {
        guard let task, let w = active[id] else {
            allocations.removeValue(forKey: id)
            return
        }
        // Free exactly that task's share: one allocation on its node with its GPUs.
        let t = w.tasks[task]
        if var list = allocations[id], let i = list.firstIndex(where: { $0.node == t.node && $0.gpus == t.gpus }) {
            list.remove(at: i)
            allocations[id] = list.isEmpty ? nil : list
        }
        requestPass()
    }

    private func markDirty(_ id: String) { dirty.insert(id) }

    /// Writes every changed workload; finished ones leave memory once written.
    private func persist() async {
        guard !dirty.isEmpty else { return }
        let ids = dirty
        dirty = []
        let snapshot = ids.compactMap { active[$0] }
        do {
            // Not cancellable: a graceful shutdown cancels the loops, and the last states must still be written.
            try await Task { [store] in try await store.update(snapshot) }.value
            // Finished workloads leave memory once their final state is durable; reads then come from the store.
            for w in snapshot where (w.phase.isTerminal || w.phase == .stopped) && active[w.id]?.version == w.version {
                active.removeValue(forKey: w.id)
            }
        } catch {
            logger.error("could not write workload states; will retry", metadata: ["error": "\(error)"])
            dirty.formUnion(ids)
        }
    }

    private func notify() {
        for c in watchers.values { c.yield() }
    }
}

extension WorkloadController: Service {}
