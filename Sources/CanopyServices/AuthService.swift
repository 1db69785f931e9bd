import CanopyCore
import Crypto
import Foundation
import Synchronization

/// Bearer tokens: issued once, stored as SHA-256 hashes, checked against an in-memory index.
public final class AuthService: Sendable {
    private let store: any Store
    private let byHash = Mutex<[String: TokenRecord]>([:])

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
        SHA256.hash(data: Data(token.utf8)).map { String(format: "%02x", $0) }.joined()
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

    /// Tokens visible to a principal (admins see all; others their own tenant's).
    public func list(as principal: Principal) async throws -> [TokenRecord] {
        try await store.tokens().filter { !$0.revoked && principal.canSee(tenant: $0.principal.tenant) }
    }

    /// Revokes a token.
    public func revoke(id: String, as principal: Principal) async throws {
        guard var record = try await store.tokens().first(where: { $0.id == id && !$0.revoked }), principal.canSee(tenant: record.principal.tenant) else {
            throw CanopyError.notFound("token", id)
        }
        record.revoked = true
        try await store.save(token: record)
        byHash.withLock { _ = $0.removeValue(forKey: record.hash) }
    }
}
