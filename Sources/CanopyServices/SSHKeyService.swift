import CanopyCore
import Crypto
import Foundation
import Synchronization

/// A public key a user registered for Canopy's SSH server.
public struct SSHKey: Sendable, Hashable, Codable {
    /// Its SHA-256 fingerprint in URL-safe base64 (`SHA256:...`, `-` and `_` for OpenSSH's `+` and `/`): its id.
    public var id: String
    /// Its SHA-256 fingerprint as OpenSSH prints it (`ssh-keygen -lf FILE`).
    public var fingerprint: String
    /// Who it logs in as.
    public var user: String
    public var tenant: String
    public var role: Principal.Role
    /// Its type (`ssh-ed25519`, `ecdsa-sha2-nistp256`, ...).
    public var type: String
    /// The key as an OpenSSH `authorized_keys` line: type, base64 blob, name.
    public var publicKey: String
    /// A name for people (the key's comment unless given).
    public var name: String
    public var createdAt: Date

    /// The principal it logs in as: its user, with a user's rights whatever role the credential that registered it
    /// had (a key outlives tokens, and an admin token revoked later must not leave an admin key behind).
    public var principal: Principal { Principal(user: user, tenant: tenant, role: .user) }
}

/// The SSH public keys users register (`canopy ssh-keys add`), by which Canopy's SSH server knows them. Several
/// users may register the same key (public keys are public: refusing a second registration would let anyone block
/// another's key, and tell whether it is registered); a login is the registration whose user may enter the workload
/// the user name names. Keys live in the store as records of kind `canopy.ssh-key`, and in memory by their key blob.
public final class SSHKeyService: Sendable {
    static let kind = "canopy.ssh-key"
    /// The key types Canopy's SSH server verifies (its SSH library has no RSA).
    public static let supportedTypes = ["ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"]
    /// The most keys one user may register.
    public static let maxPerUser = 50

    private let store: any Store
    private let clock: Clock
    private let byBlob = Mutex<[Data: [SSHKey]]>([:])
    private let removalHandlers = Mutex<[@Sendable (SSHKey) -> Void]>([])

    /// Creates the service over the store.
    public init(store: any Store, clock: Clock = .system) {
        self.store = store
        self.clock = clock
    }

    /// Loads the registered keys.
    public func load() async throws {
        var index: [Data: [SSHKey]] = [:]
        for r in try await store.records(kind: Self.kind, tenant: nil) {
            guard let key = try? JSONDecoder().decode(SSHKey.self, from: r.body), let parsed = try? Self.parse(key.publicKey) else { continue }
            index[parsed.blob, default: []].append(key)
        }
        byBlob.withLock { $0 = index }
    }

