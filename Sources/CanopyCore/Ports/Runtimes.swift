/// The runtimes a server runs tasks with, put together: the inventory the scheduler places on, the runtimes that
/// run what it placed (by kind), and a backend that schedules for itself, if there is one.
///
/// With a scheduling backend, every workload goes to it. Without one, a workload with an image runs in a container
/// when a container runtime is registered, and every other workload runs as processes.
public struct Runtimes: Sendable {
    /// The nodes placement works on (the host's inventory, or the backend's own nodes).
    public var inventory: any NodeInventory
    /// The runtimes that run placed tasks, by kind.
    public var placed: [RuntimeKind: any PlacedRuntime]
    /// A backend with its own scheduler; when set, every workload is handed to it.
    public var backend: (any SchedulingBackend)?

    /// Runtimes that Canopy places for, on `inventory`.
    public init(inventory: any NodeInventory, placed: [any PlacedRuntime]) {
        self.inventory = inventory
        self.placed = Dictionary(placed.map { ($0.kind, $0) }, uniquingKeysWith: { _, last in last })
        self.backend = nil
    }

    /// A backend that schedules for itself, and is its own inventory.
    public init(backend: any SchedulingBackend) {
        self.inventory = backend
        self.placed = [:]
        self.backend = backend
    }

    /// Adds (or replaces) a placed runtime, under its kind.
    public mutating func register(_ runtime: any PlacedRuntime) { placed[runtime.kind] = runtime }

    /// Whether workloads are handed to a backend that schedules for itself.
    public var delegates: Bool { backend != nil }

    /// The runtime a workload's tasks use: the scheduling backend when there is one; otherwise a container when the
    /// spec names an image and a container runtime is registered; otherwise a process.
    public func kind(for spec: WorkloadSpec) -> RuntimeKind {
        if let backend { return backend.kind }
        if spec.image != nil, placed[.container] != nil { return .container }
        return .process
    }

    /// The runtime of that kind, if it is configured.
    public func runtime(_ kind: RuntimeKind) -> (any TaskRuntime)? {
        if let backend, backend.kind == kind { return backend }
        return placed[kind]
    }

    /// The kind a task recorded, or for a record written before kinds were recorded (nil), the kind such tasks
    /// had: the scheduling backend's when there is one, else the process runtime's.
    public func kind(recorded: RuntimeKind?) -> RuntimeKind {
        recorded ?? backend?.kind ?? .process
    }

    /// The runtime that owns (or would own) a task: the one it recorded; for a task started before runtimes were
    /// recorded, see `kind(recorded:)`; for one never started, the one its workload would use.
    public func kind(of task: TaskStatus, spec: WorkloadSpec) -> RuntimeKind {
        if let recorded = task.runtime { return recorded }
        if task.backendID != nil { return kind(recorded: nil) }
        return kind(for: spec)
    }

    /// Every runtime, the backend first; each once.
    public var all: [any TaskRuntime] {
        var out: [any TaskRuntime] = []
        if let backend { out.append(backend) }
        for kind in placed.keys.sorted(by: { $0.rawValue < $1.rawValue }) where kind != backend?.kind {
            if let r = placed[kind] { out.append(r) }
        }
        return out
    }

    /// Every runtime's notices, for the log.
    public var limitations: [String] { all.flatMap(\.limitations) }
}
