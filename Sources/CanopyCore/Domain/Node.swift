/// One GPU on a node.
public struct GPU: Sendable, Hashable, Codable {
    /// Index as the driver numbers it (the value for CUDA_VISIBLE_DEVICES).
    public var index: Int
    /// Model name, e.g. "NVIDIA H100 80GB HBM3".
    public var model: String
    /// Memory in MiB, when known.
    public var memoryMiB: Int?
    /// The device UUID, when known.
    public var uuid: String?
    /// The device's minor number (its node is `/dev/nvidiaN`), when known: discovered GPUs only. It need not equal
    /// `index`, which follows PCI bus order.
    public var minor: Int?

    /// Creates a GPU description.
    public init(index: Int, model: String, memoryMiB: Int? = nil, uuid: String? = nil, minor: Int? = nil) {
        self.index = index
        self.model = model
        self.memoryMiB = memoryMiB
        self.uuid = uuid
        self.minor = minor
    }

    /// Whether this GPU satisfies a requested model (nil = any): case-insensitive substring, so "H100" matches "NVIDIA H100 80GB HBM3".
    public func matches(model wanted: String?) -> Bool {
        guard let wanted, !wanted.isEmpty else { return true }
        return model.lowercased().contains(wanted.lowercased())
    }
}

/// Whether a node takes new work.
public enum NodeState: String, Sendable, Codable {
    /// Takes work (however much of it is taken already: that is in the allocation).
    case ready = "Ready"
    /// Finishes what runs, takes nothing new.
    case draining = "Draining"
    /// Drained: takes nothing and runs nothing.
    case drained = "Drained"
    /// Unreachable or failed.
    case down = "Down"
}

/// A machine that runs tasks, with its capacity.
public struct Node: Sendable, Hashable, Codable {
    /// Name, unique in its pool.
    public var name: String
    /// The pool (Slurm partition) it belongs to.
    public var pool: String
    /// Its state.
    public var state: NodeState
    /// Allocatable CPU in millicores.
    public var cpuMillis: Int
    /// Allocatable memory in MiB.
    public var memoryMiB: Int
    /// Its GPUs.
    public var gpus: [GPU]
    /// Where the GPU list came from: "nvidia-smi", "declared", "none", or the backend's inventory (named after it).
    public var gpuSource: String
    /// The state in the backend's own words, when a backend reports one.
    public var backendState: String?

    /// Creates a node.
    public init(name: String, pool: String = "local", state: NodeState = .ready, cpuMillis: Int, memoryMiB: Int, gpus: [GPU] = [], gpuSource: String = "none") {
        self.name = name
        self.pool = pool
        self.state = state
        self.cpuMillis = cpuMillis
        self.memoryMiB = memoryMiB
        self.gpus = gpus
        self.gpuSource = gpuSource
    }

    /// How many GPUs match a model.
    public func gpuCount(model: String?) -> Int { gpus.filter { $0.matches(model: model) }.count }

    /// Whether a single task asking for `r` could ever fit here.
    public func couldEverFit(_ r: Resources) -> Bool {
        r.cpuMillis <= cpuMillis && r.memoryMiB <= memoryMiB && r.gpus <= gpuCount(model: r.gpuModel)
    }
}

/// A node with what is allocated on it now, as the API shows it.
public struct NodeView: Sendable, Codable {
    /// The node.
    public var node: Node
    /// Allocated CPU (millicores), memory (MiB) and GPU indices.
    public var allocatedCPUMillis: Int
    /// Allocated memory in MiB.
    public var allocatedMemoryMiB: Int
    /// Allocated GPU indices.
    public var allocatedGPUs: [Int]
    /// How many tasks run there.
    public var tasks: Int

    /// Creates a view.
    public init(node: Node, allocatedCPUMillis: Int, allocatedMemoryMiB: Int, allocatedGPUs: [Int], tasks: Int) {
        self.node = node
        self.allocatedCPUMillis = allocatedCPUMillis
        self.allocatedMemoryMiB = allocatedMemoryMiB
        self.allocatedGPUs = allocatedGPUs
        self.tasks = tasks
    }
}
