import CanopyCore
import Foundation

/// Idle detection's own signals, sampled for running interactive workloads whose queue has an idle timeout: a
/// task using more than a tenth of a CPU, or any of its GPUs busier than 10 %, counts as activity. (Traffic
/// through the proxy is reported as it passes, by `recordActivity`.)
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
            if let busy { recordActivity(w.id, source: busy, at: now) }
        }
    }
}
