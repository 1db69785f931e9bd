import CanopyCore
import Foundation

/// The scheduler: admission in queue order, then either placement (`SchedulingPass`) and launch on a placed runtime,
/// or submission of whole workloads to a backend that schedules for itself.
extension WorkloadController {
    /// Asks for a pass soon (at most one waits at a time).
    func requestPass() {
        guard !passQueued else { return }
        passQueued = true
        enqueue { await self.schedulePass() }
    }

    /// One scheduling pass over every runnable workload.
    func schedulePass() async {
        passQueued = false
        guard !runnable.isEmpty else { return }
        if runtimes.delegates {
            await submitPass()
            return
        }
        let now = clock.now()
        // Workloads whose runtime cannot be reached wait, unplaced, until it answers again.
        var candidates: [SchedulingPass.Candidate] = []
        for c in runnableCandidates() {
            let kind = runtimes.kind(for: c.workload.spec)
            if let problem = unreachable[kind]?.problem {
                wait(c.workload.id, Reason(.backendUnavailable, "waiting for the \(kind) runtime to answer again: \(problem)"))
            } else {
                candidates.append(c)
            }
        }
        let pass = SchedulingPass(nodes: nodes, allocations: allocations.values.flatMap { $0 }, candidates: candidates, now: now)
        let outcome = pass.run()
        // Why a workload waits is derived state: every pass recomputes it (so does the first pass after a
        // restart) and reads of live workloads see it at once. It is not written to the store on its own, or a
        // deep queue would rewrite every pending row whenever anything ends; it is written along with the
        // workload's next real change.
        for (id, reason) in outcome.reasons { wait(id, reason) }
        // Every start is placed before the first launch: a launch waits on its runtime, the actor runs other
        // work meanwhile (another pass among it), and a workload still runnable then would be placed twice.
        var placedIDs: [String] = []
        for start in outcome.starts {
            guard let w = active[start.workloadID] else { continue }
            untrackPending(w)
            let placed = Transitions.placed(
                w, placements: start.placements.map { BackendPlacement(taskIndex: $0.taskIndex, node: $0.node, gpus: $0.gpus) }, at: now)
            active[w.id] = placed
            for t in placed.tasks { allocate(placed, task: t) }
            placedIDs.append(w.id)
        }
        // Workloads launch side by side, a few at a time (a container runtime's launch is a round trip to its
        // engine); a workload's own tasks launch one after another.
        await withTaskGroup(of: Void.self) { group in
            var next = placedIDs.makeIterator()
            for _ in 0..<launchConcurrency {
                guard let id = next.next() else { break }
                group.addTask { await self.launch(id) }
            }
            for await _ in group {
                guard let id = next.next() else { continue }
                group.addTask { await self.launch(id) }
            }
        }
        await persist()
        notify()
    }

    /// Sets why a pending workload waits (derived state, kept in memory until its next real change).
    private func wait(_ id: String, _ reason: Reason) {
        guard var w = active[id], w.reason != reason else { return }
        w.reason = reason
        active[id] = w
    }

    private func runnableCandidates() -> [SchedulingPass.Candidate] {
        runnable.compactMap { id in
            active[id].map { SchedulingPass.Candidate(workload: $0, queuePriority: queues[$0.spec.queue]?.priority ?? 0) }
        }
    }

    /// Whether the workload's tasks may run as root in their containers: as its queue says.
    func allowRoot(_ w: Workload) -> Bool {
        queues[w.spec.queue]?.allowRoot ?? false
    }

    // MARK: placed runtimes

    /// Launches a placed workload's tasks one by one on its runtime.
    private func launch(_ id: String) async {
        guard let w = active[id] else { return }
        let kind = runtimes.kind(for: w.spec)
        for t in w.tasks {
            // A stop may arrive while an earlier task is being launched (the actor is re-entered at each await):
            // the tasks not started yet are then never started.
            if active[id]?.stopRequestedAt != nil {
                cancelUnlaunched(id)
                settle(id)
                break
            }
            do {
                guard let runtime = runtimes.placed[kind] else { throw CanopyError(.internal, "no \(kind) runtime is configured") }
                var launch = TaskLaunch(
                    workloadID: w.id, tenant: w.tenant, spec: w.spec, taskIndex: t.index, node: t.node ?? "", gpus: t.gpus, inputs: try resolver.inputs(w),
                    mounts: try resolver.mounts(w), imageReference: w.imageReference, allowRoot: allowRoot(w))
                resolver.apps?.prepare(&launch)
                let launched = try await runtime.launch(launch)
                guard let cur = active[id] else { return }
                let next = Transitions.launched(cur, task: t.index, runtime: kind, launched: launched, at: clock.now())
                active[id] = next
                // The last task started: the lease runs from now, and the tasks learn when it ends.
                if cur.phase != .running, next.phase == .running, next.spec.kind == .interactive { await postLease(next) }
                if next.stopRequestedAt != nil {
                    // The stop came while this task was being launched, when it had no handle to signal yet.
                    stopTask(of: next, index: t.index, handle: launched.handle)
                }
            } catch {
                guard let cur = active[id] else { return }
                if let unavailable = error as? BackendUnavailable {
                    let back = Transitions.returnedToPending(
                        cur, reason: Reason(.backendUnavailable, "waiting for the \(kind) runtime to answer again: \(unavailable.message)"), at: clock.now())
                    if back.phase == .pending {
                        returnToPending(back, kind: kind, problem: unavailable.message)
                        return
                    }
                }
                let message = (error as? CanopyError)?.message ?? (error as? BackendUnavailable)?.message ?? "\(error)"
                let reason =
                    error is StagingError
                    ? Reason(.inputStagingFailed, "task \(t.index)'s inputs could not be staged: \(message)")
                    : Reason(.launchFailed, "task \(t.index) could not be started: \(message)")
                let failed = Transitions.launchFailed(cur, task: t.index, reason: reason, at: clock.now())
                active[id] = failed
                for i in failed.tasks.indices where failed.tasks[i].phase == .cancelled && cur.tasks[i].phase == .starting {
                    releaseAllocation(id, task: i)
                }
                logger.error("launch failed", metadata: ["workload.id": "\(id)", "task": "\(t.index)", "error": "\(message)"])
                // The gang cannot start: the tasks after this one never will, those before it are stopped by settle.
                settle(id)
                markDirty(id)
                return
            }
        }
        markDirty(id)
    }

