import CanopyCore
import Crypto
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Access-key/secret pairs for signed-request APIs. A secret is shown once, at creation; the store keeps it
/// sealed with AES-GCM under the server's own key (`secret.key` in the data directory, mode 0600), because
/// verifying an HMAC needs the secret itself, so a one-way hash cannot do.
public final class AccessKeyService: Sendable {
    private let store: any Store
    /// The raw sealing key (SymmetricKey is not Sendable; it is rebuilt per use).
    private let sealingKeyBytes: Data
    private var sealingKey: SymmetricKey { SymmetricKey(data: sealingKeyBytes) }
    private let clock: Clock
    /// Live keys by access key, with their opened secrets.
    private let byAccessKey = Mutex<[String: (record: AccessKeyRecord, secret: String)]>([:])

    /// Creates the service, reading the sealing key from `keyFile` or creating it there.
    public init(store: any Store, keyFile: String, clock: Clock = .system) throws {
        self.store = store
        self.clock = clock
        sealingKeyBytes = try Self.loadOrCreateKey(keyFile).withUnsafeBytes { Data($0) }
    }

    /// A 32-byte key kept in a file of its own (0600), made on first use.
    public static func loadOrCreateKey(_ path: String) throws -> SymmetricKey {
        if let data = FileManager.default.contents(atPath: path) {
            guard data.count == 32 else { throw CanopyError(.internal, "\(path) is not a 32-byte key; move it away only if no access keys matter") }
            return SymmetricKey(data: data)
        }
        let key = SymmetricKey(size: .bits256)
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw CanopyError(.internal, "cannot create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let ok = key.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) == 32 }
        guard ok, fsync(fd) == 0 else { throw CanopyError(.internal, "cannot write \(path)") }
        return key
    }

    /// Loads the stored keys.
    public func load() async throws {
        let all = try await store.accessKeys()
        var index: [String: (record: AccessKeyRecord, secret: String)] = [:]
        for r in all where !r.revoked {
            index[r.accessKey] = (r, try unseal(r.sealedSecret))
        }
        byAccessKey.withLock { $0 = index }
    }

    private func unseal(_ sealed: Data) throws -> String {
        let box = try AES.GCM.SealedBox(combined: sealed)
        return String(decoding: try AES.GCM.open(box, using: sealingKey), as: UTF8.self)
    }

    /// Random characters from an alphabet.
    static func random(_ count: Int, from alphabet: String) -> String {
        let chars = Array(alphabet)
        return String((0..<count).map { _ in chars.randomElement()! })
    }

    /// Creates a key for a principal; returns the record and the secret (shown once).
    public func create(for principal: Principal, description: String) async throws -> (AccessKeyRecord, String) {
        guard description.utf8.count <= 256 else { throw CanopyError.invalid("description", "description longer than 256 characters") }
        // The vendors' shapes: a 20-character upper-case access key, a 40-character secret.
        let accessKey = Self.random(20, from: "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")
        let secret = Self.random(40, from: "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
        guard let sealed = try AES.GCM.seal(Data(secret.utf8), using: sealingKey).combined else {
            throw CanopyError(.internal, "could not seal the secret")
        }
        let record = AccessKeyRecord(
            id: IDGenerator.random(), accessKey: accessKey, sealedSecret: sealed, principal: principal, description: description, createdAt: clock.now())
        try await store.save(accessKey: record)
        byAccessKey.withLock { $0[accessKey] = (record, secret) }
        return (record, secret)
    }

    /// The principal and secret of a live access key, or nil.
    public func lookup(accessKey: String) -> (principal: Principal, secret: String)? {
        byAccessKey.withLock { $0[accessKey].map { ($0.record.principal, $0.secret) } }
    }

    /// The live (unrevoked) keys, from memory: `load` and every change keep it the same as the store.
    private var live: [AccessKeyRecord] { byAccessKey.withLock { $0.values.map(\.record) } }

    /// Keys visible to a principal: admins see every tenant's; users their own (the same user in the same tenant).
    public func list(as principal: Principal) -> [AccessKeyRecord] {
        live.filter { principal.role == .admin || $0.principal.isSameUser(as: principal) }.sorted { $0.createdAt < $1.createdAt }
    }

    /// Revokes a key by its id; requests signed with it fail from now on.
    public func revoke(id: String, as principal: Principal) async throws {
        guard var record = live.first(where: { $0.id == id }), principal.role == .admin || record.principal.isSameUser(as: principal) else {
            throw CanopyError.notFound("access key", id)
        }
        record.revoked = true
        try await store.save(accessKey: record)
        byAccessKey.withLock { _ = $0.removeValue(forKey: record.accessKey) }
    }

    /// Revokes every key of a user in a tenant; returns how many.
    public func revokeAll(user: String, tenant: String) async throws -> Int {
        let theirs = live.filter { $0.principal.isUser(user, in: tenant) }
        for var record in theirs {
            record.revoked = true
            try await store.save(accessKey: record)
            byAccessKey.withLock { _ = $0.removeValue(forKey: record.accessKey) }
        }
        return theirs.count
    }

    /// Every tenant that has a live access key.
    public func tenants() -> Set<String> {
        Set(live.map(\.principal.tenant))
    }
}
