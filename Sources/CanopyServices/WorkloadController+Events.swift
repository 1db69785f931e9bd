import CanopyCore
import Foundation

/// What the runtimes report: task exits (with output staging), a backend's waits, starts and inventory, and each
/// runtime's reachability.
extension WorkloadController {
    /// Handles one event of the runtime of kind `kind`.
    func handle(_ event: BackendEvent, from kind: RuntimeKind) async {
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
            guard let w = active[id], w.phase == .pending else { return }
            untrackPending(w)
            active[id] = Transitions.startedByBackend(w, placements: placements, at: at)
            markDirty(id)
            await persist()
            notify()
        case .reachability(let problem):
            reachability(of: kind, problem: problem)
        case .inventory(let views):
            backendViews = views
            nodes = views.map(\.node)
        }
    }

    /// A runtime stopped answering (a sentence why) or answers again (nil). Workloads on it show the condition;
    /// pending ones that would use it wait; when it answers again, a pass runs.
    func reachability(of kind: RuntimeKind, problem: String?) {
        guard unreachable[kind]?.problem != problem || (problem != nil && unreachable[kind]?.reported == false) else { return }
        if let problem {
            if unreachable[kind] == nil {
                logger.warning("runtime unreachable; workloads keep their last known phase", metadata: ["runtime": "\(kind)", "problem": "\(problem)"])
            }
            unreachable[kind] = Unreachability(problem: problem, reported: true, since: unreachable[kind]?.since ?? clock.now())
        } else {
            logger.notice("runtime reachable again", metadata: ["runtime": "\(kind)"])
            unreachable.removeValue(forKey: kind)
            // Stops asked for while it was away may never have reached it: they are sent again (a stop of a task
            // that already ended changes nothing).
            for w in active.values where w.stopRequestedAt != nil && w.phase == .stopping {
                let onIt = w.tasks.filter { ($0.phase == .running || $0.phase == .starting) && runtimes.kind(of: $0, spec: w.spec) == kind }
                if !onIt.isEmpty { stopTasks(of: w) }
            }
            requestPass()
        }
        notify()
    }

    /// A task ended: its outputs are copied first when it is the one that has them, then its exit is recorded.
    func taskExited(_ exit: TaskExit) async {
        guard let w = active[exit.workloadID], exit.taskIndex < w.tasks.count else { return }
        // A task that returned to its queue (its engine went away mid-gang) has no handle: a late exit of an earlier
        // launch is not this task's.
        if w.phase == .pending && w.tasks[exit.taskIndex].backendID == nil { return }
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

    /// Copies task 0's outputs to the data store through its runtime; returns the exit, turned into a failure if a
    /// copy failed.
    func stageOutputs(of w: Workload, _ exit: TaskExit, outputs: [DataOutput]) async -> TaskExit {
        var exit = exit
        do {
            guard let dataStore = resolver.dataStore else { throw StagingError("this server has no data store") }
            let kind = runtimes.kind(of: w.tasks[0], spec: w.spec)
            guard let runtime = runtimes.runtime(kind) else { throw StagingError("the \(kind) runtime that ran task 0 is not configured") }
            let staged = try outputs.map { o in
                guard let destination = DataPath.normalize(o.destination), destination != "/" else {
                    throw StagingError("output destination \(o.destination) is not a valid data store path")
                }
                return StagedOutput(
                    path: o.path, localDestination: dataStore.localPath(tenant: w.tenant, path: destination), destination: destination, overwrite: o.overwrite)
            }
            try await runtime.collectOutputs(workloadID: w.id, taskIndex: 0, spec: w.spec, outputs: staged)
        } catch {
            let message = (error as? StagingError)?.message ?? (error as? CanopyError)?.message ?? "\(error)"
            logger.notice("output staging failed", metadata: ["workload.id": "\(w.id)", "error": "\(message)"])
            if exit.exitCode == 0 && exit.reason == nil {
                exit.reason = Reason(.outputStagingFailed, "task 0's outputs could not be copied: \(message)")
            }
        }
        return exit
    }

    /// Records a task's exit, frees its share and settles the workload.
    private func record(_ exit: TaskExit) async {
        guard let w = active[exit.workloadID], exit.taskIndex < w.tasks.count else { return }
        let wasPending = w.phase == .pending
        let next = Transitions.taskExited(w, exit)
        // A backend that queues for itself ran it between two looks: it left Canopy's queue.
        if wasPending && next.phase != .pending { untrackPending(w) }
        active[w.id] = next
        releaseAllocation(w.id, task: exit.taskIndex)
        settle(w.id)
        markDirty(w.id)
        await persist()
        notify()
    }
}
