/// Which workloads a listing wants, newest first.
public struct WorkloadQuery: Sendable, Hashable {
    /// Only this tenant's (nil: every tenant's, for admins).
    public var tenant: String?
    /// Only this queue's.
    public var queue: String?
    /// Only these phases (empty: any).
    public var phases: Set<Phase>
    /// Only workloads submitted before this sequence number (the cursor of the previous page).
    public var beforeSeq: Int64?
    /// At most this many.
    public var limit: Int
    /// Only workloads of this kind.
    public var kind: WorkloadKind?
    /// Only workloads with one of these names (empty: any).
    public var names: Set<String> = []
    /// Only workloads carrying every one of these labels.
    public var labels: [String: String] = [:]
    /// Only workloads whose dialect extension has these values: dialect, then field, then value.
    public var extensionFields: [String: [String: String]] = [:]
    /// Only workloads running this app (`.none`: those running none).
    public var app: AppFilter?
    /// Skips this many matches first (a page of a listing that counts from its start).
    public var offset: Int = 0
    /// Oldest first instead of newest first.
    public var oldestFirst = false

    /// Which app a listing wants.
    public enum AppFilter: Sendable, Hashable {
        case none
        case named(String)
    }

    /// Creates a query.
    public init(
        tenant: String? = nil, queue: String? = nil, phases: Set<Phase> = [], beforeSeq: Int64? = nil, limit: Int = 100, kind: WorkloadKind? = nil,
        names: Set<String> = [], labels: [String: String] = [:], extensionFields: [String: [String: String]] = [:], app: AppFilter? = nil,
        offset: Int = 0, oldestFirst: Bool = false
    ) {
        self.extensionFields = extensionFields
        self.tenant = tenant
        self.queue = queue
        self.phases = phases
        self.beforeSeq = beforeSeq
        self.limit = limit
        self.kind = kind
        self.names = names
        self.labels = labels
        self.app = app
        self.offset = offset
        self.oldestFirst = oldestFirst
    }
}

/// Persistence. Every write returns only once it is durable.
public protocol Store: Sendable {
    /// Records a new workload, assigning its sequence number; durable on return.
    func insert(_ workload: Workload) async throws -> Workload
    /// Records new states of existing workloads; durable on return.
    func update(_ workloads: [Workload]) async throws
    /// One workload by id, whatever its tenant (callers scope it).
    func workload(id: String) async throws -> Workload?
    /// A page of workloads, newest first (oldest first when the query says so).
    func workloads(_ query: WorkloadQuery) async throws -> [Workload]
    /// How many workloads match a query, whatever its limit, offset and cursor: a listing's total.
    func countWorkloads(_ query: WorkloadQuery) async throws -> Int
    /// Every workload that is not finished, oldest first: what a restart must pick up.
    func activeWorkloads() async throws -> [Workload]
    /// Deletes a workload's record; false when there was none.
    func deleteWorkload(id: String) async throws -> Bool

    /// All queues.
    func queues() async throws -> [Queue]
    /// Creates or replaces a queue.
    func save(queue: Queue) async throws
    /// Deletes a queue.
    func deleteQueue(name: String) async throws

    /// Stores a token record.
    func save(token: TokenRecord) async throws
    /// All token records.
    func tokens() async throws -> [TokenRecord]

    /// Stores an access-key record.
    func save(accessKey: AccessKeyRecord) async throws
    /// All access-key records.
    func accessKeys() async throws -> [AccessKeyRecord]

    /// Creates or replaces a dialect's record; throws already-exists if another record of the kind has its tenant and name.
    func put(record: StoredRecord) async throws
    /// One record by kind and id.
    func record(kind: String, id: String) async throws -> StoredRecord?
    /// A tenant's records of one kind (every tenant's when nil), oldest first.
    func records(kind: String, tenant: String?) async throws -> [StoredRecord]
    /// Deletes a record; returns whether it existed.
    func deleteRecord(kind: String, id: String) async throws -> Bool
}
