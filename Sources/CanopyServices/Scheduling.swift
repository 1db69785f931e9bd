import CanopyCore
import Foundation

/// Resources held on a node by one running task.
public struct Allocation: Sendable, Hashable {
    /// The workload.
    public var workloadID: String
    /// The node.
    public var node: String
    /// CPU in millicores.
    public var cpuMillis: Int
    /// Memory in MiB.
    public var memoryMiB: Int
    /// GPU indices.
    public var gpus: [Int]
    /// When it must have ended by (its max duration), if it has one: what backfill plans with.
    public var endsBy: Date?

    /// Creates an allocation.
    public init(workloadID: String, node: String, cpuMillis: Int, memoryMiB: Int, gpus: [Int], endsBy: Date?) {
        self.workloadID = workloadID
        self.node = node
        self.cpuMillis = cpuMillis
        self.memoryMiB = memoryMiB
        self.gpus = gpus
        self.endsBy = endsBy
    }
}

/// Where one task goes.
public struct TaskPlacement: Sendable, Hashable {
    /// The task.
    public var taskIndex: Int
    /// The node.
    public var node: String
    /// GPU indices on that node.
    public var gpus: [Int]
}

/// One scheduling pass: pure, so its ordering, gang and starvation rules are tested table by table.
///
/// Order: queue priority, then workload priority (both higher first), then submission order (FIFO).
/// Gangs: every task of a workload is placed in the same pass or none is.
/// No starvation: the first workload in that order that does not fit gets a reservation: the resources
/// free on its nodes are held for it, so later, smaller workloads cannot keep taking them (they grow as
/// running tasks end until it fits). A later workload may still use held resources when its max duration
/// guarantees it ends before the reservation's shadow time (the moment enough running work will have ended
/// by their own max durations): EASY backfill. With no max durations known, nothing backfills into a hold.
public struct SchedulingPass: Sendable {
    /// A pending workload as the pass sees it.
    public struct Candidate: Sendable {
        public var workload: Workload
        public var queuePriority: Int
        public init(workload: Workload, queuePriority: Int) {
            self.workload = workload
            self.queuePriority = queuePriority
        }
    }

    /// What the pass decided.
    public struct Outcome: Sendable {
        /// Workloads to start now, with their placements, in order.
        public var starts: [(workloadID: String, placements: [TaskPlacement])] = []
        /// Why each other pending workload waits.
        public var reasons: [String: Reason] = [:]
        /// 1-based position of each pending workload in its queue.
        public var positions: [String: Int] = [:]
        /// The workload holding a reservation, and its shadow time.
        public var reservation: (workloadID: String, shadow: Date?)?
    }

    public var nodes: [Node]
    public var allocations: [Allocation]
    public var candidates: [Candidate]
    public var now: Date

    public init(nodes: [Node], allocations: [Allocation], candidates: [Candidate], now: Date) {
        self.nodes = nodes
        self.allocations = allocations
        self.candidates = candidates
        self.now = now
    }

    /// Free resources on one node.
    struct Free: Sendable {
        var cpuMillis: Int
        var memoryMiB: Int
        var gpus: [GPU]

        func fits(_ r: Resources) -> Bool {
            r.cpuMillis <= cpuMillis && r.memoryMiB <= memoryMiB && r.gpus <= gpus.filter { $0.matches(model: r.gpuModel) }.count
        }

        /// Takes `r`, returning the GPU indices given.
        mutating func take(_ r: Resources) -> [Int] {
            cpuMillis -= r.cpuMillis
            memoryMiB -= r.memoryMiB
            var given: [Int] = []
            gpus.removeAll { gpu in
                guard given.count < r.gpus, gpu.matches(model: r.gpuModel) else { return false }
                given.append(gpu.index)
                return true
            }
            return given
        }

        mutating func give(cpuMillis c: Int, memoryMiB m: Int, gpus g: [GPU]) {
            cpuMillis += c
            memoryMiB += m
            gpus += g
            gpus.sort { $0.index < $1.index }
        }
    }

    /// Sorts candidates into service order.
    public static func ordered(_ candidates: [Candidate]) -> [Candidate] {
        candidates.sorted {
            if $0.queuePriority != $1.queuePriority { return $0.queuePriority > $1.queuePriority }
            if $0.workload.spec.priority != $1.workload.spec.priority { return $0.workload.spec.priority > $1.workload.spec.priority }
            return $0.workload.seq < $1.workload.seq
        }
    }

