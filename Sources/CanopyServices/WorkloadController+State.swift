import CanopyCore
import Foundation

/// The state the controller owns: which workloads wait in which queue, what they hold on which node, what must
/// be written, and who waits for changes.
extension WorkloadController {
    func key(_ w: Workload) -> QueueOrder.Key { QueueOrder.Key(priority: w.spec.priority, seq: w.seq) }

    /// Takes a workload under management; a pending one not yet handed to a backend joins its queue.
    func track(_ w: Workload) {
        active[w.id] = w
        // Pending and not yet handed to a backend that queues for itself: in Canopy's queue.
        if w.phase == .pending && w.tasks.first?.backendID == nil {
            queueOrders[w.spec.queue, default: QueueOrder()].insert(key(w))
            if !w.spec.hold { runnable.insert(w.id) }
        }
    }

    /// Takes a workload out of its queue (it starts, is submitted, or is cancelled).
    func untrackPending(_ w: Workload) {
        queueOrders[w.spec.queue]?.remove(key(w))
        runnable.remove(w.id)
    }

    /// Records what a placed task holds on its node.
    func allocate(_ w: Workload, task t: TaskStatus) {
        // A backend that schedules for itself accounts for its own allocations (see `backendViews`).
        guard !runtimes.delegates, let node = t.node else { return }
        let endsBy = w.spec.maxDurationSeconds.map { (w.startedAt ?? clock.now()).addingTimeInterval(Double($0)) }
        allocations[w.id, default: []].append(
            Allocation(workloadID: w.id, node: node, cpuMillis: w.spec.resources.cpuMillis, memoryMiB: w.spec.resources.memoryMiB, gpus: t.gpus, endsBy: endsBy)
        )
    }

    /// Frees one task's share (or, with no task, all the workload holds), and asks for a pass.
    func releaseAllocation(_ id: String, task: Int?) {
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

    /// A workload that ended frees what it held; it leaves memory once its final state is written.
    func finish(_ id: String) {
        releaseAllocation(id, task: nil)
        markDirty(id)
        requestPass()
    }

    /// Decides the workload's fate once a task has ended (see `Transitions.settle`) and acts on it.
    func settle(_ id: String) {
        guard let w = active[id] else { return }
        switch Transitions.settle(w, stopReason: stopReasons[id], at: clock.now()) {
        case .unchanged:
            return
        case .stopPeers(let next, let reason, let failedTask):
            stopReasons[id] = reason
            active[id] = next
            stopTasks(of: next, except: failedTask)
        case .ended(let next):
            stopReasons.removeValue(forKey: id)
            active[id] = next
            finish(id)
        }
    }

    // MARK: runtimes of tasks

    /// The runtime a workload's tasks use: the one its tasks recorded, or the one it would be placed on.
    func runtimeKind(of w: Workload) -> RuntimeKind {
        if let t = w.tasks.first(where: { $0.runtime != nil || $0.backendID != nil }) { return runtimes.kind(of: t, spec: w.spec) }
        return runtimes.kind(for: w.spec)
    }

    /// Signals every started task of a workload (but `except`) to stop, each through its own runtime.
    func stopTasks(of w: Workload, except: Int? = nil) {
        var signalled: Set<String> = []
        for t in w.tasks where (t.phase == .running || t.phase == .starting) && t.index != except {
            // Tasks that share a handle (one job for the whole gang) are stopped once.
            guard let handle = t.backendID, signalled.insert(handle).inserted else { continue }
            stopTask(of: w, index: t.index, handle: handle)
        }
    }

    /// Signals one task to stop through its runtime, beside the controller's other work.
    func stopTask(of w: Workload, index: Int, handle: String) {
        let kind = runtimes.kind(of: w.tasks[index], spec: w.spec)
        guard let runtime = runtimes.runtime(kind) else {
            logger.error("cannot stop a task: its runtime is not configured", metadata: ["workload.id": "\(w.id)", "task": "\(index)", "runtime": "\(kind)"])
            return
        }
        let (id, grace) = (w.id, stopGrace)
        enqueue { await runtime.stop(workloadID: id, taskIndex: index, handle: handle, grace: grace) }
    }

    // MARK: writing and watching

    func markDirty(_ id: String) { dirty.insert(id) }

    /// Writes every changed workload in one group; finished ones leave memory once written.
    func persist() async {
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

    /// Wakes everyone waiting for a change.
    func notify() {
        for c in watchers.values { c.yield() }
    }
}
