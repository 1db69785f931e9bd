/// The pending workloads of one queue in service order (priority, then submission), kept sorted so a
/// workload's position is a binary search, even with a hundred thousand held workloads.
struct QueueOrder: Sendable {
    struct Key: Comparable, Sendable {
        var priority: Int
        var seq: Int64
        static func < (a: Key, b: Key) -> Bool { a.priority != b.priority ? a.priority > b.priority : a.seq < b.seq }
    }

    private(set) var keys: [Key] = []

    private func index(of key: Key) -> Int {
        var lo = 0, hi = keys.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if keys[mid] < key { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    mutating func insert(_ key: Key) {
        if let last = keys.last, last < key { keys.append(key) } else { keys.insert(key, at: index(of: key)) }
    }

    mutating func remove(_ key: Key) {
        let i = index(of: key)
        if i < keys.count, keys[i] == key { keys.remove(at: i) }
    }

    /// 1-based position, or nil if absent.
    func position(of key: Key) -> Int? {
        let i = index(of: key)
        return i < keys.count && keys[i] == key ? i + 1 : nil
    }

    var count: Int { keys.count }
}
