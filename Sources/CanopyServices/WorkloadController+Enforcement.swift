import CanopyCore
import Foundation

/// Time-based rules, checked a few times a second: what `Enforcer` finds due is stopped; a runtime that failed a
/// launch as unreachable, without saying so itself, is tried again after a while.
extension WorkloadController {
    /// Stops every workload past its time; lets a pass try a runtime again once its retry time has come.
    func enforceDeadlines() async {
        let now = clock.now()
        for due in enforcer.due(active.values, now: now) {
            _ = await stop(due.workloadID, reason: due.reason)
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
