/// A queue workloads wait in. Queues order among themselves by priority; within a queue, by workload priority, then FIFO.
public struct Queue: Sendable, Hashable, Codable {
    /// Its name: lowercase letters, digits, '-', '_', 1 to 63 characters.
    public var name: String
    /// Higher-priority queues are served first.
    public var priority: Int
    /// A description for people.
    public var description: String
    /// The pool (partition) its workloads run in; nil for any.
    public var pool: String?
    /// Whether containers of its workloads may run as root (an admin's choice); otherwise they run as their own uid.
    public var allowRoot: Bool
    /// The lease an interactive workload of this queue gets when it asks for none, in seconds (nil: the built-in
    /// default, `builtInDefaultLease`).
    public var defaultLeaseSeconds: Int?
    /// The longest lease a workload may hold, counted from now whenever it is set or extended, in seconds; nil for
    /// no cap (then `unlimited` is allowed). Users cannot switch it off.
    public var maxLeaseSeconds: Int?
    /// Interactive workloads showing no activity for this long are stopped (`IdleTimeout`), in seconds; nil: never.
    public var idleTimeoutSeconds: Int?

    /// The queue that always exists.
    public static let defaultName = "default"

    /// Creates a queue.
    public init(
        name: String, priority: Int = 0, description: String = "", pool: String? = nil, allowRoot: Bool = false, defaultLeaseSeconds: Int? = nil,
        maxLeaseSeconds: Int? = nil, idleTimeoutSeconds: Int? = nil
    ) {
        self.idleTimeoutSeconds = idleTimeoutSeconds
        self.defaultLeaseSeconds = defaultLeaseSeconds
        self.maxLeaseSeconds = maxLeaseSeconds
        self.name = name
        self.priority = priority
        self.description = description
        self.pool = pool
        self.allowRoot = allowRoot
    }

    private enum CodingKeys: String, CodingKey { case name, priority, description, pool, allowRoot, defaultLeaseSeconds, maxLeaseSeconds, idleTimeoutSeconds }

    /// Decodes a stored queue; `allowRoot` is false in records written before it existed.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        priority = try c.decode(Int.self, forKey: .priority)
        description = try c.decode(String.self, forKey: .description)
        pool = try c.decodeIfPresent(String.self, forKey: .pool)
        allowRoot = try c.decodeIfPresent(Bool.self, forKey: .allowRoot) ?? false
        defaultLeaseSeconds = try c.decodeIfPresent(Int.self, forKey: .defaultLeaseSeconds)
        maxLeaseSeconds = try c.decodeIfPresent(Int.self, forKey: .maxLeaseSeconds)
        idleTimeoutSeconds = try c.decodeIfPresent(Int.self, forKey: .idleTimeoutSeconds)
    }

    /// The lease an interactive workload gets where neither it nor its queue names one: 12 hours.
    public static let builtInDefaultLease = 12 * 3600

    /// The lease a workload of this queue gets when it asks for `requested` (nil: the queue's default), capped.
    public func lease(for requested: Lease?) -> Lease {
        let chosen = requested ?? .seconds(defaultLeaseSeconds ?? Queue.builtInDefaultLease)
        guard let cap = maxLeaseSeconds else { return chosen }
        return .seconds(min(chosen.seconds ?? cap, cap))
    }

    /// The naming rule, as errors state it.
    public static let nameRule = "queue names are 1 to 63 lowercase letters, digits, '-' or '_'"

    /// Whether a name is acceptable.
    public static func isValidName(_ name: String) -> Bool {
        (1...63).contains(name.utf8.count)
            && name.utf8.allSatisfy { ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) || $0 == 45 || $0 == 95 }
    }
}
