import CanopyCore
import Foundation

/// Idle detection's own signals, sampled for running interactive workloads whose queue has an idle timeout: a
/// task using more than a tenth of a CPU, or any of its GPUs busier than 10 %, counts as activity; failing those,
/// the instance is asked (`ActivitySignals`): a busy kernel of its app, or its probe command exiting 0. (Traffic
/// through the proxy, exec and SSH is reported as it passes, by `recordActivity`.)
extension WorkloadController {
    /// CPU use above this share of one CPU counts as activity.
    static let busyCPU = 0.1
    /// GPU utilisation at or above this percentage counts as activity.
    static let busyGPU = 10

    /// How often a workload with idle timeout `timeout` is sampled: a quarter of it, from 2 to 30 seconds.
    static func sampleInterval(timeout: Int) -> TimeInterval { min(30, max(2, Double(timeout) / 4)) }

    /// Samples the workloads that are due: CPU time per task, GPU utilisation per node.
    func sampleUsage() async {
        let now = clock.now()
        let watched = active.values.filter { $0.phase == .running && idleTimeout(of: $0) != nil }
        let ids = Set(watched.map(\.id))
        nextSample = nextSample.filter { ids.contains($0.key) }
        cpuSamples = cpuSamples.filter { ids.contains(String($0.key.split(separator: "#").first ?? "")) }
        var gpuByNode: [String: [Int: Int]] = [:]
        var asked: [(Workload, String, RuntimeKind)] = []
        for w in watched {
            guard let timeout = idleTimeout(of: w), now >= nextSample[w.id] ?? .distantPast else { continue }
            nextSample[w.id] = now.addingTimeInterval(Self.sampleInterval(timeout: timeout))
            let kind = runtimeKind(of: w)
            var busy: String?
            for t in w.tasks where t.phase == .running {
                if let probe = runtimes.runtime(kind) as? any TaskUsageProbe, let handle = t.backendID,
                    let cpu = await probe.cpuSeconds(workloadID: w.id, taskIndex: t.index, handle: handle)
                {
                    let key = "\(w.id)#\(t.index)"
                    if let last = cpuSamples[key], now > last.at, (cpu - last.seconds) / now.timeIntervalSince(last.at) >= Self.busyCPU { busy = "cpu" }
                    cpuSamples[key] = (cpu, now)
                }
                if busy == nil, !t.gpus.isEmpty, let node = t.node, let probe = runtimes.inventory as? any GPUUtilizationProbe {
                    if gpuByNode[node] == nil { gpuByNode[node] = await probe.gpuUtilization(node: node) ?? [:] }
                    if t.gpus.contains(where: { (gpuByNode[node]?[$0] ?? 0) >= Self.busyGPU }) { busy = "gpu" }
                }
            }
            if let busy {
                recordActivity(w.id, source: busy, at: now)
            } else if let t = w.tasks.first, t.phase == .running, let handle = t.backendID, !asking.contains(w.id),
                w.spec.idleProbe != nil || w.spec.app.flatMap({ try? resolver.apps?.definition($0) })?.activityPath != nil
            {
                // Only instances with something to ask: a probe, or an app that reports its own use.
                asked.append((w, handle, kind))
            }
        }
        // What the instances say when asked (their app's own word, the user's probe): each on a task of its own,
        // off the actor, answered when it answers (seconds, for a slow app or probe): one instance's slowness never
        // holds up the sampling of others. An instance is not asked again before it has answered.
        let apps = resolver.apps
        let runtimes = runtimes
        for (w, handle, kind) in asked {
            asking.insert(w.id)
            Task {
                let runtime = runtimes.runtime(kind)
                var source: String?
                if let apps, let connector = runtime as? any TaskPortConnector,
                    await ActivitySignals.appBusy(w, handle: handle, apps: apps, connector: connector)
                {
                    source = "kernel"
                } else if let probe = w.spec.idleProbe, let runner = runtime as? any TaskExecRunner,
                    await ActivitySignals.probeSucceeds(w, command: probe, handle: handle, runner: runner)
                {
                    source = "probe"
                }
                await self.answered(w.id, source: source)
            }
        }
    }

    /// An instance asked for signs of use answered.
    func answered(_ id: String, source: String?) {
        asking.remove(id)
        if let source { recordActivity(id, source: source, at: clock.now()) }
    }
}