    func freeByNode() -> [String: Free] {
        var free: [String: Free] = [:]
        for node in nodes where node.state == .ready {
            free[node.name] = Free(cpuMillis: node.cpuMillis, memoryMiB: node.memoryMiB, gpus: node.gpus)
        }
        for a in allocations {
            guard var f = free[a.node] else { continue }
            f.cpuMillis -= a.cpuMillis
            f.memoryMiB -= a.memoryMiB
            let taken = Set(a.gpus)
            f.gpus.removeAll { taken.contains($0.index) }
            free[a.node] = f
        }
        return free
    }

    /// Places every task of `spec` in `free`, or returns nil (gang: all or none). Nodes in name order, first fit.
    static func place(_ spec: WorkloadSpec, in free: [String: Free]) -> [TaskPlacement]? {
        var free = free
        let names = free.keys.sorted()
        var placements: [TaskPlacement] = []
        for index in 0..<spec.tasks {
            guard let name = names.first(where: { free[$0]!.fits(spec.resources) }) else { return nil }
            let gpus = free[name]!.take(spec.resources)
            placements.append(TaskPlacement(taskIndex: index, node: name, gpus: gpus))
        }
        return placements
    }

    /// `free` less what a reservation holds: on each node, the reserved demand is taken out of what is free.
    static func subtracting(hold: [String: Resources], from free: [String: Free]) -> [String: Free] {
        var out = free
        for (node, r) in hold {
            guard var f = out[node] else { continue }
            f.cpuMillis = max(0, f.cpuMillis - r.cpuMillis)
            f.memoryMiB = max(0, f.memoryMiB - r.memoryMiB)
            var left = r.gpus
            f.gpus.removeAll { gpu in
                guard left > 0, gpu.matches(model: r.gpuModel) else { return false }
                left -= 1
                return true
            }
            out[node] = f
        }
        return out
    }

    /// Runs the pass.
    public func run() -> Outcome {
        var outcome = Outcome()
        let order = Self.ordered(candidates)
        var perQueue: [String: Int] = [:]
        for c in order {
            let q = c.workload.spec.queue
            perQueue[q, default: 0] += 1
            outcome.positions[c.workload.id] = perQueue[q]
        }
        var free = freeByNode()
        let capacity = Dictionary(
            nodes.filter { $0.state == .ready }.map { ($0.name, Free(cpuMillis: $0.cpuMillis, memoryMiB: $0.memoryMiB, gpus: $0.gpus)) },
            uniquingKeysWith: { first, _ in first })
        var allocations = self.allocations
        var hold: [String: Resources] = [:]
        var reservation: (id: String, shadow: Date?)?

        for c in order {
            let w = c.workload
            if w.spec.hold {
                outcome.reasons[w.id] = Reason(.held, "held until released (canopy release ID)")
                continue
            }
            if let placements = Self.place(w.spec, in: Self.subtracting(hold: hold, from: free)) {
                start(w, placements, &free, &allocations, &outcome)
                continue
            }
            if let r = reservation, let maxDuration = w.spec.maxDurationSeconds, let shadow = r.shadow,
                now.addingTimeInterval(Double(maxDuration)) <= shadow, let placements = Self.place(w.spec, in: free)
            {
                // Backfill: it ends before the reserved workload could start anyway.
                start(w, placements, &free, &allocations, &outcome)
                continue
            }
            if let r = reservation {
                if Self.place(w.spec, in: free) != nil {
                    outcome.reasons[w.id] = Reason(.reservedForOther, "resources are held for workload \(r.id), which is ahead of it in the queue order")
                } else {
                    outcome.reasons[w.id] = Reason(.insufficientResources, shortfall(w.spec, free))
                }
                continue
            }
            // The first workload that does not fit: reserve for it.
            outcome.reasons[w.id] = Reason(.insufficientResources, shortfall(w.spec, free))
            guard let target = Self.place(w.spec, in: capacity) else { continue }
            var demand: [String: Resources] = [:]
            for p in target {
                var d = demand[p.node] ?? Resources(cpuMillis: 0, memoryMiB: 0, gpus: 0, gpuModel: w.spec.resources.gpuModel)
                d.cpuMillis += w.spec.resources.cpuMillis
                d.memoryMiB += w.spec.resources.memoryMiB
                d.gpus += w.spec.resources.gpus
                demand[p.node] = d
            }
            hold = demand
            let shadow = shadowTime(demand: demand, free: free, allocations: allocations)
            reservation = (w.id, shadow)
            outcome.reservation = (w.id, shadow)
        }
        return outcome
    }

