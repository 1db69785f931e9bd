import CanopyCore
import Crypto
import Foundation
import Synchronization
import _CryptoExtras

/// A user who signs in with a password (dialects whose clients get their tokens that way): only a slow salted hash
/// of the password is kept.
public struct PasswordUser: Sendable, Hashable, Codable {
    public var user: String
    public var tenant: String
    public var role: Principal.Role
    /// scrypt parameters and output: `N`, `r`, `p`, 16 bytes of salt and 32 of hash, as hex.
    public var scryptN: Int
    public var scryptR: Int
    public var scryptP: Int
    public var salt: String
    public var hash: String
    public var createdAt: Date
    public var passwordChangedAt: Date

    /// The principal it signs in as.
    public var principal: Principal { Principal(user: user, tenant: tenant, role: role) }
}

/// Users with passwords: records of kind `canopy.user` in the store (id `TENANT/USER`), hashed with scrypt
/// (N = 2^15, r = 8, p = 1: about 32 MiB and tens of milliseconds a check, so a stolen database is slow to guess
/// from). Sign-in attempts are throttled per client address and per user, so guessing online is slower still.
public final class PasswordService: Sendable {
    static let kind = "canopy.user"
    /// Passwords are between these lengths (Unicode code points).
    public static let minLength = 8
    public static let maxLength = 1024
    static let n = 1 << 15, r = 8, p = 1

    private let store: any Store
    private let clock: Clock
    /// Failed attempts per key (client address, or tenant/user): times of the recent ones.
    private let failures = Mutex<[String: [Date]]>([:])
    /// Hashes being computed now (sign-ins and new passwords alike): each takes 32 MiB and tens of milliseconds, so at
    /// most `maxConcurrentChecks` at once, on threads of their own (never Swift's cooperative pool, which they would stall).
    private let checking = Mutex(0)
    public static let maxConcurrentChecks = 4
    /// Every user's record by `TENANT/USER`, loaded at start and kept current: what tokens are checked against.
    private let index = Mutex<[String: PasswordUser]>([:])
    /// Tenants with password users by organisation id (`TenantID`), so a sign-in finds its tenant without hashing.
    private let tenantsByOrg = Mutex<[String: String]>([:])
    /// At most this many failures per key within `window` before sign-in is refused for the rest of it.
    public static let maxFailures = 10
    public static let window: TimeInterval = 300

    public init(store: any Store, clock: Clock = .system) {
        self.store = store
        self.clock = clock
    }

    /// Loads the stored users.
    public func load() async throws {
        let all = try await store.records(kind: Self.kind, tenant: nil).compactMap { try? JSONDecoder().decode(PasswordUser.self, from: $0.body) }
        index.withLock { i in for u in all { i[Self.id(user: u.user, tenant: u.tenant)] = u } }
        tenantsByOrg.withLock { o in for u in all { o[TenantID.of(u.tenant)] = u.tenant } }
    }

    /// The tenant whose organisation id (`TenantID`) this is, among tenants with password users; from memory.
    public func tenant(orgID: String) -> String? {
        tenantsByOrg.withLock { $0[orgID] }
    }

    /// Which password a record holds, for credentials issued on it to name: a new password (or the user's removal
    /// and re-creation) gives another.
    public static func generation(_ u: PasswordUser) -> String { String(u.hash.prefix(16)) }

    /// A user's current record, from memory (nil once removed).
    public func current(user: String, tenant: String) -> PasswordUser? {
        index.withLock { $0[Self.id(user: user, tenant: tenant)] }
    }

    /// Checks a user or tenant name as Canopy's tokens and keys have them.
    public static func checkName(_ name: String, field: String) throws {
        guard Queue.isValidName(name) else { throw CanopyError.invalid(field, "\(field) names are 1 to 63 lowercase letters, digits, '-' or '_'") }
    }

    /// Lengths in Unicode code points, as JSON Schema counts them (the OpenAPI document states these bounds).
    static func checkPassword(_ password: String) throws {
        let n = password.unicodeScalars.count
        guard n >= minLength else { throw CanopyError.invalid("password", "must be at least \(minLength) characters") }
        guard n <= maxLength else { throw CanopyError.invalid("password", "must be at most \(maxLength) characters") }
        guard !password.unicodeScalars.contains(where: { $0.value == 0 }) else { throw CanopyError.invalid("password", "must not contain NUL") }
    }

