import CanopyCore
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// This host as one node: its CPUs, memory and GPUs, probed once. Every runtime that runs tasks on the host (the
/// process runtime, a container runtime) shares this one value, so the scheduler keeps one ledger of the host's
/// CPUs, memory and GPU indices whichever runtime a task uses.
public struct HostInventory: NodeInventory, Sendable {
    /// The host, as a node.
    public let node: Node

    /// Probes the host: all online CPUs and all memory unless overridden; GPUs as declared, else found by nvidia-smi.
    public init(nodeName: String = "local", declaredGPUs: [GPU]? = nil, cpuMillis: Int? = nil, memoryMiB: Int? = nil) {
        let gpus: [GPU]
        let gpuSource: String
        if let declaredGPUs {
            gpus = declaredGPUs
            gpuSource = "declared"
        } else if let found = GPUDiscovery.discover() {
            gpus = found
            gpuSource = "nvidia-smi"
        } else {
            gpus = []
            gpuSource = "none"
        }
        node = Node(
            name: nodeName, pool: "local", cpuMillis: cpuMillis ?? Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) * 1000,
            memoryMiB: memoryMiB ?? Self.totalMemoryMiB(), gpus: gpus, gpuSource: gpuSource)
    }

    /// An inventory of a node described by hand (tests).
    public init(node: Node) { self.node = node }

    /// The one node.
    public func nodes() async throws -> [Node] { [node] }

    /// The host's memory, from /proc/meminfo (1 GiB when it cannot be read).
    public static func totalMemoryMiB() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return 1024 }
        for line in text.split(separator: "\n") where line.hasPrefix("MemTotal:") {
            let kb = line.split(separator: " ").compactMap { Int($0) }.first ?? 0
            return kb / 1024
        }
        return 1024
    }
}

extension HostInventory: GPUUtilizationProbe {
    /// nvidia-smi's utilisation of each discovered GPU; nil for declared GPUs (nothing to measure) or when it fails.
    public func gpuUtilization(node name: String) async -> [Int: Int]? {
        guard name == node.name, node.gpuSource == "nvidia-smi" else { return nil }
        return await Blocking.run { GPUDiscovery.utilization() }
    }
}