    /// An `authorized_keys` line, checked: its type, blob and fingerprint. Throws `.invalid("publicKey", ...)` for
    /// anything else, naming what to do (RSA keys: make an Ed25519 one).
    public static func parse(_ line: String) throws -> (type: String, blob: Data, comment: String, fingerprint: String) {
        let fields = line.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: " ", maxSplits: 2, omittingEmptySubsequences: true)
        guard line.utf8.count <= 16384, !line.contains("\n"), fields.count >= 2 else {
            throw CanopyError.invalid("publicKey", "expected one OpenSSH public key line, TYPE BASE64 [NAME], as in ~/.ssh/id_ed25519.pub")
        }
        let type = String(fields[0])
        if type == "ssh-rsa" || type.hasPrefix("rsa-") {
            throw CanopyError.invalid(
                "publicKey", "RSA keys are not supported by Canopy's SSH server; make an Ed25519 key (ssh-keygen -t ed25519) and add its .pub file")
        }
        guard supportedTypes.contains(type) else {
            throw CanopyError.invalid("publicKey", "unsupported key type \(type); supported: \(supportedTypes.joined(separator: ", "))")
        }
        guard let blob = Data(base64Encoded: String(fields[1])), blob.count >= 4 else {
            throw CanopyError.invalid("publicKey", "the key's second field is not base64")
        }
        // The blob, SSH strings: its own type (the line's), then an Ed25519 key of 32 bytes, or an ECDSA curve name and
        // an uncompressed point of the curve's size; nothing more.
        var fieldsOfBlob: [Data] = []
        var at = 0
        let bytes = [UInt8](blob)
        while at < bytes.count {
            guard at + 4 <= bytes.count else { throw CanopyError.invalid("publicKey", "the key's data is cut short") }
            let length = bytes[at..<(at + 4)].reduce(0) { $0 << 8 | Int($1) }
            at += 4
            guard length <= bytes.count - at else { throw CanopyError.invalid("publicKey", "the key's data is cut short") }
            fieldsOfBlob.append(Data(bytes[at..<(at + length)]))
            at += length
        }
        let expected: [Int]
        switch type {
        case "ssh-ed25519": expected = [32]
        case "ecdsa-sha2-nistp256": expected = [8, 65]
        case "ecdsa-sha2-nistp384": expected = [8, 97]
        default: expected = [8, 133]
        }
        guard fieldsOfBlob.first == Data(type.utf8), fieldsOfBlob.dropFirst().map(\.count) == expected,
            type == "ssh-ed25519" || (fieldsOfBlob[1] == Data(type.dropFirst("ecdsa-sha2-".count).utf8) && fieldsOfBlob[2].first == 4)
        else {
            throw CanopyError.invalid("publicKey", "the key's data is not a \(type) key")
        }
        let digest = Data(SHA256.hash(data: blob)).base64EncodedString().replacingOccurrences(of: "=", with: "")
        return (type, blob, fields.count > 2 ? String(fields[2]).trimmingCharacters(in: .whitespaces) : "", "SHA256:" + digest)
    }

    /// Registers a key for the principal.
    public func add(_ line: String, name: String?, by principal: Principal) async throws -> SSHKey {
        let parsed = try Self.parse(line)
        let label = (name ?? parsed.comment).trimmingCharacters(in: .whitespaces)
        guard label.utf8.count <= 200, !label.contains(where: { $0.isNewline || $0 == "\0" }) else {
            throw CanopyError.invalid("name", "a key's name is one line of at most 200 bytes")
        }
        if let existing = byBlob.withLock({ $0[parsed.blob]?.first { $0.user == principal.user && $0.tenant == principal.tenant } }) {
            return existing
        }
        let mine = byBlob.withLock { $0.values.joined().filter { $0.user == principal.user && $0.tenant == principal.tenant }.count }
        guard mine < Self.maxPerUser else { throw CanopyError(.quotaExceeded, "you have \(Self.maxPerUser) keys; remove one first") }
        let key = SSHKey(
            id: Self.id(fingerprint: parsed.fingerprint), fingerprint: parsed.fingerprint, user: principal.user, tenant: principal.tenant, role: principal.role, type: parsed.type,
            publicKey: "\(parsed.type) \(parsed.blob.base64EncodedString())\(label.isEmpty ? "" : " " + label)", name: label, createdAt: clock.now())
        try await store.put(record: StoredRecord(kind: Self.kind, id: Self.recordID(key), tenant: key.tenant, name: "\(key.user)/\(key.id)", body: try JSONEncoder().encode(key)))
        byBlob.withLock { $0[parsed.blob, default: []].append(key) }
        return key
    }

    /// A registration's id in the store: one per user and key.
    static func recordID(_ key: SSHKey) -> String { "\(key.tenant)/\(key.user)/\(key.id)" }

    /// Tells `handler` of every key removed (the SSH server closes connections that logged in with it).
    public func onRemoved(_ handler: @escaping @Sendable (SSHKey) -> Void) {
        removalHandlers.withLock { $0.append(handler) }
    }

    private func removed(_ key: SSHKey) {
        for handler in removalHandlers.withLock({ $0 }) { handler(key) }
    }

    /// A key's id: its fingerprint, URL-safe.
    public static func id(fingerprint: String) -> String {
        fingerprint.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
    }

    /// The principal's keys (an admin's: everyone's).
    public func list(as principal: Principal) -> [SSHKey] {
        byBlob.withLock { Array($0.values.joined()) }
            .filter { principal.role == .admin || ($0.user == principal.user && $0.tenant == principal.tenant) }
            .sorted { ($0.tenant, $0.user, $0.createdAt) < ($1.tenant, $1.user, $1.createdAt) }
    }

    /// Removes a key of the principal's (an admin: anyone's, the first registration of that id); someone else's is
    /// a missing one.
    public func remove(_ id: String, as principal: Principal) async throws {
        let id = Self.id(fingerprint: id)
        let found = byBlob.withLock { index -> (Data, SSHKey)? in
            for (blob, keys) in index {
                if let key = keys.first(where: { $0.id == id && $0.user == principal.user && $0.tenant == principal.tenant }) { return (blob, key) }
            }
            guard principal.role == .admin else { return nil }
            for (blob, keys) in index { if let key = keys.first(where: { $0.id == id }) { return (blob, key) } }
            return nil
        }
        guard let (blob, key) = found else { throw CanopyError(.notFound, "no SSH key \(id) of yours", field: "id") }
        try await drop(blob, key)
    }

    private func drop(_ blob: Data, _ key: SSHKey) async throws {
        _ = try await store.deleteRecord(kind: Self.kind, id: Self.recordID(key))
        byBlob.withLock { index in
            index[blob]?.removeAll { $0.user == key.user && $0.tenant == key.tenant }
            if index[blob]?.isEmpty == true { index[blob] = nil }
        }
        removed(key)
    }

    /// Removes every key of a user (`canopy users rm`); how many there were.
    public func removeAll(user: String, tenant: String) async throws -> Int {
        let theirs = byBlob.withLock { index in index.flatMap { blob, keys in keys.filter { $0.user == user && $0.tenant == tenant }.map { (blob, $0) } } }
        for (blob, key) in theirs { try await drop(blob, key) }
        return theirs.count
    }

    /// The registrations of the key whose SSH wire form (its blob) this is, for the SSH server.
    public func keys(blob: Data) -> [SSHKey] {
        byBlob.withLock { $0[blob] ?? [] }
    }
}

/// Where Canopy's SSH server listens and the host key it presents, once it does (for `GET /api/v1/ssh`).
public final class SSHServerInfo: Sendable {
    private let state = Mutex<(port: Int?, hostKey: String?)>((nil, nil))

    /// Creates an empty one (no SSH server, until set).
    public init() {}

    public func set(port: Int) { state.withLock { $0.port = port } }
    public func set(hostKey: String) { state.withLock { $0.hostKey = hostKey } }

    /// The port and host key, when the server listens.
    public var current: (port: Int, hostKey: String)? {
        state.withLock { s in s.port.flatMap { p in s.hostKey.map { (p, $0) } } }
    }
}