    /// `derive` on a thread of its own, if one of the `maxConcurrentChecks` slots is free now (`wait`: or within
    /// 10 s); nil when none is.
    func deriveGated(_ password: String, salt: [UInt8], n: Int, r: Int, p: Int, wait: Bool) async -> [UInt8]?? {
        let deadline = Date().addingTimeInterval(wait ? 10 : 0)
        while !checking.withLock({ c -> Bool in
            guard c < Self.maxConcurrentChecks else { return false }
            c += 1
            return true
        }) {
            guard Date() < deadline else { return nil }
            try? await Task.sleep(for: .milliseconds(20))
        }
        defer { checking.withLock { $0 -= 1 } }
        return await withCheckedContinuation { continuation in
            DispatchQueue.global(qos: .userInitiated).async {
                continuation.resume(returning: try? Self.derive(password, salt: salt, n: n, r: r, p: p))
            }
        }
    }

    static func derive(_ password: String, salt: [UInt8], n: Int, r: Int, p: Int) throws -> [UInt8] {
        let key = try KDF.Scrypt.deriveKey(from: Array(password.utf8), salt: salt, outputByteCount: 32, rounds: n, blockSize: r, parallelism: p)
        return key.withUnsafeBytes { Array($0) }
    }

    static func id(user: String, tenant: String) -> String { tenant + "/" + user }

    /// Creates a user with a password; 409 when the tenant already has that user with a password.
    public func create(user: String, tenant: String, role: Principal.Role, password: String) async throws -> PasswordUser {
        try Self.checkName(user, field: "user")
        try Self.checkName(tenant, field: "tenant")
        try Self.checkPassword(password)
        if try await store.record(kind: Self.kind, id: Self.id(user: user, tenant: tenant)) != nil {
            throw CanopyError(.alreadyExists, "user \(user) already has a password in tenant \(tenant); change it with canopy users passwd", field: "user")
        }
        let record = try await hashed(user: user, tenant: tenant, role: role, password: password, createdAt: clock.now())
        try await save(record)
        return record
    }

    /// Sets a new password (and keeps the role). 404 for a user without one.
    public func setPassword(user: String, tenant: String, password: String) async throws -> PasswordUser {
        try Self.checkPassword(password)
        guard let existing = try await get(user: user, tenant: tenant) else {
            throw CanopyError(.notFound, "no user \(user) with a password in tenant \(tenant)", field: "user")
        }
        let record = try await hashed(user: user, tenant: tenant, role: existing.role, password: password, createdAt: existing.createdAt)
        try await save(record)
        return record
    }

    func hashed(user: String, tenant: String, role: Principal.Role, password: String, createdAt: Date) async throws -> PasswordUser {
        var salt = [UInt8](repeating: 0, count: 16)
        var rng = SystemRandomNumberGenerator()
        for i in salt.indices { salt[i] = rng.next() }
        guard let derived = await deriveGated(password, salt: salt, n: Self.n, r: Self.r, p: Self.p, wait: true) else {
            throw CanopyError(.unavailable, "the server is busy hashing passwords; try again")
        }
        guard let hash = derived else { throw CanopyError(.internal, "scrypt failed") }
        return PasswordUser(
            user: user, tenant: tenant, role: role, scryptN: Self.n, scryptR: Self.r, scryptP: Self.p, salt: Hex.encode(salt), hash: Hex.encode(hash),
            createdAt: createdAt, passwordChangedAt: clock.now())
    }

    func save(_ u: PasswordUser) async throws {
        try await store.put(
            record: StoredRecord(
                kind: Self.kind, id: Self.id(user: u.user, tenant: u.tenant), tenant: u.tenant, name: u.user, body: try JSONEncoder().encode(u)))
        index.withLock { $0[Self.id(user: u.user, tenant: u.tenant)] = u }
        tenantsByOrg.withLock { $0[TenantID.of(u.tenant)] = u.tenant }
    }

