import CanopyCore
import Foundation

/// Time-based rules, checked a few times a second: what `Enforcer` finds due is stopped; a runtime that failed a
/// launch as unreachable, without saying so itself, is tried again after a while.
extension WorkloadController {
    /// Stops every workload past its time; lets a pass try a runtime again once its retry time has come.
    func enforceDeadlines() async {
        let now = clock.now()
        let idleTimeout: (Workload) -> Int? = { [queues] w in w.spec.kind == .interactive ? queues[w.spec.queue]?.idleTimeoutSeconds : nil }
        for due in enforcer.due(active.values, now: now, idleTimeout: idleTimeout) {
            _ = await stop(due.workloadID, reason: due.reason)
        }
        // Idle for most of its timeout: said once per quiet spell, like a lease's end.
        for w in enforcer.idleWarnings(active.values, now: now, idleTimeout: idleTimeout) {
            let warned = Transitions.idleWarningGiven(w)
            active[w.id] = warned
            markDirty(w.id)
            await postIdle(warned, timeout: idleTimeout(w) ?? 0, warning: true)
            notify()
        }
        // A lease about to end: said once, in the task's files and log, and as a condition.
        for w in enforcer.warnings(active.values, now: now) {
            let warned = Transitions.leaseWarningGiven(w)
            active[w.id] = warned
            markDirty(w.id)
            await postLease(warned, warning: true)
            notify()
        }
        let retry = unreachable.filter { !$0.value.reported && now.timeIntervalSince($0.value.since) >= unreachableRetry }.map(\.key)
        if !retry.isEmpty {
            for kind in retry { unreachable.removeValue(forKey: kind) }
            requestPass()
            notify()
        }
    }
}

extension WorkloadController {
    /// A sign of use of a running interactive workload (from the proxy, a usage sample, an app's own report): its
    /// idle clock starts again. Written to the store at most once a minute per workload, since it can come often.
    public func recordActivity(_ id: String, source: String, at: Date? = nil) {
        guard let w = active[id] else { return }
        let now = at ?? clock.now()
        let next = Transitions.activity(w, source: source, at: now)
        guard next.version != w.version else { return }
        active[id] = next
        if now.timeIntervalSince(activityWritten[id] ?? .distantPast) >= 60 || w.idleWarned == true || w.lastActivitySource != source {
            activityWritten[id] = now
            if activityWritten.count > 10_000 { activityWritten = activityWritten.filter { active[$0.key] != nil } }
            markDirty(id)
        }
    }

    /// The idle timeout that applies to a workload (its queue's, for an interactive one).
    func idleTimeout(of w: Workload) -> Int? {
        w.spec.kind == .interactive ? queues[w.spec.queue]?.idleTimeoutSeconds : nil
    }

    /// Tells an idle workload's tasks when it will be stopped: `.canopy/idle`, and a log line with the warning.
    func postIdle(_ w: Workload, timeout: Int, warning: Bool) async {
        guard let since = Enforcer.idleSince(w) else { return }
        let end = since.addingTimeInterval(Double(timeout))
        let text = "idle-since=\(Enforcer.timestamp(since))\nstops-at=\(Enforcer.timestamp(end))\nlast-activity=\(w.lastActivitySource ?? "start")\n"
        let line =
            warning
            ? "canopy: workload \(w.id) has been idle since \(Enforcer.timestamp(since)) and will be stopped at \(Enforcer.timestamp(end)) unless it is used"
            : nil
        for t in w.tasks where t.phase == .running {
            guard let runtime = runtimes.runtime(runtimeKind(of: w)) else { continue }
            await runtime.post(TaskNotice(name: "idle", contents: text, logLine: line), workloadID: w.id, taskIndex: t.index)
        }
    }
}
