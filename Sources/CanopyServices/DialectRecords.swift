import CanopyCore
import Foundation

/// What dialects keep of their own beside Canopy's objects (a vendor's workspaces, say): records of a kind, owned
/// by a tenant. Dialects reach them through this service, never the Store; a
/// record another tenant owns is, to a caller, one that does not exist. Each dialect reaches only kinds of its own
/// (`NAME.KIND` for dialect `NAME`), never Canopy's (`canopy.user`, `canopy.ssh-key`) or another dialect's.
public struct DialectRecords: Sendable {
    let store: any Store
    let dialect: String

    public init(store: any Store, dialect: String) {
        self.store = store
        self.dialect = dialect
    }

    func check(_ kind: String) throws {
        guard kind.hasPrefix(dialect + "."), kind.count > dialect.count + 1 else {
            throw CanopyError(.internal, "the \(dialect) dialect asked for records of kind \(kind), which are not its own")
        }
    }

    /// One record the principal may see; nil when there is none or it is another tenant's.
    public func get(kind: String, id: String, as principal: Principal) async throws -> StoredRecord? {
        try check(kind)
        guard let r = try await store.record(kind: kind, id: id), principal.canSee(tenant: r.tenant) else { return nil }
        return r
    }

    /// A tenant's records of a kind, oldest first.
    public func records(kind: String, tenant: String) async throws -> [StoredRecord] {
        try check(kind)
        return try await store.records(kind: kind, tenant: tenant)
    }

    /// Creates or replaces a record (already-exists when another of the kind has its tenant and name).
    public func put(record: StoredRecord) async throws {
        try check(record.kind)
        try await store.put(record: record)
    }

    /// Deletes a record; whether it existed.
    public func deleteRecord(kind: String, id: String) async throws -> Bool {
        try check(kind)
        return try await store.deleteRecord(kind: kind, id: id)
    }
}