    /// One user's record.
    public func get(user: String, tenant: String) async throws -> PasswordUser? {
        guard let r = try await store.record(kind: Self.kind, id: Self.id(user: user, tenant: tenant)) else { return nil }
        return try? JSONDecoder().decode(PasswordUser.self, from: r.body)
    }

    /// Every user with a password, by tenant and name.
    public func list() async throws -> [PasswordUser] {
        try await store.records(kind: Self.kind, tenant: nil).compactMap { try? JSONDecoder().decode(PasswordUser.self, from: $0.body) }
            .sorted { ($0.tenant, $0.user) < ($1.tenant, $1.user) }
    }

    /// Removes a user's password; whether there was one.
    public func remove(user: String, tenant: String) async throws -> Bool {
        let tenantLeft = index.withLock { i in
            i.removeValue(forKey: Self.id(user: user, tenant: tenant))
            return !i.values.contains { $0.tenant == tenant }
        }
        if tenantLeft { tenantsByOrg.withLock { _ = $0.removeValue(forKey: TenantID.of(tenant)) } }
        return try await store.deleteRecord(kind: Self.kind, id: Self.id(user: user, tenant: tenant))
    }

    /// Why a sign-in is refused before its password is even checked.
    public enum Refusal: Error, Sendable, Equatable {
        /// Too many recent failures from this address or for this user.
        case throttled(retryAfter: Int)
        /// Wrong user, tenant or password (one answer for all three, so none of them can be probed).
        case invalid
    }

    /// The record of a user whose password matches (the one checked against: what a credential issued now must
    /// stand on); throttled per client address and per user.
    public func verify(user: String, tenant: String, password: String, client: String) async throws(Refusal) -> PasswordUser {
        let now = clock.now()
        let keys = ["addr:" + client, "user:" + Self.id(user: user, tenant: tenant)]
        if let wait = throttle(keys, now: now) { throw .throttled(retryAfter: wait) }
        // The same work whether or not the user exists, so timing does not tell.
        let stored = current(user: user, tenant: tenant)
        let salt = stored.flatMap { Hex.decode($0.salt) } ?? [UInt8](repeating: 0, count: 16)
        guard
            let result = await deriveGated(
                password, salt: salt, n: stored?.scryptN ?? Self.n, r: stored?.scryptR ?? Self.r, p: stored?.scryptP ?? Self.p, wait: false)
        else { throw .throttled(retryAfter: 1) }
        let derived = result ?? []
        guard let stored, password.unicodeScalars.count <= Self.maxLength, let expected = Hex.decode(stored.hash), Self.equal(derived, expected) else {
            recordFailure(keys, now: now)
            throw .invalid
        }
        return stored
    }

    /// Compares in time that does not depend on where they differ.
    public static func equal(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var diff: UInt8 = 0
        for i in a.indices { diff |= a[i] ^ b[i] }
        return diff == 0
    }

    func throttle(_ keys: [String], now: Date) -> Int? {
        failures.withLock { all in
            var wait: Int?
            for k in keys {
                let recent = (all[k] ?? []).filter { now.timeIntervalSince($0) < Self.window }
                all[k] = recent.isEmpty ? nil : recent
                if recent.count >= Self.maxFailures, let first = recent.first {
                    wait = max(wait ?? 0, Int((Self.window - now.timeIntervalSince(first)).rounded(.up)))
                }
            }
            return wait
        }
    }

    func recordFailure(_ keys: [String], now: Date) {
        failures.withLock { all in
            // Bounded: an attacker cycling addresses cannot grow this without end.
            if all.count > 100_000 { all = all.filter { $0.value.contains { now.timeIntervalSince($0) < Self.window } } }
            for k in keys { all[k, default: []].append(now) }
        }
    }
}

/// Tenants as other systems number them.
public enum TenantID {
    /// A tenant's stable organisation id: 32 hex digits of SHA-256 over its name (what dialects' clients name it by).
    /// Derived, not stored, so it stays the same across restarts and never names another tenant.
    public static func of(_ tenant: String) -> String {
        Hex.encode(SHA256.hash(data: Data(("canopy-tenant:" + tenant).utf8)).prefix(16))
    }
}