    private func start(_ w: Workload, _ placements: [TaskPlacement], _ free: inout [String: Free], _ allocations: inout [Allocation], _ outcome: inout Outcome) {
        let endsBy = w.spec.maxDurationSeconds.map { now.addingTimeInterval(Double($0)) }
        for p in placements {
            _ = free[p.node]?.take(Resources(cpuMillis: w.spec.resources.cpuMillis, memoryMiB: w.spec.resources.memoryMiB, gpus: 0))
            let given = Set(p.gpus)
            free[p.node]?.gpus.removeAll { given.contains($0.index) }
            allocations.append(
                Allocation(workloadID: w.id, node: p.node, cpuMillis: w.spec.resources.cpuMillis, memoryMiB: w.spec.resources.memoryMiB, gpus: p.gpus, endsBy: endsBy))
        }
        outcome.starts.append((w.id, placements))
    }

    /// When the reserved demand will fit, if every allocation on its nodes ends by its max duration; nil if never known.
    func shadowTime(demand: [String: Resources], free: [String: Free], allocations: [Allocation]) -> Date? {
        var f = free
        let gpusByNode = Dictionary(nodes.map { ($0.name, $0.gpus) }, uniquingKeysWith: { first, _ in first })
        func fits() -> Bool { demand.allSatisfy { f[$0.key]?.fits($0.value) ?? false } }
        let relevant = allocations.filter { demand[$0.node] != nil }.sorted { ($0.endsBy ?? .distantFuture) < ($1.endsBy ?? .distantFuture) }
        for a in relevant {
            guard let end = a.endsBy else { return nil }
            let gpus = (gpusByNode[a.node] ?? []).filter { a.gpus.contains($0.index) }
            f[a.node]?.give(cpuMillis: a.cpuMillis, memoryMiB: a.memoryMiB, gpus: gpus)
            if fits() { return end }
        }
        return nil
    }

    /// A sentence naming what is short, on the node that comes closest.
    func shortfall(_ spec: WorkloadSpec, _ free: [String: Free]) -> String {
        let r = spec.resources
        let total = spec.totalResources
        let model = r.gpuModel.map { " (\($0))" } ?? ""
        var parts: [String] = []
        for name in free.keys.sorted() {
            let f = free[name]!
            if total.gpus > 0 {
                let have = f.gpus.filter { $0.matches(model: r.gpuModel) }.count
                if have < total.gpus { parts.append("\(total.gpus) GPU\(total.gpus == 1 ? "" : "s")\(model): \(have) of \(nodeGPUs(name, r.gpuModel)) free on node \(name)") }
            }
            if f.cpuMillis < total.cpuMillis {
                parts.append("\(Quantity.formatCPU(total.cpuMillis)) CPU: \(Quantity.formatCPU(max(0, f.cpuMillis))) of \(Quantity.formatCPU(nodeCPU(name))) free on node \(name)")
            }
            if f.memoryMiB < total.memoryMiB {
                parts.append("\(Quantity.formatMemory(total.memoryMiB)) memory: \(Quantity.formatMemory(max(0, f.memoryMiB))) free on node \(name)")
            }
            if !parts.isEmpty { break }
        }
        if parts.isEmpty {
            return spec.tasks > 1
                ? "waiting for room for all \(spec.tasks) tasks at once (gang)" : "waiting for resources"
        }
        return "waiting for " + parts.joined(separator: "; ")
    }

    private func nodeGPUs(_ name: String, _ model: String?) -> Int { nodes.first { $0.name == name }?.gpuCount(model: model) ?? 0 }
    private func nodeCPU(_ name: String) -> Int { nodes.first { $0.name == name }?.cpuMillis ?? 0 }
}