    /// The runtime's engine went away between placement and launch: the workload waits in its queue again, its
    /// share freed, and the runtime is left alone until it answers (or, if it never said it was away, for a while).
    private func returnToPending(_ w: Workload, kind: RuntimeKind, problem: String) {
        logger.notice("runtime unreachable at launch; the workload waits again", metadata: ["workload.id": "\(w.id)", "runtime": "\(kind)"])
        releaseAllocation(w.id, task: nil)
        if unreachable[kind] == nil { unreachable[kind] = Unreachability(problem: problem, reported: false, since: clock.now()) }
        track(w)
        markDirty(w.id)
    }

    /// Marks the tasks that were placed but never launched (no handle) as cancelled and frees their resources.
    func cancelUnlaunched(_ id: String) {
        guard let w = active[id] else { return }
        let (next, cancelled) = Transitions.cancelUnlaunched(w, at: clock.now())
        guard !cancelled.isEmpty else { return }
        active[id] = next
        for i in cancelled { releaseAllocation(id, task: i) }
        markDirty(id)
    }

    // MARK: a backend that schedules for itself

    /// Hands every runnable workload to the backend, in queue order, a few at a time.
    private func submitPass() async {
        guard let backend = runtimes.backend else { return }
        if let problem = unreachable[backend.kind]?.problem {
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
                group.addTask { await self.submitOne(w.id, to: backend) }
            }
            for await _ in group {
                guard let w = next.next() else { continue }
                group.addTask { await self.submitOne(w.id, to: backend) }
            }
        }
        await persist()
        notify()
    }

    /// Asks for a pass after `unreachableRetry` seconds (once, however many ask meanwhile).
    func retryPassLater() {
        guard !retryPassDue else { return }
        retryPassDue = true
        let delay = unreachableRetry
        Task {
            try? await Task.sleep(for: .milliseconds(Int(delay * 1000)))
            await self.retryPassNow()
        }
    }

    private func retryPassNow() {
        retryPassDue = false
        requestPass()
    }

    private func submitOne(_ id: String, to backend: any SchedulingBackend) async {
        guard let w = active[id], w.phase == .pending else { return }
        do {
            // An image runs from its root file system on the nodes, exported from the engine once per image.
            var image: PreparedImage?
            if let reference = w.imageReference {
                guard let imageFilesystems else { throw CanopyError(.internal, "this backend has no place to unpack images") }
                image = try await imageFilesystems.prepare(reference)
            }
            var submission = WorkloadSubmission(
                workloadID: id, tenant: w.tenant, spec: w.spec, pool: queues[w.spec.queue]?.pool, inputs: try resolver.inputs(w),
                mounts: try resolver.mounts(w),
                imageReference: w.imageReference, allowRoot: allowRoot(w), image: image)
            submission.attempt = w.restarts ?? 0
            resolver.apps?.prepare(&submission)
            let handle = try await backend.submit(submission)
            guard let cur = active[id], !cur.phase.isTerminal else {
                // Cancelled while it was being submitted.
                let grace = stopGrace
                enqueue { await backend.stop(workloadID: id, taskIndex: 0, handle: handle, grace: grace) }
                return
            }
            let next = Transitions.submitted(cur, handle: handle, runtime: backend.kind)
            active[id] = next
            markDirty(id)
            if next.stopRequestedAt != nil {
                // Started, and a stop came, before the job id was known here.
                stopTask(of: next, index: 0, handle: handle)
            }
        } catch let e as BackendUnavailable {
            guard var cur = active[id], cur.phase == .pending else { return }
            // Stays queued here; the next pass after the backend answers again submits it.
            cur.reason = Reason(.backendUnavailable, "waiting for the backend to answer again: \(e.message)")
            active[id] = cur
            track(cur)
            // The backend may be fine and the image engine not: nothing else would bring a pass, so one comes later.
            retryPassLater()
        } catch {
            guard let cur = active[id], cur.phase == .pending else { return }
            let message = (error as? CanopyError)?.message ?? (error as? StagingError)?.message ?? "\(error)"
            let reason =
                error is StagingError
                ? Reason(.inputStagingFailed, "inputs could not be staged: \(message)") : Reason(.launchFailed, "the backend refused it: \(message)")
            active[id] = Transitions.refused(cur, reason: reason, at: clock.now())
            logger.error("submission failed", metadata: ["workload.id": "\(id)", "error": "\(message)"])
            settle(id)
            markDirty(id)
        }
    }
}
