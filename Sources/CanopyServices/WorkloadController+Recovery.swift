import CanopyCore
import Foundation

/// After a restart: the queues, the nodes, and every unfinished workload, its tasks re-adopted from the runtime that
/// recorded them, or settled when they ended (or vanished) while Canopy was away.
extension WorkloadController {
    /// Loads queues, nodes and unfinished workloads; re-adopts tasks still running and settles the rest.
    public func recover() async throws {
        for q in try await store.queues() { queues[q.name] = q }
        if queues[Queue.defaultName] == nil {
            let q = Queue(name: Queue.defaultName, description: "the default queue")
            try await store.save(queue: q)
            queues[q.name] = q
        }
        nodes = try await runtimes.inventory.nodes()
        var recovered = 0
        var lost = 0
        for var w in try await store.activeWorkloads() {
            // Handed to a backend that queues for itself before the restart: it still waits there, ran while
            // Canopy was away, or is lost; the backend says which, as for running tasks.
            let submitted = w.phase == .pending && w.tasks.first?.backendID != nil
            if w.phase == .pending && !submitted {
                track(w)
                continue
            }
            for i in w.tasks.indices where w.tasks[i].phase == .starting || w.tasks[i].phase == .running || submitted {
                let kind = runtimes.kind(of: w.tasks[i], spec: w.spec)
                guard let runtime = runtimes.runtime(kind) else {
                    lost += 1
                    w = Transitions.vanished(
                        w, task: i,
                        reason: Reason(.taskVanished, "task \(i) ran in the \(kind) runtime, which this server no longer has; its state is unknown"),
                        at: clock.now())
                    continue
                }
                switch await runtime.recover(workloadID: w.id, taskIndex: i, handle: w.tasks[i].backendID) {
                case .running:
                    recovered += 1
                case .exited(var exit):
                    // It ended while Canopy was down: its outputs are still in its working directory.
                    if let outputs = Self.outputsToCollect(w, taskIndex: i) {
                        exit = await stageOutputs(of: w, exit, outputs: outputs)
                    }
                    w = Transitions.taskExited(w, exit)
                case .vanished:
                    lost += 1
                    w = Transitions.vanished(
                        w, task: i,
                        reason: Reason(
                            .taskVanished,
                            submitted
                                ? "task \(i) was neither queued nor running in the backend when Canopy restarted, and left no exit status"
                                : "task \(i)'s process was not running when Canopy restarted, and left no exit status"),
                        at: clock.now())
                }
            }
            if !submitted { w = Transitions.notStartedBeforeRestart(w) }
            track(w)
            for t in w.tasks where t.phase == .running || t.phase == .starting { allocate(w, task: t) }
            if w.tasks.contains(where: { $0.phase.isTerminal }) { settle(w.id) }
            markDirty(w.id)
        }
        if recovered + lost > 0 { logger.info("recovered tasks", metadata: ["adopted": "\(recovered)", "vanished": "\(lost)"]) }
        await persist()
        requestPass()
    }
}
