import CanopyCore
import Crypto
import Foundation
import Synchronization

/// Bearer tokens: issued once, stored as SHA-256 hashes, checked against an in-memory index.
public final class AuthService: Sendable {
    private let store: any Store
    private let byHash = Mutex<[String: TokenRecord]>([:])
    /// Credentials a dialect issues and checks itself (signed tokens), for the instance proxy only.
    private let resolvers = Mutex<[@Sendable (String) -> Principal?]>([])
    /// Hashes of such credentials, each with how to check that its credential still stands (its password unchanged,
    /// its key not revoked) and when it expires, so that what is tied to the hash (proxy sessions) ends with it.
    private let vouched = Mutex<[String: Vouched]>([:])
    struct Vouched {
        var until: Date
        var check: @Sendable () -> Principal?
    }
    /// At most this many vouched hashes; the soonest to expire go first.
    static let maxVouched = 10_000

    /// Creates the service; call `load()` before use.
    public init(store: any Store) { self.store = store }

    /// Loads the stored token records.
    public func load() async throws {
        let all = try await store.tokens()
        byHash.withLock { index in
            for t in all where !t.revoked { index[t.hash] = t }
        }
    }

    /// SHA-256 of a token, hex.
    public static func hash(_ token: String) -> String {
        Hex.encode(SHA256.hash(data: Data(token.utf8)))
    }

    /// A fresh random token.
    public static func newToken() -> String {
        "cnp_" + Base62.encode(.random(in: .min ... .max), .random(in: .min ... .max)) + Base62.encode(.random(in: .min ... .max), .random(in: .min ... .max))
    }

    /// The principal a bearer token stands for, or nil.
    public func authenticate(_ token: String) -> Principal? {
        let h = Self.hash(token)
        return byHash.withLock { $0[h]?.principal }
    }

    /// The principal of a token for the instance proxy: Canopy's own, or a dialect's (a dialect's token opens its
    /// user's instances, as the vendor's access URLs do; it is not a credential of the native API).
    public func authenticateForInstances(_ token: String) -> Principal? {
        if let p = authenticate(token) { return p }
        for resolve in resolvers.withLock({ $0 }) {
            if let p = resolve(token) { return p }
        }
        return nil
    }

    /// The principal of a token given by its hash (`hash(_:)`), while that token stands; nil once it is revoked.
    public func authenticate(hash: String) -> Principal? {
        if let p = byHash.withLock({ $0[hash]?.principal }) { return p }
        let now = Date()
        guard let entry = vouched.withLock({ $0[hash] }) else { return nil }
        guard entry.until > now, let p = entry.check() else {
            _ = vouched.withLock { $0.removeValue(forKey: hash) }
            return nil
        }
        return p
    }

    /// Adds a dialect's own credentials: `resolve` gives the principal of a token it issued, nil for others.
    public func addResolver(_ resolve: @escaping @Sendable (String) -> Principal?) {
        resolvers.withLock { $0.append(resolve) }
    }

    /// Vouches for a dialect credential's hash until `until` (its expiry) while `check` finds it standing, for what
    /// is tied to it (proxy sessions from a login link).
    public func vouch(hash: String, until: Date, check: @escaping @Sendable () -> Principal?) {
        let now = Date()
        vouched.withLock { v in
            if v[hash] == nil && v.count >= Self.maxVouched {
                v = v.filter { $0.value.until > now }
                if v.count >= Self.maxVouched, let soonest = v.min(by: { $0.value.until < $1.value.until })?.key { v.removeValue(forKey: soonest) }
            }
            v[hash] = Vouched(until: until, check: check)
        }
    }

    /// Issues a token; returns the record and the token itself (shown once).
    public func issue(for principal: Principal, description: String, token: String? = nil) async throws -> (TokenRecord, String) {
        let secret = token ?? Self.newToken()
        let record = TokenRecord(id: Base62.encode(0, .random(in: .min ... .max)), hash: Self.hash(secret), principal: principal, description: description)
        try await store.save(token: record)
        byHash.withLock { $0[record.hash] = record }
        return (record, secret)
    }

    /// Whether a token is already known (used to adopt `CANOPY_ADMIN_TOKEN`).
    public func knows(_ token: String) -> Bool { authenticate(token) != nil }

    /// Tokens visible to a principal: an admin sees every token; anyone else only their own.
    public func list(as principal: Principal) async throws -> [TokenRecord] {
        try await store.tokens().filter { !$0.revoked && (principal.role == .admin || $0.principal.isSameUser(as: principal)) }
    }

    /// Revokes a token. Anyone may revoke their own; only an admin may revoke someone else's (to anyone else it
    /// looks missing), and the last admin token cannot be revoked.
    public func revoke(id: String, as principal: Principal) async throws {
        let all = try await store.tokens()
        guard var record = all.first(where: { $0.id == id && !$0.revoked }), principal.role == .admin || record.principal.isSameUser(as: principal) else {
            throw CanopyError.notFound("token", id)
        }
        try Self.keepAnAdmin(all, revoking: [record.id])
        record.revoked = true
        try await store.save(token: record)
        byHash.withLock { _ = $0.removeValue(forKey: record.hash) }
    }

    /// Revokes every token of a user in a tenant; returns how many. Refused when that would leave no admin token.
    public func revokeAll(user: String, tenant: String) async throws -> Int {
        let all = try await store.tokens()
        let theirs = all.filter { !$0.revoked && $0.principal.isUser(user, in: tenant) }
        try Self.keepAnAdmin(all, revoking: Set(theirs.map(\.id)))
        for var record in theirs {
            record.revoked = true
            try await store.save(token: record)
            byHash.withLock { _ = $0.removeValue(forKey: record.hash) }
        }
        return theirs.count
    }

    /// Throws when revoking `ids` would leave no live admin token: nobody could manage the server any more.
    static func keepAnAdmin(_ all: [TokenRecord], revoking ids: Set<String>) throws {
        let admins = all.filter { !$0.revoked && $0.principal.role == .admin }
        guard !admins.isEmpty, admins.allSatisfy({ ids.contains($0.id) }) else { return }
        throw CanopyError(.conflict, "that would revoke the last admin credential; issue another admin token first (canopy tokens create --admin)")
    }
}
